//! Unpacking a source tarball as GitHub serves it (`.tar.gz`, every entry
//! under one top folder `owner-repo-sha/`) without trusting it: the top
//! folder is stripped, and absolute paths, `..`, and links pointing out of
//! the tree are refused rather than skipped, so a hostile archive fails
//! the build instead of building something else.

use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("cannot read the source archive {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("source archive entry {entry:?}: {reason}")]
    Refused { entry: String, reason: &'static str },
    #[error("the source archive is empty")]
    Empty,
    #[error("cannot write {path} from the source archive")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Unpacks the gzip-compressed tarball `archive` into `dest` (which must
/// exist); returns the source tree's root, the archive's top folder.
pub fn unpack_source(archive: &Path, dest: &Path) -> Result<PathBuf, UnpackError> {
    let file = fs::File::open(archive).map_err(|source| UnpackError::Read {
        path: archive.to_owned(),
        source,
    })?;
    unpack_from(flate2::read::GzDecoder::new(file), dest, archive)
}

fn unpack_from(reader: impl Read, dest: &Path, archive: &Path) -> Result<PathBuf, UnpackError> {
    let read_error = |source| UnpackError::Read {
        path: archive.to_owned(),
        source,
    };
    let mut tar = tar::Archive::new(reader);
    tar.set_preserve_permissions(true);
    tar.set_overwrite(true);
    let mut top: Option<PathBuf> = None;
    for entry in tar.entries().map_err(read_error)? {
        let mut entry = entry.map_err(read_error)?;
        let kind = entry.header().entry_type();
        // GitHub's pax global header carries the commit id: metadata only.
        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
            continue;
        }
        let raw = entry.path().map_err(read_error)?.into_owned();
        let name = raw.to_string_lossy().into_owned();
        let refuse = |reason| UnpackError::Refused {
            entry: name.clone(),
            reason,
        };
        let (entry_top, relative) = split_top(&raw).map_err(refuse)?;
        match &top {
            None => top = Some(entry_top),
            Some(known) if *known != entry_top => {
                return Err(refuse("outside the archive's top folder"))
            }
            Some(_) => {}
        }
        match kind {
            EntryType::Directory | EntryType::Regular | EntryType::Continuous => {}
            EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(read_error)?
                    .ok_or_else(|| refuse("symlink without a target"))?;
                check_symlink(&relative, &link).map_err(refuse)?;
            }
            EntryType::Link => {
                // Hard link targets are archive paths, under the same top folder.
                let link = entry
                    .link_name()
                    .map_err(read_error)?
                    .ok_or_else(|| refuse("hard link without a target"))?;
                let (link_top, _) = split_top(&link).map_err(refuse)?;
                if Some(&link_top) != top.as_ref() {
                    return Err(refuse("hard link outside the archive's top folder"));
                }
            }
            _ => return Err(refuse("not a file, folder or link")),
        }
        // unpack_in checks again that no folder on the way is a link
        // leading out of `dest`.
        let inside = entry.unpack_in(dest).map_err(|source| UnpackError::Write {
            path: dest.join(&raw),
            source,
        })?;
        if !inside {
            return Err(refuse("path leaves the source tree"));
        }
    }
    let top = top.ok_or(UnpackError::Empty)?;
    Ok(dest.join(top))
}

/// The path's first component and the rest. Refuses absolute paths and `..`.
fn split_top(path: &Path) -> Result<(PathBuf, PathBuf), &'static str> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("path contains .."),
            Component::RootDir | Component::Prefix(_) => return Err("absolute path"),
        }
    }
    let (first, rest) = parts.split_first().ok_or("empty path")?;
    Ok((PathBuf::from(first), rest.iter().collect()))
}

