//! OCI distribution for `oras://` and other OCI clients: pulls, and
//! pushes of SIF images with a token that may write the repository.
//!
//! A container is the repository name `<owner>/<repo>/<container>`, and
//! `<owner>/<repo>` names the root container. Each of its tags is an OCI
//! image manifest shaped as apptainer's `push oras://` writes one: the
//! SIF config media type with the empty `{}` config inline, one SIF layer
//! (the image's bytes, so the layer digest is the image digest) titled
//! `<container>_<tag>.sif`, and the creation time. The manifest is made
//! from the catalog on each request, byte for byte the same every time, so
//! its digest is stable and a manifest can be fetched again by digest.
//!
//! Auth follows the distribution token flow. `/v2/` without credentials
//! answers 401 with a `Bearer` challenge: OCI clients (containers/image,
//! go-containerregistry) only learn where to get tokens from that ping,
//! and without it never send the credentials they were given. The token
//! endpoint turns an API token (Basic password) into a short-lived token
//! of at most its scope, and answers a client without credentials with
//! the anonymous token, which reads what anyone may read. A private
//! container is, for the anonymous, a 401 challenge, exactly as a missing
//! one is; for a signed-in caller who may not read it, `NAME_UNKNOWN`.
//!
//! Pushes (`POST`/`PATCH`/`PUT` blob uploads, monolithic or chunked, then
//! `PUT` of a manifest by tag) need write permission on the repository,
//! which must exist (collections are GitHub repositories). Chunks gather
//! in a file under the data folder; the finished blob goes to storage
//! only when it matches its digest. The manifest must be a SIF manifest
//! (one SIF layer, already uploaded); it records a pushed image and moves
//! the tag, and pulls then serve the hub's own manifest for it.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use futures_util::TryStreamExt as _;
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

use crate::access::{AccessError, Viewer};
use crate::api::download::{safe_filename, CountsFor, Download, DownloadError};
use crate::db::{
    hash_token, Container, DbError, Image, NewImage, NewToken, Permission, Repository, TokenScope,
};
use crate::ratelimit::{ClientAddr, RateLimited};
use crate::serve::AppState;
use crate::storage::{Expected, StorageError, StorageKey};

