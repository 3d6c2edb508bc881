//! Why a build failed. Every message is lowercase, says which step failed
//! and names what it was working on: the recipe line, the path, the image
//! reference or the section.

use std::path::PathBuf;

use crate::assemble::AssembleError;
use crate::oci::OciError;
use crate::sandbox::{SandboxError, Termination};
use crate::sif::SifError;
use crate::squashfs::SquashfsError;

/// Everything that can stop a build.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The recipe file cannot be read.
    #[error("cannot read definition file {}: {source}", path.display())]
    ReadRecipe {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The recipe is one apptainer would refuse to build.
    #[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Recipe {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },

    /// A bootstrap agent this builder does not implement (yet).
    #[error("line {line}: bootstrap agent {agent:?} is not supported yet (supported: docker, oci, localimage, scratch, busybox)")]
    UnsupportedAgent { agent: String, line: usize },

    /// A header the agent needs is missing or unusable.
    #[error("line {line}: {message}")]
    Header { line: usize, message: String },

    /// Pulling the base image failed.
    #[error("cannot pull {reference}: {source}")]
    Pull {
        reference: String,
        #[source]
        source: OciError,
    },

    /// Unpacking the base image into the build root failed.
    #[error("cannot unpack {reference} into the build root: {source}")]
    Unpack {
        reference: String,
        #[source]
        source: OciError,
    },

    /// A local image (`Bootstrap: localimage`) cannot be used.
    #[error("line {line}: local image {path:?}: {reason}")]
    LocalImage {
        line: usize,
        path: String,
        reason: String,
    },

    /// The busybox agent could not fetch or install busybox.
    #[error("line {line}: busybox from {url}: {reason}")]
    Busybox {
        line: usize,
        url: String,
        reason: String,
    },

    /// A `%files` source outside the build context (the recipe's folder).
    #[error("line {line}: %files source {source_path:?} {reason}; sifhub only copies files from the recipe's folder {}, so a recipe cannot read the build host's files (apptainer would copy host paths)", context.display())]
    FilesOutsideContext {
        line: usize,
        source_path: String,
        reason: String,
        context: PathBuf,
    },

    /// Any other `%files` failure.
    #[error("line {line}: %files {entry:?}: {reason}")]
    Files {
        line: usize,
        entry: String,
        reason: String,
    },

    /// `%files from X` names no earlier stage.
    #[error("line {line}: %files from {stage:?}: no earlier stage is named {stage:?}")]
    StageNotFound { line: usize, stage: String },

    /// A section's arguments cannot be turned into a command.
    #[error("line {line}: %{section} {args:?}: {reason}")]
    SectionArgs {
        line: usize,
        section: String,
        args: String,
        reason: String,
    },

    /// The sandbox could not run a step.
    #[error("{step}: the sandbox could not run it: {source}")]
    Sandbox {
        step: String,
        #[source]
        source: SandboxError,
    },

    /// A recipe section (`%setup`, `%post`, `%test`, app install) failed.
    #[error("line {line}: %{section} failed: {termination}")]
    SectionFailed {
        section: String,
        line: usize,
        termination: Termination,
    },

    /// Writing the `.singularity.d` layout or metadata failed.
    #[error("cannot assemble the image metadata: {0}")]
    Assemble(#[from] AssembleError),

    /// mksquashfs failed.
    #[error("cannot make the squashfs partition: {0}")]
    Squash(#[from] SquashfsError),

    /// Writing (or reading) a SIF image failed.
    #[error("sif: {0}")]
    Sif(#[from] SifError),

    /// A file-system operation of the builder itself failed.
    #[error("{context} {}: {source}", path.display())]
    Io {
        context: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An option that cannot be used.
    #[error("{0}")]
    Options(String),

    /// [`super::BuildOptions::cancel`] was set.
    #[error("the build was cancelled")]
    Cancelled,
}

impl BuildError {
    /// A closure making [`BuildError::Io`] for `path`.
    pub(crate) fn io(
        context: impl Into<String>,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> BuildError {
        let context = context.into();
        let path = path.into();
        move |source| BuildError::Io {
            context,
            path,
            source,
        }
    }
}
