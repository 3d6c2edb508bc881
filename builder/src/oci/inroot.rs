//! Path handling confined to a root folder.
//!
//! Every path that comes from an image (tar entry names, hard-link targets,
//! symlink targets met while walking) is resolved the way the kernel's
//! `openat2(RESOLVE_IN_ROOT)` or Go's `securejoin` do: components are walked
//! one by one from the root, a symlink met on the way is replaced by its
//! target *interpreted relative to the root* (an absolute target restarts at
//! the root, `..` never climbs above it), and at most [`MAX_SYMLINKS`] links
//! are followed. The result is a path below the root whose existing
//! components are real directories, never symlinks.
//!
//! The walk happens in user space (lstat per component). That is race-free
//! for our use: while layers are applied nothing else writes into the root.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// How many symlinks one resolution may follow before giving up (ELOOP).
pub const MAX_SYMLINKS: usize = 255;

/// Why a path could not be resolved inside the root.
#[derive(Debug)]
pub enum ResolveError {
    /// More than [`MAX_SYMLINKS`] symlinks (a loop such as `etc -> /etc`).
    TooManyLinks,
    /// A component that must be a directory is something else.
    NotADirectory(PathBuf),
    /// Any other file-system error, with the root-relative path involved.
    Io(PathBuf, io::Error),
}

impl std::fmt::Display for ResolveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResolveError::TooManyLinks => write!(
                f,
                "too many levels of symbolic links (more than {MAX_SYMLINKS}, a symlink loop?)"
            ),
            ResolveError::NotADirectory(p) => {
                write!(f, "/{} is not a directory", p.display())
            }
            ResolveError::Io(p, e) => write!(f, "/{}: {e}", p.display()),
        }
    }
}

/// Cleans a path taken from an archive: a leading `/` is dropped (absolute
/// paths become relative to the root), `.` components vanish, and `..`
/// components are refused. `Ok(None)` is the root itself.
pub fn clean_archive_path(path: &Path) -> std::result::Result<Option<PathBuf>, String> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                return Err("path contains a \"..\" component".to_string());
            }
            Component::Normal(n) => out.push(n),
        }
    }
    if out.as_os_str().is_empty() {
        Ok(None)
    } else {
        Ok(Some(out))
    }
}

/// Resolves `path` inside `root` with in-root symlink semantics and returns
/// it relative to `root`. Components that do not exist are kept as they are
/// (they will be created as plain directories or files).
pub fn resolve(root: &Path, path: &Path) -> std::result::Result<PathBuf, ResolveError> {
    let mut current = PathBuf::new();
    let mut remaining: VecDeque<OsString> = VecDeque::new();
    push_components(&mut remaining, path, &mut current, true);
    let mut links = 0usize;

    while let Some(name) = remaining.pop_front() {
        if name == ".." {
            current.pop();
            continue;
        }
        let candidate = root.join(&current).join(&name);
        match std::fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(ResolveError::TooManyLinks);
                }
                let target = std::fs::read_link(&candidate)
                    .map_err(|e| ResolveError::Io(current.join(&name), e))?;
                // Splice the target in front of what is left to walk.
                let mut spliced = VecDeque::new();
                push_components(&mut spliced, &target, &mut current, false);
                while let Some(c) = spliced.pop_back() {
                    remaining.push_front(c);
                }
            }
            Ok(meta) => {
                if !meta.is_dir() && !remaining.is_empty() {
                    return Err(ResolveError::NotADirectory(current.join(&name)));
                }
                current.push(&name);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => current.push(&name),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error()) => {
                return Err(ResolveError::NotADirectory(current));
            }
            Err(e) => return Err(ResolveError::Io(current.join(&name), e)),
        }
    }
    Ok(current)
}

/// Queues the components of `path`; an absolute path restarts at the root
/// (clears `current`) unless `initial` (entry paths are always root-relative).
fn push_components(
    out: &mut VecDeque<OsString>,
    path: &Path,
    current: &mut PathBuf,
    initial: bool,
) {
    for c in path.components() {
        match c {
            Component::RootDir => {
                if !initial {
                    *current = PathBuf::new();
                }
            }
            Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => out.push_back(OsString::from("..")),
            Component::Normal(n) => out.push_back(n.to_os_string()),
        }
    }
}

