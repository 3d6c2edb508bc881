//! Enforcing the limits: one cgroup per run for memory and processes (and for
//! killing everything the run started), and a disk-use watcher for the build
//! folder.
//!
//! **Cgroups.** cgroup v2 is used wherever it offers a controller. On hybrid
//! hosts, where `memory` or `pids` is still bound to a cgroup v1 hierarchy (as
//! on this project's CI machine), that controller is used through v1 (same
//! limits, v1 file names), and the v2 hierarchy, when mounted, still tracks
//! the run's processes and kills them with `cgroup.kill`. When neither offers
//! a controller, the sandbox fails to start with a clear error: a run is
//! never started without its limits. Run cgroups are created under a `sifhub`
//! parent (by default below this process's own cgroup, so the worker's own
//! limits still apply) and removed after the run. On cgroup v2 a cgroup that
//! holds processes cannot pass controllers down, so a worker that is not in
//! the root cgroup (a systemd service) needs `cgroup_parent` set to a
//! delegated cgroup (`Delegate=yes`); without it the sandbox refuses to start
//! and says so.
//!
//! **Disk.** The build root is a plain host folder that several steps write
//! (bootstrap, `%files`, `%post`), so it is not put on a size-limited
//! filesystem (a loop device or XFS project quota per build would need
//! formatting, mounting and cleaning up on every run, and would not survive
//! into the squash step without a copy). Instead a watcher thread measures the
//! allocated size of the build folder and the writable binds every
//! [`crate::sandbox::SandboxConfig::disk_check_interval`] and the run is killed
//! once it is over; a last measurement after the run catches a burst written
//! between two checks. Overshoot is bounded by what the run can write in one
//! interval, so keep some headroom on the volume. The limit counts the whole
//! folder, base image included. A tree so large that one walk takes long is
//! walked less often (at most a fifth of the time is spent walking).
//! `/tmp` and `/dev/shm` are tmpfs capped at the same size and charged to the
//! memory limit.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::error::SandboxError;
use super::spec::Limits;
use super::syscall::Syscall;

/// One mounted cgroup hierarchy and where this process sits in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hierarchy {
    /// Whether this is the unified (v2) hierarchy.
    pub v2: bool,
    /// Where it is mounted.
    pub mount: PathBuf,
    /// This process's cgroup, relative to the hierarchy's root ("/..." form).
    pub current: PathBuf,
}

impl Hierarchy {
    /// Host folder of a cgroup path inside this hierarchy.
    fn dir(&self, cgroup: &Path) -> PathBuf {
        self.mount.join(cgroup.strip_prefix("/").unwrap_or(cgroup))
    }
}

/// Which hierarchy serves what, found once per sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupLayout {
    /// The v2 hierarchy, if mounted: tracks and kills every run.
    pub tracker: Option<Hierarchy>,
    pub memory: Hierarchy,
    pub pids: Hierarchy,
    /// The parent cgroup path (inside each hierarchy) of the run cgroups;
    /// `None` means `<current>/sifhub` per hierarchy.
    pub parent: Option<PathBuf>,
}

