//! The root filesystem partition: a squashfs made by `mksquashfs` from
//! Debian's squashfs-tools (what apptainer itself runs), reproducible for a
//! given tree and timestamp.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum SquashfsError {
    #[error("mksquashfs not found: install the Debian package squashfs-tools")]
    Missing,
    #[error("cannot run mksquashfs for {root}")]
    Spawn {
        root: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mksquashfs failed for {root} ({status}): {output}")]
    Failed {
        root: PathBuf,
        status: std::process::ExitStatus,
        output: String,
    },
}

/// Compression of the squashfs partition; gzip by default, as apptainer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
    Xz,
    Lz4,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
            Compression::Lz4 => "lz4",
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            "xz" => Ok(Compression::Xz),
            "lz4" => Ok(Compression::Lz4),
            other => Err(format!(
                "unknown compression {other:?} (expected gzip, zstd, xz or lz4)"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SquashOptions {
    pub compression: Compression,
    /// Timestamp for the filesystem and every file, for reproducible images.
    pub timestamp: Option<u64>,
    /// Processors mksquashfs may use (all when `None`).
    pub processors: Option<usize>,
    /// The mksquashfs binary.
    pub mksquashfs: PathBuf,
}

impl Default for SquashOptions {
    fn default() -> Self {
        Self {
            compression: Compression::Gzip,
            timestamp: None,
            processors: None,
            mksquashfs: PathBuf::from("mksquashfs"),
        }
    }
}

impl SquashOptions {
    /// The mksquashfs arguments for `root` → `out`.
    pub fn args(&self, root: &Path, out: &Path) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec![
            root.into(),
            out.into(),
            "-noappend".into(),
            "-comp".into(),
            self.compression.as_str().into(),
        ];
        if let Some(t) = self.timestamp {
            args.extend([
                "-mkfs-time".into(),
                t.to_string().into(),
                "-all-time".into(),
                t.to_string().into(),
            ]);
        }
        if let Some(n) = self.processors {
            args.extend(["-processors".into(), n.to_string().into()]);
        }
        args
    }
}

/// Squashes `root` into `out`, calling `progress` with the percentage done
/// as mksquashfs reports it.
pub fn squash(
    root: &Path,
    out: &Path,
    options: &SquashOptions,
    progress: &mut dyn FnMut(u8),
) -> Result<(), SquashfsError> {
    let mut child = Command::new(&options.mksquashfs)
        .args(options.args(root, out))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => SquashfsError::Missing,
            _ => SquashfsError::Spawn {
                root: root.to_owned(),
                source,
            },
        })?;
    let mut stderr = child.stderr.take();
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_string(&mut text);
        }
        text
    });
    let mut tail = String::new();
    if let Some(stdout) = child.stdout.take() {
        // The bar is redrawn with '\r'; each redraw ends in "N%".
        let mut reader = BufReader::new(stdout);
        let mut chunk = Vec::new();
        let mut last = None;
        loop {
            chunk.clear();
            match reader.read_until(b'\r', &mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&chunk);
            for line in text.split(['\r', '\n']) {
                if let Some(pct) = percentage(line) {
                    if last != Some(pct) {
                        last = Some(pct);
                        progress(pct);
                    }
                }
            }
            tail.push_str(&text);
            if tail.len() > 8192 {
                tail = tail.split_off(tail.len() - 4096);
            }
        }
    }
    let status = child.wait().map_err(|source| SquashfsError::Spawn {
        root: root.to_owned(),
        source,
    })?;
    let errors = stderr_reader.join().unwrap_or_default();
    if !status.success() {
        return Err(SquashfsError::Failed {
            root: root.to_owned(),
            status,
            output: format!("{}{}", errors.trim(), tail.trim()),
        });
    }
    Ok(())
}

/// `[====/   ] 12/153  7%` → 7
fn percentage(line: &str) -> Option<u8> {
    let line = line.trim_end();
    let pct = line.strip_suffix('%')?;
    let digits = pct.rsplit(' ').next()?;
    if !line.starts_with('[') {
        return None;
    }
    digits.parse::<u8>().ok().filter(|p| *p <= 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_are_read() {
        assert_eq!(percentage("[=====/     ] 12/153   7%"), Some(7));
        assert_eq!(percentage("[==========] 153/153 100%"), Some(100));
        assert_eq!(
            percentage("\t100.00% of uncompressed filesystem size"),
            None
        );
    }

    #[test]
    fn options_make_reproducible_arguments() {
        let opts = SquashOptions {
            compression: Compression::Zstd,
            timestamp: Some(1_700_000_000),
            ..Default::default()
        };
        let args: Vec<String> = opts
            .args(Path::new("/r"), Path::new("/o.sqfs"))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(
            args,
            [
                "/r",
                "/o.sqfs",
                "-noappend",
                "-comp",
                "zstd",
                "-mkfs-time",
                "1700000000",
                "-all-time",
                "1700000000"
            ]
        );
        assert_eq!("xz".parse::<Compression>(), Ok(Compression::Xz));
        assert!("brotli"
            .parse::<Compression>()
            .unwrap_err()
            .contains("brotli"));
    }

    #[test]
    fn squashes_a_tree_reproducibly() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/hello"), "hello\n").unwrap();
        let opts = SquashOptions {
            timestamp: Some(1_700_000_000),
            ..Default::default()
        };
        let (a, b) = (dir.path().join("a.sqfs"), dir.path().join("b.sqfs"));
        let mut seen = Vec::new();
        squash(&root, &a, &opts, &mut |p| seen.push(p)).unwrap();
        squash(&root, &b, &opts, &mut |_| {}).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert_eq!(&std::fs::read(&a).unwrap()[..4], b"hsqs");
        assert_eq!(seen.last(), Some(&100));

        let err = squash(&dir.path().join("missing"), &a, &opts, &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
