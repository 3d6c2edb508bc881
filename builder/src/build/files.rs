//! `%files`: copying files into the build root, with apptainer's semantics
//! and none of its reach.
//!
//! From the build context (apptainer's `CopyFromHost`, which runs
//! `cp -fLr SRC DEST`): the source is a shell glob (`*`, `?`, `[…]`, `**`),
//! directories are copied recursively, symlinks are followed, an empty
//! destination means the same path inside the root, and a destination that
//! ends in `/` or is an existing directory receives the source under its own
//! name. Unlike apptainer, a source must stay inside the context (the
//! recipe's folder): an absolute host path, a `..` that climbs out, or a
//! symlink (at any depth of a copied tree) that leads out is refused with the
//! recipe line — a hub builds untrusted recipes, and `%files /etc/shadow`
//! must not put the build host's secrets into a public image.
//!
//! From an earlier stage (`%files from build`, apptainer's `CopyFromStage`):
//! the source is resolved inside that stage's root (symlinks interpreted
//! relative to it) and copied as `tar` would: symlinks stay symlinks,
//! modes and owners are kept.
//!
//! Destinations are always resolved inside the root with
//! [`crate::oci::inroot`], so a symlink in the image (`/opt -> /etc`) can
//! redirect a copy only within the root, never onto the host.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::deffile::FileEntry;
use crate::oci::inroot;

use super::error::BuildError;

/// What a copy did, for the log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct CopyStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    /// Things skipped with a reason (device nodes from a stage, …).
    pub warnings: Vec<String>,
}

/// Where `%files` sources come from.
pub(crate) enum Source<'a> {
    /// The build context: the recipe's folder (canonical path).
    Context(&'a Path),
    /// An earlier stage's root folder.
    Stage { name: &'a str, root: &'a Path },
}

/// Copies one `%files` entry into `root`. `max_bytes` bounds what one build
/// may copy (the disk limit), `copied` counts across entries.
pub(crate) fn copy_entry(
    source: &Source<'_>,
    root: &Path,
    entry: &FileEntry,
    max_bytes: u64,
    copied: &mut u64,
) -> Result<CopyStats, BuildError> {
    let line = entry.line;
    let files_error = |reason: String| BuildError::Files {
        line,
        entry: entry_text(entry),
        reason,
    };
    if entry.src.is_empty() {
        return Err(files_error("the source is empty".into()));
    }
    let mut stats = CopyStats::default();
    let matches = match source {
        Source::Context(context) => {
            let outside = |reason: &str| BuildError::FilesOutsideContext {
                line,
                source_path: entry.src.clone(),
                reason: reason.to_owned(),
                context: context.to_path_buf(),
            };
            if entry.src.starts_with('/') {
                return Err(outside("is an absolute path on the build host"));
            }
            if entry.src.starts_with('~') {
                return Err(outside("names a home folder on the build host"));
            }
            let rel = normalize(&entry.src).ok_or_else(|| outside("climbs out with `..`"))?;
            expand(&rel, &|dir| list_context_dir(context, dir))
                .map_err(|e| files_error(format!("cannot expand the pattern: {e}")))?
        }
        Source::Stage { root: src_root, .. } => {
            let rel = normalize(entry.src.trim_start_matches('/'))
                .ok_or_else(|| files_error("climbs out of the stage's root with `..`".into()))?;
            expand(&rel, &|dir| list_stage_dir(src_root, dir))
                .map_err(|e| files_error(format!("cannot expand the pattern: {e}")))?
        }
    };
    if matches.is_empty() {
        let place = match source {
            Source::Context(_) => "in the recipe's folder".to_owned(),
            Source::Stage { name, .. } => format!("in stage {name:?}"),
        };
        return Err(files_error(format!(
            "no file matches {:?} {place}",
            entry.src
        )));
    }
    for matched in matches {
        // apptainer: an empty destination is the source path (as globbed).
        let keep_slash = |p: &str| p.ends_with('/');
        let (dest, dest_is_dir_hint) = if entry.dest.is_empty() {
            let mut text = matched.text.clone();
            if keep_slash(&entry.src) && !text.ends_with('/') {
                text.push('/');
            }
            let slash = text.ends_with('/');
            (text, slash)
        } else {
            (entry.dest.clone(), keep_slash(&entry.dest))
        };
        let target = prepare_dest(root, &dest, dest_is_dir_hint)
            .map_err(|reason| files_error(format!("destination {dest:?}: {reason}")))?;
        // cp (and apptainer's stage copy): into an existing folder, under the source's name.
        let target = match fs::metadata(root.join(&target)) {
            Ok(m) if m.is_dir() => match matched.rel.file_name() {
                Some(name) => resolve_child(root, &target.join(name))
                    .map_err(|reason| files_error(format!("destination {dest:?}: {reason}")))?,
                None => target,
            },
            _ => target,
        };
        match source {
            Source::Context(context) => {
                let full = context.join(&matched.rel);
                let real = fs::canonicalize(&full).map_err(|e| {
                    files_error(format!("cannot read {:?}: {}", matched.text, plain_io(&e)))
                })?;
                if !real.starts_with(context) {
                    return Err(BuildError::FilesOutsideContext {
                        line,
                        source_path: matched.text.clone(),
                        reason: format!(
                            "is a symlink that leads outside it (to {})",
                            real.display()
                        ),
                        context: context.to_path_buf(),
                    });
                }
                let mut copier = HostCopy {
                    context,
                    root,
                    line,
                    src_text: &matched.text,
                    ancestors: HashSet::new(),
                    stats: &mut stats,
                    max_bytes,
                    copied,
                };
                copier.copy(&real, &target)?;
            }
            Source::Stage { root: src_root, .. } => {
                let resolved = inroot::resolve(src_root, &matched.rel)
                    .map_err(|e| files_error(format!("source {:?}: {e}", matched.text)))?;
                let mut copier = StageCopy {
                    src_root,
                    root,
                    stats: &mut stats,
                    max_bytes,
                    copied,
                };
                copier
                    .copy(&resolved, &target, true)
                    .map_err(|reason| files_error(format!("{:?}: {reason}", matched.text)))?;
            }
        }
    }
    Ok(stats)
}

