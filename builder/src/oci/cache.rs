//! An on-disk cache of blobs (layers and configs) keyed by digest.
//!
//! Layout: `<dir>/blobs/sha256/<hex>` for verified content and `<dir>/tmp/`
//! for downloads in progress (same file system, so the final rename is
//! atomic). A blob is written to a temporary file while its sha256 is
//! computed, checked against the expected digest (and size), and only then
//! renamed into place: a reader never sees a partial or unverified blob, and
//! concurrent downloads of the same blob simply race to an identical rename.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::error::{OciError, Result};
use super::reference::validate_digest;

/// The blob cache rooted at a folder.
#[derive(Debug, Clone)]
pub struct BlobCache {
    dir: PathBuf,
}

impl BlobCache {
    /// Opens (creating if needed) the cache in `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        for sub in ["blobs/sha256", "tmp"] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p).map_err(|source| OciError::Cache {
                path: p.clone(),
                context: "cannot create folder".to_string(),
                source,
            })?;
        }
        Ok(BlobCache { dir })
    }

    /// The cache folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the blob `digest` lives (whether or not it is there).
    pub fn path_for(&self, digest: &str) -> Result<PathBuf> {
        validate_digest(digest).map_err(|reason| OciError::InvalidDigest {
            digest: digest.to_string(),
            reason,
        })?;
        let hex = &digest["sha256:".len()..];
        Ok(self.dir.join("blobs").join("sha256").join(hex))
    }

    /// The cached blob `digest`, if present and intact. With `verify` the
    /// content is re-hashed; a blob of the wrong size or content is removed
    /// (and reported as absent) so that it is downloaded again.
    pub fn lookup(&self, digest: &str, size: Option<u64>, verify: bool) -> Result<Option<PathBuf>> {
        let path = self.path_for(digest)?;
        let meta = match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => m,
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(OciError::Cache {
                    path,
                    context: "cannot inspect cached blob".to_string(),
                    source,
                })
            }
        };
        let size_ok = size.is_none_or(|s| s == meta.len());
        let content_ok = size_ok
            && (!verify
                || sha256_file(&path).map_err(|source| OciError::Cache {
                    path: path.clone(),
                    context: "cannot read cached blob".to_string(),
                    source,
                })? == digest);
        if content_ok {
            return Ok(Some(path));
        }
        tracing::warn!(digest, path = %path.display(), "cached blob is corrupt, removing it");
        std::fs::remove_file(&path).map_err(|source| OciError::Cache {
            path: path.clone(),
            context: "cannot remove corrupt cached blob".to_string(),
            source,
        })?;
        Ok(None)
    }

    /// Starts writing the blob `digest` (of `expected_size` bytes, if known).
    pub fn writer(&self, digest: &str, expected_size: Option<u64>) -> Result<BlobWriter> {
        let final_path = self.path_for(digest)?;
        let tmp_dir = self.dir.join("tmp");
        let tmp = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&tmp_dir)
            .map_err(|source| OciError::Cache {
                path: tmp_dir.clone(),
                context: "cannot create temporary file".to_string(),
                source,
            })?;
        let file = tmp.reopen().map_err(|source| OciError::Cache {
            path: tmp.path().to_path_buf(),
            context: "cannot open temporary file".to_string(),
            source,
        })?;
        Ok(BlobWriter {
            out: BufWriter::with_capacity(256 * 1024, file),
            tmp,
            hasher: Sha256::new(),
            written: 0,
            digest: digest.to_string(),
            expected_size,
            final_path,
        })
    }

    /// Stores the content of `reader` as blob `digest` (verified).
    pub fn insert_from_reader(&self, digest: &str, mut reader: impl Read) -> Result<PathBuf> {
        let mut w = self.writer(digest, None)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = reader.read(&mut buf).map_err(|source| OciError::Cache {
                path: w.tmp.path().to_path_buf(),
                context: "cannot read blob source".to_string(),
                source,
            })?;
            if n == 0 {
                break;
            }
            w.write(&buf[..n])?;
        }
        w.commit()
    }
}

