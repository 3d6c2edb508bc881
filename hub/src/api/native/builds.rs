//! Builds: a collection's or container's builds, one build, its log.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::catalog::{container_of, readable};
use super::{read_page, rfc3339, ApiError, ApiPath, ApiQuery, Caller, ErrorBody, Page};
use crate::access::Viewer;
use crate::db::{BuildDetail, BuildEntry};
use crate::queue::BuildStatus;
use crate::serve::AppState;
use crate::storage::{StorageError, StorageKey};

/// A build in a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct BuildSummary {
    pub id: i64,
    /// `queued`, `running`, `succeeded`, `failed`, `cancelled` or `superseded`.
    pub status: String,
    pub container: String,
    /// The tag its recipe makes.
    pub tag: String,
    pub branch: String,
    pub commit_sha: String,
    #[schema(format = DateTime)]
    pub queued_at: String,
    #[schema(format = DateTime)]
    pub started_at: Option<String>,
    #[schema(format = DateTime)]
    pub finished_at: Option<String>,
}

/// A build with where it belongs and what it made.
#[derive(Debug, Serialize, ToSchema)]
pub struct Build {
    #[serde(flatten)]
    pub summary: BuildSummary,
    pub owner: String,
    pub repo: String,
    pub recipe_path: String,
    /// `push`, `manual` or `rebuild`.
    pub trigger: String,
    /// Which hand-out to a worker this is (retries count up).
    pub attempt: i64,
    pub error: Option<String>,
    /// The image it made, once it succeeded.
    pub image_digest: Option<String>,
}

/// `?status=` with the page parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BuildQuery {
    /// Only builds in this state: `queued`, `running`, `succeeded`,
    /// `failed`, `cancelled` or `superseded`.
    pub status: Option<String>,
    /// `next_cursor` of the previous page; none for the first page.
    pub cursor: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    pub limit: Option<u32>,
}

fn summary(entry: BuildEntry) -> BuildSummary {
    BuildSummary {
        id: entry.id,
        status: entry.status,
        container: entry.container,
        tag: entry.tag,
        branch: entry.branch,
        commit_sha: entry.commit_sha,
        queued_at: rfc3339(entry.queued_at),
        started_at: entry.started_at.map(rfc3339),
        finished_at: entry.finished_at.map(rfc3339),
    }
}

/// A page of a repository's builds, of one container when given.
async fn builds_page(
    state: &AppState,
    repository_id: i64,
    container_id: Option<i64>,
    query: &BuildQuery,
) -> Result<Page<BuildSummary>, ApiError> {
    let page = read_page::<i64>(query.cursor.as_deref(), query.limit)?;
    if let Some(status) = &query.status {
        status.parse::<BuildStatus>().map_err(|_| {
            ApiError::BadRequest(format!(
                "unknown build status {status:?}: use queued, running, succeeded, failed, cancelled or superseded"
            ))
        })?;
    }
    let rows = state
        .db
        .builds_before(
            repository_id,
            container_id,
            query.status.as_deref(),
            page.after.unwrap_or(i64::MAX),
            i64::from(page.limit) + 1,
        )
        .await?;
    Ok(Page::from_rows(rows, page.limit, |row| row.id, summary))
}

