//! The caller's own API tokens: list, create (the secret is in the answer
//! once), revoke. A token may list its owner's tokens; making or revoking
//! them takes a session or an `admin` token, so a leaked read token cannot
//! mint itself a stronger one.

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{rfc3339_at, ApiError, ApiPath, ApiQuery, Caller, ErrorBody, Page, PageParams};
use crate::access::Viewer;
use crate::db::{ApiToken, Timestamp, TokenScope};
use crate::serve::AppState;
use crate::user_tokens::{issue_user_token, TokenRequest};

/// A token as its owner's list shows it (never its secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenInfo {
    pub id: i64,
    pub name: String,
    /// `read`, `push` or `admin`.
    pub scope: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// `null`: it never expires.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    #[schema(format = DateTime)]
    pub revoked_at: Option<String>,
    #[schema(format = DateTime)]
    pub last_used_at: Option<String>,
}

/// A token to make.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTokenBody {
    /// A label, e.g. `laptop`.
    pub name: String,
    /// `read`, `push` or `admin`.
    pub scope: String,
    /// Days until it expires (1 to 3650); none: never.
    pub expires_in_days: Option<u64>,
}

/// A new token: its secret is shown only in this answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub info: TokenInfo,
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
}

fn info(token: ApiToken) -> TokenInfo {
    TokenInfo {
        id: token.id,
        name: token.name,
        scope: token.scope.to_string(),
        created_at: rfc3339_at(token.created_at),
        expires_at: token.expires_at.map(rfc3339_at),
        revoked_at: token.revoked_at.map(rfc3339_at),
        last_used_at: token.last_used_at.map(rfc3339_at),
    }
}

/// The signed-in user's id, or 401.
fn signed_in(viewer: &Viewer) -> Result<i64, ApiError> {
    viewer.user_id().ok_or_else(|| {
        ApiError::Unauthorized("sign in or send an api token to manage tokens".to_owned())
    })
}

/// The user's id when the caller may make or revoke their tokens.
fn may_manage(viewer: &Viewer) -> Result<i64, ApiError> {
    let user_id = signed_in(viewer)?;
    if !viewer.allows(TokenScope::Admin) {
        return Err(ApiError::Forbidden(
            "making or revoking tokens needs a session or an admin token".to_owned(),
        ));
    }
    Ok(user_id)
}

#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    tag = "tokens",
    summary = "The caller's tokens, newest first, revoked and expired ones included",
    params(PageParams),
    responses(
        (status = 200, description = "a page of the caller's tokens, newest first", body = Page<TokenInfo>),
        (status = 400, description = "bad cursor or limit", body = ErrorBody),
        (status = 401, description = "not signed in, or unknown, expired or revoked credentials", body = ErrorBody),
    )
)]
pub async fn list_tokens(
    State(state): State<AppState>,
    Caller(viewer): Caller,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<Page<TokenInfo>>, ApiError> {
    let page = params.read::<i64>()?;
    let user_id = signed_in(&viewer)?;
    let rows = state
        .db
        .user_tokens_before(
            user_id,
            page.after.unwrap_or(i64::MAX),
            i64::from(page.limit) + 1,
        )
        .await?;
    Ok(Json(Page::from_rows(rows, page.limit, |t| t.id, info)))
}

#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    tag = "tokens",
    summary = "Make a token for the caller",
    request_body = NewTokenBody,
    responses(
        (status = 201, description = "made; the secret is in `token`, shown only now", body = CreatedToken),
        (status = 400, description = "bad body, scope, name or expiry", body = ErrorBody),
        (status = 401, description = "not signed in, or unknown, expired or revoked credentials", body = ErrorBody),
        (status = 403, description = "a token below admin scope", body = ErrorBody),
    )
)]
pub async fn create_token(
    State(state): State<AppState>,
    Caller(viewer): Caller,
    body: Result<Json<NewTokenBody>, JsonRejection>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let user_id = may_manage(&viewer)?;
    let Json(body) =
        body.map_err(|e| ApiError::BadRequest(format!("invalid body: {}", e.body_text())))?;
    let scope = match body.scope.parse::<TokenScope>() {
        Ok(scope) if scope != TokenScope::Worker => scope,
        _ => {
            return Err(ApiError::BadRequest(format!(
                "unknown scope {:?}: use read, push or admin",
                body.scope
            )))
        }
    };
    let request = TokenRequest {
        name: body.name,
        scope,
        expires_in_days: body.expires_in_days,
    };
    let (token, secret) = issue_user_token(&state.db, user_id, &request, Timestamp::now()).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            info: info(token),
            token: secret,
        }),
    ))
}

#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{id}",
    tag = "tokens",
    summary = "Revoke one of the caller's tokens",
    params(("id" = i64, Path)),
    responses(
        (status = 204, description = "revoked: every API refuses it from now on"),
        (status = 400, description = "an id that is not a number", body = ErrorBody),
        (status = 401, description = "not signed in, or unknown, expired or revoked credentials", body = ErrorBody),
        (status = 403, description = "a token below admin scope", body = ErrorBody),
        (status = 404, description = "the caller has no such token, or it is revoked already", body = ErrorBody),
    )
)]
pub async fn revoke_token(
    State(state): State<AppState>,
    Caller(viewer): Caller,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode, ApiError> {
    let user_id = may_manage(&viewer)?;
    if !state
        .db
        .revoke_user_token(user_id, id, Timestamp::now())
        .await?
    {
        return Err(ApiError::NotFound(format!("token {id}")));
    }
    Ok(StatusCode::NO_CONTENT)
}
