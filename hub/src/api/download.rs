//! Image downloads: `GET`/`HEAD /download/sha256/<hex>` and
//! `/download/<owner>/<repo>/<container>[:<tag>]` (tag `latest` when left
//! out).
//!
//! Answers carry `Content-Length`, a strong `ETag` (the content digest),
//! `Last-Modified` and `Accept-Ranges`; a single `Range` gets a 206 (so
//! `curl -C -` resumes), honouring `If-Range`, and `If-None-Match` a 304.
//! Several ranges get the whole image. On S3 a `GET` is redirected to a
//! signed URL, so the bytes flow from the bucket, not through the hub.
//! Each download takes from the caller's rate limit (`crate::ratelimit`).
//!
//! Downloads are counted for the catalog (`repositories.downloads`): once
//! per `GET` whose body reaches the image's last byte (a whole image, or
//! the range that finishes a resumed one; not a `HEAD`, a 304 or a range
//! from the middle), or per redirect to S3, whose end the hub cannot see.
//! The count is one UPDATE run in the background, so no response waits
//! for it.

use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::Stream;

use crate::access::Viewer;
use crate::db::{Db, DbError, Image};
use crate::ratelimit::{ClientAddr, RateLimited};
use crate::serve::AppState;
use crate::storage::{ByteStream, StorageError, StorageKey};

