//! The sandbox against the real kernel: a busybox root folder, real
//! namespaces, cgroups and id-mapped mounts. Needs root and the Debian package
//! busybox-static.
// Setup helpers fail the test on errors, like the test bodies do.
#![allow(clippy::expect_used)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sifhub_builder::sandbox::{
    Bind, Limits, LogLine, LogSource, NetworkMode, RunOutcome, RunSpec, Sandbox, SandboxConfig,
    SandboxError, Termination,
};

/// A static busybox, or a failure naming the package.
fn busybox() -> PathBuf {
    for path in ["/bin/busybox", "/usr/bin/busybox"] {
        let path = Path::new(path);
        if let Ok(bytes) = std::fs::read(path) {
            assert!(
                !has_interpreter(&bytes),
                "{} is dynamically linked: install the Debian package busybox-static",
                path.display()
            );
            return path.to_path_buf();
        }
    }
    panic!("busybox not found: install the Debian package busybox-static");
}

/// Whether an ELF64 file names a program interpreter (is dynamically linked).
fn has_interpreter(elf: &[u8]) -> bool {
    let read = |at: usize, len: usize| -> u64 {
        elf.get(at..at + len)
            .map(|b| b.iter().rev().fold(0u64, |acc, x| acc << 8 | u64::from(*x)))
            .unwrap_or(0)
    };
    let (offset, size, count) = (
        read(0x20, 8) as usize,
        read(0x36, 2) as usize,
        read(0x38, 2) as usize,
    );
    (0..count).any(|i| read(offset + i * size, 4) == 3)
}

/// A root folder with busybox and its applets in /bin.
fn busybox_root() -> tempfile::TempDir {
    let busybox = busybox();
    let root = tempfile::tempdir().expect("temp root");
    for dir in ["bin", "etc", "root", "tmp", "work"] {
        std::fs::create_dir(root.path().join(dir)).expect("root folder");
    }
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod root");
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
    std::fs::write(root.path().join("etc/group"), "root:x:0:\n").expect("group");
    root
}

fn sandbox() -> Sandbox {
    assert!(
        nix_euid_is_root(),
        "the sandbox tests need root (uid/gid maps, cgroups, mounts)"
    );
    Sandbox::new(SandboxConfig {
        network: NetworkMode::None,
        limits: Limits {
            time: Duration::from_secs(60),
            memory: 256 << 20,
            processes: 256,
            disk: 256 << 20,
        },
        ..SandboxConfig::default()
    })
    .expect("sandbox")
}

fn nix_euid_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn sh(root: &Path, script: &str) -> RunSpec {
    RunSpec::in_folder(root, ["/bin/sh", "-c", script])
}

/// Runs and returns the outcome and the command's lines.
fn run(sandbox: &Sandbox, spec: &RunSpec) -> (RunOutcome, Vec<String>) {
    let mut lines = Vec::new();
    let outcome = sandbox
        .run(spec, &mut |line: LogLine| {
            assert_eq!(line.source, LogSource::Command, "{line:?}");
            lines.push(line.text)
        })
        .unwrap_or_else(|e| panic!("run failed: {e}"));
    (outcome, lines)
}

#[test]
fn command_runs_as_root_in_its_own_namespaces() {
    let root = busybox_root();
    let spec = sh(
        root.path(),
        "id -u; id -g; echo $$; cat /proc/1/comm; hostname; cat /proc/self/uid_map; \
         ls /proc | grep -c '^[0-9]'",
    )
    .hostname("testbox");
    let (outcome, lines) = run(&sandbox(), &spec);
    assert!(outcome.success(), "{outcome:?} {lines:?}");
    assert_eq!(lines[0], "0", "uid inside");
    assert_eq!(lines[1], "0", "gid inside");
    assert_eq!(
        lines[2], "2",
        "the command is the first child of the namespace's init"
    );
    assert_eq!(lines[3], "sifhub-init", "PID 1 is the sandbox's init");
    assert_eq!(lines[4], "testbox");
    let map: Vec<&str> = lines[5].split_whitespace().collect();
    assert_eq!(map, ["0", "100000", "65536"]);
    let processes: usize = lines[6].parse().expect("process count");
    assert!(
        processes <= 4,
        "a fresh /proc shows only the run's processes, saw {processes}"
    );
}

