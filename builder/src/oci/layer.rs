//! Applying layer tarballs to a root folder.
//!
//! Layers are applied in order, each one a tar stream (uncompressed, gzip or
//! zstd — detected from the content's magic bytes), with the OCI image-spec
//! change-set semantics:
//!
//! - `.wh.NAME` deletes `NAME` (and everything below it) from lower layers;
//! - `.wh..wh..opq` empties its directory of lower-layer content (entries
//!   of the same layer survive, wherever they appear in the tar);
//! - an entry replaces what is at its path, except that a directory entry
//!   over an existing directory keeps the directory's content (a directory
//!   entry over a symlink replaces the symlink, as containerd does);
//! - regular files, directories, symlinks, hard links, character and block
//!   devices and FIFOs are created with the tar's mode (incl. setuid/setgid/
//!   sticky), mtime and `SCHILY.xattr.*` extended attributes.
//!
//! Ownership: the tar's uid/gid are always recorded in the report (entries
//! not owned by 0:0), and applied with `lchown` when the process may (root);
//! see [`Ownership`]. Device nodes that cannot be created (no privilege) are
//! skipped with a warning.
//!
//! Confinement: no entry can reach outside the root. Entry paths are made
//! relative (a leading `/` is dropped) and a `..` component is an error
//! ([`OciError::EntryEscapes`], naming the layer digest and the entry).
//! Parent folders are resolved inside the root with symlinks interpreted
//! relative to the root (see [`super::inroot`]): after `etc -> /etc`, the entry
//! `etc/x` resolves to `<root>/etc/…`, which is the link itself again, so
//! resolution fails with a symlink-loop error instead of writing to the
//! host's `/etc`; after `top -> /`, `top/x` lands at `<root>/x`. The final
//! component of an entry is never followed (an existing symlink there is
//! replaced). Hard-link targets are cleaned and resolved the same way (a
//! `..` in the target is an error), so a hard link can only point at a file
//! inside the root. Symlink targets are stored verbatim: they are only ever
//! followed by this in-root resolution, or later inside the container.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::error::{OciError, Result};
use super::inroot::{self, ResolveError};

/// What to do with the uid/gid of entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ownership {
    /// `lchown` when running as root; if that is refused (e.g. an unmapped
    /// id in a user namespace), fall back to recording with a warning.
    #[default]
    Auto,
    /// Always `lchown`; a refusal is an error.
    Chown,
    /// Never `lchown`; the report's `owners` is the only record.
    Record,
}

/// Options for applying layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Ownership handling.
    pub ownership: Ownership,
    /// Apply `SCHILY.xattr.*` extended attributes (failures are warnings).
    pub xattrs: bool,
    /// Apply modification times from the tar.
    pub mtimes: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            ownership: Ownership::Auto,
            xattrs: true,
            mtimes: true,
        }
    }
}

/// A uid/gid pair from a tar header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Owner {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// Counts for one applied layer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerStats {
    /// The layer's digest (as given by the caller).
    pub digest: String,
    /// Tar entries read (whiteouts included).
    pub entries: u64,
    /// Regular files written.
    pub files: u64,
    /// Directories created or updated.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Hard links created.
    pub hardlinks: u64,
    /// Device nodes and FIFOs created.
    pub special: u64,
    /// Device nodes skipped (not permitted).
    pub skipped_devices: u64,
    /// `.wh.NAME` whiteouts processed.
    pub whiteouts: u64,
    /// `.wh..wh..opq` opaque markers processed.
    pub opaque_dirs: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
}

/// The outcome of applying layers to a root.
#[derive(Debug, Clone, Default)]
pub struct ApplyReport {
    /// Per-layer counts, in application order.
    pub layers: Vec<LayerStats>,
    /// Non-fatal problems (skipped device nodes, xattrs that could not be set, …).
    pub warnings: Vec<String>,
    /// Owner from the tar of every path (root-relative, as it ended up on
    /// disk after symlink resolution) not owned by 0:0.
    pub owners: BTreeMap<PathBuf, Owner>,
    /// Whether ownership was applied on disk (`lchown`) for all entries.
    pub chowned: bool,
}

