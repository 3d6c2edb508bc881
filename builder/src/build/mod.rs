//! Building a SIF image from a recipe, the way `apptainer build` does, with
//! every user command in the sandbox.
//!
//! ```no_run
//! use sifhub_builder::build::{BuildOptions, Builder};
//! let options = BuildOptions::new("Singularity", "image.sif");
//! let report = Builder::new(options).build(&mut |event| {
//!     if let Some(line) = event.log_text() {
//!         eprintln!("{line}");
//!     }
//! })?;
//! println!("{}  {}", report.sha256, report.output.display());
//! # Ok::<(), sifhub_builder::build::BuildError>(())
//! ```
//!
//! Each stage, in apptainer's order (`internal/pkg/build/build.go`):
//! 1. bootstrap into a fresh root folder ([`bootstrap`]: docker, oci,
//!    localimage, scratch, busybox);
//! 2. the base `.singularity.d` layout, then the files derived from an OCI
//!    image config; SCIF apps' folders and files ([`apps`]);
//! 3. `%files from <stage>`; `%setup` (sandboxed, host tools read-only);
//!    `%files` from the build context ([`files`]);
//! 4. `%post` in the sandbox: the script is written to `/.post.script` and
//!    run as `/bin/sh -ex /.post.script` (or as `%post -c …` says) through
//!    the image's `exec` action, so the base image's environment applies;
//! 5. the metadata (help, labels, definition, environment, run/start/test
//!    scripts) and the inspect JSON;
//! 6. `%test` on the read-only root (skipped with `run_tests: false`).
//!
//! The last stage becomes the image ([`image`]): a squashfs of its root, and
//! a SIF holding the definition, the JSON objects (`inspect-metadata.json`,
//! `oci-config.json`, `sifhub-provenance.json`, sorted by name as apptainer
//! sorts its JSON objects) and the squashfs as the primary system partition.
//! With [`BuildOptions::timestamp`] every time in the image is that time and
//! the SIF id is derived from the content, so the same inputs give the same
//! bytes.
//!
//! Progress and logs go to the caller as [`BuildEvent`]s and, with
//! timestamps, to [`BuildOptions::log_file`].

mod apps;
mod bootstrap;
mod error;
mod files;
mod image;
mod log;
mod stage;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use bootstrap::BaseRecord;
pub use error::BuildError;
pub use image::{
    go_json_compact, Provenance, StageRecord, INSPECT_METADATA_JSON, OCI_CONFIG_JSON,
    PROVENANCE_JSON, PROVENANCE_SCHEMA,
};
pub use log::{BuildEvent, LineSource};

use crate::deffile::{self, BuildArgs};
use crate::oci::Puller;
use crate::sandbox::{
    format_bytes, format_duration, Limits, LogLine, NetworkMode, RunSpec, Sandbox, SandboxConfig,
};
use crate::sif::Uuid;
use crate::squashfs::Compression;

use log::BuildLog;

/// How to build one image.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The definition file.
    pub recipe: PathBuf,
    /// How the provenance names the recipe (e.g. its path in the repository);
    /// default: its path relative to the build context.
    pub recipe_name: Option<String>,
    /// The build context: `%files` sources, `%setup`'s working folder,
    /// local images. Default: the recipe's folder.
    pub context: Option<PathBuf>,
    /// Where the SIF goes (written atomically).
    pub output: PathBuf,
    /// `--build-arg` values for `{{ name }}`.
    pub build_args: BuildArgs,
    /// Folder for the build's temporary roots (default: the system's temp folder).
    pub work_dir: Option<PathBuf>,
    /// Keep the temporary roots after the build (for debugging).
    pub keep_work_dir: bool,
    /// The OCI blob cache.
    pub cache_dir: PathBuf,
    /// Every time in the image (labels, squashfs, SIF), Unix seconds; default now.
    /// Set it (e.g. to the commit time) for a reproducible image.
    pub timestamp: Option<i64>,
    /// Compression of the squashfs partition.
    pub compression: Compression,
    /// Network of `%setup`, `%post` and `%test`.
    pub network: NetworkMode,
    /// Registries spoken to over plain HTTP (`host` or `host:port`).
    pub insecure_registries: Vec<String>,
    /// Limits of every sandboxed command (the disk limit also bounds `%files`).
    pub limits: Limits,
    /// Run `%test` (apptainer's `--notest` turns it off).
    pub run_tests: bool,
    /// The source commit, recorded in the provenance.
    pub commit: Option<String>,
    /// Where the full build log goes.
    pub log_file: Option<PathBuf>,
    /// Folders besides the build context from which `Bootstrap: localimage`
    /// may take an image.
    pub local_image_dirs: Vec<PathBuf>,
    /// Set to stop the build at its next step ([`BuildError::Cancelled`]).
    /// A command already running in the sandbox runs on until it ends or
    /// its process is killed.
    pub cancel: Option<Arc<AtomicBool>>,
}

