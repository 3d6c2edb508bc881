//! What the sandbox runs and with which limits: the sandbox-wide
//! [`SandboxConfig`], the per-section [`RunSpec`], and what a run reports back
//! ([`LogLine`], [`RunOutcome`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// The `PATH` a section gets when its spec sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where a `%setup` section sees the build root (also in `$SINGULARITY_ROOTFS`
/// and `$APPTAINER_ROOTFS`).
pub const SETUP_ROOTFS_MOUNT: &str = "/rootfs";

/// Where a `%setup` section sees the build context (the recipe's checkout);
/// it is also the section's working folder.
pub const SETUP_CONTEXT_MOUNT: &str = "/context";

/// Resource limits of one run. Each is enforced: going over kills the run and
/// the log says which limit did it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time from start to end of the run.
    pub time: Duration,
    /// Memory of all processes of the run together (cgroup `memory.max`), in bytes;
    /// `/tmp` and `/dev/shm` live in memory and count here too.
    pub memory: u64,
    /// Number of processes and threads alive at once (cgroup `pids.max`).
    pub processes: u64,
    /// Disk space used by the build root and the writable binds, in bytes.
    pub disk: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            time: Duration::from_secs(2 * 3600),
            memory: 4 * GIB,
            processes: 4096,
            disk: 20 * GIB,
        }
    }
}

/// How a run reaches the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// Its own network namespace with outbound access through `slirp4netns`,
    /// which is told not to forward to the host's loopback (`10.0.2.2`).
    #[default]
    Slirp,
    /// Its own network namespace with only `lo`.
    None,
    /// The host's network namespace, loopback services included. Only for
    /// trusted recipes.
    Host,
}

/// The range of host ids that ids 0..count inside the sandbox map to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// Host uid and gid that uid/gid 0 inside maps to (a subuid base).
    pub host_base: u32,
    /// How many ids are mapped; 65536 covers every id a distribution uses.
    pub count: u32,
}

impl Default for IdRange {
    fn default() -> Self {
        IdRange {
            host_base: 100_000,
            count: 65_536,
        }
    }
}

/// Sandbox-wide settings; one [`crate::sandbox::Sandbox`] per worker.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Limits for runs whose spec sets none.
    pub limits: Limits,
    /// Network for runs whose spec sets none.
    pub network: NetworkMode,
    /// Host ids the sandbox's ids map to.
    pub id_range: IdRange,
    /// Cgroup (a path inside each cgroup hierarchy, e.g. `/sifhub`) under which
    /// each run gets its own cgroup. `None`: `sifhub` under this process's own
    /// cgroup.
    pub cgroup_parent: Option<PathBuf>,
    /// Folder for per-run scratch files (mount points, a generated
    /// `resolv.conf`); it must be on a local filesystem.
    pub state_dir: PathBuf,
    /// The `slirp4netns` binary; `None` searches `PATH`.
    pub slirp4netns: Option<PathBuf>,
    /// How often the disk use of the build folder is measured.
    pub disk_check_interval: Duration,
    /// How long a run may take to set up its namespaces before it is given up.
    pub setup_timeout: Duration,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            limits: Limits::default(),
            network: NetworkMode::default(),
            id_range: IdRange::default(),
            cgroup_parent: None,
            state_dir: std::env::temp_dir(),
            slirp4netns: None,
            disk_check_interval: Duration::from_secs(1),
            setup_timeout: Duration::from_secs(30),
        }
    }
}

/// The root filesystem a run is pivoted into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootFs {
    /// A build root folder on the host, mounted id-mapped so that files keep
    /// their in-container ownership on disk.
    Folder(PathBuf),
    /// A fresh in-memory root holding the host's `/usr` (and `/bin`, `/sbin`,
    /// `/lib*`) read-only, a minimal generated `/etc` (no host `/etc`), and
    /// whatever the binds add. This is how `%setup` gets its tools without
    /// seeing the host's files.
    HostTools,
}

/// A host file or folder made visible inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// Host path (symlinks are resolved on the host before the run).
    pub source: PathBuf,
    /// Absolute path inside the sandbox; created when missing.
    pub target: PathBuf,
    /// Whether the sandbox may write through the bind.
    pub writable: bool,
    /// Mount it id-mapped: host ids appear unshifted inside (host root owns
    /// what container root owns) and files written inside keep their
    /// in-container ownership on disk. The source's filesystem must support
    /// id-mapped mounts. Without it, host-owned files appear as `nobody` and
    /// the source path must be traversable by others.
    pub id_mapped: bool,
}

impl Bind {
    /// A read-only, id-mapped bind.
    pub fn read_only(source: impl Into<PathBuf>, target: impl Into<PathBuf>) -> Self {
        Bind {
            source: source.into(),
            target: target.into(),
            writable: false,
            id_mapped: true,
        }
    }

