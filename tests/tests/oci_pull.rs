//! `Bootstrap: docker` against a real registry (Debian's docker-registry)
//! seeded with locally built images: pull by tag through a multi-arch index,
//! as Docker v2s2, by digest, with basic and bearer-token auth, from the
//! cache; apply the layers (busybox, Debian minbase, whiteouts) and refuse
//! layers that try to leave the root.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sifhub_builder::oci::{
    no_progress, parse_registry_auth, ApplyOptions, ImageReference, OciError, PullEvent,
    PulledImage, Puller, RegistryConfig,
};
use sifhub_tests::registry::{
    fixtures, fixtures_dir, layout_digest, seeded_registry, write_oci_layout, CraftedLayer,
    LayerTar, PushFormat, Registry, TokenAuthProxy,
};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

fn puller(cache: &Path) -> Puller {
    Puller::new(RegistryConfig::new(cache)).expect("puller")
}

fn reference(s: &str) -> ImageReference {
    ImageReference::parse(s).expect("reference")
}

fn pull(p: &Puller, r: &str) -> PulledImage {
    p.pull_blocking(&reference(r), &no_progress)
        .unwrap_or_else(|e| panic!("pull {r}: {e}"))
}

fn assert_busybox_root(root: &Path) {
    let bb = root.join("bin/busybox");
    let meta = fs::symlink_metadata(&bb).expect("/bin/busybox in the root");
    assert!(meta.is_file());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
    assert_eq!(
        meta.len(),
        fs::metadata("/bin/busybox").expect("host busybox").len(),
        "busybox binary size"
    );
    for applet in ["sh", "ls", "cat"] {
        let link = root.join("bin").join(applet);
        assert!(fs::symlink_metadata(&link)
            .expect(applet)
            .file_type()
            .is_symlink());
        assert_eq!(
            fs::read_link(&link).expect("readlink"),
            PathBuf::from("busybox")
        );
    }
    assert_eq!(
        fs::metadata(root.join("tmp"))
            .expect("/tmp")
            .permissions()
            .mode()
            & 0o7777,
        0o1777
    );
    assert_eq!(
        fs::read_to_string(root.join("etc/sifhub-arch")).expect("arch marker"),
        "amd64\n"
    );
}