#[utoipa::path(
    get,
    path = "/api/v1/collections/{owner}/{repo}/builds",
    tag = "builds",
    summary = "A collection's builds, newest first",
    params(("owner" = String, Path), ("repo" = String, Path), BuildQuery),
    responses(
        (status = 200, description = "a page of builds, newest first", body = Page<BuildSummary>),
        (status = 400, description = "bad cursor, limit or status", body = ErrorBody),
        (status = 401, description = "unknown, expired or revoked credentials", body = ErrorBody),
        (status = 404, description = "no such collection, or a private one", body = ErrorBody),
    )
)]
pub async fn collection_builds(
    State(state): State<AppState>,
    Caller(viewer): Caller,
    ApiPath((owner, repo)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<BuildQuery>,
) -> Result<Json<Page<BuildSummary>>, ApiError> {
    let repository = readable(&state, &viewer, &owner, &repo).await?;
    Ok(Json(
        builds_page(&state, repository.id, None, &query).await?,
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/collections/{owner}/{repo}/containers/{container}/builds",
    tag = "builds",
    summary = "A container's builds, newest first",
    params(("owner" = String, Path), ("repo" = String, Path), ("container" = String, Path), BuildQuery),
    responses(
        (status = 200, description = "a page of builds, newest first", body = Page<BuildSummary>),
        (status = 400, description = "bad cursor, limit or status", body = ErrorBody),
        (status = 401, description = "unknown, expired or revoked credentials", body = ErrorBody),
        (status = 404, description = "no such container or collection, or a private one", body = ErrorBody),
    )
)]
pub async fn container_builds(
    State(state): State<AppState>,
    Caller(viewer): Caller,
    ApiPath((owner, repo, container)): ApiPath<(String, String, String)>,
    ApiQuery(query): ApiQuery<BuildQuery>,
) -> Result<Json<Page<BuildSummary>>, ApiError> {
    let repository = readable(&state, &viewer, &owner, &repo).await?;
    let found = container_of(&state, &repository, &container).await?;
    Ok(Json(
        builds_page(&state, repository.id, Some(found.id), &query).await?,
    ))
}

/// The build `id` when `viewer` may read its collection.
async fn readable_build(
    state: &AppState,
    viewer: &Viewer,
    id: i64,
) -> Result<BuildDetail, ApiError> {
    state
        .db
        .readable_build(viewer, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("build {id}")))
}

#[utoipa::path(
    get,
    path = "/api/v1/builds/{id}",
    tag = "builds",
    summary = "A build",
    params(("id" = i64, Path)),
    responses(
        (status = 200, description = "the build", body = Build),
        (status = 400, description = "an id that is not a number", body = ErrorBody),
        (status = 401, description = "unknown, expired or revoked credentials", body = ErrorBody),
        (status = 404, description = "no such build, or one of a private collection", body = ErrorBody),
    )
)]
pub async fn get_build(
    State(state): State<AppState>,
    Caller(viewer): Caller,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Build>, ApiError> {
    let detail = readable_build(&state, &viewer, id).await?;
    Ok(Json(Build {
        summary: summary(detail.entry),
        owner: detail.owner,
        repo: detail.repo,
        recipe_path: detail.recipe_path,
        trigger: detail.trigger_kind,
        attempt: detail.attempt,
        error: detail.error,
        image_digest: detail.image_digest,
    }))
}

#[utoipa::path(
    get,
    path = "/api/v1/builds/{id}/log",
    tag = "builds",
    summary = "A build's log as text, so far while it runs",
    params(("id" = i64, Path)),
    responses(
        (status = 200, description = "the log of the build's latest attempt", content_type = "text/plain", body = String),
        (status = 400, description = "an id that is not a number", body = ErrorBody),
        (status = 401, description = "unknown, expired or revoked credentials", body = ErrorBody),
        (status = 404, description = "no such build, or one of a private collection", body = ErrorBody),
    )
)]
pub async fn build_log(
    State(state): State<AppState>,
    Caller(viewer): Caller,
    ApiPath(id): ApiPath<i64>,
) -> Result<impl IntoResponse, ApiError> {
    let detail = readable_build(&state, &viewer, id).await?;
    let text = match detail.log_key {
        // A finished build's log is in storage…
        Some(_) => match state.storage.get_bytes(&StorageKey::build_log(id)).await {
            Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
            Err(StorageError::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    // …a running one's (or one still being written out) in the chunks.
    let text = match text {
        Some(text) => text,
        None => state.db.build_log_text(id, detail.attempt).await?,
    };
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text))
}
