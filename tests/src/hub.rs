//! `sifhub serve` as a real process, for end-to-end tests: started on a free
//! loopback port with a data folder and `SIFHUB_*` settings, ready once
//! `/readyz` answers, killed with SIGKILL and restarted on the same folder
//! and port like a crashed server brought back.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::registry::free_port;
use crate::sifhub_bin;

/// A running `sifhub serve`.
pub struct HubProcess {
    child: Option<Child>,
    port: u16,
    data_dir: PathBuf,
    env: Vec<(String, String)>,
    /// How many times it was started (names the log files).
    starts: usize,
}

impl HubProcess {
    /// Starts `sifhub serve` on `data_dir` with `env` on top of the
    /// listen address and data folder, and waits until it is ready.
    pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> HubProcess {
        let mut hub = HubProcess {
            child: None,
            port: free_port(),
            data_dir: data_dir.to_owned(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            starts: 0,
        };
        hub.spawn();
        hub
    }

    fn spawn(&mut self) {
        std::fs::create_dir_all(&self.data_dir).unwrap();
        self.starts += 1;
        let log = File::create(self.log_path(self.starts)).unwrap();
        let child = Command::new(sifhub_bin())
            .arg("serve")
            .env("SIFHUB_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("SIFHUB_DATA_DIR", &self.data_dir)
            .env("SIFHUB_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start sifhub serve");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("sifhub serve exited with {status}:\n{}", self.log());
            }
            if crate::registry::http_status(&format!("127.0.0.1:{}", self.port), "/readyz")
                == Some(200)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "sifhub serve not ready after 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_path(&self, start: usize) -> PathBuf {
        self.data_dir.join(format!("serve-{start}.log"))
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Everything every start of the server logged.
    pub fn log(&self) -> String {
        (1..=self.starts)
            .map(|n| std::fs::read_to_string(self.log_path(n)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    /// Kills the server with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Changes a setting for the next (re)start.
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.env.retain(|(k, _)| k != name);
        self.env.push((name.to_owned(), value.to_owned()));
    }

    /// Starts it again on the same folder, port and settings.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `sifhub admin worker-token create --name NAME` on the hub whose data
/// folder is `data_dir`; returns the printed token.
pub fn admin_worker_token(data_dir: &Path, name: &str) -> String {
    let out = Command::new(sifhub_bin())
        .args(["admin", "worker-token", "create", "--name", name])
        .env("SIFHUB_DATA_DIR", data_dir)
        .output()
        .expect("run sifhub admin worker-token create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(token.len() > 40, "{token:?}");
    token
}
