//! Layer application on hand-made tarballs (no registry): change-set
//! semantics (whiteouts, opaque dirs, replacement), file kinds, metadata,
//! compression, and confinement to the root.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sifhub_builder::oci::{ApplyOptions, LayerApplier, OciError, Ownership};

const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
const D3: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";

/// A tar built entry by entry, paths written verbatim (hostile ones too).
struct Tar {
    b: tar::Builder<Vec<u8>>,
    owner: (u64, u64),
    mtime: u64,
}

impl Tar {
    fn new() -> Tar {
        Tar {
            b: tar::Builder::new(Vec::new()),
            owner: (0, 0),
            mtime: 1_600_000_000,
        }
    }
    fn header(&self, path: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(self.owner.0);
        h.set_gid(self.owner.1);
        h.set_mtime(self.mtime);
        h.set_size(size);
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..path.len()].copy_from_slice(path.as_bytes());
        h
    }
    fn add(&mut self, mut h: tar::Header, data: &[u8]) -> &mut Self {
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }
    fn dir(&mut self, p: &str, mode: u32) -> &mut Self {
        let h = self.header(p, tar::EntryType::Directory, mode, 0);
        self.add(h, &[])
    }
    fn file(&mut self, p: &str, data: &[u8], mode: u32) -> &mut Self {
        let h = self.header(p, tar::EntryType::Regular, mode, data.len() as u64);
        self.add(h, data)
    }
    fn link(&mut self, p: &str, target: &str, kind: tar::EntryType) -> &mut Self {
        let mut h = self.header(p, kind, 0o777, 0);
        h.as_gnu_mut().unwrap().linkname[..target.len()].copy_from_slice(target.as_bytes());
        self.add(h, &[])
    }
    fn symlink(&mut self, p: &str, target: &str) -> &mut Self {
        self.link(p, target, tar::EntryType::Symlink)
    }
    fn hardlink(&mut self, p: &str, target: &str) -> &mut Self {
        self.link(p, target, tar::EntryType::Link)
    }
    fn device(&mut self, p: &str, kind: tar::EntryType, major: u32, minor: u32) -> &mut Self {
        let mut h = self.header(p, kind, 0o666, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.add(h, &[])
    }
    fn bytes(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zstd(data: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
}

struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("outer/inner/root")).unwrap();
        Sandbox { dir }
    }
    fn root(&self) -> PathBuf {
        self.dir.path().join("outer/inner/root")
    }
    fn applier(&self, opts: ApplyOptions) -> LayerApplier {
        LayerApplier::new(&self.root(), opts).unwrap()
    }
    /// Files or folders that appeared outside the root.
    fn leaked(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![self.dir.path().to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p == self.root() {
                    continue;
                }
                let expected =
                    p == self.dir.path().join("outer") || p == self.dir.path().join("outer/inner");
                if !expected {
                    out.push(p.clone());
                }
                if fs::symlink_metadata(&p).unwrap().is_dir() {
                    stack.push(p);
                }
            }
        }
        out
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn whiteouts_and_opaque_directories() {
    let sb = Sandbox::new();
    let mut a = sb.applier(ApplyOptions::default());
    let mut l1 = Tar::new();
    l1.dir("d", 0o755)
        .file("d/a", b"a", 0o644)
        .file("d/b", b"b", 0o644)
        .dir("d/sub", 0o755)
        .file("d/sub/x", b"x", 0o644)
        .dir("o", 0o755)
        .file("o/old", b"old", 0o644)
        .dir("o/olddir", 0o755)
        .file("o/olddir/f", b"f", 0o644)
        .dir("p", 0o755)
        .file("p/old", b"old", 0o644);
    a.apply_reader(&gz(&l1.bytes())[..], D1).unwrap();

    let mut l2 = Tar::new();
    l2.file("d/.wh.a", b"", 0o600)
        .file("d/.wh.sub", b"", 0o600)
        .file("d/.wh.never-existed", b"", 0o600)
        // opaque marker first, then same-layer content
        .file("o/.wh..wh..opq", b"", 0o600)
        .file("o/new", b"new", 0o644)
        // same-layer content first, then the opaque marker
        .dir("p/newdir", 0o755)
        .file("p/newdir/n", b"n", 0o644)
        .file("p/.wh..wh..opq", b"", 0o600)
        // AUFS metadata is ignored
        .file(".wh..wh.plnk", b"", 0o600);
    let stats = a.apply_reader(&l2.bytes()[..], D2).unwrap();
    assert_eq!(stats.whiteouts, 3);
    assert_eq!(stats.opaque_dirs, 2);

    let r = sb.root();
    assert_eq!(names(&r.join("d")), ["b"]);
    assert_eq!(names(&r.join("o")), ["new"]);
    assert_eq!(names(&r.join("p")), ["newdir"]);
    assert_eq!(names(&r.join("p/newdir")), ["n"]);
    assert_eq!(names(&r), ["d", "o", "p"]);
    assert_eq!(a.report().layers.len(), 2);
}

