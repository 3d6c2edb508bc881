//! A real Docker registry (Debian's `docker-registry`, the CNCF distribution
//! registry) on a loopback port, seeded with images built locally — Docker
//! Hub is out of reach, so every test image is made here:
//!
//! - [`fixtures`] runs `tests/registry/seed.sh` once per test run (cached in
//!   `$SIFHUB_FIXTURES`, default `~/.cache/sifhub-fixtures`): an OCI layout
//!   with busybox (amd64, arm64, and a multi-arch index over both) and a
//!   Debian bookworm minbase image made with debootstrap;
//! - [`Registry::start`] / [`Registry::start_with_basic_auth`] run a registry
//!   with a temporary storage folder (htpasswd basic auth for the second) and
//!   [`Registry::push`] copies images into it with `skopeo` (as an OCI index,
//!   an OCI manifest, or a Docker v2 schema 2 manifest);
//! - [`TokenAuthProxy`] puts Docker-Hub-style bearer-token auth in front of a
//!   registry (a `WWW-Authenticate: Bearer realm=…` challenge and a token
//!   endpoint);
//! - [`LayerTar`] and [`write_oci_layout`] craft images layer by layer
//!   (whiteouts, links, hostile paths) for pushing.
//!
//! A missing tool fails the test naming the Debian package to install.

// Test support: a setup failure is a test failure, so panicking with a
// message is the point.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::{repo_root, system_tool};

/// The seeded fixtures: an OCI image layout with tagged images.
#[derive(Debug, Clone)]
pub struct Fixtures {
    /// The OCI layout folder (`oci:<layout>:<tag>` for skopeo).
    pub layout: PathBuf,
}

impl Fixtures {
    /// Digest of the manifest (or index) tagged `tag` in the layout.
    pub fn digest(&self, tag: &str) -> String {
        layout_digest(&self.layout, tag)
    }
}

/// Digest of the descriptor tagged `tag` in the OCI layout at `layout`.
pub fn layout_digest(layout: &Path, tag: &str) -> String {
    let index: serde_json::Value = serde_json::from_slice(
        &fs::read(layout.join("index.json")).expect("read index.json of the OCI layout"),
    )
    .expect("parse index.json");
    index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .and_then(|m| m["digest"].as_str())
        .unwrap_or_else(|| panic!("tag {tag} not in {}", layout.display()))
        .to_string()
}

/// `$SIFHUB_FIXTURES`, or `~/.cache/sifhub-fixtures`.
pub fn fixtures_dir() -> PathBuf {
    std::env::var_os("SIFHUB_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(".cache").join("sifhub-fixtures")
        })
}

/// Builds (once, cached on disk) the seeded OCI layout.
pub fn fixtures() -> &'static Fixtures {
    static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        system_tool("umoci", "umoci");
        system_tool("jq", "jq");
        system_tool("debootstrap", "debootstrap");
        system_tool("busybox", "busybox-static");
        let script = repo_root().join("tests").join("registry").join("seed.sh");
        let out = Command::new("bash")
            .arg(&script)
            .env("SIFHUB_FIXTURES", fixtures_dir())
            .output()
            .expect("run tests/registry/seed.sh");
        assert!(
            out.status.success(),
            "tests/registry/seed.sh failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Fixtures {
            layout: fixtures_dir().join("oci"),
        }
    })
}

/// How [`Registry::push`] stores an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushFormat {
    /// As in the layout (an OCI manifest; an index is copied whole with all its images).
    Oci,
    /// Converted to a Docker v2 schema 2 manifest.
    DockerV2s2,
    /// An OCI manifest with the layers recompressed with zstd (`…tar+zstd`).
    OciZstd,
}

/// A `docker-registry serve` process on a free loopback port; killed on drop.
pub struct Registry {
    child: Child,
    host: String,
    dir: tempfile::TempDir,
    credentials: Option<(String, String)>,
}

impl Registry {
    /// A registry without authentication.
    pub fn start() -> Registry {
        Self::start_inner(None)
    }