#[test]
fn host_files_are_out_of_reach() {
    let root = busybox_root();
    let host_dir = tempfile::tempdir().expect("host dir");
    let marker = host_dir.path().join("host-marker-5f1c");
    std::fs::write(&marker, "secret").expect("marker");
    let script = format!(
        "test -e {m} && echo visible || echo absent; \
         find / -name host-marker-5f1c 2>/dev/null | wc -l; \
         ls /.sifhub-oldroot 2>/dev/null | wc -l; \
         cat /proc/1/root{m} 2>/dev/null || echo no-proc-path",
        m = marker.display()
    );
    let (outcome, lines) = run(&sandbox(), &sh(root.path(), &script));
    assert!(outcome.success(), "{outcome:?} {lines:?}");
    assert_eq!(lines, ["absent", "0", "0", "no-proc-path"]);
    assert!(
        !root.path().join(".sifhub-oldroot").exists(),
        "the pivot folder is removed from the build root"
    );
}

#[test]
fn chown_inside_keeps_in_container_ownership_on_disk() {
    let root = busybox_root();
    let script = "touch /owned && chown 42:42 /owned && stat -c %u:%g /owned; \
                  touch /by-root; mkdir -p /var/cache/apt; chown 100:65534 /var/cache/apt; \
                  stat -c %u:%g /bin/busybox";
    let (outcome, lines) = run(&sandbox(), &sh(root.path(), script));
    assert!(outcome.success(), "{outcome:?} {lines:?}");
    assert_eq!(lines[0], "42:42", "ownership inside");
    assert_eq!(
        lines[1], "0:0",
        "files owned by root on disk are root's inside"
    );
    let owned = std::fs::metadata(root.path().join("owned")).expect("owned");
    assert_eq!(
        (owned.uid(), owned.gid()),
        (42, 42),
        "on disk: in-container ids"
    );
    let by_root = std::fs::metadata(root.path().join("by-root")).expect("by-root");
    assert_eq!((by_root.uid(), by_root.gid()), (0, 0));
    let apt = std::fs::metadata(root.path().join("var/cache/apt")).expect("apt");
    assert_eq!((apt.uid(), apt.gid()), (100, 65534));
}

#[test]
fn env_and_cwd_are_honoured_and_nothing_else_is_inherited() {
    let root = busybox_root();
    let spec = sh(
        root.path(),
        "echo \"$GREETING\"; pwd; env | grep -c CARGO; echo $HOME",
    )
    .env("GREETING", "hello sandbox")
    .cwd("/work");
    let (outcome, lines) = run(&sandbox(), &spec);
    assert!(outcome.success(), "{outcome:?} {lines:?}");
    assert_eq!(lines, ["hello sandbox", "/work", "0", "/root"]);
}

#[test]
fn exit_codes_and_signals_are_propagated() {
    let root = busybox_root();
    let sandbox = sandbox();
    let (outcome, _) = run(&sandbox, &sh(root.path(), "exit 7"));
    assert_eq!(outcome.termination, Termination::Exited(7));
    assert_eq!(outcome.exit_code(), Some(7));
    let (outcome, _) = run(&sandbox, &sh(root.path(), "kill -TERM $$; sleep 5"));
    assert_eq!(outcome.termination, Termination::Signaled(15));
}

#[test]
fn output_lines_stream_in_order() {
    let root = busybox_root();
    let script = "for i in $(seq 1 3000); do echo out $i; if [ $((i % 100)) = 0 ]; then echo err $i >&2; fi; done; printf 'no newline'";
    let (outcome, lines) = run(&sandbox(), &sh(root.path(), script));
    assert!(outcome.success(), "{outcome:?}");
    let mut expected = Vec::new();
    for i in 1..=3000 {
        expected.push(format!("out {i}"));
        if i % 100 == 0 {
            expected.push(format!("err {i}"));
        }
    }
    expected.push("no newline".into());
    assert_eq!(lines.len(), expected.len());
    assert_eq!(lines, expected);
}

#[test]
fn lines_arrive_while_the_command_is_still_running() {
    let root = busybox_root();
    let started = std::time::Instant::now();
    let mut first_line_at = None;
    let outcome = sandbox()
        .run(
            &sh(root.path(), "echo early; sleep 2; echo late"),
            &mut |_| {
                first_line_at.get_or_insert(started.elapsed());
            },
        )
        .expect("run");
    assert!(outcome.success());
    let first = first_line_at.expect("a line");
    assert!(
        first < Duration::from_millis(1500) && outcome.duration >= Duration::from_secs(2),
        "first line after {first:?}, run took {:?}",
        outcome.duration
    );
}

#[test]
fn a_missing_interpreter_is_an_exec_error() {
    let root = busybox_root();
    let spec = RunSpec::in_folder(root.path(), ["/bin/bash", "-c", "true"]);
    let err = sandbox()
        .run(&spec, &mut |_| {})
        .expect_err("no bash in busybox");
    assert!(
        matches!(&err, SandboxError::Exec { program, .. } if program == "/bin/bash"),
        "{err}"
    );
    assert!(err.to_string().contains("ENOENT"), "{err}");
}