fn entry_text(entry: &FileEntry) -> String {
    if entry.dest.is_empty() {
        entry.src.clone()
    } else {
        format!("{} {}", entry.src, entry.dest)
    }
}

/// An io error without the "(os error N)" noise.
fn plain_io(e: &io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_lowercase(),
        None => text,
    }
}

/// A relative path without `.` and with `..` applied; `None` if it climbs
/// above its start. A trailing `/` is dropped here (callers look at the text).
fn normalize(path: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
        }
    }
    Some(out)
}

/// One path a pattern expanded to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Match {
    /// Relative to the source base.
    pub rel: PathBuf,
    /// As the recipe would spell it (relative, `/`-separated).
    pub text: String,
}

/// Expands a shell pattern (bash with globstar: `*`, `?`, `[…]`, `**`)
/// relative to a base, listing folders with `list`. A pattern without glob
/// characters is returned as it is (existence is checked by the copy); a
/// pattern that matches nothing expands to nothing.
pub(crate) fn expand(rel: &Path, list: &dyn Fn(&Path) -> DirListing) -> io::Result<Vec<Match>> {
    let parts: Vec<OsString> = rel.iter().map(|c| c.to_os_string()).collect();
    if !parts.iter().any(|p| has_glob(p.as_bytes())) {
        return Ok(vec![make_match(rel.to_path_buf())]);
    }
    let mut current = vec![PathBuf::new()];
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let pattern = part.as_bytes();
        let mut next = Vec::new();
        if pattern == b"**" {
            // Zero or more folders (bash's globstar; symlinks are not followed).
            for base in &current {
                let mut stack = vec![(base.clone(), 0usize)];
                while let Some((dir, depth)) = stack.pop() {
                    next.push(dir.clone());
                    if depth >= MAX_GLOBSTAR_DEPTH {
                        continue;
                    }
                    let mut entries = list(&dir).unwrap_or_default();
                    entries.sort();
                    for (name, is_dir) in entries.into_iter().rev() {
                        if name.as_bytes().starts_with(b".") {
                            continue;
                        }
                        let child = dir.join(&name);
                        if is_dir {
                            stack.push((child, depth + 1));
                        } else if last {
                            next.push(child);
                        }
                    }
                }
            }
            next.retain(|p| !p.as_os_str().is_empty() || !last);
        } else if has_glob(pattern) {
            for base in &current {
                let Ok(mut entries) = list(base) else {
                    continue;
                };
                entries.sort();
                for (name, is_dir) in entries {
                    let hidden = name.as_bytes().starts_with(b".");
                    if hidden && !pattern.starts_with(b".") {
                        continue;
                    }
                    if (last || is_dir) && glob_match(pattern, name.as_bytes()) {
                        next.push(base.join(&name));
                    }
                }
            }
        } else {
            // After a glob, a literal component matches only what exists.
            for base in &current {
                let Ok(entries) = list(base) else {
                    continue;
                };
                if entries
                    .iter()
                    .any(|(name, is_dir)| name == part && (last || *is_dir))
                {
                    next.push(base.join(part));
                }
            }
        }
        next.sort();
        next.dedup();
        current = next;
    }
    Ok(current.into_iter().map(make_match).collect())
}