#[test]
fn pull_by_tag_resolves_the_multi_arch_index_to_linux_amd64() {
    let fx = fixtures();
    let reg = seeded_registry();
    let cache = tempfile::tempdir().unwrap();
    let events = Mutex::new(Vec::<String>::new());
    let progress = |e: &PullEvent<'_>| {
        let s = match e {
            PullEvent::Resolved { .. } => "resolved".to_string(),
            PullEvent::BlobStarted { digest, .. } => format!("start {digest}"),
            PullEvent::BlobProgress {
                downloaded, size, ..
            } => {
                assert!(downloaded <= size);
                "progress".to_string()
            }
            PullEvent::BlobDone { digest, cached, .. } => format!("done {digest} {cached}"),
        };
        events.lock().unwrap().push(s);
    };
    let image = puller(cache.path())
        .pull_blocking(
            &reference(&format!("docker://{}/busybox", reg.host())),
            &progress,
        )
        .expect("pull busybox:latest");

    assert_eq!(image.manifest_digest, fx.digest("busybox-amd64"));
    assert_eq!(
        image.index_digest.as_deref(),
        Some(fx.digest("busybox").as_str())
    );
    assert_eq!(image.base_digest(), fx.digest("busybox"));
    assert_eq!(image.manifest_media_type, OCI_MANIFEST);
    assert_eq!(
        image.pinned_reference(),
        format!("{}/busybox@{}", reg.host(), fx.digest("busybox"))
    );
    assert_eq!(image.layers.len(), 1);
    assert_eq!(image.config.architecture.as_deref(), Some("amd64"));
    assert_eq!(image.config.cmd, vec!["sh".to_string()]);
    assert_eq!(image.config.working_dir.as_deref(), Some("/tmp"));
    assert_eq!(image.report.blobs_fetched, 2, "config and one layer");
    assert_eq!(image.report.blobs_cached, 0);
    assert!(image.warnings.is_empty(), "{:?}", image.warnings);

    let events = events.into_inner().unwrap();
    assert_eq!(events.first().map(String::as_str), Some("resolved"));
    let layer = &image.layers[0].digest;
    assert!(events.contains(&format!("start {layer}")));
    assert!(events.contains(&"progress".to_string()));
    assert!(events.contains(&format!("done {layer} false")));

    // The layer blob in the cache is the verified content.
    let blob = fs::read(&image.layers[0].path).unwrap();
    use sha2::Digest;
    assert_eq!(
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&blob))),
        *layer
    );

    let root = tempfile::tempdir().unwrap();
    let report = image
        .apply_to(root.path(), ApplyOptions::default())
        .expect("apply busybox");
    assert_busybox_root(root.path());
    assert_eq!(report.layers.len(), 1);
    assert!(
        report.layers[0].symlinks > 100,
        "applet symlinks: {:?}",
        report.layers[0]
    );

    // What apptainer derives from the config.
    let files = image.apptainer_files();
    assert_eq!(
        files.env_script,
        "#!/bin/sh\nexport PATH=\"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"\n\
         export GREETING=\"${GREETING:-\"hello \\\"world\\\" \\$HOME\"}\"\n"
    );
    assert!(files
        .runscript
        .starts_with("#!/bin/sh\nOCI_ENTRYPOINT=''\nOCI_CMD='\"sh\"'\n"));
    assert_eq!(
        files.labels_json,
        "{\n\t\"org.sifhub.arch\": \"amd64\",\n\t\"org.sifhub.test\": \"busybox\"\n}"
    );
    assert_eq!(files.working_dir.as_deref(), Some("/tmp"));
    files.write_into(root.path()).unwrap();
    let env = root
        .path()
        .join(".singularity.d/env/10-docker2singularity.sh");
    assert_eq!(fs::read_to_string(&env).unwrap(), files.env_script);
    assert_eq!(
        fs::metadata(&env).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert_eq!(
        fs::read_to_string(root.path().join(".singularity.d/runscript")).unwrap(),
        files.runscript
    );
    // The runscript is valid sh and runs the image's Cmd.
    let out = std::process::Command::new("/bin/busybox")
        .args(["sh", "-n"])
        .arg(root.path().join(".singularity.d/runscript"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn pull_docker_v2s2_manifest() {
    let fx = fixtures();
    let reg = seeded_registry();
    let cache = tempfile::tempdir().unwrap();
    let image = pull(
        &puller(cache.path()),
        &format!("{}/busybox:v2s2", reg.host()),
    );
    assert_eq!(image.manifest_media_type, DOCKER_MANIFEST);
    assert_eq!(image.index_digest, None);
    assert_eq!(image.manifest_digest, reg.manifest_digest("busybox:v2s2"));
    assert_ne!(
        image.manifest_digest,
        fx.digest("busybox-amd64"),
        "converted manifest"
    );
    assert_eq!(image.base_digest(), image.manifest_digest);
    assert_eq!(
        image.layers[0].media_type,
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    let root = tempfile::tempdir().unwrap();
    image
        .apply_to(root.path(), ApplyOptions::default())
        .unwrap();
    assert_busybox_root(root.path());
}

#[test]
fn pull_zstd_compressed_layers() {
    let fx = fixtures();
    let reg = Registry::start();
    reg.push(
        &fx.layout,
        "busybox-amd64",
        "busybox:zstd",
        PushFormat::OciZstd,
    );
    let cache = tempfile::tempdir().unwrap();
    let image = pull(
        &puller(cache.path()),
        &format!("{}/busybox:zstd", reg.host()),
    );
    assert_eq!(
        image.layers[0].media_type,
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    let head = fs::read(&image.layers[0].path).unwrap();
    assert_eq!(&head[..4], &[0x28, 0xb5, 0x2f, 0xfd], "a zstd frame");
    let root = tempfile::tempdir().unwrap();
    image
        .apply_to(root.path(), ApplyOptions::default())
        .unwrap();
    assert_busybox_root(root.path());
}

#[test]
fn pull_by_digest() {
    let fx = fixtures();
    let reg = seeded_registry();
    let cache = tempfile::tempdir().unwrap();
    let p = puller(cache.path());
    let amd64 = fx.digest("busybox-amd64");
    let image = pull(&p, &format!("{}/busybox@{amd64}", reg.host()));
    assert_eq!(image.manifest_digest, amd64);
    assert_eq!(image.index_digest, None);
    assert_eq!(image.reference.tag, None);

    // A digest naming the index resolves through it.
    let index = fx.digest("busybox");
    let image = pull(&p, &format!("{}/busybox@{index}", reg.host()));
    assert_eq!(image.manifest_digest, amd64);
    assert_eq!(image.base_digest(), index);

    // A digest that is not there.
    let missing = format!("sha256:{}", "0".repeat(64));
    let err = p
        .pull_blocking(
            &reference(&format!("{}/busybox@{missing}", reg.host())),
            &no_progress,
        )
        .unwrap_err();
    assert!(matches!(err, OciError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("not found"), "{err}");

    // A tag that is not there.
    let err = p
        .pull_blocking(
            &reference(&format!("{}/busybox:nope", reg.host())),
            &no_progress,
        )
        .unwrap_err();
    assert!(matches!(err, OciError::NotFound { .. }), "{err}");
}

#[test]
fn second_pull_downloads_no_blobs() {
    let reg = seeded_registry();
    let cache = tempfile::tempdir().unwrap();
    let p = puller(cache.path());
    let r = format!("{}/busybox:latest", reg.host());
    let first = pull(&p, &r);
    assert_eq!(first.report.blobs_fetched, 2);
    assert_eq!(first.report.layers_fetched, 1);
    assert!(first.report.bytes_fetched > 500_000);
    let gets_after_first = reg.blob_gets();
    assert_eq!(gets_after_first, 2, "registry log:\n{}", reg.log());

    let second = pull(&p, &r);
    assert_eq!(second.report.blobs_fetched, 0);
    assert_eq!(second.report.blobs_cached, 2);
    assert_eq!(second.report.layers_cached, 1);
    assert_eq!(second.report.bytes_fetched, 0);
    assert_eq!(second.manifest_digest, first.manifest_digest);
    assert_eq!(
        reg.blob_gets(),
        gets_after_first,
        "no blob GET on the second pull"
    );

    // The v2s2 tag shares the layer and config: nothing to fetch either.
    let v2 = pull(&p, &format!("{}/busybox:v2s2", reg.host()));
    assert_eq!(v2.report.blobs_fetched, 0);

    // A corrupted cache entry is detected and fetched again.
    fs::write(&first.layers[0].path, b"corrupted").unwrap();
    let third = pull(&p, &r);
    assert_eq!(third.report.blobs_fetched, 1);
    assert_eq!(third.report.layers_fetched, 1);
    let root = tempfile::tempdir().unwrap();
    third
        .apply_to(root.path(), ApplyOptions::default())
        .unwrap();
    assert_busybox_root(root.path());
}

#[test]
fn basic_auth_registry() {
    let fx = fixtures();
    let reg = Registry::start_with_basic_auth("alice", "s3cret-pw");
    let digest = reg.push(
        &fx.layout,
        "busybox-amd64",
        "private/busybox:1",
        PushFormat::Oci,
    );
    let r = reference(&format!("{}/private/busybox:1", reg.host()));

    // Without credentials: a clear error.
    let cache = tempfile::tempdir().unwrap();
    let err = puller(cache.path())
        .pull_blocking(&r, &no_progress)
        .unwrap_err();
    assert!(matches!(err, OciError::Unauthorized { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(reg.host()), "{msg}");
    assert!(msg.contains("private/busybox"), "{msg}");
    assert!(msg.contains("SIFHUB_REGISTRY_AUTH"), "{msg}");

    // Wrong password.
    let mut config = RegistryConfig::new(cache.path());
    config.credentials = parse_registry_auth(&format!("{}=alice:wrong", reg.host())).unwrap();
    let err = Puller::new(config)
        .unwrap()
        .pull_blocking(&r, &no_progress)
        .unwrap_err();
    assert!(matches!(err, OciError::Unauthorized { .. }), "{err}");
    assert!(err.to_string().contains("rejected"), "{err}");
    assert!(
        !err.to_string().contains("wrong"),
        "no password in messages: {err}"
    );

    // With credentials (the SIFHUB_REGISTRY_AUTH format, keyed by host:port).
    let mut config = RegistryConfig::new(cache.path());
    config.credentials = parse_registry_auth(&format!("{}=alice:s3cret-pw", reg.host())).unwrap();
    let image = Puller::new(config)
        .unwrap()
        .pull_blocking(&r, &no_progress)
        .expect("authenticated pull");
    assert_eq!(image.manifest_digest, digest);
    assert_eq!(image.report.blobs_fetched, 2);
    let root = tempfile::tempdir().unwrap();
    image
        .apply_to(root.path(), ApplyOptions::default())
        .unwrap();
    assert_busybox_root(root.path());

    // Credentials for the bare host also apply to host:port.
    let mut config = RegistryConfig::new(cache.path());
    config.credentials = parse_registry_auth("127.0.0.1=alice:s3cret-pw").unwrap();
    Puller::new(config)
        .unwrap()
        .pull_blocking(&r, &no_progress)
        .expect("host-only credentials");
}

#[test]
fn bearer_token_challenge_like_docker_hub() {
    let reg = seeded_registry();
    // Anonymous tokens (public Docker Hub images).
    let proxy = TokenAuthProxy::start(reg.host(), None);
    let cache = tempfile::tempdir().unwrap();
    let image = pull(
        &puller(cache.path()),
        &format!("{}/busybox:latest", proxy.host()),
    );
    assert_eq!(image.manifest_digest, fixtures().digest("busybox-amd64"));
    let tokens = proxy.token_requests.lock().unwrap().clone();
    assert!(!tokens.is_empty(), "a token was requested");
    assert!(
        tokens
            .iter()
            .all(|q| q.contains("scope=repository%3Abusybox%3Apull")
                && q.contains("service=sifhub-test")),
        "{tokens:?}"
    );
    let requests = proxy.requests.lock().unwrap().clone();
    assert!(
        requests
            .iter()
            .filter(|r| r.line.contains("/blobs/") || r.line.contains("/manifests/"))
            .all(|r| r.had_token),
        "{requests:?}"
    );

    // Tokens only for a user with credentials (private repositories).
    let private = TokenAuthProxy::start(reg.host(), Some(("bob", "hunter2")));
    let r = reference(&format!("{}/busybox:latest", private.host()));
    let err = puller(cache.path())
        .pull_blocking(&r, &no_progress)
        .unwrap_err();
    assert!(matches!(err, OciError::Unauthorized { .. }), "{err}");
    let cache2 = tempfile::tempdir().unwrap();
    let mut config = RegistryConfig::new(cache2.path());
    config.credentials = parse_registry_auth(&format!("{}=bob:hunter2", private.host())).unwrap();
    let image = Puller::new(config)
        .unwrap()
        .pull_blocking(&r, &no_progress)
        .expect("token pull with credentials");
    assert_eq!(image.report.blobs_fetched, 2);
}

#[test]
fn debian_minbase_pull_and_apply_keeps_ownership_and_modes() {
    let fx = fixtures();
    let reg = Registry::start();
    let digest = reg.push(&fx.layout, "debian", "debian:bookworm", PushFormat::Oci);
    let cache = tempfile::tempdir().unwrap();
    let image = pull(
        &puller(cache.path()),
        &format!("{}/debian:bookworm", reg.host()),
    );
    assert_eq!(image.manifest_digest, digest);
    let root = tempfile::tempdir().unwrap();
    let report = image
        .apply_to(root.path(), ApplyOptions::default())
        .expect("apply debian");
    let r = root.path();

    // /etc/shadow is root:shadow (gid 42) 0640 in Debian; /usr/bin/chage setgid shadow.
    let shadow_rel = PathBuf::from("etc/shadow");
    let owner = report
        .owners
        .get(&shadow_rel)
        .copied()
        .expect("shadow owner recorded");
    assert_eq!((owner.uid, owner.gid), (0, 42));
    let meta = fs::symlink_metadata(r.join(&shadow_rel)).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    let chage = fs::symlink_metadata(r.join("usr/bin/chage")).unwrap();
    assert_eq!(chage.permissions().mode() & 0o7777, 0o2755, "setgid kept");
    assert_eq!(
        report.owners.get(Path::new("var/mail")).map(|o| o.gid),
        Some(8)
    );
    assert!(
        !report.owners.contains_key(Path::new("etc/passwd")),
        "root-owned files are not listed"
    );
    if report.chowned {
        assert_eq!((meta.uid(), meta.gid()), (0, 42), "chowned as in the layer");
        assert_eq!(chage.gid(), 42);
        assert_eq!(fs::metadata(r.join("var/mail")).unwrap().gid(), 8);
    }

    // usrmerge symlinks, and files reached through them.
    assert_eq!(
        fs::read_link(r.join("bin")).unwrap(),
        PathBuf::from("usr/bin")
    );
    assert!(r.join("usr/bin/bash").is_file());
    assert!(r.join("usr/bin/dpkg").is_file());
    assert!(r.join("etc/debian_version").is_file());
    assert!(fs::read_to_string(r.join("etc/os-release"))
        .unwrap()
        .contains("bookworm"));

    // Hard links in the layer stay hard links (e.g. perl's duplicated binaries) and
    // device nodes exist or were skipped with a warning.
    let null = r.join("dev/null");
    match fs::symlink_metadata(&null) {
        Ok(m) => {
            assert!(m.file_type().is_char_device(), "/dev/null is a char device");
            assert_eq!(m.rdev(), rustix_dev(1, 3));
        }
        Err(_) => assert!(
            report
                .warnings
                .iter()
                .any(|w| w.contains("dev/null") && w.contains("not permitted")),
            "{:?}",
            report.warnings
        ),
    }
    assert!(report.layers[0].files > 3000, "{:?}", report.layers[0]);
    // Mtimes come from the layer (umoci kept debootstrap's).
    let source = fixtures_dir().join("debian-bookworm-minbase/etc/debian_version");
    assert_eq!(
        fs::metadata(r.join("etc/debian_version")).unwrap().mtime(),
        fs::metadata(source).unwrap().mtime()
    );
}

fn rustix_dev(major: u64, minor: u64) -> u64 {
    ((major & 0xfffff000) << 32)
        | ((major & 0xfff) << 8)
        | ((minor & 0xffffff00) << 12)
        | (minor & 0xff)
}

/// Pushes a crafted image and pulls it back.
fn push_crafted(
    reg: &Registry,
    name: &str,
    layers: Vec<CraftedLayer>,
) -> (PulledImage, tempfile::TempDir) {
    let layout = tempfile::tempdir().unwrap();
    write_oci_layout(
        layout.path(),
        "t",
        &layers,
        serde_json::json!({"Cmd": ["/bin/sh"]}),
    );
    let digest = reg.push(layout.path(), "t", &format!("{name}:t"), PushFormat::Oci);
    assert_eq!(digest, layout_digest(layout.path(), "t"));
    let cache = tempfile::tempdir().unwrap();
    let image = pull(&puller(cache.path()), &format!("{}/{name}:t", reg.host()));
    (image, cache)
}

#[test]
fn three_layer_whiteouts_produce_the_right_tree() {
    let reg = Registry::start();
    let mut l1 = LayerTar::new();
    l1.dir("data", 0o755)
        .file("data/keep.txt", b"keep", 0o644)
        .file("data/remove-me.txt", b"gone", 0o644)
        .dir("data/removed-dir", 0o755)
        .file("data/removed-dir/inner", b"x", 0o644)
        .dir("data/opaque", 0o755)
        .file("data/opaque/old.txt", b"old", 0o644)
        .dir("data/opaque/sub", 0o755)
        .file("data/opaque/sub/deep.txt", b"deep", 0o644)
        .dir("data/dir-to-file", 0o755)
        .file("data/dir-to-file/child", b"c", 0o644)
        .hardlink("data/keep-link", "data/keep.txt");
    let mut l2 = LayerTar::new();
    l2.whiteout("data/remove-me.txt")
        .whiteout("data/removed-dir")
        .dir("data/opaque", 0o750)
        // the same layer's content comes before the opaque marker here
        .file("data/opaque/new.txt", b"new", 0o644)
        .opaque("data/opaque")
        .file("data/dir-to-file", b"now a file", 0o600);
    let mut l3 = LayerTar::new();
    l3.file("data/added.txt", b"added", 0o644)
        .file("data/opaque/later.txt", b"later", 0o644)
        .file("data/remove-me.txt.bak", b"bak", 0o644);
    let layers = vec![
        CraftedLayer {
            tar: l1.into_tar(),
            gzip: true,
        },
        CraftedLayer {
            tar: l2.into_tar(),
            gzip: false,
        },
        CraftedLayer {
            tar: l3.into_tar(),
            gzip: true,
        },
    ];
    let (image, _cache) = push_crafted(&reg, "whiteouts", layers);
    assert_eq!(image.layers.len(), 3);
    assert_eq!(
        image.layers[1].media_type,
        "application/vnd.oci.image.layer.v1.tar"
    );
    let root = tempfile::tempdir().unwrap();
    let report = image
        .apply_to(root.path(), ApplyOptions::default())
        .unwrap();
    let d = root.path().join("data");
    let mut names: Vec<String> = fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "added.txt",
            "dir-to-file",
            "keep-link",
            "keep.txt",
            "opaque",
            "remove-me.txt.bak"
        ]
    );
    let mut opaque: Vec<String> = fs::read_dir(d.join("opaque"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    opaque.sort();
    assert_eq!(opaque, ["later.txt", "new.txt"]);
    assert_eq!(
        fs::metadata(d.join("opaque")).unwrap().permissions().mode() & 0o777,
        0o750
    );
    assert_eq!(fs::read(d.join("dir-to-file")).unwrap(), b"now a file");
    assert_eq!(fs::metadata(d.join("keep.txt")).unwrap().nlink(), 2);
    assert_eq!(
        fs::metadata(d.join("keep.txt")).unwrap().ino(),
        fs::metadata(d.join("keep-link")).unwrap().ino()
    );
    assert_eq!(report.layers[1].whiteouts, 2);
    assert_eq!(report.layers[1].opaque_dirs, 1);
    // no whiteout marker files left behind
    assert!(walk(root.path())
        .iter()
        .all(|p| !p.to_string_lossy().contains(".wh.")));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        out.push(p.clone());
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            out.extend(walk(&p));
        }
    }
    out
}

fn escape_image(reg: &Registry, name: &str, tar: LayerTar) -> (PulledImage, tempfile::TempDir) {
    push_crafted(
        reg,
        name,
        vec![CraftedLayer {
            tar: tar.into_tar(),
            gzip: true,
        }],
    )
}

/// A sandbox with the root inside, so "outside the root" is observable.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("a/b/root")).unwrap();
        Sandbox { dir }
    }
    fn root(&self) -> PathBuf {
        self.dir.path().join("a/b/root")
    }
    /// Every path in the sandbox outside the root.
    fn outside(&self) -> Vec<PathBuf> {
        walk(self.dir.path())
            .into_iter()
            .filter(|p| !p.starts_with(self.root()))
            .filter(|p| p != &self.dir.path().join("a") && p != &self.dir.path().join("a/b"))
            .collect()
    }
}

#[test]
fn escape_dotdot_entry_is_refused() {
    let reg = Registry::start();
    let mut t = LayerTar::new();
    t.file("ok.txt", b"fine", 0o644)
        .file("../../x", b"escape", 0o644);
    let (image, _c) = escape_image(&reg, "dotdot", t);
    let sb = Sandbox::new();
    let err = image
        .apply_to(&sb.root(), ApplyOptions::default())
        .unwrap_err();
    assert!(matches!(err, OciError::EntryEscapes { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&image.layers[0].digest),
        "names the layer: {msg}"
    );
    assert!(msg.contains("\"../../x\""), "names the entry: {msg}");
    assert!(sb.outside().is_empty(), "{:?}", sb.outside());
}

#[test]
fn absolute_entry_lands_inside_the_root() {
    let reg = Registry::start();
    let mut t2 = LayerTar::new();
    t2.dir("/etc", 0o755)
        .file("/etc/abs-escape-test.txt", b"inside", 0o644);
    let (image, _c) = escape_image(&reg, "absolute", t2);
    let sb = Sandbox::new();
    image
        .apply_to(&sb.root(), ApplyOptions::default())
        .expect("absolute paths are made relative");
    assert_eq!(
        fs::read(sb.root().join("etc/abs-escape-test.txt")).unwrap(),
        b"inside"
    );
    assert!(
        !Path::new("/etc/abs-escape-test.txt").exists(),
        "host /etc untouched"
    );
    assert!(sb.outside().is_empty());
}

#[test]
fn symlink_to_host_etc_cannot_redirect_writes() {
    let reg = Registry::start();
    let mut t = LayerTar::new();
    t.symlink("etc", "/etc")
        .file("etc/passwd-escape", b"pwned", 0o644);
    let (image, _c) = escape_image(&reg, "symlink-etc", t);
    let sb = Sandbox::new();
    let err = image
        .apply_to(&sb.root(), ApplyOptions::default())
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&image.layers[0].digest), "{msg}");
    assert!(msg.contains("etc/passwd-escape"), "{msg}");
    assert!(msg.contains("symbolic links"), "{msg}");
    assert!(
        !Path::new("/etc/passwd-escape").exists(),
        "host /etc untouched"
    );
    assert!(sb.outside().is_empty(), "{:?}", sb.outside());
    assert!(walk(&sb.root())
        .iter()
        .all(|p| !p.ends_with("passwd-escape")));

    // Through a symlink to "/" or a relative one climbing out: lands inside.
    let mut t = LayerTar::new();
    t.symlink("top", "/")
        .symlink("up", "../../../../../../tmp")
        .file("top/via-top", b"1", 0o644)
        .file("up/via-up", b"2", 0o644);
    let (image, _c) = escape_image(&reg, "symlink-contained", t);
    let sb = Sandbox::new();
    image
        .apply_to(&sb.root(), ApplyOptions::default())
        .expect("contained");
    assert_eq!(fs::read(sb.root().join("via-top")).unwrap(), b"1");
    assert_eq!(fs::read(sb.root().join("tmp/via-up")).unwrap(), b"2");
    assert!(!Path::new("/tmp/via-up").exists());
    assert!(sb.outside().is_empty(), "{:?}", sb.outside());
}

#[test]
fn hardlink_escaping_the_root_is_refused() {
    let reg = Registry::start();
    let mut t = LayerTar::new();
    t.hardlink("evil", "../../etc/shadow");
    let (image, _c) = escape_image(&reg, "hardlink", t);
    let sb = Sandbox::new();
    let err = image
        .apply_to(&sb.root(), ApplyOptions::default())
        .unwrap_err();
    assert!(matches!(err, OciError::EntryEscapes { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&image.layers[0].digest)
            && msg.contains("\"evil\"")
            && msg.contains("../../etc/shadow"),
        "{msg}"
    );
    assert!(!sb.root().join("evil").exists());

    // An absolute target is inside the root: it must exist there.
    let mut t = LayerTar::new();
    t.hardlink("evil2", "/etc/shadow");
    let (image, _c) = escape_image(&reg, "hardlink-abs", t);
    let sb = Sandbox::new();
    let err = image
        .apply_to(&sb.root(), ApplyOptions::default())
        .unwrap_err();
    assert!(
        err.to_string().contains("does not exist in the root"),
        "{err}"
    );
    assert!(!sb.root().join("evil2").exists());
}