#[test]
fn replacement_rules() {
    let sb = Sandbox::new();
    let mut a = sb.applier(ApplyOptions::default());
    let mut l1 = Tar::new();
    l1.dir("dir-becomes-file", 0o755)
        .file("dir-becomes-file/child", b"c", 0o644)
        .file("file-becomes-dir", b"f", 0o644)
        .symlink("link-becomes-dir", "/somewhere")
        .file("file-becomes-link", b"f", 0o644)
        .dir("merged", 0o700)
        .file("merged/lower", b"l", 0o644)
        .file("overwritten", b"old", 0o644);
    a.apply_reader(&l1.bytes()[..], D1).unwrap();
    let mut l2 = Tar::new();
    l2.file("dir-becomes-file", b"now file", 0o644)
        .dir("file-becomes-dir", 0o755)
        .dir("link-becomes-dir", 0o755)
        .symlink("file-becomes-link", "merged/lower")
        .dir("merged", 0o755)
        .file("merged/upper", b"u", 0o644)
        .file("overwritten", b"new", 0o600);
    a.apply_reader(&l2.bytes()[..], D2).unwrap();
    let r = sb.root();
    assert_eq!(fs::read(r.join("dir-becomes-file")).unwrap(), b"now file");
    assert!(fs::symlink_metadata(r.join("file-becomes-dir"))
        .unwrap()
        .is_dir());
    assert!(fs::symlink_metadata(r.join("link-becomes-dir"))
        .unwrap()
        .is_dir());
    assert_eq!(
        fs::read_link(r.join("file-becomes-link")).unwrap(),
        PathBuf::from("merged/lower")
    );
    assert_eq!(names(&r.join("merged")), ["lower", "upper"]);
    assert_eq!(mode(&r.join("merged")), 0o755);
    assert_eq!(fs::read(r.join("overwritten")).unwrap(), b"new");
    assert_eq!(mode(&r.join("overwritten")), 0o600);
}