/// How deep `**` descends (a symlink loop inside the context must not hang it).
const MAX_GLOBSTAR_DEPTH: usize = 32;

/// A folder's entries: `(name, is a folder)`.
pub(crate) type DirListing = io::Result<Vec<(OsString, bool)>>;

fn make_match(rel: PathBuf) -> Match {
    let text = rel.to_string_lossy().into_owned();
    Match { rel, text }
}

fn has_glob(part: &[u8]) -> bool {
    part.iter().any(|b| matches!(b, b'*' | b'?' | b'['))
}

/// Shell pattern matching of one path component (`*`, `?`, `[…]` with `!`
/// or `^` negation and ranges, `\` escapes).
pub(crate) fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p, n));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    n += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, len)) = class_match(&pattern[p..], name[n]) {
                        if matched {
                            p += len;
                            n += 1;
                            continue;
                        }
                    } else if name[n] == b'[' {
                        // An unclosed `[` is an ordinary character.
                        p += 1;
                        n += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() && pattern[p + 1] == name[n] => {
                    p += 2;
                    n += 1;
                    continue;
                }
                // An escaped character that differs: no match here.
                b'\\' if p + 1 < pattern.len() => {}
                c if c == name[n] => {
                    p += 1;
                    n += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, sn)) => {
                p = sp + 1;
                n = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class at the start of `pattern` (`[…]`):
/// `Some((matched, class length))`, or `None` when the class is unclosed.
fn class_match(pattern: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(pattern.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let &ch = pattern.get(i)?;
        if ch == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if pattern.get(i + 1) == Some(&b'-') && pattern.get(i + 2).is_some_and(|&e| e != b']') {
            let end = pattern[i + 2];
            if ch <= c && c <= end {
                matched = true;
            }
            i += 3;
        } else {
            if ch == c {
                matched = true;
            }
            i += 1;
        }
    }
}

/// Lists a folder of the context for globbing: `(name, is a folder)`,
/// following symlinks only while they stay inside the context.
fn list_context_dir(context: &Path, dir: &Path) -> DirListing {
    let full = fs::canonicalize(context.join(dir))?;
    if !full.starts_with(context) {
        // Names from outside the context are not even listed.
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in fs::read_dir(&full)? {
        let entry = entry?;
        let is_dir = fs::metadata(entry.path()).is_ok_and(|m| m.is_dir());
        out.push((entry.file_name(), is_dir));
    }
    Ok(out)
}

/// Lists a folder of a stage root for globbing, resolving inside that root.
fn list_stage_dir(src_root: &Path, dir: &Path) -> DirListing {
    let resolved = inroot::resolve(src_root, dir).map_err(|e| io::Error::other(e.to_string()))?;
    let full = src_root.join(&resolved);
    let mut out = Vec::new();
    for entry in fs::read_dir(&full)? {
        let entry = entry?;
        let child = resolved.join(entry.file_name());
        let is_dir = inroot::resolve(src_root, &child)
            .ok()
            .and_then(|r| fs::symlink_metadata(src_root.join(r)).ok())
            .is_some_and(|m| m.is_dir());
        out.push((entry.file_name(), is_dir));
    }
    Ok(out)
}

/// Resolves a destination inside `root` (symlinks in-root) and creates its
/// parent folders — or the folder itself when it ends in `/`, as apptainer's
/// `makeParentDir`. Returns the root-relative resolved path.
fn prepare_dest(root: &Path, dest: &str, is_dir: bool) -> Result<PathBuf, String> {
    let rel = inroot::resolve(root, Path::new(dest.trim_start_matches('/')))
        .map_err(|e| e.to_string())?;
    let folder = if is_dir {
        rel.clone()
    } else {
        rel.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    inroot::create_dirs(root, &folder).map_err(|e| e.to_string())?;
    Ok(rel)
}

/// Resolves `rel` (whose parent is already resolved) inside `root`, following
/// an existing final symlink inside the root as `cp` does.
fn resolve_child(root: &Path, rel: &Path) -> Result<PathBuf, String> {
    inroot::resolve(root, rel).map_err(|e| e.to_string())
}

/// `cp -fLr` from the context, confined.
struct HostCopy<'a> {
    context: &'a Path,
    root: &'a Path,
    line: usize,
    src_text: &'a str,
    /// (dev, inode) of the folders being copied, to refuse symlink cycles.
    ancestors: HashSet<(u64, u64)>,
    stats: &'a mut CopyStats,
    max_bytes: u64,
    copied: &'a mut u64,
}

impl HostCopy<'_> {
    fn error(&self, reason: String) -> BuildError {
        BuildError::Files {
            line: self.line,
            entry: self.src_text.to_owned(),
            reason,
        }
    }

    /// Copies the (canonical, in-context) `src` to the root-relative `target`.
    fn copy(&mut self, src: &Path, target: &Path) -> Result<(), BuildError> {
        let meta = fs::metadata(src).map_err(|e| {
            self.error(format!("cannot read {}: {}", self.shown(src), plain_io(&e)))
        })?;
        if meta.is_dir() {
            if !self.ancestors.insert((meta.dev(), meta.ino())) {
                return Err(self.error(format!(
                    "{} is a symlink loop (it contains itself)",
                    self.shown(src)
                )));
            }
            let dest = self.root.join(target);
            match fs::symlink_metadata(&dest) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(self.error(format!(
                        "cannot overwrite non-directory /{} with directory {}",
                        target.display(),
                        self.shown(src)
                    )))
                }
                Err(_) => {
                    fs::create_dir(&dest).map_err(|e| {
                        self.error(format!(
                            "cannot create /{}: {}",
                            target.display(),
                            plain_io(&e)
                        ))
                    })?;
                    self.stats.dirs += 1;
                }
            }
            set_mode(&dest, meta.mode() & 0o1775).map_err(|e| {
                self.error(format!("cannot set the mode of /{}: {e}", target.display()))
            })?;
            let mut names: Vec<OsString> = fs::read_dir(src)
                .and_then(|it| it.map(|e| e.map(|e| e.file_name())).collect())
                .map_err(|e| {
                    self.error(format!("cannot list {}: {}", self.shown(src), plain_io(&e)))
                })?;
            names.sort();
            for name in names {
                let child = src.join(&name);
                let child_real = self.follow(&child)?;
                let child_target =
                    resolve_child(self.root, &target.join(&name)).map_err(|reason| {
                        self.error(format!(
                            "destination /{}: {reason}",
                            target.join(&name).display()
                        ))
                    })?;
                self.copy(&child_real, &child_target)?;
            }
            self.ancestors.remove(&(meta.dev(), meta.ino()));
            Ok(())
        } else if meta.is_file() {
            *self.copied = self.copied.saturating_add(meta.len());
            if *self.copied > self.max_bytes {
                return Err(self.error(format!(
                    "the files copied exceed the disk limit of {}",
                    crate::sandbox::format_bytes(self.max_bytes)
                )));
            }
            let bytes = write_file_from(self.root, target, src, meta.mode() & 0o1775)
                .map_err(|reason| self.error(reason))?;
            self.stats.files += 1;
            self.stats.bytes += bytes;
            Ok(())
        } else {
            Err(self.error(format!(
                "{} is not a regular file or folder",
                self.shown(src)
            )))
        }
    }

    /// A child of a copied folder with its symlinks followed, refused when
    /// it leads outside the context.
    fn follow(&self, child: &Path) -> Result<PathBuf, BuildError> {
        let link = fs::symlink_metadata(child).map_err(|e| {
            self.error(format!(
                "cannot read {}: {}",
                self.shown(child),
                plain_io(&e)
            ))
        })?;
        if !link.file_type().is_symlink() {
            return Ok(child.to_path_buf());
        }
        let real = fs::canonicalize(child).map_err(|e| {
            self.error(format!(
                "{} is a symlink that cannot be followed: {}",
                self.shown(child),
                plain_io(&e)
            ))
        })?;
        if !real.starts_with(self.context) {
            return Err(BuildError::FilesOutsideContext {
                line: self.line,
                source_path: self.shown(child),
                reason: format!("is a symlink that leads outside it (to {})", real.display()),
                context: self.context.to_path_buf(),
            });
        }
        Ok(real)
    }

    /// A context path as the recipe would name it.
    fn shown(&self, path: &Path) -> String {
        path.strip_prefix(self.context)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| path.display().to_string())
    }
}

