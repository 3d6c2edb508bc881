//! Hostile recipes against `sifhub build` (the real binary): each attempt
//! must be contained, fail or pass as stated, and be reported in the build
//! log. `%files` may not read outside the recipe's folder (relative climbs,
//! absolute host paths, symlinks out of it); `%setup` sees no host secrets;
//! `%post` cannot reach services on the host's loopback, and a fork bomb, a
//! memory hog and a disk filler are killed at the limits given on the
//! command line; nothing `%post` leaves running survives the build; a base
//! image whose layers climb out of the root fails the build, naming the
//! layer and the entry.
//! Needs root and the Debian packages docker-registry, skopeo, umoci,
//! squashfs-tools, slirp4netns, busybox-static.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sifhub_tests::registry::{
    fixtures_dir, seeded_registry, write_oci_layout, CraftedLayer, LayerTar, PushFormat, Registry,
};
use sifhub_tests::sifhub_bin;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A recipe folder with `body` (`{{ REGISTRY }}` replaced) as `Singularity`.
fn recipe_dir(reg: &Registry, body: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("Singularity"),
        body.replace("{{ REGISTRY }}", reg.host()),
    )
    .unwrap();
    dir
}

/// `sifhub build Singularity -o image.sif ARGS…` in `dir`, with small limits
/// unless `args` override them; returns the output and the build log.
fn build(dir: &Path, args: &[&str]) -> (Output, String) {
    let out = dir.join("image.sif");
    let output = Command::new(sifhub_bin())
        .arg("build")
        .arg(dir.join("Singularity"))
        .arg("-o")
        .arg(&out)
        .arg("--cache-dir")
        .arg(fixtures_dir().join("build-oci-cache"))
        .args(
            [
                ("--timeout", "60s"),
                ("--memory", "256M"),
                ("--pids", "256"),
            ]
            .into_iter()
            .filter(|(flag, _)| !args.contains(flag))
            .flat_map(|(flag, value)| [flag, value]),
        )
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run sifhub build");
    let log = fs::read_to_string(dir.join("image.sif.log")).unwrap_or_default();
    (output, log)
}

fn assert_failed_with(output: &Output, log: &str, expected: &[&str]) {
    let stderr = text(&output.stderr);
    assert!(
        !output.status.success(),
        "the build succeeded:\n{}\n{stderr}",
        text(&output.stdout)
    );
    for e in expected {
        assert!(stderr.contains(e), "stderr lacks {e:?}:\n{stderr}");
        assert!(log.contains(e), "the build log lacks {e:?}:\n{log}");
    }
}

#[test]
fn files_cannot_read_outside_the_recipes_folder() {
    let reg = seeded_registry();
    let shadow_line = fs::read_to_string("/etc/shadow")
        .expect("host /etc/shadow (run as root)")
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();

    // ../../etc/shadow and /etc/shadow.
    for (source, reason) in [
        ("../../etc/shadow", "climbs out with `..`"),
        ("/etc/shadow", "is an absolute path on the build host"),
        ("data/../../../../etc/shadow", "climbs out with `..`"),
    ] {
        let dir = recipe_dir(
            &reg,
            &format!(
                "Bootstrap: docker\nFrom: {{{{ REGISTRY }}}}/busybox:amd64\n\n%files\n    {source} /opt/stolen\n"
            ),
        );
        let (output, log) = build(dir.path(), &[]);
        assert_failed_with(
            &output,
            &log,
            &[
                &format!("line 5: %files source \"{source}\" {reason}"),
                "sifhub only copies files from the recipe's folder",
            ],
        );
        assert!(!dir.path().join("image.sif").exists());
        assert!(!log.contains(&shadow_line));
    }

    // A symlink in the context pointing at the host's /etc, named directly,
    // through a path, and inside a copied folder.
    for (files, shown) in [
        ("hostetc/shadow /opt/stolen", "hostetc/shadow"),
        ("hostetc /opt/etc", "hostetc"),
        ("tree /opt/tree", "tree/etc"),
    ] {
        let dir = recipe_dir(
            &reg,
            &format!("Bootstrap: docker\nFrom: {{{{ REGISTRY }}}}/busybox:amd64\n\n%files\n    {files}\n"),
        );
        std::os::unix::fs::symlink("/etc", dir.path().join("hostetc")).unwrap();
        fs::create_dir(dir.path().join("tree")).unwrap();
        fs::write(dir.path().join("tree/ok.txt"), "fine").unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("tree/etc")).unwrap();
        let (output, log) = build(dir.path(), &[]);
        assert_failed_with(
            &output,
            &log,
            &[&format!(
                "line 5: %files source \"{shown}\" is a symlink that leads outside it (to /etc"
            )],
        );
        assert!(!dir.path().join("image.sif").exists());
    }
}