#[test]
fn file_kinds_modes_mtimes_and_links() {
    let sb = Sandbox::new();
    let mut a = sb.applier(ApplyOptions::default());
    let mut t = Tar::new();
    t.dir("bin", 0o755)
        .file("bin/tool", b"#!/bin/sh\n", 0o4755)
        .file("bin/group-tool", b"x", 0o2711)
        .dir("tmp", 0o1777)
        .dir("ro", 0o555)
        .file(
            "ro/inside",
            b"written before the dir became read-only",
            0o444,
        )
        .symlink("bin/alias", "tool")
        .symlink("abs-link", "/bin/tool")
        .hardlink("bin/tool-hard", "bin/tool")
        .hardlink("/bin/tool-hard-abs", "/bin/tool")
        .file("implied/parent/file", b"p", 0o644)
        .device("fifo", tar::EntryType::Fifo, 0, 0);
    let stats = a.apply_reader(&t.bytes()[..], D1).unwrap();
    assert_eq!(stats.hardlinks, 2);
    assert_eq!(stats.symlinks, 2);
    let r = sb.root();
    assert_eq!(mode(&r.join("bin/tool")), 0o4755);
    assert_eq!(mode(&r.join("bin/group-tool")), 0o2711);
    assert_eq!(mode(&r.join("tmp")), 0o1777);
    assert_eq!(mode(&r.join("ro")), 0o555);
    assert_eq!(mode(&r.join("implied")), 0o755);
    assert_eq!(
        fs::read_link(r.join("bin/alias")).unwrap(),
        PathBuf::from("tool")
    );
    assert_eq!(
        fs::read_link(r.join("abs-link")).unwrap(),
        PathBuf::from("/bin/tool")
    );
    let ino = fs::metadata(r.join("bin/tool")).unwrap().ino();
    assert_eq!(fs::metadata(r.join("bin/tool-hard")).unwrap().ino(), ino);
    assert_eq!(
        fs::metadata(r.join("bin/tool-hard-abs")).unwrap().ino(),
        ino
    );
    assert!(fs::symlink_metadata(r.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    for p in ["bin/tool", "bin", "tmp", "ro", "ro/inside"] {
        assert_eq!(
            fs::metadata(r.join(p)).unwrap().mtime(),
            1_600_000_000,
            "{p}"
        );
    }
    assert_eq!(
        fs::symlink_metadata(r.join("bin/alias")).unwrap().mtime(),
        1_600_000_000
    );
}

#[test]
fn compression_is_detected_gzip_zstd_plain() {
    let mut t = Tar::new();
    t.dir("x", 0o755)
        .file("x/big", &vec![7u8; 300_000], 0o644)
        .file("x/small", b"s", 0o644);
    let raw = t.bytes();
    let sb = Sandbox::new();
    let mut a = sb.applier(ApplyOptions::default());
    a.apply_reader(&raw[..], D1).unwrap();
    a.apply_reader(&gz(&raw)[..], D2).unwrap();
    // Two zstd frames back to back (as parallel compressors write).
    let (front, back) = raw.split_at(100_000);
    let mut z = zstd(front);
    z.extend(zstd(back));
    let stats = a.apply_reader(&z[..], D3).unwrap();
    assert_eq!(stats.files, 2);
    assert_eq!(stats.bytes, 300_001);
    assert_eq!(
        fs::read(sb.root().join("x/big")).unwrap(),
        vec![7u8; 300_000]
    );

    // A layer file on disk.
    let f = sb.dir.path().join("layer.tar.gz");
    fs::write(&f, gz(&raw)).unwrap();
    a.apply_file(&f, D1).unwrap();

    // A truncated layer: a read error naming the layer.
    let cut = gz(&raw);
    let err = a.apply_reader(&cut[..cut.len() / 2], D2).unwrap_err();
    assert!(matches!(err, OciError::LayerRead { .. }), "{err}");
    assert!(err.to_string().contains(D2), "{err}");
}

#[test]
fn ownership_recorded_and_chowned_when_root() {
    let mut t = Tar::new();
    t.owner = (1234, 4321);
    t.dir("home", 0o755).file("home/owned", b"o", 0o4750);
    t.owner = (0, 42);
    t.file("shadow", b"s", 0o640);
    t.owner = (0, 0);
    t.file("rootfile", b"r", 0o644);
    t.owner = (77, 77);
    t.symlink("userlink", "rootfile");
    let raw = t.bytes();

    // Record only: nothing is chowned, everything non-root is listed.
    let sb = Sandbox::new();
    let mut a = sb.applier(ApplyOptions {
        ownership: Ownership::Record,
        ..ApplyOptions::default()
    });
    a.apply_reader(&raw[..], D1).unwrap();
    let report = a.finish();
    assert!(!report.chowned);
    let o = &report.owners;
    assert_eq!(
        o.get(Path::new("home/owned")).map(|o| (o.uid, o.gid)),
        Some((1234, 4321))
    );
    assert_eq!(
        o.get(Path::new("shadow")).map(|o| (o.uid, o.gid)),
        Some((0, 42))
    );
    assert_eq!(
        o.get(Path::new("userlink")).map(|o| (o.uid, o.gid)),
        Some((77, 77))
    );
    assert!(!o.contains_key(Path::new("rootfile")));
    assert_eq!(mode(&sb.root().join("home/owned")), 0o4750);

    // Auto: chown when root (this test suite runs as root in CI).
    let sb = Sandbox::new();
    let mut a = sb.applier(ApplyOptions::default());
    a.apply_reader(&raw[..], D1).unwrap();
    // A later layer deleting a path drops its record.
    let mut l2 = Tar::new();
    l2.file(".wh.shadow", b"", 0o600);
    a.apply_reader(&l2.bytes()[..], D2).unwrap();
    let report = a.finish();
    assert!(!report.owners.contains_key(Path::new("shadow")));
    assert!(report.owners.contains_key(Path::new("home/owned")));
    if rustix::process::geteuid().is_root() {
        assert!(report.chowned, "{:?}", report.warnings);
        let m = fs::metadata(sb.root().join("home/owned")).unwrap();
        assert_eq!((m.uid(), m.gid()), (1234, 4321));
        assert_eq!(
            mode(&sb.root().join("home/owned")),
            0o4750,
            "setuid survives chown"
        );
        let l = fs::symlink_metadata(sb.root().join("userlink")).unwrap();
        assert_eq!((l.uid(), l.gid()), (77, 77), "lchown, not the target");
        assert_eq!(fs::metadata(sb.root().join("rootfile")).unwrap().uid(), 0);
    } else {
        assert!(!report.chowned);
    }
}

#[test]
fn device_nodes_created_or_skipped_with_a_warning() {
    let sb = Sandbox::new();
    let mut a = sb.applier(ApplyOptions::default());
    let mut t = Tar::new();
    t.dir("dev", 0o755)
        .device("dev/null", tar::EntryType::Char, 1, 3)
        .device("dev/loop0", tar::EntryType::Block, 7, 0)
        .file("after", b"still applied", 0o644);
    let stats = a.apply_reader(&t.bytes()[..], D1).unwrap();
    assert_eq!(stats.special + stats.skipped_devices, 2);
    for (p, major, minor) in [("dev/null", 1u64, 3u64), ("dev/loop0", 7, 0)] {
        match fs::symlink_metadata(sb.root().join(p)) {
            Ok(m) => {
                let ft = m.file_type();
                assert!(ft.is_char_device() || ft.is_block_device());
                assert_eq!(m.rdev(), (major << 8) | minor, "{p}");
            }
            Err(_) => assert!(
                a.report()
                    .warnings
                    .iter()
                    .any(|w| w.contains(p) && w.contains("not permitted")),
                "{:?}",
                a.report().warnings
            ),
        }
    }
    assert_eq!(fs::read(sb.root().join("after")).unwrap(), b"still applied");
}

#[test]
fn pax_long_names_times_and_xattrs() {
    let long = format!("deep/{}/file.txt", "n".repeat(150));
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_pax_extensions([
        ("mtime", &b"1234567890.25"[..]),
        ("SCHILY.xattr.user.sifhub", &b"hello"[..]),
    ])
    .unwrap();
    b.append_data(&mut h, &long, &b"long"[..]).unwrap();
    let raw = b.into_inner().unwrap();
    let sb = Sandbox::new();
    let mut a = sb.applier(ApplyOptions::default());
    a.apply_reader(&raw[..], D1).unwrap();
    let p = sb.root().join(&long);
    assert_eq!(fs::read(&p).unwrap(), b"long");
    let m = fs::metadata(&p).unwrap();
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_234_567_890, 250_000_000));
    let mut buf = [0u8; 16];
    match rustix::fs::lgetxattr(&p, "user.sifhub", &mut buf) {
        Ok(n) => assert_eq!(&buf[..n], b"hello"),
        Err(_) => assert!(
            a.report()
                .warnings
                .iter()
                .any(|w| w.contains("user.sifhub")),
            "xattr neither set nor warned about"
        ),
    }
}

