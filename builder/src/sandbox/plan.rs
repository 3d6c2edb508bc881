//! Turns a [`RunSpec`] into a [`SetupPlan`]: every path, mount and argument
//! the sandboxed processes need, resolved and checked on the host before the
//! fork, so the children only replay it.

use std::ffi::CString;
use std::path::{Component, Path, PathBuf};

use nix::mount::MsFlags;
use nix::sched::CloneFlags;

use super::error::SandboxError;
use super::spec::{IdRange, Limits, NetworkMode, RootFs, RunSpec, DEFAULT_PATH};

/// Where the host's root stays reachable between `pivot_root` and its detach.
/// No user code runs before it is detached.
pub(crate) const OLD_ROOT: &str = "/.sifhub-oldroot";

/// Name of the sandbox's init process (PID 1 inside), as `/proc/1/comm` shows it.
pub(crate) const INIT_NAME: &std::ffi::CStr = c"sifhub-init";

/// Host devices bound into the sandbox's `/dev`.
pub(crate) const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Host folders a [`RootFs::HostTools`] root takes (read-only) or links like the host.
const HOST_TOOL_DIRS: [&str; 7] = [
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];

/// Whether a bind target is a folder or a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TargetKind {
    Dir,
    File,
}

/// One step of building the sandbox's filesystem, run after `pivot_root`
/// (so every target resolves inside the new root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FsStep {
    /// Make sure a folder exists (with its parents).
    Dir { path: PathBuf, mode: u32 },
    /// Mount a fresh filesystem on an existing folder.
    Mount {
        fstype: &'static str,
        target: PathBuf,
        flags: MsFlags,
        data: String,
    },
    /// Bind `source` (a path under [`OLD_ROOT`]) onto `target`, created when missing.
    Bind {
        source: PathBuf,
        target: PathBuf,
        kind: TargetKind,
        writable: bool,
    },
    /// A symlink `link` → `target`.
    Symlink { target: PathBuf, link: PathBuf },
    /// A generated file.
    File {
        path: PathBuf,
        contents: Vec<u8>,
        mode: u32,
    },
}

impl FsStep {
    /// What the step does, for error messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            FsStep::Dir { path, .. } => format!("create folder {}", path.display()),
            FsStep::Mount { fstype, target, .. } => {
                format!("mount {fstype} on {}", target.display())
            }
            FsStep::Bind { source, target, .. } => {
                let host = source.strip_prefix(OLD_ROOT).unwrap_or(source);
                format!("bind /{} to {}", host.display(), target.display())
            }
            FsStep::Symlink { target, link } => {
                format!("symlink {} -> {}", link.display(), target.display())
            }
            FsStep::File { path, .. } => format!("write {}", path.display()),
        }
    }
}

/// The root the sandbox pivots into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PlannedRoot {
    /// The build root folder (canonical host path), mounted id-mapped.
    Folder(PathBuf),
    /// A tmpfs of this many bytes at most.
    Scratch { size: u64 },
}

/// A bind that is mounted id-mapped on the host side at `staging` first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdMappedBind {
    pub source: PathBuf,
    pub staging: PathBuf,
}

/// Everything the sandboxed processes do, precomputed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SetupPlan {
    /// `cgroup.procs` files the first child joins.
    pub cgroup_procs: Vec<PathBuf>,
    /// Contents of `uid_map` and `gid_map`.
    pub id_map: String,
    pub root: PlannedRoot,
    /// Host folder where the root is mounted before `pivot_root`.
    pub staging_root: PathBuf,
    pub id_mapped_binds: Vec<IdMappedBind>,
    /// Namespaces unshared after entering the user namespace.
    pub namespaces: CloneFlags,
    pub fs_steps: Vec<FsStep>,
    pub read_only_root: bool,
    pub hostname: String,
    pub cwd: PathBuf,
    /// `argv[0]`, for messages.
    pub program: String,
    /// Paths `execve` tries in order (a `PATH` search done ahead).
    pub exec_candidates: Vec<CString>,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
}

impl SetupPlan {
    /// Whether the run has its own network namespace (so `lo` must be brought up).
    pub(crate) fn own_network(&self) -> bool {
        self.namespaces.contains(CloneFlags::CLONE_NEWNET)
    }

    /// `<staging_root>/.sifhub-oldroot`, the `put_old` of `pivot_root`.
    pub(crate) fn put_old(&self) -> PathBuf {
        self.staging_root.join(OLD_ROOT.trim_start_matches('/'))
    }
}

/// Host-side facts the plan needs besides the spec.
#[derive(Debug, Clone)]
pub(crate) struct PlanInputs<'a> {
    pub spec: &'a RunSpec,
    pub limits: &'a Limits,
    pub network: NetworkMode,
    pub id_range: IdRange,
    pub cgroup_procs: Vec<PathBuf>,
    /// Per-run host folder (mount points of the root and id-mapped binds).
    pub staging: &'a Path,
    /// The `resolv.conf` to bind (canonical host path), if any.
    pub resolv_conf: Option<PathBuf>,
}

