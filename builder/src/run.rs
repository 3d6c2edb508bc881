//! Running an image the way `apptainer run` and `apptainer exec` do, inside
//! the sandbox.
//!
//! The SIF's primary squashfs partition is extracted once (with
//! `unsquashfs`, itself sandboxed: the image is untrusted input) into a cache
//! folder keyed by the image's sha256, and reused. A run pivots into that
//! folder read-only and executes `/.singularity.d/actions/run` (or `exec`,
//! `test`) with the arguments, so the image's environment scripts are
//! sourced exactly as apptainer's action scripts source them. As apptainer
//! does, the caller's home and working folder are bound at the same paths
//! (writable), the host's environment is passed in (with `PATH` reset and
//! `APPTAINERENV_X`/`SINGULARITYENV_X` becoming `X`), and the network is the
//! host's unless told otherwise.
//!
//! The sandbox gives the command no terminal and no standard input; its
//! standard output and error arrive merged, line by line.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::sandbox::{
    Bind, Limits, LogLine, LogSource, NetworkMode, RootFs, RunOutcome, RunSpec, Sandbox,
    SandboxConfig, SandboxError, Termination, DEFAULT_PATH,
};
use crate::sif::{FsType, SifError, SifFile};

/// Why an image could not be run (a command that fails is not an error:
/// see [`RunOutcome`]).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Sif(#[from] SifError),
    #[error("{}: the image has no primary system partition", path.display())]
    NoPartition { path: PathBuf },
    #[error("{}: the primary partition is {fs_type}, not squashfs", path.display())]
    NotSquashfs { path: PathBuf, fs_type: String },
    #[error("the sandbox could not {step}: {source}")]
    Sandbox {
        step: String,
        #[source]
        source: SandboxError,
    },
    #[error("unsquashfs of {} failed ({termination}): {output}", path.display())]
    Unsquash {
        path: PathBuf,
        termination: Termination,
        output: String,
    },
    #[error("{context} {}: {source}", path.display())]
    Io {
        context: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_error(context: &str, path: &Path) -> impl FnOnce(std::io::Error) -> RunError {
    let context = context.to_owned();
    let path = path.to_path_buf();
    move |source| RunError::Io {
        context,
        path,
        source,
    }
}

/// Which action script runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `/.singularity.d/actions/run`: the runscript with the arguments.
    Run,
    /// `/.singularity.d/actions/exec`: the arguments as a command.
    Exec,
    /// `/.singularity.d/actions/test`: the image's test.
    Test,
}

impl Action {
    fn script(self) -> &'static str {
        match self {
            Action::Run => "/.singularity.d/actions/run",
            Action::Exec => "/.singularity.d/actions/exec",
            Action::Test => "/.singularity.d/actions/test",
        }
    }
}

/// How to run an image.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub image: PathBuf,
    pub action: Action,
    /// Arguments of the action (for `Exec`, the command and its arguments).
    pub args: Vec<String>,
    /// Where extracted images are kept.
    pub cache_dir: PathBuf,
    pub network: NetworkMode,
    pub limits: Limits,
    /// Bind the caller's home folder (`$HOME`) at the same path.
    pub bind_home: bool,
    /// Bind the working folder at the same path and start there.
    pub bind_cwd: bool,
    /// More binds.
    pub binds: Vec<Bind>,
    /// Pass none of the host's environment.
    pub clean_env: bool,
    /// Variables to set (after the host's).
    pub env: Vec<(String, String)>,
    /// A SCIF app to run (`SINGULARITY_APPNAME`).
    pub app: Option<String>,
}

impl RunOptions {
    /// `apptainer run IMAGE ARGS…` defaults: host network, home and working
    /// folder bound, the host's environment, limits that only stop runaways.
    pub fn new(image: impl Into<PathBuf>, action: Action, args: Vec<String>) -> Self {
        RunOptions {
            image: image.into(),
            action,
            args,
            cache_dir: default_image_cache(),
            network: NetworkMode::Host,
            limits: run_limits(),
            bind_home: true,
            bind_cwd: true,
            binds: Vec::new(),
            clean_env: false,
            env: Vec::new(),
            app: None,
        }
    }
}

