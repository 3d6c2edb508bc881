//! The processes of a run, and the parent's side of it.
//!
//! ```text
//! worker thread ──fork──► setup child (host root → uid 0 in the new user namespace;
//!   │                      joins the cgroups, unshares, stays outside the PID namespace)
//!   │                        └─fork──► init, PID 1 (pivot_root, mounts; reaps orphans)
//!   │                                    └─fork──► the command (exec)
//!   └─ slirp4netns against the setup child's network namespace
//! ```
//!
//! The children report over a status pipe in fixed 16-byte messages (namespaces
//! ready, setup failed at step N, exec failed, command exited). When the
//! command ends, init exits, and the kernel kills everything else in the PID
//! namespace; the parent then kills whatever is left in the run's cgroup and
//! removes it, so nothing the run started outlives it.
//!
//! The parent polls the merged stdout/stderr pipe and splits it into lines for
//! the log callback, and every tick checks the wall clock, the cgroup's OOM
//! and process-limit counters and the disk watcher.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use super::error::SandboxError;
use super::limits::{CgroupLayout, DiskWatch, RunCgroup};
use super::namespaces::{self, Step, StepError};
use super::network::{self, Slirp};
use super::plan::{self, PlanInputs, SetupPlan};
use super::spec::{
    KillReason, LogLine, LogSource, NetworkMode, RootFs, RunOutcome, RunSpec, SandboxConfig,
    Termination,
};
use super::syscall::{read_full, write_full, Forked, Syscall};

/// How often the parent checks limits while the command runs.
const TICK: Duration = Duration::from_millis(100);
/// Longest log line; longer ones are split.
const MAX_LINE: usize = 64 * 1024;
/// How long the parent waits for output and cgroups to drain after the end.
const DRAIN: Duration = Duration::from_secs(5);

/// A report from a sandboxed child to the parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Message {
    NamespacesReady,
    SetupFailed(StepError),
    ExecFailed(Errno),
    Exited(i32),
    Signaled(i32),
}

const MESSAGE_LEN: usize = 16;

