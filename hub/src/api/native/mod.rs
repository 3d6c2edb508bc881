//! The native JSON API, `/api/v1/…`: what the web UI shows (collections,
//! containers, tags, tag history, images, builds with their logs), what
//! owners do (rebuild, settings) and the caller's API tokens, documented
//! as OpenAPI at `/api/v1/openapi.json`.
//!
//! The document is generated from the handlers themselves: each carries a
//! `#[utoipa::path]` and is mounted through `utoipa_axum`, so a route and
//! its documentation cannot drift apart.
//!
//! Conventions every endpoint keeps:
//! - Lists are `{"items": […], "next_cursor": …}`: pass `next_cursor` back
//!   as `?cursor=` for the next page (`null` on the last one); `?limit=`
//!   sets the page size. Cursors are opaque.
//! - Errors are `{"error": {"code": "not_found", "message": "…"}}` with the
//!   matching HTTP status; the codes are [`ErrorCode`]'s.
//! - Private collections answer 404 to those who may not read them, as if
//!   they did not exist; unknown, expired or revoked tokens get 401.
//! - Times are RFC 3339 strings in UTC.

use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::access::{AccessError, Viewer};
use crate::db::{DbError, Timestamp};
use crate::ratelimit::RateLimited;
use crate::serve::AppState;
use crate::storage::StorageError;

mod actions;
mod builds;
mod catalog;
mod tokens;

/// Where the API lives.
pub const PREFIX: &str = "/api/v1";
/// Items a page holds unless `?limit=` says otherwise.
pub const DEFAULT_LIMIT: u32 = 50;
/// The most items a page holds.
pub const MAX_LIMIT: u32 = 200;

/// What went wrong, as a stable machine-readable word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    RateLimited,
    Internal,
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    /// For people: what was wrong, lowercase, with the thing named.
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error(transparent)]
    Database(#[from] DbError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Token(#[from] crate::user_tokens::UserTokenError),
    #[error(transparent)]
    Action(crate::actions::ActionError),
    #[error(transparent)]
    RateLimited(#[from] RateLimited),
}

impl From<AccessError> for ApiError {
    fn from(err: AccessError) -> Self {
        match err {
            AccessError::Unauthorized(why) => ApiError::Unauthorized(why.to_owned()),
            AccessError::Database(e) => ApiError::Database(e),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::BadRequest(format!("invalid path: {}", rejection.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::BadRequest(format!("invalid query: {}", rejection.body_text()))
    }
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, ErrorCode) {
        use crate::user_tokens::UserTokenError as T;
        match self {
            ApiError::BadRequest(_)
            | ApiError::Token(T::BadScope(_) | T::BadName | T::BadExpiry) => {
                (StatusCode::BAD_REQUEST, ErrorCode::BadRequest)
            }
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, ErrorCode::Forbidden),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            ApiError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited),
            ApiError::Database(_)
            | ApiError::Storage(_)
            | ApiError::Token(_)
            | ApiError::Action(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = if code == ErrorCode::Internal {
            tracing::error!("api: {}", crate::error_chain(&self));
            "internal error".to_owned()
        } else {
            self.to_string()
        };
        let mut response = (
            status,
            Json(ErrorBody {
                error: ErrorDetail { code, message },
            }),
        )
            .into_response();
        if let ApiError::RateLimited(limited) = &self {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from(limited.retry_after_secs),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"sifhub\""),
            );
        }
        response
    }
}

/// The caller, with credentials that fail (unknown, expired, revoked)
/// answered in this API's error shape.
pub struct Caller(pub Viewer);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let viewer = Viewer::from_request_parts(parts, state).await?;
        Ok(Caller(viewer))
    }
}

/// `?cursor=…&limit=…`, read into a [`PageRequest`].
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// `next_cursor` of the previous page; none for the first page.
    pub cursor: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    pub limit: Option<u32>,
}

/// A checked page request: where to continue and how many.
#[derive(Debug, Clone)]
pub struct PageRequest<C> {
    pub after: Option<C>,
    pub limit: u32,
}

impl PageParams {
    pub fn read<C: serde::de::DeserializeOwned>(&self) -> Result<PageRequest<C>, ApiError> {
        read_page(self.cursor.as_deref(), self.limit)
    }
}

/// Checks `?cursor=` and `?limit=` (list queries with more parameters
/// carry these two themselves).
pub fn read_page<C: serde::de::DeserializeOwned>(
    cursor: Option<&str>,
    limit: Option<u32>,
) -> Result<PageRequest<C>, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit {limit} is out of range: use 1 to {MAX_LIMIT}"
        )));
    }
    let after = match cursor {
        None | Some("") => None,
        Some(cursor) => Some(decode_cursor(cursor)?),
    };
    Ok(PageRequest { after, limit })
}

/// Cursors are a position (the sort key of the last item) as JSON in
/// URL-safe base64: opaque to clients, checked when read back.
fn encode_cursor<C: Serialize>(position: &C) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(position).unwrap_or_default())
}

fn decode_cursor<C: serde::de::DeserializeOwned>(cursor: &str) -> Result<C, ApiError> {
    let invalid = || ApiError::BadRequest(format!("invalid cursor {cursor:?}"));
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    serde_json::from_slice(&bytes).map_err(|_| invalid())
}