#[test]
fn binds_are_read_only_or_writable_as_asked() {
    let root = busybox_root();
    let ro = tempfile::tempdir().expect("ro");
    let rw = tempfile::tempdir().expect("rw");
    std::fs::write(ro.path().join("input"), "data\n").expect("input");
    let spec = sh(
        root.path(),
        "cat /in/input; touch /in/x 2>/dev/null && echo ro-writable || echo ro-refused; \
         echo made > /out/result && stat -c %u /out/result",
    )
    .bind(Bind::read_only(ro.path(), "/in"))
    .bind(Bind::read_write(rw.path(), "/out"));
    let (outcome, lines) = run(&sandbox(), &spec);
    assert!(outcome.success(), "{outcome:?} {lines:?}");
    assert_eq!(lines, ["data", "ro-refused", "0"]);
    let result = rw.path().join("result");
    assert_eq!(std::fs::read_to_string(&result).expect("result"), "made\n");
    assert_eq!(std::fs::metadata(&result).expect("meta").uid(), 0);
}

#[test]
fn read_only_root_refuses_writes() {
    let root = busybox_root();
    let spec = sh(
        root.path(),
        "touch /x 2>/dev/null && echo wrote || echo refused; touch /tmp/ok && echo tmp-ok",
    )
    .read_only_root();
    let (outcome, lines) = run(&sandbox(), &spec);
    assert!(outcome.success(), "{outcome:?}");
    assert_eq!(lines, ["refused", "tmp-ok"]);
}

#[test]
fn setup_section_sees_the_build_root_and_context_but_not_host_etc() {
    let build_root = busybox_root();
    let context = tempfile::tempdir().expect("context");
    std::fs::write(
        context.path().join("payload.txt"),
        "from the recipe's folder",
    )
    .expect("payload");
    std::fs::create_dir(build_root.path().join("opt")).expect("opt");
    let script = "cp payload.txt \"$SINGULARITY_ROOTFS/opt/\" && touch \"$APPTAINER_ROOTFS/made-in-setup\"; \
                  pwd; test -e /etc/shadow && echo shadow-visible || echo no-shadow; id -u";
    let spec = RunSpec::setup_section(build_root.path(), context.path(), ["/bin/sh", "-c", script]);
    let (outcome, lines) = run(&sandbox(), &spec);
    assert!(outcome.success(), "{outcome:?} {lines:?}");
    assert_eq!(lines, ["/context", "no-shadow", "0"]);
    let copied = build_root.path().join("opt/payload.txt");
    assert_eq!(
        std::fs::read_to_string(&copied).expect("copied"),
        "from the recipe's folder"
    );
    assert_eq!(std::fs::metadata(&copied).expect("meta").uid(), 0);
    assert!(build_root.path().join("made-in-setup").exists());
}

#[test]
fn concurrent_runs_do_not_disturb_each_other() {
    let sandbox = sandbox();
    let roots: Vec<_> = (0..4).map(|_| busybox_root()).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = roots
            .iter()
            .enumerate()
            .map(|(i, root)| {
                let sandbox = &sandbox;
                scope.spawn(move || {
                    let spec = sh(root.path(), &format!("sleep 0.3; echo run {i}"));
                    run(sandbox, &spec)
                })
            })
            .collect();
        for (i, handle) in handles.into_iter().enumerate() {
            let (outcome, lines) = handle.join().expect("thread");
            assert!(outcome.success());
            assert_eq!(lines, [format!("run {i}")]);
        }
    });
}

#[test]
fn network_none_has_only_loopback_and_host_mode_shares_the_host_network() {
    let root = busybox_root();
    let sandbox = sandbox();
    let script = "ip -o link | wc -l; ip -o -4 addr show lo | grep -c 127.0.0.1";
    let (outcome, lines) = run(
        &sandbox,
        &sh(root.path(), script).network(NetworkMode::None),
    );
    assert!(outcome.success(), "{outcome:?} {lines:?}");
    assert_eq!(lines, ["1", "1"], "only lo, and it is up");

    let host_links = std::fs::read_dir("/sys/class/net")
        .expect("/sys/class/net")
        .count();
    let (outcome, lines) = run(
        &sandbox,
        &sh(root.path(), "ip -o link | wc -l").network(NetworkMode::Host),
    );
    assert!(outcome.success(), "{outcome:?} {lines:?}");
    assert_eq!(lines, [host_links.to_string()]);
}
