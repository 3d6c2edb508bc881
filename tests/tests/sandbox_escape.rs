//! Escape attempts against the build sandbox, each run like a `%post` in a
//! busybox root with the default (slirp) network and small limits: every one
//! must be contained, and a limit that stops one must be named in the log and
//! the outcome. Needs root and the Debian packages busybox-static and
//! slirp4netns.
// Setup helpers fail the test on errors, like the test bodies do.
#![allow(clippy::expect_used)]

use std::io::Read;
use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sifhub_builder::sandbox::{
    KillReason, Limits, LogLine, LogSource, RunOutcome, RunSpec, Sandbox, SandboxConfig,
    Termination,
};
use sifhub_tests::system_tool;

const MIB: u64 = 1 << 20;

/// A root folder with a static busybox and its applets in /bin.
fn busybox_root() -> tempfile::TempDir {
    let busybox = system_tool("busybox", "busybox-static");
    let root = tempfile::tempdir().expect("temp root");
    for dir in ["bin", "etc", "root", "tmp", "mnt"] {
        std::fs::create_dir(root.path().join(dir)).expect("root folder");
    }
    std::fs::copy(&busybox, root.path().join("bin/busybox")).expect("copy busybox");
    let list = std::process::Command::new(&busybox)
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", root.path().join("bin").join(applet))
                .expect("applet link");
        }
    }
    std::fs::write(
        root.path().join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\n",
    )
    .expect("passwd");
    root
}

/// A sandbox with the default network (slirp) and small limits.
fn sandbox(limits: Limits) -> Sandbox {
    system_tool("slirp4netns", "slirp4netns");
    Sandbox::new(SandboxConfig {
        limits,
        disk_check_interval: Duration::from_millis(200),
        ..SandboxConfig::default()
    })
    .unwrap_or_else(|e| panic!("sandbox: {e}"))
}

fn small_limits() -> Limits {
    Limits {
        time: Duration::from_secs(30),
        memory: 128 * MIB,
        processes: 64,
        disk: 64 * MIB,
    }
}

/// Runs a `%post`-like script; returns the outcome, the command's lines and
/// the sandbox's own lines.
fn post(sandbox: &Sandbox, root: &Path, script: &str) -> (RunOutcome, Vec<String>, Vec<String>) {
    let spec = RunSpec::in_folder(root, ["/bin/sh", "-c", script]);
    let (mut command, mut own) = (Vec::new(), Vec::new());
    let outcome = sandbox
        .run(&spec, &mut |line: LogLine| match line.source {
            LogSource::Command => command.push(line.text),
            LogSource::Sandbox => own.push(line.text),
        })
        .unwrap_or_else(|e| panic!("run failed: {e}"));
    (outcome, command, own)
}

/// The host's address on its default route (not loopback).
fn host_address() -> String {
    let probe = UdpSocket::bind("0.0.0.0:0").expect("udp socket");
    probe
        .connect("192.0.2.1:9")
        .expect("this host needs a default route for the outbound check");
    probe.local_addr().expect("local address").ip().to_string()
}

/// Accepts connections in the background and counts them.
fn counting_listener(address: &str) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind(address).expect("listener");
    let port = listener.local_addr().expect("port").port();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (port, count)
}