/// Refuses a symlink at `relative` whose target is absolute or climbs out
/// of the tree (read lexically from the link's folder).
fn check_symlink(relative: &Path, target: &Path) -> Result<(), &'static str> {
    if target.has_root() {
        return Err("symlink to an absolute path");
    }
    let mut depth = relative.components().count().saturating_sub(1);
    for component in target.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth = depth
                    .checked_sub(1)
                    .ok_or("symlink pointing out of the source tree")?;
            }
            Component::RootDir | Component::Prefix(_) => return Err("symlink to an absolute path"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar.gz with GitHub's layout: a pax global header, the top folder,
    /// then `entries` under it.
    fn archive(entries: &[(&str, EntryType, &str)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut add = |path: &str, kind: EntryType, data: &str| {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(kind);
            header.set_mode(if kind == EntryType::Directory {
                0o755
            } else {
                0o644
            });
            match kind {
                EntryType::Symlink | EntryType::Link => {
                    header.set_size(0);
                    // Bypass the builder's checks: hostile archives are the point.
                    let name = header.as_gnu_mut().unwrap();
                    name.name[..path.len()].copy_from_slice(path.as_bytes());
                    name.linkname[..data.len()].copy_from_slice(data.as_bytes());
                    header.set_cksum();
                    builder.append(&header, std::io::empty()).unwrap();
                }
                _ => {
                    header.set_size(data.len() as u64);
                    let name = header.as_gnu_mut().unwrap();
                    name.name[..path.len()].copy_from_slice(path.as_bytes());
                    header.set_cksum();
                    builder.append(&header, data.as_bytes()).unwrap();
                }
            }
        };
        add("owner-repo-abc123/", EntryType::Directory, "");
        for (path, kind, data) in entries {
            add(&format!("owner-repo-abc123/{path}"), *kind, data);
        }
        let tar = builder.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        gz.finish().unwrap()
    }

    fn unpack(
        entries: &[(&str, EntryType, &str)],
    ) -> (tempfile::TempDir, Result<PathBuf, UnpackError>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("source.tar.gz");
        fs::write(&path, archive(entries)).unwrap();
        let dest = dir.path().join("src");
        fs::create_dir(&dest).unwrap();
        let result = unpack_source(&path, &dest);
        (dir, result)
    }

    #[test]
    fn strips_the_top_folder_and_keeps_files_links_and_folders() {
        let (dir, result) = unpack(&[
            ("envs/", EntryType::Directory, ""),
            (
                "envs/Singularity",
                EntryType::Regular,
                "Bootstrap: docker\n",
            ),
            ("envs/link", EntryType::Symlink, "Singularity"),
            (
                "envs/hard",
                EntryType::Link,
                "owner-repo-abc123/envs/Singularity",
            ),
            ("README", EntryType::Regular, "hello"),
        ]);
        let src = result.unwrap();
        assert_eq!(src, dir.path().join("src/owner-repo-abc123"));
        assert_eq!(
            fs::read_to_string(src.join("envs/Singularity")).unwrap(),
            "Bootstrap: docker\n"
        );
        assert_eq!(
            fs::read_to_string(src.join("envs/link")).unwrap(),
            "Bootstrap: docker\n"
        );
        assert_eq!(
            fs::read_to_string(src.join("envs/hard")).unwrap(),
            "Bootstrap: docker\n"
        );
        assert_eq!(fs::read_to_string(src.join("README")).unwrap(), "hello");
    }

    #[test]
    fn refuses_escapes() {
        for (entries, reason) in [
            (
                vec![("../evil", EntryType::Regular, "x")],
                "path contains ..",
            ),
            (
                vec![("link", EntryType::Symlink, "/etc/passwd")],
                "symlink to an absolute path",
            ),
            (
                vec![("a/link", EntryType::Symlink, "../../outside")],
                "symlink pointing out of the source tree",
            ),
            (
                vec![("hard", EntryType::Link, "/etc/shadow")],
                "absolute path",
            ),
            (
                vec![("fifo", EntryType::Fifo, "")],
                "not a file, folder or link",
            ),
        ] {
            let (dir, result) = unpack(&entries);
            match result {
                Err(UnpackError::Refused { reason: got, .. }) => {
                    assert_eq!(got, reason, "{entries:?}")
                }
                other => panic!("{entries:?}: expected a refusal, got {other:?}"),
            }
            assert!(!dir.path().join("evil").exists());
        }
    }

    #[test]
    fn refuses_writing_through_a_link_that_climbs_via_another_link() {
        // `a -> .` is inside; `a/a/../../x` would be outside if followed.
        let (_, result) = unpack(&[
            ("a", EntryType::Symlink, "."),
            ("b", EntryType::Symlink, "a/a/../.."),
        ]);
        // Lexically `a/a/../..` stays at the root, so the link is made, but
        // nothing can be written through it out of the tree.
        result.unwrap();
        let (dir, result) = unpack(&[
            ("a", EntryType::Symlink, "."),
            ("b", EntryType::Symlink, "a/a/../.."),
            ("b/escaped", EntryType::Regular, "x"),
        ]);
        assert!(result.is_err(), "{result:?}");
        assert!(!dir.path().join("escaped").exists());
    }
}
