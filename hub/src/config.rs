//! The hub's configuration: one struct with defaults that work for local use,
//! loaded from a TOML file and overridden field by field by `SIFHUB_*`
//! environment variables. Tests set fields in code.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// GitHub's REST API, the default of `github_api_url`.
pub const GITHUB_API_URL: &str = "https://api.github.com";
/// GitHub's web address, the default of `github_web_url`.
pub const GITHUB_WEB_URL: &str = "https://github.com";

/// A secret from the configuration: never printed (`Debug` shows
/// `"<redacted>"`), so logging a `Config` leaks nothing.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value {value:?} for {variable}: {message}")]
    Env {
        variable: &'static str,
        value: String,
        message: String,
    },
}

#[derive(Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server binds (`SIFHUB_LISTEN`).
    pub listen: SocketAddr,
    /// URL users reach the hub at, used in links and pull commands
    /// (`SIFHUB_PUBLIC_URL`); derived from `listen` when unset.
    pub public_url: Option<String>,
    /// Folder holding the SQLite file and the storage folder (`SIFHUB_DATA_DIR`).
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://USER:PASSWORD@HOST/DB`
    /// (`SIFHUB_DATABASE_URL`); `sqlite://<data_dir>/sifhub.db` when unset.
    pub database_url: Option<String>,
    /// `tracing` filter for the log (`SIFHUB_LOG`).
    pub log: String,
    /// Where images and logs go (`SIFHUB_STORAGE_URL`): `file:///PATH`, or
    /// `s3://BUCKET/PREFIX` with the usual `AWS_*` variables (endpoint
    /// included); `file://<data_dir>/storage` when unset.
    pub storage_url: Option<String>,
    /// GitHub's REST API (`SIFHUB_GITHUB_API_URL`): GitHub Enterprise's
    /// `https://HOST/api/v3`, or a stand-in in tests.
    pub github_api_url: String,
    /// GitHub's web address, where browsers sign in and install the App
    /// (`SIFHUB_GITHUB_WEB_URL`): GitHub Enterprise's `https://HOST`.
    pub github_web_url: String,
    /// The App's URL name, for its "install" link on the connect page
    /// (`SIFHUB_GITHUB_APP_SLUG`).
    pub github_app_slug: Option<String>,
    /// Secret of the GitHub App's webhook (`SIFHUB_GITHUB_WEBHOOK_SECRET`).
    pub github_webhook_secret: Option<Secret>,
    /// The GitHub App's id (`SIFHUB_GITHUB_APP_ID`).
    pub github_app_id: Option<u64>,
    /// The GitHub App's private key, PEM (`SIFHUB_GITHUB_APP_KEY_FILE`).
    pub github_app_key_file: Option<PathBuf>,
    /// OAuth client of the GitHub App, for signing in to the web UI
    /// (`SIFHUB_GITHUB_CLIENT_ID`, `SIFHUB_GITHUB_CLIENT_SECRET`).
    pub github_client_id: Option<String>,
    pub github_client_secret: Option<Secret>,
    /// Token for plain webhook mode (`SIFHUB_GITHUB_TOKEN`): fetches private
    /// sources and posts commit statuses. Without it, public sources only
    /// and no statuses.
    pub github_token: Option<Secret>,
    /// Builds the in-process worker runs at once (`SIFHUB_WORKER_SLOTS`);
    /// 0 runs none, for hubs whose builds run on `sifhub worker` machines.
    pub worker_slots: usize,
    /// How long a worker's claim on a build lasts without a heartbeat
    /// (`SIFHUB_BUILD_LEASE_SECONDS`); workers renew at a third of it. A
    /// worker that dies is noticed this long after its last heartbeat.
    pub build_lease_seconds: u64,
    /// How long a worker's claim request waits for a build before the hub
    /// answers "nothing" (`SIFHUB_CLAIM_WAIT_SECONDS`).
    pub claim_wait_seconds: u64,
    /// How often a waiting claim looks at the queue for builds queued by
    /// other hubs (`SIFHUB_CLAIM_POLL_MILLIS`).
    pub claim_poll_millis: u64,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("public_url", &self.public_url)
            .field("data_dir", &self.data_dir)
            .field(
                "database_url",
                &self.database_url.as_deref().map(crate::db::redact_url),
            )
            .field("log", &self.log)
            .field(
                "storage_url",
                &self.storage_url.as_deref().map(crate::db::redact_url),
            )
            .field("github_api_url", &self.github_api_url)
            .field("github_web_url", &self.github_web_url)
            .field("github_app_slug", &self.github_app_slug)
            .field("github_webhook_secret", &self.github_webhook_secret)
            .field("github_app_id", &self.github_app_id)
            .field("github_app_key_file", &self.github_app_key_file)
            .field("github_client_id", &self.github_client_id)
            .field("github_client_secret", &self.github_client_secret)
            .field("github_token", &self.github_token)
            .field("worker_slots", &self.worker_slots)
            .field("build_lease_seconds", &self.build_lease_seconds)
            .field("claim_wait_seconds", &self.claim_wait_seconds)
            .field("claim_poll_millis", &self.claim_poll_millis)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            data_dir: PathBuf::from("./sifhub-data"),
            database_url: None,
            log: "info".to_owned(),
            storage_url: None,
            github_api_url: GITHUB_API_URL.to_owned(),
            github_web_url: GITHUB_WEB_URL.to_owned(),
            github_app_slug: None,
            github_webhook_secret: None,
            github_app_id: None,
            github_app_key_file: None,
            github_client_id: None,
            github_client_secret: None,
            github_token: None,
            worker_slots: 1,
            build_lease_seconds: 60,
            claim_wait_seconds: 25,
            claim_poll_millis: 1000,
        }
    }
}