impl Message {
    fn encode(self) -> [u8; MESSAGE_LEN] {
        let (kind, a, b, c): (u32, u32, u32, i32) = match self {
            Message::NamespacesReady => (1, 0, 0, 0),
            Message::SetupFailed(e) => (2, e.step as u32, e.index, e.errno as i32),
            Message::ExecFailed(errno) => (3, 0, 0, errno as i32),
            Message::Exited(code) => (4, 0, 0, code),
            Message::Signaled(signal) => (5, 0, 0, signal),
        };
        let mut out = [0u8; MESSAGE_LEN];
        out[0..4].copy_from_slice(&kind.to_ne_bytes());
        out[4..8].copy_from_slice(&a.to_ne_bytes());
        out[8..12].copy_from_slice(&b.to_ne_bytes());
        out[12..16].copy_from_slice(&c.to_ne_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Message> {
        let word = |i: usize| -> Option<[u8; 4]> { bytes.get(i..i + 4)?.try_into().ok() };
        let kind = u32::from_ne_bytes(word(0)?);
        let a = u32::from_ne_bytes(word(4)?);
        let b = u32::from_ne_bytes(word(8)?);
        let c = i32::from_ne_bytes(word(12)?);
        Some(match kind {
            1 => Message::NamespacesReady,
            2 => Message::SetupFailed(StepError {
                step: Step::from_u32(a)?,
                index: b,
                errno: Errno::from_raw(c),
            }),
            3 => Message::ExecFailed(Errno::from_raw(c)),
            4 => Message::Exited(c),
            5 => Message::Signaled(c),
            _ => return None,
        })
    }
}

/// The pipe ends a child uses (numbers are the same in parent and child).
#[derive(Debug, Clone, Copy)]
struct ChildFds {
    status_w: RawFd,
    go_r: RawFd,
    output_w: RawFd,
}

fn send(sys: &dyn Syscall, fds: &ChildFds, message: Message) {
    // nobody to tell if the parent is gone
    let _ = write_full(sys, fds.status_w, &message.encode());
}

/// The setup child: never returns into the caller.
fn setup_child(sys: &dyn Syscall, plan: &SetupPlan, fds: ChildFds) -> ! {
    let code = catch_unwind(AssertUnwindSafe(|| setup_child_main(sys, plan, &fds))).unwrap_or(120);
    sys.exit(code)
}

fn setup_child_main(sys: &dyn Syscall, plan: &SetupPlan, fds: &ChildFds) -> i32 {
    let fail = |step, errno| {
        send(
            sys,
            fds,
            Message::SetupFailed(StepError {
                step,
                index: 0,
                errno,
            }),
        );
        1
    };
    // descriptors of the worker (other runs' pipes, sockets) stay outside
    if let Err(errno) = sys.close_other_fds(&[fds.status_w, fds.go_r, fds.output_w]) {
        return fail(Step::CloseDescriptors, errno);
    }
    if let Err(error) = namespaces::enter_namespaces(sys, plan) {
        send(sys, fds, Message::SetupFailed(error));
        return 1;
    }
    send(sys, fds, Message::NamespacesReady);
    // the parent starts the network, then says go; EOF means it gave up
    let mut go = [0u8; 1];
    match read_full(sys, fds.go_r, &mut go) {
        Ok(1) => {}
        Ok(_) => return 1,
        Err(errno) => return fail(Step::Handshake, errno),
    }
    match sys.fork() {
        Err(errno) => fail(Step::ForkInit, errno),
        Ok(Forked::Child) => {
            let code = catch_unwind(AssertUnwindSafe(|| init_main(sys, plan, fds))).unwrap_or(120);
            sys.exit(code)
        }
        Ok(Forked::Parent(init)) => loop {
            match sys.wait(Some(init), true) {
                Ok(Some(WaitStatus::Exited(..) | WaitStatus::Signaled(..))) | Err(_) => return 0,
                Ok(_) => continue,
            }
        },
    }
}

/// PID 1 of the run: builds the filesystem, starts the command, reaps
/// orphans, and exits with the command — which ends the PID namespace.
fn init_main(sys: &dyn Syscall, plan: &SetupPlan, fds: &ChildFds) -> i32 {
    if let Err(error) = namespaces::build_filesystem(sys, plan) {
        send(sys, fds, Message::SetupFailed(error));
        return 1;
    }
    let command = match sys.fork() {
        Err(errno) => {
            send(
                sys,
                fds,
                Message::SetupFailed(StepError {
                    step: Step::ForkCommand,
                    index: 0,
                    errno,
                }),
            );
            return 1;
        }
        Ok(Forked::Child) => {
            let error = namespaces::exec_command(sys, plan, fds.output_w);
            let message = if error.step == Step::Exec {
                Message::ExecFailed(error.errno)
            } else {
                Message::SetupFailed(error)
            };
            send(sys, fds, message);
            sys.exit(127)
        }
        Ok(Forked::Parent(pid)) => pid,
    };
    loop {
        match sys.wait(None, true) {
            Ok(Some(WaitStatus::Exited(pid, code))) if pid == command => {
                send(sys, fds, Message::Exited(code));
                return code;
            }
            Ok(Some(WaitStatus::Signaled(pid, signal, _))) if pid == command => {
                send(sys, fds, Message::Signaled(signal as i32));
                return 128 + signal as i32;
            }
            Ok(_) => continue,
            Err(errno) => {
                send(
                    sys,
                    fds,
                    Message::SetupFailed(StepError {
                        step: Step::WaitCommand,
                        index: 0,
                        errno,
                    }),
                );
                return 1;
            }
        }
    }
}

/// Splits a byte stream into log lines.
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    pub(crate) fn push(&mut self, data: &[u8], emit: &mut dyn FnMut(String)) {
        self.pending.extend_from_slice(data);
        let mut start = 0;
        while let Some(end) = self.pending[start..].iter().position(|b| *b == b'\n') {
            emit(line_text(&self.pending[start..start + end]));
            start += end + 1;
        }
        self.pending.drain(..start);
        while self.pending.len() >= MAX_LINE {
            let rest = self.pending.split_off(MAX_LINE);
            emit(line_text(&self.pending));
            self.pending = rest;
        }
    }

    pub(crate) fn finish(&mut self, emit: &mut dyn FnMut(String)) {
        if !self.pending.is_empty() {
            emit(line_text(&self.pending));
            self.pending.clear();
        }
    }
}

fn line_text(bytes: &[u8]) -> String {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    String::from_utf8_lossy(bytes).into_owned()
}

/// The per-run host folder: mount points for the root and the id-mapped binds.
struct Staging {
    dir: tempfile::TempDir,
}

impl Staging {
    fn create(state_dir: &Path) -> Result<Staging, SandboxError> {
        let dir = tempfile::Builder::new()
            .prefix("sifhub-sandbox-")
            .tempdir_in(state_dir)
            .map_err(|e| {
                SandboxError::io(format!("create a run folder in {}", state_dir.display()), e)
            })?;
        // uid 0 inside is an unprivileged uid outside: it must be able to pass through
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
            .map_err(|e| SandboxError::io(format!("chmod {}", dir.path().display()), e))?;
        Ok(Staging { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn make_mount_points(&self, plan: &SetupPlan) -> Result<(), SandboxError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |e| SandboxError::io(format!("create {path}"), e)
        };
        std::fs::create_dir(&plan.staging_root).map_err(io(&plan.staging_root))?;
        for bind in &plan.id_mapped_binds {
            if bind.source.is_dir() {
                std::fs::create_dir(&bind.staging).map_err(io(&bind.staging))?;
            } else {
                std::fs::File::create(&bind.staging).map_err(io(&bind.staging))?;
            }
        }
        Ok(())
    }
}

fn run_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "run-{}-{}-{nanos:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Host folders whose disk use counts against the disk limit: the build root
/// and the writable binds, without folders nested in another.
fn disk_paths(spec: &RunSpec) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = Vec::new();
    if let RootFs::Folder(root) = &spec.root {
        paths.push(root.clone());
    }
    paths.extend(
        spec.binds
            .iter()
            .filter(|b| b.writable)
            .map(|b| b.source.clone()),
    );
    let mut paths: Vec<PathBuf> = paths
        .into_iter()
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .collect();
    paths.sort();
    paths.dedup();
    let all = paths.clone();
    paths.retain(|p| !all.iter().any(|other| other != p && p.starts_with(other)));
    paths
}

/// Runs one spec to the end. See the module docs for the process layout.
pub(crate) fn run(
    sys: &dyn Syscall,
    config: &SandboxConfig,
    layout: &CgroupLayout,
    spec: &RunSpec,
    log: &mut dyn FnMut(LogLine),
) -> Result<RunOutcome, SandboxError> {
    let started = Instant::now();
    let limits = spec.limits.clone().unwrap_or_else(|| config.limits.clone());
    let network_mode = spec.network.unwrap_or(config.network);
    let slirp_binary = match network_mode {
        NetworkMode::Slirp => Some(network::find_slirp(config.slirp4netns.as_deref())?),
        NetworkMode::None | NetworkMode::Host => None,
    };
    let staging = Staging::create(&config.state_dir)?;
    let resolv_conf =
        network::resolv_conf(network_mode, Path::new("/etc/resolv.conf"), staging.path())?;
    let mut cgroup = RunCgroup::create(sys, layout, &run_name(), &limits)?;
    let plan = plan::build(&PlanInputs {
        spec,
        limits: &limits,
        network: network_mode,
        id_range: config.id_range,
        cgroup_procs: cgroup.procs_files(),
        staging: staging.path(),
        resolv_conf,
    })?;
    staging.make_mount_points(&plan)?;

    let pipe = |what: &str| {
        sys.pipe()
            .map_err(|e| SandboxError::sys(format!("pipe for {what}"), e))
    };
    let (status_r, status_w) = pipe("status")?;
    let (go_r, go_w) = pipe("handshake")?;
    let (output_r, output_w) = pipe("output")?;
    let fds = ChildFds {
        status_w: status_w.as_raw_fd(),
        go_r: go_r.as_raw_fd(),
        output_w: output_w.as_raw_fd(),
    };
    let setup_pid = match sys.fork().map_err(|e| SandboxError::sys("fork", e))? {
        Forked::Child => setup_child(sys, &plan, fds),
        Forked::Parent(pid) => pid,
    };
    // the children's ends: EOF on the pipes now means the children are gone
    drop((status_w, go_r, output_w));

    let mut monitor = Monitor {
        sys,
        plan: &plan,
        cgroup: &cgroup,
        setup_pid,
        setup_status: None,
        status_r: Some(status_r),
        status_buf: Vec::new(),
        output_r: Some(output_r),
        lines: LineSplitter::default(),
        killed: None,
        ended: None,
        failure: None,
        namespaces_ready: false,
    };
    let slirp = monitor.handshake(config, slirp_binary.as_deref(), staging.path(), go_w, log);
    let outcome = match slirp {
        Ok(slirp) => {
            let disk = DiskWatch::start(disk_paths(spec), config.disk_check_interval);
            monitor.watch(started, &limits, &disk, log);
            monitor.finish(&limits, disk, log);
            drop(slirp);
            monitor.outcome(started)
        }
        Err(error) => {
            monitor.abort();
            Err(error)
        }
    };
    drop(monitor);
    let removed = cgroup.remove(DRAIN);
    let outcome = outcome?;
    removed?;
    Ok(outcome)
}

/// The parent's view of a running sandbox.
struct Monitor<'a> {
    sys: &'a dyn Syscall,
    plan: &'a SetupPlan,
    cgroup: &'a RunCgroup<'a>,
    setup_pid: Pid,
    setup_status: Option<WaitStatus>,
    status_r: Option<OwnedFd>,
    status_buf: Vec<u8>,
    output_r: Option<OwnedFd>,
    lines: LineSplitter,
    killed: Option<KillReason>,
    ended: Option<Termination>,
    failure: Option<SandboxError>,
    namespaces_ready: bool,
}

