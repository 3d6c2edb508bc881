//! Pulling an image over the OCI distribution API (with `oci-client`).
//!
//! - Authentication: anonymous; HTTP basic; and bearer tokens obtained from
//!   the realm a registry names in its `WWW-Authenticate` challenge (Docker
//!   Hub, GHCR, Quay, …), anonymously or with the configured credentials.
//!   Credentials come from [`RegistryConfig::credentials`] and from the
//!   environment variable `SIFHUB_REGISTRY_AUTH` (see [`parse_registry_auth`]).
//! - Transport: HTTPS, except for registries on `localhost`, `127.0.0.0/8`
//!   and `::1`, and those listed in [`RegistryConfig::insecure_registries`],
//!   which are spoken to over plain HTTP.
//! - Manifests: OCI image manifests, Docker v2 schema 2 manifests, and OCI
//!   image indexes / Docker manifest lists, resolved to the configured
//!   platform (linux/amd64 by default). Every manifest's sha256 is computed
//!   from the bytes received and checked against the digest that named it.
//! - Blobs (config and layers) go through the on-disk [`BlobCache`]: streamed
//!   to a temporary file while hashed, verified against the descriptor's
//!   digest and size, then renamed into place. A blob already in the cache
//!   is not downloaded again; [`PullReport`] counts both cases.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::cache::BlobCache;
use super::config::{ApptainerFiles, ImageConfig};
use super::error::{OciError, Result};
use super::layer::{apply_layers, ApplyOptions, ApplyReport};
use super::reference::{host_of, normalize_registry, validate_digest, ImageReference, DOCKER_HUB};

/// The environment variable holding registry credentials:
/// `HOST=USER:PASSWORD[,HOST2=USER2:PASSWORD2…]`.
pub const REGISTRY_AUTH_ENV: &str = "SIFHUB_REGISTRY_AUTH";

/// Media types of manifests we ask for.
const MANIFEST_ACCEPT: &[&str] = &[
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// Largest config blob we read into memory.
const MAX_CONFIG_SIZE: u64 = 16 * 1024 * 1024;

/// A user name and password for a registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The platform an image index is resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `os` (`linux`).
    pub os: String,
    /// `architecture` (`amd64`, `arm64`, …).
    pub architecture: String,
    /// `variant` (`v8`, …); `None` accepts any variant.
    pub variant: Option<String>,
}

impl Default for Platform {
    fn default() -> Self {
        Platform {
            os: "linux".to_string(),
            architecture: "amd64".to_string(),
            variant: None,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// How to reach registries and where to cache blobs.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// The blob cache folder (`<dir>/blobs/sha256/<hex>`).
    pub cache_dir: PathBuf,
    /// Credentials by registry (`host` or `host:port`; `docker.io` for Docker Hub).
    pub credentials: BTreeMap<String, Credentials>,
    /// Registries (`host` or `host:port`) spoken to over plain HTTP besides loopback ones.
    pub insecure_registries: Vec<String>,
    /// The platform image indexes are resolved to.
    pub platform: Platform,
    /// How many blobs are downloaded at once.
    pub max_concurrent_downloads: usize,
    /// Re-hash cached blobs before using them (a tampered cache is re-downloaded).
    pub verify_cached_blobs: bool,
    /// Timeout for establishing a connection.
    pub connect_timeout: Duration,
    /// Timeout for a read to make progress.
    pub read_timeout: Duration,
}

impl RegistryConfig {
    /// Defaults: linux/amd64, 3 concurrent downloads, cached blobs verified,
    /// no credentials, no insecure registries.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        RegistryConfig {
            cache_dir: cache_dir.into(),
            credentials: BTreeMap::new(),
            insecure_registries: Vec::new(),
            platform: Platform::default(),
            max_concurrent_downloads: 3,
            verify_cached_blobs: true,
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(300),
        }
    }

    /// Adds the credentials in `$SIFHUB_REGISTRY_AUTH` (they win over
    /// configured ones for the same registry).
    pub fn with_env_credentials(mut self) -> Result<Self> {
        if let Ok(spec) = std::env::var(REGISTRY_AUTH_ENV) {
            self.credentials.extend(parse_registry_auth(&spec)?);
        }
        Ok(self)
    }

