//! The worker protocol, worker side: one call per route, each retried with
//! backoff while the hub is unreachable or answers 5xx, and a 409 turned
//! into [`ClientError::LeaseLost`] so the caller stops the build. Images
//! go straight to storage when the hub hands out a signed upload URL (S3),
//! through the hub otherwise.

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt as _;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::AsyncWriteExt as _;

use super::protocol::{
    ArtifactQuery, ArtifactStored, ArtifactUrl, ArtifactUrlRequest, AttemptRequest, ClaimRequest,
    CompleteRequest, CompleteResponse, ErrorBody, FailRequest, HeartbeatResponse, Job, LogAccepted,
    LogChunk, PREFIX,
};
use crate::config::Secret;

/// How many times a call is tried before its error is returned.
const TRIES: u32 = 8;
/// The first pause between tries; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Longest wait for any answer byte: above the hub's claim long poll.
const READ_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot set up the http client")]
    Setup(#[source] reqwest::Error),
    #[error("{what}: cannot reach the hub at {url}")]
    Transport {
        what: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{what}: the hub answered {status}: {message}")]
    Refused {
        what: String,
        status: u16,
        message: String,
    },
    #[error(
        "{what}: the lease is lost (expired, cancelled or handed to another worker): {message}"
    )]
    LeaseLost { what: String, message: String },
    /// The URL is left out: its query is a credential.
    #[error("{what}: cannot reach storage at the signed upload url")]
    StorageTransport {
        what: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{what}: storage answered {status} to the signed upload: {message}")]
    StorageRefused {
        what: String,
        status: u16,
        message: String,
    },
    #[error("{what}: {path}")]
    File {
        what: String,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ClientError {
    /// Whether trying again may help: the hub was unreachable, busy or
    /// failed inside.
    fn is_transient(&self) -> bool {
        match self {
            ClientError::Transport { .. } | ClientError::StorageTransport { .. } => true,
            ClientError::Refused { status, .. } | ClientError::StorageRefused { status, .. } => {
                *status >= 500 || *status == 429
            }
            _ => false,
        }
    }
}

/// The next pause of an exponential backoff.
pub(crate) fn next_backoff(current: Duration) -> Duration {
    (current * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF)
}

/// A connection to one hub with one worker token; cheap to clone.
#[derive(Debug, Clone)]
pub struct HubClient {
    http: reqwest::Client,
    hub_url: String,
    token: Secret,
}

impl HubClient {
    /// `hub_url` is the hub's base URL (`http://hub:8080`).
    pub fn new(hub_url: &str, token: Secret) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
            .map_err(ClientError::Setup)?;
        Ok(Self {
            http,
            hub_url: hub_url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    pub fn hub_url(&self) -> &str {
        &self.hub_url
    }

    fn url(&self, path: &str) -> String {
        format!("{}{PREFIX}{path}", self.hub_url)
    }

    /// Runs `call` until it succeeds, fails for good, or [`TRIES`] tries
    /// failed transiently.
    async fn retry<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let mut pause = Duration::ZERO;
        let mut tries = 0;
        loop {
            tries += 1;
            match call().await {
                Err(e) if e.is_transient() && tries < TRIES => {
                    pause = next_backoff(pause);
                    tracing::warn!("{}; trying again in {pause:?}", crate::error_chain(&e));
                    tokio::time::sleep(pause).await;
                }
                Err(e) => {
                    if e.is_transient() {
                        tracing::warn!("{what}: giving up after {tries} tries");
                    }
                    return Err(e);
                }
                Ok(value) => return Ok(value),
            }
        }
    }

    /// Sends one request and reads the answer as `R` (`None` for 204).
    async fn send<R: DeserializeOwned>(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Option<R>, ClientError> {
        let response = request
            .bearer_auth(self.token.expose())
            .send()
            .await
            .map_err(|source| self.transport(what, source))?;
        let response = self.check(what, response).await?;
        if response.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        response
            .json()
            .await
            .map(Some)
            .map_err(|source| self.transport(what, source))
    }

    fn transport(&self, what: &str, source: reqwest::Error) -> ClientError {
        ClientError::Transport {
            what: what.to_owned(),
            url: self.hub_url.clone(),
            source,
        }
    }

    /// The response when its status is a success; the hub's message otherwise.
    async fn check(
        &self,
        what: &str,
        response: reqwest::Response,
    ) -> Result<reqwest::Response, ClientError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<ErrorBody>(&body)
            .map(|e| e.error)
            .unwrap_or(body);
        if status == StatusCode::CONFLICT {
            return Err(ClientError::LeaseLost {
                what: what.to_owned(),
                message,
            });
        }
        Err(ClientError::Refused {
            what: what.to_owned(),
            status: status.as_u16(),
            message,
        })
    }

    async fn post_json<B: Serialize, R: DeserializeOwned>(
        &self,
        what: &str,
        path: &str,
        body: &B,
    ) -> Result<Option<R>, ClientError> {
        self.retry(what, || {
            self.send(what, self.http.post(self.url(path)).json(body))
        })
        .await
    }

    /// Waits (the hub's long poll) for a build; `None` when none came.
    pub async fn claim(&self, worker: &str) -> Result<Option<Job>, ClientError> {
        let request = ClaimRequest {
            worker: worker.to_owned(),
        };
        // One try: the caller's loop backs off and claims again.
        self.send(
            "claim a build",
            self.http.post(self.url("/claim")).json(&request),
        )
        .await
    }

    /// Renews the lease; [`ClientError::LeaseLost`] means stop.
    pub async fn heartbeat(&self, job: &Job) -> Result<HeartbeatResponse, ClientError> {
        let what = format!("heartbeat of build {}", job.build_id);
        let request = AttemptRequest {
            attempt: job.attempt,
        };
        let path = format!("/builds/{}/heartbeat", job.build_id);
        self.post_json(&what, &path, &request)
            .await?
            .ok_or_else(|| empty_answer(&what))
    }

    /// Sends log chunk `seq` of the attempt (sending it again is harmless).
    pub async fn append_log(
        &self,
        job: &Job,
        seq: i64,
        text: &str,
    ) -> Result<LogAccepted, ClientError> {
        let what = format!("log chunk {seq} of build {}", job.build_id);
        let chunk = LogChunk {
            attempt: job.attempt,
            seq,
            text: text.to_owned(),
        };
        let path = format!("/builds/{}/log", job.build_id);
        self.post_json(&what, &path, &chunk)
            .await?
            .ok_or_else(|| empty_answer(&what))
    }

    /// Streams the job's source tarball into `dest`.
    pub async fn download_source(&self, job: &Job, dest: &Path) -> Result<u64, ClientError> {
        let what = format!("source of build {}", job.build_id);
        self.retry(&what, || async {
            let response = self
                .http
                .get(format!("{}{}", self.hub_url, job.source_url))
                .bearer_auth(self.token.expose())
                .send()
                .await
                .map_err(|source| self.transport(&what, source))?;
            let response = self.check(&what, response).await?;
            let file_error = |source| ClientError::File {
                what: format!("{what}: cannot write"),
                path: dest.to_owned(),
                source,
            };
            let mut file = tokio::fs::File::create(dest).await.map_err(file_error)?;
            let mut body = response.bytes_stream();
            let mut written = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|source| self.transport(&what, source))?;
                file.write_all(&chunk).await.map_err(file_error)?;
                written += chunk.len() as u64;
            }
            file.flush().await.map_err(file_error)?;
            Ok(written)
        })
        .await
    }

    /// Streams the image at `path` (whose sha256 and size are known) to
    /// the hub's storage: straight to the signed URL the hub hands out,
    /// or, where it has none (404), through the hub.
    pub async fn upload_artifact(
        &self,
        job: &Job,
        path: &Path,
        sha256: &str,
        size: u64,
    ) -> Result<(), ClientError> {
        match self.artifact_url(job, sha256, size).await {
            Ok(target) => self.upload_to_storage(job, &target, path, size).await,
            Err(ClientError::Refused {
                status: 404,
                message,
                ..
            }) => {
                tracing::info!(
                    "build {}: uploading through the hub: {message}",
                    job.build_id
                );
                self.upload_through_hub(job, path, sha256, size).await
            }
            Err(e) => Err(e),
        }
    }

    /// Asks the hub where to upload the image directly.
    async fn artifact_url(
        &self,
        job: &Job,
        sha256: &str,
        size: u64,
    ) -> Result<ArtifactUrl, ClientError> {
        let what = format!("upload url for the image of build {}", job.build_id);
        let request = ArtifactUrlRequest {
            attempt: job.attempt,
            sha256: sha256.to_owned(),
            size,
        };
        let path = format!("/builds/{}/artifact-url", job.build_id);
        self.post_json(&what, &path, &request)
            .await?
            .ok_or_else(|| empty_answer(&what))
    }

    /// `PUT`s the image to a signed storage URL, streamed from disk.
    async fn upload_to_storage(
        &self,
        job: &Job,
        target: &ArtifactUrl,
        path: &Path,
        size: u64,
    ) -> Result<(), ClientError> {
        let what = format!("upload of the image of build {} to storage", job.build_id);
        self.retry(&what, || async {
            let body = file_body(&what, path).await?;
            // No bearer token: the URL's signature is the authorisation,
            // and the worker token is the hub's alone.
            let response = self
                .http
                .put(&target.url)
                .header(reqwest::header::CONTENT_LENGTH, size)
                .body(body)
                .send()
                .await
                .map_err(|source| ClientError::StorageTransport {
                    what: what.clone(),
                    source: source.without_url(),
                })?;
            let status = response.status();
            if status.is_success() {
                return Ok(());
            }
            let message = response.text().await.unwrap_or_default();
            Err(ClientError::StorageRefused {
                what: what.clone(),
                status: status.as_u16(),
                message: message.chars().take(500).collect(),
            })
        })
        .await
    }

    /// Streams the image through the hub, which stores it.
    async fn upload_through_hub(
        &self,
        job: &Job,
        path: &Path,
        sha256: &str,
        size: u64,
    ) -> Result<(), ClientError> {
        let what = format!("upload of the image of build {}", job.build_id);
        let query = ArtifactQuery {
            attempt: job.attempt,
            sha256: sha256.to_owned(),
            size,
        };
        let url = self.url(&format!("/builds/{}/artifact", job.build_id));
        self.retry(&what, || async {
            let body = file_body(&what, path).await?;
            let request = self
                .http
                .put(&url)
                .query(&query)
                .header(reqwest::header::CONTENT_LENGTH, size)
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(body);
            self.send::<ArtifactStored>(&what, request)
                .await
                .map(|_| ())
        })
        .await
    }

    /// Reports the uploaded image; the hub publishes it.
    pub async fn complete(
        &self,
        job: &Job,
        request: &CompleteRequest,
    ) -> Result<CompleteResponse, ClientError> {
        let what = format!("completion of build {}", job.build_id);
        let path = format!("/builds/{}/complete", job.build_id);
        self.post_json(&what, &path, request)
            .await?
            .ok_or_else(|| empty_answer(&what))
    }

    /// Reports the build's failure.
    pub async fn fail(&self, job: &Job, error: &str) -> Result<(), ClientError> {
        let what = format!("failure report of build {}", job.build_id);
        let request = FailRequest {
            attempt: job.attempt,
            error: error.to_owned(),
        };
        let path = format!("/builds/{}/fail", job.build_id);
        self.post_json::<_, serde_json::Value>(&what, &path, &request)
            .await
            .map(|_| ())
    }
}

/// The file at `path` as a streamed request body.
async fn file_body(what: &str, path: &Path) -> Result<reqwest::Body, ClientError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|source| ClientError::File {
            what: format!("{what}: cannot open"),
            path: path.to_owned(),
            source,
        })?;
    Ok(reqwest::Body::wrap_stream(
        tokio_util::io::ReaderStream::new(file),
    ))
}

fn empty_answer(what: &str) -> ClientError {
    ClientError::Refused {
        what: what.to_owned(),
        status: 204,
        message: "empty answer where a body was expected".to_owned(),
    }
}