#[test]
fn setup_sees_no_host_secrets() {
    let reg = seeded_registry();
    let dir = recipe_dir(
        &reg,
        "Bootstrap: docker\nFrom: {{ REGISTRY }}/busybox:amd64\n\n%setup\n    cat /etc/shadow > $SINGULARITY_ROOTFS/shadow-copy 2>/dev/null || echo no-host-shadow\n    ls /root 2>/dev/null | head -n 3\n    echo setup-ran-in $(pwd)\n",
    );
    let (output, log) = build(dir.path(), &[]);
    assert!(output.status.success(), "{}\n{log}", text(&output.stderr));
    assert!(log.contains("no-host-shadow"), "{log}");
    assert!(log.contains("setup-ran-in /context"), "{log}");
    assert!(
        !log.contains(".cache"),
        "host /root is visible to %setup:\n{log}"
    );
}

/// Accepts connections in the background and counts them.
fn counting_listener() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listener");
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
fn post_cannot_reach_the_hosts_loopback_services() {
    let reg = seeded_registry();
    let (port, hits) = counting_listener();
    let dir = recipe_dir(
        &reg,
        &format!(
            "Bootstrap: docker\nFrom: {{{{ REGISTRY }}}}/busybox:amd64\n\n%post\n    nc -w 2 127.0.0.1 {port} </dev/null && echo lo-connected || echo lo-refused\n    nc -w 2 10.0.2.2 {port} </dev/null && echo gateway-connected || echo gateway-refused\n"
        ),
    );
    let (output, log) = build(dir.path(), &[]);
    assert!(output.status.success(), "{}\n{log}", text(&output.stderr));
    assert!(log.contains("lo-refused"), "{log}");
    assert!(log.contains("gateway-refused"), "{log}");
    assert!(!log.contains("-connected"), "{log}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "%post reached the host's loopback"
    );
    assert!(
        log.contains("network slirp (outbound only, no host loopback)"),
        "{log}"
    );
}

#[test]
fn a_fork_bomb_is_killed_at_the_process_limit() {
    let reg = seeded_registry();
    let dir = recipe_dir(
        &reg,
        "Bootstrap: docker\nFrom: {{ REGISTRY }}/busybox:amd64\n\n%post\n    bomb() { bomb | bomb & }; bomb; sleep 30\n",
    );
    let started = Instant::now();
    let (output, log) = build(dir.path(), &["--pids", "64"]);
    assert_failed_with(
        &output,
        &log,
        &[
            "killed: process limit 64 exceeded",
            "line 4: %post failed: killed: process limit 64 exceeded",
        ],
    );
    assert!(
        log.contains("processes 64"),
        "the limits in force are logged:\n{log}"
    );
    assert!(started.elapsed() < Duration::from_secs(50));
}

#[test]
fn a_memory_hog_is_killed_at_the_memory_limit() {
    let reg = seeded_registry();
    let dir = recipe_dir(
        &reg,
        "Bootstrap: docker\nFrom: {{ REGISTRY }}/busybox:amd64\n\n%post\n    awk 'BEGIN { s = \"x\"; while (1) s = s s }'\n",
    );
    let (output, log) = build(dir.path(), &["--memory", "64M"]);
    assert_failed_with(
        &output,
        &log,
        &["line 4: %post failed: killed: memory limit 64 MiB exceeded"],
    );
    assert!(log.contains("memory 64 MiB"), "{log}");
}

#[test]
fn a_disk_filler_is_killed_at_the_disk_limit() {
    let reg = seeded_registry();
    let dir = recipe_dir(
        &reg,
        "Bootstrap: docker\nFrom: {{ REGISTRY }}/busybox:amd64\n\n%post\n    i=0; while [ $i -lt 64 ]; do dd if=/dev/zero of=/fill.$i bs=1M count=8 2>/dev/null; i=$((i+1)); done; sleep 30\n",
    );
    let (output, log) = build(dir.path(), &["--disk", "32M"]);
    assert_failed_with(
        &output,
        &log,
        &["line 4: %post failed: killed: disk limit 32 MiB exceeded"],
    );
    assert!(log.contains("disk 32 MiB"), "{log}");
}

/// Host processes running `sleep ARG`.
fn host_sleeps(arg: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        if args.first().is_some_and(|a| a.ends_with(b"sleep"))
            && args.get(1) == Some(&arg.as_bytes())
        {
            found.push(pid);
        }
    }
    found
}