    /// The credentials for `registry` (`host:port` first, then `host`).
    pub fn credentials_for(&self, registry: &str) -> Option<&Credentials> {
        let registry = normalize_registry(registry);
        self.credentials
            .iter()
            .find(|(k, _)| normalize_registry(k) == registry)
            .or_else(|| {
                let host = host_of(&registry);
                self.credentials
                    .iter()
                    .find(|(k, _)| normalize_registry(k) == host)
            })
            .map(|(_, c)| c)
    }

    /// Whether `registry` is spoken to over plain HTTP.
    pub fn uses_plain_http(&self, registry: &str) -> bool {
        let host = host_of(registry);
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        loopback
            || self
                .insecure_registries
                .iter()
                .any(|r| r.eq_ignore_ascii_case(registry) || r.eq_ignore_ascii_case(host))
    }
}

/// Parses `HOST=USER:PASSWORD[,HOST2=USER2:PASSWORD2…]` (the format of
/// `SIFHUB_REGISTRY_AUTH`). `HOST` may carry a port; `docker.io` names
/// Docker Hub. The password is everything after the first `:` of the user
/// part; a comma inside a password is only possible when the text after it
/// contains no `=` (use the config file for such passwords).
pub fn parse_registry_auth(spec: &str) -> Result<BTreeMap<String, Credentials>> {
    let mut out: BTreeMap<String, Credentials> = BTreeMap::new();
    let mut last: Option<String> = None;
    for piece in spec.split(',') {
        if piece.trim().is_empty() {
            continue;
        }
        let Some((host, userpass)) = piece.split_once('=') else {
            // A comma inside the previous password.
            match last.as_ref().and_then(|h| out.get_mut(h)) {
                Some(c) => {
                    c.password.push(',');
                    c.password.push_str(piece);
                    continue;
                }
                None => {
                    return Err(OciError::InvalidCredentials {
                        entry: redact(piece),
                        reason: "missing \"=\" between registry and credentials".to_string(),
                    })
                }
            }
        };
        let host = host.trim();
        if host.is_empty() || host.contains('/') {
            return Err(OciError::InvalidCredentials {
                entry: redact(piece),
                reason: "registry must be a host or host:port".to_string(),
            });
        }
        let Some((user, pass)) = userpass.split_once(':') else {
            return Err(OciError::InvalidCredentials {
                entry: redact(piece),
                reason: "missing \":\" between user and password".to_string(),
            });
        };
        if user.is_empty() {
            return Err(OciError::InvalidCredentials {
                entry: redact(piece),
                reason: "empty user name".to_string(),
            });
        }
        let key = normalize_registry(host);
        out.insert(
            key.clone(),
            Credentials {
                username: user.to_string(),
                password: pass.to_string(),
            },
        );
        last = Some(key);
    }
    Ok(out)
}

fn redact(piece: &str) -> String {
    match piece.split_once('=') {
        Some((h, up)) => match up.split_once(':') {
            Some((u, _)) => format!("{h}={u}:***"),
            None => format!("{h}={up}"),
        },
        None => "***".to_string(),
    }
}

/// What a pull reports as it goes (for a progress bar).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullEvent<'a> {
    /// The manifest is resolved; blobs come next.
    Resolved {
        /// The reference being pulled.
        reference: &'a ImageReference,
        /// The platform image manifest's digest.
        manifest_digest: &'a str,
        /// The index digest, when the reference named an index.
        index_digest: Option<&'a str>,
        /// Number of layers.
        layers: usize,
        /// Sum of the layer sizes (compressed).
        total_bytes: u64,
    },
    /// A blob is about to be fetched (or was found in the cache).
    BlobStarted {
        /// Blob digest.
        digest: &'a str,
        /// Config or layer.
        kind: BlobKind,
        /// Declared size.
        size: u64,
        /// Whether it is served from the cache.
        cached: bool,
    },
    /// Bytes of a blob received so far.
    BlobProgress {
        /// Blob digest.
        digest: &'a str,
        /// Bytes received.
        downloaded: u64,
        /// Declared size.
        size: u64,
    },
    /// A blob is verified and in the cache.
    BlobDone {
        /// Blob digest.
        digest: &'a str,
        /// Config or layer.
        kind: BlobKind,
        /// Size.
        size: u64,
        /// Whether it came from the cache.
        cached: bool,
    },
}

/// The kind of blob in a [`PullEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobKind {
    /// The image config.
    Config,
    /// A layer.
    Layer,
}