impl BuildOptions {
    /// Defaults: context = the recipe's folder, cache in `~/.cache/sifhub/oci`,
    /// gzip, slirp network, the sandbox's default limits, tests on.
    pub fn new(recipe: impl Into<PathBuf>, output: impl Into<PathBuf>) -> Self {
        BuildOptions {
            recipe: recipe.into(),
            recipe_name: None,
            context: None,
            output: output.into(),
            build_args: BuildArgs::new(),
            work_dir: None,
            keep_work_dir: false,
            cache_dir: default_cache_dir(),
            timestamp: None,
            compression: Compression::Gzip,
            network: NetworkMode::Slirp,
            insecure_registries: Vec::new(),
            limits: Limits::default(),
            run_tests: true,
            commit: None,
            log_file: None,
            local_image_dirs: Vec::new(),
            cancel: None,
        }
    }
}

/// `~/.cache/sifhub/oci` (`$XDG_CACHE_HOME/sifhub/oci` when set).
pub fn default_cache_dir() -> PathBuf {
    cache_home().join("sifhub").join("oci")
}

/// `$XDG_CACHE_HOME`, else `~/.cache`.
pub(crate) fn cache_home() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache")
}

/// What a finished build made.
#[derive(Debug, Clone)]
pub struct BuildReport {
    /// The SIF written.
    pub output: PathBuf,
    /// Its sha256, lowercase hex.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// The SIF's id (derived from the content).
    pub sif_id: Uuid,
    /// The provenance record stored in the image.
    pub provenance: Provenance,
    /// Warnings of the recipe and the build.
    pub warnings: Vec<String>,
    /// How long the build took.
    pub duration: Duration,
    /// The kept work folder (with `keep_work_dir`).
    pub work_dir: Option<PathBuf>,
}

/// Builds images. Needs root (the sandbox maps ids and makes cgroups).
#[derive(Debug, Clone)]
pub struct Builder {
    options: BuildOptions,
}

impl Builder {
    pub fn new(options: BuildOptions) -> Self {
        Builder { options }
    }

    pub fn options(&self) -> &BuildOptions {
        &self.options
    }

    /// Runs the build, reporting every step to `events` (and the log file).
    /// A failed build's last event is [`BuildEvent::Failed`]. It blocks for
    /// the whole build: from async code, call it in `spawn_blocking` (the
    /// pulls and downloads run on threads of their own, so that works).
    pub fn build(&self, events: &mut dyn FnMut(&BuildEvent)) -> Result<BuildReport, BuildError> {
        let mut log = BuildLog::new(self.options.log_file.as_deref(), events)?;
        log.set_cancel(self.options.cancel.clone());
        let result = run(&self.options, &mut log);
        if let Err(error) = &result {
            // Every message already carries its cause.
            log.emit(BuildEvent::Failed(error.to_string()));
        }
        log.flush();
        result
    }
}

