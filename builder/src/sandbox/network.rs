//! The network of a run. In the default mode ([`NetworkMode::Slirp`]) the run
//! has its own network namespace and `slirp4netns` (a user-mode TCP/IP stack
//! on the host side, started against the run's namespace) gives it outbound
//! access as `10.0.2.100` behind the gateway `10.0.2.2`. `--disable-host-loopback`
//! stops slirp from forwarding `10.0.2.2` to the host's `127.0.0.1`, and the
//! run's own `127.0.0.1` is its own `lo`, so services that listen on the
//! host's loopback stay out of reach. slirp runs with `--enable-sandbox` and
//! `--enable-seccomp`: it parses untrusted traffic, so it gets a private mount
//! namespace, no capabilities it does not need and a syscall filter.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::unistd::Pid;

use super::error::SandboxError;
use super::spec::NetworkMode;
use super::syscall::{read_full, Syscall};

/// slirp's DNS forwarder, as seen from inside.
pub(crate) const SLIRP_DNS: &str = "10.0.2.3";

/// The `resolv.conf` to bind into the run, if the host has one: the host's,
/// or for slirp, when the host names resolvers on its loopback (such as
/// systemd-resolved's `127.0.0.53`, unreachable from inside), a copy in
/// `staging` that points at slirp's forwarder instead.
pub(crate) fn resolv_conf(
    mode: NetworkMode,
    host: &Path,
    staging: &Path,
) -> Result<Option<PathBuf>, SandboxError> {
    let Ok(host) = std::fs::canonicalize(host) else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&host)
        .map_err(|e| SandboxError::io(format!("read {}", host.display()), e))?;
    let loopback_resolver = text.lines().any(|line| {
        let mut words = line.split_whitespace();
        words.next() == Some("nameserver")
            && words
                .next()
                .and_then(|addr| addr.parse::<std::net::IpAddr>().ok())
                .is_some_and(|ip| ip.is_loopback())
    });
    if mode != NetworkMode::Slirp || !loopback_resolver {
        return Ok(Some(host));
    }
    let mut rewritten = format!("nameserver {SLIRP_DNS}\n");
    for line in text.lines() {
        if !line.trim_start().starts_with("nameserver") {
            rewritten.push_str(line);
            rewritten.push('\n');
        }
    }
    let copy = staging.join("resolv.conf");
    std::fs::write(&copy, rewritten)
        .map_err(|e| SandboxError::io(format!("write {}", copy.display()), e))?;
    Ok(Some(copy))
}

/// Finds the `slirp4netns` binary: the configured path, or on `PATH`.
pub(crate) fn find_slirp(configured: Option<&Path>) -> Result<PathBuf, SandboxError> {
    if let Some(path) = configured {
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else {
            Err(SandboxError::SlirpMissing)
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("slirp4netns"))
        .find(|candidate| candidate.is_file())
        .ok_or(SandboxError::SlirpMissing)
}

/// A running `slirp4netns` serving one run.
pub(crate) struct Slirp {
    child: Child,
    /// Closing this ends slirp (its `--exit-fd`).
    exit_w: Option<std::os::fd::OwnedFd>,
}

impl Slirp {
    /// Starts slirp against the network namespace of `target` and waits until
    /// it has configured `tap0` (address, route, `lo`).
    pub(crate) fn start(
        sys: &dyn Syscall,
        binary: &Path,
        target: Pid,
        log_file: &Path,
        timeout: Duration,
    ) -> Result<Slirp, SandboxError> {
        let pipe_err = |e| SandboxError::sys("pipe", e);
        let (ready_r, ready_w) = sys.pipe().map_err(pipe_err)?;
        let (exit_r, exit_w) = sys.pipe().map_err(pipe_err)?;
        let log = std::fs::File::create(log_file)
            .map_err(|e| SandboxError::io(format!("create {}", log_file.display()), e))?;
        let mut command = Command::new(binary);
        command
            .arg("--configure")
            .arg("--mtu=65520")
            .arg("--disable-host-loopback")
            .arg("--enable-sandbox")
            .arg("--enable-seccomp")
            .arg(format!("--ready-fd={}", ready_w.as_raw_fd()))
            .arg(format!("--exit-fd={}", exit_r.as_raw_fd()))
            .arg(target.to_string())
            .arg("tap0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = sys
            .spawn_helper(&mut command, &[ready_w.as_raw_fd(), exit_r.as_raw_fd()])
            .map_err(|e| SandboxError::io(format!("start {}", binary.display()), e))?;
        drop(ready_w);
        drop(exit_r);
        let mut slirp = Slirp {
            child,
            exit_w: Some(exit_w),
        };

        let started = Instant::now();
        let failure = loop {
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                break format!("no ready signal within {timeout:?}");
            }
            match sys.poll_readable(&[ready_r.as_raw_fd()], left) {
                Ok(ready) if ready.first() == Some(&true) => {
                    let mut byte = [0u8; 1];
                    match read_full(sys, ready_r.as_raw_fd(), &mut byte) {
                        Ok(1) => return Ok(slirp),
                        _ => break "it exited before the network was up".to_string(),
                    }
                }
                Ok(_) => continue,
                Err(e) => break format!("poll: {e}"),
            }
        };
        slirp.stop();
        let log = std::fs::read_to_string(log_file).unwrap_or_default();
        let last_lines: Vec<&str> = log.lines().rev().take(5).collect();
        let detail: Vec<&str> = last_lines.into_iter().rev().collect();
        Err(SandboxError::Slirp(format!(
            "{failure}; {}",
            detail.join(" | ")
        )))
    }

    /// Ends slirp and reaps it.
    pub(crate) fn stop(&mut self) {
        self.exit_w = None;
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Slirp {
    fn drop(&mut self) {
        if self.exit_w.is_some() {
            self.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_resolvers_are_replaced_for_slirp_only() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("host-resolv.conf");
        std::fs::write(&host, "nameserver 127.0.0.53\noptions edns0\nsearch lan\n").unwrap();
        let slirp = resolv_conf(NetworkMode::Slirp, &host, dir.path())
            .unwrap()
            .unwrap();
        assert_eq!(slirp, dir.path().join("resolv.conf"));
        assert_eq!(
            std::fs::read_to_string(&slirp).unwrap(),
            "nameserver 10.0.2.3\noptions edns0\nsearch lan\n"
        );
        let host_mode = resolv_conf(NetworkMode::Host, &host, dir.path())
            .unwrap()
            .unwrap();
        assert_eq!(host_mode, std::fs::canonicalize(&host).unwrap());
    }

    #[test]
    fn ordinary_resolvers_are_bound_as_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("r");
        std::fs::write(&host, "nameserver 192.0.2.1\n").unwrap();
        let chosen = resolv_conf(NetworkMode::Slirp, &host, dir.path())
            .unwrap()
            .unwrap();
        assert_eq!(chosen, std::fs::canonicalize(&host).unwrap());
        assert_eq!(
            resolv_conf(NetworkMode::Slirp, &dir.path().join("absent"), dir.path()).unwrap(),
            None
        );
    }
}