impl Config {
    /// Defaults, then the TOML file if given, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut config = match file {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })
    }

    /// Overrides fields from `SIFHUB_*` variables, read through `lookup` so
    /// tests need not touch the process environment.
    pub fn apply_env(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        if let Some(value) = lookup("SIFHUB_LISTEN") {
            self.listen =
                value
                    .parse()
                    .map_err(|e: std::net::AddrParseError| ConfigError::Env {
                        variable: "SIFHUB_LISTEN",
                        value: value.clone(),
                        message: format!("{e} (expected HOST:PORT, e.g. 127.0.0.1:8080)"),
                    })?;
        }
        if let Some(value) = lookup("SIFHUB_PUBLIC_URL") {
            if !(value.starts_with("http://") || value.starts_with("https://")) {
                return Err(ConfigError::Env {
                    variable: "SIFHUB_PUBLIC_URL",
                    value,
                    message: "expected an http:// or https:// url".to_owned(),
                });
            }
            self.public_url = Some(value.trim_end_matches('/').to_owned());
        }
        if let Some(value) = lookup("SIFHUB_DATA_DIR") {
            self.data_dir = PathBuf::from(value);
        }
        if let Some(value) = lookup("SIFHUB_DATABASE_URL") {
            let known = ["sqlite:", "postgres://", "postgresql://"];
            if !known.iter().any(|scheme| value.starts_with(scheme)) {
                return Err(ConfigError::Env {
                    variable: "SIFHUB_DATABASE_URL",
                    value,
                    message: "expected a sqlite://PATH or postgres://USER@HOST/DB url".to_owned(),
                });
            }
            self.database_url = Some(value);
        }
        if let Some(value) = lookup("SIFHUB_LOG") {
            self.log = value;
        }
        if let Some(value) = lookup("SIFHUB_STORAGE_URL") {
            if !(value.starts_with("file://") || value.starts_with("s3://")) {
                return Err(ConfigError::Env {
                    variable: "SIFHUB_STORAGE_URL",
                    value,
                    message: "expected file:///PATH or s3://BUCKET/PREFIX".to_owned(),
                });
            }
            self.storage_url = Some(value);
        }
        if let Some(value) = lookup("SIFHUB_GITHUB_API_URL") {
            if !(value.starts_with("http://") || value.starts_with("https://")) {
                return Err(ConfigError::Env {
                    variable: "SIFHUB_GITHUB_API_URL",
                    value,
                    message: "expected an http:// or https:// url".to_owned(),
                });
            }
            self.github_api_url = value.trim_end_matches('/').to_owned();
        }
        if let Some(value) = lookup("SIFHUB_GITHUB_WEB_URL") {
            if !value.starts_with("http://") && !value.starts_with("https://") {
                return Err(ConfigError::Env {
                    variable: "SIFHUB_GITHUB_WEB_URL",
                    value,
                    message: "expected an http:// or https:// URL".to_owned(),
                });
            }
            self.github_web_url = value.trim_end_matches('/').to_owned();
        }
        if let Some(value) = lookup("SIFHUB_GITHUB_APP_SLUG") {
            self.github_app_slug = Some(value);
        }
        if let Some(value) = lookup("SIFHUB_GITHUB_WEBHOOK_SECRET") {
            self.github_webhook_secret = Some(Secret(value));
        }
        if let Some(value) = lookup("SIFHUB_GITHUB_APP_ID") {
            self.github_app_id =
                Some(
                    value
                        .parse()
                        .map_err(|e: std::num::ParseIntError| ConfigError::Env {
                            variable: "SIFHUB_GITHUB_APP_ID",
                            value: value.clone(),
                            message: format!("{e} (expected the App's numeric id)"),
                        })?,
                );
        }
        if let Some(value) = lookup("SIFHUB_GITHUB_APP_KEY_FILE") {
            self.github_app_key_file = Some(PathBuf::from(value));
        }
        if let Some(value) = lookup("SIFHUB_GITHUB_CLIENT_ID") {
            self.github_client_id = Some(value);
        }
        if let Some(value) = lookup("SIFHUB_GITHUB_CLIENT_SECRET") {
            self.github_client_secret = Some(Secret(value));
        }
        if let Some(value) = lookup("SIFHUB_GITHUB_TOKEN") {
            self.github_token = Some(Secret(value));
        }
        if let Some(value) = lookup("SIFHUB_WORKER_SLOTS") {
            self.worker_slots =
                value
                    .parse()
                    .map_err(|e: std::num::ParseIntError| ConfigError::Env {
                        variable: "SIFHUB_WORKER_SLOTS",
                        value: value.clone(),
                        message: format!("{e} (expected a number of builds, 0 for none)"),
                    })?;
        }
        for (variable, field, unit) in [
            (
                "SIFHUB_BUILD_LEASE_SECONDS",
                &mut self.build_lease_seconds,
                "seconds",
            ),
            (
                "SIFHUB_CLAIM_WAIT_SECONDS",
                &mut self.claim_wait_seconds,
                "seconds",
            ),
            (
                "SIFHUB_CLAIM_POLL_MILLIS",
                &mut self.claim_poll_millis,
                "milliseconds",
            ),
        ] {
            if let Some(value) = lookup(variable) {
                *field = value
                    .parse()
                    .map_err(|e: std::num::ParseIntError| ConfigError::Env {
                        variable,
                        value: value.clone(),
                        message: format!("{e} (expected a number of {unit})"),
                    })?;
            }
        }
        Ok(())
    }

    /// The database to use: `database_url`, or the SQLite file in the data
    /// folder. Derived here, not at load, so it follows `data_dir` however
    /// that was set.
    pub fn resolved_database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => {
                let path = self.data_dir.join("sifhub.db");
                // sqlx percent-decodes the path: keep `%`, `?` and `#` literal.
                let path = path
                    .to_string_lossy()
                    .replace('%', "%25")
                    .replace('?', "%3F")
                    .replace('#', "%23");
                format!("sqlite://{path}")
            }
        }
    }

    /// Where uploaded images and logs live when storage is a local folder.
    pub fn storage_dir(&self) -> PathBuf {
        self.data_dir.join("storage")
    }

    /// The storage to use: `storage_url`, or the storage folder in the data
    /// folder.
    pub fn resolved_storage_url(&self) -> String {
        match &self.storage_url {
            Some(url) => url.clone(),
            None => {
                let dir = std::path::absolute(self.storage_dir()).unwrap_or(self.storage_dir());
                format!("file://{}", dir.display())
            }
        }
    }

    /// The URL links point at: `public_url`, or `http://<listen>`.
    pub fn resolved_public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.clone(),
            None => format!("http://{}", self.listen),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn defaults_work_for_local_use() {
        let config = Config::default();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.public_url, None);
        assert_eq!(config.storage_dir(), PathBuf::from("./sifhub-data/storage"));
        assert_eq!(
            config.resolved_database_url(),
            "sqlite://./sifhub-data/sifhub.db"
        );
    }

    #[test]
    fn database_url_follows_data_dir_unless_set() {
        let mut config = Config::default();
        config
            .apply_env(env(&[("SIFHUB_DATA_DIR", "/srv/hub")]))
            .unwrap();
        assert_eq!(
            config.resolved_database_url(),
            "sqlite:///srv/hub/sifhub.db"
        );
        config
            .apply_env(env(&[(
                "SIFHUB_DATABASE_URL",
                "postgres://hub@db.internal/sifhub",
            )]))
            .unwrap();
        assert_eq!(
            config.resolved_database_url(),
            "postgres://hub@db.internal/sifhub"
        );
        let err = config
            .apply_env(env(&[("SIFHUB_DATABASE_URL", "mysql://root@db/sifhub")]))
            .unwrap_err();
        assert!(err.to_string().contains("SIFHUB_DATABASE_URL"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sifhub.toml");
        std::fs::write(&path, "database_url = \"postgres://hub@db/sifhub\"\n").unwrap();
        let config = Config::from_file(&path).unwrap();
        assert_eq!(
            config.database_url.as_deref(),
            Some("postgres://hub@db/sifhub")
        );
    }

    #[test]
    fn environment_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sifhub.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:9000\"\ndata_dir = \"/srv/sifhub\"\n",
        )
        .unwrap();
        let mut config = Config::from_file(&path).unwrap();
        assert_eq!(config.listen.to_string(), "0.0.0.0:9000");
        config
            .apply_env(env(&[
                ("SIFHUB_DATA_DIR", "/data"),
                ("SIFHUB_PUBLIC_URL", "https://hub.example.org/"),
            ]))
            .unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/data"));
        assert_eq!(
            config.public_url.as_deref(),
            Some("https://hub.example.org")
        );
        assert_eq!(config.listen.to_string(), "0.0.0.0:9000");
    }

    #[test]
    fn github_and_worker_fields_come_from_the_environment() {
        let mut config = Config::default();
        assert_eq!(config.github_api_url, GITHUB_API_URL);
        assert_eq!(config.worker_slots, 1);
        config
            .apply_env(env(&[
                ("SIFHUB_GITHUB_API_URL", "http://127.0.0.1:9999/"),
                ("SIFHUB_GITHUB_WEBHOOK_SECRET", "s3cret-hook"),
                ("SIFHUB_GITHUB_APP_ID", "42"),
                ("SIFHUB_GITHUB_TOKEN", "ghp_s3cret"),
                ("SIFHUB_WORKER_SLOTS", "0"),
                ("SIFHUB_STORAGE_URL", "s3://bucket/prefix"),
            ]))
            .unwrap();
        assert_eq!(config.github_api_url, "http://127.0.0.1:9999");
        assert_eq!(config.github_app_id, Some(42));
        assert_eq!(config.worker_slots, 0);
        assert_eq!(config.build_lease_seconds, 60);
        config
            .apply_env(env(&[
                ("SIFHUB_BUILD_LEASE_SECONDS", "3"),
                ("SIFHUB_CLAIM_WAIT_SECONDS", "2"),
                ("SIFHUB_CLAIM_POLL_MILLIS", "100"),
            ]))
            .unwrap();
        assert_eq!(
            (
                config.build_lease_seconds,
                config.claim_wait_seconds,
                config.claim_poll_millis
            ),
            (3, 2, 100)
        );
        let err = config
            .apply_env(env(&[("SIFHUB_BUILD_LEASE_SECONDS", "soon")]))
            .unwrap_err();
        assert!(
            err.to_string().contains("SIFHUB_BUILD_LEASE_SECONDS"),
            "{err}"
        );
        assert_eq!(config.resolved_storage_url(), "s3://bucket/prefix");
        assert_eq!(
            config.github_token.as_ref().map(Secret::expose),
            Some("ghp_s3cret")
        );
        // Secrets never reach a log line.
        config.database_url = Some("postgres://hub:dbpass@db/sifhub".to_owned());
        let printed = format!("{config:?}");
        for secret in ["s3cret-hook", "ghp_s3cret", "dbpass"] {
            assert!(!printed.contains(secret), "{printed}");
        }
        let err = config
            .apply_env(env(&[("SIFHUB_WORKER_SLOTS", "many")]))
            .unwrap_err();
        assert!(err.to_string().contains("SIFHUB_WORKER_SLOTS"), "{err}");
        let err = config
            .apply_env(env(&[("SIFHUB_STORAGE_URL", "/srv/storage")]))
            .unwrap_err();
        assert!(err.to_string().contains("SIFHUB_STORAGE_URL"), "{err}");
    }

    #[test]
    fn the_example_config_reads_and_matches_the_defaults() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/sifhub.example.toml");
        let config = Config::from_file(&example).unwrap();
        assert_eq!(config, Config::default());
    }

    #[test]
    fn bad_values_name_the_variable_or_file() {
        let mut config = Config::default();
        let err = config
            .apply_env(env(&[("SIFHUB_LISTEN", "localhost")]))
            .unwrap_err();
        assert!(err.to_string().contains("SIFHUB_LISTEN"), "{err}");
        let err = config
            .apply_env(env(&[("SIFHUB_PUBLIC_URL", "hub.example.org")]))
            .unwrap_err();
        assert!(err.to_string().contains("SIFHUB_PUBLIC_URL"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "listen = 12\nnosuchkey = 1\n").unwrap();
        let err = Config::from_file(&path).unwrap_err();
        assert!(err.to_string().contains("bad.toml"), "{err}");
        let err = Config::from_file(&dir.path().join("missing.toml")).unwrap_err();
        assert!(err.to_string().contains("missing.toml"), "{err}");
    }
}