// ---------------------------------------------------------------------------
// Confinement.

#[test]
fn dotdot_entries_are_refused_with_layer_and_entry_named() {
    for bad in ["../../x", "a/../../x", "ok/../x", ".."] {
        let sb = Sandbox::new();
        let mut a = sb.applier(ApplyOptions::default());
        let mut t = Tar::new();
        t.file(bad, b"escape", 0o644);
        let err = a.apply_reader(&t.bytes()[..], D1).unwrap_err();
        assert!(matches!(err, OciError::EntryEscapes { .. }), "{bad}: {err}");
        let msg = err.to_string();
        assert!(
            msg.contains(D1) && msg.contains(&format!("{bad:?}")),
            "{msg}"
        );
        assert!(sb.leaked().is_empty(), "{bad}: {:?}", sb.leaked());
    }
}

#[test]
fn absolute_entries_are_made_relative() {
    let sb = Sandbox::new();
    let mut a = sb.applier(ApplyOptions::default());
    let mut t = Tar::new();
    t.file("/abs.txt", b"abs", 0o644)
        .file("//double/slash", b"d", 0o644)
        .file("./dot/./file", b"dot", 0o644)
        .dir("./", 0o700);
    a.apply_reader(&t.bytes()[..], D1).unwrap();
    let r = sb.root();
    assert_eq!(fs::read(r.join("abs.txt")).unwrap(), b"abs");
    assert_eq!(fs::read(r.join("double/slash")).unwrap(), b"d");
    assert_eq!(fs::read(r.join("dot/file")).unwrap(), b"dot");
    assert!(sb.leaked().is_empty(), "{:?}", sb.leaked());
}