/// The state of one build in progress.
pub(crate) struct Build<'a, 'l> {
    pub options: &'a BuildOptions,
    /// The canonical build context.
    pub context: PathBuf,
    /// The canonical work folder.
    pub work: PathBuf,
    pub sandbox: Sandbox,
    pub log: &'a mut BuildLog<'l>,
    /// The build's time, Unix seconds.
    pub timestamp: i64,
    /// Bytes copied by `%files` so far (bounded by the disk limit).
    pub copied_bytes: u64,
    puller: Option<Puller>,
}

fn run(options: &BuildOptions, log: &mut BuildLog<'_>) -> Result<BuildReport, BuildError> {
    let started = Instant::now();
    let bytes = std::fs::read(&options.recipe).map_err(|source| BuildError::ReadRecipe {
        path: options.recipe.clone(),
        source,
    })?;
    log.info(format!(
        "sifhub {} building {}",
        env!("CARGO_PKG_VERSION"),
        options.recipe.display()
    ));
    let recipe = deffile::parse(&bytes, &options.build_args).map_err(|e| BuildError::Recipe {
        path: options.recipe.clone(),
        line: e.line(),
        message: e.detail(),
    })?;
    for warning in &recipe.warnings {
        log.warn(format!("{}: {warning}", options.recipe.display()));
    }
    let context_input = match &options.context {
        Some(dir) => dir.clone(),
        None => match options.recipe.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        },
    };
    let context = std::fs::canonicalize(&context_input).map_err(BuildError::io(
        "cannot open the build context",
        &context_input,
    ))?;
    let timestamp = match options.timestamp {
        Some(t) => t,
        None => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0),
    };
    let work_base = options.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&work_base)
        .map_err(BuildError::io("cannot create the work folder", &work_base))?;
    let work_dir = tempfile::Builder::new()
        .prefix("sifhub-build-")
        .tempdir_in(&work_base)
        .map_err(BuildError::io(
            "cannot create a build folder in",
            &work_base,
        ))?;
    let work = std::fs::canonicalize(work_dir.path()).map_err(BuildError::io(
        "cannot open the build folder",
        work_dir.path(),
    ))?;
    let outcome = build_in(options, log, &recipe, &bytes, context, timestamp, &work);
    // A kept work folder is for looking at, failed builds most of all.
    let kept = if options.keep_work_dir {
        let path = work_dir.keep();
        log.info(format!("work folder kept at {}", path.display()));
        Some(path)
    } else {
        let closed = work_dir.close();
        if outcome.is_ok() {
            closed.map_err(BuildError::io("cannot remove the work folder", &work))?;
        }
        None
    };
    let written = outcome?;
    let warnings = log.warnings().to_vec();
    let duration = started.elapsed();
    log.info(format!(
        "built {} in {}: sha256:{} ({})",
        options.output.display(),
        format_duration(Duration::from_secs(duration.as_secs().max(1))),
        written.sha256,
        format_bytes(written.size)
    ));
    Ok(BuildReport {
        output: options.output.clone(),
        sha256: written.sha256,
        size: written.size,
        sif_id: written.sif_id,
        provenance: written.provenance,
        warnings,
        duration,
        work_dir: kept,
    })
}

/// The stages and the image, in the work folder `work`.
fn build_in(
    options: &BuildOptions,
    log: &mut BuildLog<'_>,
    recipe: &deffile::Recipe,
    bytes: &[u8],
    context: PathBuf,
    timestamp: i64,
    work: &Path,
) -> Result<image::Written, BuildError> {
    // The sandbox's run folders stay in the system temp folder: their
    // parents must be traversable by the unprivileged ids, which our 0700
    // work folder is not.
    let sandbox = Sandbox::new(SandboxConfig {
        limits: options.limits.clone(),
        network: options.network,
        disk_check_interval: Duration::from_millis(500),
        ..SandboxConfig::default()
    })
    .map_err(|source| BuildError::Sandbox {
        step: "starting the sandbox".into(),
        source,
    })?;
    let limits = &options.limits;
    log.info(format!(
        "limits of every command: time {}, memory {}, processes {}, disk {}; network {}",
        format_duration(limits.time),
        format_bytes(limits.memory),
        limits.processes,
        format_bytes(limits.disk),
        describe_network(options.network)
    ));
    log.info(format!(
        "build context {}, image time {} ({})",
        context.display(),
        crate::sif::format_unix_time(timestamp),
        if options.timestamp.is_some() {
            "given"
        } else {
            "now"
        }
    ));
    log.set_total(stage::count_steps(recipe, options.run_tests) + image::STEPS);
    let mut build = Build {
        options,
        context,
        work: work.to_path_buf(),
        sandbox,
        log,
        timestamp,
        copied_bytes: 0,
        puller: None,
    };
    let mut stages = Vec::new();
    for index in 0..recipe.stages.len() {
        let done = stage::build_stage(&mut build, recipe, index, &stages)?;
        stages.push(done);
    }
    let recipe_sha256 = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(bytes))
    };
    image::write_image(&mut build, recipe, &stages, &recipe_sha256)
}