impl CgroupLayout {
    /// Reads `/proc/self/mountinfo` and `/proc/self/cgroup` and picks, per
    /// controller, cgroup v2 if it offers it, else cgroup v1.
    pub(crate) fn detect(
        sys: &dyn Syscall,
        parent: Option<PathBuf>,
    ) -> Result<CgroupLayout, SandboxError> {
        let read = |path: &str| {
            sys.read_file(Path::new(path))
                .map_err(|e| SandboxError::sys(format!("read {path}"), e))
        };
        let mountinfo = read("/proc/self/mountinfo")?;
        let membership = read("/proc/self/cgroup")?;

        let mut v2: Option<Hierarchy> = None;
        let mut v1 = Vec::new();
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            let (Some(mount_root), Some(mount_point), Some(fstype), Some(super_opts)) =
                (left.get(3), left.get(4), right.first(), right.get(2))
            else {
                continue;
            };
            let mount = PathBuf::from(unescape_mountinfo(mount_point));
            let mount_root = PathBuf::from(unescape_mountinfo(mount_root));
            match *fstype {
                "cgroup2" if v2.is_none() => {
                    let current = membership_path(&membership, |id, _| id == "0")
                        .map(|p| relative_to_mount(&p, &mount_root))
                        .unwrap_or_else(|| PathBuf::from("/"));
                    v2 = Some(Hierarchy {
                        v2: true,
                        mount,
                        current,
                    });
                }
                "cgroup" => {
                    for controller in ["memory", "pids"] {
                        if super_opts.split(',').any(|o| o == controller) {
                            let current = membership_path(&membership, |_, ctrls| {
                                ctrls.split(',').any(|c| c == controller)
                            })
                            .map(|p| relative_to_mount(&p, &mount_root))
                            .unwrap_or_else(|| PathBuf::from("/"));
                            v1.push((
                                controller,
                                Hierarchy {
                                    v2: false,
                                    mount: mount.clone(),
                                    current,
                                },
                            ));
                        }
                    }
                }
                _ => {}
            }
        }

        let v2_controllers: Vec<String> = match &v2 {
            Some(h) => sys
                .read_file(&h.dir(&h.current).join("cgroup.controllers"))
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string)
                .collect(),
            None => Vec::new(),
        };
        let pick = |controller: &'static str| -> Result<Hierarchy, SandboxError> {
            if let Some(h) = &v2 {
                if v2_controllers.iter().any(|c| c == controller) {
                    return Ok(h.clone());
                }
            }
            if let Some((_, h)) = v1.iter().find(|(c, _)| *c == controller) {
                return Ok(h.clone());
            }
            let detail = match &v2 {
                Some(h) => format!(
                    "the cgroup v2 hierarchy at {} does not offer it to this process (cgroup.controllers: {:?}) and no cgroup v1 hierarchy has it",
                    h.mount.display(),
                    v2_controllers.join(" ")
                ),
                None => "no cgroup v2 hierarchy is mounted (expected at /sys/fs/cgroup) and no cgroup v1 hierarchy has it".into(),
            };
            Err(SandboxError::CgroupUnavailable { controller, detail })
        };
        Ok(CgroupLayout {
            memory: pick("memory")?,
            pids: pick("pids")?,
            tracker: v2.clone(),
            parent,
        })
    }

    /// The distinct hierarchies a run uses.
    fn hierarchies(&self) -> Vec<&Hierarchy> {
        let mut out: Vec<&Hierarchy> = Vec::new();
        for h in [self.tracker.as_ref(), Some(&self.memory), Some(&self.pids)]
            .into_iter()
            .flatten()
        {
            if !out.iter().any(|o| o.mount == h.mount) {
                out.push(h);
            }
        }
        out
    }

    fn parent_in(&self, h: &Hierarchy) -> PathBuf {
        match &self.parent {
            Some(parent) => Path::new("/").join(parent),
            None => h.current.join("sifhub"),
        }
    }

    /// Creates the parent cgroups and, on v2, delegates the controllers down
    /// to them. Done once, so a host that cannot do it fails before any run.
    pub(crate) fn prepare(&self, sys: &dyn Syscall) -> Result<(), SandboxError> {
        for h in self.hierarchies() {
            let parent = self.parent_in(h);
            let mut controllers = Vec::new();
            if h.v2 && self.memory.v2 && self.memory.mount == h.mount {
                controllers.push("memory");
            }
            if h.v2 && self.pids.v2 && self.pids.mount == h.mount {
                controllers.push("pids");
            }
            // every ancestor from the hierarchy's root down must pass them on
            let mut cgroup = PathBuf::from("/");
            let mut components = parent.components().skip(1);
            loop {
                let dir = h.dir(&cgroup);
                match sys.mkdir(&dir, 0o755) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(source) => {
                        return Err(SandboxError::Cgroup {
                            action: "create".into(),
                            path: dir,
                            source,
                        })
                    }
                }
                if !controllers.is_empty() {
                    enable_controllers(sys, &dir, &controllers)?;
                }
                match components.next() {
                    Some(c) => cgroup.push(c),
                    None => break,
                }
            }
        }
        Ok(())
    }
}