/// A progress callback that ignores everything.
pub fn no_progress(_: &PullEvent<'_>) {}

/// Counts of what a pull did (a second pull of the same image fetches nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullReport {
    /// Blobs (config and layers) downloaded.
    pub blobs_fetched: usize,
    /// Blobs served from the cache.
    pub blobs_cached: usize,
    /// Layers downloaded.
    pub layers_fetched: usize,
    /// Layers served from the cache.
    pub layers_cached: usize,
    /// Bytes downloaded for blobs.
    pub bytes_fetched: u64,
}

/// A layer blob in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBlob {
    /// `sha256:…` of the (compressed) blob.
    pub digest: String,
    /// Media type from the manifest.
    pub media_type: String,
    /// Size in bytes.
    pub size: u64,
    /// Path of the verified blob in the cache.
    pub path: PathBuf,
}

/// A pulled image: everything needed to build a root folder from it.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// The reference that was pulled (as given).
    pub reference: ImageReference,
    /// Digest of the platform image manifest (what the layers come from).
    pub manifest_digest: String,
    /// Media type of that manifest (OCI or Docker v2s2).
    pub manifest_media_type: String,
    /// Digest of the image index / manifest list, when the reference named one.
    pub index_digest: Option<String>,
    /// Digest of the config blob.
    pub config_digest: String,
    /// The parsed config.
    pub config: ImageConfig,
    /// Layers, bottom first.
    pub layers: Vec<LayerBlob>,
    /// Download counts.
    pub report: PullReport,
    /// Non-fatal oddities (e.g. a config whose architecture is not the platform's).
    pub warnings: Vec<String>,
}

impl PulledImage {
    /// The base-image digest to record for provenance: the digest the
    /// reference resolved to at the registry (the index's when the tag names
    /// an index, as `docker inspect` RepoDigests and apptainer report it).
    /// `registry/repository@base_digest` pulls exactly this image again.
    pub fn base_digest(&self) -> &str {
        self.index_digest
            .as_deref()
            .unwrap_or(&self.manifest_digest)
    }

    /// `registry/repository@<base digest>`.
    pub fn pinned_reference(&self) -> String {
        format!(
            "{}/{}@{}",
            self.reference.registry,
            self.reference.repository,
            self.base_digest()
        )
    }

    /// Applies the layers, in order, into `root`.
    pub fn apply_to(&self, root: &Path, opts: ApplyOptions) -> Result<ApplyReport> {
        apply_layers(
            root,
            self.layers
                .iter()
                .map(|l| (l.path.as_path(), l.digest.as_str())),
            opts,
        )
    }

    /// The `.singularity.d` files apptainer derives from the image config.
    pub fn apptainer_files(&self) -> ApptainerFiles {
        self.config.apptainer_files()
    }
}

#[derive(Deserialize)]
struct RawDescriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: i64,
    #[serde(default)]
    platform: Option<RawPlatform>,
}

#[derive(Deserialize)]
struct RawPlatform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Deserialize)]
struct RawManifest {
    #[serde(rename = "schemaVersion", default)]
    schema_version: Option<i64>,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<RawDescriptor>,
    #[serde(default)]
    layers: Option<Vec<RawDescriptor>>,
    #[serde(default)]
    manifests: Option<Vec<RawDescriptor>>,
}

/// The pull client: a [`RegistryConfig`] and its blob cache.
#[derive(Debug, Clone)]
pub struct Puller {
    config: RegistryConfig,
    cache: BlobCache,
}

impl Puller {
    /// A puller with `config` (the cache folder is created).
    pub fn new(config: RegistryConfig) -> Result<Self> {
        let cache = BlobCache::open(&config.cache_dir)?;
        Ok(Puller { config, cache })
    }

    /// The configuration.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// The blob cache.
    pub fn cache(&self) -> &BlobCache {
        &self.cache
    }

    /// [`Puller::pull`] on a private single-threaded runtime, for callers
    /// outside async code (the CLI, tests). Inside a tokio runtime, call
    /// `pull(..).await` instead (this returns an error there).
    pub fn pull_blocking(
        &self,
        reference: &ImageReference,
        progress: &(dyn Fn(&PullEvent<'_>) + Send + Sync),
    ) -> Result<PulledImage> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(OciError::Runtime(
                "pull_blocking called inside an async runtime: use pull().await".to_string(),
            ));
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| OciError::Runtime(format!("cannot start async runtime: {e}")))?;
        rt.block_on(self.pull(reference, progress))
    }