/// A blob being written into the cache; see [`BlobCache::writer`].
#[derive(Debug)]
pub struct BlobWriter {
    out: BufWriter<File>,
    tmp: tempfile::NamedTempFile,
    hasher: Sha256,
    written: u64,
    digest: String,
    expected_size: Option<u64>,
    final_path: PathBuf,
}

impl BlobWriter {
    /// Appends a chunk. Writing more than the expected size is an error
    /// (a registry cannot make us fill the disk past the descriptor's size).
    pub fn write(&mut self, chunk: &[u8]) -> Result<()> {
        self.written += chunk.len() as u64;
        if let Some(expected) = self.expected_size {
            if self.written > expected {
                return Err(OciError::DigestMismatch {
                    digest: self.digest.clone(),
                    reason: format!(
                        "received more than the {expected} bytes the manifest declares"
                    ),
                });
            }
        }
        self.hasher.update(chunk);
        self.out.write_all(chunk).map_err(|source| OciError::Cache {
            path: self.tmp.path().to_path_buf(),
            context: "cannot write temporary file".to_string(),
            source,
        })
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Verifies size and digest, then moves the blob into place.
    pub fn commit(self) -> Result<PathBuf> {
        let BlobWriter {
            out,
            tmp,
            hasher,
            written,
            digest,
            expected_size,
            final_path,
        } = self;
        let file = out.into_inner().map_err(|e| OciError::Cache {
            path: tmp.path().to_path_buf(),
            context: "cannot flush temporary file".to_string(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(|source| OciError::Cache {
            path: tmp.path().to_path_buf(),
            context: "cannot sync temporary file".to_string(),
            source,
        })?;
        if let Some(expected) = expected_size {
            if written != expected {
                return Err(OciError::DigestMismatch {
                    digest,
                    reason: format!("received {written} bytes, the manifest declares {expected}"),
                });
            }
        }
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual != digest {
            return Err(OciError::DigestMismatch {
                digest,
                reason: format!("content hashes to {actual}"),
            });
        }
        tmp.persist(&final_path).map_err(|e| OciError::Cache {
            path: final_path.clone(),
            context: "cannot move verified blob into place".to_string(),
            source: e.error,
        })?;
        Ok(final_path)
    }
}

/// `sha256:<hex>` of a file's content.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_of(b: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(b)))
    }

    #[test]
    fn verified_insert_and_lookup() {
        let t = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(t.path()).unwrap();
        let d = digest_of(b"hello");
        assert!(cache.lookup(&d, Some(5), true).unwrap().is_none());
        let p = cache.insert_from_reader(&d, &b"hello"[..]).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"hello");
        assert_eq!(cache.lookup(&d, Some(5), true).unwrap(), Some(p.clone()));
        // wrong size: treated as absent and removed
        assert!(cache.lookup(&d, Some(6), false).unwrap().is_none());
        assert!(!p.exists());
    }

    #[test]
    fn mismatch_leaves_nothing() {
        let t = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(t.path()).unwrap();
        let d = digest_of(b"hello");
        let e = cache.insert_from_reader(&d, &b"HELLO"[..]).unwrap_err();
        assert!(e.to_string().contains("content hashes to"), "{e}");
        assert!(cache.lookup(&d, None, false).unwrap().is_none());
        assert_eq!(std::fs::read_dir(t.path().join("tmp")).unwrap().count(), 0);
        let mut w = cache.writer(&d, Some(3)).unwrap();
        assert!(w.write(b"hello").is_err());
        assert!(cache.writer("md5:abc", None).is_err());
    }

    #[test]
    fn corrupt_cached_blob_is_dropped() {
        let t = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(t.path()).unwrap();
        let d = digest_of(b"hello");
        let p = cache.insert_from_reader(&d, &b"hello"[..]).unwrap();
        std::fs::write(&p, b"jello").unwrap();
        assert!(cache.lookup(&d, Some(5), true).unwrap().is_none());
    }
}