    /// A writable, id-mapped bind.
    pub fn read_write(source: impl Into<PathBuf>, target: impl Into<PathBuf>) -> Self {
        Bind {
            source: source.into(),
            target: target.into(),
            writable: true,
            id_mapped: true,
        }
    }

    /// The same bind without id-mapping.
    pub fn without_id_map(mut self) -> Self {
        self.id_mapped = false;
        self
    }
}

/// One command to run in the sandbox: a `%post`, `%test` or `%setup` section,
/// or any other step of the build that runs user-supplied code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    /// What `/` is.
    pub root: RootFs,
    /// The argument vector; a first element without `/` is looked up in the
    /// `PATH` of `env` inside the sandbox.
    pub command: Vec<String>,
    /// The whole environment of the command (nothing is inherited from the host).
    pub env: Vec<(String, String)>,
    /// Working folder inside the sandbox.
    pub cwd: PathBuf,
    /// Host name inside the sandbox's UTS namespace.
    pub hostname: String,
    /// Extra binds, mounted in order after the standard mounts.
    pub binds: Vec<Bind>,
    /// Mount the root read-only (for `%test`).
    pub read_only_root: bool,
    /// Network; `None` takes the sandbox's default.
    pub network: Option<NetworkMode>,
    /// Limits; `None` takes the sandbox's defaults.
    pub limits: Option<Limits>,
}

impl RunSpec {
    /// A command in `root` with the default environment (`PATH`, `HOME=/root`,
    /// `LANG=C`), working folder `/` and host name `sifhub`.
    pub fn new<I, S>(root: RootFs, command: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        RunSpec {
            root,
            command: command.into_iter().map(Into::into).collect(),
            env: vec![
                ("PATH".into(), DEFAULT_PATH.into()),
                ("HOME".into(), "/root".into()),
                ("LANG".into(), "C".into()),
            ],
            cwd: PathBuf::from("/"),
            hostname: "sifhub".into(),
            binds: Vec::new(),
            read_only_root: false,
            network: None,
            limits: None,
        }
    }

    /// A command pivoted into the build root folder (`%post`, `%test`).
    pub fn in_folder<I, S>(build_root: impl Into<PathBuf>, command: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        RunSpec::new(RootFs::Folder(build_root.into()), command)
    }

    /// A `%setup` section: the host's tools read-only ([`RootFs::HostTools`]),
    /// the build root writable at [`SETUP_ROOTFS_MOUNT`] (named by
    /// `$SINGULARITY_ROOTFS` and `$APPTAINER_ROOTFS`), and the build context
    /// writable at [`SETUP_CONTEXT_MOUNT`], which is the working folder — so
    /// `cp file ${SINGULARITY_ROOTFS}/opt` works as with apptainer, while the
    /// rest of the host stays out of reach.
    pub fn setup_section<I, S>(build_root: &Path, context: &Path, command: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        RunSpec::new(RootFs::HostTools, command)
            .bind(Bind::read_write(build_root, SETUP_ROOTFS_MOUNT))
            .bind(Bind::read_write(context, SETUP_CONTEXT_MOUNT))
            .env("SINGULARITY_ROOTFS", SETUP_ROOTFS_MOUNT)
            .env("APPTAINER_ROOTFS", SETUP_ROOTFS_MOUNT)
            .cwd(SETUP_CONTEXT_MOUNT)
    }

    /// Sets (or replaces) one environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = key.into();
        let value = value.into();
        match self.env.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.env.push((key, value)),
        }
        self
    }

    /// Sets the working folder inside the sandbox.
    pub fn cwd(mut self, cwd: impl Into<PathBuf>) -> Self {
        self.cwd = cwd.into();
        self
    }

    /// Sets the host name inside the sandbox.
    pub fn hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = hostname.into();
        self
    }

    /// Adds a bind.
    pub fn bind(mut self, bind: Bind) -> Self {
        self.binds.push(bind);
        self
    }

    /// Chooses the network mode of this run.
    pub fn network(mut self, mode: NetworkMode) -> Self {
        self.network = Some(mode);
        self
    }

    /// Chooses the limits of this run.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Mounts the root read-only.
    pub fn read_only_root(mut self) -> Self {
        self.read_only_root = true;
        self
    }

    /// The value of `key` in the environment, if set.
    pub fn env_value(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Where a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSource {
    /// The command's standard output or error (merged, in the order written).
    Command,
    /// The sandbox itself, e.g. "killed: memory limit 2 GiB exceeded".
    Sandbox,
}

/// One line of a run's log, without its line ending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Who wrote it.
    pub source: LogSource,
    /// The text (invalid UTF-8 replaced; overlong lines split).
    pub text: String,
}