/// Applies layers, one after the other, to a root folder.
#[derive(Debug)]
pub struct LayerApplier {
    root: PathBuf,
    opts: ApplyOptions,
    chown: bool,
    report: ApplyReport,
}

struct PendingDir {
    rel: PathBuf,
    mode: u32,
    mtime: Option<(i64, u32)>,
}

struct LayerState<'a> {
    digest: &'a str,
    created: BTreeSet<PathBuf>,
    dirs: Vec<PendingDir>,
    stats: LayerStats,
}

/// The entry kinds we handle.
enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
}

impl LayerApplier {
    /// Prepares to apply layers into `root` (created if missing).
    pub fn new(root: &Path, opts: ApplyOptions) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(OciError::io("cannot create root folder", root))?;
        let root = root
            .canonicalize()
            .map_err(OciError::io("cannot resolve root folder", root))?;
        let chown = match opts.ownership {
            Ownership::Auto => rustix::process::geteuid().is_root(),
            Ownership::Chown => true,
            Ownership::Record => false,
        };
        Ok(LayerApplier {
            root,
            opts,
            chown,
            report: ApplyReport {
                chowned: chown,
                ..ApplyReport::default()
            },
        })
    }

    /// The (canonical) root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Applies the layer blob at `path` (`digest` names it in messages).
    pub fn apply_file(&mut self, path: &Path, digest: &str) -> Result<LayerStats> {
        let f = File::open(path).map_err(|source| OciError::LayerRead {
            layer: digest.to_string(),
            context: format!("cannot open {}", path.display()),
            source,
        })?;
        self.apply_reader(f, digest)
    }

    /// Applies a layer read from `reader` (tar, gzip'd tar or zstd'd tar).
    pub fn apply_reader(&mut self, reader: impl Read, digest: &str) -> Result<LayerStats> {
        let read_err = |context: &str| {
            let layer = digest.to_string();
            let context = context.to_string();
            move |source| OciError::LayerRead {
                layer,
                context,
                source,
            }
        };
        let stream = decompress(reader).map_err(read_err("cannot read layer header"))?;
        let mut archive = tar::Archive::new(stream);
        let mut state = LayerState {
            digest,
            created: BTreeSet::new(),
            dirs: Vec::new(),
            stats: LayerStats {
                digest: digest.to_string(),
                ..LayerStats::default()
            },
        };
        let entries = archive
            .entries()
            .map_err(read_err("cannot read tar stream"))?;
        for entry in entries {
            let entry = entry.map_err(read_err("cannot read tar entry"))?;
            self.apply_entry(entry, &mut state)?;
        }
        self.finish_dirs(&mut state);
        tracing::debug!(
            layer = digest,
            entries = state.stats.entries,
            files = state.stats.files,
            bytes = state.stats.bytes,
            "layer applied"
        );
        self.report.layers.push(state.stats.clone());
        Ok(state.stats)
    }

    /// The report of everything applied so far.
    pub fn report(&self) -> &ApplyReport {
        &self.report
    }

    /// Ends application and returns the report.
    pub fn finish(self) -> ApplyReport {
        self.report
    }

    fn warn(&mut self, message: String) {
        tracing::warn!("{message}");
        self.report.warnings.push(message);
    }

    fn apply_entry<R: Read>(
        &mut self,
        mut entry: tar::Entry<'_, R>,
        st: &mut LayerState<'_>,
    ) -> Result<()> {
        let kind = match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                Kind::File
            }
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Symlink => Kind::Symlink,
            tar::EntryType::Link => Kind::Hardlink,
            tar::EntryType::Char => Kind::Char,
            tar::EntryType::Block => Kind::Block,
            tar::EntryType::Fifo => Kind::Fifo,
            // Metadata-only records the tar reader already folded in, or that carry nothing for us.
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => return Ok(()),
            other => {
                let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                self.warn(format!(
                    "layer {}: entry {name:?}: unsupported tar entry type {other:?}, skipped",
                    st.digest
                ));
                return Ok(());
            }
        };
        st.stats.entries += 1;
        let raw_path = PathBuf::from(OsStr::from_bytes(&entry.path_bytes()));
        let entry_name = raw_path.to_string_lossy().into_owned();
        let layer = st.digest.to_string();
        let entry_err = |reason: String| OciError::Entry {
            layer: layer.clone(),
            entry: entry_name.clone(),
            reason,
        };
        let escape_err = |reason: String| OciError::EntryEscapes {
            layer: layer.clone(),
            entry: entry_name.clone(),
            reason,
        };

        let Some(clean) = inroot::clean_archive_path(&raw_path).map_err(&escape_err)? else {
            // The root folder itself ("./"): nothing to create.
            return Ok(());
        };
        let file_name = clean
            .file_name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_default();

        // Whiteouts.
        if let Some(hidden) = file_name.strip_prefix(b".wh.") {
            let parent = clean.parent().unwrap_or_else(|| Path::new(""));
            let parent_rel = inroot::resolve(&self.root, parent).map_err(|e| {
                entry_err(format!("cannot resolve the folder inside the root: {e}"))
            })?;
            if hidden == b".wh..opq" {
                st.stats.opaque_dirs += 1;
                self.opaque(&parent_rel, st)
                    .map_err(|e| entry_err(e.to_string()))?;
            } else if hidden.starts_with(b".wh.") {
                // Other AUFS metadata (.wh..wh.plnk, .wh..wh.aufs): nothing to do.
            } else if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(escape_err("malformed whiteout name".to_string()));
            } else {
                st.stats.whiteouts += 1;
                let target = parent_rel.join(OsStr::from_bytes(hidden));
                if !st.created.contains(&target) {
                    inroot::remove_any(&self.root.join(&target)).map_err(|e| {
                        entry_err(format!("cannot remove /{}: {e}", target.display()))
                    })?;
                    self.forget_tree(&target);
                }
            }
            return Ok(());
        }

        let header = entry.header();
        let mode = header
            .mode()
            .map_err(|e| entry_err(format!("invalid mode: {e}")))?
            & 0o7777;
        // Empty or garbled id fields (some writers leave them blank) count as 0.
        let mut uid = header.uid().unwrap_or(0);
        let mut gid = header.gid().unwrap_or(0);
        let mut mtime: Option<(i64, u32)> = header
            .mtime()
            .ok()
            .map(|m| (i64::try_from(m).unwrap_or(i64::MAX), 0));
        let device = (
            header.device_major().ok().flatten().unwrap_or(0),
            header.device_minor().ok().flatten().unwrap_or(0),
        );
        let link_name = entry
            .link_name_bytes()
            .map(|b| PathBuf::from(OsStr::from_bytes(&b)));

        // PAX overrides and extended attributes.
        let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        if let Some(pax) = entry
            .pax_extensions()
            .map_err(|e| entry_err(format!("invalid pax header: {e}")))?
        {
            for ext in pax.flatten() {
                let key = ext.key_bytes();
                let value = ext.value_bytes();
                let text = std::str::from_utf8(value).unwrap_or("");
                match key {
                    b"uid" => uid = text.trim().parse().unwrap_or(uid),
                    b"gid" => gid = text.trim().parse().unwrap_or(gid),
                    b"mtime" => mtime = parse_pax_time(text).or(mtime),
                    k if k.starts_with(b"SCHILY.xattr.") => {
                        xattrs.push((k[b"SCHILY.xattr.".len()..].to_vec(), value.to_vec()));
                    }
                    _ => {}
                }
            }
        }
        let owner = Owner {
            uid: u32::try_from(uid).map_err(|_| entry_err(format!("uid {uid} out of range")))?,
            gid: u32::try_from(gid).map_err(|_| entry_err(format!("gid {gid} out of range")))?,
        };

        let target = inroot::prepare_parent(&self.root, &clean).map_err(|e| match e {
            ResolveError::TooManyLinks => {
                entry_err(format!("cannot resolve its folder inside the root: {e}"))
            }
            other => entry_err(format!("cannot create its folder inside the root: {other}")),
        })?;
        let full = self.root.join(&target);
        let existing = std::fs::symlink_metadata(&full).ok();

        // Hard links: the target must be inside the root and exist.
        let link_source = if let Kind::Hardlink = kind {
            let Some(link) = &link_name else {
                return Err(entry_err("hard link without a target".to_string()));
            };
            let clean_link = match inroot::clean_archive_path(link) {
                Ok(Some(l)) => l,
                Ok(None) => return Err(entry_err("hard link to the root folder".to_string())),
                Err(reason) => {
                    return Err(escape_err(format!(
                        "hard link target {:?}: {reason}",
                        link.to_string_lossy()
                    )))
                }
            };
            let parent = clean_link.parent().unwrap_or_else(|| Path::new(""));
            let name = clean_link.file_name().unwrap_or_default();
            let src_rel = inroot::resolve(&self.root, parent)
                .map_err(|e| {
                    entry_err(format!(
                        "cannot resolve hard link target {:?} inside the root: {e}",
                        link.to_string_lossy()
                    ))
                })?
                .join(name);
            if src_rel == target {
                return Ok(()); // a link to itself: already there
            }
            match std::fs::symlink_metadata(self.root.join(&src_rel)) {
                Ok(m) if m.is_dir() => {
                    return Err(entry_err(format!(
                        "hard link target {:?} is a directory",
                        link.to_string_lossy()
                    )))
                }
                Ok(_) => Some(src_rel),
                Err(_) => {
                    return Err(entry_err(format!(
                        "hard link target {:?} does not exist in the root",
                        link.to_string_lossy()
                    )))
                }
            }
        } else {
            None
        };

        // Replace what is there, unless a directory meets a directory.
        let keep_dir = matches!(kind, Kind::Dir) && existing.as_ref().is_some_and(|m| m.is_dir());
        if existing.is_some() && !keep_dir {
            inroot::remove_any(&full)
                .map_err(|e| entry_err(format!("cannot replace /{}: {e}", target.display())))?;
            self.forget_tree(&target);
        }

        let io_err = |what: &str| {
            let what = what.to_string();
            let t = target.clone();
            let f = &entry_err;
            move |e: io::Error| f(format!("cannot {what} /{}: {e}", t.display()))
        };
        let mut chown_this = true;
        match kind {
            Kind::File => {
                let mut out = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                    .open(&full)
                    .map_err(io_err("create file"))?;
                let n = io::copy(&mut entry, &mut out).map_err(|source| OciError::LayerRead {
                    layer: layer.clone(),
                    context: format!("cannot extract {entry_name:?}"),
                    source,
                })?;
                st.stats.files += 1;
                st.stats.bytes += n;
            }
            Kind::Dir => {
                if !keep_dir {
                    std::fs::create_dir(&full).map_err(io_err("create directory"))?;
                }
                st.stats.dirs += 1;
            }
            Kind::Symlink => {
                let Some(link) = &link_name else {
                    return Err(entry_err("symlink without a target".to_string()));
                };
                std::os::unix::fs::symlink(link, &full).map_err(io_err("create symlink"))?;
                st.stats.symlinks += 1;
            }
            Kind::Hardlink => {
                if let Some(src_rel) = &link_source {
                    std::fs::hard_link(self.root.join(src_rel), &full)
                        .map_err(io_err("create hard link"))?;
                }
                st.stats.hardlinks += 1;
                chown_this = false;
            }
            Kind::Char | Kind::Block | Kind::Fifo => {
                let file_type = match kind {
                    Kind::Char => rustix::fs::FileType::CharacterDevice,
                    Kind::Block => rustix::fs::FileType::BlockDevice,
                    _ => rustix::fs::FileType::Fifo,
                };
                let dev = rustix::fs::makedev(device.0, device.1);
                let made = rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &full,
                    file_type,
                    rustix::fs::Mode::from_raw_mode(mode),
                    dev,
                );
                match made {
                    Ok(()) => st.stats.special += 1,
                    Err(e)
                        if !matches!(kind, Kind::Fifo)
                            && (e == rustix::io::Errno::PERM || e == rustix::io::Errno::ACCESS) =>
                    {
                        st.stats.skipped_devices += 1;
                        self.warn(format!(
                            "layer {layer}: entry {entry_name:?}: device node {}:{} not created (not permitted), skipped",
                            device.0, device.1
                        ));
                        return Ok(());
                    }
                    Err(e) => return Err(io_err("create device node")(e.into())),
                }
            }
        }
        st.created.insert(target.clone());

        if chown_this {
            self.set_owner(&target, owner, &layer, &entry_name)?;
            let is_symlink = matches!(kind, Kind::Symlink);
            if self.opts.xattrs {
                for (name, value) in &xattrs {
                    if let Err(e) = rustix::fs::lsetxattr(
                        &full,
                        OsStr::from_bytes(name),
                        value,
                        rustix::fs::XattrFlags::empty(),
                    ) {
                        self.warn(format!(
                            "layer {layer}: entry {entry_name:?}: extended attribute {:?} not set: {e}",
                            String::from_utf8_lossy(name)
                        ));
                    }
                }
            }
            if matches!(kind, Kind::Dir) {
                st.dirs.push(PendingDir {
                    rel: target.clone(),
                    mode,
                    mtime,
                });
            } else {
                if !is_symlink {
                    // After chown: chown clears setuid/setgid bits.
                    std::fs::set_permissions(&full, std::fs::Permissions::from_mode(mode))
                        .map_err(io_err("set the mode of"))?;
                }
                if self.opts.mtimes {
                    if let Some(t) = mtime {
                        set_mtime(&full, t).map_err(io_err("set the mtime of"))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Removes the lower-layer content of the directory `dir_rel`.
    fn opaque(&mut self, dir_rel: &Path, st: &LayerState<'_>) -> io::Result<()> {
        let dir = self.root.join(dir_rel);
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            _ => return Ok(()),
        }
        for child in std::fs::read_dir(&dir)? {
            let child = child?;
            let rel = dir_rel.join(child.file_name());
            let from_this_layer = st
                .created
                .range(rel.clone()..)
                .next()
                .is_some_and(|p| p.starts_with(&rel));
            if !from_this_layer {
                inroot::remove_any(&child.path())?;
                self.forget_tree(&rel);
            }
        }
        Ok(())
    }

    fn set_owner(&mut self, rel: &Path, owner: Owner, layer: &str, entry: &str) -> Result<()> {
        if owner.uid == 0 && owner.gid == 0 {
            self.report.owners.remove(rel);
        } else {
            self.report.owners.insert(rel.to_path_buf(), owner);
        }
        if !self.chown {
            return Ok(());
        }
        let full = self.root.join(rel);
        match std::os::unix::fs::lchown(&full, Some(owner.uid), Some(owner.gid)) {
            Ok(()) => Ok(()),
            Err(e)
                if self.opts.ownership == Ownership::Auto
                    && matches!(e.raw_os_error(), Some(code) if code == rustix::io::Errno::PERM.raw_os_error() || code == rustix::io::Errno::INVAL.raw_os_error()) =>
            {
                self.chown = false;
                self.report.chowned = false;
                self.warn(format!(
                    "layer {layer}: entry {entry:?}: cannot set owner {}:{} ({e}); ownership is recorded in the report only from now on",
                    owner.uid, owner.gid
                ));
                Ok(())
            }
            Err(e) => Err(OciError::Entry {
                layer: layer.to_string(),
                entry: entry.to_string(),
                reason: format!("cannot set owner {}:{}: {e}", owner.uid, owner.gid),
            }),
        }
    }

    /// Drops recorded owners of `rel` and everything below it.
    fn forget_tree(&mut self, rel: &Path) {
        let doomed: Vec<PathBuf> = self
            .report
            .owners
            .range(rel.to_path_buf()..)
            .take_while(|(p, _)| p.starts_with(rel))
            .map(|(p, _)| p.clone())
            .collect();
        for p in doomed {
            self.report.owners.remove(&p);
        }
    }

    /// Directory modes and mtimes, applied once the layer's content is in
    /// (deepest first, so that setting a parent's mtime comes last).
    fn finish_dirs(&mut self, st: &mut LayerState<'_>) {
        st.dirs.sort_by(|a, b| b.rel.cmp(&a.rel));
        let dirs = std::mem::take(&mut st.dirs);
        for d in dirs {
            let full = self.root.join(&d.rel);
            // A later entry of the same layer may have replaced the directory.
            match std::fs::symlink_metadata(&full) {
                Ok(m) if m.is_dir() => {}
                _ => continue,
            }
            if let Err(e) = std::fs::set_permissions(&full, std::fs::Permissions::from_mode(d.mode))
            {
                self.warn(format!(
                    "layer {}: cannot set the mode of /{}: {e}",
                    st.digest,
                    d.rel.display()
                ));
            }
            if self.opts.mtimes {
                if let Some(t) = d.mtime {
                    if let Err(e) = set_mtime(&full, t) {
                        self.warn(format!(
                            "layer {}: cannot set the mtime of /{}: {e}",
                            st.digest,
                            d.rel.display()
                        ));
                    }
                }
            }
        }
    }
}

/// Applies `layers` (blob path and digest, bottom layer first) to `root`.
pub fn apply_layers<'a, I>(root: &Path, layers: I, opts: ApplyOptions) -> Result<ApplyReport>
where
    I: IntoIterator<Item = (&'a Path, &'a str)>,
{
    let mut applier = LayerApplier::new(root, opts)?;
    for (path, digest) in layers {
        tracing::info!(layer = digest, "applying layer");
        applier.apply_file(path, digest)?;
    }
    Ok(applier.finish())
}

fn set_mtime(path: &Path, (secs, nanos): (i64, u32)) -> io::Result<()> {
    let ts = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: nanos.into(),
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &rustix::fs::Timestamps {
            last_access: ts,
            last_modification: ts,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(io::Error::from)
}

/// A PAX time `SECONDS[.FRACTION]`.
fn parse_pax_time(text: &str) -> Option<(i64, u32)> {
    let text = text.trim();
    let (secs, frac) = match text.split_once('.') {
        Some((s, f)) => (s, f),
        None => (text, ""),
    };
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: u32 = 0;
    for (i, c) in frac.chars().take(9).enumerate() {
        let d = c.to_digit(10)?;
        nanos += d * 10u32.pow(8 - i as u32);
    }
    if secs < 0 && nanos > 0 {
        // -1.5 means 1.5 s before the epoch.
        return Some((secs - 1, 1_000_000_000 - nanos));
    }
    Some((secs, nanos))
}

/// Wraps `reader` in the decompressor its magic bytes call for.
fn decompress<'a>(reader: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let mut buffered = BufReader::with_capacity(256 * 1024, reader);
    let head = buffered.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(buffered)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Box::new(ZstdFrames::new(buffered)?))
    } else {
        Ok(Box::new(buffered))
    }
}