/// `path` seen from inside the sandbox before the old root is detached.
pub(crate) fn under_old_root(host_path: &Path) -> PathBuf {
    Path::new(OLD_ROOT).join(host_path.strip_prefix("/").unwrap_or(host_path))
}

/// Builds the plan; checks the spec and resolves host paths.
pub(crate) fn build(inputs: &PlanInputs<'_>) -> Result<SetupPlan, SandboxError> {
    let spec = inputs.spec;
    let invalid = |msg: String| Err(SandboxError::InvalidSpec(msg));
    if spec.command.is_empty() {
        return invalid("the command is empty".into());
    }
    let argv = spec
        .command
        .iter()
        .map(|a| c_string(a, "command argument"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut envp = Vec::new();
    for (key, value) in &spec.env {
        if key.is_empty() || key.contains('=') {
            return invalid(format!("invalid environment variable name {key:?}"));
        }
        envp.push(c_string(&format!("{key}={value}"), "environment variable")?);
    }
    check_inside_path(&spec.cwd, "working folder")?;
    if spec.hostname.is_empty() || spec.hostname.len() > 64 {
        return invalid(format!(
            "host name {:?} must be 1 to 64 bytes",
            spec.hostname
        ));
    }
    let limits = inputs.limits;
    if limits.time.is_zero() || limits.memory == 0 || limits.processes == 0 || limits.disk == 0 {
        return invalid(format!("limits must all be above zero: {limits:?}"));
    }
    let range = inputs.id_range;
    if range.host_base == 0
        || range.count == 0
        || range.host_base.checked_add(range.count).is_none()
    {
        return invalid(format!(
            "id range {range:?} must start above 0 and fit in 32 bits"
        ));
    }

    let root = match &spec.root {
        RootFs::Folder(path) => {
            let canonical = canonical(path, "build root")?;
            if !canonical.is_dir() {
                return invalid(format!("build root {} is not a folder", path.display()));
            }
            PlannedRoot::Folder(canonical)
        }
        RootFs::HostTools => PlannedRoot::Scratch { size: limits.disk },
    };

    let mut steps = Vec::new();
    if matches!(root, PlannedRoot::Scratch { .. }) {
        host_tools_skeleton(&mut steps)?;
    }
    standard_mounts(&mut steps, limits.disk);
    if let Some(resolv) = &inputs.resolv_conf {
        steps.push(FsStep::Dir {
            path: "/etc".into(),
            mode: 0o755,
        });
        steps.push(FsStep::Bind {
            source: under_old_root(resolv),
            target: "/etc/resolv.conf".into(),
            kind: TargetKind::File,
            writable: false,
        });
    }

    let mut id_mapped_binds = Vec::new();
    for bind in &spec.binds {
        let source = canonical(&bind.source, "bind source")?;
        check_inside_path(&bind.target, "bind target")?;
        let kind = if source.is_dir() {
            TargetKind::Dir
        } else {
            TargetKind::File
        };
        let visible_source = if bind.id_mapped {
            let staging = inputs
                .staging
                .join(format!("bind-{}", id_mapped_binds.len()));
            id_mapped_binds.push(IdMappedBind {
                source: source.clone(),
                staging: staging.clone(),
            });
            under_old_root(&staging)
        } else {
            under_old_root(&source)
        };
        steps.push(FsStep::Bind {
            source: visible_source,
            target: bind.target.clone(),
            kind,
            writable: bind.writable,
        });
    }

    let mut namespaces = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWCGROUP;
    if inputs.network != NetworkMode::Host {
        namespaces |= CloneFlags::CLONE_NEWNET;
    }

    let program = spec.command[0].clone();
    let exec_candidates = if program.contains('/') {
        vec![c_string(&program, "command")?]
    } else {
        let path = spec.env_value("PATH").unwrap_or(DEFAULT_PATH);
        path.split(':')
            .filter(|dir| dir.starts_with('/'))
            .map(|dir| {
                c_string(
                    &format!("{}/{program}", dir.trim_end_matches('/')),
                    "command",
                )
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    if exec_candidates.is_empty() {
        return invalid(format!("{program} is not on the PATH of the run"));
    }

    Ok(SetupPlan {
        cgroup_procs: inputs.cgroup_procs.clone(),
        id_map: format!("0 {} {}\n", range.host_base, range.count),
        root,
        staging_root: inputs.staging.join("root"),
        id_mapped_binds,
        namespaces,
        fs_steps: steps,
        read_only_root: spec.read_only_root,
        hostname: spec.hostname.clone(),
        cwd: spec.cwd.clone(),
        program,
        exec_candidates,
        argv,
        envp,
    })
}

/// `/proc`, `/dev` (devices, pts, shm, fd links) and `/tmp`.
fn standard_mounts(steps: &mut Vec<FsStep>, disk: u64) {
    let dir = |path: &str, mode| FsStep::Dir {
        path: path.into(),
        mode,
    };
    let link = |target: &str, link: &str| FsStep::Symlink {
        target: target.into(),
        link: link.into(),
    };
    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    steps.push(dir("/proc", 0o555));
    steps.push(FsStep::Mount {
        fstype: "proc",
        target: "/proc".into(),
        flags: nosuid_nodev | MsFlags::MS_NOEXEC,
        data: String::new(),
    });
    steps.push(dir("/dev", 0o755));
    steps.push(FsStep::Mount {
        fstype: "tmpfs",
        target: "/dev".into(),
        flags: MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        data: "mode=0755,size=1m".into(),
    });
    for device in DEVICES {
        steps.push(FsStep::Bind {
            source: under_old_root(&Path::new("/dev").join(device)),
            target: Path::new("/dev").join(device),
            kind: TargetKind::File,
            writable: true,
        });
    }
    steps.push(dir("/dev/pts", 0o755));
    steps.push(FsStep::Mount {
        fstype: "devpts",
        target: "/dev/pts".into(),
        flags: MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        data: "newinstance,ptmxmode=0666,mode=0620,gid=5".into(),
    });
    steps.push(link("pts/ptmx", "/dev/ptmx"));
    steps.push(dir("/dev/shm", 0o1777));
    steps.push(FsStep::Mount {
        fstype: "tmpfs",
        target: "/dev/shm".into(),
        flags: nosuid_nodev,
        data: format!("mode=1777,size={disk}"),
    });
    steps.push(link("/proc/self/fd", "/dev/fd"));
    steps.push(link("/proc/self/fd/0", "/dev/stdin"));
    steps.push(link("/proc/self/fd/1", "/dev/stdout"));
    steps.push(link("/proc/self/fd/2", "/dev/stderr"));
    steps.push(dir("/tmp", 0o1777));
    steps.push(FsStep::Mount {
        fstype: "tmpfs",
        target: "/tmp".into(),
        flags: nosuid_nodev,
        data: format!("mode=1777,size={disk}"),
    });
}

/// The host's program folders read-only (or the same symlinks, on merged-/usr
/// hosts), and a generated `/etc` that holds no host secrets.
fn host_tools_skeleton(steps: &mut Vec<FsStep>) -> Result<(), SandboxError> {
    for dir in HOST_TOOL_DIRS {
        let host = Path::new(dir);
        let Ok(meta) = std::fs::symlink_metadata(host) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(host)
                .map_err(|e| SandboxError::io(format!("read link {dir}"), e))?;
            steps.push(FsStep::Symlink {
                target,
                link: host.into(),
            });
        } else if meta.is_dir() {
            steps.push(FsStep::Bind {
                source: under_old_root(host),
                target: host.into(),
                kind: TargetKind::Dir,
                writable: false,
            });
        }
    }
    steps.push(FsStep::Dir {
        path: "/etc".into(),
        mode: 0o755,
    });
    steps.push(FsStep::File {
        path: "/etc/passwd".into(),
        contents: b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n".to_vec(),
        mode: 0o644,
    });
    steps.push(FsStep::File {
        path: "/etc/group".into(),
        contents: b"root:x:0:\nnogroup:x:65534:\n".to_vec(),
        mode: 0o644,
    });
    // Debian's alternatives (awk, editor, …) and the loader cache: no secrets.
    for (path, kind) in [
        ("/etc/alternatives", TargetKind::Dir),
        ("/etc/ld.so.cache", TargetKind::File),
    ] {
        let host = Path::new(path);
        let fits = match kind {
            TargetKind::Dir => host.is_dir(),
            TargetKind::File => host.is_file(),
        };
        if fits {
            let source = canonical(host, "host file")?;
            steps.push(FsStep::Bind {
                source: under_old_root(&source),
                target: host.into(),
                kind,
                writable: false,
            });
        }
    }
    steps.push(FsStep::Dir {
        path: "/root".into(),
        mode: 0o700,
    });
    Ok(())
}

fn c_string(text: &str, what: &str) -> Result<CString, SandboxError> {
    CString::new(text)
        .map_err(|_| SandboxError::InvalidSpec(format!("{what} {text:?} contains a NUL byte")))
}

fn canonical(path: &Path, what: &str) -> Result<PathBuf, SandboxError> {
    std::fs::canonicalize(path)
        .map_err(|e| SandboxError::io(format!("{what} {}", path.display()), e))
}

/// An absolute path inside the sandbox without `..` (targets must not climb).
fn check_inside_path(path: &Path, what: &str) -> Result<(), SandboxError> {
    let ok = path.is_absolute()
        && path
            .components()
            .all(|c| !matches!(c, Component::ParentDir))
        && path.as_os_str().len() < 4096
        && !path.as_os_str().as_encoded_bytes().contains(&0);
    if ok {
        Ok(())
    } else {
        Err(SandboxError::InvalidSpec(format!(
            "{what} {} must be an absolute path without ..",
            path.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::spec::Bind;

    fn inputs<'a>(spec: &'a RunSpec, limits: &'a Limits, staging: &'a Path) -> PlanInputs<'a> {
        PlanInputs {
            spec,
            limits,
            network: NetworkMode::Slirp,
            id_range: IdRange::default(),
            cgroup_procs: vec!["/cg/run/cgroup.procs".into()],
            staging,
            resolv_conf: Some("/etc/resolv.conf".into()),
        }
    }

    #[test]
    fn folder_root_gets_standard_mounts_then_binds() {
        let root = tempfile::tempdir().unwrap();
        let extra = tempfile::tempdir().unwrap();
        let spec = RunSpec::in_folder(root.path(), ["sh", "-c", "true"])
            .bind(Bind::read_only(extra.path(), "/src"));
        let limits = Limits::default();
        let plan = build(&inputs(&spec, &limits, Path::new("/state/run"))).unwrap();
        assert_eq!(
            plan.root,
            PlannedRoot::Folder(std::fs::canonicalize(root.path()).unwrap())
        );
        assert_eq!(plan.id_map, "0 100000 65536\n");
        assert!(plan.own_network());
        assert_eq!(plan.put_old(), Path::new("/state/run/root/.sifhub-oldroot"));
        let described: Vec<String> = plan.fs_steps.iter().map(FsStep::describe).collect();
        let position = |s: &str| described.iter().position(|d| d == s).unwrap();
        assert!(position("mount proc on /proc") < position("mount tmpfs on /dev"));
        assert!(position("mount tmpfs on /dev") < position("bind /dev/null to /dev/null"));
        assert!(
            position("bind /etc/resolv.conf to /etc/resolv.conf")
                < position("bind /state/run/bind-0 to /src")
        );
        assert_eq!(
            plan.id_mapped_binds,
            vec![IdMappedBind {
                source: std::fs::canonicalize(extra.path()).unwrap(),
                staging: "/state/run/bind-0".into()
            }]
        );
        // sh is searched in the default PATH
        assert_eq!(
            plan.exec_candidates.first().unwrap().to_str().unwrap(),
            "/usr/local/sbin/sh"
        );
    }

    #[test]
    fn host_network_keeps_the_host_namespace() {
        let root = tempfile::tempdir().unwrap();
        let spec = RunSpec::in_folder(root.path(), ["/bin/true"]);
        let limits = Limits::default();
        let mut inputs = inputs(&spec, &limits, Path::new("/s"));
        inputs.network = NetworkMode::Host;
        let plan = build(&inputs).unwrap();
        assert!(!plan.own_network());
        assert_eq!(plan.exec_candidates.len(), 1);
    }

    #[test]
    fn bad_specs_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let limits = Limits::default();
        let cases = [
            RunSpec::in_folder(root.path(), Vec::<String>::new()),
            RunSpec::in_folder(root.path(), ["true"]).cwd("relative"),
            RunSpec::in_folder(root.path(), ["true"]).bind(Bind::read_only("/", "/a/../../b")),
            RunSpec::in_folder(root.path(), ["true"]).env("A=B", "c"),
            RunSpec::in_folder("/no/such/root", ["true"]),
        ];
        for spec in cases {
            assert!(
                build(&inputs(&spec, &limits, Path::new("/s"))).is_err(),
                "{spec:?}"
            );
        }
    }

    #[test]
    fn host_tools_root_has_no_host_etc() {
        let build_root = tempfile::tempdir().unwrap();
        let context = tempfile::tempdir().unwrap();
        let spec = RunSpec::setup_section(build_root.path(), context.path(), ["sh"]);
        let limits = Limits::default();
        let plan = build(&inputs(&spec, &limits, Path::new("/s"))).unwrap();
        assert_eq!(plan.root, PlannedRoot::Scratch { size: limits.disk });
        for step in &plan.fs_steps {
            if let FsStep::Bind { source, .. } = step {
                let host = source.strip_prefix(OLD_ROOT).unwrap();
                assert!(
                    !host.starts_with("etc")
                        || host.starts_with("etc/alternatives")
                        || host.starts_with("etc/ld.so.cache")
                        || host.ends_with("resolv.conf"),
                    "{step:?}"
                );
            }
        }
        assert!(plan.fs_steps.iter().any(|s| matches!(s,
            FsStep::Bind { target, writable: true, .. } if target == Path::new("/rootfs"))));
    }
}
