//! The build sandbox: every user-supplied command of a build (`%setup`,
//! `%post`, `%test`) runs here.
//!
//! ```no_run
//! use sifhub_builder::sandbox::{RunSpec, Sandbox, SandboxConfig};
//! let sandbox = Sandbox::new(SandboxConfig::default())?;
//! let spec = RunSpec::in_folder("/var/lib/sifhub/build/42/root", ["/bin/sh", "-c", "apt-get update"]);
//! let outcome = sandbox.run(&spec, &mut |line| println!("{}", line.text))?;
//! println!("{}", outcome.termination);
//! # Ok::<(), sifhub_builder::sandbox::SandboxError>(())
//! ```
//!
//! **Isolation.** A run gets new user, mount, PID, UTS, IPC and cgroup
//! namespaces, and a network namespace unless [`NetworkMode::Host`]. It is
//! pivoted into its root (the old root is detached before the command starts),
//! with a fresh `/proc`, a minimal `/dev` (null, zero, full, random, urandom,
//! tty bound from the host; `/dev/pts`, `/dev/shm`, `/dev/fd` and friends),
//! a tmpfs `/tmp`, the host's `/etc/resolv.conf` read-only and the spec's
//! binds. Inside, the command is uid/gid 0 with 65536 ids mapped to an
//! unprivileged host range ([`IdRange`], default 100000–165535), so package
//! managers can `chown` to their system users. It has no controlling
//! terminal, no inherited descriptors and only the spec's environment.
//!
//! **Ownership on disk.** The build root is mounted *id-mapped* with the
//! run's user namespace (`mount_setattr(MOUNT_ATTR_IDMAP)`, Linux ≥ 5.12 on
//! ext4, xfs, btrfs, tmpfs…). A file owned by uid 0 on disk is owned by uid 0
//! inside, and `chown 42:42` inside stores 42:42 on disk. So the build root
//! always holds in-container ownership: bootstrap can unpack layers as they
//! are, and assembly and squashing read the folder as it is, with nothing to
//! shift before or after a run. A filesystem without id-mapped mounts is a
//! clear setup error naming the build root.
//!
//! **`%setup`.** [`RunSpec::setup_section`] runs the script in a
//! [`RootFs::HostTools`] root: an in-memory root with the host's `/usr`
//! (and `/bin`, `/lib*`) read-only for the tools, a generated `/etc` (no host
//! secrets), the build root writable at `/rootfs` (`$SINGULARITY_ROOTFS`,
//! `$APPTAINER_ROOTFS`) and the build context writable at `/context`, its
//! working folder. Apptainer runs `%setup` as host root with the whole host
//! visible; here it sees only what it needs, with the same limits.
//!
//! **Limits and clean-up.** See [`limits`] for the cgroup and disk-limit
//! design. When a limit is hit the run is killed and the log gets a line like
//! `killed: memory limit 2 GiB exceeded`; [`RunOutcome::termination`] holds
//! the same [`KillReason`]. When the command ends (or is killed), init (PID 1
//! of the run) exits, which makes the kernel kill everything else in the PID
//! namespace, and the run's cgroup is emptied and removed: a `sleep 1000 &`
//! does not outlive its section.
//!
//! **Network.** See [`network`]: slirp4netns without host loopback by
//! default, `lo` only, or the host's.
//!
//! The kernel calls are behind the `Syscall` trait in `syscall.rs` (the youki
//! model), so the setup sequence is unit-tested against a recording fake.

mod error;
pub mod limits;
mod namespaces;
pub mod network;
mod plan;
mod process;
mod spec;
mod syscall;

#[cfg(test)]
mod fake;

pub use error::SandboxError;
pub use spec::{
    format_bytes, format_duration, Bind, IdRange, KillReason, Limits, LogLine, LogSource,
    NetworkMode, RootFs, RunOutcome, RunSpec, SandboxConfig, Termination, DEFAULT_PATH,
    SETUP_CONTEXT_MOUNT, SETUP_ROOTFS_MOUNT,
};

use limits::CgroupLayout;
use syscall::{LinuxSyscall, Syscall};

/// Runs commands in isolated, limited sandboxes. Create one per worker; it
/// can run several specs at once from different threads.
pub struct Sandbox {
    config: SandboxConfig,
    layout: CgroupLayout,
    sys: Box<dyn Syscall>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("config", &self.config)
            .field("cgroups", &self.layout)
            .finish()
    }
}

impl Sandbox {
    /// Checks that this host can sandbox and enforce every limit: running as
    /// root, cgroup controllers `memory` and `pids` available and delegable,
    /// `slirp4netns` installed when the default network needs it.
    pub fn new(config: SandboxConfig) -> Result<Sandbox, SandboxError> {
        Sandbox::with_syscall(config, Box::new(LinuxSyscall))
    }

    fn with_syscall(config: SandboxConfig, sys: Box<dyn Syscall>) -> Result<Sandbox, SandboxError> {
        let uid = sys.geteuid();
        if uid != 0 {
            return Err(SandboxError::NotRoot { uid });
        }
        let layout = CgroupLayout::detect(&*sys, config.cgroup_parent.clone())?;
        layout.prepare(&*sys)?;
        if config.network == NetworkMode::Slirp {
            network::find_slirp(config.slirp4netns.as_deref())?;
        }
        Ok(Sandbox {
            config,
            layout,
            sys,
        })
    }

    /// The configuration this sandbox was made with.
    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// Runs `spec` to its end, streaming its output line by line to `log`
    /// (on this thread, in order). A run killed for a limit is an `Ok` with
    /// [`Termination::Killed`]; an `Err` means the sandbox could not run it.
    pub fn run(
        &self,
        spec: &RunSpec,
        log: &mut dyn FnMut(LogLine),
    ) -> Result<RunOutcome, SandboxError> {
        process::run(&*self.sys, &self.config, &self.layout, spec, log)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fake::RecordingSyscall;

    #[test]
    fn a_host_without_memory_control_refuses_to_build_a_sandbox() {
        let fake = RecordingSyscall::new()
            .with_file(
                "/proc/self/mountinfo",
                "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
            )
            .with_file("/proc/self/cgroup", "0::/\n")
            .with_file("/sys/fs/cgroup/cgroup.controllers", "cpu pids\n");
        let config = SandboxConfig {
            network: NetworkMode::None,
            ..SandboxConfig::default()
        };
        let err = Sandbox::with_syscall(config, Box::new(fake)).unwrap_err();
        assert!(matches!(
            err,
            SandboxError::CgroupUnavailable {
                controller: "memory",
                ..
            }
        ));
    }
}
