//! Object storage for images and build logs: a local folder by default, an
//! S3 bucket (or an S3-compatible server) by configuration, both through
//! `object_store`.
//!
//! Every object key is derived in one place, [`StorageKey::path`]: images by
//! content digest (`images/sha256/<hex>.sif`, so identical images are stored
//! once), logs by build id (`logs/<id>.log`), and images a worker uploads
//! straight to S3 through a signed URL by build and attempt
//! (`uploads/<id>-<attempt>.sif`): never served, only read back by
//! [`Storage::promote`], which verifies them into their image key.
//!
//! Writes are atomic: an upload goes to a multipart upload (a staging file
//! renamed into place on a local folder, an S3 multipart upload elsewhere)
//! that is completed only once the whole body arrived and its sha256 and size
//! match what the caller expects; on any error it is aborted, so no partial
//! object is ever visible under a final key. A process killed mid-upload can
//! leave a local staging file behind (never under a final key);
//! [`Storage::open`] sweeps those once they are stale.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _, TryStreamExt as _};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::signer::Signer as _;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload, WriteMultipart};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

/// Size of each part of a multipart upload: S3 wants at least 5 MiB, and
/// larger parts mean fewer requests for multi-GiB images.
const PART_SIZE: usize = 16 * 1024 * 1024;
/// Parts uploaded at once: keeps a fast link busy while bounding memory to
/// `PART_SIZE * PARTS_IN_FLIGHT`.
const PARTS_IN_FLIGHT: usize = 4;
/// Read size for local files: large reads keep downloads and uploads at
/// disk speed instead of paying a thread hop per small chunk.
const LOCAL_READ_SIZE: usize = 1024 * 1024;
/// A local staging file untouched this long belongs to an upload that died
/// with its process (a live upload writes continuously).
const STALE_STAGING_AGE: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(
        "unsupported storage url {url:?}: expected file:///ABSOLUTE/PATH or s3://BUCKET/PREFIX"
    )]
    UnsupportedUrl { url: String },
    #[error("cannot create the storage folder {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot sweep stale uploads in the storage folder {path}")]
    Sweep {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid image digest {value:?}: expected 64 lowercase hex digits")]
    InvalidDigest { value: String },
    #[error("cannot open storage {url}")]
    Open {
        url: String,
        #[source]
        source: object_store::Error,
    },
    #[error("object {key} not found")]
    NotFound { key: String },
    #[error("storage {action} of {key} failed")]
    Store {
        action: &'static str,
        key: String,
        #[source]
        source: object_store::Error,
    },
    #[error("cannot read local object {path}")]
    LocalRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the upload body for {key}")]
    Body {
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path} to upload it")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("upload of {key} has sha256 {actual}, expected {expected}: nothing stored")]
    DigestMismatch {
        key: String,
        expected: String,
        actual: String,
    },
    #[error("upload of {key} has {actual} bytes, expected {expected}: nothing stored")]
    SizeMismatch {
        key: String,
        expected: u64,
        actual: u64,
    },
}

/// Where an object lives. The only place object keys are derived.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StorageKey {
    /// A SIF image, by the sha256 of its bytes (64 lowercase hex digits).
    Image { sha256_hex: String },
    /// The log of one build.
    BuildLog { build_id: i64 },
    /// An image as a worker uploaded it for one attempt of a build,
    /// unverified until [`Storage::promote`] copies it to its image key.
    Upload { build_id: i64, attempt: i64 },
    /// An image a library client pushes (`apptainer push`) to a signed
    /// URL, unverified until promoted, like [`StorageKey::Upload`].
    LibraryUpload { upload_id: i64 },
    /// One staged part of a library client's multipart push.
    LibraryPart { upload_id: i64, part: i64 },
}