/// A page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `?cursor=` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// A page from up to `limit + 1` rows (the extra one says another
    /// page follows), with the cursor of the last item kept.
    pub fn from_rows<R, C: Serialize>(
        mut rows: Vec<R>,
        limit: u32,
        position: impl Fn(&R) -> C,
        item: impl FnMut(R) -> T,
    ) -> Page<T> {
        let limit = limit as usize;
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next_cursor = match rows.last() {
            Some(last) if more => Some(encode_cursor(&position(last))),
            _ => None,
        };
        Page {
            items: rows.into_iter().map(item).collect(),
            next_cursor,
        }
    }
}

/// A query string read in this API's error shape.
pub struct ApiQuery<T>(pub T);

impl<T: serde::de::DeserializeOwned + Send> FromRequestParts<AppState> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Query(value) = Query::<T>::from_request_parts(parts, state).await?;
        Ok(ApiQuery(value))
    }
}

/// Path parameters read in this API's error shape (`/builds/abc`: 400).
pub struct ApiPath<T>(pub T);

impl<T: serde::de::DeserializeOwned + Send> FromRequestParts<AppState> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Path(value) = Path::<T>::from_request_parts(parts, state).await?;
        Ok(ApiPath(value))
    }
}

/// RFC 3339, UTC, milliseconds: `2026-11-27T16:55:00.123Z`.
pub fn rfc3339(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

pub fn rfc3339_at(at: Timestamp) -> String {
    rfc3339(at.unix_millis())
}

/// The OpenAPI document's fixed parts; the paths come from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "sifhub API",
        description = "Collections, containers, images and builds of a sifhub hub, and the caller's API tokens. \
Lists are cursor-paginated (`items`, `next_cursor`); errors are `{\"error\": {\"code\", \"message\"}}`. \
Authenticate with `Authorization: Bearer <token>`; without it, public collections only.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    modifiers(&Security),
    security((), ("bearer" = [])),
    components(schemas(ErrorBody, ErrorDetail, ErrorCode))
)]
struct ApiDoc;

/// Declares how to authenticate: a bearer token, or the web session cookie.
struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "an API token (`sifhub admin token create`, or POST /api/v1/tokens)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(
                crate::access::SESSION_COOKIE,
            ))),
        );
    }
}

/// The API's routes and their OpenAPI document.
fn documented() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(catalog::list_collections))
        .routes(routes!(catalog::get_collection))
        .routes(routes!(catalog::list_containers))
        .routes(routes!(catalog::get_container))
        .routes(routes!(catalog::container_history))
        .routes(routes!(catalog::get_image))
        .routes(routes!(builds::collection_builds))
        .routes(routes!(builds::container_builds))
        .routes(routes!(builds::get_build))
        .routes(routes!(builds::build_log))
        .routes(routes!(actions::rebuild))
        .routes(routes!(actions::settings))
        .routes(routes!(tokens::list_tokens, tokens::create_token))
        .routes(routes!(tokens::revoke_token))
        .split_for_parts()
}

/// The OpenAPI document as served.
pub fn openapi() -> utoipa::openapi::OpenApi {
    documented().1
}

/// Every `/api/v1/` route, and `/api/v1/openapi.json`.
pub fn routes() -> Router<AppState> {
    let (router, openapi) = documented();
    let document = Arc::new(openapi.to_pretty_json().unwrap_or_default());
    router
        .route(
            &format!("{PREFIX}/openapi.json"),
            get(move || {
                let document = document.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        (*document).clone(),
                    )
                }
            }),
        )
        // Anything else under the prefix is this API's 404, in its shape.
        .route(
            &format!("{PREFIX}/{{*rest}}"),
            axum::routing::any(|| async { ApiError::NotFound("api route".to_owned()) }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_bad_ones_are_refused() {
        let cursor = encode_cursor(&("alice".to_owned(), "analysis".to_owned()));
        let params = PageParams {
            cursor: Some(cursor),
            limit: Some(5),
        };
        let page: PageRequest<(String, String)> = params.read().unwrap();
        assert_eq!(
            page.after,
            Some(("alice".to_owned(), "analysis".to_owned()))
        );
        for cursor in ["%%%", "bm90IGpzb24"] {
            let params = PageParams {
                cursor: Some(cursor.to_owned()),
                limit: None,
            };
            assert!(params.read::<(String, String)>().is_err(), "{cursor}");
        }
        for limit in [0, MAX_LIMIT + 1] {
            let params = PageParams {
                cursor: None,
                limit: Some(limit),
            };
            assert!(params.read::<i64>().is_err(), "{limit}");
        }
    }

    #[test]
    fn pages_carry_a_cursor_only_when_more_follow() {
        let page = Page::from_rows(vec![1, 2, 3], 2, |n| *n, |n| n * 10);
        assert_eq!(page.items, [10, 20]);
        let after: i64 = decode_cursor(page.next_cursor.as_deref().unwrap()).unwrap();
        assert_eq!(after, 2);
        let last = Page::from_rows(vec![1, 2], 2, |n| *n, |n| n);
        assert_eq!(last.next_cursor, None);
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