/// A zstd stream of one or more frames.
struct ZstdFrames<R: BufRead> {
    decoder: Option<ruzstd::decoding::StreamingDecoder<R, ruzstd::decoding::FrameDecoder>>,
}

impl<R: BufRead> ZstdFrames<R> {
    fn new(source: R) -> io::Result<Self> {
        let decoder = ruzstd::decoding::StreamingDecoder::new(source)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("zstd: {e}")))?;
        Ok(ZstdFrames {
            decoder: Some(decoder),
        })
    }
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(decoder) = self.decoder.as_mut() else {
                return Ok(0);
            };
            let n = decoder.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // This frame is done; another may follow.
            let Some(done) = self.decoder.take() else {
                return Ok(0);
            };
            let (mut source, frame_decoder) = done.into_parts();
            if source.fill_buf()?.is_empty() {
                return Ok(0);
            }
            let next = ruzstd::decoding::StreamingDecoder::new_with_decoder(source, frame_decoder)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("zstd: {e}")))?;
            self.decoder = Some(next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time("1700000000"), Some((1_700_000_000, 0)));
        assert_eq!(
            parse_pax_time("1700000000.5"),
            Some((1_700_000_000, 500_000_000))
        );
        assert_eq!(parse_pax_time("-1.5"), Some((-2, 500_000_000)));
        assert_eq!(parse_pax_time("x"), None);
    }
}