/// `~/.cache/sifhub/images`.
pub fn default_image_cache() -> PathBuf {
    crate::build::cache_home().join("sifhub").join("images")
}

/// Limits for running an image: a long time, the machine's memory, many
/// processes, no practical disk bound.
pub fn run_limits() -> Limits {
    Limits {
        time: Duration::from_secs(30 * 24 * 3600),
        memory: host_memory().unwrap_or(16 << 30),
        processes: 32_768,
        disk: 1 << 50,
    }
}

fn host_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Runs the image; `output` gets each line the command prints.
pub fn run_image(
    options: &RunOptions,
    output: &mut dyn FnMut(LogLine),
) -> Result<RunOutcome, RunError> {
    let image = std::fs::canonicalize(&options.image)
        .map_err(io_error("cannot open the image", &options.image))?;
    std::fs::create_dir_all(&options.cache_dir).map_err(io_error(
        "cannot create the image cache",
        &options.cache_dir,
    ))?;
    let cache = std::fs::canonicalize(&options.cache_dir)
        .map_err(io_error("cannot open the image cache", &options.cache_dir))?;
    // Run folders go to the system temp folder (the default): their parents
    // must be traversable by the unprivileged ids, which ~/.cache may not be.
    let sandbox = Sandbox::new(SandboxConfig {
        limits: options.limits.clone(),
        network: options.network,
        // Home and working folder are writable binds: measure them rarely.
        disk_check_interval: Duration::from_secs(60),
        ..SandboxConfig::default()
    })
    .map_err(|source| RunError::Sandbox {
        step: "start".into(),
        source,
    })?;
    // Extraction notes are not the command's output.
    let rootfs = prepare_rootfs(&sandbox, &image, &cache, &mut |line: LogLine| {
        output(LogLine {
            source: LogSource::Sandbox,
            text: line.text,
        })
    })?;
    let mut command = vec![options.action.script().to_owned()];
    command.extend(options.args.iter().cloned());
    let mut spec = RunSpec::in_folder(&rootfs, command)
        .read_only_root()
        .network(options.network)
        .limits(options.limits.clone());
    if let Ok(name) = nix::unistd::gethostname() {
        if let Some(name) = name.to_str() {
            spec = spec.hostname(name);
        }
    }
    spec.env = environment(options, &image);
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let mut cwd = PathBuf::from("/");
    if options.bind_home {
        if let Some(home) = home.as_ref().and_then(|h| std::fs::canonicalize(h).ok()) {
            if home != Path::new("/") {
                spec = spec.bind(Bind::read_write(&home, &home));
                cwd = home.clone();
                spec = spec.env("HOME", home.display().to_string());
            }
        }
    }
    if options.bind_cwd {
        if let Ok(here) = std::env::current_dir().and_then(std::fs::canonicalize) {
            let home = home.as_ref().and_then(|h| std::fs::canonicalize(h).ok());
            let in_home = options.bind_home
                && home
                    .as_ref()
                    .is_some_and(|h| here.starts_with(h) && h != Path::new("/"));
            let shadows_image = crate::oci::inroot::resolve(&rootfs, &here)
                .is_ok_and(|rel| rootfs.join(rel).exists());
            if in_home {
                cwd = here;
            } else if here != Path::new("/") && !shadows_image {
                spec = spec.bind(Bind::read_write(&here, &here));
                cwd = here;
            }
        }
    }
    // As apptainer: the host's name resolution files.
    if Path::new("/etc/hosts").is_file() {
        spec = spec.bind(Bind::read_only("/etc/hosts", "/etc/hosts"));
    }
    for bind in &options.binds {
        spec = spec.bind(bind.clone());
    }
    spec = spec.cwd(cwd);
    sandbox
        .run(&spec, output)
        .map_err(|source| RunError::Sandbox {
            step: format!("run {}", image.display()),
            source,
        })
}

