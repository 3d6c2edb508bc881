//! The worker protocol, hub side: routes under `/api/worker/v1/` through
//! which build workers (remote `sifhub worker` machines and the in-process
//! worker alike) claim builds, renew leases, stream logs, upload images
//! (through the hub, or on S3 to a signed URL, verified by the hub) and
//! report results. Workers hold no database or storage credentials: a
//! worker token (scope `worker`) is all they have, and the hub checks on
//! every call that the caller holds the build's current lease (build,
//! attempt and the token the claim came with).
//!
//! Every state change of a build is one log line here, and one commit
//! status on GitHub (posted from a spawned task so GitHub's latency never
//! holds a worker).

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures_util::TryStreamExt as _;

use crate::db::{
    hash_token, ApiToken, Db, DbError, NewImage, NewToken, Recipe, Repository, Timestamp,
    TokenScope,
};
use crate::error_chain;
use crate::github::status::{BuildReport, BuildStage};
use crate::github::RepoRef;
use crate::queue::{Build, BuildStatus, Lease, QueueError};
use crate::serve::AppState;
use crate::storage::{Expected, StorageError, StorageKey};
use crate::worker::protocol::{
    ArtifactQuery, ArtifactStored, ArtifactUrl, ArtifactUrlRequest, AttemptRequest, ClaimRequest,
    CompleteRequest, CompleteResponse, ErrorBody, FailRequest, HeartbeatResponse, Job, LogAccepted,
    LogChunk, SourceQuery, PREFIX,
};

/// Longest worker name kept in a lease (names come from the worker).
const MAX_WORKER_NAME: usize = 64;
/// A signed upload URL lasts this long, plus a second per
/// [`SIGNED_UPLOAD_BYTES_PER_SEC`] of the image, so a slow link still
/// finishes a big image.
const SIGNED_UPLOAD_BASE: Duration = Duration::from_secs(3600);
const SIGNED_UPLOAD_BYTES_PER_SEC: u64 = 1024 * 1024;
/// S3 takes at most 5 GiB in one `PUT`; bigger images go through the hub,
/// which uploads them in parts.
const MAX_SINGLE_PUT: u64 = 5 * 1024 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WorkerApiError {
    #[error("missing or invalid worker token")]
    Unauthorized,
    #[error("build {0} not found")]
    NotFound(i64),
    #[error(transparent)]
    NotLeaseHolder(QueueError),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NoSignedUpload(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("build {build_id} refers to a missing {what}")]
    Dangling { build_id: i64, what: &'static str },
}

impl IntoResponse for WorkerApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            WorkerApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            WorkerApiError::NotFound(_) | WorkerApiError::NoSignedUpload(_) => {
                StatusCode::NOT_FOUND
            }
            WorkerApiError::NotLeaseHolder(_) => StatusCode::CONFLICT,
            WorkerApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WorkerApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            WorkerApiError::Queue(QueueError::NotLeaseHolder { .. }) => StatusCode::CONFLICT,
            WorkerApiError::Queue(_)
            | WorkerApiError::Db(_)
            | WorkerApiError::Storage(_)
            | WorkerApiError::Dangling { .. } => {
                tracing::error!("worker api: {}", error_chain(&self));
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let mut response = (
            status,
            Json(ErrorBody {
                error: error_chain(&self),
            }),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// The worker routes, to nest at [`PREFIX`].
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/claim", post(claim))
        .route("/builds/{id}/heartbeat", post(heartbeat))
        .route("/builds/{id}/log", post(append_log))
        .route("/builds/{id}/source", get(source))
        .route("/builds/{id}/artifact", put(artifact))
        .route("/builds/{id}/artifact-url", post(artifact_url))
        .route("/builds/{id}/complete", post(complete))
        .route("/builds/{id}/fail", post(fail))
}

/// The caller's worker token (scope `worker`, or `admin`).
pub struct WorkerToken(ApiToken);

impl FromRequestParts<AppState> for WorkerToken {
    type Rejection = WorkerApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let secret = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|secret| !secret.is_empty())
            .ok_or(WorkerApiError::Unauthorized)?;
        let token = state
            .db
            .find_token_by_hash(&hash_token(secret), state.queue.now())
            .await?
            .filter(|token| token.scope.allows(TokenScope::Worker))
            .ok_or(WorkerApiError::Unauthorized)?;
        Ok(WorkerToken(token))
    }
}

/// The lease id's suffix naming the token: a build is held by the token
/// its claim came with.
fn token_suffix(token: &ApiToken) -> String {
    format!("@token-{}", token.id)
}