impl StorageKey {
    /// An image's key; refuses anything but 64 lowercase hex digits, so a
    /// key can never name a path outside `images/sha256/`.
    pub fn image(sha256_hex: &str) -> Result<Self, StorageError> {
        let valid = sha256_hex.len() == 64
            && sha256_hex
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if valid {
            Ok(StorageKey::Image {
                sha256_hex: sha256_hex.to_owned(),
            })
        } else {
            Err(StorageError::InvalidDigest {
                value: sha256_hex.to_owned(),
            })
        }
    }

    pub fn build_log(build_id: i64) -> Self {
        StorageKey::BuildLog { build_id }
    }

    pub fn upload(build_id: i64, attempt: i64) -> Self {
        StorageKey::Upload { build_id, attempt }
    }

    /// The object's path below the storage root.
    pub fn path(&self) -> String {
        match self {
            StorageKey::Image { sha256_hex } => format!("images/sha256/{sha256_hex}.sif"),
            StorageKey::BuildLog { build_id } => format!("logs/{build_id}.log"),
            StorageKey::Upload { build_id, attempt } => {
                format!("uploads/{build_id}-{attempt}.sif")
            }
            StorageKey::LibraryUpload { upload_id } => format!("uploads/library/{upload_id}.sif"),
            StorageKey::LibraryPart { upload_id, part } => {
                format!("uploads/library/{upload_id}/part-{part}")
            }
        }
    }
}

impl std::fmt::Display for StorageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.path())
    }
}

/// What an upload must match to be published; `None` checks nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    pub sha256_hex: Option<String>,
    pub size: Option<u64>,
}

/// The result of an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub sha256_hex: String,
    pub size: u64,
    /// The image was already stored: the body was verified, nothing rewritten.
    pub already_present: bool,
}

/// What [`Storage::head`] reports about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    pub last_modified: SystemTime,
}

/// An object's bytes as they arrive.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, StorageError>> + Send>>;

/// A handle on the configured storage; cheap to clone.
#[derive(Clone)]
pub struct Storage {
    backend: Arc<Backend>,
}

enum Backend {
    Local {
        root: PathBuf,
        store: LocalFileSystem,
    },
    S3 {
        bucket: String,
        /// Empty, or ends with `/`.
        prefix: String,
        endpoint: Option<String>,
        store: AmazonS3,
    },
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not derived: the S3 client's Debug would print its credentials.
        write!(f, "Storage({})", self.describe())
    }
}

impl Storage {
    /// Opens `file:///ABSOLUTE/PATH` (created if missing, stale staging
    /// files swept) or `s3://BUCKET/PREFIX` (credentials, region, endpoint
    /// and `AWS_ALLOW_HTTP` from the usual `AWS_*` variables).
    pub fn open(url: &str) -> Result<Self, StorageError> {
        Self::open_with_env(url, std::env::vars())
    }

