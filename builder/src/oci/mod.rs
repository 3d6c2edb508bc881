//! Pulling images over the OCI distribution API and applying their layers.
//!
//! The `Bootstrap: docker` (and registry `oci`) agent in four steps:
//!
//! ```no_run
//! use sifhub_builder::oci::{ApplyOptions, ImageReference, Puller, RegistryConfig, no_progress};
//! # fn main() -> Result<(), sifhub_builder::oci::OciError> {
//! // From/Registry/Namespace headers of the recipe → a reference.
//! let reference = ImageReference::from_recipe("ubuntu:22.04", None, None)?;
//! // Pull (manifest → platform → config + layers into the digest cache).
//! let puller = Puller::new(RegistryConfig::new("/var/cache/sifhub/oci").with_env_credentials()?)?;
//! let image = puller.pull_blocking(&reference, &no_progress)?;
//! println!("base image digest: {}", image.base_digest());
//! // Apply the layers into the build's root folder.
//! let report = image.apply_to(std::path::Path::new("/tmp/rootfs"), ApplyOptions::default())?;
//! // What apptainer derives from the image config (env, runscript, labels).
//! image.apptainer_files().write_into(std::path::Path::new("/tmp/rootfs"))?;
//! # let _ = report; Ok(()) }
//! ```
//!
//! - [`reference`]: `From:` parsing with Docker Hub defaults.
//! - [`registry`]: the pull client (auth, transports, manifests, indexes).
//! - [`cache`]: verified blobs on disk by digest.
//! - [`layer`]: layer application (whiteouts, links, ownership, confinement).
//! - [`config`]: image config → `.singularity.d` env, runscript, labels.
//! - [`inroot`]: path resolution confined to a root folder.

pub mod cache;
pub mod config;
pub mod error;
pub mod inroot;
pub mod layer;
pub mod reference;
pub mod registry;

pub use cache::BlobCache;
pub use config::{ApptainerFiles, ImageConfig};
pub use error::{OciError, Result};
pub use layer::{
    apply_layers, ApplyOptions, ApplyReport, LayerApplier, LayerStats, Owner, Ownership,
};
pub use reference::{ImageReference, DOCKER_HUB};
pub use registry::{
    no_progress, parse_registry_auth, BlobKind, Credentials, LayerBlob, Platform, PullEvent,
    PullReport, PulledImage, Puller, RegistryConfig, REGISTRY_AUTH_ENV,
};