#[test]
fn host_loopback_services_are_unreachable_but_outbound_works() {
    let (loopback_port, loopback_hits) = counting_listener("127.0.0.1:0");
    let (outside_port, outside_hits) = counting_listener("0.0.0.0:0");
    let host = host_address();
    let root = busybox_root();
    let script = format!(
        "nc -w 2 127.0.0.1 {loopback_port} </dev/null 2>/dev/null && echo lo-connected || echo lo-refused; \
         nc -w 2 10.0.2.2 {loopback_port} </dev/null 2>/dev/null && echo gateway-connected || echo gateway-refused; \
         ip -4 addr show tap0 | grep -q 10.0.2.100 && echo tap0-up || echo tap0-missing; \
         nc -w 5 {host} {outside_port} </dev/null 2>&1 && echo outbound-ok || echo outbound-failed"
    );
    let (outcome, lines, _) = post(&sandbox(small_limits()), root.path(), &script);
    assert!(outcome.success(), "{outcome:?} {lines:?}");
    assert_eq!(
        lines,
        ["lo-refused", "gateway-refused", "tap0-up", "outbound-ok"],
        "the host's loopback must be out of reach while outbound traffic works"
    );
    assert_eq!(
        loopback_hits.load(Ordering::SeqCst),
        0,
        "a connection reached 127.0.0.1"
    );
    assert!(outside_hits.load(Ordering::SeqCst) >= 1);
}

#[test]
fn fork_bomb_is_contained_by_the_process_limit() {
    let root = busybox_root();
    let (outcome, _, own) = post(
        &sandbox(small_limits()),
        root.path(),
        "bomb() { bomb | bomb & }; bomb; sleep 25",
    );
    assert_eq!(
        outcome.termination,
        Termination::Killed(KillReason::ProcessLimit(64))
    );
    assert!(outcome.duration < Duration::from_secs(20), "{outcome:?}");
    assert_eq!(own, ["killed: process limit 64 exceeded"]);
}

#[test]
fn memory_hog_is_killed_at_the_memory_limit() {
    let root = busybox_root();
    let limits = Limits {
        memory: 64 * MIB,
        ..small_limits()
    };
    let (outcome, _, own) = post(
        &sandbox(limits),
        root.path(),
        "awk 'BEGIN { s = \"x\"; while (1) s = s s }'; sleep 25",
    );
    let reason = outcome.kill_reason().expect("killed").to_string();
    assert!(reason.contains("memory limit"), "{reason}");
    assert_eq!(reason, "killed: memory limit 64 MiB exceeded");
    assert_eq!(own, [reason]);
    assert!(outcome.duration < Duration::from_secs(20), "{outcome:?}");
}

#[test]
fn disk_filler_is_killed_at_the_disk_limit() {
    let root = busybox_root();
    let limits = Limits {
        disk: 32 * MIB,
        memory: 256 * MIB,
        ..small_limits()
    };
    let (outcome, _, own) = post(
        &sandbox(limits),
        root.path(),
        "i=0; while [ $i -lt 64 ]; do dd if=/dev/zero of=/fill.$i bs=1M count=8 2>/dev/null; i=$((i+1)); done; sleep 25",
    );
    assert_eq!(
        outcome.termination,
        Termination::Killed(KillReason::DiskLimit(32 * MIB))
    );
    assert_eq!(own, ["killed: disk limit 32 MiB exceeded"]);
    assert!(outcome.duration < Duration::from_secs(20), "{outcome:?}");
}

#[test]
fn wall_clock_limit_stops_a_hanging_script() {
    let root = busybox_root();
    let limits = Limits {
        time: Duration::from_secs(3),
        ..small_limits()
    };
    let (outcome, lines, own) = post(&sandbox(limits), root.path(), "echo waiting; sleep 100");
    assert_eq!(
        outcome.termination,
        Termination::Killed(KillReason::TimeLimit(Duration::from_secs(3)))
    );
    assert_eq!(lines, ["waiting"]);
    assert_eq!(own, ["killed: time limit 3s exceeded"]);
    assert!(
        outcome.duration >= Duration::from_secs(3) && outcome.duration < Duration::from_secs(8),
        "{outcome:?}"
    );
}

/// Host processes running `sleep <arg>`.
fn host_sleeps(arg: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let mut cmdline = Vec::new();
        if std::fs::File::open(entry.path().join("cmdline"))
            .and_then(|mut f| f.read_to_end(&mut cmdline))
            .is_err()
        {
            continue;
        }
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_sleep = args.first().is_some_and(|a| a.ends_with(b"sleep"));
        if is_sleep && args.get(1) == Some(&arg.as_bytes()) {
            found.push(pid);
        }
    }
    found
}

