//! Errors of the sandbox. A run that the sandbox *killed* is not an error (see
//! [`crate::sandbox::KillReason`]); these are runs that could not be set up,
//! or a host that cannot enforce the limits.

use std::path::PathBuf;

use nix::errno::Errno;

/// Everything that can stop the sandbox from running a command.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The worker is not root, so it can neither map ids nor create cgroups.
    #[error(
        "the sandbox needs root (it writes uid/gid maps and creates cgroups); running as uid {uid}"
    )]
    NotRoot {
        /// The effective uid of this process.
        uid: u32,
    },
    /// No cgroup hierarchy offers a controller the limits need.
    #[error(
        "cgroup controller {controller} is unavailable, so its limit cannot be enforced: {detail}"
    )]
    CgroupUnavailable {
        /// `memory` or `pids`.
        controller: &'static str,
        /// What was found instead.
        detail: String,
    },
    /// A cgroup file could not be created, written or removed.
    #[error("cgroup: cannot {action} {}: {source}", path.display())]
    Cgroup {
        /// What was being done ("create", "write memory.max to", …).
        action: String,
        /// The cgroup file or folder.
        path: PathBuf,
        /// The kernel's answer.
        source: Errno,
    },
    /// The spec cannot be run as given.
    #[error("invalid run spec: {0}")]
    InvalidSpec(String),
    /// A host-side file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A host-side kernel call failed.
    #[error("{call}: {source}")]
    Sys {
        /// The call, with its arguments.
        call: String,
        /// The kernel's answer.
        source: Errno,
    },
    /// A step of the namespace and filesystem setup failed inside the sandbox.
    #[error("sandbox setup failed: {step}: {source}")]
    Setup {
        /// The step ("mount proc on /proc", "pivot_root into …").
        step: String,
        /// The kernel's answer.
        source: Errno,
    },
    /// The setup did not report back in time.
    #[error("sandbox setup did not finish within {0:?}")]
    SetupTimeout(std::time::Duration),
    /// The command could not be executed (missing interpreter, not executable).
    #[error("cannot run {program} in the sandbox: {source}")]
    Exec {
        /// `argv[0]` of the command.
        program: String,
        /// The kernel's answer to `execve`.
        source: Errno,
    },
    /// `slirp4netns` is needed for the network mode but is not installed.
    #[error("slirp4netns not found (install the Debian package slirp4netns, or choose network mode none or host)")]
    SlirpMissing,
    /// `slirp4netns` did not bring the network up.
    #[error("slirp4netns failed: {0}")]
    Slirp(String),
    /// The sandbox's init process ended without reporting how the command ended.
    #[error("the sandbox ended without reporting the command's exit ({0})")]
    Lost(String),
}

impl SandboxError {
    /// An [`SandboxError::Io`] with its context.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        SandboxError::Io {
            context: context.into(),
            source,
        }
    }

    /// A [`SandboxError::Sys`] for a failed call.
    pub(crate) fn sys(call: impl Into<String>, source: Errno) -> Self {
        SandboxError::Sys {
            call: call.into(),
            source,
        }
    }
}