fn describe_network(mode: NetworkMode) -> &'static str {
    match mode {
        NetworkMode::Slirp => "slirp (outbound only, no host loopback)",
        NetworkMode::None => "none (loopback only)",
        NetworkMode::Host => "host (the host's own network, loopback services included)",
    }
}

impl Build<'_, '_> {
    /// The puller, made on first use.
    pub(crate) fn puller(&mut self) -> Result<Puller, BuildError> {
        if let Some(p) = &self.puller {
            return Ok(p.clone());
        }
        let config =
            bootstrap::registry_config(&self.options.cache_dir, &self.options.insecure_registries)?;
        let puller = Puller::new(config).map_err(|e| {
            BuildError::Options(format!(
                "cannot open the image cache {}: {e}",
                self.options.cache_dir.display()
            ))
        })?;
        self.puller = Some(puller.clone());
        Ok(puller)
    }

    /// A local image path from the recipe: relative to the build context,
    /// and inside it (or inside one of the allowed folders).
    pub(crate) fn local_path(&self, text: &str) -> Result<PathBuf, String> {
        let given = Path::new(text.trim());
        let joined = if given.is_absolute() {
            given.to_path_buf()
        } else {
            self.context.join(given)
        };
        let real = std::fs::canonicalize(&joined).map_err(|e| format!("cannot open it: {e}"))?;
        let allowed = std::iter::once(self.context.clone()).chain(
            self.options
                .local_image_dirs
                .iter()
                .filter_map(|d| std::fs::canonicalize(d).ok()),
        );
        for dir in allowed {
            if real.starts_with(&dir) {
                return Ok(real);
            }
        }
        Err(format!(
            "{} is outside the recipe's folder {}; sifhub only reads local images from there (or from folders allowed with --allow-local-image)",
            real.display(),
            self.context.display()
        ))
    }

    /// A path as the provenance records it: relative to the context when inside it.
    pub(crate) fn context_relative(&self, path: &Path) -> String {
        path.strip_prefix(&self.context)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| path.display().to_string())
    }

    /// Runs `spec` in the sandbox with its output in the log; a failure is
    /// `%{section}` (line `line`) failing.
    pub(crate) fn run_checked(
        &mut self,
        spec: &RunSpec,
        what: &str,
        section: &str,
        line: usize,
    ) -> Result<(), BuildError> {
        let log = &mut *self.log;
        let outcome = self
            .sandbox
            .run(spec, &mut |l: LogLine| log.command(l))
            .map_err(|source| BuildError::Sandbox {
                step: what.to_owned(),
                source,
            })?;
        self.log.info(format!(
            "{what}: {} after {}",
            outcome.termination,
            format_duration(outcome.duration)
        ));
        if outcome.success() {
            Ok(())
        } else {
            Err(BuildError::SectionFailed {
                section: section.to_owned(),
                line,
                termination: outcome.termination,
            })
        }
    }
}

/// `--build-arg`s as a map, for the provenance.
pub(crate) fn build_args_map(args: &BuildArgs) -> BTreeMap<String, String> {
    args.names()
        .map(|n| (n.to_owned(), args.get(n).unwrap_or_default().to_owned()))
        .collect()
}
