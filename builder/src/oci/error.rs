//! The error type of the OCI pull and layer application.

use std::path::PathBuf;

/// Everything that can go wrong pulling an image or applying its layers.
///
/// Messages are lowercase and name what was being worked on (the reference,
/// the registry, the layer digest, the tar entry), so they can be shown to a
/// user as they are.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// An image reference (`From:` line) that cannot be parsed.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },

    /// `SIFHUB_REGISTRY_AUTH` (or the config's equivalent) is malformed.
    #[error("invalid registry credentials {entry:?}: {reason} (expected HOST=USER:PASSWORD[,HOST2=USER2:PASSWORD2])")]
    InvalidCredentials { entry: String, reason: String },

    /// The registry refused us (401/403).
    #[error("registry {registry} refused access to {repository}: {hint}")]
    Unauthorized {
        registry: String,
        repository: String,
        hint: String,
    },

    /// The tag or digest does not exist.
    #[error("image {reference} not found in registry {registry}: {detail}")]
    NotFound {
        reference: String,
        registry: String,
        detail: String,
    },

    /// Any other failure talking to the registry (connection, TLS, 5xx, …).
    #[error("while pulling {reference} from registry {registry}: {detail}")]
    Registry {
        reference: String,
        registry: String,
        detail: String,
    },

    /// A manifest or index the builder cannot use.
    #[error("manifest of {reference}: {reason}")]
    Manifest { reference: String, reason: String },

    /// An image index without an entry for the build platform.
    #[error("image index of {reference} has no entry for {platform} (it has: {available})")]
    NoMatchingPlatform {
        reference: String,
        platform: String,
        available: String,
    },

    /// A layer media type that is not a (compressed) tar.
    #[error("layer {digest} of {reference} has unsupported media type {media_type:?}")]
    UnsupportedMediaType {
        reference: String,
        digest: String,
        media_type: String,
    },

    /// A digest string that is not `sha256:<64 hex>`.
    #[error("unsupported or malformed digest {digest:?}: {reason}")]
    InvalidDigest { digest: String, reason: String },

    /// Downloaded (or cached) content that does not match its digest or size.
    #[error("blob {digest}: {reason}")]
    DigestMismatch { digest: String, reason: String },

    /// The image configuration blob is not valid JSON of the expected shape.
    #[error("image config {digest}: {reason}")]
    Config { digest: String, reason: String },

    /// A file-system failure in the layer cache.
    #[error("layer cache {}: {context}: {source}", path.display())]
    Cache {
        path: PathBuf,
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// A tar entry whose path (or hard-link target) would leave the root.
    #[error("layer {layer}: entry {entry:?} escapes the root folder: {reason}")]
    EntryEscapes {
        layer: String,
        entry: String,
        reason: String,
    },

    /// A tar entry that cannot be applied.
    #[error("layer {layer}: entry {entry:?}: {reason}")]
    Entry {
        layer: String,
        entry: String,
        reason: String,
    },

    /// The layer stream itself is unreadable (truncated tar, bad gzip, …).
    #[error("layer {layer}: {context}: {source}")]
    LayerRead {
        layer: String,
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// A file-system failure outside a particular tar entry.
    #[error("{context} {}: {source}", path.display())]
    Io {
        context: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A failure of the async runtime used by the blocking wrappers.
    #[error("{0}")]
    Runtime(String),
}

/// Shorthand for results of this module.
pub type Result<T> = std::result::Result<T, OciError>;

impl OciError {
    pub(crate) fn io(
        context: impl Into<String>,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> OciError {
        let context = context.into();
        let path = path.into();
        move |source| OciError::Io {
            context,
            path,
            source,
        }
    }
}