const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.sylabs.sif.config.v1+json";
const LAYER_MEDIA_TYPE: &str = "application/vnd.sylabs.sif.layer.v1.sif";
/// The config blob apptainer writes: the empty JSON object.
const EMPTY_CONFIG: &[u8] = b"{}";
const EMPTY_CONFIG_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
/// What the token endpoint hands a client without credentials: it names
/// nobody and reads only what anyone may read, so it is no secret.
const ANONYMOUS_TOKEN: &str = "anonymous";
/// How long a token from the token endpoint lives: clients ask again
/// when it runs out, so a leaked one is soon worthless.
const REGISTRY_TOKEN_LIFETIME: Duration = Duration::from_secs(300);
/// The name of registry tokens in their owner's token list.
pub const REGISTRY_TOKEN_NAME: &str = "oci registry token";
/// The layer media type of SIF pushes from Singularity before 3.7 (typo
/// included), which apptainer still pulls.
const LAYER_MEDIA_TYPE_PROTO: &str = "appliciation/vnd.sylabs.sif.layer.tar";
/// Where blob uploads gather, under the data folder.
const UPLOADS_DIR: &str = "oci-uploads";
/// The largest manifest a push may send.
const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;
/// How many tag moves of a container a manifest digest is looked for in.
const MANIFEST_HISTORY_LIMIT: i64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// 401 with the challenge (`WWW-Authenticate` value) to answer.
    #[error("{message}")]
    Unauthorized { message: String, challenge: String },
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    NameInvalid(String),
    #[error("repository {0} not found")]
    NameUnknown(String),
    #[error("manifest {0} not found")]
    ManifestUnknown(String),
    #[error("blob {0} not found")]
    BlobUnknown(String),
    #[error("{0}")]
    DigestInvalid(String),
    #[error("{0}")]
    PaginationInvalid(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    ManifestInvalid(String),
    #[error("{0}")]
    ManifestBlobUnknown(String),
    #[error("{0}")]
    TagInvalid(String),
    #[error("upload {0} not found")]
    UploadUnknown(String),
    #[error("{0}")]
    UploadInvalid(String),
    #[error("cannot keep upload {path}")]
    UploadFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Database(#[from] DbError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cannot read random bytes for a registry token")]
    Random(#[source] getrandom::Error),
    #[error("cannot build the response")]
    Response(#[from] axum::http::Error),
    #[error(transparent)]
    TooManyRequests(#[from] RateLimited),
}

impl From<DownloadError> for OciError {
    fn from(e: DownloadError) -> Self {
        match e {
            DownloadError::NotFound(what) => OciError::BlobUnknown(what),
            DownloadError::Database(e) => OciError::Database(e),
            DownloadError::Storage(e) => OciError::Storage(e),
            DownloadError::Response(e) => OciError::Response(e),
            DownloadError::RateLimited(limited) => OciError::TooManyRequests(limited),
        }
    }
}

#[derive(Serialize)]
struct ErrorsBody {
    errors: [ErrorEntry; 1],
}

#[derive(Serialize)]
struct ErrorEntry {
    code: &'static str,
    message: String,
}

impl IntoResponse for OciError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            OciError::Unauthorized { .. } => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            OciError::Denied(_) => (StatusCode::FORBIDDEN, "DENIED"),
            OciError::NameInvalid(_) => (StatusCode::BAD_REQUEST, "NAME_INVALID"),
            OciError::NameUnknown(_) => (StatusCode::NOT_FOUND, "NAME_UNKNOWN"),
            OciError::ManifestUnknown(_) => (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
            OciError::BlobUnknown(_) => (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"),
            OciError::DigestInvalid(_) => (StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
            OciError::PaginationInvalid(_) => {
                (StatusCode::BAD_REQUEST, "PAGINATION_NUMBER_INVALID")
            }
            OciError::Unsupported(_) => (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
            OciError::ManifestInvalid(_) => (StatusCode::BAD_REQUEST, "MANIFEST_INVALID"),
            OciError::ManifestBlobUnknown(_) => (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN"),
            OciError::TagInvalid(_) => (StatusCode::BAD_REQUEST, "TAG_INVALID"),
            OciError::UploadUnknown(_) => (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN"),
            OciError::UploadInvalid(_) => (StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID"),
            OciError::TooManyRequests(_) => (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS"),
            OciError::UploadFile { .. }
            | OciError::Database(_)
            | OciError::Storage(_)
            | OciError::Random(_)
            | OciError::Response(_) => {
                tracing::error!("oci api: {self}");
                (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN")
            }
        };
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            "internal error".to_owned()
        } else {
            self.to_string()
        };
        let mut response = (
            status,
            Json(ErrorsBody {
                errors: [ErrorEntry { code, message }],
            }),
        )
            .into_response();
        if let OciError::TooManyRequests(limited) = &self {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(limited.retry_after_secs),
            );
        }
        if let OciError::Unauthorized { challenge, .. } = &self {
            if let Ok(value) = HeaderValue::from_str(challenge) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
            }
        }
        response
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2", get(ping))
        .route("/v2/", get(ping))
        // The OAuth2 form (POST) is not offered: its 404 tells
        // go-containerregistry to fall back to the GET every client speaks.
        .route(
            "/v2/token",
            get(token).post(|| async { StatusCode::NOT_FOUND }),
        )
        .route("/v2/{*path}", any(dispatch))
        .layer(axum::middleware::map_response(
            |mut response: Response| async move {
                response.headers_mut().insert(
                    "Docker-Distribution-API-Version",
                    HeaderValue::from_static("registry/2.0"),
                );
                response
            },
        ))
}

/// `Bearer realm="<public>/v2/token",service="<host>"[,scope="…"]`.
fn challenge(state: &AppState, scope: Option<&str>) -> String {
    let public = state.config.resolved_public_url();
    let public = public.trim_end_matches('/');
    let service = public
        .split_once("://")
        .map_or(public, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    let mut value = format!("Bearer realm=\"{public}/v2/token\",service=\"{service}\"");
    if let Some(scope) = scope {
        value.push_str(&format!(",scope=\"{scope}\""));
    }
    value
}

/// Who is asking: the anonymous token, no credentials at all (both
/// anonymous), or what [`Viewer`] finds.
struct Caller {
    viewer: Viewer,
    /// No `Authorization` header (nor session cookie) at all.
    bare: bool,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = OciError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, OciError> {
        let authorization = parts.headers.get(header::AUTHORIZATION);
        let has_authorization = authorization.is_some();
        if authorization
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .is_some_and(|token| token.trim() == ANONYMOUS_TOKEN)
        {
            return Ok(Caller {
                viewer: Viewer::anonymous(),
                bare: false,
            });
        }
        let viewer = Viewer::from_request_parts(parts, state)
            .await
            .map_err(|e| match e {
                AccessError::Unauthorized(why) => OciError::Unauthorized {
                    message: why.to_owned(),
                    challenge: challenge(state, None),
                },
                AccessError::Database(e) => OciError::Database(e),
            })?;
        Ok(Caller {
            bare: !has_authorization && viewer.user_id().is_none(),
            viewer,
        })
    }
}

/// `GET /v2/`: 200 `{}` for a caller with credentials, else the challenge
/// that tells clients where to get a token.
async fn ping(State(state): State<AppState>, caller: Caller) -> Result<Response, OciError> {
    if caller.bare {
        return Err(OciError::Unauthorized {
            message: "authentication required: get a token from the realm".to_owned(),
            challenge: challenge(&state, None),
        });
    }
    Ok(Json(serde_json::json!({})).into_response())
}

#[derive(Debug, Serialize)]
struct TokenAnswer {
    token: String,
    access_token: String,
    expires_in: u64,
    issued_at: String,
}

/// `GET /v2/token?service=…&scope=repository:<name>:pull[,push]`: a
/// short-lived API token for the caller (at most the scope of the
/// credentials presented, `Read` unless a push is asked for and allowed),
/// or the anonymous token for a caller without credentials.
async fn token(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Response, OciError> {
    let now = state.queue.now();
    let issued_at = chrono::DateTime::from_timestamp_millis(now.unix_millis())
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let Some(user_id) = caller.viewer.user_id() else {
        let answer = TokenAnswer {
            token: ANONYMOUS_TOKEN.to_owned(),
            access_token: ANONYMOUS_TOKEN.to_owned(),
            expires_in: REGISTRY_TOKEN_LIFETIME.as_secs(),
            issued_at,
        };
        return Ok(Json(answer).into_response());
    };
    let wants_push = query
        .iter()
        .filter(|(key, _)| key == "scope")
        .filter_map(|(_, scope)| scope.rsplit_once(':'))
        .any(|(_, actions)| actions.split(',').any(|a| a == "push" || a == "*"));
    let scope = if wants_push && caller.viewer.allows(TokenScope::Push) {
        TokenScope::Push
    } else if caller.viewer.allows(TokenScope::Read) {
        TokenScope::Read
    } else {
        return Err(OciError::Denied(
            "these credentials may not read images".to_owned(),
        ));
    };
    let mut random = [0u8; 32];
    getrandom::getrandom(&mut random).map_err(OciError::Random)?;
    let secret = format!("sifr_{}", hex::encode(random));
    // Expired registry tokens are worthless: they go as new ones come.
    state
        .db
        .delete_expired_tokens_named(user_id, REGISTRY_TOKEN_NAME, now)
        .await?;
    state
        .db
        .insert_token(
            &NewToken {
                token_hash: hash_token(&secret),
                user_id: Some(user_id),
                name: REGISTRY_TOKEN_NAME.to_owned(),
                scope,
                expires_at: Some(now.plus(REGISTRY_TOKEN_LIFETIME)),
            },
            now,
        )
        .await?;
    let answer = TokenAnswer {
        token: secret.clone(),
        access_token: secret,
        expires_in: REGISTRY_TOKEN_LIFETIME.as_secs(),
        issued_at,
    };
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(answer)).into_response())
}

/// What a path under `/v2/` asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Manifest { name: &'a str, reference: &'a str },
    Blob { name: &'a str, digest: &'a str },
    UploadStart { name: &'a str },
    Upload { name: &'a str, id: &'a str },
    Tags { name: &'a str },
}

/// Splits `<name>/manifests/<ref>`, `<name>/blobs/<digest>`,
/// `<name>/blobs/uploads/[<id>]` and `<name>/tags/list`, reading from the
/// end so a container may itself be called `manifests` or `blobs`.
fn route(path: &str) -> Option<Route<'_>> {
    if let Some(name) = path.strip_suffix("/tags/list") {
        return Some(Route::Tags { name });
    }
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    if let Some(name) = trimmed.strip_suffix("/blobs/uploads") {
        return Some(Route::UploadStart { name });
    }
    let (front, last) = trimmed.rsplit_once('/')?;
    if let Some(name) = front.strip_suffix("/blobs/uploads") {
        return Some(Route::Upload { name, id: last });
    }
    let (name, kind) = front.rsplit_once('/')?;
    match kind {
        "manifests" => Some(Route::Manifest {
            name,
            reference: last,
        }),
        "blobs" => Some(Route::Blob { name, digest: last }),
        _ => None,
    }
}

#[allow(clippy::too_many_arguments)] // axum extractors, one per piece of the request
async fn dispatch(
    State(state): State<AppState>,
    caller: Caller,
    client: ClientAddr,
    Path(path): Path<String>,
    method: Method,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
    body: Body,
) -> Result<Response, OciError> {
    let route = route(&path).ok_or_else(|| OciError::NameInvalid(format!("no route {path}")))?;
    let read = method == Method::GET || method == Method::HEAD;
    match route {
        Route::Manifest { name, reference } if read => {
            let target = resolve(&state, &caller, name).await?;
            manifest(&state, &target, reference, &method).await
        }
        Route::Blob { name, digest } if read => {
            let target = resolve(&state, &caller, name).await?;
            // The image is the download; the tiny config blob is not.
            if digest != EMPTY_CONFIG_DIGEST {
                state.rate_limits.download(&caller.viewer, client)?;
            }
            blob(&state, &target, digest, &method, &headers).await
        }
        Route::Tags { name } if read => {
            let target = resolve(&state, &caller, name).await?;
            tags(&state, &target, &query).await
        }
        Route::Manifest { name, reference } if method == Method::PUT => {
            let target = writable(&state, &caller, name).await?;
            let bytes = axum::body::to_bytes(body, MAX_MANIFEST_SIZE)
                .await
                .map_err(|e| OciError::ManifestInvalid(format!("cannot read the manifest: {e}")))?;
            put_manifest(&state, &target, reference, &bytes).await
        }
        Route::UploadStart { name } if method == Method::POST => {
            let target = writable(&state, &caller, name).await?;
            start_upload(&state, &target, query.get("digest"), body).await
        }
        Route::Upload { name, id } if method == Method::PATCH || method == Method::PUT => {
            let target = writable(&state, &caller, name).await?;
            let path = upload_path(&state, id)?;
            let size = append(&path, body).await?;
            if method == Method::PATCH {
                return upload_accepted(&target.name, id, size);
            }
            let digest = query
                .get("digest")
                .ok_or_else(|| OciError::DigestInvalid("PUT needs ?digest=".to_owned()))?;
            finish_upload(&state, &target.name, &path, digest).await
        }
        Route::Upload { name, id } if method == Method::DELETE => {
            writable(&state, &caller, name).await?;
            let path = upload_path(&state, id)?;
            remove_upload(&path).await;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Err(OciError::Unsupported(format!(
            "{method} is not supported on {path}"
        ))),
    }
}

/// A readable container and the name it was asked by.
struct Target {
    name: String,
    repository: Repository,
    container: Container,
}

/// `(owner, repo, container)` of `<owner>/<repo>[/<container>]`; the
/// root container is named after the repository.
fn split_name(name: &str) -> Result<(&str, &str, &str), OciError> {
    let parts: Vec<&str> = name.split('/').collect();
    match parts.as_slice() {
        [owner, repo] if !owner.is_empty() && !repo.is_empty() => Ok((*owner, *repo, *repo)),
        [owner, repo, container]
            if !owner.is_empty() && !repo.is_empty() && !container.is_empty() =>
        {
            Ok((*owner, *repo, *container))
        }
        _ => Err(OciError::NameInvalid(format!(
            "repository name {name:?} is not <owner>/<repo>[/<container>]"
        ))),
    }
}

/// The container `name` names, when the caller may read it.
async fn resolve(state: &AppState, caller: &Caller, name: &str) -> Result<Target, OciError> {
    let (owner, repo, container) = split_name(name)?;
    match state
        .db
        .readable_container(&caller.viewer, owner, repo, container)
        .await?
    {
        Some((repository, container)) => Ok(Target {
            name: name.to_owned(),
            repository,
            container,
        }),
        // The anonymous are asked to sign in, whether the repository is
        // private or missing: the answer tells nothing about which.
        None if caller.viewer.user_id().is_none() => Err(OciError::Unauthorized {
            message: format!("authentication required for repository {name}"),
            challenge: challenge(state, Some(&format!("repository:{name}:pull"))),
        }),
        None => Err(OciError::NameUnknown(name.to_owned())),
    }
}

/// An OCI descriptor, its fields in the order go-containerregistry (and
/// so apptainer) writes them.
#[derive(Serialize)]
struct Descriptor {
    #[serde(rename = "mediaType")]
    media_type: &'static str,
    size: u64,
    digest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'static str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<&'static str, String>,
}

#[derive(Serialize)]
struct ImageManifest {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'static str,
    config: Descriptor,
    layers: [Descriptor; 1],
    annotations: BTreeMap<&'static str, String>,
}

/// The manifest bytes for `image` under `container:tag`: the same bytes
/// for the same arguments, always.
fn manifest_bytes(container: &str, tag: &str, image: &Image) -> Vec<u8> {
    let created = chrono::DateTime::from_timestamp_millis(image.created_at.unix_millis())
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: MANIFEST_MEDIA_TYPE,
        config: Descriptor {
            media_type: CONFIG_MEDIA_TYPE,
            size: EMPTY_CONFIG.len() as u64,
            digest: EMPTY_CONFIG_DIGEST.to_owned(),
            // base64 of `{}`, inline as apptainer writes it.
            data: Some("e30="),
            annotations: BTreeMap::new(),
        },
        layers: [Descriptor {
            media_type: LAYER_MEDIA_TYPE,
            size: u64::try_from(image.size).unwrap_or_default(),
            digest: image.digest.clone(),
            data: None,
            annotations: BTreeMap::from([(
                "org.opencontainers.image.title",
                format!("{}_{}.sif", safe_filename(container), safe_filename(tag)),
            )]),
        }],
        annotations: BTreeMap::from([("org.opencontainers.image.created", created)]),
    };
    // Serializing plain structs and maps of strings cannot fail.
    serde_json::to_vec(&manifest).unwrap_or_default()
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Checks `sha256:<64 lowercase hex>`; returns the hex.
fn digest_hex(digest: &str) -> Result<&str, OciError> {
    digest
        .strip_prefix("sha256:")
        .filter(|hex| {
            hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
        .ok_or_else(|| {
            OciError::DigestInvalid(format!("digest {digest:?} is not sha256:<64 hex digits>"))
        })
}

/// `GET`/`HEAD /v2/<name>/manifests/<tag or digest>`.
async fn manifest(
    state: &AppState,
    target: &Target,
    reference: &str,
    method: &Method,
) -> Result<Response, OciError> {
    let container = &target.container;
    let unknown = || OciError::ManifestUnknown(format!("{}:{reference}", target.name));
    let (bytes, by_digest) = if reference.contains(':') {
        digest_hex(reference)?;
        // A manifest digest names a tag and an image: find the pair among
        // what the container's tags have named.
        let pairs = state
            .db
            .container_tagged_images(container.id, MANIFEST_HISTORY_LIMIT)
            .await?;
        let bytes = pairs
            .iter()
            .map(|pair| manifest_bytes(&container.name, &pair.tag, &pair.image))
            .find(|bytes| sha256_digest(bytes) == reference)
            .ok_or_else(unknown)?;
        (bytes, true)
    } else {
        let image_id = state
            .db
            .find_tag(container.id, reference)
            .await?
            .and_then(|tag| tag.image_id)
            .ok_or_else(unknown)?;
        let image = state.db.find_image(image_id).await?.ok_or_else(unknown)?;
        (manifest_bytes(&container.name, reference, &image), false)
    };
    let digest = sha256_digest(&bytes);
    let cache_control = match (target.repository.private, by_digest) {
        (true, _) => "private, no-cache",
        (false, true) => "public, max-age=31536000, immutable",
        // A tag moves on rebuild.
        (false, false) => "no-cache",
    };
    let length = bytes.len();
    let body = if *method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(bytes)
    };
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, MANIFEST_MEDIA_TYPE)
        .header(header::CONTENT_LENGTH, length)
        .header("Docker-Content-Digest", &digest)
        .header(header::ETAG, format!("\"{digest}\""))
        .header(header::CACHE_CONTROL, cache_control)
        .body(body)?)
}

/// `GET`/`HEAD /v2/<name>/blobs/<digest>`: the empty config, or the SIF
/// of an image the container's tags name or have named (ranges and S3
/// redirects as for downloads).
async fn blob(
    state: &AppState,
    target: &Target,
    digest: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response, OciError> {
    let hex = digest_hex(digest)?;
    if digest == EMPTY_CONFIG_DIGEST {
        let body = if *method == Method::HEAD {
            Body::empty()
        } else {
            Body::from(EMPTY_CONFIG)
        };
        return Ok(Response::builder()
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, EMPTY_CONFIG.len())
            .header("Docker-Content-Digest", digest)
            .header(header::CACHE_CONTROL, "public, max-age=31536000, immutable")
            .body(body)?);
    }
    let found = state
        .db
        .find_container_image_by_digest(target.container.id, digest, None)
        .await?
        .ok_or_else(|| OciError::BlobUnknown(format!("{}@{digest}", target.name)))?;
    let download = Download {
        key: StorageKey::image(hex)?,
        // An OCI client pulling the SIF is a download of the collection's image.
        counts_for: CountsFor::Repository {
            owner: target.repository.owner.clone(),
            repo: target.repository.name.clone(),
        },
        filename: format!(
            "{}_{}.sif",
            safe_filename(&target.container.name),
            safe_filename(&found.tag)
        ),
        cache_control: if target.repository.private {
            "private, max-age=31536000, immutable"
        } else {
            "public, max-age=31536000, immutable"
        },
    };
    let mut response = download.respond(state, method, headers).await?;
    if let Ok(value) = HeaderValue::from_str(digest) {
        response
            .headers_mut()
            .insert("Docker-Content-Digest", value);
    }
    Ok(response)
}

/// Where a push goes: a repository the caller may write, and the
/// container (perhaps new) in it.
struct PushTarget {
    name: String,
    repository: Repository,
    container: String,
}

/// The push target `name` names, when the caller may write it.
async fn writable(state: &AppState, caller: &Caller, name: &str) -> Result<PushTarget, OciError> {
    let (owner, repo, container) = split_name(name)?;
    let repository = state.db.find_repository(owner, repo).await?;
    let permission = match &repository {
        Some(repository) => state.db.permission(&caller.viewer, repository).await?,
        None => None,
    };
    match (repository, permission) {
        (Some(repository), Some(permission)) if permission >= Permission::Write => Ok(PushTarget {
            name: name.to_owned(),
            repository,
            container: container.to_owned(),
        }),
        _ if caller.viewer.user_id().is_none() => Err(OciError::Unauthorized {
            message: format!("authentication required to push to {name}"),
            challenge: challenge(state, Some(&format!("repository:{name}:pull,push"))),
        }),
        (Some(_), Some(_)) => Err(OciError::Denied(format!(
            "these credentials may not push to {name}"
        ))),
        _ => Err(OciError::NameUnknown(name.to_owned())),
    }
}

/// The file upload `id` gathers in; only ids this hub hands out (32 hex
/// digits) name one, so no id reaches outside the folder.
fn upload_path(state: &AppState, id: &str) -> Result<std::path::PathBuf, OciError> {
    if id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(state.config.data_dir.join(UPLOADS_DIR).join(id))
    } else {
        Err(OciError::UploadUnknown(id.to_owned()))
    }
}

/// Appends the request body to the upload's file; returns its size. A
/// body cut short drops the whole upload: nothing half-sent lingers.
async fn append(path: &std::path::Path, body: Body) -> Result<u64, OciError> {
    let file_error = |source| OciError::UploadFile {
        path: path.to_owned(),
        source,
    };
    let mut file = match tokio::fs::OpenOptions::new().append(true).open(path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(OciError::UploadUnknown(
                path.file_name()
                    .map(|id| id.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ))
        }
        Err(e) => return Err(file_error(e)),
    };
    let mut stream = body.into_data_stream();
    loop {
        match stream.try_next().await {
            Ok(Some(chunk)) => file.write_all(&chunk).await.map_err(file_error)?,
            Ok(None) => break,
            Err(e) => {
                drop(file);
                remove_upload(path).await;
                return Err(OciError::UploadInvalid(format!(
                    "the upload body was cut short: {e}"
                )));
            }
        }
    }
    file.flush().await.map_err(file_error)?;
    let size = file.metadata().await.map_err(file_error)?.len();
    Ok(size)
}

async fn remove_upload(path: &std::path::Path) {
    if let Err(e) = tokio::fs::remove_file(path).await {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("cannot remove upload {}: {e}", path.display());
        }
    }
}

/// 202 for an upload going on: where to send the rest, and what came.
fn upload_accepted(name: &str, id: &str, size: u64) -> Result<Response, OciError> {
    Ok(Response::builder()
        .status(StatusCode::ACCEPTED)
        .header(header::LOCATION, format!("/v2/{name}/blobs/uploads/{id}"))
        .header(header::RANGE, format!("0-{}", size.saturating_sub(1)))
        .header("Docker-Upload-UUID", id)
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())?)
}

/// `POST /v2/<name>/blobs/uploads/[?digest=…]`: a whole blob in one
/// request when the digest is given, else a new upload for the chunks.
async fn start_upload(
    state: &AppState,
    target: &PushTarget,
    digest: Option<&String>,
    body: Body,
) -> Result<Response, OciError> {
    let folder = state.config.data_dir.join(UPLOADS_DIR);
    tokio::fs::create_dir_all(&folder)
        .await
        .map_err(|source| OciError::UploadFile {
            path: folder.clone(),
            source,
        })?;
    let mut random = [0u8; 16];
    getrandom::getrandom(&mut random).map_err(OciError::Random)?;
    let id = hex::encode(random);
    let path = upload_path(state, &id)?;
    tokio::fs::File::create_new(&path)
        .await
        .map_err(|source| OciError::UploadFile {
            path: path.clone(),
            source,
        })?;
    let size = append(&path, body).await?;
    match digest {
        Some(digest) => finish_upload(state, &target.name, &path, digest).await,
        None => upload_accepted(&target.name, &id, size),
    }
}

/// Publishes the upload at `path` as blob `digest` if its bytes have that
/// digest; the upload is gone afterwards either way.
async fn finish_upload(
    state: &AppState,
    name: &str,
    path: &std::path::Path,
    digest: &str,
) -> Result<Response, OciError> {
    let published = publish_blob(state, path, digest).await;
    remove_upload(path).await;
    published?;
    Ok(Response::builder()
        .status(StatusCode::CREATED)
        .header(header::LOCATION, format!("/v2/{name}/blobs/{digest}"))
        .header("Docker-Content-Digest", digest)
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())?)
}

async fn publish_blob(
    state: &AppState,
    path: &std::path::Path,
    digest: &str,
) -> Result<(), OciError> {
    let hex = digest_hex(digest)?;
    if digest == EMPTY_CONFIG_DIGEST {
        // The SIF config is always `{}`; it is served without being stored.
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|source| OciError::UploadFile {
                path: path.to_owned(),
                source,
            })?;
        return if bytes == EMPTY_CONFIG {
            Ok(())
        } else {
            Err(OciError::DigestInvalid(format!(
                "the upload does not have digest {digest}"
            )))
        };
    }
    let expected = Expected {
        sha256_hex: Some(hex.to_owned()),
        size: None,
    };
    match state
        .storage
        .put_file(&StorageKey::image(hex)?, path, expected)
        .await
    {
        Ok(_) => Ok(()),
        Err(e @ (StorageError::DigestMismatch { .. } | StorageError::SizeMismatch { .. })) => {
            Err(OciError::DigestInvalid(crate::error_chain(&e)))
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether `tag` is an OCI tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
fn valid_tag(tag: &str) -> bool {
    let mut bytes = tag.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag.len() <= 128
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The one SIF layer of a pushed manifest: `(digest, size)`.
fn sif_layer(bytes: &[u8]) -> Result<(String, u64), OciError> {
    let invalid = |why: &str| OciError::ManifestInvalid(format!("not a SIF image manifest: {why}"));
    let manifest: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| invalid(&format!("bad JSON ({e})")))?;
    if manifest["schemaVersion"] != 2 {
        return Err(invalid("schemaVersion is not 2"));
    }
    if let Some(media_type) = manifest.get("mediaType") {
        if media_type != MANIFEST_MEDIA_TYPE {
            return Err(invalid(&format!("media type {media_type}")));
        }
    }
    let layers = manifest["layers"]
        .as_array()
        .ok_or_else(|| invalid("no layers"))?;
    let [layer] = layers.as_slice() else {
        return Err(invalid(&format!("{} layers, not one", layers.len())));
    };
    let media_type = layer["mediaType"].as_str().unwrap_or_default();
    if media_type != LAYER_MEDIA_TYPE && media_type != LAYER_MEDIA_TYPE_PROTO {
        return Err(invalid(&format!("layer media type {media_type:?}")));
    }
    let digest = layer["digest"]
        .as_str()
        .ok_or_else(|| invalid("layer without digest"))?;
    digest_hex(digest)?;
    let size = layer["size"]
        .as_u64()
        .ok_or_else(|| invalid("layer without size"))?;
    Ok((digest.to_owned(), size))
}

/// `PUT /v2/<name>/manifests/<tag>`: records the pushed SIF as an image
/// (marked pushed) and points the tag at it.
async fn put_manifest(
    state: &AppState,
    target: &PushTarget,
    reference: &str,
    bytes: &[u8],
) -> Result<Response, OciError> {
    if !valid_tag(reference) {
        return Err(OciError::TagInvalid(format!(
            "{reference:?} is not a tag: push by tag"
        )));
    }
    let (digest, size) = sif_layer(bytes)?;
    let key = StorageKey::image(digest_hex(&digest)?)?;
    match state.storage.head(&key).await? {
        Some(object) if object.size == size => {}
        _ => {
            return Err(OciError::ManifestBlobUnknown(format!(
                "layer {digest} of {size} bytes was not uploaded"
            )))
        }
    }
    let now = state.queue.now();
    let image = state
        .db
        .insert_image(
            &NewImage {
                digest: digest.clone(),
                size,
                sif_metadata: serde_json::json!({}),
                repository_id: Some(target.repository.id),
                pushed: true,
                ..NewImage::default()
            },
            now,
        )
        .await?
        .image;
    let container = state
        .db
        .upsert_container(target.repository.id, &target.container, now)
        .await?;
    match state
        .db
        .set_tag(container.id, reference, image.id, now)
        .await
    {
        Ok(_) => {}
        Err(DbError::TagFrozen { .. }) => {
            return Err(OciError::Denied(format!(
                "tag {}:{reference} is frozen",
                target.name
            )))
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(
        "oci push: {}:{reference} is now {digest} ({size} bytes)",
        target.name
    );
    let served = sha256_digest(&manifest_bytes(&container.name, reference, &image));
    Ok(Response::builder()
        .status(StatusCode::CREATED)
        .header(
            header::LOCATION,
            format!("/v2/{}/manifests/{served}", target.name),
        )
        .header("Docker-Content-Digest", served)
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())?)
}

#[derive(Serialize)]
struct TagList<'a> {
    name: &'a str,
    tags: Vec<String>,
}

/// `GET /v2/<name>/tags/list[?n=N][&last=TAG]`: tags in byte order, `n`
/// at a time after `last`, with a `Link` to the next page when cut.
async fn tags(
    state: &AppState,
    target: &Target,
    query: &BTreeMap<String, String>,
) -> Result<Response, OciError> {
    let limit = match query.get("n") {
        None => None,
        Some(n) => Some(n.parse::<usize>().map_err(|_| {
            OciError::PaginationInvalid(format!("n={n:?} is not a number of tags"))
        })?),
    };
    let last = query.get("last");
    let mut names: Vec<String> = state
        .db
        .container_tag_names(target.container.id)
        .await?
        .into_iter()
        .filter(|name| last.is_none_or(|last| name > last))
        .collect();
    let mut next = None;
    if let Some(limit) = limit {
        if names.len() > limit {
            names.truncate(limit);
            next = names.last().map(|last| {
                format!(
                    "</v2/{}/tags/list?n={limit}&last={}>; rel=\"next\"",
                    target.name,
                    percent_encode(last)
                )
            });
        }
    }
    let mut response = Json(TagList {
        name: &target.name,
        tags: names,
    })
    .into_response();
    if let Some(link) = next.and_then(|link| HeaderValue::from_str(&link).ok()) {
        response.headers_mut().insert(header::LINK, link);
    }
    Ok(response)
}

/// Escapes everything but unreserved characters, for a query value.
fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_from_the_end() {
        assert_eq!(
            route("alice/tools/manifests/latest"),
            Some(Route::Manifest {
                name: "alice/tools",
                reference: "latest"
            })
        );
        assert_eq!(
            route("alice/tools/manifests/manifests/sha256:ab"),
            Some(Route::Manifest {
                name: "alice/tools/manifests",
                reference: "sha256:ab"
            })
        );
        assert_eq!(
            route("alice/tools/samtools/blobs/sha256:ab"),
            Some(Route::Blob {
                name: "alice/tools/samtools",
                digest: "sha256:ab"
            })
        );
        assert_eq!(
            route("alice/tools/tags/list"),
            Some(Route::Tags {
                name: "alice/tools"
            })
        );
        assert_eq!(
            route("alice/tools/blobs/uploads/"),
            Some(Route::UploadStart {
                name: "alice/tools"
            })
        );
        assert_eq!(
            route("alice/tools/s/blobs/uploads/0a1b"),
            Some(Route::Upload {
                name: "alice/tools/s",
                id: "0a1b"
            })
        );
        assert_eq!(route("alice/tools/other/x"), None);
        assert_eq!(route("x"), None);
    }

    #[test]
    fn the_empty_config_digest_is_that_of_its_bytes() {
        assert_eq!(sha256_digest(EMPTY_CONFIG), EMPTY_CONFIG_DIGEST);
    }

    #[test]
    fn manifests_are_shaped_as_apptainer_writes_them() {
        let image = Image {
            id: 1,
            digest: format!("sha256:{}", "ab".repeat(32)),
            size: 4096,
            sif_metadata: serde_json::json!({}),
            repository_id: None,
            commit_sha: None,
            recipe_path: None,
            base_image_digest: None,
            builder_version: None,
            pushed: false,
            created_at: crate::db::Timestamp::from_unix_millis(1_700_000_000_000),
        };
        let bytes = manifest_bytes("tools", "v1", &image);
        assert_eq!(bytes, manifest_bytes("tools", "v1", &image));
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            format!(
                concat!(
                    r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","#,
                    r#""config":{{"mediaType":"application/vnd.sylabs.sif.config.v1+json","size":2,"#,
                    r#""digest":"{}","data":"e30="}},"#,
                    r#""layers":[{{"mediaType":"application/vnd.sylabs.sif.layer.v1.sif","size":4096,"#,
                    r#""digest":"sha256:{}","annotations":{{"org.opencontainers.image.title":"tools_v1.sif"}}}}],"#,
                    r#""annotations":{{"org.opencontainers.image.created":"2023-11-14T22:13:20Z"}}}}"#
                ),
                EMPTY_CONFIG_DIGEST,
                "ab".repeat(32)
            )
        );
        assert_ne!(
            manifest_bytes("tools", "v2", &image),
            manifest_bytes("tools", "v1", &image)
        );
    }

    #[test]
    fn digests_must_be_sha256_hex() {
        assert!(digest_hex(&format!("sha256:{}", "0f".repeat(32))).is_ok());
        assert!(digest_hex(&format!("sha256:{}", "0F".repeat(32))).is_err());
        assert!(digest_hex("sha256:abc").is_err());
        assert!(digest_hex(&format!("sha512:{}", "0f".repeat(32))).is_err());
    }

    #[test]
    fn tags_follow_the_oci_grammar() {
        assert!(valid_tag("latest") && valid_tag("_v1.2-rc") && valid_tag(&"a".repeat(128)));
        assert!(
            !valid_tag("") && !valid_tag(".v1") && !valid_tag("a/b") && !valid_tag("sha256:ab")
        );
        assert!(!valid_tag(&"a".repeat(129)));
    }

    #[test]
    fn pushed_manifests_must_carry_one_sif_layer() {
        let hex = "ab".repeat(32);
        let layer = |media_type: &str| serde_json::json!({"mediaType": media_type, "size": 7, "digest": format!("sha256:{hex}")});
        let manifest = |layers: serde_json::Value| {
            serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": MANIFEST_MEDIA_TYPE,
                "config": {"mediaType": CONFIG_MEDIA_TYPE, "size": 2, "digest": EMPTY_CONFIG_DIGEST},
                "layers": layers,
            }))
            .unwrap()
        };
        assert_eq!(
            sif_layer(&manifest(serde_json::json!([layer(LAYER_MEDIA_TYPE)]))).unwrap(),
            (format!("sha256:{hex}"), 7)
        );
        assert!(sif_layer(&manifest(serde_json::json!([layer(
            LAYER_MEDIA_TYPE_PROTO
        )])))
        .is_ok());
        for bad in [
            manifest(serde_json::json!([])),
            manifest(serde_json::json!([
                layer(LAYER_MEDIA_TYPE),
                layer(LAYER_MEDIA_TYPE)
            ])),
            manifest(serde_json::json!([layer(
                "application/vnd.oci.image.layer.v1.tar"
            )])),
            b"{".to_vec(),
        ] {
            assert!(matches!(sif_layer(&bad), Err(OciError::ManifestInvalid(_))));
        }
    }

    #[test]
    fn query_values_are_escaped() {
        assert_eq!(percent_encode("v1.0_a-b~"), "v1.0_a-b~");
        assert_eq!(percent_encode("a b&c"), "a%20b%26c");
    }
}
