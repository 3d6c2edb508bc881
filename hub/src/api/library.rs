//! The library API: what `apptainer pull/push/search library://` speaks
//! (Sylabs' container-library client), over the hub's catalog. An entity
//! is a GitHub owner login, a collection a repository, a container a
//! container; library ids are our row ids as strings.
//!
//! Every answer is `{"data": …}` or `{"error": {"code", "message"}}`, also
//! a 404 for an unknown route under `/v1/` (only the library's own
//! `/v2/imagefile/…` and `/v2/tags/…` live under `/v2/`, which is the OCI
//! distribution API's). `/v1/oci-redirect/…` is such an unknown route:
//! the client then falls back to `/v1/imagefile/…`.
//!
//! Pulls stream the image (with `Range`), or on S3 redirect to a signed
//! URL, through the download API's serving code. Pushes need a token of
//! scope `push` or `admin` whose user may write the entity: their own
//! login, or a repository they have write or admin access to. An image is
//! announced (`POST /v1/images`, a row in `library_uploads` whose library
//! id is `upload-<id>`), uploaded to a URL the hub hands out (a signed S3
//! `PUT` on S3; the hub itself, authorised by a secret in the URL,
//! elsewhere) or in parts through the hub (`_multipart`, for images over
//! 64 MiB), and published by `_complete` only once storage holds bytes
//! that match the announced sha256 and size: a mismatch or a truncated
//! body publishes nothing and leaves no object behind. The hub's images
//! are all one architecture, [`HUB_ARCH`]; tags are not per architecture.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;

use axum::body::Body;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use axum::{Json, Router};
use futures_util::{Stream, StreamExt as _, TryStreamExt as _};
use serde::{Deserialize, Serialize};

use crate::access::{Via, Viewer};
use crate::api::download::{safe_filename, CountsFor, Download, DownloadError, DEFAULT_TAG};
use crate::db::{
    hash_token, Container, DbError, Image, LibraryUpload, LibraryUploadPart, NewImage, Permission,
    Repository, Timestamp, TokenScope,
};
use crate::error_chain;
use crate::ratelimit::{ClientAddr, RateLimited};
use crate::serve::AppState;
use crate::storage::{Expected, Storage, StorageError, StorageKey};

/// What `/version` reports: 2.0.0-alpha.1 turns on the v2 upload,
/// alpha.2 the architecture-aware tags.
const API_VERSION: &str = "2.0.0-alpha.2";
/// The architecture of every image the hub holds.
pub const HUB_ARCH: &str = "amd64";
/// Size of the parts of a multipart push (the client's threshold too).
const PART_SIZE: u64 = 64 * 1024 * 1024;
/// Most parts one multipart push may have: 640 GiB at [`PART_SIZE`].
const MAX_PARTS: u64 = 10_000;
/// Longest a signed S3 upload URL lives, plus a second per MiB.
const SIGNED_UPLOAD_BASE: Duration = Duration::from_secs(3600);
const SIGNED_UPLOAD_BYTES_PER_SEC: u64 = 1024 * 1024;
/// S3 takes at most 5 GiB in one `PUT`; bigger single uploads go through
/// the hub.
const MAX_SINGLE_PUT: u64 = 5 * 1024 * 1024 * 1024;
/// Most results of each kind a search returns.
const SEARCH_LIMIT: i64 = 50;
/// An upload untouched this long was abandoned by its client: longer
/// than any signed URL lives.
const STALE_UPLOAD_AGE: Duration = Duration::from_secs(24 * 60 * 60);
/// Abandoned uploads cleared each time an upload starts.
const STALE_UPLOADS_PER_SWEEP: i64 = 10;
/// Library ids of announced images not yet published start with this.
const UPLOAD_ID_PREFIX: &str = "upload-";

#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error(transparent)]
    Database(#[from] DbError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Download(#[from] DownloadError),
    #[error(transparent)]
    RateLimited(#[from] RateLimited),
    #[error("cannot read random bytes for an upload secret")]
    Random(#[source] getrandom::Error),
}

impl LibraryError {
    fn status(&self) -> StatusCode {
        match self {
            LibraryError::NotFound(_) | LibraryError::Download(DownloadError::NotFound(_)) => {
                StatusCode::NOT_FOUND
            }
            LibraryError::BadRequest(_) => StatusCode::BAD_REQUEST,
            LibraryError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            LibraryError::Forbidden(_) => StatusCode::FORBIDDEN,
            LibraryError::Conflict(_) => StatusCode::CONFLICT,
            LibraryError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            LibraryError::RateLimited(_)
            | LibraryError::Download(DownloadError::RateLimited(_)) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            LibraryError::Database(_)
            | LibraryError::Storage(_)
            | LibraryError::Download(_)
            | LibraryError::Random(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for LibraryError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!("library api: {}", error_chain(&self));
            "internal error".to_owned()
        } else {
            error_chain(&self)
        };
        let mut response = error_response(status, &message);
        let retry_after = match &self {
            LibraryError::RateLimited(limited)
            | LibraryError::Download(DownloadError::RateLimited(limited)) => {
                Some(limited.retry_after_secs)
            }
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// `{"error": {"code", "message"}}` with that status.
fn error_response(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({
            "error": { "code": status.as_u16(), "message": message }
        })),
    )
        .into_response()
}

/// The envelope of every successful answer.
#[derive(Serialize)]
struct Envelope<T> {
    data: T,
}

/// `{"data": …}`.
fn data<T: Serialize>(value: T) -> Response {
    Json(Envelope { data: value }).into_response()
}

type Answer = Result<Response, LibraryError>;

/// A JSON request body, read whatever its `Content-Type`: the library
/// client sends none. Bad JSON is a 400 in the envelope.
struct JsonBody<T>(T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = LibraryError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|e| LibraryError::BadRequest(format!("cannot read the request body: {e}")))?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| LibraryError::BadRequest(format!("invalid JSON request body: {e}")))
    }
}

/// The library routes, mounted at the root.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/version", get(version))
        .route("/assets/config/config.prod.json", get(service_config))
        .route("/v1/token-status", get(token_status))
        .route("/v1/entities", post(create_entity))
        .route("/v1/entities/{*reference}", get(get_entity))
        .route("/v1/collections", post(create_collection))
        .route("/v1/collections/{*reference}", get(get_collection))
        .route("/v1/containers", post(create_container))
        .route("/v1/containers/{*reference}", get(get_container))
        .route("/v1/images", post(create_image))
        .route("/v1/images/{*reference}", get(get_image))
        .route("/v1/imagefile/{*reference}", get(pull))
        .route("/v1/tags/{container}", get(tags_v1).post(set_tag_v1))
        .route("/v2/tags/{container}", get(tags_v2).post(set_tag_v2))
        .route("/v1/search", get(search))
        .route("/v2/imagefile/{image}", post(start_upload))
        .route("/v2/imagefile/{image}/_upload", put(receive_upload))
        .route("/v2/imagefile/{image}/_complete", put(complete_upload))
        .route(
            "/v2/imagefile/{image}/_multipart",
            post(start_multipart).put(part_url),
        )
        .route("/v2/imagefile/{image}/_part", put(receive_part))
        .route(
            "/v2/imagefile/{image}/_multipart_complete",
            put(complete_multipart),
        )
        .route(
            "/v2/imagefile/{image}/_multipart_abort",
            put(abort_multipart),
        )
        .route("/v1/{*rest}", any(unknown_route))
}