/// Writes `src`'s content to the root-relative, resolved `target` (an
/// existing file there is replaced, a folder is an error). Returns the bytes
/// written.
fn write_file_from(root: &Path, target: &Path, src: &Path, mode: u32) -> Result<u64, String> {
    let dest = root.join(target);
    match fs::symlink_metadata(&dest) {
        Ok(m) if m.is_dir() => {
            return Err(format!(
                "cannot overwrite directory /{} with non-directory",
                target.display()
            ))
        }
        Ok(_) => fs::remove_file(&dest)
            .map_err(|e| format!("cannot replace /{}: {}", target.display(), plain_io(&e)))?,
        Err(_) => {}
    }
    let mut input =
        File::open(src).map_err(|e| format!("cannot open {}: {}", src.display(), plain_io(&e)))?;
    let mut output = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&dest)
        .map_err(|e| format!("cannot create /{}: {}", target.display(), plain_io(&e)))?;
    let bytes = io::copy(&mut input, &mut output)
        .map_err(|e| format!("cannot copy to /{}: {}", target.display(), plain_io(&e)))?;
    output
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| {
            format!(
                "cannot set the mode of /{}: {}",
                target.display(),
                plain_io(&e)
            )
        })?;
    Ok(bytes)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| plain_io(&e))
}