    /// [`Storage::open`], reading the `AWS_*` variables from `env` instead
    /// of the process environment.
    pub fn open_with_env(
        url: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, StorageError> {
        let unsupported = || StorageError::UnsupportedUrl {
            url: url.to_owned(),
        };
        if let Some(path) = url.strip_prefix("file://") {
            let root = PathBuf::from(path);
            if !root.is_absolute() {
                return Err(unsupported());
            }
            std::fs::create_dir_all(&root).map_err(|source| StorageError::CreateDir {
                path: root.clone(),
                source,
            })?;
            sweep_stale_staging(&root, SystemTime::now())?;
            let store = LocalFileSystem::new_with_prefix(&root)
                .map_err(|source| StorageError::Open {
                    url: url.to_owned(),
                    source,
                })?
                // Durable once published: a crash right after an upload
                // completes must not leave an empty file under the key.
                .with_fsync(true);
            return Ok(Self {
                backend: Arc::new(Backend::Local { root, store }),
            });
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(unsupported());
            }
            let prefix = prefix.trim_matches('/');
            let prefix = if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            };
            let mut builder = AmazonS3Builder::new();
            let mut endpoint = None;
            for (name, value) in env {
                if !name.starts_with("AWS_") {
                    continue;
                }
                // As `AmazonS3Builder::from_env`: known names configure, others are not ours.
                if let Ok(config_key) = name.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                    if config_key == AmazonS3ConfigKey::Endpoint {
                        endpoint = Some(value.clone());
                    }
                    builder = builder.with_config(config_key, value);
                }
            }
            let store =
                builder
                    .with_bucket_name(bucket)
                    .build()
                    .map_err(|source| StorageError::Open {
                        url: url.to_owned(),
                        source,
                    })?;
            return Ok(Self {
                backend: Arc::new(Backend::S3 {
                    bucket: bucket.to_owned(),
                    prefix,
                    endpoint,
                    store,
                }),
            });
        }
        Err(unsupported())
    }

    /// One line for the startup log; no secrets.
    pub fn describe(&self) -> String {
        match &*self.backend {
            Backend::Local { root, .. } => format!("local folder {}", root.display()),
            Backend::S3 {
                bucket,
                prefix,
                endpoint,
                ..
            } => match endpoint {
                Some(endpoint) => format!("s3://{bucket}/{prefix} at {endpoint}"),
                None => format!("s3://{bucket}/{prefix}"),
            },
        }
    }

    fn store(&self) -> &dyn ObjectStore {
        match &*self.backend {
            Backend::Local { store, .. } => store,
            Backend::S3 { store, .. } => store,
        }
    }

    fn object_path(&self, key: &StorageKey) -> ObjectPath {
        match &*self.backend {
            Backend::Local { .. } => ObjectPath::from(key.path()),
            Backend::S3 { prefix, .. } => ObjectPath::from(format!("{prefix}{}", key.path())),
        }
    }

    /// Uploads `body` under `key`, atomically: the object appears only if
    /// the body ends without error and matches `expected` (and, for an
    /// image, the digest in its key). An image already stored is not
    /// rewritten: the body is read and verified, and `already_present` set.
    pub async fn put_stream<S>(
        &self,
        key: &StorageKey,
        body: S,
        expected: Expected,
    ) -> Result<Stored, StorageError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send,
    {
        let expected = expected_for(key, expected)?;
        let mut body = std::pin::pin!(body);
        if matches!(key, StorageKey::Image { .. }) && self.head(key).await?.is_some() {
            let mut hashing = Hashing::default();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|source| StorageError::Body {
                    key: key.path(),
                    source,
                })?;
                hashing.add(key, &chunk, &expected)?;
            }
            let (sha256_hex, size) = hashing.finish(key, &expected)?;
            return Ok(Stored {
                sha256_hex,
                size,
                already_present: true,
            });
        }
        let path = self.object_path(key);
        let upload = self
            .store()
            .put_multipart(&path)
            .await
            .map_err(store_error("upload start", key))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        match feed(&mut writer, key, body.as_mut(), &expected).await {
            Ok((sha256_hex, size)) => {
                writer.finish().await.map_err(store_error("upload", key))?;
                Ok(Stored {
                    sha256_hex,
                    size,
                    already_present: false,
                })
            }
            Err(e) => {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!("cannot abort the upload of {key}: {abort}");
                }
                Err(e)
            }
        }
    }

    /// Uploads a local file, as [`Storage::put_stream`].
    pub async fn put_file(
        &self,
        key: &StorageKey,
        path: &Path,
        expected: Expected,
    ) -> Result<Stored, StorageError> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|source| StorageError::ReadFile {
                path: path.to_owned(),
                source,
            })?;
        let body = tokio_util::io::ReaderStream::with_capacity(file, LOCAL_READ_SIZE);
        self.put_stream(key, body, expected).await
    }

    /// Stores a small object (a log) whole, atomically, replacing any
    /// earlier one.
    pub async fn put_bytes(&self, key: &StorageKey, bytes: Bytes) -> Result<(), StorageError> {
        self.store()
            .put(&self.object_path(key), PutPayload::from(bytes))
            .await
            .map_err(store_error("upload", key))?;
        Ok(())
    }

    /// The object's size and time, or `None` when there is none.
    pub async fn head(&self, key: &StorageKey) -> Result<Option<ObjectInfo>, StorageError> {
        match self.store().head(&self.object_path(key)).await {
            Ok(meta) => Ok(Some(ObjectInfo {
                size: meta.size,
                last_modified: SystemTime::from(meta.last_modified),
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(StorageError::Store {
                action: "head",
                key: key.path(),
                source,
            }),
        }
    }

    /// The object's bytes, or those in `range` (which the caller keeps
    /// within the object's size).
    pub async fn get(
        &self,
        key: &StorageKey,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<ByteStream, StorageError> {
        if let Backend::Local { root, .. } = &*self.backend {
            return local_get(root.join(key.path()), key, range).await;
        }
        let path = self.object_path(key);
        let options = object_store::GetOptions {
            range: range.map(object_store::GetRange::Bounded),
            ..Default::default()
        };
        let result =
            self.store()
                .get_opts(&path, options)
                .await
                .map_err(|source| match source {
                    object_store::Error::NotFound { .. } => {
                        StorageError::NotFound { key: key.path() }
                    }
                    source => StorageError::Store {
                        action: "download",
                        key: key.path(),
                        source,
                    },
                })?;
        let key_path = key.path();
        Ok(Box::pin(result.into_stream().map_err(move |source| {
            StorageError::Store {
                action: "download",
                key: key_path.clone(),
                source,
            }
        })))
    }

    /// A small object whole.
    pub async fn get_bytes(&self, key: &StorageKey) -> Result<Bytes, StorageError> {
        let result =
            self.store()
                .get(&self.object_path(key))
                .await
                .map_err(|source| match source {
                    object_store::Error::NotFound { .. } => {
                        StorageError::NotFound { key: key.path() }
                    }
                    source => StorageError::Store {
                        action: "download",
                        key: key.path(),
                        source,
                    },
                })?;
        result.bytes().await.map_err(store_error("download", key))
    }

    /// Removes the object; removing one that is not there succeeds.
    pub async fn delete(&self, key: &StorageKey) -> Result<(), StorageError> {
        match self.store().delete(&self.object_path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(StorageError::Store {
                action: "delete",
                key: key.path(),
                source,
            }),
        }
    }

    /// A URL clients can download the object from directly for
    /// `valid_for`: `Some` on S3, `None` on a local folder (the hub serves
    /// those itself).
    pub async fn signed_download_url(
        &self,
        key: &StorageKey,
        valid_for: Duration,
    ) -> Result<Option<String>, StorageError> {
        self.signed_url(axum::http::Method::GET, key, valid_for)
            .await
    }

    /// A URL a client can `PUT` the object's bytes to directly for
    /// `valid_for`, holding no credentials: `Some` on S3, `None` on a local
    /// folder (uploads go through the hub there). Meant for
    /// [`StorageKey::Upload`] keys, whose objects [`Storage::promote`]
    /// verifies before anything is published.
    pub async fn signed_upload_url(
        &self,
        key: &StorageKey,
        valid_for: Duration,
    ) -> Result<Option<String>, StorageError> {
        self.signed_url(axum::http::Method::PUT, key, valid_for)
            .await
    }

    /// A presigned `method` URL for `key` on S3; `None` on a local folder.
    async fn signed_url(
        &self,
        method: axum::http::Method,
        key: &StorageKey,
        valid_for: Duration,
    ) -> Result<Option<String>, StorageError> {
        match &*self.backend {
            Backend::Local { .. } => Ok(None),
            Backend::S3 { store, .. } => {
                let url = store
                    .signed_url(method, &self.object_path(key), valid_for)
                    .await
                    .map_err(store_error("url signing", key))?;
                Ok(Some(url.to_string()))
            }
        }
    }

    /// Publishes the object under `upload` as `target`: streamed through
    /// [`Storage::put_stream`], so `target` appears only if the bytes match
    /// `expected` (and the digest of an image key). The upload object is
    /// deleted once published or refused (a failed deletion is logged); kept
    /// when storage itself failed, so the promotion can be tried again.
    pub async fn promote(
        &self,
        upload: &StorageKey,
        target: &StorageKey,
        expected: Expected,
    ) -> Result<Stored, StorageError> {
        let body = self.get(upload, None).await?.map_err(std::io::Error::other);
        let result = self.put_stream(target, body, expected).await;
        if let Ok(_)
        | Err(StorageError::DigestMismatch { .. } | StorageError::SizeMismatch { .. }) = &result
        {
            // The outcome stands either way: a leftover upload is never served.
            if let Err(e) = self.delete(upload).await {
                tracing::warn!("cannot delete the promoted upload {upload}: {e}");
            }
        }
        result
    }
}

/// `expected`, plus the digest an image's key names.
fn expected_for(key: &StorageKey, mut expected: Expected) -> Result<Expected, StorageError> {
    if let StorageKey::Image { sha256_hex } = key {
        match &expected.sha256_hex {
            Some(wanted) if wanted != sha256_hex => {
                return Err(StorageError::DigestMismatch {
                    key: key.path(),
                    expected: sha256_hex.clone(),
                    actual: wanted.clone(),
                })
            }
            _ => expected.sha256_hex = Some(sha256_hex.clone()),
        }
    }
    Ok(expected)
}

fn store_error(
    action: &'static str,
    key: &StorageKey,
) -> impl FnOnce(object_store::Error) -> StorageError {
    let key = key.path();
    move |source| StorageError::Store {
        action,
        key,
        source,
    }
}

/// The sha256 and length of a body as it streams past.
#[derive(Default)]
struct Hashing {
    hasher: Sha256,
    size: u64,
}

impl Hashing {
    /// Adds a chunk; fails as soon as the body is longer than expected.
    fn add(
        &mut self,
        key: &StorageKey,
        chunk: &[u8],
        expected: &Expected,
    ) -> Result<(), StorageError> {
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
        match expected.size {
            Some(size) if self.size > size => Err(StorageError::SizeMismatch {
                key: key.path(),
                expected: size,
                actual: self.size,
            }),
            _ => Ok(()),
        }
    }

    fn finish(self, key: &StorageKey, expected: &Expected) -> Result<(String, u64), StorageError> {
        let actual = hex::encode(self.hasher.finalize());
        if let Some(size) = expected.size {
            if size != self.size {
                return Err(StorageError::SizeMismatch {
                    key: key.path(),
                    expected: size,
                    actual: self.size,
                });
            }
        }
        if let Some(wanted) = &expected.sha256_hex {
            if *wanted != actual {
                return Err(StorageError::DigestMismatch {
                    key: key.path(),
                    expected: wanted.clone(),
                    actual,
                });
            }
        }
        Ok((actual, self.size))
    }
}

/// Streams `body` into `writer`, hashing it; the caller completes or
/// aborts the upload by the result.
async fn feed<S>(
    writer: &mut WriteMultipart,
    key: &StorageKey,
    mut body: Pin<&mut S>,
    expected: &Expected,
) -> Result<(String, u64), StorageError>
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send,
{
    let mut hashing = Hashing::default();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|source| StorageError::Body {
            key: key.path(),
            source,
        })?;
        hashing.add(key, &chunk, expected)?;
        writer
            .wait_for_capacity(PARTS_IN_FLIGHT)
            .await
            .map_err(store_error("upload", key))?;
        writer.put(chunk);
    }
    hashing.finish(key, expected)
}

/// Reads a local object straight from its file with large reads: the
/// generic local store reads 8 KiB at a time, far below disk speed.
async fn local_get(
    path: PathBuf,
    key: &StorageKey,
    range: Option<std::ops::Range<u64>>,
) -> Result<ByteStream, StorageError> {
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StorageError::NotFound { key: key.path() })
        }
        Err(source) => return Err(StorageError::LocalRead { path, source }),
    };
    let reader = match range {
        Some(range) => {
            file.seek(std::io::SeekFrom::Start(range.start))
                .await
                .map_err(|source| StorageError::LocalRead {
                    path: path.clone(),
                    source,
                })?;
            file.take(range.end.saturating_sub(range.start))
        }
        None => file.take(u64::MAX),
    };
    let stream = tokio_util::io::ReaderStream::with_capacity(reader, LOCAL_READ_SIZE).map_err(
        move |source| StorageError::LocalRead {
            path: path.clone(),
            source,
        },
    );
    Ok(Box::pin(stream))
}