#[test]
fn symlinked_parents_resolve_inside_the_root() {
    let sb = Sandbox::new();
    let outside = sb.dir.path().join("outer");
    let mut a = sb.applier(ApplyOptions::default());
    let mut t = Tar::new();
    t.symlink("etc", "/etc")
        .symlink("top", "/")
        .symlink("climb", "../../../../../../../..")
        .symlink("rel-out", "../inner")
        .symlink("host-outer", outside.to_str().unwrap())
        .file("top/t1", b"1", 0o644)
        .file("climb/t2", b"2", 0o644)
        .file("rel-out/t3", b"3", 0o644)
        .file("host-outer/t4", b"4", 0o644);
    a.apply_reader(&t.bytes()[..], D1).unwrap();
    let r = sb.root();
    assert_eq!(fs::read(r.join("t1")).unwrap(), b"1");
    assert_eq!(fs::read(r.join("t2")).unwrap(), b"2");
    assert_eq!(fs::read(r.join("inner/t3")).unwrap(), b"3");
    let reflected = r.join(outside.strip_prefix("/").unwrap()).join("t4");
    assert_eq!(fs::read(reflected).unwrap(), b"4");
    assert!(sb.leaked().is_empty(), "{:?}", sb.leaked());

    // etc -> /etc: writing through it loops back to the link itself.
    let mut t = Tar::new();
    t.file("etc/passwd-escape", b"pwned", 0o644);
    let err = a.apply_reader(&t.bytes()[..], D2).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, OciError::Entry { .. }), "{msg}");
    assert!(
        msg.contains(D2) && msg.contains("etc/passwd-escape") && msg.contains("symbolic links"),
        "{msg}"
    );
    assert!(!Path::new("/etc/passwd-escape").exists());
    assert!(sb.leaked().is_empty(), "{:?}", sb.leaked());

    // A whiteout through a symlink deletes inside the root only.
    fs::write(outside.join("victim"), b"keep me").unwrap();
    let mut t = Tar::new();
    t.symlink("to-outer", outside.to_str().unwrap())
        .file("to-outer/.wh.victim", b"", 0o600)
        .symlink("up2", "../..")
        .file("up2/.wh.victim", b"", 0o600);
    a.apply_reader(&t.bytes()[..], D3).unwrap();
    assert_eq!(fs::read(outside.join("victim")).unwrap(), b"keep me");
    fs::remove_file(outside.join("victim")).unwrap();
    assert!(sb.leaked().is_empty(), "{:?}", sb.leaked());
}

#[test]
fn an_existing_symlink_is_replaced_not_followed() {
    let sb = Sandbox::new();
    let victim = sb.dir.path().join("victim");
    fs::write(&victim, b"original").unwrap();
    let mut a = sb.applier(ApplyOptions::default());
    let mut t = Tar::new();
    t.symlink("f", victim.to_str().unwrap())
        .symlink("g", "../../../victim");
    a.apply_reader(&t.bytes()[..], D1).unwrap();
    let mut t = Tar::new();
    t.file("f", b"overwrite", 0o644)
        .file("g", b"overwrite", 0o644);
    a.apply_reader(&t.bytes()[..], D2).unwrap();
    assert_eq!(fs::read(&victim).unwrap(), b"original");
    assert_eq!(fs::read(sb.root().join("f")).unwrap(), b"overwrite");
    assert!(!fs::symlink_metadata(sb.root().join("f"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn hard_links_must_stay_inside() {
    let sb = Sandbox::new();
    let host_file = sb.dir.path().join("secret");
    fs::write(&host_file, b"secret").unwrap();
    let cases: [(&str, &str, &str); 5] = [
        ("evil", "../../etc/shadow", "escapes the root"),
        ("evil", "a/../../../secret", "escapes the root"),
        ("evil", "/etc/shadow", "does not exist in the root"),
        ("evil", "dir", "is a directory"),
        ("evil", "via-link/secret", "does not exist in the root"),
    ];
    for (name, target, expect) in cases {
        let mut a = sb.applier(ApplyOptions::default());
        let mut t = Tar::new();
        t.dir("dir", 0o755)
            .symlink("via-link", sb.dir.path().to_str().unwrap())
            .hardlink(name, target);
        let err = a.apply_reader(&t.bytes()[..], D1).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(expect) && msg.contains(D1) && msg.contains(target),
            "{target}: {msg}"
        );
        assert!(!sb.root().join(name).exists());
        assert_eq!(fs::metadata(&host_file).unwrap().nlink(), 1, "{target}");
    }
    // A link through an in-root symlink to a real in-root file works.
    let mut a = sb.applier(ApplyOptions::default());
    let mut t = Tar::new();
    t.dir("real", 0o755)
        .file("real/f", b"f", 0o644)
        .symlink("alias", "/real")
        .hardlink("linked", "alias/f");
    a.apply_reader(&t.bytes()[..], D2).unwrap();
    assert_eq!(
        fs::metadata(sb.root().join("linked")).unwrap().ino(),
        fs::metadata(sb.root().join("real/f")).unwrap().ino()
    );
}
