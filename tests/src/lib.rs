//! Shared helpers for the end-to-end tests: where the `sifhub` binary, the
//! shared corpus and the reference oracles are. A missing component is a test
//! failure that names what to install, never a quiet skip.

pub mod git;
pub mod github;
pub mod hub;
pub mod postgres;
pub mod registry;
pub mod s3;
pub mod webhook;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root (the folder holding the workspace `Cargo.toml`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `../shared` beside the clone, or `$SIFHUB_SHARED`.
pub fn shared_dir() -> PathBuf {
    let dir = std::env::var_os("SIFHUB_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("..").join("shared"));
    assert!(
        dir.join("corpus").is_dir(),
        "shared folder not found at {} (set SIFHUB_SHARED to the folder holding corpus/ and oracles/)",
        dir.display()
    );
    dir
}

/// The `sifhub` binary built beside this test executable.
pub fn sifhub_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SIFHUB_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current test executable");
    // target/<profile>/deps/<test> → target/<profile>/sifhub
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("sifhub"))
        .expect("target folder of the test executable");
    assert!(
        bin.is_file(),
        "sifhub binary not found at {}: run `cargo build --bin sifhub` first (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// Runs `sifhub ARGS…` and returns its output.
pub fn sifhub<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(sifhub_bin())
        .args(args)
        .output()
        .expect("run sifhub")
}

/// Path of a reference oracle (`siftool`, `libclient`) built by
/// `../shared/oracles/build.sh`, in `$SIFHUB_ORACLES` or `~/.cache/sifhub-oracles`.
pub fn oracle(name: &str) -> PathBuf {
    let dir = std::env::var_os("SIFHUB_ORACLES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(".cache").join("sifhub-oracles")
        });
    let path = dir.join(name);
    assert!(
        path.exists(),
        "oracle {name} not found at {}: run ../shared/oracles/build.sh (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Path of a system tool, or a failure naming the Debian package to install.
pub fn system_tool(name: &str, package: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} not found: install the Debian package {package} (scripts/test.sh does)");
}

/// Deterministic bytes that do not compress or repeat in aligned blocks.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect()
}

/// Lowercase hex sha256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(data))
}
