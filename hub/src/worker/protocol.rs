//! The worker protocol's messages, shared by the hub's handlers
//! (`api::worker`) and the worker client, so both ends read one definition.
//! Every route lives under [`PREFIX`] and takes `Authorization: Bearer
//! <worker token>`; errors come back as [`ErrorBody`].

use serde::{Deserialize, Serialize};

/// Where the worker routes live, relative to the hub's URL.
pub const PREFIX: &str = "/api/worker/v1";

/// `POST claim`: who asks (a name for logs and the lease; the hub adds
/// the token's id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRequest {
    pub worker: String,
}

/// A build handed to a worker by `POST claim`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub build_id: i64,
    /// The attempt this claim started; every later call names it.
    pub attempt: i64,
    /// The lease holder's id, as the hub's log names it.
    pub worker_id: String,
    /// Unix milliseconds; heartbeat before then.
    pub lease_until: i64,
    /// How long a heartbeat extends the lease.
    pub lease_seconds: u64,
    /// `owner/name`.
    pub repository: String,
    pub commit: String,
    pub branch: String,
    /// The recipe's path in the repository, `/`-separated.
    pub recipe_path: String,
    pub container: String,
    pub tag: String,
    /// Path (on the hub) of the source tarball at `commit`.
    pub source_url: String,
    /// Every time in the image, Unix seconds, for reproducible output.
    pub timestamp: i64,
}

/// `POST builds/{id}/heartbeat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRequest {
    pub attempt: i64,
}

/// The renewed lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// Unix milliseconds.
    pub lease_until: i64,
}

/// `POST builds/{id}/log`: the chunk `seq` (0, 1, 2, …) of the attempt's
/// log. Sending a chunk again changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    pub attempt: i64,
    pub seq: i64,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogAccepted {
    /// False when this chunk had been stored before.
    pub stored: bool,
}

/// Query of `PUT builds/{id}/artifact`: the body is the SIF, `size` bytes
/// whose sha256 is `sha256` (lowercase hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactQuery {
    pub attempt: i64,
    pub sha256: String,
    pub size: u64,
}

/// The answer to an artifact upload (201).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactStored {
    pub sha256: String,
    pub size: u64,
    /// The same bytes were stored before (by any build).
    pub already_present: bool,
}

/// `POST builds/{id}/artifact-url`: asks where to `PUT` the SIF (`size`
/// bytes whose sha256 is `sha256`, lowercase hex) straight into storage.
/// Answered with [`ArtifactUrl`] on S3, and 404 with an [`ErrorBody`] when
/// uploads go through the hub (`PUT builds/{id}/artifact`) instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactUrlRequest {
    pub attempt: i64,
    pub sha256: String,
    pub size: u64,
}

/// A signed URL to `PUT` the SIF to, with `Content-Length`; the hub
/// verifies what arrived when the build completes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactUrl {
    pub url: String,
    /// Seconds the URL stays valid.
    pub expires_in: u64,
}

/// Query of `GET builds/{id}/source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceQuery {
    pub attempt: i64,
}

/// `POST builds/{id}/complete`, after the artifact was uploaded (through
/// the hub, or to the signed URL: then the hub verifies it here and
/// answers 422, publishing nothing, when it does not match).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompleteRequest {
    pub attempt: i64,
    /// Lowercase hex.
    pub sha256: String,
    pub size: u64,
    /// The SIF's header, descriptors and labels; `{}` when unknown.
    pub sif_metadata: serde_json::Value,
    pub base_image_digest: Option<String>,
    pub builder_version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompleteResponse {
    /// `sha256:<hex>`.
    pub digest: String,
    /// False when the tag is frozen on another image.
    pub tag_moved: bool,
}

/// `POST builds/{id}/fail`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailRequest {
    pub attempt: i64,
    pub error: String,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}