    /// A registry requiring HTTP basic auth (htpasswd, bcrypt) for everything.
    pub fn start_with_basic_auth(user: &str, password: &str) -> Registry {
        Self::start_inner(Some((user.to_string(), password.to_string())))
    }

    fn start_inner(credentials: Option<(String, String)>) -> Registry {
        let bin = system_tool("docker-registry", "docker-registry");
        let mut last_log = String::new();
        // A port picked as free may be taken by the time the registry binds it: retry.
        for _attempt in 0..5 {
            let dir = tempfile::tempdir().expect("registry temp dir");
            let mut auth = String::new();
            if let Some((user, password)) = &credentials {
                let htpasswd = system_tool("htpasswd", "apache2-utils");
                let out = Command::new(htpasswd)
                    .args(["-Bbn", user, password])
                    .output()
                    .expect("run htpasswd");
                assert!(out.status.success(), "htpasswd failed");
                let file = dir.path().join("htpasswd");
                fs::write(&file, &out.stdout).expect("write htpasswd");
                auth = format!(
                    "auth:\n  htpasswd:\n    realm: sifhub-test\n    path: {}\n",
                    file.display()
                );
            }
            let host = format!("127.0.0.1:{}", free_port());
            let config = dir.path().join("config.yml");
            fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n  secret: sifhub-test-secret\n{auth}",
                    dir.path().join("data").display()
                ),
            )
            .expect("write registry config");
            let log = fs::File::create(dir.path().join("registry.log")).expect("registry log");
            let child = Command::new(&bin)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log handle"))
                .stderr(log)
                .spawn()
                .expect("start docker-registry");
            let mut reg = Registry {
                child,
                host,
                dir,
                credentials: credentials.clone(),
            };
            if reg.wait_ready(Duration::from_secs(15)) {
                return reg;
            }
            last_log = reg.log();
        }
        panic!("docker-registry did not come up:\n{last_log}");
    }

    fn wait_ready(&mut self, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Some(status) = http_status(&self.host, "/v2/") {
                if status == 200 || status == 401 {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The registry's log (access log lines included).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// How many blob GETs the registry has served so far (from its access log).
    pub fn blob_gets(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/sha256:"))
            .count()
    }

    /// Copies `oci:<layout>:<tag>` to `docker://<host>/<dest>` with skopeo
    /// (an index is copied with all its images). Returns the digest of the
    /// manifest as stored in the registry.
    pub fn push(&self, layout: &Path, tag: &str, dest: &str, format: PushFormat) -> String {
        let skopeo = system_tool("skopeo", "skopeo");
        let mut cmd = Command::new(skopeo);
        cmd.args([
            "copy",
            "--insecure-policy",
            "--all",
            "--dest-tls-verify=false",
        ]);
        match format {
            // Keep the layout's bytes (skopeo would otherwise gzip plain-tar layers).
            PushFormat::Oci => cmd.arg("--preserve-digests"),
            PushFormat::DockerV2s2 => cmd.args(["--format", "v2s2"]),
            PushFormat::OciZstd => cmd.args(["--format", "oci", "--dest-compress-format", "zstd"]),
        };
        if let Some((u, p)) = &self.credentials {
            cmd.arg("--dest-creds").arg(format!("{u}:{p}"));
        }
        cmd.arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{dest}", self.host))
            .env("TMPDIR", self.dir.path());
        let out = cmd.output().expect("run skopeo copy");
        assert!(
            out.status.success(),
            "skopeo copy oci:{}:{tag} → {dest} failed:\n{}\n{}",
            layout.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.manifest_digest(dest)
    }

    /// sha256 of the manifest `dest` (`name:tag`) as served by the registry.
    pub fn manifest_digest(&self, dest: &str) -> String {
        let skopeo = system_tool("skopeo", "skopeo");
        let mut cmd = Command::new(skopeo);
        cmd.args(["inspect", "--raw", "--tls-verify=false"]);
        if let Some((u, p)) = &self.credentials {
            cmd.arg("--creds").arg(format!("{u}:{p}"));
        }
        let out = cmd
            .arg(format!("docker://{}/{dest}", self.host))
            .output()
            .expect("run skopeo inspect");
        assert!(
            out.status.success(),
            "skopeo inspect {dest} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!("sha256:{}", hex::encode(Sha256::digest(&out.stdout)))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The registry seeded with the busybox images:
/// `busybox:latest` (the multi-arch OCI index), `busybox:amd64` (OCI
/// manifest) and `busybox:v2s2` (Docker v2 schema 2).
pub fn seeded_registry() -> Registry {
    let fx = fixtures();
    let reg = Registry::start();
    reg.push(&fx.layout, "busybox", "busybox:latest", PushFormat::Oci);
    reg.push(
        &fx.layout,
        "busybox-amd64",
        "busybox:amd64",
        PushFormat::Oci,
    );
    reg.push(
        &fx.layout,
        "busybox-amd64",
        "busybox:v2s2",
        PushFormat::DockerV2s2,
    );
    reg
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free loopback port")
}

/// Status code of `GET path` on `host`, or `None` when it does not answer.
pub fn http_status(host: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

// ---------------------------------------------------------------------------
// Bearer-token auth in front of a registry.

/// A request seen by a [`TokenAuthProxy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxiedRequest {
    /// Method and path (`GET /v2/busybox/manifests/latest`).
    pub line: String,
    /// Whether it carried the proxy's bearer token.
    pub had_token: bool,
}

/// Docker-Hub-style token auth in front of a registry: `/v2/…` without
/// `Authorization: Bearer <token>` gets a 401 with
/// `WWW-Authenticate: Bearer realm="http://<proxy>/token",service="sifhub-test"`;
/// `/token?scope=…&service=…` hands out the token (to anyone, or only to
/// basic-auth callers with the configured credentials); requests with the
/// token are forwarded to the registry.
pub struct TokenAuthProxy {
    host: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// `/v2/` requests seen.
    pub requests: Arc<Mutex<Vec<ProxiedRequest>>>,
    /// Query strings of token requests seen.
    pub token_requests: Arc<Mutex<Vec<String>>>,
}

impl TokenAuthProxy {
    /// Starts a proxy for `backend` (`host:port`); tokens require
    /// `credentials` when given.
    pub fn start(backend: &str, credentials: Option<(&str, &str)>) -> TokenAuthProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind token proxy");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let host = listener.local_addr().expect("proxy address").to_string();
        let token = format!("sifhub-test-token-{}", std::process::id());
        let expected_basic =
            credentials.map(|(u, p)| format!("Basic {}", base64(format!("{u}:{p}").as_bytes())));
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let token_requests = Arc::new(Mutex::new(Vec::new()));
        let shared = ProxyShared {
            host: host.clone(),
            backend: backend.to_string(),
            token,
            expected_basic,
            requests: requests.clone(),
            token_requests: token_requests.clone(),
        };
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let shared = Arc::new(shared);
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let shared = shared.clone();
                        std::thread::spawn(move || {
                            let _ = conn.set_nonblocking(false);
                            shared.serve(conn);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        TokenAuthProxy {
            host,
            stop,
            thread: Some(thread),
            requests,
            token_requests,
        }
    }

    /// `127.0.0.1:PORT` of the proxy (the "registry" clients talk to).
    pub fn host(&self) -> &str {
        &self.host
    }
}

impl Drop for TokenAuthProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct ProxyShared {
    host: String,
    backend: String,
    token: String,
    expected_basic: Option<String>,
    requests: Arc<Mutex<Vec<ProxiedRequest>>>,
    token_requests: Arc<Mutex<Vec<String>>>,
}

impl ProxyShared {
    fn serve(&self, mut conn: TcpStream) {
        let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
        // One request per connection (we answer with Connection: close).
        let Some((method, path, headers)) = read_request_head(&mut conn) else {
            return;
        };
        let authz = headers.get("authorization").cloned().unwrap_or_default();
        if path.starts_with("/token") {
            let query = path
                .split_once('?')
                .map(|(_, q)| q.to_string())
                .unwrap_or_default();
            if let Ok(mut t) = self.token_requests.lock() {
                t.push(query);
            }
            let allowed = match &self.expected_basic {
                None => true,
                Some(expected) => &authz == expected,
            };
            if allowed {
                let body = format!(
                    "{{\"token\":\"{t}\",\"access_token\":\"{t}\",\"expires_in\":300}}",
                    t = self.token
                );
                respond(
                    &mut conn,
                    "200 OK",
                    &[("Content-Type", "application/json")],
                    &body,
                );
            } else {
                respond(
                    &mut conn,
                    "401 Unauthorized",
                    &[("Content-Type", "application/json")],
                    "{\"details\":\"incorrect username or password\"}",
                );
            }
            return;
        }
        let had_token = authz == format!("Bearer {}", self.token);
        if let Ok(mut r) = self.requests.lock() {
            r.push(ProxiedRequest {
                line: format!("{method} {path}"),
                had_token,
            });
        }
        if !had_token {
            let challenge = format!(
                "Bearer realm=\"http://{}/token\",service=\"sifhub-test\"",
                self.host
            );
            respond(
                &mut conn,
                "401 Unauthorized",
                &[
                    ("Content-Type", "application/json"),
                    ("WWW-Authenticate", &challenge),
                    ("Docker-Distribution-Api-Version", "registry/2.0"),
                ],
                "{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"authentication required\",\"detail\":null}]}",
            );
            return;
        }
        // Forward to the registry.
        let Ok(mut upstream) = TcpStream::connect(&self.backend) else {
            respond(&mut conn, "502 Bad Gateway", &[], "");
            return;
        };
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.backend);
        for (k, v) in &headers {
            if !matches!(k.as_str(), "host" | "authorization" | "connection") {
                req.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        req.push_str("Connection: close\r\n\r\n");
        if upstream.write_all(req.as_bytes()).is_err() {
            return;
        }
        let _ = std::io::copy(&mut upstream, &mut conn);
        let _ = conn.flush();
        let _ = conn.shutdown(Shutdown::Both);
    }
}

fn read_request_head(conn: &mut TcpStream) -> Option<(String, String, BTreeMap<String, String>)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if buf.len() > 64 * 1024 || conn.read(&mut byte).ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split_whitespace();
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let mut headers = BTreeMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    Some((method, path, headers))
}

fn respond(conn: &mut TcpStream, status: &str, headers: &[(&str, &str)], body: &str) {
    let mut r = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("\r\n");
    r.push_str(body);
    let _ = conn.write_all(r.as_bytes());
    let _ = conn.flush();
    let _ = conn.shutdown(Shutdown::Both);
}

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Crafting images.

/// Builds a layer tarball entry by entry. Paths are written verbatim into
/// the headers (no sanitising), so hostile entries can be made.
pub struct LayerTar {
    builder: tar::Builder<Vec<u8>>,
    /// uid/gid for the next entries.
    pub owner: (u64, u64),
    /// mtime for the next entries.
    pub mtime: u64,
}

impl Default for LayerTar {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerTar {
    /// An empty layer.
    pub fn new() -> LayerTar {
        LayerTar {
            builder: tar::Builder::new(Vec::new()),
            owner: (0, 0),
            mtime: 1_700_000_000,
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
        let name = path.as_bytes();
        assert!(name.len() < 100, "test paths must be short: {path}");
        if let Some(gnu) = h.as_gnu_mut() {
            gnu.name[..name.len()].copy_from_slice(name);
        }
        h
    }

    fn append(&mut self, mut h: tar::Header, data: &[u8]) -> &mut Self {
        h.set_cksum();
        self.builder.append(&h, data).expect("append tar entry");
        self
    }

    /// A directory.
    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        let h = self.header(path, tar::EntryType::Directory, mode, 0);
        self.append(h, &[])
    }

    /// A regular file.
    pub fn file(&mut self, path: &str, content: &[u8], mode: u32) -> &mut Self {
        let h = self.header(path, tar::EntryType::Regular, mode, content.len() as u64);
        self.append(h, content)
    }

    /// A symlink `path -> target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = self.header(path, tar::EntryType::Symlink, 0o777, 0);
        set_link(&mut h, target);
        self.append(h, &[])
    }

    /// A hard link `path` to the archive path `target`.
    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = self.header(path, tar::EntryType::Link, 0o644, 0);
        set_link(&mut h, target);
        self.append(h, &[])
    }

    /// A character device.
    pub fn char_device(&mut self, path: &str, major: u32, minor: u32) -> &mut Self {
        let mut h = self.header(path, tar::EntryType::Char, 0o666, 0);
        h.set_device_major(major).expect("device major");
        h.set_device_minor(minor).expect("device minor");
        self.append(h, &[])
    }

    /// A `.wh.NAME` whiteout deleting `path` from lower layers.
    pub fn whiteout(&mut self, path: &str) -> &mut Self {
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (format!("{d}/"), n),
            None => (String::new(), path),
        };
        let h = self.header(
            &format!("{dir}.wh.{name}"),
            tar::EntryType::Regular,
            0o600,
            0,
        );
        self.append(h, &[])
    }

    /// An opaque marker: lower layers' content of `dir` is hidden.
    pub fn opaque(&mut self, dir: &str) -> &mut Self {
        let h = self.header(
            &format!("{}/.wh..wh..opq", dir.trim_end_matches('/')),
            tar::EntryType::Regular,
            0o600,
            0,
        );
        self.append(h, &[])
    }

    /// The uncompressed tarball.
    pub fn into_tar(self) -> Vec<u8> {
        self.builder.into_inner().expect("finish tar")
    }
}

fn set_link(h: &mut tar::Header, target: &str) {
    let t = target.as_bytes();
    assert!(t.len() < 100, "test link targets must be short: {target}");
    if let Some(gnu) = h.as_gnu_mut() {
        gnu.linkname = [0; 100];
        gnu.linkname[..t.len()].copy_from_slice(t);
    }
}

/// Gzips `data`.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip finish")
}

/// A layer for [`write_oci_layout`]: the tarball and whether to gzip it.
pub struct CraftedLayer {
    /// The uncompressed tar.
    pub tar: Vec<u8>,
    /// Store gzip-compressed (`…tar+gzip`) rather than plain (`…tar`).
    pub gzip: bool,
}

/// Writes a single-image OCI layout at `dir` (created or extended) with
/// `layers` (bottom first) and an amd64 config carrying `container_config`
/// (the `config` object: Env, Cmd, …), tagged `tag`. Returns the manifest digest.
pub fn write_oci_layout(
    dir: &Path,
    tag: &str,
    layers: &[CraftedLayer],
    container_config: serde_json::Value,
) -> String {
    let blobs = dir.join("blobs").join("sha256");
    fs::create_dir_all(&blobs).expect("create layout");
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");
    let put = |data: &[u8]| -> (String, usize) {
        let hex = hex::encode(Sha256::digest(data));
        fs::write(blobs.join(&hex), data).expect("write blob");
        (format!("sha256:{hex}"), data.len())
    };
    let mut layer_descs = Vec::new();
    let mut diff_ids = Vec::new();
    for l in layers {
        diff_ids.push(format!("sha256:{}", hex::encode(Sha256::digest(&l.tar))));
        let (blob, media_type) = if l.gzip {
            (gzip(&l.tar), "application/vnd.oci.image.layer.v1.tar+gzip")
        } else {
            (l.tar.clone(), "application/vnd.oci.image.layer.v1.tar")
        };
        let (digest, size) = put(&blob);
        layer_descs
            .push(serde_json::json!({"mediaType": media_type, "digest": digest, "size": size}));
    }
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": container_config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let (config_digest, config_size) = put(&serde_json::to_vec(&config).expect("config json"));
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": layer_descs,
    });
    let (manifest_digest, manifest_size) =
        put(&serde_json::to_vec(&manifest).expect("manifest json"));
    let index_path = dir.join("index.json");
    let mut index: serde_json::Value = fs::read(&index_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| serde_json::json!({"schemaVersion": 2, "manifests": []}));
    if let Some(list) = index["manifests"].as_array_mut() {
        list.retain(|m| m["annotations"]["org.opencontainers.image.ref.name"] != tag);
        list.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }));
    }
    fs::write(&index_path, serde_json::to_vec(&index).expect("index json"))
        .expect("write index.json");
    manifest_digest
}
