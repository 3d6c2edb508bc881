//! The hub's configuration: one struct with defaults that work for local use,
//! loaded from a TOML file and overridden field by field by `SIFHUB_*`
//! environment variables. Tests set fields in code.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

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

#[derive(Debug, Clone, Deserialize, PartialEq)]
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
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            data_dir: PathBuf::from("./sifhub-data"),
            database_url: None,
            log: "info".to_owned(),
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