impl Monitor<'_> {
    /// Waits for the namespaces, starts slirp against them, says go.
    fn handshake(
        &mut self,
        config: &SandboxConfig,
        slirp_binary: Option<&Path>,
        staging: &Path,
        go_w: OwnedFd,
        log: &mut dyn FnMut(LogLine),
    ) -> Result<Option<Slirp>, SandboxError> {
        let deadline = Instant::now() + config.setup_timeout;
        while !self.namespaces_ready {
            if let Some(error) = self.failure.take() {
                return Err(error);
            }
            if self.setup_status.is_some() {
                return Err(SandboxError::Lost(format!(
                    "the setup process ended before the namespaces were ready: {:?}",
                    self.setup_status
                )));
            }
            if Instant::now() > deadline {
                return Err(SandboxError::SetupTimeout(config.setup_timeout));
            }
            self.pump(TICK, log);
            self.reap_setup();
        }
        let slirp = match slirp_binary {
            Some(binary) => Some(Slirp::start(
                self.sys,
                binary,
                self.setup_pid,
                &staging.join("slirp4netns.log"),
                config.setup_timeout,
            )?),
            None => None,
        };
        write_full(self.sys, go_w.as_raw_fd(), b"g")
            .map_err(|e| SandboxError::sys("start the sandboxed command", e))?;
        Ok(slirp)
    }

    /// Until the setup child has ended: output, reports, limits.
    fn watch(
        &mut self,
        started: Instant,
        limits: &super::spec::Limits,
        disk: &DiskWatch,
        log: &mut dyn FnMut(LogLine),
    ) {
        let mut last_check = Instant::now();
        while self.setup_status.is_none() {
            self.pump(TICK, log);
            self.reap_setup();
            // busy output wakes us often; the cgroup files need reading only per tick
            if last_check.elapsed() < TICK {
                continue;
            }
            last_check = Instant::now();
            if self.killed.is_none() {
                if started.elapsed() >= limits.time {
                    self.kill(KillReason::TimeLimit(limits.time), log);
                } else if self.cgroup.oom_kills() > 0 {
                    self.kill(KillReason::MemoryLimit(limits.memory), log);
                } else if self.cgroup.process_limit_hits() > 0 {
                    self.kill(KillReason::ProcessLimit(limits.processes), log);
                } else if disk.last() > limits.disk {
                    self.kill(KillReason::DiskLimit(limits.disk), log);
                }
            } else {
                // keep at it: a fork bomb refills the cgroup while it is being emptied
                self.kill_everything();
            }
        }
    }

    /// After the end: kill leftovers, drain output and reports, last checks.
    fn finish(
        &mut self,
        limits: &super::spec::Limits,
        disk: DiskWatch,
        log: &mut dyn FnMut(LogLine),
    ) {
        self.kill_everything();
        let deadline = Instant::now() + DRAIN;
        while self.output_r.is_some() && Instant::now() < deadline {
            self.kill_everything();
            self.pump(Duration::from_millis(20), log);
        }
        self.output_r = None;
        self.read_status();
        let mut emit = |text| {
            log(LogLine {
                source: LogSource::Command,
                text,
            })
        };
        self.lines.finish(&mut emit);
        let used = disk.finish();
        if self.killed.is_none() && self.failure.is_none() {
            // what happened between the last tick and the end still counts
            if self.cgroup.oom_kills() > 0 {
                self.note_kill(KillReason::MemoryLimit(limits.memory), log);
            } else if self.cgroup.process_limit_hits() > 0 {
                self.note_kill(KillReason::ProcessLimit(limits.processes), log);
            } else if used > limits.disk {
                self.note_kill(KillReason::DiskLimit(limits.disk), log);
            }
        }
    }

    fn outcome(&mut self, started: Instant) -> Result<RunOutcome, SandboxError> {
        if let Some(error) = self.failure.take() {
            return Err(error);
        }
        let termination = match (self.killed.take(), self.ended.take()) {
            (Some(reason), _) => Termination::Killed(reason),
            (None, Some(ended)) => ended,
            (None, None) => {
                return Err(SandboxError::Lost(format!(
                    "setup process status {:?}",
                    self.setup_status
                )))
            }
        };
        Ok(RunOutcome {
            termination,
            duration: started.elapsed(),
        })
    }

    /// Ends a run whose setup failed.
    fn abort(&mut self) {
        self.kill_everything();
        while self.setup_status.is_none() {
            self.kill_everything();
            if let Ok(status) = self.sys.wait(Some(self.setup_pid), true) {
                self.setup_status = status;
            } else {
                break;
            }
        }
    }

    /// Waits up to `timeout` for output or reports and handles what came.
    fn pump(&mut self, timeout: Duration, log: &mut dyn FnMut(LogLine)) {
        let status = self.status_r.as_ref().map(|fd| fd.as_raw_fd());
        let output = self.output_r.as_ref().map(|fd| fd.as_raw_fd());
        let fds: Vec<RawFd> = status.iter().chain(output.iter()).copied().collect();
        if fds.is_empty() {
            std::thread::sleep(timeout);
            return;
        }
        let Ok(ready) = self.sys.poll_readable(&fds, timeout) else {
            std::thread::sleep(timeout);
            return;
        };
        let is_ready = |fd: Option<RawFd>| {
            fd.and_then(|fd| fds.iter().position(|f| *f == fd))
                .is_some_and(|i| ready.get(i) == Some(&true))
        };
        if is_ready(status) {
            self.read_status();
        }
        if let Some(fd) = output.filter(|fd| is_ready(Some(*fd))) {
            let mut buf = vec![0u8; 64 * 1024];
            match self.sys.read_fd(fd, &mut buf) {
                Ok(0) | Err(_) => self.output_r = None,
                Ok(n) => {
                    let mut emit = |text| {
                        log(LogLine {
                            source: LogSource::Command,
                            text,
                        })
                    };
                    self.lines.push(&buf[..n], &mut emit);
                }
            }
        }
    }

    /// Reads every report that is there; EOF closes the status pipe.
    fn read_status(&mut self) {
        while let Some(fd) = self.status_r.as_ref().map(|fd| fd.as_raw_fd()) {
            match self.sys.poll_readable(&[fd], Duration::ZERO) {
                Ok(ready) if ready.first() == Some(&true) => {}
                _ => break,
            }
            let mut buf = [0u8; MESSAGE_LEN * 4];
            match self.sys.read_fd(fd, &mut buf) {
                Ok(0) | Err(_) => self.status_r = None,
                Ok(n) => self.status_buf.extend_from_slice(&buf[..n]),
            }
        }
        while self.status_buf.len() >= MESSAGE_LEN {
            let message: Vec<u8> = self.status_buf.drain(..MESSAGE_LEN).collect();
            match Message::decode(&message) {
                Some(Message::NamespacesReady) => self.namespaces_ready = true,
                Some(Message::SetupFailed(error)) => {
                    self.failure.get_or_insert(error.into_error(self.plan));
                }
                Some(Message::ExecFailed(source)) => {
                    self.failure.get_or_insert(SandboxError::Exec {
                        program: self.plan.program.clone(),
                        source,
                    });
                }
                Some(Message::Exited(code)) => self.ended = Some(Termination::Exited(code)),
                Some(Message::Signaled(signal)) => self.ended = Some(Termination::Signaled(signal)),
                None => {}
            }
        }
    }

    fn reap_setup(&mut self) {
        if self.setup_status.is_none() {
            if let Ok(Some(status)) = self.sys.wait(Some(self.setup_pid), false) {
                self.setup_status = Some(status);
            }
        }
    }

    fn kill(&mut self, reason: KillReason, log: &mut dyn FnMut(LogLine)) {
        self.note_kill(reason, log);
        self.kill_everything();
    }

    fn note_kill(&mut self, reason: KillReason, log: &mut dyn FnMut(LogLine)) {
        if self.killed.is_none() {
            log(LogLine {
                source: LogSource::Sandbox,
                text: reason.to_string(),
            });
            self.killed = Some(reason);
        }
    }

    /// SIGKILL to the setup child and to everything in the cgroup.
    fn kill_everything(&mut self) {
        if self.setup_status.is_none() {
            // still our unreaped child, so the pid cannot have been reused
            let _ = self.sys.kill(self.setup_pid, Signal::SIGKILL);
        }
        self.cgroup.kill_all();
    }
}