/// The command's environment: the host's (unless `clean_env`), with `PATH`
/// reset, `APPTAINERENV_`/`SINGULARITYENV_` prefixes applied, and the
/// variables apptainer sets for the container.
fn environment(options: &RunOptions, image: &Path) -> Vec<(String, String)> {
    const DROPPED: &[&str] = &[
        "PATH",
        "LD_LIBRARY_PATH",
        "LD_PRELOAD",
        "PS1",
        "PWD",
        "OLDPWD",
        "SHLVL",
        "_",
    ];
    let mut env: Vec<(String, String)> = Vec::new();
    let mut prefixed: Vec<(String, String)> = Vec::new();
    if !options.clean_env {
        for (key, value) in std::env::vars_os() {
            let (Some(key), Some(value)) = (key.to_str(), value.to_str()) else {
                continue;
            };
            if let Some(name) = key
                .strip_prefix("APPTAINERENV_")
                .or_else(|| key.strip_prefix("SINGULARITYENV_"))
            {
                prefixed.push((name.to_owned(), value.to_owned()));
            } else if !DROPPED.contains(&key)
                && !key.starts_with("APPTAINER_")
                && !key.starts_with("SINGULARITY_")
            {
                env.push((key.to_owned(), value.to_owned()));
            }
        }
    }
    env.push(("PATH".into(), DEFAULT_PATH.into()));
    if !env.iter().any(|(k, _)| k == "HOME") {
        env.push(("HOME".into(), "/root".into()));
    }
    let name = image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for (k, v) in [
        ("APPTAINER_CONTAINER", image.display().to_string()),
        ("SINGULARITY_CONTAINER", image.display().to_string()),
        ("APPTAINER_NAME", name.clone()),
        ("SINGULARITY_NAME", name),
    ] {
        env.push((k.into(), v));
    }
    if let Some(app) = &options.app {
        env.push(("SINGULARITY_APPNAME".into(), app.clone()));
        env.push(("APPTAINER_APPNAME".into(), app.clone()));
    }
    let mut set = |k: String, v: String| match env.iter_mut().find(|(key, _)| *key == k) {
        Some(slot) => slot.1 = v,
        None => env.push((k, v)),
    };
    for (k, v) in prefixed.into_iter().chain(options.env.iter().cloned()) {
        set(k, v);
    }
    env
}

/// The extracted root of `image` (canonical path) in `cache`: reused when
/// an earlier run extracted the same content.
pub fn prepare_rootfs(
    sandbox: &Sandbox,
    image: &Path,
    cache: &Path,
    log: &mut dyn FnMut(LogLine),
) -> Result<PathBuf, RunError> {
    let digest = sha256_hex(image)?;
    let folder = cache.join(&digest);
    let rootfs = folder.join("rootfs");
    if folder.join(COMPLETE).is_file() {
        return Ok(rootfs);
    }
    let sif = SifFile::open(image)?;
    let partition = *sif
        .primary_partition()
        .ok_or_else(|| RunError::NoPartition {
            path: image.to_path_buf(),
        })?;
    match sif.primary_fs_type() {
        Some(FsType::Squashfs) => {}
        other => {
            return Err(RunError::NotSquashfs {
                path: image.to_path_buf(),
                fs_type: other.map_or("unknown".into(), |t| t.to_string()),
            })
        }
    }
    drop(sif);
    let partial = tempfile::Builder::new()
        .prefix(&format!("{digest}.partial-"))
        .tempdir_in(cache)
        .map_err(io_error("cannot create a folder in", cache))?;
    let target = partial.path().join("rootfs");
    std::fs::create_dir(&target).map_err(io_error("cannot create", &target))?;
    let limits = Limits {
        time: Duration::from_secs(3600),
        memory: 2 << 30,
        processes: 256,
        disk: 1 << 50,
    };
    unsquash(
        sandbox,
        image,
        partition.offset.unsigned_abs(),
        &target,
        limits,
        log,
    )?;
    std::fs::write(partial.path().join(COMPLETE), b"")
        .map_err(io_error("cannot mark complete", partial.path()))?;
    let kept = partial.keep();
    match std::fs::rename(&kept, &folder) {
        Ok(()) => {}
        // Another run extracted it meanwhile: use theirs.
        Err(_) if folder.join(COMPLETE).is_file() => {
            let _ = std::fs::remove_dir_all(&kept);
        }
        Err(e) => return Err(io_error("cannot move the extracted image to", &folder)(e)),
    }
    Ok(rootfs)
}