    /// Pulls `reference`: resolves the manifest (through an index to the
    /// configured platform), fetches the config and the layers into the
    /// cache (skipping cached ones), and returns what is needed to apply them.
    pub async fn pull(
        &self,
        reference: &ImageReference,
        progress: &(dyn Fn(&PullEvent<'_>) + Send + Sync),
    ) -> Result<PulledImage> {
        let ctx = PullContext::new(self, reference)?;
        tracing::info!(reference = %reference, "pulling image");

        // 1. The manifest the reference names.
        let (body, top_digest) = ctx.manifest(&ctx.client_ref).await?;
        if let Some(expected) = &reference.digest {
            if &top_digest != expected {
                return Err(OciError::DigestMismatch {
                    digest: expected.clone(),
                    reason: format!("registry returned a manifest hashing to {top_digest}"),
                });
            }
        }
        let top = parse_manifest(&body, reference)?;
        let (manifest, manifest_digest, media_type, index_digest) = if is_index(&top) {
            let entry = self.select_platform(&top, reference)?;
            tracing::info!(
                reference = %reference,
                index = %top_digest,
                manifest = %entry,
                platform = %self.config.platform,
                "resolved image index"
            );
            let platform_ref = ctx.client_ref.clone_with_digest(entry.clone());
            let (body, digest) = ctx.manifest(&platform_ref).await?;
            if digest != entry {
                return Err(OciError::DigestMismatch {
                    digest: entry,
                    reason: format!("registry returned a manifest hashing to {digest}"),
                });
            }
            let m = parse_manifest(&body, reference)?;
            if is_index(&m) {
                return Err(OciError::Manifest {
                    reference: reference.to_string(),
                    reason: format!("index entry {digest} is itself an index (nested indexes are not supported)"),
                });
            }
            let mt = manifest_media_type(&m);
            (m, digest, mt, Some(top_digest))
        } else {
            let mt = manifest_media_type(&top);
            (top, top_digest, mt, None)
        };

        // 2. Config and layer descriptors.
        let invalid = |reason: String| OciError::Manifest {
            reference: reference.to_string(),
            reason,
        };
        let config_desc = manifest
            .config
            .ok_or_else(|| invalid("image manifest has no config".to_string()))?;
        let layers = manifest.layers.unwrap_or_default();
        for d in std::iter::once(&config_desc).chain(layers.iter()) {
            validate_digest(&d.digest).map_err(&invalid)?;
            if d.size < 0 {
                return Err(invalid(format!("blob {} has a negative size", d.digest)));
            }
        }
        for l in &layers {
            if !is_layer_media_type(&l.media_type) {
                return Err(OciError::UnsupportedMediaType {
                    reference: reference.to_string(),
                    digest: l.digest.clone(),
                    media_type: l.media_type.clone(),
                });
            }
        }
        let config_size = u64::try_from(config_desc.size).unwrap_or(0);
        if config_size > MAX_CONFIG_SIZE {
            return Err(invalid(format!(
                "config blob of {config_size} bytes is larger than {MAX_CONFIG_SIZE}"
            )));
        }
        let total_bytes = layers
            .iter()
            .map(|l| u64::try_from(l.size).unwrap_or(0))
            .sum();
        progress(&PullEvent::Resolved {
            reference,
            manifest_digest: &manifest_digest,
            index_digest: index_digest.as_deref(),
            layers: layers.len(),
            total_bytes,
        });
        tracing::info!(reference = %reference, manifest = %manifest_digest, layers = layers.len(), "resolved manifest");

        // 3. The config blob.
        let mut report = PullReport::default();
        let (config_path, fetched) = ctx
            .blob(&config_desc.digest, config_size, BlobKind::Config, progress)
            .await?;
        if fetched {
            report.blobs_fetched += 1;
            report.bytes_fetched += config_size;
        } else {
            report.blobs_cached += 1;
        }
        let config_bytes = std::fs::read(&config_path)
            .map_err(OciError::io("cannot read cached config blob", &config_path))?;
        let config = ImageConfig::parse(&config_bytes, &config_desc.digest)?;
        let mut warnings = Vec::new();
        if let Some(arch) = &config.architecture {
            if !arch.is_empty() && arch != &self.config.platform.architecture {
                let w = format!(
                    "image {reference} is for architecture {arch}, not {}",
                    self.config.platform.architecture
                );
                tracing::warn!("{w}");
                warnings.push(w);
            }
        }

        // 4. The layers, a few at a time, results in order.
        let results: Vec<(LayerBlob, bool)> = futures_util::stream::iter(layers.iter())
            .map(|l| {
                let ctx = &ctx;
                async move {
                    let size = u64::try_from(l.size).unwrap_or(0);
                    let (path, fetched) =
                        ctx.blob(&l.digest, size, BlobKind::Layer, progress).await?;
                    Ok::<_, OciError>((
                        LayerBlob {
                            digest: l.digest.clone(),
                            media_type: l.media_type.clone(),
                            size,
                            path,
                        },
                        fetched,
                    ))
                }
            })
            .buffered(self.config.max_concurrent_downloads.max(1))
            .try_collect()
            .await?;
        let mut layer_blobs = Vec::with_capacity(results.len());
        for (blob, fetched) in results {
            if fetched {
                report.blobs_fetched += 1;
                report.layers_fetched += 1;
                report.bytes_fetched += blob.size;
            } else {
                report.blobs_cached += 1;
                report.layers_cached += 1;
            }
            layer_blobs.push(blob);
        }
        tracing::info!(
            reference = %reference,
            fetched = report.blobs_fetched,
            cached = report.blobs_cached,
            bytes = report.bytes_fetched,
            "pull complete"
        );

        Ok(PulledImage {
            reference: reference.clone(),
            manifest_digest,
            manifest_media_type: media_type,
            index_digest,
            config_digest: config_desc.digest,
            config,
            layers: layer_blobs,
            report,
            warnings,
        })
    }

    fn select_platform(&self, index: &RawManifest, reference: &ImageReference) -> Result<String> {
        let want = &self.config.platform;
        let entries = index.manifests.as_deref().unwrap_or_default();
        let found = entries.iter().find(|e| {
            e.platform.as_ref().is_some_and(|p| {
                p.os == want.os
                    && p.architecture == want.architecture
                    && want
                        .variant
                        .as_ref()
                        .is_none_or(|v| p.variant.as_deref() == Some(v.as_str()))
            })
        });
        match found {
            Some(e) => {
                validate_digest(&e.digest).map_err(|reason| OciError::Manifest {
                    reference: reference.to_string(),
                    reason,
                })?;
                Ok(e.digest.clone())
            }
            None => {
                let available: Vec<String> = entries
                    .iter()
                    .filter_map(|e| e.platform.as_ref())
                    .map(|p| match &p.variant {
                        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                        None => format!("{}/{}", p.os, p.architecture),
                    })
                    .collect();
                Err(OciError::NoMatchingPlatform {
                    reference: reference.to_string(),
                    platform: want.to_string(),
                    available: if available.is_empty() {
                        "no platform entries".to_string()
                    } else {
                        available.join(", ")
                    },
                })
            }
        }
    }
}

/// Per-pull state: the client for one registry, the auth, the reference.
struct PullContext<'a> {
    puller: &'a Puller,
    reference: &'a ImageReference,
    client: oci_client::Client,
    client_ref: oci_client::Reference,
    auth: RegistryAuth,
    has_credentials: bool,
}

impl<'a> PullContext<'a> {
    fn new(puller: &'a Puller, reference: &'a ImageReference) -> Result<Self> {
        let config = &puller.config;
        let protocol = if config.uses_plain_http(&reference.registry) {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        let client_config = ClientConfig {
            protocol,
            connect_timeout: Some(config.connect_timeout),
            read_timeout: Some(config.read_timeout),
            platform_resolver: None,
            max_concurrent_download: config.max_concurrent_downloads.max(1),
            user_agent: concat!("sifhub/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        let client =
            oci_client::Client::try_from(client_config).map_err(|e| OciError::Registry {
                reference: reference.to_string(),
                registry: reference.registry.clone(),
                detail: format!("cannot create http client: {}", error_chain(&e)),
            })?;
        let creds = config.credentials_for(&reference.registry);
        let auth = match creds {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        };
        Ok(PullContext {
            puller,
            reference,
            client,
            client_ref: reference.to_client_reference(),
            auth,
            has_credentials: creds.is_some(),
        })
    }

    /// Fetches a manifest; returns its bytes and their sha256 digest.
    async fn manifest(&self, r: &oci_client::Reference) -> Result<(Vec<u8>, String)> {
        let (body, _header_digest) = self
            .client
            .pull_manifest_raw(r, &self.auth, MANIFEST_ACCEPT)
            .await
            .map_err(|e| self.map_error(e))?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
        Ok((body.to_vec(), digest))
    }

    /// Makes sure blob `digest` is in the cache; returns its path and
    /// whether it was downloaded (false: served from the cache).
    async fn blob(
        &self,
        digest: &str,
        size: u64,
        kind: BlobKind,
        progress: &(dyn Fn(&PullEvent<'_>) + Send + Sync),
    ) -> Result<(PathBuf, bool)> {
        let cache = &self.puller.cache;
        let verify = self.puller.config.verify_cached_blobs;
        if let Some(path) = cache.lookup(digest, Some(size), verify)? {
            progress(&PullEvent::BlobStarted {
                digest,
                kind,
                size,
                cached: true,
            });
            progress(&PullEvent::BlobDone {
                digest,
                kind,
                size,
                cached: true,
            });
            tracing::info!(digest, size, "blob already in cache");
            return Ok((path, false));
        }
        progress(&PullEvent::BlobStarted {
            digest,
            kind,
            size,
            cached: false,
        });
        tracing::info!(digest, size, "fetching blob");
        let mut stream = self
            .client
            .pull_blob_stream(&self.client_ref, digest)
            .await
            .map_err(|e| self.map_error(e))?;
        let mut writer = cache.writer(digest, Some(size))?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                if let Some(inner) = e
                    .get_ref()
                    .and_then(|i| i.downcast_ref::<oci_client::errors::DigestError>())
                {
                    OciError::DigestMismatch {
                        digest: digest.to_string(),
                        reason: inner.to_string(),
                    }
                } else {
                    OciError::Registry {
                        reference: self.reference.to_string(),
                        registry: self.reference.registry.clone(),
                        detail: format!("while downloading blob {digest}: {}", error_chain(&e)),
                    }
                }
            })?;
            writer.write(&chunk)?;
            progress(&PullEvent::BlobProgress {
                digest,
                downloaded: writer.written(),
                size,
            });
        }
        let path = writer.commit()?;
        progress(&PullEvent::BlobDone {
            digest,
            kind,
            size,
            cached: false,
        });
        tracing::info!(digest, size, "blob fetched and verified");
        Ok((path, true))
    }

    fn map_error(&self, e: OciDistributionError) -> OciError {
        let registry = self.reference.registry.clone();
        let unauthorized = || OciError::Unauthorized {
            registry: registry.clone(),
            repository: self.reference.repository.clone(),
            hint: if self.has_credentials {
                format!("the credentials configured for {registry} were rejected")
            } else {
                format!(
                    "it requires credentials and none are configured for {registry} \
                     (set {REGISTRY_AUTH_ENV}={registry}=USER:PASSWORD or add them to the registry credentials in the config)"
                )
            },
        };
        let not_found = |detail: String| OciError::NotFound {
            reference: self.reference.to_string(),
            registry: registry.clone(),
            detail,
        };
        match &e {
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => unauthorized(),
            OciDistributionError::ServerError {
                code: 401 | 403, ..
            } => unauthorized(),
            OciDistributionError::ServerError {
                code: 404, message, ..
            } => not_found(format!("404 {}", message.trim())),
            OciDistributionError::RegistryError { envelope, .. } => {
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                let messages: Vec<String> =
                    envelope.errors.iter().map(|e| e.message.clone()).collect();
                if codes
                    .iter()
                    .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
                {
                    unauthorized()
                } else if codes.iter().any(|c| {
                    matches!(
                        c,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::NotFound
                            | OciErrorCode::BlobUnknown
                    )
                }) {
                    not_found(messages.join("; "))
                } else {
                    OciError::Registry {
                        reference: self.reference.to_string(),
                        registry,
                        detail: messages.join("; "),
                    }
                }
            }
            _ => OciError::Registry {
                reference: self.reference.to_string(),
                registry,
                detail: error_chain(&e),
            },
        }
    }
}

fn parse_manifest(body: &[u8], reference: &ImageReference) -> Result<RawManifest> {
    let m: RawManifest = serde_json::from_slice(body).map_err(|e| OciError::Manifest {
        reference: reference.to_string(),
        reason: format!("invalid json: {e}"),
    })?;
    let mt = m.media_type.as_deref().unwrap_or("");
    if m.schema_version == Some(1) || mt == DOCKER_SCHEMA1 || mt == DOCKER_SCHEMA1_SIGNED {
        return Err(OciError::Manifest {
            reference: reference.to_string(),
            reason: "docker image manifest v2 schema 1 is not supported (re-push the image with a current client)".to_string(),
        });
    }
    if !mt.is_empty() && !MANIFEST_ACCEPT.contains(&mt) {
        return Err(OciError::Manifest {
            reference: reference.to_string(),
            reason: format!("unsupported manifest media type {mt:?}"),
        });
    }
    Ok(m)
}

fn is_index(m: &RawManifest) -> bool {
    matches!(
        m.media_type.as_deref(),
        Some(OCI_INDEX) | Some(DOCKER_MANIFEST_LIST)
    ) || (m.media_type.is_none() && m.manifests.is_some() && m.layers.is_none())
}

fn manifest_media_type(m: &RawManifest) -> String {
    m.media_type
        .clone()
        .unwrap_or_else(|| OCI_MANIFEST.to_string())
}

/// Whether `media_type` is a layer we can apply (a tar, possibly compressed).
pub fn is_layer_media_type(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    )
}

/// An error and its sources, joined with ": ".
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        let t = src.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = src.source();
    }
    s
}