/// How long a signed S3 URL stays valid: long enough for a multi-GiB image
/// over a slow link, with room for retries.
const SIGNED_URL_VALIDITY: Duration = Duration::from_secs(12 * 60 * 60);
/// The tag a reference without `:<tag>` names.
pub(crate) const DEFAULT_TAG: &str = "latest";

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("{0} not found")]
    NotFound(String),
    #[error(transparent)]
    Database(#[from] DbError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cannot build the download response")]
    Response(#[from] axum::http::Error),
    #[error(transparent)]
    RateLimited(#[from] RateLimited),
}

impl IntoResponse for DownloadError {
    fn into_response(self) -> Response {
        match self {
            DownloadError::NotFound(what) => {
                (StatusCode::NOT_FOUND, format!("{what} not found\n")).into_response()
            }
            DownloadError::RateLimited(limited) => limited.into_response(),
            other => {
                tracing::error!("download failed: {other}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "download failed: internal error\n",
                )
                    .into_response()
            }
        }
    }
}

pub fn routes() -> Router<AppState> {
    // `get` answers HEAD too; the handlers send no body for it.
    Router::new()
        .route("/download/sha256/{hex}", get(by_digest))
        .route("/download/{owner}/{repo}/{reference}", get(by_tag))
}

async fn by_digest(
    State(state): State<AppState>,
    viewer: Viewer,
    client: ClientAddr,
    Path(hex): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, DownloadError> {
    state.rate_limits.download(&viewer, client)?;
    let not_found = || DownloadError::NotFound(format!("image sha256:{hex}"));
    let key = StorageKey::image(&hex).map_err(|_| not_found())?;
    let digest = format!("sha256:{hex}");
    state
        .db
        .find_readable_image_by_digest(&viewer, &digest)
        .await?
        .ok_or_else(not_found)?;
    let download = Download {
        key,
        counts_for: CountsFor::Image(digest),
        filename: format!("{hex}.sif"),
        // The bytes behind a digest never change; shared caches may keep
        // them only when anyone may fetch them.
        cache_control: if viewer.user.is_none() {
            "public, max-age=31536000, immutable"
        } else {
            "private, max-age=31536000, immutable"
        },
    };
    download.respond(&state, &method, &headers).await
}

async fn by_tag(
    State(state): State<AppState>,
    viewer: Viewer,
    client: ClientAddr,
    Path((owner, repo, reference)): Path<(String, String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, DownloadError> {
    state.rate_limits.download(&viewer, client)?;
    let (container, tag) = reference
        .split_once(':')
        .unwrap_or((reference.as_str(), DEFAULT_TAG));
    let not_found = || DownloadError::NotFound(format!("image {owner}/{repo}/{container}:{tag}"));
    let image: Image = state
        .db
        .find_readable_tagged_image(&viewer, &owner, &repo, container, tag)
        .await?
        .ok_or_else(not_found)?;
    let hex = image
        .digest
        .strip_prefix("sha256:")
        .unwrap_or(&image.digest);
    let key = StorageKey::image(hex)?;
    let filename = format!("{}_{}.sif", safe_filename(container), safe_filename(tag));
    let download = Download {
        key,
        counts_for: CountsFor::Repository { owner, repo },
        filename,
        // A tag moves on rebuild: caches must revalidate (the ETag makes that cheap).
        cache_control: "no-cache",
    };
    download.respond(&state, &method, &headers).await
}

/// One resolved image to answer with; the library API serves its pulls
/// and the OCI API its blobs with it too.
pub(crate) struct Download {
    pub(crate) key: StorageKey,
    pub(crate) counts_for: CountsFor,
    pub(crate) filename: String,
    pub(crate) cache_control: &'static str,
}

impl Download {
    pub(crate) async fn respond(
        self,
        state: &AppState,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<Response, DownloadError> {
        let Some(info) = state.storage.head(&self.key).await? else {
            tracing::warn!("image {} is in the catalog but not in storage", self.key);
            return Err(DownloadError::NotFound(format!("image {}", self.key)));
        };
        let StorageKey::Image { sha256_hex } = &self.key else {
            return Err(DownloadError::NotFound(format!("image {}", self.key)));
        };
        let etag = format!("\"sha256:{sha256_hex}\"");
        let last_modified = httpdate::fmt_http_date(info.last_modified);
        let common = |status: StatusCode| {
            Response::builder()
                .status(status)
                .header(header::ETAG, &etag)
                .header(header::LAST_MODIFIED, &last_modified)
                .header(header::CACHE_CONTROL, self.cache_control)
                .header(header::ACCEPT_RANGES, "bytes")
        };

        if let Some(value) = headers.get(header::IF_NONE_MATCH) {
            if etag_list_matches(value, &etag) {
                return Ok(common(StatusCode::NOT_MODIFIED).body(Body::empty())?);
            }
        }

        if *method == Method::GET {
            let signed = state
                .storage
                .signed_download_url(&self.key, SIGNED_URL_VALIDITY)
                .await?;
            if let Some(url) = signed {
                self.counts_for.count(&state.db);
                return Ok(common(StatusCode::TEMPORARY_REDIRECT)
                    .header(header::LOCATION, url)
                    .body(Body::empty())?);
            }
        }

        let range_applies = match headers.get(header::IF_RANGE) {
            None => true,
            Some(value) => if_range_matches(value, &etag, info.last_modified),
        };
        let wanted = match (headers.get(header::RANGE), range_applies) {
            (Some(value), true) => parse_range(value.to_str().unwrap_or(""), info.size),
            _ => RangeRequest::Full,
        };
        let disposition = format!("attachment; filename=\"{}\"", self.filename);
        let with_body = *method != Method::HEAD;
        let response = match wanted {
            RangeRequest::Unsatisfiable => common(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{}", info.size))
                .body(Body::empty())?,
            RangeRequest::Full => {
                let body = if with_body {
                    let stream = state.storage.get(&self.key, None).await?;
                    Body::from_stream(CountAtEnd::new(stream, self.counts_for, &state.db))
                } else {
                    Body::empty()
                };
                common(StatusCode::OK)
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .header(header::CONTENT_DISPOSITION, &disposition)
                    .header(header::CONTENT_LENGTH, info.size)
                    .body(body)?
            }
            RangeRequest::Partial(range) => {
                let content_range =
                    format!("bytes {}-{}/{}", range.start, range.end - 1, info.size);
                let length = range.end - range.start;
                let reaches_end = range.end == info.size;
                let body = if with_body {
                    let stream = state.storage.get(&self.key, Some(range)).await?;
                    if reaches_end {
                        Body::from_stream(CountAtEnd::new(stream, self.counts_for, &state.db))
                    } else {
                        Body::from_stream(stream)
                    }
                } else {
                    Body::empty()
                };
                common(StatusCode::PARTIAL_CONTENT)
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .header(header::CONTENT_DISPOSITION, &disposition)
                    .header(header::CONTENT_RANGE, content_range)
                    .header(header::CONTENT_LENGTH, length)
                    .body(body)?
            }
        };
        Ok(response)
    }
}

/// Whose download counter a completed download adds to.
pub(crate) enum CountsFor {
    /// The repository that built the image of this digest.
    Image(String),
    /// The repository the tag is in.
    Repository { owner: String, repo: String },
}

impl CountsFor {
    /// Counts one download in the background; a failure is only logged,
    /// the download itself went through.
    fn count(self, db: &Db) {
        let db = db.clone();
        tokio::spawn(async move {
            let counted = match &self {
                CountsFor::Image(digest) => db.count_image_download(digest).await,
                CountsFor::Repository { owner, repo } => {
                    db.count_repository_download(owner, repo).await
                }
            };
            if let Err(e) = counted {
                tracing::warn!("cannot count a download: {e}");
            }
        });
    }
}

/// A body stream that counts a download when it ends: after its last
/// chunk, not when the client went away or storage failed midway.
struct CountAtEnd {
    inner: ByteStream,
    pending: Option<(CountsFor, Db)>,
}

impl CountAtEnd {
    fn new(inner: ByteStream, counts_for: CountsFor, db: &Db) -> Self {
        Self {
            inner,
            pending: Some((counts_for, db.clone())),
        }
    }
}

impl Stream for CountAtEnd {
    type Item = Result<Bytes, StorageError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some((counts_for, db)) = self.pending.take() {
                    counts_for.count(&db);
                }
            }
            Poll::Ready(Some(Err(_))) => self.pending = None,
            Poll::Ready(Some(Ok(_))) | Poll::Pending => {}
        }
        polled
    }
}

/// What a `Range` header asks of an object of some size.
#[derive(Debug, PartialEq, Eq)]
enum RangeRequest {
    /// No usable single range: send everything.
    Full,
    Partial(Range<u64>),
    Unsatisfiable,
}

/// Reads `bytes=a-b`, `bytes=a-` and `bytes=-n`. Syntax errors and
/// several ranges fall back to the whole object, as RFC 9110 allows.
fn parse_range(value: &str, size: u64) -> RangeRequest {
    let Some((unit, spec)) = value.trim().split_once('=') else {
        return RangeRequest::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        return match last.parse::<u64>() {
            Ok(0) => RangeRequest::Unsatisfiable,
            Ok(_) if size == 0 => RangeRequest::Unsatisfiable,
            Ok(suffix) => RangeRequest::Partial(size.saturating_sub(suffix)..size),
            Err(_) => RangeRequest::Full,
        };
    }
    let Ok(start) = first.parse::<u64>() else {
        return RangeRequest::Full;
    };
    let end = if last.is_empty() {
        size
    } else {
        match last.parse::<u64>() {
            Ok(last) if last >= start => last.saturating_add(1).min(size),
            _ => return RangeRequest::Full,
        }
    };
    if start >= size {
        RangeRequest::Unsatisfiable
    } else {
        RangeRequest::Partial(start..end)
    }
}

/// `If-None-Match`: `*` or a list of tags, compared weakly.
fn etag_list_matches(value: &HeaderValue, etag: &str) -> bool {
    let Ok(value) = value.to_str() else {
        return false;
    };
    value.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}

/// `If-Range`: a strong entity tag, or the exact `Last-Modified` date.
fn if_range_matches(value: &HeaderValue, etag: &str, last_modified: SystemTime) -> bool {
    let Ok(value) = value.to_str() else {
        return false;
    };
    let value = value.trim();
    if value.starts_with('"') || value.starts_with("W/") {
        return value == etag;
    }
    let whole_seconds =
        |time: SystemTime| time.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs());
    match httpdate::parse_http_date(value) {
        Ok(date) => {
            whole_seconds(date).is_some() && whole_seconds(date) == whole_seconds(last_modified)
        }
        Err(_) => false,
    }
}

/// Keeps a name safe inside a quoted `Content-Disposition` filename.
pub(crate) fn safe_filename(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        use RangeRequest::*;
        assert_eq!(parse_range("bytes=0-99", 1000), Partial(0..100));
        assert_eq!(parse_range("bytes=900-", 1000), Partial(900..1000));
        assert_eq!(parse_range("bytes=-100", 1000), Partial(900..1000));
        assert_eq!(parse_range("bytes=-5000", 1000), Partial(0..1000));
        assert_eq!(parse_range("bytes=990-5000", 1000), Partial(990..1000));
        assert_eq!(parse_range("bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-3", 1000), Full);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), Full);
        assert_eq!(parse_range("items=0-1", 1000), Full);
        assert_eq!(parse_range("bytes=x-1", 1000), Full);
    }

    #[test]
    fn conditional_headers_compare_as_specified() {
        let etag = "\"sha256:ab\"";
        let header = |s: &str| HeaderValue::from_str(s).unwrap();
        assert!(etag_list_matches(&header("\"x\", W/\"sha256:ab\""), etag));
        assert!(etag_list_matches(&header("*"), etag));
        assert!(!etag_list_matches(&header("\"sha256:cd\""), etag));
        let when = UNIX_EPOCH + Duration::from_millis(1_700_000_000_500);
        assert!(if_range_matches(&header(etag), etag, when));
        assert!(!if_range_matches(&header("W/\"sha256:ab\""), etag, when));
        let date = httpdate::fmt_http_date(when);
        assert!(if_range_matches(&header(&date), etag, when));
        assert!(!if_range_matches(
            &header(&httpdate::fmt_http_date(when + Duration::from_secs(5))),
            etag,
            when
        ));
    }
}