/// The caller's lease on build `build_id`, attempt `attempt`, or 409.
async fn held_lease(
    state: &AppState,
    token: &ApiToken,
    build_id: i64,
    attempt: i64,
) -> Result<(Build, Lease), WorkerApiError> {
    let build = state
        .queue
        .get(build_id)
        .await?
        .ok_or(WorkerApiError::NotFound(build_id))?;
    let worker_id = build.worker_id.clone().unwrap_or_default();
    let lease = Lease {
        build_id,
        worker_id,
        attempt,
        lease_until: build.lease_until.unwrap_or_else(|| state.queue.now()),
    };
    let holds = lease.worker_id.ends_with(&token_suffix(token))
        && build.attempt == attempt
        && build.status == BuildStatus::Running;
    if holds {
        Ok((build, lease))
    } else {
        Err(WorkerApiError::NotLeaseHolder(QueueError::NotLeaseHolder {
            build_id,
            worker_id: format!("of token {}", token.id),
            attempt,
        }))
    }
}

fn lease_length(state: &AppState) -> Duration {
    Duration::from_secs(state.config.build_lease_seconds.max(1))
}

/// Keeps the characters a worker name needs, so a lease id stays readable.
fn clean_worker_name(name: &str) -> String {
    let name: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/'))
        .take(MAX_WORKER_NAME)
        .collect();
    if name.is_empty() {
        "worker".to_owned()
    } else {
        name
    }
}