/// Whether a registry name is Docker Hub (for callers choosing defaults).
pub fn is_docker_hub(registry: &str) -> bool {
    normalize_registry(registry) == DOCKER_HUB
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_spec() {
        let m = parse_registry_auth("127.0.0.1:5000=alice:s3cret,docker.io=bob:pa:ss").unwrap();
        assert_eq!(m["127.0.0.1:5000"].username, "alice");
        assert_eq!(m["127.0.0.1:5000"].password, "s3cret");
        assert_eq!(m["docker.io"].password, "pa:ss");
        let m = parse_registry_auth("quay.io=u:a,b").unwrap();
        assert_eq!(m["quay.io"].password, "a,b");
        let m = parse_registry_auth("index.docker.io=u:p").unwrap();
        assert!(m.contains_key("docker.io"));
        for bad in ["nohost", "h=nouser", "h=:p", "a/b=u:p"] {
            let e = parse_registry_auth(bad).unwrap_err().to_string();
            assert!(e.starts_with("invalid registry credentials"), "{bad}: {e}");
            assert!(!e.contains("p\"") || bad == "h=:p" || bad == "nohost" || bad == "h=nouser");
        }
        let e = parse_registry_auth("h=u:topsecret,x").err();
        assert!(e.is_none());
        let e = parse_registry_auth("a/b=u:topsecret")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("topsecret"), "{e}");
        assert!(!format!(
            "{:?}",
            Credentials {
                username: "u".into(),
                password: "topsecret".into()
            }
        )
        .contains("topsecret"));
    }

    #[test]
    fn credentials_lookup_and_transport() {
        let mut c = RegistryConfig::new("/tmp/x");
        c.credentials = parse_registry_auth("localhost=a:b,docker.io=c:d").unwrap();
        assert_eq!(
            c.credentials_for("localhost:5000")
                .map(|c| c.username.as_str()),
            Some("a")
        );
        assert_eq!(
            c.credentials_for("index.docker.io")
                .map(|c| c.username.as_str()),
            Some("c")
        );
        assert!(c.credentials_for("quay.io").is_none());
        assert!(c.uses_plain_http("localhost:5000"));
        assert!(c.uses_plain_http("127.0.0.1:5000"));
        assert!(c.uses_plain_http("127.1.2.3"));
        assert!(c.uses_plain_http("[::1]:5000"));
        assert!(!c.uses_plain_http("quay.io"));
        assert!(!c.uses_plain_http("10.0.0.1:5000"));
        c.insecure_registries = vec!["registry.lan".to_string(), "other:5000".to_string()];
        assert!(c.uses_plain_http("registry.lan:8080"));
        assert!(c.uses_plain_http("other:5000"));
        assert!(!c.uses_plain_http("other:5001"));
    }

    #[test]
    fn layer_media_types() {
        assert!(is_layer_media_type(
            "application/vnd.oci.image.layer.v1.tar+gzip"
        ));
        assert!(is_layer_media_type(
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        ));
        assert!(!is_layer_media_type(
            "application/vnd.sylabs.sif.layer.v1.sif"
        ));
    }
}