/// Removes staging files (`NAME#DIGITS`, what the local store writes before
/// renaming into place) that no live upload has touched for a while.
fn sweep_stale_staging(root: &Path, now: SystemTime) -> Result<(), StorageError> {
    let sweep_error = |path: &Path| {
        let path = path.to_owned();
        move |source| StorageError::Sweep { path, source }
    };
    let mut folders = vec![root.to_owned()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).map_err(sweep_error(&folder))? {
            let entry = entry.map_err(sweep_error(&folder))?;
            let file_type = entry.file_type().map_err(sweep_error(&entry.path()))?;
            if file_type.is_dir() {
                folders.push(entry.path());
                continue;
            }
            let name = entry.file_name();
            let is_staging = name
                .to_str()
                .and_then(|name| name.rsplit_once('#'))
                .is_some_and(|(_, suffix)| {
                    !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit())
                });
            if !is_staging {
                continue;
            }
            let modified = entry
                .metadata()
                .and_then(|m| m.modified())
                .map_err(sweep_error(&entry.path()))?;
            let idle = now.duration_since(modified).unwrap_or_default();
            if idle >= STALE_STAGING_AGE {
                tracing::info!(
                    "storage: removing a stale partial upload {}",
                    entry.path().display()
                );
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => {
                        return Err(StorageError::Sweep {
                            path: entry.path(),
                            source,
                        })
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_derived_in_one_place_and_cannot_escape() {
        let hex = "ab".repeat(32);
        assert_eq!(
            StorageKey::image(&hex).unwrap().path(),
            format!("images/sha256/{hex}.sif")
        );
        assert_eq!(StorageKey::build_log(42).path(), "logs/42.log");
        assert_eq!(StorageKey::upload(42, 3).path(), "uploads/42-3.sif");
        assert_eq!(
            StorageKey::LibraryUpload { upload_id: 7 }.path(),
            "uploads/library/7.sif"
        );
        assert_eq!(
            StorageKey::LibraryPart {
                upload_id: 7,
                part: 2
            }
            .path(),
            "uploads/library/7/part-2"
        );
        for bad in [
            "../x",
            "",
            &"AB".repeat(32),
            &format!("{hex}0"),
            &"a/".repeat(32),
        ] {
            assert!(StorageKey::image(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn stale_staging_files_are_swept_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("images/sha256");
        std::fs::create_dir_all(&folder).unwrap();
        let stale = folder.join("aa.sif#1");
        let live = folder.join("bb.sif#2");
        let object = folder.join("cc.sif");
        for path in [&stale, &live, &object] {
            std::fs::write(path, b"x").unwrap();
        }
        let old = SystemTime::now() - STALE_STAGING_AGE - Duration::from_secs(1);
        std::fs::File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let object_file = std::fs::File::options().write(true).open(&object).unwrap();
        object_file.set_modified(old).unwrap();
        sweep_stale_staging(dir.path(), SystemTime::now()).unwrap();
        assert!(!stale.exists());
        assert!(live.exists());
        assert!(object.exists());
    }
}
