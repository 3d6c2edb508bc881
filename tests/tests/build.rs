//! `sifhub build` end to end, with the real binary, against a real registry
//! seeded with locally made images: the SIF must read with the reference
//! `siftool`, its partition must open with `unsquashfs`, and `sifhub run` /
//! `sifhub exec` must run it. Covers `%files`, `%post`, `%environment`,
//! `%runscript`, `%labels`, `%help`, `%test` (and `--notest`), reproducible
//! output, multi-stage `%files from`, `Bootstrap: localimage`, and a Debian
//! image whose `%post` installs packages with apt (the nginx-basic example
//! of the corpus serving its page with Python's http.server).
//! Needs root and the Debian packages docker-registry, skopeo, umoci,
//! squashfs-tools, slirp4netns, busybox-static, debootstrap.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sifhub_builder::sif::SifFile;
use sifhub_tests::registry::{fixtures, fixtures_dir, seeded_registry, PushFormat, Registry};
use sifhub_tests::{oracle, shared_dir, sifhub_bin, system_tool};

/// The OCI layer cache the builds share (digests are content addresses).
fn cache_dir() -> PathBuf {
    fixtures_dir().join("build-oci-cache")
}

/// Runs `sifhub build RECIPE -o OUT ARGS…` in the recipe's folder.
fn build(recipe: &Path, out: &Path, args: &[&str]) -> Output {
    Command::new(sifhub_bin())
        .arg("build")
        .arg(recipe)
        .arg("-o")
        .arg(out)
        .arg("--cache-dir")
        .arg(cache_dir())
        .args(args)
        .current_dir(recipe.parent().expect("recipe folder"))
        .stdin(Stdio::null())
        .output()
        .expect("run sifhub build")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Builds and fails the test with the whole output when the build fails.
fn build_ok(recipe: &Path, out: &Path, args: &[&str]) -> String {
    let output = build(recipe, out, args);
    assert!(
        output.status.success(),
        "sifhub build {} failed ({}):\n{}\n{}",
        recipe.display(),
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
    let stdout = text(&output.stdout);
    let (sha, path) = stdout
        .trim()
        .split_once("  ")
        .unwrap_or_else(|| panic!("expected `SHA256  PATH` on stdout, got {stdout:?}"));
    assert_eq!(Path::new(path), out);
    assert_eq!(sha, sha256_hex(out), "printed sha256 is the file's");
    sha.to_owned()
}

fn sha256_hex(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(fs::read(path).expect("read image")))
}

/// `sifhub run|exec IMAGE ARGS…` with HOME set to `home` and the working
/// folder `cwd` (a small home keeps the sandbox's disk watch cheap).
fn sifhub_in(action: &str, image: &Path, args: &[&str], home: &Path, cwd: &Path) -> Output {
    Command::new(sifhub_bin())
        .arg(action)
        .arg(image)
        .args(args)
        .env("HOME", home)
        .env("XDG_CACHE_HOME", run_cache(image))
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .expect("run sifhub")
}

/// Where `sifhub run` keeps extracted images: beside the test's image, so
/// they go with the test's temporary folder.
fn run_cache(image: &Path) -> PathBuf {
    image.parent().expect("image folder").join("run-cache")
}

/// Extracts the image's primary partition with unsquashfs; returns the root.
fn extract(image: &Path, dest: &Path) -> PathBuf {
    let unsquashfs = system_tool("unsquashfs", "squashfs-tools");
    let sif = SifFile::open(image).expect("open SIF");
    let partition = sif.primary_partition().expect("primary partition");
    let root = dest.join("root");
    let out = Command::new(unsquashfs)
        .args(["-no-progress", "-quiet", "-o"])
        .arg(partition.offset.to_string())
        .arg("-d")
        .arg(&root)
        .arg(image)
        .output()
        .expect("run unsquashfs");
    assert!(
        out.status.success(),
        "unsquashfs failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    root
}

/// `unsquashfs -lln` of the image's partition: one line per entry.
fn listing(image: &Path) -> String {
    let unsquashfs = system_tool("unsquashfs", "squashfs-tools");
    let sif = SifFile::open(image).expect("open SIF");
    let partition = sif.primary_partition().expect("primary partition");
    let out = Command::new(unsquashfs)
        .args(["-lln", "-o"])
        .arg(partition.offset.to_string())
        .arg(image)
        .output()
        .expect("run unsquashfs -lln");
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

fn siftool_list(image: &Path) -> String {
    let out = Command::new(oracle("siftool"))
        .arg("list")
        .arg(image)
        .output()
        .expect("run siftool");
    assert!(out.status.success(), "siftool list: {}", text(&out.stderr));
    text(&out.stdout)
}

fn write_recipe(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, body).expect("write recipe");
    path
}

const BUSYBOX_RECIPE: &str = r#"Bootstrap: docker
From: {{ REGISTRY }}/busybox:latest

%files
    data/hello.txt /opt/hello.txt
    data/*.cfg /etc/app/

%post
    echo "post sees GREETING=$GREETING"
    mkdir -p /srv
    echo built-in-post > /srv/marker
    echo 'export FROM_POST=yes' >> $SINGULARITY_ENVIRONMENT
    echo 'post.label from-post' >> $APPTAINER_LABELS

%environment
    export MYVAR=myvalue

%runscript
    echo "runscript args: $*"
    echo "MYVAR=$MYVAR FROM_POST=$FROM_POST"
    cat /opt/hello.txt

%labels
    Maintainer tester@example.org
    Version 1.2

%help
    Prints its arguments and a greeting.

%test
    test "$(cat /srv/marker)" = built-in-post
    echo "test sees MYVAR=$MYVAR"
"#;

#[test]
fn busybox_recipe_builds_reads_with_siftool_and_runs() {
    let reg = seeded_registry();
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("data")).unwrap();
    fs::write(dir.path().join("data/hello.txt"), "hello from %files\n").unwrap();
    fs::write(dir.path().join("data/a.cfg"), "a=1\n").unwrap();
    fs::write(dir.path().join("data/b.cfg"), "b=2\n").unwrap();
    let recipe = write_recipe(
        dir.path(),
        "Singularity",
        &BUSYBOX_RECIPE.replace("{{ REGISTRY }}", reg.host()),
    );
    let out = dir.path().join("hello.sif");
    let started = Instant::now();
    build_ok(&recipe, &out, &[]);
    eprintln!("busybox build took {:?}", started.elapsed());

    // The reference siftool reads it: definition, JSON objects, the partition.
    let list = siftool_list(&out);
    for kind in ["Def.FILE", "JSON.Generic", "FS (Squashfs/*System/amd64)"] {
        assert!(list.contains(kind), "siftool list lacks {kind}:\n{list}");
    }
    assert_eq!(list.matches("JSON.Generic").count(), 3, "{list}");

    // The objects, as apptainer lays them out, plus the provenance.
    let mut sif = SifFile::open(&out).unwrap();
    assert_eq!(
        sif.recipe().unwrap().unwrap(),
        fs::read_to_string(&recipe).unwrap()
    );
    let names: Vec<String> = sif.descriptors().iter().map(|d| d.name()).collect();
    assert_eq!(
        names,
        [
            "",
            "inspect-metadata.json",
            "oci-config.json",
            "sifhub-provenance.json",
            ""
        ]
    );
    let ids: Vec<u32> = sif.descriptors().iter().map(|d| d.id).collect();
    let inspect = sif.read_json(ids[1]).unwrap();
    assert_eq!(inspect["type"], "container");
    assert!(inspect["data"]["attributes"]["runscript"]
        .as_str()
        .unwrap()
        .contains("runscript args"));
    let provenance = sif.read_json(ids[3]).unwrap();
    let index_digest = reg.manifest_digest("busybox:latest");
    assert_eq!(provenance["recipe"], "Singularity");
    assert_eq!(provenance["base"]["bootstrap"], "docker");
    assert_eq!(provenance["base"]["digest"], index_digest.as_str());
    assert_eq!(
        provenance["base"]["reference"],
        format!("{}/busybox:latest", reg.host())
    );
    assert_eq!(
        provenance["recipe_sha256"],
        sha256_hex(&recipe).as_str(),
        "{provenance}"
    );

    // The partition opens with unsquashfs and holds what the recipe says.
    let scratch = tempfile::tempdir().unwrap();
    let root = extract(&out, scratch.path());
    assert_eq!(
        fs::read_to_string(root.join("opt/hello.txt")).unwrap(),
        "hello from %files\n"
    );
    assert_eq!(
        fs::read_to_string(root.join("etc/app/a.cfg")).unwrap(),
        "a=1\n"
    );
    assert_eq!(
        fs::read_to_string(root.join("etc/app/b.cfg")).unwrap(),
        "b=2\n"
    );
    assert_eq!(
        fs::read_to_string(root.join("srv/marker")).unwrap(),
        "built-in-post\n"
    );
    let runscript = fs::read_to_string(root.join(".singularity.d/runscript")).unwrap();
    assert!(runscript.starts_with("#!/bin/sh\n"), "{runscript}");
    assert!(
        runscript.contains("echo \"runscript args: $*\""),
        "{runscript}"
    );
    assert_eq!(
        fs::metadata(root.join(".singularity.d/runscript"))
            .unwrap()
            .mode()
            & 0o777,
        0o755
    );
    assert!(
        fs::read_to_string(root.join(".singularity.d/runscript.help"))
            .unwrap()
            .contains("Prints its arguments")
    );
    assert!(
        !root.join(".post.script").exists(),
        "the %post script is removed"
    );
    assert!(!root.join(".build.labels").exists());
    let labels: serde_json::Value =
        serde_json::from_slice(&fs::read(root.join(".singularity.d/labels.json")).unwrap())
            .unwrap();
    assert_eq!(labels["Maintainer"], "tester@example.org");
    assert_eq!(labels["Version"], "1.2");
    assert_eq!(labels["post.label"], "from-post");
    assert_eq!(
        labels["org.sifhub.test"], "busybox",
        "the base image's labels stay"
    );
    assert_eq!(
        labels["org.opencontainers.image.base.digest"],
        index_digest.as_str()
    );
    assert_eq!(
        labels["org.label-schema.usage"],
        "/.singularity.d/runscript.help"
    );
    let environment =
        fs::read_to_string(root.join(".singularity.d/env/90-environment.sh")).unwrap();
    assert!(
        environment.contains("export MYVAR=myvalue"),
        "{environment}"
    );
    assert_eq!(
        fs::read_to_string(root.join(".singularity.d/Singularity")).unwrap(),
        fs::read_to_string(&recipe).unwrap()
    );

    // The build log sits beside the image, with timestamps and every step.
    let log = fs::read_to_string(dir.path().join("hello.sif.log")).unwrap();
    for expected in [
        &format!("[1/7] pulling {}/busybox:latest", reg.host()),
        "limits of every command: time 2h, memory 4 GiB",
        "post sees GREETING=hello \"world\" $HOME",
        "test sees MYVAR=myvalue",
        "[7/7] writing",
        index_digest.as_str(),
    ] {
        assert!(log.contains(expected), "log lacks {expected:?}:\n{log}");
    }
    assert!(log.lines().all(|l| l.starts_with("20")), "{log}");

    // `sifhub run` runs the runscript with the arguments and the environment.
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let run = sifhub_in("run", &out, &["one", "two three"], home.path(), work.path());
    assert!(
        run.status.success(),
        "{}{}",
        text(&run.stdout),
        text(&run.stderr)
    );
    assert_eq!(
        text(&run.stdout),
        "runscript args: one two three\nMYVAR=myvalue FROM_POST=yes\nhello from %files\n"
    );

    // `sifhub exec`: a command, the exit code, the home and working folder bound.
    let exec = sifhub_in(
        "exec",
        &out,
        &[
            "sh",
            "-c",
            "pwd; echo written > $HOME/from-container; echo x > here; exit 7",
        ],
        home.path(),
        work.path(),
    );
    assert_eq!(exec.status.code(), Some(7), "{}", text(&exec.stderr));
    assert_eq!(
        text(&exec.stdout).trim(),
        fs::canonicalize(work.path()).unwrap().display().to_string()
    );
    assert_eq!(
        fs::read_to_string(home.path().join("from-container")).unwrap(),
        "written\n"
    );
    assert!(work.path().join("here").is_file());
    // The image's root is read-only.
    let exec = sifhub_in(
        "exec",
        &out,
        &[
            "sh",
            "-c",
            "touch /opt/new 2>/dev/null && echo writable || echo read-only",
        ],
        home.path(),
        work.path(),
    );
    assert_eq!(text(&exec.stdout), "read-only\n");
}

#[test]
fn same_inputs_and_timestamp_give_the_same_bytes() {
    let reg = seeded_registry();
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("notes.txt"), "fixed content\n").unwrap();
    let recipe = write_recipe(
        dir.path(),
        "repro.def",
        &format!(
            "Bootstrap: docker\nFrom: {}/busybox:v2s2\n\n%files\n    notes.txt /opt/notes.txt\n\n%post\n    mkdir -p /opt/tree/a /opt/tree/b\n    echo one > /opt/tree/a/1\n    ln -s ../a/1 /opt/tree/b/link\n\n%labels\n    Reproducible yes\n",
            reg.host()
        ),
    );
    let first = build_ok(
        &recipe,
        &dir.path().join("a.sif"),
        &["--timestamp", "1700000000", "--commit", "0123abcd"],
    );
    let second = build_ok(
        &recipe,
        &dir.path().join("b.sif"),
        &["--timestamp", "1700000000", "--commit", "0123abcd"],
    );
    assert_eq!(first, second, "two builds with the same inputs differ");
    let a = SifFile::open(dir.path().join("a.sif")).unwrap();
    assert_eq!(a.header().created_at, 1_700_000_000);
    assert_eq!(
        a.header().id.get_version_num(),
        5,
        "the id derives from the content"
    );
    // Another time is another image.
    let third = build_ok(
        &recipe,
        &dir.path().join("c.sif"),
        &["--timestamp", "1700000001", "--commit", "0123abcd"],
    );
    assert_ne!(first, third);
    let mut c = SifFile::open(dir.path().join("c.sif")).unwrap();
    let id = c
        .descriptors()
        .iter()
        .find(|d| d.name() == "sifhub-provenance.json")
        .map(|d| d.id)
        .unwrap();
    let provenance = c.read_json(id).unwrap();
    assert_eq!(provenance["commit"], "0123abcd");
    assert_eq!(provenance["created_unix"], 1_700_000_001);
    assert_eq!(
        provenance["base"]["digest"],
        reg.manifest_digest("busybox:v2s2").as_str()
    );
}

#[test]
fn a_failing_test_fails_the_build_and_notest_skips_it() {
    let reg = seeded_registry();
    let dir = tempfile::tempdir().unwrap();
    let recipe = write_recipe(
        dir.path(),
        "Singularity",
        &format!(
            "Bootstrap: docker\nFrom: {}/busybox:amd64\n\n%post\n    touch /built\n\n%test\n    echo checking\n    exit 3\n",
            reg.host()
        ),
    );
    let out = dir.path().join("failing.sif");
    let failed = build(&recipe, &out, &[]);
    assert!(!failed.status.success());
    let stderr = text(&failed.stderr);
    assert!(
        stderr.contains("line 7: %test failed: exited with code 3"),
        "{stderr}"
    );
    assert!(!out.exists(), "a failed build leaves no image");
    let log = fs::read_to_string(dir.path().join("failing.sif.log")).unwrap();
    assert!(log.contains("checking"), "{log}");
    assert!(log.contains("error: line 7: %test failed"), "{log}");

    build_ok(&recipe, &out, &["--notest"]);
    let log = fs::read_to_string(dir.path().join("failing.sif.log")).unwrap();
    assert!(log.contains("skipping %test"), "{log}");
    assert!(!log.contains("checking"), "{log}");
}

#[test]
fn multi_stage_copies_files_from_an_earlier_stage() {
    let reg = seeded_registry();
    let dir = tempfile::tempdir().unwrap();
    let recipe = write_recipe(
        dir.path(),
        "Singularity",
        &format!(
            r#"Bootstrap: docker
From: {host}/busybox:latest
Stage: build

%post
    mkdir -p /opt/app/bin /build-only
    printf '#!/bin/sh\necho "tool built in stage one: $1"\n' > /opt/app/bin/tool
    chmod 0750 /opt/app/bin/tool
    chown 1234:4321 /opt/app/bin/tool
    ln -s bin/tool /opt/app/run
    touch /build-only/junk

Bootstrap: docker
From: {host}/busybox:amd64
Stage: final

%files from build
    /opt/app
    /opt/app/run /usr/local/bin/run-tool

%runscript
    exec /usr/local/bin/run-tool "$@"
"#,
            host = reg.host()
        ),
    );
    let out = dir.path().join("multi.sif");
    build_ok(&recipe, &out, &[]);
    let log = fs::read_to_string(dir.path().join("multi.sif.log")).unwrap();
    assert!(log.contains("copying %files from stage build"), "{log}");
    let scratch = tempfile::tempdir().unwrap();
    let root = extract(&out, scratch.path());
    let tool = root.join("opt/app/bin/tool");
    let meta = fs::metadata(&tool).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o750, "modes are kept");
    assert_eq!((meta.uid(), meta.gid()), (1234, 4321), "owners are kept");
    assert_eq!(
        fs::read_link(root.join("opt/app/run")).unwrap(),
        PathBuf::from("bin/tool"),
        "symlinks stay symlinks"
    );
    // A symlink source is resolved in the stage's root: the file lands.
    assert!(fs::symlink_metadata(root.join("usr/local/bin/run-tool"))
        .unwrap()
        .is_file());
    assert!(
        !root.join("build-only").exists(),
        "only what %files names is copied"
    );
    let provenance = {
        let mut sif = SifFile::open(&out).unwrap();
        let id = sif
            .descriptors()
            .iter()
            .find(|d| d.name() == "sifhub-provenance.json")
            .map(|d| d.id)
            .unwrap();
        sif.read_json(id).unwrap()
    };
    assert_eq!(provenance["stages"][0]["name"], "build");
    assert_eq!(provenance["stages"][1]["name"], "final");

    let home = tempfile::tempdir().unwrap();
    let run = sifhub_in("run", &out, &["now"], home.path(), home.path());
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert_eq!(text(&run.stdout), "tool built in stage one: now\n");
}

#[test]
fn localimage_builds_on_an_earlier_sif() {
    let reg = seeded_registry();
    let dir = tempfile::tempdir().unwrap();
    let base_recipe = write_recipe(
        dir.path(),
        "base.def",
        &format!(
            "Bootstrap: docker\nFrom: {}/busybox:amd64\n\n%post\n    echo base > /base.txt\n\n%environment\n    export LAYER=base\n",
            reg.host()
        ),
    );
    build_ok(&base_recipe, &dir.path().join("base.sif"), &[]);
    let recipe = write_recipe(
        dir.path(),
        "Singularity",
        "Bootstrap: localimage\nFrom: base.sif\n\n%post\n    cat /base.txt > /derived.txt\n\n%runscript\n    echo \"$LAYER $(cat /derived.txt)\"\n",
    );
    let out = dir.path().join("derived.sif");
    build_ok(&recipe, &out, &[]);
    let scratch = tempfile::tempdir().unwrap();
    let root = extract(&out, scratch.path());
    assert_eq!(
        fs::read_to_string(root.join("derived.txt")).unwrap(),
        "base\n"
    );
    // The base's definition moves to the bootstrap history, as apptainer does.
    assert!(
        fs::read_to_string(root.join(".singularity.d/bootstrap_history/Apptainer0"))
            .unwrap()
            .contains("echo base")
    );
    let home = tempfile::tempdir().unwrap();
    let run = sifhub_in("run", &out, &[], home.path(), home.path());
    assert_eq!(text(&run.stdout), "base base\n", "{}", text(&run.stderr));

    // A local image outside the recipe's folder is refused.
    let other = tempfile::tempdir().unwrap();
    let outside = write_recipe(
        other.path(),
        "Singularity",
        &format!(
            "Bootstrap: localimage\nFrom: {}\n",
            dir.path().join("base.sif").display()
        ),
    );
    let refused = build(&outside, &other.path().join("x.sif"), &[]);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("outside the recipe's folder"),
        "{}",
        text(&refused.stderr)
    );
}

/// The corpus's nginx-basic example with its `From:` moved to the local
/// Debian image (python3 comes from apt in `%post`, from the Debian mirror,
/// through the sandbox's slirp network), plus `cron` for its group-owned,
/// setgid `crontab`. One build serves every check (test runners may run each
/// test in its own process).
#[test]
fn debian_apt_image_keeps_package_ownership_and_serves_hello_world() {
    let fx = fixtures();
    let reg = Registry::start();
    reg.push(&fx.layout, "debian", "debian:bookworm", PushFormat::Oci);
    let original = fs::read_to_string(
        shared_dir().join("corpus/recipes/vsoch__singularity-web__nginx-basic__Singularity"),
    )
    .expect("the nginx-basic recipe of the corpus");
    assert!(original.contains("From: ubuntu:16.04"), "{original}");
    let recipe_text = original
        .replace(
            "From: ubuntu:16.04",
            &format!("From: {}/debian:bookworm", reg.host()),
        )
        .replace(
            "apt-get -y install python3",
            "apt-get -y install --no-install-recommends python3 cron",
        );
    let dir = tempfile::tempdir().unwrap();
    let recipe = write_recipe(dir.path(), "Singularity", &recipe_text);
    let image = dir.path().join("nginx-basic.sif");
    let started = Instant::now();
    // lz4 keeps the squash of a full Debian root quick on a small machine.
    build_ok(&recipe, &image, &["--compression", "lz4"]);
    eprintln!("debian build took {:?}", started.elapsed());
    drop(reg);

    check_package_ownership(&image);
    check_serves_hello_world(&image);
}

fn check_package_ownership(image: &Path) {
    let list = listing(image);
    let entry = |path: &str| {
        list.lines()
            .find(|l| {
                l.split_once("squashfs-root").is_some_and(|(_, rest)| {
                    rest == path || rest.starts_with(&format!("{path} -> "))
                })
            })
            .unwrap_or_else(|| panic!("{path} not in the image"))
            .to_owned()
    };
    // python3 and the page the %post wrote.
    assert!(
        entry("/usr/bin/python3").starts_with('l'),
        "{}",
        entry("/usr/bin/python3")
    );
    assert!(entry("/data/index.html").contains(" 0/0 "));
    // cron's crontab is root:crontab, setgid, as dpkg-statoverride sets it.
    let crontab = entry("/usr/bin/crontab");
    let scratch = tempfile::tempdir().unwrap();
    let root = extract(image, scratch.path());
    let group = fs::read_to_string(root.join("etc/group")).unwrap();
    let gid: u32 = group
        .lines()
        .find_map(|l| l.strip_prefix("crontab:x:"))
        .and_then(|rest| rest.split(':').next())
        .and_then(|g| g.parse().ok())
        .expect("a crontab group in the image");
    assert_ne!(gid, 0);
    assert!(crontab.starts_with("-rwxr-sr-x"), "{crontab}");
    assert!(crontab.contains(&format!(" 0/{gid} ")), "{crontab}");
    let meta = fs::metadata(root.join("usr/bin/crontab")).unwrap();
    assert_eq!(meta.gid(), gid);
    assert_eq!(meta.mode() & 0o7777, 0o2755);
    // The spool folder the package's maintainer script made: group crontab, 1730.
    let spool = fs::metadata(root.join("var/spool/cron/crontabs")).unwrap();
    assert_eq!((spool.gid(), spool.mode() & 0o7777), (gid, 0o1730));
    // apt's lists were fetched in the sandbox, through slirp.
    let log = fs::read_to_string(image.with_extension("sif.log")).unwrap();
    assert!(log.contains("Setting up cron"), "{log}");
}

fn check_serves_hello_world(image: &Path) {
    let home = tempfile::tempdir().unwrap();
    let mut server = Command::new(sifhub_bin())
        .arg("run")
        .arg(image)
        .env("HOME", home.path())
        .env("XDG_CACHE_HOME", run_cache(image))
        .current_dir(home.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sifhub run");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut body = None;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = server.try_wait() {
            let mut err = String::new();
            let _ = server.stderr.take().map(|mut s| s.read_to_string(&mut err));
            panic!("sifhub run ended early ({status}): {err}");
        }
        if let Some(text) = http_get("127.0.0.1:9999", "/") {
            body = Some(text);
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    // SIGTERM, as a service manager stops it: sifhub ends the run and says so.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(server.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Ok(Some(status)) = server.try_wait() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = server.kill();
            let _ = server.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let body = body.expect("the image's http.server answered on 127.0.0.1:9999");
    assert!(body.contains("<h2>Hello World!</h2>"), "{body}");
    let status = status.expect("sifhub run ended on SIGTERM");
    assert_eq!(status.code(), Some(143), "{status}");
    // The server it ran is gone with it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect("127.0.0.1:9999").is_ok() {
        assert!(
            Instant::now() < deadline,
            "the image's server outlived `sifhub run`"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The body of `GET path` on `host`, if it answers 200.
fn http_get(host: &str, path: &str) -> Option<String> {
    let mut conn = std::net::TcpStream::connect(host).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(conn, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut response = String::new();
    conn.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200").then(|| body.to_owned())
}

#[test]
fn build_refuses_unsupported_agents_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = write_recipe(
        dir.path(),
        "Singularity",
        "Bootstrap: library\nFrom: alpine:3.19\n\n%post\n    true\n",
    );
    let failed = build(&recipe, &dir.path().join("x.sif"), &[]);
    assert!(!failed.status.success());
    let stderr = text(&failed.stderr);
    assert!(
        stderr.contains("line 1: bootstrap agent \"library\" is not supported yet"),
        "{stderr}"
    );
}

#[test]
fn busybox_agent_installs_the_binary_from_mirrorurl() {
    let busybox = fs::read(system_tool("busybox", "busybox-static")).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut head = [0u8; 1024];
            let _ = conn.read(&mut head);
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                busybox.len()
            );
            let _ = conn.write_all(&busybox);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let recipe = write_recipe(
        dir.path(),
        "Singularity",
        &format!(
            "Bootstrap: busybox\nMirrorURL: http://127.0.0.1:{port}/busybox\n\n%post\n    busybox | head -n 1 | cut -d' ' -f1-2 > /version\n\n%runscript\n    cat /version\n"
        ),
    );
    let out = dir.path().join("busybox.sif");
    build_ok(&recipe, &out, &[]);
    let scratch = tempfile::tempdir().unwrap();
    let root = extract(&out, scratch.path());
    assert!(
        root.join("bin/sh").is_file(),
        "busybox --install made its applets"
    );
    assert!(fs::read_to_string(root.join("etc/passwd"))
        .unwrap()
        .starts_with("root:"));
    let home = tempfile::tempdir().unwrap();
    let run = sifhub_in("run", &out, &[], home.path(), home.path());
    assert!(
        text(&run.stdout).starts_with("BusyBox v"),
        "{}{}",
        text(&run.stdout),
        text(&run.stderr)
    );
    let mut sif = SifFile::open(&out).unwrap();
    let id = sif
        .descriptors()
        .iter()
        .find(|d| d.name() == "sifhub-provenance.json")
        .map(|d| d.id)
        .unwrap();
    let provenance = sif.read_json(id).unwrap();
    assert_eq!(provenance["base"]["bootstrap"], "busybox");
    assert_eq!(
        provenance["base"]["digest"],
        format!(
            "sha256:{}",
            sha256_hex(&system_tool("busybox", "busybox-static"))
        )
    );
}

#[test]
fn scif_apps_are_installed_and_run_with_app() {
    let reg = seeded_registry();
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("data.txt"), "app data\n").unwrap();
    let recipe = write_recipe(
        dir.path(),
        "Singularity",
        &format!(
            "Bootstrap: docker\nFrom: {}/busybox:amd64\n\n%appinstall hello\n    echo \"installed in $(pwd)\" > installed.txt\n\n%apprun hello\n    echo \"hello app: $* APPVAR=$APPVAR\"\n    cat /scif/apps/hello/installed.txt /scif/apps/hello/data.txt\n\n%appenv hello\n    export APPVAR=appvalue\n\n%applabels hello\n    Author someone\n\n%appfiles hello\n    data.txt\n\n%apphelp hello\n    Says hello.\n",
            reg.host()
        ),
    );
    let out = dir.path().join("apps.sif");
    build_ok(&recipe, &out, &[]);
    let scratch = tempfile::tempdir().unwrap();
    let root = extract(&out, scratch.path());
    let labels: serde_json::Value =
        serde_json::from_slice(&fs::read(root.join("scif/apps/hello/scif/labels.json")).unwrap())
            .unwrap();
    assert_eq!(labels["SCIF_APP_NAME"], "hello");
    assert_eq!(labels["Author"], "someone");
    assert!(root.join("scif/data/hello/output").is_dir());
    assert!(
        fs::read_to_string(root.join(".singularity.d/env/94-appsbase.sh"))
            .unwrap()
            .contains("SCIF_APPRUN_hello")
    );
    let home = tempfile::tempdir().unwrap();
    let run = Command::new(sifhub_bin())
        .args(["run", "--app", "hello"])
        .arg(&out)
        .arg("x")
        .env("HOME", home.path())
        .env("XDG_CACHE_HOME", run_cache(&out))
        .current_dir(home.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        text(&run.stdout),
        "hello app: x APPVAR=appvalue\ninstalled in /scif/apps/hello\napp data\n",
        "{}",
        text(&run.stderr)
    );
}

#[test]
fn oci_layout_in_the_context_bootstraps() {
    use sifhub_tests::registry::{write_oci_layout, CraftedLayer, LayerTar};
    let dir = tempfile::tempdir().unwrap();
    let mut layer = LayerTar::new();
    layer
        .dir("opt", 0o755)
        .file("opt/from-layout.txt", b"layout content\n", 0o644);
    let digest = write_oci_layout(
        &dir.path().join("layout"),
        "v1",
        &[CraftedLayer {
            tar: layer.into_tar(),
            gzip: true,
        }],
        serde_json::json!({"Env": ["LAYOUT=yes"], "Cmd": ["/bin/true"]}),
    );
    let recipe = write_recipe(
        dir.path(),
        "Singularity",
        "Bootstrap: oci\nFrom: layout:v1\n",
    );
    let out = dir.path().join("layout.sif");
    build_ok(&recipe, &out, &[]);
    let scratch = tempfile::tempdir().unwrap();
    let root = extract(&out, scratch.path());
    assert_eq!(
        fs::read_to_string(root.join("opt/from-layout.txt")).unwrap(),
        "layout content\n"
    );
    assert!(
        fs::read_to_string(root.join(".singularity.d/env/10-docker2singularity.sh"))
            .unwrap()
            .contains("LAYOUT")
    );
    let mut sif = SifFile::open(&out).unwrap();
    let id = sif
        .descriptors()
        .iter()
        .find(|d| d.name() == "sifhub-provenance.json")
        .map(|d| d.id)
        .unwrap();
    let provenance = sif.read_json(id).unwrap();
    assert_eq!(provenance["base"]["bootstrap"], "oci");
    assert_eq!(provenance["base"]["reference"], "layout");
    assert_eq!(provenance["base"]["digest"], digest.as_str());
}
