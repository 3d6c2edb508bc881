//! Test databases: a throwaway PostgreSQL cluster started as the tests run
//! (Debian's `postgresql` server binaries, never a system service), and
//! SQLite files in temporary folders.
//!
//! - [`postgres_database`] creates a fresh database in the cluster for one
//!   test. The cluster (`initdb` into a temporary folder, a unix socket
//!   there, no TCP) starts with the first test that asks and stops when
//!   the last [`TestDatabase`] holding it is dropped. A watchdog process
//!   stops it and removes its folder should the test process die first.
//! - [`sqlite_database`] is a SQLite file in a temporary folder.
//! - [`both_backends`] is one of each, so a test body runs on both.
//!
//! As root (CI), the server runs as the `postgres` user, since `initdb`
//! refuses root; otherwise as the current user. A missing `postgresql`
//! package fails the test and says to install it.

// Test support: a setup failure is a test failure, so panicking with a
// message is the point.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// A database for one test; keeps what it lives in (a temporary folder,
/// the cluster) alive until dropped.
pub struct TestDatabase {
    /// `sqlite` or `postgres`, for messages.
    pub backend: &'static str,
    /// What `sifhub::db::Db::connect` takes.
    pub url: String,
    _keep: Keep,
}

enum Keep {
    Folder(#[allow(dead_code)] tempfile::TempDir),
    Cluster(#[allow(dead_code)] Arc<PgCluster>),
}

impl std::fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} database {}", self.backend, self.url)
    }
}

/// A SQLite database file in a new temporary folder.
pub fn sqlite_database() -> TestDatabase {
    let folder = tempfile::Builder::new()
        .prefix("sifhub-sqlite-")
        .tempdir()
        .expect("create a temporary folder for the sqlite database");
    let url = format!("sqlite://{}", folder.path().join("sifhub.db").display());
    TestDatabase {
        backend: "sqlite",
        url,
        _keep: Keep::Folder(folder),
    }
}

/// A new, empty database in the shared throwaway PostgreSQL cluster.
pub fn postgres_database(test_name: &str) -> TestDatabase {
    let cluster = PgCluster::shared();
    let url = cluster.create_database(test_name);
    TestDatabase {
        backend: "postgres",
        url,
        _keep: Keep::Cluster(cluster),
    }
}

/// A SQLite and a PostgreSQL database, in that order.
pub fn both_backends(test_name: &str) -> [TestDatabase; 2] {
    [sqlite_database(), postgres_database(test_name)]
}

/// A running PostgreSQL cluster in a temporary folder; stopped on drop.
pub struct PgCluster {
    bin: PathBuf,
    folder: tempfile::TempDir,
    port: u16,
    /// `runuser -u postgres --` when running as root, else nothing.
    run_as: Vec<String>,
    watchdog: Mutex<Option<Child>>,
}