#[test]
fn background_processes_do_not_outlive_the_section() {
    assert!(
        host_sleeps("1000").is_empty(),
        "a `sleep 1000` is already running"
    );
    let root = busybox_root();
    let (outcome, lines, _) = post(
        &sandbox(small_limits()),
        root.path(),
        "sleep 1000 & (sleep 1000 &) ; setsid sleep 1000 & echo started",
    );
    assert!(outcome.success(), "{outcome:?}");
    assert_eq!(lines, ["started"]);
    assert!(
        outcome.duration < Duration::from_secs(10),
        "the run waited for its children"
    );
    assert_eq!(
        host_sleeps("1000"),
        Vec::<u32>::new(),
        "sleep 1000 outlived the run"
    );
}

#[test]
fn host_shadow_file_cannot_be_read() {
    let shadow = std::fs::read_to_string("/etc/shadow").expect("host /etc/shadow (run as root)");
    let secret = shadow
        .lines()
        .find(|l| l.starts_with("root:"))
        .expect("root entry in /etc/shadow")
        .to_string();
    let root = busybox_root();
    let attempts = "cat /etc/shadow; cat /proc/1/root/etc/shadow; cat /.sifhub-oldroot/etc/shadow; \
                    cat /proc/self/root/../../etc/shadow; cat /proc/1/cwd/../../etc/shadow; \
                    mount -t proc proc /mnt && cat /mnt/1/root/etc/shadow; \
                    mount --bind / /mnt && cat /mnt/etc/shadow; \
                    ls /dev | grep -v -E '^(null|zero|full|random|urandom|tty|pts|shm|ptmx|fd|stdin|stdout|stderr)$'; \
                    echo done";
    let sandbox = sandbox(small_limits());
    let (outcome, lines, _) = post(&sandbox, root.path(), &format!("({attempts}) 2>&1"));
    assert!(outcome.success(), "{outcome:?}");
    assert_eq!(lines.last().map(String::as_str), Some("done"), "{lines:?}");
    assert!(
        !lines
            .iter()
            .any(|l| l.contains(&secret) || l.starts_with("root:")),
        "host shadow leaked: {lines:?}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| ["vda", "sda", "nvme0n1", "mem", "kmsg"].contains(&l.as_str())),
        "host devices visible: {lines:?}"
    );

    // %setup's root has the host's tools but no host /etc
    let context = tempfile::tempdir().expect("context");
    let spec = RunSpec::setup_section(
        root.path(),
        context.path(),
        ["/bin/sh", "-c", "cat /etc/shadow 2>&1; ls /etc; echo done"],
    );
    let mut lines = Vec::new();
    let outcome = sandbox
        .run(&spec, &mut |line| lines.push(line.text))
        .expect("setup run");
    assert!(outcome.success(), "{outcome:?} {lines:?}");
    assert!(!lines.iter().any(|l| l.contains(&secret)), "{lines:?}");
    assert!(!lines.iter().any(|l| l == "shadow"), "{lines:?}");
}

#[test]
fn the_command_cannot_reach_init_or_forge_its_reports() {
    let root = busybox_root();
    // an "exec failed" report (kind 3, errno 2), as init would send it
    let forged = "\\003\\000\\000\\000\\000\\000\\000\\000\\000\\000\\000\\000\\002\\000\\000\\000";
    let script = format!(
        "ls /proc/1/fd >/dev/null 2>&1 && echo init-fds-visible || echo init-fds-hidden; \
         for fd in 0 1 2 3 4 5 6 7 8 9 10 11 12; do printf '{forged}' > /proc/1/fd/$fd; done 2>/dev/null; \
         exit 3"
    );
    let (outcome, lines, _) = post(&sandbox(small_limits()), root.path(), &script);
    assert_eq!(lines, ["init-fds-hidden"]);
    assert_eq!(outcome.termination, Termination::Exited(3));
}