fn enable_controllers(
    sys: &dyn Syscall,
    dir: &Path,
    controllers: &[&str],
) -> Result<(), SandboxError> {
    let file = dir.join("cgroup.subtree_control");
    let enabled = sys.read_file(&file).unwrap_or_default();
    let missing: Vec<String> = controllers
        .iter()
        .filter(|c| !enabled.split_whitespace().any(|e| e == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    sys.write_file(&file, missing.join(" ").as_bytes())
        .map_err(|source| SandboxError::Cgroup {
            action: format!(
                "enable {} (a cgroup holding processes cannot pass controllers down; set cgroup_parent to a delegated cgroup) in",
                missing.join(" ")
            ),
            path: file,
            source,
        })
}

/// The cgroup path this process is in, from `/proc/self/cgroup`.
fn membership_path(membership: &str, wanted: impl Fn(&str, &str) -> bool) -> Option<PathBuf> {
    membership.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (id, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        wanted(id, ctrls).then(|| PathBuf::from(path))
    })
}

fn relative_to_mount(path: &Path, mount_root: &Path) -> PathBuf {
    match path.strip_prefix(mount_root) {
        Ok(rest) => Path::new("/").join(rest),
        Err(_) => path.to_path_buf(),
    }
}

/// Mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let code = std::str::from_utf8(&bytes[i + 1..i + 4])
                .ok()
                .and_then(|digits| u8::from_str_radix(digits, 8).ok());
            if let Some(code) = code {
                out.push(code);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroups of one run.
pub(crate) struct RunCgroup<'a> {
    sys: &'a dyn Syscall,
    /// One folder per hierarchy in use.
    dirs: Vec<PathBuf>,
    memory: (bool, PathBuf),
    pids: PathBuf,
    /// `cgroup.kill` of the v2 folder, when the kernel has it.
    kill_file: Option<PathBuf>,
}

impl<'a> RunCgroup<'a> {
    /// Creates the run's cgroups (named `name`) and writes the limits.
    pub(crate) fn create(
        sys: &'a dyn Syscall,
        layout: &CgroupLayout,
        name: &str,
        limits: &Limits,
    ) -> Result<RunCgroup<'a>, SandboxError> {
        let mut run = RunCgroup {
            sys,
            dirs: Vec::new(),
            memory: (false, PathBuf::new()),
            pids: PathBuf::new(),
            kill_file: None,
        };
        for h in layout.hierarchies() {
            let dir = h.dir(&layout.parent_in(h).join(name));
            sys.mkdir(&dir, 0o755)
                .map_err(|source| SandboxError::Cgroup {
                    action: "create".into(),
                    path: dir.clone(),
                    source,
                })?;
            // pushed at once, so Drop removes what exists even if a write fails
            run.dirs.push(dir.clone());
            if h.mount == layout.memory.mount {
                run.memory = (h.v2, dir.clone());
            }
            if h.mount == layout.pids.mount {
                run.pids = dir.clone();
            }
            if h.v2 && sys.file_kind(&dir.join("cgroup.kill")).is_ok() {
                run.kill_file = Some(dir.join("cgroup.kill"));
            }
        }
        let memory = limits.memory.to_string();
        let (memory_v2, memory_dir) = run.memory.clone();
        if memory_v2 {
            run.write(&memory_dir, "memory.max", &memory, false)?;
            run.write(&memory_dir, "memory.swap.max", "0", true)?;
            // an OOM kill takes the whole run, not one random process
            run.write(&memory_dir, "memory.oom.group", "1", true)?;
        } else {
            run.write(&memory_dir, "memory.limit_in_bytes", &memory, false)?;
            // no escape into swap (only present with swap accounting)
            run.write(&memory_dir, "memory.memsw.limit_in_bytes", &memory, true)?;
        }
        let pids_dir = run.pids.clone();
        run.write(&pids_dir, "pids.max", &limits.processes.to_string(), false)?;
        Ok(run)
    }

    fn write(
        &self,
        dir: &Path,
        file: &str,
        value: &str,
        optional: bool,
    ) -> Result<(), SandboxError> {
        let path = dir.join(file);
        match self.sys.write_file(&path, value.as_bytes()) {
            Ok(()) => Ok(()),
            Err(Errno::ENOENT) if optional => Ok(()),
            Err(source) => Err(SandboxError::Cgroup {
                action: format!("write {value} to"),
                path,
                source,
            }),
        }
    }

    /// `cgroup.procs` of every folder: the first child joins them all.
    pub(crate) fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// How many times the kernel OOM-killed in this run.
    pub(crate) fn oom_kills(&self) -> u64 {
        let (v2, dir) = &self.memory;
        let file = if *v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        self.counter(&dir.join(file), "oom_kill")
    }

    /// How many forks the process limit refused.
    pub(crate) fn process_limit_hits(&self) -> u64 {
        self.counter(&self.pids.join("pids.events"), "max")
    }

    fn counter(&self, file: &Path, key: &str) -> u64 {
        self.sys
            .read_file(file)
            .unwrap_or_default()
            .lines()
            .find_map(|line| {
                let (k, v) = line.split_once(' ')?;
                (k == key).then(|| v.trim().parse().ok()).flatten()
            })
            .unwrap_or(0)
    }

    /// Every process of the run, in all hierarchies.
    pub(crate) fn processes(&self) -> Vec<Pid> {
        let mut pids = HashSet::new();
        for file in self.procs_files() {
            for line in self.sys.read_file(&file).unwrap_or_default().lines() {
                if let Ok(pid) = line.trim().parse::<i32>() {
                    pids.insert(pid);
                }
            }
        }
        pids.into_iter().map(Pid::from_raw).collect()
    }

    /// SIGKILLs everything in the run (`cgroup.kill` where available).
    pub(crate) fn kill_all(&self) {
        if let Some(kill) = &self.kill_file {
            let _ = self.sys.write_file(kill, b"1");
        }
        for pid in self.processes() {
            let _ = self.sys.kill(pid, Signal::SIGKILL);
        }
    }

    /// Kills what is left, waits (up to `patience`) until the cgroups are
    /// empty and removes them.
    pub(crate) fn remove(&mut self, patience: Duration) -> Result<(), SandboxError> {
        let deadline = Instant::now() + patience;
        loop {
            self.kill_all();
            if self.processes().is_empty() {
                break;
            }
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut result = Ok(());
        for dir in std::mem::take(&mut self.dirs) {
            let mut outcome = self.sys.rmdir(&dir);
            // the kernel frees a just-emptied cgroup asynchronously
            while outcome == Err(Errno::EBUSY) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
                outcome = self.sys.rmdir(&dir);
            }
            match outcome {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(source) => {
                    result = Err(SandboxError::Cgroup {
                        action: "remove".into(),
                        path: dir,
                        source,
                    })
                }
            }
        }
        result
    }
}

