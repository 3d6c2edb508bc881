//! A real S3-compatible server for the storage tests: `s3s-fs` (a crates.io
//! binary, installed by `scripts/install-deps.sh test` into
//! `~/.cache/sifhub/tools`) on a loopback port, with a temporary folder,
//! credentials, and one bucket.

// Test support: a setup failure is a test failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::registry::{free_port, http_status};

pub const ACCESS_KEY: &str = "sifhub-test-access";
pub const SECRET_KEY: &str = "sifhub-test-secret-key";
pub const REGION: &str = "us-east-1";
pub const BUCKET: &str = "sifhub-test";

/// The `s3s-fs` binary: `$SIFHUB_S3S_FS`, else `~/.cache/sifhub/tools/bin`.
pub fn s3s_fs_bin() -> PathBuf {
    let bin = std::env::var_os("SIFHUB_S3S_FS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(".cache/sifhub/tools/bin/s3s-fs")
        });
    assert!(
        bin.is_file(),
        "s3s-fs not found at {}: install s3s-fs: scripts/install-deps.sh test does",
        bin.display()
    );
    bin
}

/// A running `s3s-fs`, stopped on drop.
pub struct S3Server {
    child: Child,
    endpoint: String,
    dir: tempfile::TempDir,
}

impl S3Server {
    /// Starts a server with the bucket [`BUCKET`].
    pub fn start() -> S3Server {
        let bin = s3s_fs_bin();
        let mut last_log = String::new();
        // A port picked as free may be taken before the server binds it: retry.
        for _attempt in 0..5 {
            let dir = tempfile::tempdir().expect("s3s-fs temp dir");
            let root = dir.path().join("data");
            // s3s-fs keeps each bucket as a folder of its root.
            fs::create_dir_all(root.join(BUCKET)).expect("create the bucket folder");
            let port = free_port();
            let log = fs::File::create(dir.path().join("s3s-fs.log")).expect("s3s-fs log");
            let child = Command::new(&bin)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
                .arg(&root)
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log handle"))
                .stderr(log)
                .spawn()
                .expect("start s3s-fs");
            let mut server = S3Server {
                child,
                endpoint: format!("http://127.0.0.1:{port}"),
                dir,
            };
            if server.wait_ready(Duration::from_secs(15)) {
                return server;
            }
            last_log = server.log();
        }
        panic!("s3s-fs did not come up:\n{last_log}");
    }

    fn wait_ready(&mut self, timeout: Duration) -> bool {
        let host = self.endpoint.trim_start_matches("http://").to_owned();
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            // Any answer (403 without a signature) means it is listening.
            if http_status(&host, "/").is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// `s3://BUCKET/PREFIX`.
    pub fn storage_url(&self, prefix: &str) -> String {
        format!("s3://{BUCKET}/{prefix}")
    }

    /// The `AWS_*` variables a client of this server needs.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
        ]
    }

    /// Every file under the server's data folder (staging files included),
    /// relative to it.
    pub fn files(&self) -> Vec<String> {
        let root = self.dir.path().join("data");
        let mut found = Vec::new();
        let mut folders = vec![root.clone()];
        while let Some(folder) = folders.pop() {
            for entry in fs::read_dir(&folder).expect("read s3s-fs data folder") {
                let path = entry.expect("s3s-fs data entry").path();
                if path.is_dir() {
                    folders.push(path);
                } else {
                    found.push(path.strip_prefix(&root).unwrap().display().to_string());
                }
            }
        }
        found.sort();
        found
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("s3s-fs.log")).unwrap_or_default()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
