//! `sifhub serve` as a user starts it: no configuration but a data folder and
//! a port, health endpoints answering (ready once the database is migrated),
//! and the first log lines saying where the data lives and which URL to open.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Hub(Child);

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn serve_starts_with_defaults_and_reports_where_it_lives() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("hub-data");
    let mut child = Command::new(sifhub_tests::sifhub_bin())
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("SIFHUB_LISTEN", "127.0.0.1:0")
        .env("SIFHUB_DATA_DIR", &data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let hub = Hub(child);

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut first_lines = Vec::new();
    let mut addr = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        first_lines.push(line.clone());
        if let Some(rest) = line.split("listening on ").nth(1) {
            addr = rest.split(';').next().map(str::to_owned);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no 'listening on' line: {first_lines:?}"
        );
    }
    let addr = addr.unwrap_or_else(|| panic!("serve exited early: {first_lines:?}"));
    let log = first_lines.join("\n");
    assert!(
        log.contains("data folder:") && log.contains("hub-data"),
        "{log}"
    );
    assert!(log.contains(&format!("open http://{addr}")), "{log}");
    assert!(log.contains("database: sqlite://"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "no colour codes when piped: {log:?}"
    );
    assert!(data_dir.join("storage").is_dir());
    assert!(
        data_dir.join("sifhub.db").is_file(),
        "the SQLite database lives in the data folder"
    );

    let health = http_get(&addr, "/healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let ready = http_get(&addr, "/readyz");
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    let missing = http_get(&addr, "/no/such/page");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    drop(hub);
}

#[test]
fn serve_refuses_a_bad_config_with_the_variable_named() {
    let out = Command::new(sifhub_tests::sifhub_bin())
        .arg("serve")
        .env("SIFHUB_LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SIFHUB_LISTEN"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sifhub.toml");
    std::fs::write(&path, "lisen = \"127.0.0.1:1\"\n").unwrap();
    let out = Command::new(sifhub_tests::sifhub_bin())
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("sifhub.toml") && stderr.contains("lisen"),
        "{stderr}"
    );
}