impl Drop for RunCgroup<'_> {
    fn drop(&mut self) {
        if !self.dirs.is_empty() {
            let _ = self.remove(Duration::from_secs(5));
        }
    }
}

/// Measures the disk use of some folders in a background thread.
pub(crate) struct DiskWatch {
    used: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    paths: Vec<PathBuf>,
    thread: Option<JoinHandle<()>>,
}

impl DiskWatch {
    /// Starts measuring `paths` every `interval`.
    pub(crate) fn start(paths: Vec<PathBuf>, interval: Duration) -> DiskWatch {
        let used = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = (!paths.is_empty()).then(|| {
            let (used, stop, paths) = (used.clone(), stop.clone(), paths.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let walk_started = Instant::now();
                    used.store(disk_usage(&paths), Ordering::Relaxed);
                    // a huge tree is walked less often: at most ~20% of a core
                    let next = Instant::now() + interval.max(walk_started.elapsed() * 4);
                    while Instant::now() < next && !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(interval.min(Duration::from_millis(20)));
                    }
                }
            })
        });
        DiskWatch {
            used,
            stop,
            paths,
            thread,
        }
    }

    /// The last measurement, in bytes.
    pub(crate) fn last(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Stops the thread and measures once more, now.
    pub(crate) fn finish(mut self) -> u64 {
        self.halt();
        disk_usage(&self.paths)
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for DiskWatch {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Bytes allocated on disk below `paths` (hard links counted once, other
/// filesystems and vanished entries skipped, symlinks not followed).
pub(crate) fn disk_usage(paths: &[PathBuf]) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0u64;
    for top in paths {
        let Ok(top_meta) = std::fs::symlink_metadata(top) else {
            continue;
        };
        let device = top_meta.dev();
        let mut pending = vec![top.clone()];
        while let Some(path) = pending.pop() {
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.dev() != device {
                continue;
            }
            if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
                continue;
            }
            total = total.saturating_add(meta.blocks().saturating_mul(512));
            if meta.is_dir() {
                if let Ok(entries) = std::fs::read_dir(&path) {
                    pending.extend(entries.flatten().map(|e| e.path()));
                }
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::fake::{Call, RecordingSyscall};

    const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_CGROUP: &str = "8:pids:/\n4:memory:/job/7\n0::/\n";

    const V2_MOUNTINFO: &str = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";

    #[test]
    fn pure_v2_takes_both_controllers_from_v2() {
        let fake = RecordingSyscall::new()
            .with_file("/proc/self/mountinfo", V2_MOUNTINFO)
            .with_file("/proc/self/cgroup", "0::/\n")
            .with_file("/sys/fs/cgroup/cgroup.controllers", "cpu io memory pids\n");
        let layout = CgroupLayout::detect(&fake, None).unwrap();
        assert!(layout.memory.v2 && layout.pids.v2);
        assert_eq!(layout.memory.mount, Path::new("/sys/fs/cgroup"));
        assert_eq!(layout.hierarchies().len(), 1);
    }

    #[test]
    fn hybrid_hosts_use_v1_controllers_and_v2_for_tracking() {
        let fake = RecordingSyscall::new()
            .with_file("/proc/self/mountinfo", HYBRID_MOUNTINFO)
            .with_file("/proc/self/cgroup", HYBRID_CGROUP)
            .with_file("/sys/fs/cgroup/unified/cgroup.controllers", "hugetlb\n");
        let layout = CgroupLayout::detect(&fake, None).unwrap();
        assert_eq!(
            layout.memory,
            Hierarchy {
                v2: false,
                mount: "/sys/fs/cgroup/memory".into(),
                current: "/job/7".into()
            }
        );
        assert!(!layout.pids.v2);
        assert_eq!(
            layout.tracker.as_ref().map(|t| t.mount.clone()),
            Some("/sys/fs/cgroup/unified".into())
        );
    }

    #[test]
    fn a_missing_controller_is_an_error_not_a_silent_no_limit() {
        let fake = RecordingSyscall::new()
            .with_file("/proc/self/mountinfo", V2_MOUNTINFO)
            .with_file("/proc/self/cgroup", "0::/\n")
            .with_file("/sys/fs/cgroup/cgroup.controllers", "cpu io pids\n");
        let err = CgroupLayout::detect(&fake, None).unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("cgroup controller memory is unavailable"),
            "{message}"
        );
        assert!(message.contains("/sys/fs/cgroup"), "{message}");
    }

    #[test]
    fn run_cgroups_get_the_limits_and_are_removed() {
        let fake = RecordingSyscall::new()
            .with_file("/proc/self/mountinfo", V2_MOUNTINFO)
            .with_file("/proc/self/cgroup", "0::/\n")
            .with_file("/sys/fs/cgroup/cgroup.controllers", "memory pids\n");
        let layout = CgroupLayout::detect(&fake, None).unwrap();
        layout.prepare(&fake).unwrap();
        let limits = Limits {
            memory: 64 << 20,
            processes: 64,
            ..Limits::default()
        };
        let mut run = RunCgroup::create(&fake, &layout, "run-1", &limits).unwrap();
        assert_eq!(
            run.procs_files(),
            vec![PathBuf::from("/sys/fs/cgroup/sifhub/run-1/cgroup.procs")]
        );
        run.remove(Duration::from_millis(10)).unwrap();
        let calls = fake.calls();
        let dir = Path::new("/sys/fs/cgroup/sifhub/run-1");
        for expected in [
            Call::WriteFile(
                "/sys/fs/cgroup/cgroup.subtree_control".into(),
                "+memory +pids".into(),
            ),
            Call::Mkdir("/sys/fs/cgroup/sifhub".into(), 0o755),
            Call::WriteFile(
                "/sys/fs/cgroup/sifhub/cgroup.subtree_control".into(),
                "+memory +pids".into(),
            ),
            Call::Mkdir(dir.into(), 0o755),
            Call::WriteFile(dir.join("memory.max"), "67108864".into()),
            Call::WriteFile(dir.join("memory.swap.max"), "0".into()),
            Call::WriteFile(dir.join("memory.oom.group"), "1".into()),
            Call::WriteFile(dir.join("pids.max"), "64".into()),
            Call::WriteFile(dir.join("cgroup.kill"), "1".into()),
            Call::Rmdir(dir.into()),
        ] {
            assert!(
                calls.contains(&expected),
                "{expected:?} missing from {calls:#?}"
            );
        }
        let order = |c: &Call| calls.iter().position(|x| x == c).unwrap();
        assert!(
            order(&Call::Mkdir(dir.into(), 0o755))
                < order(&Call::WriteFile(dir.join("memory.max"), "67108864".into()))
        );
    }

    #[test]
    fn v1_limits_use_v1_names() {
        let fake = RecordingSyscall::new()
            .with_file("/proc/self/mountinfo", HYBRID_MOUNTINFO)
            .with_file("/proc/self/cgroup", HYBRID_CGROUP)
            .with_file(
                "/sys/fs/cgroup/memory/job/7/sifhub/run-2/memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
            )
            .with_file("/sys/fs/cgroup/pids/sifhub/run-2/pids.events", "max 5\n");
        let layout = CgroupLayout::detect(&fake, None).unwrap();
        let limits = Limits::default();
        let run = RunCgroup::create(&fake, &layout, "run-2", &limits).unwrap();
        let calls = fake.calls();
        assert!(calls.contains(&Call::WriteFile(
            "/sys/fs/cgroup/memory/job/7/sifhub/run-2/memory.limit_in_bytes".into(),
            limits.memory.to_string()
        )));
        assert!(calls.contains(&Call::WriteFile(
            "/sys/fs/cgroup/pids/sifhub/run-2/pids.max".into(),
            "4096".into()
        )));
        assert_eq!(run.procs_files().len(), 3);
        assert_eq!(run.oom_kills(), 3);
        assert_eq!(run.process_limit_hits(), 5);
    }

    #[test]
    fn disk_usage_counts_allocated_blocks_once_per_inode() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![1u8; 256 * 1024]).unwrap();
        std::fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/c"), vec![1u8; 128 * 1024]).unwrap();
        let used = disk_usage(&[dir.path().to_path_buf()]);
        assert!(used >= 384 * 1024, "{used}");
        assert!(used < 512 * 1024, "{used}");
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }
}