/// Marks a finished extraction.
const COMPLETE: &str = ".complete";

/// Extracts the squashfs at `offset` of `image` into the (existing, empty)
/// folder `dest`, running `unsquashfs` in the sandbox with the host's tools,
/// no network and `limits`. Owners are kept (`dest` is bound id-mapped).
pub fn unsquash(
    sandbox: &Sandbox,
    image: &Path,
    offset: u64,
    dest: &Path,
    limits: Limits,
    log: &mut dyn FnMut(LogLine),
) -> Result<(), RunError> {
    let command = vec![
        "unsquashfs".to_owned(),
        "-no-progress".to_owned(),
        "-quiet".to_owned(),
        "-force".to_owned(),
        "-offset".to_owned(),
        offset.to_string(),
        "-dest".to_owned(),
        "/out".to_owned(),
        "/image".to_owned(),
    ];
    let spec = RunSpec::new(RootFs::HostTools, command)
        .bind(Bind::read_only(image, "/image"))
        .bind(Bind::read_write(dest, "/out"))
        .network(NetworkMode::None)
        .limits(limits);
    let mut output = Vec::new();
    let mut devices = 0usize;
    let outcome = sandbox
        .run(&spec, &mut |line: LogLine| {
            // The sandbox cannot make device nodes and provides its own /dev.
            if line.text.contains("failed to create character device")
                || line.text.contains("failed to create block device")
            {
                devices += 1;
                return;
            }
            if output.len() < 40 {
                output.push(line.text.clone());
            }
            log(line)
        })
        .map_err(|source| RunError::Sandbox {
            step: format!("extract {}", image.display()),
            source,
        })?;
    if devices > 0 {
        log(LogLine {
            source: LogSource::Sandbox,
            text: format!(
                "skipped {devices} device nodes of the image (the sandbox provides /dev)"
            ),
        });
    }
    match outcome.termination {
        Termination::Exited(0) => Ok(()),
        // 2: non-fatal errors (device nodes, an xattr the sandbox may not set, …).
        Termination::Exited(2) => {
            if !output.is_empty() {
                log(LogLine {
                    source: LogSource::Sandbox,
                    text: "unsquashfs reported non-fatal errors (see above); continuing".into(),
                });
            }
            Ok(())
        }
        termination => Err(RunError::Unsquash {
            path: image.to_path_buf(),
            termination,
            output: output.join("\n"),
        }),
    }
}

/// sha256 (hex) of a file.
pub fn sha256_hex(path: &Path) -> Result<String, RunError> {
    let mut file = std::fs::File::open(path).map_err(io_error("cannot open", path))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buffer)
            .map_err(io_error("cannot read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The exit code a shell would report for a termination (`128+N` for
/// signal N; 137 for a run the sandbox killed).
pub fn exit_code(termination: &Termination) -> i32 {
    match termination {
        Termination::Exited(code) => *code,
        Termination::Signaled(signal) => 128 + signal,
        Termination::Killed(_) => 137,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_resets_path_and_applies_prefixes() {
        let mut options = RunOptions::new("/x.sif", Action::Run, vec![]);
        options.clean_env = true;
        options.env = vec![("FOO".into(), "bar".into())];
        options.app = Some("tool".into());
        let env = environment(&options, Path::new("/images/x.sif"));
        let get = |k: &str| {
            env.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("PATH"), Some(DEFAULT_PATH));
        assert_eq!(get("FOO"), Some("bar"));
        assert_eq!(get("SINGULARITY_NAME"), Some("x.sif"));
        assert_eq!(get("APPTAINER_CONTAINER"), Some("/images/x.sif"));
        assert_eq!(get("SINGULARITY_APPNAME"), Some("tool"));
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(exit_code(&Termination::Exited(3)), 3);
        assert_eq!(exit_code(&Termination::Signaled(15)), 143);
    }
}
