//! What owners do through the API: rebuild a recipe, change a
//! collection's settings. Both go through `crate::actions`, as the web
//! pages' forms do; a rebuild also takes from the caller's trigger rate
//! limit.

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::catalog::{collection_view, Collection};
use super::{ApiError, ApiPath, Caller, ErrorBody};
use crate::access::Viewer;
use crate::actions::{rebuild_recipe, update_settings, ActionError, SettingsUpdate};
use crate::db::Permission;
use crate::ratelimit::ClientAddr;
use crate::serve::AppState;

/// Which recipe to build again.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RebuildBody {
    /// The recipe's path in the repository, e.g. `envs/tools/Singularity.v2`.
    pub recipe_path: String,
}

/// A queued build.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueuedBuild {
    pub build_id: i64,
}

/// Settings to change; those left out stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsBody {
    /// Branches whose pushes build; empty: the default branch.
    pub build_branches: Option<Vec<String>>,
    /// Only owners and collaborators see it.
    pub private: Option<bool>,
    /// Pushes queue no builds while paused.
    pub paused: Option<bool>,
}

impl From<ActionError> for ApiError {
    fn from(err: ActionError) -> Self {
        match err {
            ActionError::NotFound(what) => ApiError::NotFound(format!("collection {what}")),
            ActionError::Forbidden(why) => ApiError::Forbidden(why),
            ActionError::Invalid(why) => ApiError::BadRequest(why),
            other => ApiError::Action(other),
        }
    }
}

/// Changing things takes a signed-in caller: the anonymous are told to
/// authenticate rather than that they lack permission.
fn signed_in(viewer: &Viewer) -> Result<(), ApiError> {
    match viewer.user_id() {
        Some(_) => Ok(()),
        None => Err(ApiError::Unauthorized(
            "sign in or send an api token with push scope".to_owned(),
        )),
    }
}

fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(body)| body)
        .map_err(|e| ApiError::BadRequest(format!("invalid body: {}", e.body_text())))
}

#[utoipa::path(
    post,
    path = "/api/v1/collections/{owner}/{repo}/rebuild",
    tag = "builds",
    summary = "Build a recipe again at the head of the default branch",
    params(("owner" = String, Path), ("repo" = String, Path)),
    request_body = RebuildBody,
    responses(
        (status = 202, description = "queued", body = QueuedBuild),
        (status = 400, description = "bad body, no such recipe, or the collection is paused", body = ErrorBody),
        (status = 401, description = "not signed in, or unknown, expired or revoked credentials", body = ErrorBody),
        (status = 403, description = "the caller may not write to the collection (or the token lacks push scope)", body = ErrorBody),
        (status = 404, description = "no such collection, or a private one", body = ErrorBody),
        (status = 429, description = "too many rebuilds: see Retry-After", body = ErrorBody),
    )
)]
pub async fn rebuild(
    State(state): State<AppState>,
    Caller(viewer): Caller,
    client: ClientAddr,
    ApiPath((owner, repo)): ApiPath<(String, String)>,
    request: Result<Json<RebuildBody>, JsonRejection>,
) -> Result<(StatusCode, Json<QueuedBuild>), ApiError> {
    signed_in(&viewer)?;
    let request = body(request)?;
    state.rate_limits.trigger(&viewer, client)?;
    let build_id = rebuild_recipe(&state, &viewer, &owner, &repo, &request.recipe_path).await?;
    Ok((StatusCode::ACCEPTED, Json(QueuedBuild { build_id })))
}

#[utoipa::path(
    patch,
    path = "/api/v1/collections/{owner}/{repo}/settings",
    tag = "collections",
    summary = "Change which branches build, and whether the collection is private or paused",
    params(("owner" = String, Path), ("repo" = String, Path)),
    request_body = SettingsBody,
    responses(
        (status = 200, description = "the collection as it is now", body = Collection),
        (status = 400, description = "bad body or branch names", body = ErrorBody),
        (status = 401, description = "not signed in, or unknown, expired or revoked credentials", body = ErrorBody),
        (status = 403, description = "the caller may not write to the collection (or the token lacks push scope)", body = ErrorBody),
        (status = 404, description = "no such collection, or a private one", body = ErrorBody),
    )
)]
pub async fn settings(
    State(state): State<AppState>,
    Caller(viewer): Caller,
    ApiPath((owner, repo)): ApiPath<(String, String)>,
    request: Result<Json<SettingsBody>, JsonRejection>,
) -> Result<Json<Collection>, ApiError> {
    signed_in(&viewer)?;
    let request = body(request)?;
    let current = state
        .db
        .readable_repository(&viewer, &owner, &repo)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("collection {owner}/{repo}")))?;
    let update = SettingsUpdate {
        build_branches: request.build_branches.unwrap_or(current.build_branches),
        private: request.private.unwrap_or(current.private),
        paused: request.paused.unwrap_or(current.paused),
    };
    let updated = update_settings(&state, &viewer, &owner, &repo, &update).await?;
    // The update checked write access, and a setting cannot lower it.
    let permission = state
        .db
        .permission(&viewer, &updated)
        .await?
        .unwrap_or(Permission::Write);
    Ok(Json(collection_view(updated, permission)))
}