/// Copies a whole folder (a sandbox image) into `root`, as a stage copy:
/// symlinks kept, modes and owners kept.
pub(crate) fn copy_root(src: &Path, root: &Path, max_bytes: u64) -> Result<CopyStats, String> {
    let mut stats = CopyStats::default();
    let mut copied = 0;
    let mut copier = StageCopy {
        src_root: src,
        root,
        stats: &mut stats,
        max_bytes,
        copied: &mut copied,
    };
    copier.copy(Path::new(""), Path::new(""), true)?;
    Ok(stats)
}

/// A tar-like copy between two roots: symlinks kept, modes and owners kept.
struct StageCopy<'a> {
    src_root: &'a Path,
    root: &'a Path,
    stats: &'a mut CopyStats,
    max_bytes: u64,
    copied: &'a mut u64,
}

impl StageCopy<'_> {
    /// Copies `src` (relative to the source root, resolved) to `target`
    /// (relative to the destination root). `top` follows `target`'s own
    /// symlinks (the entry's destination); below it, entries are created
    /// without following what is at their place.
    fn copy(&mut self, src: &Path, target: &Path, top: bool) -> Result<(), String> {
        let from = self.src_root.join(src);
        let meta = fs::symlink_metadata(&from)
            .map_err(|e| format!("cannot read /{}: {}", src.display(), plain_io(&e)))?;
        let file_type = meta.file_type();
        let target = if top {
            target.to_path_buf()
        } else {
            inroot::prepare_parent(self.root, target).map_err(|e| e.to_string())?
        };
        let dest = self.root.join(&target);
        if file_type.is_dir() {
            match fs::symlink_metadata(&dest) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    inroot::remove_any(&dest).map_err(|e| plain_io(&e))?;
                    fs::create_dir(&dest).map_err(|e| plain_io(&e))?;
                }
                Err(_) => fs::create_dir(&dest).map_err(|e| {
                    format!("cannot create /{}: {}", target.display(), plain_io(&e))
                })?,
            }
            self.stats.dirs += 1;
            let mut names: Vec<OsString> = fs::read_dir(&from)
                .and_then(|it| it.map(|e| e.map(|e| e.file_name())).collect())
                .map_err(|e| format!("cannot list /{}: {}", src.display(), plain_io(&e)))?;
            names.sort();
            for name in names {
                self.copy(&src.join(&name), &target.join(&name), false)?;
            }
        } else if file_type.is_symlink() {
            let link = fs::read_link(&from).map_err(|e| plain_io(&e))?;
            if fs::symlink_metadata(&dest).is_ok_and(|m| m.is_dir()) {
                return Err(format!(
                    "cannot overwrite directory /{} with a symlink",
                    target.display()
                ));
            }
            inroot::remove_any(&dest).map_err(|e| plain_io(&e))?;
            std::os::unix::fs::symlink(&link, &dest)
                .map_err(|e| format!("cannot create /{}: {}", target.display(), plain_io(&e)))?;
            self.stats.symlinks += 1;
        } else if file_type.is_file() {
            *self.copied = self.copied.saturating_add(meta.len());
            if *self.copied > self.max_bytes {
                return Err(format!(
                    "the files copied exceed the disk limit of {}",
                    crate::sandbox::format_bytes(self.max_bytes)
                ));
            }
            self.stats.bytes += write_file_from(self.root, &target, &from, meta.mode() & 0o7777)?;
            self.stats.files += 1;
        } else {
            use std::os::unix::fs::FileTypeExt;
            if file_type.is_fifo() {
                inroot::remove_any(&dest).map_err(|e| plain_io(&e))?;
                nix::unistd::mkfifo(
                    &dest,
                    nix::sys::stat::Mode::from_bits_truncate(meta.mode() & 0o7777),
                )
                .map_err(|e| format!("cannot create fifo /{}: {e}", target.display()))?;
            } else {
                self.stats.warnings.push(format!(
                    "skipped /{}: device nodes and sockets are not copied between stages",
                    src.display()
                ));
                return Ok(());
            }
        }
        // Owners as in the source stage (both roots hold in-container ids).
        std::os::unix::fs::lchown(&dest, Some(meta.uid()), Some(meta.gid())).map_err(|e| {
            format!(
                "cannot set the owner of /{}: {}",
                target.display(),
                plain_io(&e)
            )
        })?;
        if !file_type.is_symlink() {
            set_mode(&dest, meta.mode() & 0o7777)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn entry(src: &str, dest: &str) -> FileEntry {
        FileEntry {
            src: src.into(),
            dest: dest.into(),
            line: 7,
        }
    }

    fn context_and_root() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let context = dir.path().join("context");
        let root = dir.path().join("root");
        fs::create_dir_all(context.join("data/sub")).unwrap();
        fs::create_dir_all(&root).unwrap();
        fs::write(context.join("a.txt"), "a").unwrap();
        fs::write(context.join("b.txt"), "b").unwrap();
        fs::write(context.join(".hidden.txt"), "h").unwrap();
        fs::write(context.join("data/one"), "1").unwrap();
        fs::write(context.join("data/sub/two"), "2").unwrap();
        let context = fs::canonicalize(context).unwrap();
        (dir, context, root)
    }

    fn copy(context: &Path, root: &Path, e: FileEntry) -> Result<CopyStats, BuildError> {
        let mut copied = 0;
        copy_entry(&Source::Context(context), root, &e, u64::MAX, &mut copied)
    }

    #[test]
    fn glob_patterns_match_like_the_shell() {
        assert!(glob_match(b"*.txt", b"a.txt"));
        assert!(!glob_match(b"*.txt", b"a.txt.bak"));
        assert!(glob_match(b"a?c", b"abc"));
        assert!(glob_match(b"[a-c]x", b"bx"));
        assert!(!glob_match(b"[!a-c]x", b"bx"));
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"a*b*c", b"aXXbYYc"));
        assert!(glob_match(b"\\*", b"*"));
        assert!(glob_match(b"[x", b"[x"));
    }

    #[test]
    fn files_follow_cp_semantics() {
        let (_dir, context, root) = context_and_root();
        // Same path when no destination.
        copy(&context, &root, entry("a.txt", "")).unwrap();
        assert_eq!(fs::read_to_string(root.join("a.txt")).unwrap(), "a");
        // A glob into a folder that ends in `/`; hidden files are not matched.
        copy(&context, &root, entry("*.txt", "/opt/texts/")).unwrap();
        assert!(root.join("opt/texts/a.txt").is_file());
        assert!(root.join("opt/texts/b.txt").is_file());
        assert!(!root.join("opt/texts/.hidden.txt").exists());
        // A folder copied to a new name, then into the existing folder.
        copy(&context, &root, entry("data", "/srv/data")).unwrap();
        assert_eq!(
            fs::read_to_string(root.join("srv/data/sub/two")).unwrap(),
            "2"
        );
        copy(&context, &root, entry("data", "/srv/data")).unwrap();
        assert!(root.join("srv/data/data/one").is_file());
        // `**` reaches into subfolders.
        copy(&context, &root, entry("data/**/two", "/deep/")).unwrap();
        assert!(root.join("deep/two").is_file());
    }

    #[test]
    fn sources_outside_the_context_are_refused() {
        let (dir, context, root) = context_and_root();
        for (src, expect) in [
            ("/etc/passwd", "absolute path"),
            ("../../etc/passwd", "climbs out"),
            ("data/../../x", "climbs out"),
        ] {
            let err = copy(&context, &root, entry(src, ""))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("line 7: %files source"), "{err}");
            assert!(err.contains(expect), "{err}");
        }
        fs::write(dir.path().join("secret"), "s").unwrap();
        symlink(dir.path().join("secret"), context.join("link")).unwrap();
        symlink("/etc", context.join("data/etc")).unwrap();
        let err = copy(&context, &root, entry("link", ""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("leads outside"), "{err}");
        let err = copy(&context, &root, entry("data", "/d"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("data/etc") && err.contains("leads outside"),
            "{err}"
        );
        assert!(!root.join("d/etc/passwd").exists());
        // A symlink that stays inside is followed, as cp -L does.
        fs::remove_file(context.join("data/etc")).unwrap();
        symlink("../a.txt", context.join("data/inner")).unwrap();
        copy(&context, &root, entry("data", "/e")).unwrap();
        assert_eq!(fs::read_to_string(root.join("e/inner")).unwrap(), "a");
    }

    #[test]
    fn destinations_stay_inside_the_root() {
        let (dir, context, root) = context_and_root();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        symlink(&outside, root.join("opt")).unwrap();
        copy(&context, &root, entry("a.txt", "/opt/a.txt")).unwrap();
        assert!(!outside.join("a.txt").exists());
    }

    #[test]
    fn stage_copies_keep_symlinks_and_resolve_in_the_source_root() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        fs::create_dir_all(src.join("opt/app/bin")).unwrap();
        fs::create_dir_all(&dst).unwrap();
        fs::write(src.join("opt/app/bin/tool"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(
            src.join("opt/app/bin/tool"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        symlink("bin/tool", src.join("opt/app/tool")).unwrap();
        symlink("/opt/app", src.join("current")).unwrap();
        let mut copied = 0;
        let e = entry("/current", "/usr/local/app");
        copy_entry(
            &Source::Stage {
                name: "build",
                root: &src,
            },
            &dst,
            &e,
            u64::MAX,
            &mut copied,
        )
        .unwrap();
        let tool = dst.join("usr/local/app/bin/tool");
        assert_eq!(fs::metadata(&tool).unwrap().mode() & 0o777, 0o755);
        assert_eq!(
            fs::read_link(dst.join("usr/local/app/tool")).unwrap(),
            PathBuf::from("bin/tool")
        );
    }
}