async fn unknown_route(method: Method, Path(rest): Path<String>) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        &format!("no library route {method} /v1/{rest}"),
    )
}

// ---- the JSON model, as the client's `models.go` reads it ----

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct EntityJson {
    id: String,
    name: String,
    description: String,
    collections: Vec<String>,
    size: i64,
    quota: i64,
    default_private: bool,
    custom_data: String,
    deleted: bool,
    created_by: String,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct CollectionJson {
    id: String,
    name: String,
    description: String,
    entity: String,
    entity_name: String,
    containers: Vec<String>,
    size: i64,
    private: bool,
    custom_data: String,
    deleted: bool,
    created_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<String>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct ContainerJson {
    id: String,
    name: String,
    description: String,
    full_description: String,
    collection: String,
    collection_name: String,
    entity: String,
    entity_name: String,
    images: Vec<String>,
    image_tags: BTreeMap<String, String>,
    arch_tags: BTreeMap<String, BTreeMap<String, String>>,
    size: i64,
    download_count: i64,
    stars: i64,
    private: bool,
    read_only: bool,
    custom_data: String,
    deleted: bool,
    created_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<String>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct ImageJson {
    id: String,
    /// `sha256.<hex>`.
    hash: String,
    description: String,
    container: String,
    size: i64,
    uploaded: bool,
    arch: String,
    custom_data: String,
    entity: String,
    entity_name: String,
    collection: String,
    collection_name: String,
    container_name: String,
    tags: Vec<String>,
    container_stars: i64,
    container_downloads: i64,
    deleted: bool,
    created_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<String>,
}

/// RFC 3339, as Go's `time.Time` reads it.
fn rfc3339(at: Timestamp) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(at.unix_millis())
        .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// `sha256:<hex>` as the library writes it, `sha256.<hex>`.
fn library_hash(digest: &str) -> String {
    digest.replacen(':', ".", 1)
}

/// The digest a `sha256.<hex>` library hash names, if it is one.
fn digest_of_hash(hash: &str) -> Option<String> {
    let hex = hash.strip_prefix("sha256.")?;
    let valid = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    valid.then(|| format!("sha256:{hex}"))
}

/// A name the client accepts as part of a reference (its `IsRefPart`).
fn is_ref_part(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.split(['.', '_', '-']).all(|piece| {
            !piece.is_empty()
                && piece
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

fn check_ref_part(what: &str, name: &str) -> Result<(), LibraryError> {
    if is_ref_part(name) {
        Ok(())
    } else {
        Err(LibraryError::BadRequest(format!(
            "invalid {what} name {name:?}: lowercase letters and digits, separated by single '.', '_' or '-'"
        )))
    }
}

fn entity_json(name: &str, collections: &[Repository]) -> EntityJson {
    EntityJson {
        id: name.to_lowercase(),
        name: name.to_lowercase(),
        collections: collections.iter().map(|r| r.id.to_string()).collect(),
        ..EntityJson::default()
    }
}

async fn collection_json(
    state: &AppState,
    repo: &Repository,
) -> Result<CollectionJson, LibraryError> {
    let containers = state.db.list_containers(repo.id).await?;
    Ok(CollectionJson {
        id: repo.id.to_string(),
        name: repo.name.clone(),
        entity: repo.owner.to_lowercase(),
        entity_name: repo.owner.to_lowercase(),
        containers: containers.iter().map(|c| c.id.to_string()).collect(),
        private: repo.private,
        created_at: rfc3339(repo.created_at),
        ..CollectionJson::default()
    })
}

async fn container_json(
    state: &AppState,
    repo: &Repository,
    container: &Container,
) -> Result<ContainerJson, LibraryError> {
    let tags = state.db.library_tags(container.id).await?;
    let image_tags: BTreeMap<String, String> = tags
        .iter()
        .map(|tag| (tag.name.clone(), tag.image_id.to_string()))
        .collect();
    let mut images: Vec<(i64, i64)> = tags.iter().map(|t| (t.image_id, t.size)).collect();
    images.sort_unstable();
    images.dedup();
    Ok(ContainerJson {
        id: container.id.to_string(),
        name: container.name.clone(),
        collection: repo.id.to_string(),
        collection_name: repo.name.clone(),
        entity: repo.owner.to_lowercase(),
        entity_name: repo.owner.to_lowercase(),
        images: images.iter().map(|(id, _)| id.to_string()).collect(),
        arch_tags: BTreeMap::from([(HUB_ARCH.to_owned(), image_tags.clone())]),
        image_tags,
        size: images.iter().map(|(_, size)| size).sum(),
        private: repo.private,
        created_at: rfc3339(container.created_at),
        ..ContainerJson::default()
    })
}

/// Where an image is shown: its container and collection, when known.
struct Place<'a> {
    repo: &'a Repository,
    container: &'a Container,
}

async fn image_json(
    state: &AppState,
    image: &Image,
    place: Option<Place<'_>>,
) -> Result<ImageJson, LibraryError> {
    let mut json = ImageJson {
        id: image.id.to_string(),
        hash: library_hash(&image.digest),
        size: image.size,
        uploaded: true,
        arch: HUB_ARCH.to_owned(),
        created_at: rfc3339(image.created_at),
        ..ImageJson::default()
    };
    if let Some(Place { repo, container }) = place {
        place_image(&mut json, repo, container);
        json.tags = state
            .db
            .library_tags(container.id)
            .await?
            .into_iter()
            .filter(|tag| tag.image_id == image.id)
            .map(|tag| tag.name)
            .collect();
    }
    Ok(json)
}

fn place_image(json: &mut ImageJson, repo: &Repository, container: &Container) {
    json.container = container.id.to_string();
    json.container_name = container.name.clone();
    json.collection = repo.id.to_string();
    json.collection_name = repo.name.clone();
    json.entity = repo.owner.to_lowercase();
    json.entity_name = repo.owner.to_lowercase();
}

/// An announced image not published yet.
fn pending_image_json(
    upload: &LibraryUpload,
    repo: &Repository,
    container: &Container,
) -> ImageJson {
    let mut json = ImageJson {
        id: format!("{UPLOAD_ID_PREFIX}{}", upload.id),
        hash: library_hash(&upload.digest),
        description: upload.description.clone(),
        size: upload.size.unwrap_or(0),
        uploaded: false,
        arch: HUB_ARCH.to_owned(),
        created_at: rfc3339(upload.created_at),
        ..ImageJson::default()
    };
    place_image(&mut json, repo, container);
    json
}

// ---- who may do what ----

/// The pushing user's id and login: a token of scope `push` or `admin`
/// (or a browser session) of a user.
fn pusher(viewer: &Viewer) -> Result<(i64, String), LibraryError> {
    let (Some(user_id), Some(login)) = (viewer.user_id(), viewer.login()) else {
        return Err(LibraryError::Unauthorized(
            "pushing needs a token of scope push or admin".to_owned(),
        ));
    };
    if !viewer.allows(TokenScope::Push) {
        return Err(LibraryError::Forbidden(format!(
            "this token of {login} may not push: it needs scope push or admin"
        )));
    }
    Ok((user_id, login.to_owned()))
}

/// 404 when the viewer may not see `repo`, 403 when they may see but not
/// write it.
async fn check_writable(
    state: &AppState,
    viewer: &Viewer,
    repo: &Repository,
) -> Result<(), LibraryError> {
    match state.db.permission(viewer, repo).await? {
        Some(permission) if permission >= Permission::Write => Ok(()),
        Some(_) => Err(LibraryError::Forbidden(format!(
            "{} may not push to {}: it needs write access",
            viewer.login().unwrap_or("this token"),
            repo.full_name()
        ))),
        None => Err(LibraryError::NotFound(format!(
            "collection {} not found",
            repo.full_name()
        ))),
    }
}

/// A readable container by id, with its repository.
async fn readable_container(
    state: &AppState,
    viewer: &Viewer,
    id: &str,
) -> Result<(Repository, Container), LibraryError> {
    let not_found = || LibraryError::NotFound(format!("container {id} not found"));
    let id: i64 = id.parse().map_err(|_| not_found())?;
    let container = state
        .db
        .find_container_by_id(id)
        .await?
        .ok_or_else(not_found)?;
    let repo = state
        .db
        .find_repository_by_id(container.repository_id)
        .await?
        .ok_or_else(not_found)?;
    if state.db.permission(viewer, &repo).await?.is_none() {
        return Err(not_found());
    }
    Ok((repo, container))
}

/// A container `owner/repo/name` the viewer may read.
async fn container_by_ref(
    state: &AppState,
    viewer: &Viewer,
    owner: &str,
    repo: &str,
    name: &str,
) -> Result<(Repository, Container), LibraryError> {
    let not_found = || LibraryError::NotFound(format!("container {owner}/{repo}/{name} not found"));
    let repository = state
        .db
        .readable_repository(viewer, owner, repo)
        .await?
        .ok_or_else(not_found)?;
    let container = state
        .db
        .find_container(repository.id, name)
        .await?
        .ok_or_else(not_found)?;
    Ok((repository, container))
}

// ---- discovery ----

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VersionJson {
    version: &'static str,
    api_version: &'static str,
}

async fn version() -> Response {
    data(VersionJson {
        version: env!("CARGO_PKG_VERSION"),
        api_version: API_VERSION,
    })
}

/// Where the library, keystore and token services are: all here (the
/// hub answers no keystore requests).
async fn service_config(State(state): State<AppState>) -> Json<serde_json::Value> {
    let base = state.config.resolved_public_url();
    let base = base.trim_end_matches('/');
    let uri = serde_json::json!({ "uri": base });
    Json(serde_json::json!({
        "libraryAPI": uri,
        "keystoreAPI": uri,
        "tokenAPI": uri,
    }))
}

/// 200 for a valid token (a bad one is refused by the extractor).
async fn token_status(viewer: Viewer) -> Answer {
    if viewer.via == Via::Anonymous {
        return Err(LibraryError::Unauthorized("no token given".to_owned()));
    }
    Ok(data(serde_json::json!({
        "status": "valid",
        "username": viewer.login().unwrap_or_default(),
    })))
}

// ---- entities, collections, containers ----

async fn get_entity(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
) -> Answer {
    if name.contains('/') || !state.db.library_entity_exists(&viewer, &name).await? {
        return Err(LibraryError::NotFound(format!("entity {name} not found")));
    }
    let collections = state.db.library_collections_of(&viewer, &name).await?;
    Ok(data(entity_json(&name, &collections)))
}

#[derive(Deserialize)]
struct NewEntity {
    name: String,
}

/// Entities are users: "creating" one is allowed for the pusher's own
/// login, which always exists.
async fn create_entity(
    State(state): State<AppState>,
    viewer: Viewer,
    JsonBody(request): JsonBody<NewEntity>,
) -> Answer {
    let (_, login) = pusher(&viewer)?;
    if !request.name.eq_ignore_ascii_case(&login) {
        return Err(LibraryError::Forbidden(format!(
            "{login} may only create the entity {}",
            login.to_lowercase()
        )));
    }
    let collections = state.db.library_collections_of(&viewer, &login).await?;
    Ok(data(entity_json(&login, &collections)))
}

async fn get_collection(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(reference): Path<String>,
) -> Answer {
    let not_found = || LibraryError::NotFound(format!("collection {reference} not found"));
    let repo = match reference.split_once('/') {
        Some((owner, name)) if !name.contains('/') => {
            state.db.readable_repository(&viewer, owner, name).await?
        }
        Some(_) => None,
        None => match reference.parse::<i64>() {
            Ok(id) => match state.db.find_repository_by_id(id).await? {
                Some(repo) if state.db.permission(&viewer, &repo).await?.is_some() => Some(repo),
                _ => None,
            },
            Err(_) => None,
        },
    };
    let repo = repo.ok_or_else(not_found)?;
    Ok(data(collection_json(&state, &repo).await?))
}

#[derive(Deserialize)]
struct NewCollection {
    name: String,
    /// The entity's id: its name.
    entity: String,
}

/// A collection a push creates: a repository of the pusher's own, with
/// no GitHub id.
async fn create_collection(
    State(state): State<AppState>,
    viewer: Viewer,
    JsonBody(request): JsonBody<NewCollection>,
) -> Answer {
    let (_, login) = pusher(&viewer)?;
    check_ref_part("collection", &request.name)?;
    if let Some(repo) = state
        .db
        .find_repository(&request.entity, &request.name)
        .await?
    {
        check_writable(&state, &viewer, &repo).await?;
        return Ok(data(collection_json(&state, &repo).await?));
    }
    if !request.entity.eq_ignore_ascii_case(&login) {
        return Err(LibraryError::Forbidden(format!(
            "{login} may not create collections of {}",
            request.entity
        )));
    }
    let repo = state
        .db
        .insert_pushed_repository(&login, &request.name, Timestamp::now())
        .await?;
    tracing::info!("library: {login} created collection {}", repo.full_name());
    Ok(data(collection_json(&state, &repo).await?))
}

async fn get_container(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(reference): Path<String>,
) -> Answer {
    let parts: Vec<&str> = reference.split('/').collect();
    let (repo, container) = match parts.as_slice() {
        [owner, repo, name] => container_by_ref(&state, &viewer, owner, repo, name).await?,
        [id] => readable_container(&state, &viewer, id).await?,
        _ => {
            return Err(LibraryError::NotFound(format!(
                "container {reference} not found"
            )))
        }
    };
    Ok(data(container_json(&state, &repo, &container).await?))
}

#[derive(Deserialize)]
struct NewContainer {
    name: String,
    /// The collection's id.
    collection: String,
}

async fn create_container(
    State(state): State<AppState>,
    viewer: Viewer,
    JsonBody(request): JsonBody<NewContainer>,
) -> Answer {
    let (_, login) = pusher(&viewer)?;
    check_ref_part("container", &request.name)?;
    let not_found =
        || LibraryError::NotFound(format!("collection {} not found", request.collection));
    let id: i64 = request.collection.parse().map_err(|_| not_found())?;
    let repo = state
        .db
        .find_repository_by_id(id)
        .await?
        .ok_or_else(not_found)?;
    check_writable(&state, &viewer, &repo).await?;
    let container = state
        .db
        .upsert_container(repo.id, &request.name, Timestamp::now())
        .await?;
    tracing::info!(
        "library: {login} created container {}/{}",
        repo.full_name(),
        container.name
    );
    Ok(data(container_json(&state, &repo, &container).await?))
}

// ---- images and tags ----

#[derive(Deserialize)]
struct ArchQuery {
    #[serde(default)]
    arch: String,
}

fn check_arch(arch: &str) -> Result<(), LibraryError> {
    if arch.is_empty() || arch == HUB_ARCH {
        Ok(())
    } else {
        Err(LibraryError::NotFound(format!(
            "no image for architecture {arch}: this hub holds {HUB_ARCH} images only"
        )))
    }
}

/// `owner/repo/container:tag` (or `:sha256.<hex>`), tag `latest` when left out.
fn split_image_ref(reference: &str) -> Option<(&str, &str, &str, &str)> {
    let (path, tag) = match reference.rsplit_once(':') {
        Some((path, tag)) => (path, tag),
        None => (reference, DEFAULT_TAG),
    };
    match path.split('/').collect::<Vec<_>>().as_slice() {
        [owner, repo, container] => Some((owner, repo, container, tag)),
        _ => None,
    }
}

/// What an image reference names for the viewer.
enum Resolved {
    Published {
        image: Image,
        place: Option<(Repository, Container)>,
    },
    Pending {
        upload: LibraryUpload,
        repo: Repository,
        container: Container,
    },
}

async fn resolve_image(
    state: &AppState,
    viewer: &Viewer,
    reference: &str,
) -> Result<Resolved, LibraryError> {
    let not_found = || LibraryError::NotFound(format!("image {reference} not found"));
    if !reference.contains('/') {
        if let Some(id) = reference.strip_prefix(UPLOAD_ID_PREFIX) {
            let id: i64 = id.parse().map_err(|_| not_found())?;
            let upload = state
                .db
                .find_library_upload(id)
                .await?
                .ok_or_else(not_found)?;
            let (repo, container) =
                readable_container(state, viewer, &upload.container_id.to_string()).await?;
            if let Some(image_id) = upload.image_id {
                let image = state.db.find_image(image_id).await?.ok_or_else(not_found)?;
                return Ok(Resolved::Published {
                    image,
                    place: Some((repo, container)),
                });
            }
            return Ok(Resolved::Pending {
                upload,
                repo,
                container,
            });
        }
        let id: i64 = reference.parse().map_err(|_| not_found())?;
        let image = state.db.find_image(id).await?.ok_or_else(not_found)?;
        let image = state
            .db
            .find_readable_image_by_digest(viewer, &image.digest)
            .await?
            .ok_or_else(not_found)?;
        return Ok(Resolved::Published { image, place: None });
    }
    let (owner, repo, container, tag) = split_image_ref(reference).ok_or_else(not_found)?;
    let (repository, container_row) =
        container_by_ref(state, viewer, owner, repo, container).await?;
    if let Some(digest) = digest_of_hash(tag) {
        if let Some(image) = state
            .db
            .find_readable_image_by_digest(viewer, &digest)
            .await?
        {
            return Ok(Resolved::Published {
                image,
                place: Some((repository, container_row)),
            });
        }
        let upload = state
            .db
            .find_library_upload_by_digest(container_row.id, &digest)
            .await?
            .ok_or_else(not_found)?;
        return Ok(Resolved::Pending {
            upload,
            repo: repository,
            container: container_row,
        });
    }
    let image = state
        .db
        .find_readable_tagged_image(viewer, owner, repo, container, tag)
        .await?
        .ok_or_else(not_found)?;
    Ok(Resolved::Published {
        image,
        place: Some((repository, container_row)),
    })
}

async fn get_image(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(reference): Path<String>,
    Query(query): Query<ArchQuery>,
) -> Answer {
    check_arch(&query.arch)?;
    match resolve_image(&state, &viewer, &reference).await? {
        Resolved::Published { image, place } => {
            let place = place
                .as_ref()
                .map(|(repo, container)| Place { repo, container });
            Ok(data(image_json(&state, &image, place).await?))
        }
        Resolved::Pending {
            upload,
            repo,
            container,
        } => Ok(data(pending_image_json(&upload, &repo, &container))),
    }
}

#[derive(Deserialize)]
struct NewLibraryImage {
    hash: String,
    /// The container's id.
    container: String,
    #[serde(default)]
    description: String,
}

/// Announces an image to upload into a container.
async fn create_image(
    State(state): State<AppState>,
    viewer: Viewer,
    JsonBody(request): JsonBody<NewLibraryImage>,
) -> Answer {
    let (user_id, _) = pusher(&viewer)?;
    let digest = digest_of_hash(&request.hash).ok_or_else(|| {
        LibraryError::BadRequest(format!(
            "invalid image hash {:?}: expected sha256.<64 lowercase hex digits>",
            request.hash
        ))
    })?;
    let (repo, container) = readable_container(&state, &viewer, &request.container).await?;
    check_writable(&state, &viewer, &repo).await?;
    let upload = state
        .db
        .upsert_library_upload(
            container.id,
            &digest,
            &request.description,
            user_id,
            Timestamp::now(),
        )
        .await?;
    Ok(data(pending_image_json(&upload, &repo, &container)))
}

/// The announced image `image` (`upload-<id>`) the pusher may write, with
/// its container and collection.
async fn writable_upload(
    state: &AppState,
    viewer: &Viewer,
    image: &str,
) -> Result<(LibraryUpload, Repository, Container), LibraryError> {
    pusher(viewer)?;
    let upload = find_upload(state, image).await?;
    let (repo, container) =
        readable_container(state, viewer, &upload.container_id.to_string()).await?;
    check_writable(state, viewer, &repo).await?;
    Ok((upload, repo, container))
}

async fn find_upload(state: &AppState, image: &str) -> Result<LibraryUpload, LibraryError> {
    let not_found = || LibraryError::NotFound(format!("announced image {image} not found"));
    let id: i64 = image
        .strip_prefix(UPLOAD_ID_PREFIX)
        .and_then(|id| id.parse().ok())
        .ok_or_else(not_found)?;
    state
        .db
        .find_library_upload(id)
        .await?
        .ok_or_else(not_found)
}

/// The image a tag request names, which the viewer may read: a published
/// image by id, or an announced one (of this container) once published.
async fn taggable_image(
    state: &AppState,
    viewer: &Viewer,
    container: &Container,
    image: &str,
) -> Result<Image, LibraryError> {
    let not_found = || LibraryError::NotFound(format!("image {image} not found"));
    if image.starts_with(UPLOAD_ID_PREFIX) {
        let upload = find_upload(state, image).await?;
        if upload.container_id != container.id {
            return Err(not_found());
        }
        let image_id = upload
            .image_id
            .ok_or_else(|| LibraryError::Conflict(format!("image {image} is not uploaded yet")))?;
        return state.db.find_image(image_id).await?.ok_or_else(not_found);
    }
    let id: i64 = image.parse().map_err(|_| not_found())?;
    let found = state.db.find_image(id).await?.ok_or_else(not_found)?;
    state
        .db
        .find_readable_image_by_digest(viewer, &found.digest)
        .await?
        .ok_or_else(not_found)
}

async fn tag_map(
    state: &AppState,
    container: &Container,
) -> Result<BTreeMap<String, String>, LibraryError> {
    Ok(state
        .db
        .library_tags(container.id)
        .await?
        .into_iter()
        .map(|tag| (tag.name, tag.image_id.to_string()))
        .collect())
}

async fn tags_v1(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(container): Path<String>,
) -> Answer {
    let (_, container) = readable_container(&state, &viewer, &container).await?;
    Ok(data(tag_map(&state, &container).await?))
}

async fn tags_v2(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(container): Path<String>,
) -> Answer {
    let (_, container) = readable_container(&state, &viewer, &container).await?;
    let tags = tag_map(&state, &container).await?;
    let by_arch: BTreeMap<&str, BTreeMap<String, String>> = if tags.is_empty() {
        BTreeMap::new()
    } else {
        BTreeMap::from([(HUB_ARCH, tags)])
    };
    Ok(data(by_arch))
}

#[derive(Deserialize)]
struct TagRequest {
    #[serde(rename = "Tag")]
    tag: String,
    #[serde(rename = "ImageID")]
    image_id: String,
    #[serde(rename = "Arch", default)]
    arch: String,
}

async fn set_tag(
    state: &AppState,
    viewer: &Viewer,
    container: &str,
    request: TagRequest,
) -> Answer {
    let (_, login) = pusher(viewer)?;
    check_ref_part("tag", &request.tag)?;
    if !request.arch.is_empty() && request.arch != HUB_ARCH {
        return Err(LibraryError::BadRequest(format!(
            "architecture {} is not taken: this hub holds {HUB_ARCH} images only",
            request.arch
        )));
    }
    let (repo, container) = readable_container(state, viewer, container).await?;
    check_writable(state, viewer, &repo).await?;
    let image = taggable_image(state, viewer, &container, &request.image_id).await?;
    match state
        .db
        .set_tag(container.id, &request.tag, image.id, Timestamp::now())
        .await
    {
        Ok(_) => {}
        Err(DbError::TagFrozen { .. }) => {
            return Err(LibraryError::Conflict(format!(
                "tag {} of {}/{} is frozen",
                request.tag,
                repo.full_name(),
                container.name
            )))
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(
        "library: {login} tagged {}/{}:{} as {}",
        repo.full_name(),
        container.name,
        request.tag,
        image.digest
    );
    Ok(data(serde_json::json!({})))
}

async fn set_tag_v1(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(container): Path<String>,
    JsonBody(request): JsonBody<TagRequest>,
) -> Answer {
    set_tag(&state, &viewer, &container, request).await
}

async fn set_tag_v2(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(container): Path<String>,
    JsonBody(request): JsonBody<TagRequest>,
) -> Answer {
    set_tag(&state, &viewer, &container, request).await
}

// ---- pull and search ----

async fn pull(
    State(state): State<AppState>,
    viewer: Viewer,
    client: ClientAddr,
    Path(reference): Path<String>,
    Query(query): Query<ArchQuery>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, LibraryError> {
    check_arch(&query.arch)?;
    state.rate_limits.download(&viewer, client)?;
    let not_found = || LibraryError::NotFound(format!("image {reference} not found"));
    let (_, _, container, tag) = split_image_ref(&reference).ok_or_else(not_found)?;
    let Resolved::Published { image, .. } = resolve_image(&state, &viewer, &reference).await?
    else {
        return Err(not_found());
    };
    let hex = image
        .digest
        .strip_prefix("sha256:")
        .unwrap_or(&image.digest);
    let download = Download {
        key: StorageKey::image(hex)?,
        // A library pull is a download of the image, counted for its collection.
        counts_for: CountsFor::Image(image.digest.clone()),
        filename: format!("{}_{}.sif", safe_filename(container), safe_filename(tag)),
        cache_control: if digest_of_hash(tag).is_some() {
            "private, max-age=31536000, immutable"
        } else {
            "private, no-cache"
        },
    };
    Ok(download.respond(&state, &method, &headers).await?)
}

#[derive(Deserialize)]
struct SearchQuery {
    value: Option<String>,
}

#[derive(Serialize)]
struct SearchJson {
    entity: Vec<EntityJson>,
    collection: Vec<CollectionJson>,
    container: Vec<ContainerJson>,
    image: Vec<ImageJson>,
}

/// Entities, collections, containers and their tagged images whose names
/// contain `value`, among what the viewer may read.
async fn search(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(query): Query<SearchQuery>,
) -> Answer {
    let value = query.value.unwrap_or_default();
    if value.chars().count() < 3 {
        return Err(LibraryError::BadRequest(format!(
            "bad query {value:?}: search for at least 3 characters"
        )));
    }
    let repos = state
        .db
        .search_collections(&viewer, &value, SEARCH_LIMIT)
        .await?;
    let mut owners: Vec<String> = repos
        .iter()
        .filter(|repo| repo.owner.to_lowercase().contains(&value.to_lowercase()))
        .map(|repo| repo.owner.to_lowercase())
        .collect();
    owners.dedup();
    let mut entities = Vec::new();
    for owner in owners {
        let collections = state.db.library_collections_of(&viewer, &owner).await?;
        entities.push(entity_json(&owner, &collections));
    }
    let mut collections = Vec::new();
    for repo in &repos {
        collections.push(collection_json(&state, repo).await?);
    }
    let mut containers = Vec::new();
    let mut images = Vec::new();
    for found in state
        .db
        .search_containers(&viewer, &value, SEARCH_LIMIT)
        .await?
    {
        let Some(repo) = state.db.find_repository_by_id(found.repository_id).await? else {
            continue;
        };
        let container = Container {
            id: found.id,
            repository_id: found.repository_id,
            name: found.name,
            created_at: found.created_at,
        };
        let json = container_json(&state, &repo, &container).await?;
        for id in &json.images {
            if images.len() as i64 >= SEARCH_LIMIT {
                break;
            }
            let Ok(id) = id.parse::<i64>() else { continue };
            if let Some(image) = state.db.find_image(id).await? {
                let place = Place {
                    repo: &repo,
                    container: &container,
                };
                images.push(image_json(&state, &image, Some(place)).await?);
            }
        }
        containers.push(json);
    }
    Ok(data(SearchJson {
        entity: entities,
        collection: collections,
        container: containers,
        image: images,
    }))
}

// ---- push: the v2 upload ----

/// A new random secret, in hex.
fn new_secret() -> Result<String, LibraryError> {
    let mut random = [0u8; 32];
    getrandom::getrandom(&mut random).map_err(LibraryError::Random)?;
    Ok(hex::encode(random))
}

/// Whether `secret` is the upload's current one.
fn secret_matches(upload: &LibraryUpload, secret: &str) -> bool {
    // Both sides are hashes of random secrets, so comparing them leaks
    // nothing useful about the secret through timing.
    upload.secret_hash.as_deref() == Some(hash_token(secret).as_str())
}

fn public_base(state: &AppState) -> String {
    state
        .config
        .resolved_public_url()
        .trim_end_matches('/')
        .to_owned()
}

fn upload_hex(upload: &LibraryUpload) -> &str {
    upload
        .digest
        .strip_prefix("sha256:")
        .unwrap_or(&upload.digest)
}

#[derive(Deserialize)]
struct UploadRequest {
    filesize: i64,
    #[serde(default)]
    sha256sum: String,
}

/// Checks an announced size.
fn announced_size(size: i64) -> Result<u64, LibraryError> {
    u64::try_from(size)
        .ok()
        .filter(|size| *size > 0)
        .ok_or_else(|| LibraryError::BadRequest(format!("invalid file size {size}")))
}

/// Deletes what abandoned uploads staged (a client that died between
/// parts, or never completed) and forgets their secrets; run whenever an
/// upload starts, so staged objects never pile up.
async fn sweep_stale_uploads(state: &AppState) -> Result<(), LibraryError> {
    let before = Timestamp::now().minus(STALE_UPLOAD_AGE);
    for upload in state
        .db
        .stale_library_uploads(before, STALE_UPLOADS_PER_SWEEP)
        .await?
    {
        discard_parts(state, &upload).await?;
        state
            .storage
            .delete(&StorageKey::LibraryUpload {
                upload_id: upload.id,
            })
            .await?;
        state
            .db
            .finish_library_upload(upload.id, None, Timestamp::now())
            .await?;
        tracing::info!(
            "library: abandoned upload {UPLOAD_ID_PREFIX}{} ({}) cleared",
            upload.id,
            upload.digest
        );
    }
    Ok(())
}

/// `POST /v2/imagefile/<id>`: where to `PUT` the image. A signed S3 URL on
/// S3 (for images up to one S3 `PUT`), the hub's own URL otherwise.
async fn start_upload(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(image): Path<String>,
    JsonBody(request): JsonBody<UploadRequest>,
) -> Answer {
    let (upload, _, _) = writable_upload(&state, &viewer, &image).await?;
    let size = announced_size(request.filesize)?;
    sweep_stale_uploads(&state).await?;
    if !request.sha256sum.is_empty() && request.sha256sum != upload_hex(&upload) {
        return Err(LibraryError::BadRequest(format!(
            "sha256 {} is not the announced image's {}",
            request.sha256sum,
            upload_hex(&upload)
        )));
    }
    discard_parts(&state, &upload).await?;
    let secret = new_secret()?;
    let upload = state
        .db
        .start_library_upload(
            upload.id,
            size,
            &hash_token(&secret),
            false,
            Timestamp::now(),
        )
        .await?;
    let staged = StorageKey::LibraryUpload {
        upload_id: upload.id,
    };
    // A leftover of an earlier attempt must not pass for this one.
    state.storage.delete(&staged).await?;
    let signed = if size <= MAX_SINGLE_PUT {
        let valid_for =
            SIGNED_UPLOAD_BASE + Duration::from_secs(size / SIGNED_UPLOAD_BYTES_PER_SEC);
        state.storage.signed_upload_url(&staged, valid_for).await?
    } else {
        None
    };
    let url = match signed {
        Some(url) => url,
        None => format!(
            "{}/v2/imagefile/{image}/_upload?secret={secret}",
            public_base(&state)
        ),
    };
    Ok(data(serde_json::json!({ "uploadURL": url })))
}

#[derive(Deserialize)]
struct SecretQuery {
    secret: String,
}

/// Streams a body into storage as `key`, checked against `expected`; a
/// mismatch is 422 and stores nothing.
async fn store_body(
    state: &AppState,
    key: &StorageKey,
    body: Body,
    expected: Expected,
) -> Result<String, LibraryError> {
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    match state.storage.put_stream(key, stream, expected).await {
        Ok(stored) => Ok(stored.sha256_hex),
        Err(e @ (StorageError::DigestMismatch { .. } | StorageError::SizeMismatch { .. })) => {
            tracing::warn!("library upload refused: {e}");
            Err(LibraryError::Unprocessable(error_chain(&e)))
        }
        Err(e @ StorageError::Body { .. }) => {
            tracing::warn!("library upload cut short: {}", error_chain(&e));
            Err(LibraryError::BadRequest(error_chain(&e)))
        }
        Err(e) => Err(e.into()),
    }
}

/// `PUT /v2/imagefile/<id>/_upload?secret=…`: the image's bytes, straight
/// into storage under their digest once they match what was announced.
async fn receive_upload(
    State(state): State<AppState>,
    Path(image): Path<String>,
    Query(query): Query<SecretQuery>,
    body: Body,
) -> Result<Response, LibraryError> {
    let upload = find_upload(&state, &image).await?;
    let size = match upload.size {
        Some(size) if secret_matches(&upload, &query.secret) && !upload.multipart => size,
        _ => {
            return Err(LibraryError::Forbidden(format!(
                "this upload URL of {image} is not valid (any more)"
            )))
        }
    };
    let expected = Expected {
        sha256_hex: Some(upload_hex(&upload).to_owned()),
        size: u64::try_from(size).ok(),
    };
    let key = StorageKey::image(upload_hex(&upload))?;
    store_body(&state, &key, body, expected).await?;
    state
        .db
        .mark_library_upload_received(upload.id, Timestamp::now())
        .await?;
    // The client wants exactly 200, as S3 answers.
    Ok(StatusCode::OK.into_response())
}

/// Records the verified image and ends the upload.
async fn publish(
    state: &AppState,
    upload: &LibraryUpload,
    repo: &Repository,
    container: &Container,
    size: u64,
) -> Answer {
    let stored = state
        .db
        .insert_image(
            &NewImage {
                digest: upload.digest.clone(),
                size,
                sif_metadata: serde_json::json!({}),
                repository_id: Some(repo.id),
                pushed: true,
                ..NewImage::default()
            },
            Timestamp::now(),
        )
        .await?;
    state
        .db
        .finish_library_upload(upload.id, Some(stored.image.id), Timestamp::now())
        .await?;
    tracing::info!(
        "library: pushed {} ({size} bytes) into {}/{}",
        upload.digest,
        repo.full_name(),
        container.name
    );
    Ok(data(serde_json::json!({
        "quota": { "quotaTotal": 0, "quotaUsage": 0 },
        "containerUrl": format!("{}/{}/{}", public_base(state), repo.full_name(), container.name),
    })))
}

/// `PUT /v2/imagefile/<id>/_complete`: publishes the uploaded image once
/// storage holds its verified bytes (a signed S3 upload is verified now).
async fn complete_upload(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(image): Path<String>,
) -> Answer {
    let (upload, repo, container) = writable_upload(&state, &viewer, &image).await?;
    let size = match upload.size {
        Some(size) if upload.secret_hash.is_some() && !upload.multipart => {
            u64::try_from(size).unwrap_or(0)
        }
        _ => {
            return Err(LibraryError::Conflict(format!(
                "no single upload of {image} is under way"
            )))
        }
    };
    let staged = StorageKey::LibraryUpload {
        upload_id: upload.id,
    };
    let expected = Expected {
        sha256_hex: Some(upload_hex(&upload).to_owned()),
        size: Some(size),
    };
    if state.storage.head(&staged).await?.is_some() {
        let key = StorageKey::image(upload_hex(&upload))?;
        match state.storage.promote(&staged, &key, expected).await {
            Ok(_) => {}
            Err(e @ (StorageError::DigestMismatch { .. } | StorageError::SizeMismatch { .. })) => {
                tracing::warn!("library upload {image} refused: {e}");
                state
                    .db
                    .finish_library_upload(upload.id, None, Timestamp::now())
                    .await?;
                return Err(LibraryError::Unprocessable(error_chain(&e)));
            }
            Err(e) => return Err(e.into()),
        }
    } else if !upload.received {
        return Err(LibraryError::Unprocessable(format!(
            "image {image} ({}) was not uploaded",
            upload.digest
        )));
    }
    publish(&state, &upload, &repo, &container, size).await
}

#[derive(Deserialize)]
struct MultipartStart {
    filesize: i64,
}

/// Deletes the staged parts of an upload (their rows go with the next
/// start or finish).
async fn discard_parts(state: &AppState, upload: &LibraryUpload) -> Result<(), LibraryError> {
    for part in state.db.library_parts(upload.id).await? {
        state
            .storage
            .delete(&StorageKey::LibraryPart {
                upload_id: upload.id,
                part: part.part_number,
            })
            .await?;
    }
    Ok(())
}

/// `POST /v2/imagefile/<id>/_multipart`: starts a multipart upload; its
/// id is the secret the part URLs carry.
async fn start_multipart(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(image): Path<String>,
    JsonBody(request): JsonBody<MultipartStart>,
) -> Answer {
    let (upload, _, _) = writable_upload(&state, &viewer, &image).await?;
    let size = announced_size(request.filesize)?;
    let total_parts = size.div_ceil(PART_SIZE);
    if total_parts > MAX_PARTS {
        return Err(LibraryError::BadRequest(format!(
            "an image of {size} bytes needs more than {MAX_PARTS} parts of {PART_SIZE} bytes"
        )));
    }
    sweep_stale_uploads(&state).await?;
    discard_parts(&state, &upload).await?;
    let upload_id = new_secret()?;
    state
        .db
        .start_library_upload(
            upload.id,
            size,
            &hash_token(&upload_id),
            true,
            Timestamp::now(),
        )
        .await?;
    tracing::info!(
        "library: multipart upload of {image} started: {size} bytes in {total_parts} parts"
    );
    Ok(data(serde_json::json!({
        "uploadID": upload_id,
        "totalParts": total_parts,
        "partSize": PART_SIZE,
        "options": {},
    })))
}

/// The multipart upload `upload_id` of `image`, when it is the current one.
async fn current_multipart(
    state: &AppState,
    viewer: &Viewer,
    image: &str,
    upload_id: &str,
) -> Result<(LibraryUpload, Repository, Container, u64), LibraryError> {
    let (upload, repo, container) = writable_upload(state, viewer, image).await?;
    match upload.size {
        Some(size) if upload.multipart && secret_matches(&upload, upload_id) => {
            let size = u64::try_from(size).unwrap_or(0);
            Ok((upload, repo, container, size))
        }
        _ => Err(LibraryError::NotFound(format!(
            "multipart upload {upload_id} of {image} not found"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PartRequest {
    part_size: i64,
    #[serde(rename = "uploadID")]
    upload_id: String,
    part_number: i64,
    #[serde(default)]
    sha256sum: String,
}

/// Checks that part `number` of `part_size` bytes fits an upload of
/// `size` bytes in parts of [`PART_SIZE`].
fn check_part(size: u64, number: i64, part_size: i64) -> Result<(), LibraryError> {
    let total_parts = size.div_ceil(PART_SIZE);
    let number_ok = u64::try_from(number).is_ok_and(|n| (1..=total_parts).contains(&n));
    let size_ok = u64::try_from(part_size).is_ok_and(|s| s > 0 && s <= PART_SIZE);
    if number_ok && size_ok {
        Ok(())
    } else {
        Err(LibraryError::BadRequest(format!(
            "part {number} of {part_size} bytes does not fit an upload of {total_parts} parts of at most {PART_SIZE} bytes"
        )))
    }
}

/// `PUT /v2/imagefile/<id>/_multipart`: the URL to `PUT` one part to.
async fn part_url(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(image): Path<String>,
    JsonBody(request): JsonBody<PartRequest>,
) -> Answer {
    let (_, _, _, size) = current_multipart(&state, &viewer, &image, &request.upload_id).await?;
    check_part(size, request.part_number, request.part_size)?;
    let sha256 = request.sha256sum.to_lowercase();
    if !sha256.is_empty() && digest_of_hash(&format!("sha256.{sha256}")).is_none() {
        return Err(LibraryError::BadRequest(format!(
            "part sha256 {:?} is not 64 hex digits",
            request.sha256sum
        )));
    }
    let url = format!(
        "{}/v2/imagefile/{image}/_part?uploadID={}&part={}&size={}&sha256={sha256}",
        public_base(&state),
        request.upload_id,
        request.part_number,
        request.part_size
    );
    Ok(data(serde_json::json!({ "presignedURL": url })))
}

#[derive(Deserialize)]
struct PartQuery {
    #[serde(rename = "uploadID")]
    upload_id: String,
    part: i64,
    size: u64,
    #[serde(default)]
    sha256: String,
}

/// `PUT /v2/imagefile/<id>/_part?…`: one part, staged in storage once it
/// has its announced size (and sha256); the ETag is its sha256.
async fn receive_part(
    State(state): State<AppState>,
    Path(image): Path<String>,
    Query(query): Query<PartQuery>,
    body: Body,
) -> Result<Response, LibraryError> {
    let upload = find_upload(&state, &image).await?;
    let size = match upload.size {
        Some(size) if upload.multipart && secret_matches(&upload, &query.upload_id) => size,
        _ => {
            return Err(LibraryError::Forbidden(format!(
                "this part URL of {image} is not valid (any more)"
            )))
        }
    };
    check_part(
        u64::try_from(size).unwrap_or(0),
        query.part,
        i64::try_from(query.size).unwrap_or(i64::MAX),
    )?;
    let key = StorageKey::LibraryPart {
        upload_id: upload.id,
        part: query.part,
    };
    let expected = Expected {
        sha256_hex: (!query.sha256.is_empty()).then(|| query.sha256.clone()),
        size: Some(query.size),
    };
    let sha256 = store_body(&state, &key, body, expected).await?;
    state
        .db
        .record_library_part(&LibraryUploadPart {
            upload_id: upload.id,
            part_number: query.part,
            size: i64::try_from(query.size).unwrap_or(i64::MAX),
            sha256: sha256.clone(),
        })
        .await?;
    let mut response = StatusCode::OK.into_response();
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{sha256}\"")) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    Ok(response)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CompletedPart {
    part_number: i64,
    token: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MultipartComplete {
    #[serde(rename = "uploadID")]
    upload_id: String,
    completed_parts: Vec<CompletedPart>,
}

/// `PUT /v2/imagefile/<id>/_multipart_complete`: assembles the parts into
/// the image, verified against the announced sha256 and size, and
/// publishes it; the parts are deleted either way.
async fn complete_multipart(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(image): Path<String>,
    JsonBody(request): JsonBody<MultipartComplete>,
) -> Answer {
    let (upload, repo, container, size) =
        current_multipart(&state, &viewer, &image, &request.upload_id).await?;
    let parts = state.db.library_parts(upload.id).await?;
    let listed_ok = request.completed_parts.len() == parts.len()
        && request.completed_parts.iter().zip(&parts).enumerate().all(
            |(index, (listed, stored))| {
                listed.part_number == index as i64 + 1
                    && stored.part_number == listed.part_number
                    && listed.token.trim_matches('"') == stored.sha256
            },
        );
    if !listed_ok {
        return Err(LibraryError::BadRequest(format!(
            "the completed parts of {image} are not the {} parts received, in order, with their ETags",
            parts.len()
        )));
    }
    let received: i64 = parts.iter().map(|part| part.size).sum();
    if u64::try_from(received).ok() != Some(size) {
        return Err(LibraryError::Unprocessable(format!(
            "the parts of {image} hold {received} bytes, {size} were announced"
        )));
    }
    let body = parts_in_order(state.storage.clone(), upload.id, &parts);
    let expected = Expected {
        sha256_hex: Some(upload_hex(&upload).to_owned()),
        size: Some(size),
    };
    let key = StorageKey::image(upload_hex(&upload))?;
    let result = state.storage.put_stream(&key, body, expected).await;
    let refused = matches!(
        result,
        Err(StorageError::DigestMismatch { .. } | StorageError::SizeMismatch { .. })
    );
    if result.is_ok() || refused {
        discard_parts(&state, &upload).await?;
    }
    match result {
        Ok(_) => publish(&state, &upload, &repo, &container, size).await,
        Err(e) if refused => {
            tracing::warn!("library multipart upload {image} refused: {e}");
            state
                .db
                .finish_library_upload(upload.id, None, Timestamp::now())
                .await?;
            Err(LibraryError::Unprocessable(error_chain(&e)))
        }
        Err(e) => Err(e.into()),
    }
}

/// The staged parts' bytes one after another, each read when the one
/// before has been sent.
fn parts_in_order(
    storage: Storage,
    upload_id: i64,
    parts: &[LibraryUploadPart],
) -> Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>> {
    let keys: Vec<StorageKey> = parts
        .iter()
        .map(|part| StorageKey::LibraryPart {
            upload_id,
            part: part.part_number,
        })
        .collect();
    let streams = futures_util::stream::iter(keys).then(move |key| {
        let storage = storage.clone();
        async move { storage.get(&key, None).await }
    });
    Box::pin(streams.try_flatten().map_err(std::io::Error::other))
}

#[derive(Deserialize)]
struct MultipartAbort {
    #[serde(rename = "uploadID")]
    upload_id: String,
}

/// `PUT /v2/imagefile/<id>/_multipart_abort`: drops the staged parts.
async fn abort_multipart(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(image): Path<String>,
    JsonBody(request): JsonBody<MultipartAbort>,
) -> Answer {
    let (upload, _, _, _) = current_multipart(&state, &viewer, &image, &request.upload_id).await?;
    discard_parts(&state, &upload).await?;
    state
        .db
        .finish_library_upload(upload.id, None, Timestamp::now())
        .await?;
    tracing::info!("library: multipart upload of {image} aborted");
    Ok(data(serde_json::json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_as_the_client_writes_them() {
        assert_eq!(
            split_image_ref("alice/analysis/tools:v2"),
            Some(("alice", "analysis", "tools", "v2"))
        );
        assert_eq!(
            split_image_ref("alice/analysis/tools"),
            Some(("alice", "analysis", "tools", "latest"))
        );
        assert_eq!(split_image_ref("analysis/tools:v2"), None);
        let hex = "ab".repeat(32);
        assert_eq!(
            digest_of_hash(&format!("sha256.{hex}")),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(digest_of_hash("sha256.xyz"), None);
        assert_eq!(
            library_hash(&format!("sha256:{hex}")),
            format!("sha256.{hex}")
        );
    }

    #[test]
    fn parts_must_fit_the_announced_size() {
        let size = PART_SIZE + 10;
        assert!(check_part(size, 1, PART_SIZE as i64).is_ok());
        assert!(check_part(size, 2, 10).is_ok());
        assert!(check_part(size, 3, 10).is_err());
        assert!(check_part(size, 0, 10).is_err());
        assert!(check_part(size, 1, PART_SIZE as i64 + 1).is_err());
        assert!(check_part(size, 1, 0).is_err());
    }

    #[test]
    fn names_follow_the_clients_ref_part_rule() {
        for good in ["alice", "my-tools", "v1.2_3", "a0"] {
            assert!(is_ref_part(good), "{good}");
        }
        for bad in ["", "Alice", "a--b", "-a", "a.", "a/b", "a b"] {
            assert!(!is_ref_part(bad), "{bad}");
        }
    }
}