/// Why the sandbox killed a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KillReason {
    /// The wall-clock limit ran out.
    TimeLimit(Duration),
    /// The processes of the run went over their memory limit (bytes).
    MemoryLimit(u64),
    /// The run tried to have more processes than allowed.
    ProcessLimit(u64),
    /// The build folder grew over its disk limit (bytes).
    DiskLimit(u64),
}

impl fmt::Display for KillReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KillReason::TimeLimit(limit) => {
                write!(f, "killed: time limit {} exceeded", format_duration(*limit))
            }
            KillReason::MemoryLimit(bytes) => {
                write!(f, "killed: memory limit {} exceeded", format_bytes(*bytes))
            }
            KillReason::ProcessLimit(count) => {
                write!(f, "killed: process limit {count} exceeded")
            }
            KillReason::DiskLimit(bytes) => {
                write!(f, "killed: disk limit {} exceeded", format_bytes(*bytes))
            }
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Termination {
    /// The command exited with this code.
    Exited(i32),
    /// The command was ended by this signal (sent from inside the sandbox).
    Signaled(i32),
    /// The sandbox killed the run.
    Killed(KillReason),
}

/// The result of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    /// How it ended.
    pub termination: Termination,
    /// Wall-clock time from start to end.
    pub duration: Duration,
}

impl RunOutcome {
    /// Whether the command exited with code 0.
    pub fn success(&self) -> bool {
        self.termination == Termination::Exited(0)
    }

    /// The exit code, when the command exited by itself.
    pub fn exit_code(&self) -> Option<i32> {
        match self.termination {
            Termination::Exited(code) => Some(code),
            _ => None,
        }
    }

    /// Why the sandbox killed the run, if it did.
    pub fn kill_reason(&self) -> Option<&KillReason> {
        match &self.termination {
            Termination::Killed(reason) => Some(reason),
            _ => None,
        }
    }
}

impl fmt::Display for Termination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Termination::Exited(code) => write!(f, "exited with code {code}"),
            Termination::Signaled(signal) => write!(f, "ended by signal {signal}"),
            Termination::Killed(reason) => reason.fmt(f),
        }
    }
}

/// "2 GiB", "64 MiB", "1.5 GiB", "512 bytes".
pub fn format_bytes(bytes: u64) -> String {
    for (unit, name) in [(GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")] {
        if bytes >= unit {
            return if bytes.is_multiple_of(unit) {
                format!("{} {name}", bytes / unit)
            } else {
                let value = bytes as f64 / unit as f64;
                let text = format!("{value:.2}");
                format!(
                    "{} {name}",
                    text.trim_end_matches('0').trim_end_matches('.')
                )
            };
        }
    }
    format!("{bytes} bytes")
}

/// "2h", "30m", "1h30m", "3s", "1m30s", "500ms".
pub fn format_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    if secs == 0 {
        return format!("{}ms", duration.as_millis());
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_reasons_read_like_the_log() {
        assert_eq!(
            KillReason::TimeLimit(Duration::from_secs(1800)).to_string(),
            "killed: time limit 30m exceeded"
        );
        assert_eq!(
            KillReason::MemoryLimit(2 * GIB).to_string(),
            "killed: memory limit 2 GiB exceeded"
        );
        assert_eq!(
            KillReason::DiskLimit(10 * GIB).to_string(),
            "killed: disk limit 10 GiB exceeded"
        );
        assert_eq!(
            KillReason::ProcessLimit(64).to_string(),
            "killed: process limit 64 exceeded"
        );
    }

    #[test]
    fn sizes_and_durations_are_short() {
        assert_eq!(format_bytes(64 * MIB), "64 MiB");
        assert_eq!(format_bytes(3 * GIB / 2), "1.5 GiB");
        assert_eq!(format_bytes(100), "100 bytes");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(3)), "3s");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn setup_section_binds_the_root_and_context() {
        let spec = RunSpec::setup_section(Path::new("/b/root"), Path::new("/b/src"), ["sh"]);
        assert_eq!(spec.root, RootFs::HostTools);
        assert_eq!(spec.env_value("SINGULARITY_ROOTFS"), Some("/rootfs"));
        assert_eq!(spec.env_value("APPTAINER_ROOTFS"), Some("/rootfs"));
        assert_eq!(spec.cwd, Path::new("/context"));
        assert_eq!(spec.binds[0], Bind::read_write("/b/root", "/rootfs"));
        assert_eq!(spec.binds[1], Bind::read_write("/b/src", "/context"));
    }

    #[test]
    fn env_replaces_existing_keys() {
        let spec = RunSpec::in_folder("/r", ["true"]).env("PATH", "/bin");
        assert_eq!(spec.env_value("PATH"), Some("/bin"));
        assert_eq!(spec.env.iter().filter(|(k, _)| k == "PATH").count(), 1);
    }
}