/// Creates the missing directories of the already-resolved relative path
/// `rel` under `root` (mode 0755). An existing component that is not a
/// directory is an error.
pub fn create_dirs(root: &Path, rel: &Path) -> std::result::Result<(), ResolveError> {
    let mut cur = PathBuf::new();
    for c in rel.components() {
        cur.push(c);
        let full = root.join(&cur);
        match std::fs::symlink_metadata(&full) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(ResolveError::NotADirectory(cur)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir(&full).map_err(|e| ResolveError::Io(cur.clone(), e))?;
                std::fs::set_permissions(&full, std::fs::Permissions::from_mode(0o755))
                    .map_err(|e| ResolveError::Io(cur.clone(), e))?;
            }
            Err(e) => return Err(ResolveError::Io(cur, e)),
        }
    }
    Ok(())
}

/// Resolves the parent of `rel` inside `root`, creates it, and returns the
/// resolved relative path of the final component (which is not followed).
pub fn prepare_parent(root: &Path, rel: &Path) -> std::result::Result<PathBuf, ResolveError> {
    let name = rel
        .file_name()
        .ok_or_else(|| ResolveError::Io(rel.to_path_buf(), io::Error::other("no file name")))?;
    let parent = rel.parent().unwrap_or_else(|| Path::new(""));
    let resolved_parent = resolve(root, parent)?;
    create_dirs(root, &resolved_parent)?;
    Ok(resolved_parent.join(name))
}

/// Removes whatever is at `full` (file, symlink, or directory tree, never
/// following symlinks). Missing is fine.
pub fn remove_any(full: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(full) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(full),
        Ok(_) => std::fs::remove_file(full),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes `contents` to `rel` inside `root` (resolved in-root; an existing
/// file or symlink at the final component is replaced, never followed).
pub fn write_file(
    root: &Path,
    rel: &Path,
    contents: &[u8],
    mode: u32,
) -> std::result::Result<PathBuf, ResolveError> {
    use std::io::Write;
    let target = prepare_parent(root, rel)?;
    let full = root.join(&target);
    match std::fs::symlink_metadata(&full) {
        Ok(m) if m.is_dir() => {
            return Err(ResolveError::Io(target, io::Error::other("is a directory")))
        }
        Ok(_) => std::fs::remove_file(&full).map_err(|e| ResolveError::Io(target.clone(), e))?,
        Err(_) => {}
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&full)
        .map_err(|e| ResolveError::Io(target.clone(), e))?;
    f.write_all(contents)
        .map_err(|e| ResolveError::Io(target.clone(), e))?;
    std::fs::set_permissions(&full, std::fs::Permissions::from_mode(mode))
        .map_err(|e| ResolveError::Io(target.clone(), e))?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn clean_paths() {
        assert_eq!(
            clean_archive_path(Path::new("./a/b")).unwrap(),
            Some(PathBuf::from("a/b"))
        );
        assert_eq!(
            clean_archive_path(Path::new("/etc/x")).unwrap(),
            Some(PathBuf::from("etc/x"))
        );
        assert_eq!(clean_archive_path(Path::new("./")).unwrap(), None);
        assert!(clean_archive_path(Path::new("../../x")).is_err());
        assert!(clean_archive_path(Path::new("a/../b")).is_err());
    }

    #[test]
    fn symlinks_resolve_inside_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        symlink("/usr/bin", root.join("bin")).unwrap();
        symlink("../../../../../usr", root.join("up")).unwrap();
        symlink("/", root.join("top")).unwrap();
        symlink("/etc", root.join("etc")).unwrap();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();
        assert_eq!(
            resolve(root, Path::new("bin/sh")).unwrap(),
            PathBuf::from("usr/bin/sh")
        );
        assert_eq!(
            resolve(root, Path::new("up/bin")).unwrap(),
            PathBuf::from("usr/bin")
        );
        assert_eq!(
            resolve(root, Path::new("top/top/x")).unwrap(),
            PathBuf::from("x")
        );
        assert!(matches!(
            resolve(root, Path::new("etc/passwd")),
            Err(ResolveError::TooManyLinks)
        ));
        assert!(matches!(
            resolve(root, Path::new("loop1")),
            Err(ResolveError::TooManyLinks)
        ));
        std::fs::write(root.join("file"), b"x").unwrap();
        assert!(matches!(
            resolve(root, Path::new("file/x")),
            Err(ResolveError::NotADirectory(_))
        ));
    }
}