impl Drop for Monitor<'_> {
    fn drop(&mut self) {
        if self.setup_status.is_none() {
            self.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        for message in [
            Message::NamespacesReady,
            Message::SetupFailed(StepError {
                step: Step::PivotRoot,
                index: 3,
                errno: Errno::EPERM,
            }),
            Message::ExecFailed(Errno::ENOENT),
            Message::Exited(42),
            Message::Signaled(9),
        ] {
            assert_eq!(Message::decode(&message.encode()), Some(message));
        }
        assert_eq!(Message::decode(&[0u8; 16]), None);
    }

    #[test]
    fn lines_are_split_in_order_with_partial_lines_kept() {
        let mut lines = Vec::new();
        let mut splitter = LineSplitter::default();
        splitter.push(b"one\ntw", &mut |l| lines.push(l));
        splitter.push(b"o\r\nthree", &mut |l| lines.push(l));
        assert_eq!(lines, ["one", "two"]);
        splitter.finish(&mut |l| lines.push(l));
        assert_eq!(lines, ["one", "two", "three"]);
    }

    #[test]
    fn overlong_lines_are_cut() {
        let mut lines = Vec::new();
        let mut splitter = LineSplitter::default();
        splitter.push(&vec![b'x'; MAX_LINE * 2 + 5], &mut |l| lines.push(l));
        assert_eq!(lines.len(), 2);
        splitter.finish(&mut |l| lines.push(l));
        assert_eq!(lines[2].len(), 5);
    }

    #[test]
    fn nested_writable_folders_are_measured_once() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("inner")).unwrap();
        let spec = RunSpec::in_folder(root.path(), ["true"])
            .bind(super::super::spec::Bind::read_write(
                root.path().join("inner"),
                "/x",
            ))
            .bind(super::super::spec::Bind::read_only("/usr", "/y"));
        assert_eq!(
            disk_paths(&spec),
            vec![std::fs::canonicalize(root.path()).unwrap()]
        );
    }
}