/// `POST claim`: the next build, waiting up to the claim wait for one
/// (204 when none came). A build queued in this process wakes the wait at
/// once; builds queued by other hubs are found by polling.
async fn claim(
    State(state): State<AppState>,
    WorkerToken(token): WorkerToken,
    Json(request): Json<ClaimRequest>,
) -> Result<Response, WorkerApiError> {
    let worker_id = format!(
        "{}{}",
        clean_worker_name(&request.worker),
        token_suffix(&token)
    );
    state
        .db
        .mark_token_used(token.id, state.queue.now())
        .await?;
    let deadline = Instant::now() + Duration::from_secs(state.config.claim_wait_seconds);
    let poll = Duration::from_millis(state.config.claim_poll_millis.max(10));
    loop {
        let queued = state.queue.queued();
        tokio::pin!(queued);
        // Registered before the claim, so a build queued meanwhile wakes us.
        queued.as_mut().enable();
        let reaped = state.queue.reap_expired().await?;
        for id in &reaped.requeued {
            tracing::info!("build {id}: lease expired, queued again");
        }
        for id in &reaped.failed {
            tracing::info!("build {id}: lease expired, out of attempts: failed");
        }
        for id in &reaped.superseded {
            tracing::info!("build {id}: lease expired, superseded by a newer build");
        }
        if let Some(claimed) = state.queue.claim(&worker_id, lease_length(&state)).await? {
            let job = job_for(&state, &claimed.build, &claimed.lease).await?;
            tracing::info!(
                "build {} attempt {}: claimed by {} ({} {} at {})",
                job.build_id,
                job.attempt,
                worker_id,
                job.repository,
                job.recipe_path,
                job.commit
            );
            post_status(&state, &claimed.build, BuildStage::Building, "building").await;
            return Ok(Json(job).into_response());
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        tokio::select! {
            _ = queued => {}
            _ = tokio::time::sleep(poll.min(deadline - now)) => {}
        }
    }
}

/// The recipe and repository a build is of.
async fn build_context(
    state: &AppState,
    build: &Build,
) -> Result<(Recipe, Repository), WorkerApiError> {
    let recipe =
        state
            .db
            .find_recipe_by_id(build.recipe_id)
            .await?
            .ok_or(WorkerApiError::Dangling {
                build_id: build.id,
                what: "recipe",
            })?;
    let repository = state
        .db
        .find_repository_by_id(recipe.repository_id)
        .await?
        .ok_or(WorkerApiError::Dangling {
            build_id: build.id,
            what: "repository",
        })?;
    Ok((recipe, repository))
}

async fn job_for(state: &AppState, build: &Build, lease: &Lease) -> Result<Job, WorkerApiError> {
    let (recipe, repository) = build_context(state, build).await?;
    Ok(Job {
        build_id: build.id,
        attempt: lease.attempt,
        worker_id: lease.worker_id.clone(),
        lease_until: lease.lease_until.unix_millis(),
        lease_seconds: lease_length(state).as_secs(),
        repository: repository.full_name(),
        commit: build.commit_sha.clone(),
        branch: build.branch.clone(),
        recipe_path: recipe.path,
        container: recipe.container_name,
        tag: recipe.tag,
        source_url: format!(
            "{PREFIX}/builds/{}/source?attempt={}",
            build.id, lease.attempt
        ),
        // The commit's time is not known here; the queued time is fixed
        // for the build, so every attempt makes the same bytes.
        timestamp: build.queued_at.unix_millis().div_euclid(1000),
    })
}

/// `POST builds/{id}/heartbeat`: extends the lease, or 409 when it is lost.
async fn heartbeat(
    State(state): State<AppState>,
    WorkerToken(token): WorkerToken,
    Path(build_id): Path<i64>,
    Json(request): Json<AttemptRequest>,
) -> Result<Json<HeartbeatResponse>, WorkerApiError> {
    let result = match held_lease(&state, &token, build_id, request.attempt).await {
        Ok((_, lease)) => state
            .queue
            .heartbeat(&lease, lease_length(&state))
            .await
            .map_err(WorkerApiError::from),
        Err(e) => Err(e),
    };
    match result {
        Ok(lease) => Ok(Json(HeartbeatResponse {
            lease_until: lease.lease_until.unix_millis(),
        })),
        Err(
            e @ (WorkerApiError::NotLeaseHolder(_)
            | WorkerApiError::Queue(QueueError::NotLeaseHolder { .. })),
        ) => {
            tracing::info!(
                "build {build_id} attempt {}: lease lost by token {}",
                request.attempt,
                token.id
            );
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// `POST builds/{id}/log`: stores one chunk; a chunk sent again is kept once.
async fn append_log(
    State(state): State<AppState>,
    WorkerToken(token): WorkerToken,
    Path(build_id): Path<i64>,
    Json(chunk): Json<LogChunk>,
) -> Result<Json<LogAccepted>, WorkerApiError> {
    if chunk.seq < 0 {
        return Err(WorkerApiError::BadRequest(format!(
            "log chunk sequence number {} is negative",
            chunk.seq
        )));
    }
    held_lease(&state, &token, build_id, chunk.attempt).await?;
    let stored = state
        .db
        .append_log_chunk(
            build_id,
            chunk.attempt,
            chunk.seq,
            &chunk.text,
            state.queue.now(),
        )
        .await?;
    Ok(Json(LogAccepted { stored }))
}

/// `GET builds/{id}/source`: the source tarball at the build's commit,
/// streamed from GitHub, so workers never hold GitHub credentials.
async fn source(
    State(state): State<AppState>,
    WorkerToken(token): WorkerToken,
    Path(build_id): Path<i64>,
    Query(query): Query<SourceQuery>,
) -> Result<Response, WorkerApiError> {
    let (build, _) = held_lease(&state, &token, build_id, query.attempt).await?;
    let (_, repository) = build_context(&state, &build).await?;
    let repo = repo_ref(&state, &repository).await?;
    match state.github.tarball(&repo, &build.commit_sha).await {
        Ok(stream) => Ok((
            [(header::CONTENT_TYPE, "application/gzip")],
            Body::from_stream(stream),
        )
            .into_response()),
        Err(e) => {
            tracing::warn!("build {build_id}: source tarball: {e}");
            Ok((
                StatusCode::BAD_GATEWAY,
                Json(ErrorBody {
                    error: format!(
                        "cannot fetch the source of {} at {}: {e}",
                        repository.full_name(),
                        build.commit_sha
                    ),
                }),
            )
                .into_response())
        }
    }
}

/// How GitHub is told which repository: its installation's GitHub id in
/// App mode, none in plain webhook mode.
async fn repo_ref(state: &AppState, repository: &Repository) -> Result<RepoRef, WorkerApiError> {
    let installation_id = match repository.installation_id {
        Some(id) => state.db.installation_github_id(id).await?,
        None => None,
    };
    Ok(RepoRef {
        owner: repository.owner.clone(),
        name: repository.name.clone(),
        installation_id,
    })
}

/// Checks a lowercase hex sha256.
fn check_sha256(sha256: &str) -> Result<(), WorkerApiError> {
    if sha256.len() == 64
        && sha256
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        Ok(())
    } else {
        Err(WorkerApiError::BadRequest(format!(
            "sha256 {sha256:?} is not 64 lowercase hex digits"
        )))
    }
}

/// `PUT builds/{id}/artifact?attempt=N&sha256=HEX&size=N`: the SIF,
/// streamed into storage under its digest. Storage checks the announced
/// sha256 and size and publishes nothing when they do not match.
async fn artifact(
    State(state): State<AppState>,
    WorkerToken(token): WorkerToken,
    Path(build_id): Path<i64>,
    Query(query): Query<ArtifactQuery>,
    body: Body,
) -> Result<(StatusCode, Json<ArtifactStored>), WorkerApiError> {
    check_sha256(&query.sha256)?;
    held_lease(&state, &token, build_id, query.attempt).await?;
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let expected = Expected {
        sha256_hex: Some(query.sha256.clone()),
        size: Some(query.size),
    };
    match state
        .storage
        .put_stream(&StorageKey::image(&query.sha256)?, stream, expected)
        .await
    {
        Ok(stored) => Ok((
            StatusCode::CREATED,
            Json(ArtifactStored {
                sha256: stored.sha256_hex,
                size: stored.size,
                already_present: stored.already_present,
            }),
        )),
        Err(e @ (StorageError::DigestMismatch { .. } | StorageError::SizeMismatch { .. })) => {
            tracing::warn!(
                "build {build_id} attempt {}: artifact refused: {e}",
                query.attempt
            );
            Err(WorkerApiError::Unprocessable(error_chain(&e)))
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST builds/{id}/artifact-url`: a signed URL the worker `PUT`s the SIF
/// to, under the attempt's upload key (never served); `complete` verifies
/// and promotes it. 404 where uploads go through the hub: on a local
/// folder, and for images above one `PUT`'s limit.
async fn artifact_url(
    State(state): State<AppState>,
    WorkerToken(token): WorkerToken,
    Path(build_id): Path<i64>,
    Json(request): Json<ArtifactUrlRequest>,
) -> Result<Json<ArtifactUrl>, WorkerApiError> {
    check_sha256(&request.sha256)?;
    held_lease(&state, &token, build_id, request.attempt).await?;
    if request.size > MAX_SINGLE_PUT {
        return Err(WorkerApiError::NoSignedUpload(format!(
            "an image of {} bytes is above the {MAX_SINGLE_PUT} bytes of one storage PUT: upload it through the hub with PUT {PREFIX}/builds/{build_id}/artifact",
            request.size
        )));
    }
    let valid_for =
        SIGNED_UPLOAD_BASE + Duration::from_secs(request.size / SIGNED_UPLOAD_BYTES_PER_SEC);
    let key = StorageKey::upload(build_id, request.attempt);
    match state.storage.signed_upload_url(&key, valid_for).await? {
        Some(url) => Ok(Json(ArtifactUrl {
            url,
            expires_in: valid_for.as_secs(),
        })),
        None => Err(WorkerApiError::NoSignedUpload(format!(
            "storage is a local folder: uploads go through the hub with PUT {PREFIX}/builds/{build_id}/artifact"
        ))),
    }
}

/// Writes the attempt's log to storage; its key for the build row.
async fn store_log(
    state: &AppState,
    build_id: i64,
    attempt: i64,
) -> Result<String, WorkerApiError> {
    let text = state.db.build_log_text(build_id, attempt).await?;
    let key = StorageKey::build_log(build_id);
    state
        .storage
        .put_bytes(&key, text.into_bytes().into())
        .await?;
    Ok(key.to_string())
}

/// `POST builds/{id}/complete`: publishes the uploaded image.
async fn complete(
    State(state): State<AppState>,
    WorkerToken(token): WorkerToken,
    Path(build_id): Path<i64>,
    Json(request): Json<CompleteRequest>,
) -> Result<Json<CompleteResponse>, WorkerApiError> {
    check_sha256(&request.sha256)?;
    let (build, lease) = held_lease(&state, &token, build_id, request.attempt).await?;
    let image_key = StorageKey::image(&request.sha256)?;
    let upload_key = StorageKey::upload(build_id, request.attempt);
    let mut stored_size = state
        .storage
        .head(&image_key)
        .await?
        .map(|object| object.size);
    if stored_size.is_some() {
        // Another build stored these bytes first: an upload sent anyway is
        // not needed.
        state.storage.delete(&upload_key).await?;
    } else if state.storage.head(&upload_key).await?.is_some() {
        let expected = Expected {
            sha256_hex: Some(request.sha256.clone()),
            size: Some(request.size),
        };
        match state
            .storage
            .promote(&upload_key, &image_key, expected)
            .await
        {
            Ok(stored) => stored_size = Some(stored.size),
            Err(e @ (StorageError::DigestMismatch { .. } | StorageError::SizeMismatch { .. })) => {
                tracing::warn!(
                    "build {build_id} attempt {}: uploaded artifact refused: {e}",
                    request.attempt
                );
                return Err(WorkerApiError::Unprocessable(error_chain(&e)));
            }
            Err(e) => return Err(e.into()),
        }
    }
    if stored_size != Some(request.size) {
        return Err(WorkerApiError::Unprocessable(format!(
            "image sha256:{} of {} bytes was not uploaded (storage has {})",
            request.sha256,
            request.size,
            stored_size.map_or("nothing".to_owned(), |size| format!("{size} bytes"))
        )));
    }
    let (recipe, repository) = build_context(&state, &build).await?;
    let log_key = store_log(&state, build_id, request.attempt).await?;
    let image = NewImage {
        digest: format!("sha256:{}", request.sha256),
        size: request.size,
        sif_metadata: request.sif_metadata,
        repository_id: Some(repository.id),
        commit_sha: Some(build.commit_sha.clone()),
        recipe_path: Some(recipe.path.clone()),
        base_image_digest: request.base_image_digest,
        builder_version: request.builder_version,
        pushed: false,
    };
    let published = state
        .queue
        .publish(
            &lease,
            &image,
            recipe.container_id,
            &recipe.tag,
            Some(&log_key),
        )
        .await?;
    state.db.delete_log_chunks(build_id).await?;
    let tag_moved = match &published.tag {
        Ok(_) => true,
        Err(kept) => {
            tracing::info!(
                "build {build_id}: tag {}:{} is frozen on image {kept}: not moved",
                recipe.container_name,
                recipe.tag
            );
            false
        }
    };
    tracing::info!(
        "build {build_id} attempt {}: succeeded with {} ({} bytes)",
        request.attempt,
        published.image.image.digest,
        published.image.image.size
    );
    post_status(&state, &published.build, BuildStage::Succeeded, "built").await;
    Ok(Json(CompleteResponse {
        digest: published.image.image.digest,
        tag_moved,
    }))
}

/// `POST builds/{id}/fail`: the build failed (not retried).
async fn fail(
    State(state): State<AppState>,
    WorkerToken(token): WorkerToken,
    Path(build_id): Path<i64>,
    Json(request): Json<FailRequest>,
) -> Result<StatusCode, WorkerApiError> {
    let (_, lease) = held_lease(&state, &token, build_id, request.attempt).await?;
    // An upload of the failed attempt is of no use now.
    state
        .storage
        .delete(&StorageKey::upload(build_id, request.attempt))
        .await?;
    let log_key = store_log(&state, build_id, request.attempt).await?;
    let build = state
        .queue
        .fail(&lease, &request.error, Some(&log_key))
        .await?;
    state.db.delete_log_chunks(build_id).await?;
    tracing::info!(
        "build {build_id} attempt {}: failed: {}",
        request.attempt,
        request.error
    );
    post_status(&state, &build, BuildStage::Failed, "build failed").await;
    Ok(StatusCode::NO_CONTENT)
}

/// Reports the build's commit status through the ordered poster: a slow
/// or failing GitHub is logged, never felt by the worker.
async fn post_status(state: &AppState, build: &Build, stage: BuildStage, description: &str) {
    let result = async {
        let (recipe, repository) = build_context(state, build).await?;
        let repo = repo_ref(state, &repository).await?;
        Ok::<_, WorkerApiError>(BuildReport {
            build_id: build.id,
            repo,
            commit_sha: build.commit_sha.clone(),
            recipe_path: recipe.path,
            stage,
            description: description.to_owned(),
        })
    }
    .await;
    match result {
        Ok(report) => state.statuses.report(report),
        Err(e) => tracing::warn!("build {}: commit status: {}", build.id, error_chain(&e)),
    }
}

/// Makes a worker token: stores its hash under `name` and returns the
/// secret, which exists nowhere else.
pub async fn issue_worker_token(
    db: &Db,
    name: &str,
    now: Timestamp,
) -> Result<(ApiToken, String), TokenIssueError> {
    let mut random = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut random))
        .map_err(TokenIssueError::Random)?;
    let secret = format!("sifw_{}", hex::encode(random));
    let token = db
        .insert_token(
            &NewToken {
                token_hash: hash_token(&secret),
                user_id: None,
                name: name.to_owned(),
                scope: TokenScope::Worker,
                expires_at: None,
            },
            now,
        )
        .await?;
    Ok((token, secret))
}

#[derive(Debug, thiserror::Error)]
pub enum TokenIssueError {
    #[error("cannot read random bytes from /dev/urandom for a worker token")]
    Random(#[source] std::io::Error),
    #[error(transparent)]
    Db(#[from] DbError),
}