impl PgCluster {
    /// The cluster shared by the tests running now: started by the first
    /// that asks, stopped when the last one drops it.
    pub fn shared() -> Arc<PgCluster> {
        static SHARED: Mutex<Weak<PgCluster>> = Mutex::new(Weak::new());
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cluster) = shared.upgrade() {
            return cluster;
        }
        let cluster = Arc::new(PgCluster::start());
        *shared = Arc::downgrade(&cluster);
        cluster
    }

    /// `initdb` into a temporary folder and start the server on a unix
    /// socket there.
    pub fn start() -> PgCluster {
        let bin = server_bin_dir();
        let folder = tempfile::Builder::new()
            .prefix("sifhub-pg-")
            .tempdir()
            .expect("create a temporary folder for the postgresql cluster");
        let run_as = if is_root() {
            // initdb refuses to run as root: hand the folder to postgres.
            let uid = id_of("-u");
            let gid = id_of("-g");
            std::os::unix::fs::chown(folder.path(), Some(uid), Some(gid))
                .expect("chown the cluster folder to postgres");
            vec![
                "runuser".to_owned(),
                "-u".to_owned(),
                "postgres".to_owned(),
                "--".to_owned(),
            ]
        } else {
            Vec::new()
        };
        fs::set_permissions(folder.path(), fs::Permissions::from_mode(0o700))
            .expect("restrict the cluster folder");
        let data = folder.path().join("data");
        let port = free_port();
        let cluster = PgCluster {
            bin,
            folder,
            port,
            run_as,
            watchdog: Mutex::new(None),
        };

        cluster.run_checked(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--auth=trust".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--locale=C".as_ref(),
                "--no-sync".as_ref(),
            ],
        );
        // Durability is worthless for a throwaway cluster; speed is not.
        let server_options = format!(
            "-k {} -p {port} -c listen_addresses='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            cluster.socket_dir().display()
        );
        let log = cluster.socket_dir().join("server.log");
        let start = cluster.run(
            "pg_ctl",
            &[
                "start".as_ref(),
                "-D".as_ref(),
                data.as_os_str(),
                "-w".as_ref(),
                "-t".as_ref(),
                "120".as_ref(),
                "-l".as_ref(),
                log.as_os_str(),
                "-o".as_ref(),
                server_options.as_ref(),
            ],
        );
        if !start.status.success() {
            let server_log = fs::read_to_string(&log).unwrap_or_default();
            panic!(
                "pg_ctl start failed ({}):\n{}{}\nserver log:\n{server_log}",
                start.status,
                String::from_utf8_lossy(&start.stdout),
                String::from_utf8_lossy(&start.stderr)
            );
        }
        cluster.spawn_watchdog();
        cluster
    }

    /// Stops the server and removes the folder if this process dies
    /// without dropping the cluster (a panic in a static, SIGKILL).
    fn spawn_watchdog(&self) {
        let script = format!(
            "while kill -0 {parent} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf '{folder}'",
            parent = std::process::id(),
            stop = self.shell_command("pg_ctl", &format!("stop -D '{}' -m immediate", self.data_dir().display())),
            folder = self.folder.path().display(),
        );
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the postgresql watchdog");
        *self.watchdog.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
    }

    fn shell_command(&self, tool: &str, args: &str) -> String {
        let mut words = self.run_as.clone();
        words.push(self.bin.join(tool).display().to_string());
        format!("{} {args}", words.join(" "))
    }

    /// The folder holding the server's unix socket.
    pub fn socket_dir(&self) -> &Path {
        self.folder.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.folder.path().join("data")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `name` (which need not exist).
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgres://postgres@localhost:{}/{name}?host={}",
            self.port,
            self.socket_dir().display()
        )
    }

    /// Creates a database named after the test (plus a counter, so one
    /// test may ask twice) and returns its URL.
    pub fn create_database(&self, test_name: &str) -> String {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let mut name: String = test_name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        name = format!(
            "t_{name}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let port = self.port.to_string();
        let out = Command::new(self.bin.join("createdb"))
            .arg("-h")
            .arg(self.socket_dir())
            .args(["-p", &port, "-U", "postgres", &name])
            .output()
            .expect("run createdb");
        assert!(
            out.status.success(),
            "createdb {name} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        self.url(&name)
    }

    fn run(&self, tool: &str, args: &[&std::ffi::OsStr]) -> Output {
        let mut command = match self.run_as.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(self.bin.join(tool));
                c
            }
            None => Command::new(self.bin.join(tool)),
        };
        // The server inherits the working folder; root's may be closed to postgres.
        command
            .args(args)
            .current_dir(self.folder.path())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {tool}: {e}"))
    }

    fn run_checked(&self, tool: &str, args: &[&std::ffi::OsStr]) {
        let out = self.run(tool, args);
        assert!(
            out.status.success(),
            "{tool} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.data_dir();
        let _ = self.run(
            "pg_ctl",
            &[
                "stop".as_ref(),
                "-D".as_ref(),
                data.as_os_str(),
                "-m".as_ref(),
                "fast".as_ref(),
                "-w".as_ref(),
            ],
        );
        if let Some(mut watchdog) = self
            .watchdog
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

/// `/usr/lib/postgresql/<newest>/bin`, where Debian puts the server tools.
fn server_bin_dir() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL server not found in /usr/lib/postgresql/*/bin: install the Debian package postgresql (scripts/test.sh does)"
        ),
    }
}

fn is_root() -> bool {
    // The owner of /proc/self is this process's effective user.
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn id_of(flag: &str) -> u32 {
    let out = Command::new("id")
        .args([flag, "postgres"])
        .output()
        .expect("run id");
    assert!(
        out.status.success(),
        "no postgres user: install the Debian package postgresql (scripts/test.sh does)"
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("numeric id of postgres")
}

/// A port nobody listens on now; it names the socket file.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}