#[test]
fn nothing_post_leaves_running_outlives_the_build() {
    let reg = seeded_registry();
    assert!(
        host_sleeps("1013").is_empty(),
        "a `sleep 1013` already runs"
    );
    let dir = recipe_dir(
        &reg,
        "Bootstrap: docker\nFrom: {{ REGISTRY }}/busybox:amd64\n\n%post\n    sleep 1013 &\n    (setsid sleep 1013 &)\n    echo left-sleepers-behind\n",
    );
    let started = Instant::now();
    let (output, log) = build(dir.path(), &[]);
    assert!(output.status.success(), "{}\n{log}", text(&output.stderr));
    assert!(log.contains("left-sleepers-behind"), "{log}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the build waited for the background sleeps"
    );
    assert_eq!(
        host_sleeps("1013"),
        Vec::<u32>::new(),
        "sleep 1013 outlived the build"
    );
}

#[test]
fn destinations_cannot_be_redirected_out_of_the_root() {
    // %setup makes the root's /opt a symlink to "/tmp": the %files that
    // follow into /opt land in the root's /tmp, never in the host's.
    let reg = seeded_registry();
    let marker = format!("sifhub-escape-{}", std::process::id());
    let dir = recipe_dir(
        &reg,
        &format!(
            "Bootstrap: docker\nFrom: {{{{ REGISTRY }}}}/busybox:amd64\n\n%setup\n    ln -s /tmp $SINGULARITY_ROOTFS/opt\n\n%files\n    note.txt /opt/{marker}\n"
        ),
    );
    fs::write(dir.path().join("note.txt"), "note").unwrap();
    let (output, log) = build(dir.path(), &[]);
    assert!(output.status.success(), "{}\n{log}", text(&output.stderr));
    assert!(
        !PathBuf::from("/tmp").join(&marker).exists(),
        "%files wrote through a symlink onto the host: /tmp/{marker}"
    );
    // It is in the image, under the root's /tmp.
    let image = dir.path().join("image.sif");
    let sif = sifhub_builder::sif::SifFile::open(&image).unwrap();
    let offset = sif.primary_partition().unwrap().offset;
    let unsquashfs = sifhub_tests::system_tool("unsquashfs", "squashfs-tools");
    let list = Command::new(unsquashfs)
        .args(["-l", "-o"])
        .arg(offset.to_string())
        .arg(&image)
        .output()
        .unwrap();
    let list = text(&list.stdout);
    assert!(
        list.lines()
            .any(|l| l == format!("squashfs-root/tmp/{marker}")),
        "{list}"
    );
}

/// Pushes a one-layer image made of `tar` as `NAME:t` and returns its reference.
fn push_layer(reg: &Registry, name: &str, tar: LayerTar) -> String {
    let layout = tempfile::tempdir().unwrap();
    write_oci_layout(
        layout.path(),
        "t",
        &[CraftedLayer {
            tar: tar.into_tar(),
            gzip: true,
        }],
        serde_json::json!({"Cmd": ["/bin/sh"]}),
    );
    reg.push(layout.path(), "t", &format!("{name}:t"), PushFormat::Oci);
    format!("{}/{name}:t", reg.host())
}

#[test]
fn base_layers_climbing_out_of_the_root_fail_the_build() {
    let reg = Registry::start();
    let marker = format!("sifhub-layer-escape-{}", std::process::id());
    let mut dotdot = LayerTar::new();
    dotdot.file("ok.txt", b"fine", 0o644).file(
        &format!("../../../../tmp/{marker}"),
        b"escape",
        0o644,
    );
    let mut through_symlink = LayerTar::new();
    through_symlink
        .symlink("etc", "/etc")
        .file(&format!("etc/{marker}"), b"pwned", 0o644);
    for (name, tar, entry) in [
        ("dotdot", dotdot, format!("../../../../tmp/{marker}")),
        ("symlink-etc", through_symlink, format!("etc/{marker}")),
    ] {
        let from = push_layer(&reg, name, tar);
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("Singularity"),
            format!("Bootstrap: docker\nFrom: {from}\n\n%post\n    echo built\n"),
        )
        .unwrap();
        let (output, log) = build(dir.path(), &[]);
        assert_failed_with(&output, &log, &[entry.as_str()]);
        assert!(log.contains("sha256:"), "the log names the layer:\n{log}");
        assert!(
            !log.contains("\nbuilt\n"),
            "%post ran on a bad base:\n{log}"
        );
        for host_path in [format!("/tmp/{marker}"), format!("/etc/{marker}")] {
            assert!(
                !Path::new(&host_path).exists(),
                "{name}: a layer wrote {host_path} on the host"
            );
        }
        assert!(
            !dir.path().join("image.sif").exists(),
            "{name}: an image was written"
        );
    }
}
