//! The hub's database: SQLite for a hub on one machine, PostgreSQL at scale,
//! behind one [`Db`] handle whose store functions run on both.
//!
//! # How one set of queries runs on two backends
//!
//! [`Db`] wraps either a `SqlitePool` or a `PgPool`, and the private
//! `with_pool!` macro expands each store function's query once per backend.
//! The SQL text is written once: sqlx's SQLite driver reads `$1`-style
//! placeholders as PostgreSQL does, and the schema keeps every column a type
//! both backends decode the same way (`BIGINT` ids and unix-millisecond
//! times, `BOOLEAN`, `TEXT`; JSON is `JSONB` on PostgreSQL and `TEXT` on
//! SQLite, both read through `sqlx::types::Json`). Where the backends really
//! differ — claiming a queued job uses `FOR UPDATE SKIP LOCKED` on PostgreSQL
//! only — the query says so in one `match`.
//!
//! We chose this over sqlx's `AnyPool`: `Any` erases types to a small common
//! set (no JSON, booleans read back from SQLite as integers, no per-backend
//! SQL), and its migrator would still need one folder per backend. The enum
//! keeps native types and native migrations at the cost of compiling each
//! query twice.
//!
//! # Schema and migrations
//!
//! `migrations/sqlite` and `migrations/postgres` hold the same numbered
//! changes, embedded in the binary. [`Db::connect`] applies what is missing
//! before returning; `sifhub migrate` does only that and prints it.
//!
//! SQLite runs in WAL mode (readers never wait for the writer) with a busy
//! timeout (concurrent writers queue instead of failing) and foreign keys
//! on. Multi-statement writes begin with `BEGIN IMMEDIATE` there, so a
//! transaction never has to upgrade a read lock, which SQLite may refuse
//! without waiting.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions as _, Connection as _};

mod access;
mod build_logs;
mod catalog;
mod container_images;
mod deliveries;
mod images;
mod library;
mod listings;
mod migrate;
mod registry_tokens;
mod scans;
mod tokens;
mod views;

pub(crate) use access::{visibility_binds, visible_sql};
pub use access::{Permission, Session};
pub(crate) use catalog::{
    attach_repository_in, count_recipes_in, delete_installation_in, detach_repository_in,
    find_recipe_for_target_in, insert_repository_in, move_recipe_in, set_default_branch_in,
    upsert_installation_in, upsert_recipe_in,
};
pub use catalog::{
    Container, Installation, NewRepository, NewUser, Recipe, Repository, RepositorySettings, User,
};
pub use container_images::TagAndImage;
pub use deliveries::WebhookDelivery;
pub(crate) use deliveries::{record_delivery_in, set_delivery_outcome_in};
pub(crate) use images::{check_digest, image_size, insert_image_in, set_tag_in, UPSERT_TAG};
pub use images::{Image, NewImage, StoredImage, Tag, TagChange, TagHistoryEntry};
pub use library::{FoundContainer, LibraryTag, LibraryUpload, LibraryUploadPart};
pub use listings::{CollectionRow, HistoryRow};
pub use migrate::AppliedMigration;
pub use scans::RepositoryScan;
pub(crate) use scans::{finish_scan_in, request_scan_in};
pub use tokens::{hash_token, ApiToken, NewToken, TokenScope};
pub(crate) use views::{catalog_search_text, note_tag_move_in};
pub use views::{
    BuildDetail, BuildEntry, BuildFilter, BuildListEntry, CatalogEntry, CatalogOrder,
    ContainerEntry, TagMoveEntry, TaggedImage, CATALOG_COUNT_CAP,
};

/// How long a SQLite writer waits for another before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections per pool: enough for a hub's request handlers and workers.
const MAX_CONNECTIONS: u32 = 10;
/// How long a query waits for a free connection before failing.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("unsupported database url {url}: expected sqlite://PATH or postgres://USER@HOST/DB")]
    UnsupportedUrl { url: String },
    #[error("invalid database url {url}")]
    InvalidUrl {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot create the folder {path} for the sqlite database")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to the database at {url}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot migrate the {backend} database")]
    Migrate {
        backend: Backend,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error(
        "the database has migration {version}, which this sifhub does not know: a newer sifhub migrated it"
    )]
    UnknownMigration { version: i64 },
    #[error("database query failed: {action}")]
    Query {
        action: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("{what} {key} already exists")]
    AlreadyExists { what: &'static str, key: String },
    #[error("invalid {what} {value:?}: {message}")]
    InvalidValue {
        what: &'static str,
        value: String,
        message: &'static str,
    },
    #[error("tag {tag} of container {container_id} is frozen: it keeps image {image_id}")]
    TagFrozen {
        container_id: i64,
        tag: String,
        image_id: i64,
    },
}

impl DbError {
    /// Wraps a query error with what the query was for.
    pub(crate) fn query(action: &'static str) -> impl FnOnce(sqlx::Error) -> DbError {
        move |source| DbError::Query { action, source }
    }
}

/// Whether a query failed on a unique constraint (a row that already exists).
pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(e) if e.is_unique_violation())
}

/// Which database a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        })
    }
}

/// A point in time as the database stores it: unix milliseconds.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, sqlx::Type,
)]
#[sqlx(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_unix_millis(millis: i64) -> Self {
        Self(millis)
    }

    pub const fn unix_millis(self) -> i64 {
        self.0
    }

    /// The system clock's time (the queue reads time through its `Clock`).
    pub fn now() -> Self {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Self(millis)
    }

    /// `self + duration`, saturating at the far future.
    pub fn plus(self, duration: Duration) -> Self {
        let millis = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(millis))
    }

    /// `self - duration`, saturating at the far past.
    pub fn minus(self, duration: Duration) -> Self {
        let millis = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        Self(self.0.saturating_sub(millis))
    }
}

/// A connection pool on SQLite or PostgreSQL; cheap to clone.
#[derive(Debug, Clone)]
pub struct Db {
    pool: Pool,
    /// SQLite takes one writer at a time, and writers that find the lock
    /// taken sleep and retry (the busy timeout): under load some retry for
    /// hundreds of milliseconds while others get in. This process's write
    /// transactions queue here instead, first come first served.
    sqlite_writers: Option<Arc<tokio::sync::Mutex<()>>>,
}

#[derive(Debug, Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the backend's pool. The body is
/// expanded once per backend, so one query text serves both.
macro_rules! with_pool {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db.pool() {
            $crate::db::Pool::Sqlite($pool) => $body,
            $crate::db::Pool::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

/// Defines a string-valued enum stored as `TEXT` on both backends.
macro_rules! text_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::db::UnknownVariant;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::db::UnknownVariant {
                        what: stringify!($name),
                        value: text.to_owned(),
                    }),
                }
            }
        }

        impl<DB: sqlx::Database> sqlx::Type<DB> for $name
        where
            String: sqlx::Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <String as sqlx::Type<DB>>::type_info()
            }

            fn compatible(ty: &DB::TypeInfo) -> bool {
                <String as sqlx::Type<DB>>::compatible(ty)
            }
        }

        impl<'q, DB: sqlx::Database> sqlx::Encode<'q, DB> for $name
        where
            String: sqlx::Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut DB::ArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                self.as_str().to_owned().encode(buf)
            }
        }

        impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for $name
        where
            String: sqlx::Decode<'r, DB>,
        {
            fn decode(value: DB::ValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <String as sqlx::Decode<'r, DB>>::decode(value)?;
                Ok(text.parse::<$name>()?)
            }
        }
    };
}
pub(crate) use text_enum;

/// A `TEXT` column held a value its enum does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown {what} {value:?} in the database")]
pub struct UnknownVariant {
    pub what: &'static str,
    pub value: String,
}

/// `BEGIN IMMEDIATE` on SQLite (take the write lock first, waiting with
/// the busy timeout, rather than fail when upgrading later); a plain
/// `BEGIN` on PostgreSQL, whose row locks need no such care.
pub(crate) trait BeginWrite {
    type Database: sqlx::Database;
    fn begin_write(
        &self,
    ) -> impl std::future::Future<
        Output = Result<sqlx::Transaction<'static, Self::Database>, sqlx::Error>,
    > + Send;
}

impl BeginWrite for SqlitePool {
    type Database = sqlx::Sqlite;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

impl BeginWrite for PgPool {
    type Database = sqlx::Postgres;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.begin().await
    }
}

/// A write transaction on either backend, for work that spans several
/// store functions (a webhook delivery, the recipes it finds and the builds
/// it queues commit together). Begun with `BEGIN IMMEDIATE` on SQLite,
/// holding the process's writer turn (see [`Db`]) until it ends.
pub struct WriteTx(
    pub(crate) TxInner,
    #[allow(
        dead_code,
        reason = "held for its drop: the writer turn ends with the transaction"
    )]
    Option<tokio::sync::OwnedMutexGuard<()>>,
);

pub(crate) enum TxInner {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

/// Runs `$body` with `$conn` bound to the transaction's connection
/// (`&mut *$conn` is an executor), expanded once per backend.
macro_rules! with_tx {
    ($tx:expr, |$conn:ident| $body:expr) => {
        match &mut $tx.0 {
            $crate::db::TxInner::Sqlite($conn) => $body,
            $crate::db::TxInner::Postgres($conn) => $body,
        }
    };
}
pub(crate) use with_tx;

impl WriteTx {
    pub async fn commit(self) -> Result<(), DbError> {
        // The writer turn (`self.1`) is released after the commit.
        match self.0 {
            TxInner::Sqlite(tx) => tx.commit().await,
            TxInner::Postgres(tx) => tx.commit().await,
        }
        .map_err(DbError::query("commit"))
    }
}

impl Db {
    /// Opens the database at `url` (`sqlite://PATH`, `postgres://…`) and
    /// applies the migrations it lacks. A SQLite file and its folder are
    /// created when missing.
    pub async fn connect(url: &str) -> Result<Self, DbError> {
        let db = Self::open(url).await?;
        db.migrate().await?;
        Ok(db)
    }

    /// Opens the database without migrating it.
    pub async fn open(url: &str) -> Result<Self, DbError> {
        if url.starts_with("sqlite:") {
            Self::open_sqlite(url).await
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::open_postgres(url).await
        } else {
            Err(DbError::UnsupportedUrl {
                url: redact_url(url),
            })
        }
    }

    async fn open_sqlite(url: &str) -> Result<Self, DbError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|source| DbError::InvalidUrl {
                url: redact_url(url),
                source,
            })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(SQLITE_BUSY_TIMEOUT)
            .foreign_keys(true);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let mut pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT);
        if in_memory {
            // An in-memory database lives as long as one connection to it.
            pool = pool
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        } else if let Some(folder) = options.get_filename().parent() {
            if !folder.as_os_str().is_empty() {
                std::fs::create_dir_all(folder).map_err(|source| DbError::CreateDir {
                    path: folder.to_owned(),
                    source,
                })?;
            }
        }
        let pool = pool
            .connect_with(options)
            .await
            .map_err(|source| DbError::Connect {
                url: redact_url(url),
                source,
            })?;
        Ok(Self {
            pool: Pool::Sqlite(pool),
            sqlite_writers: Some(Arc::new(tokio::sync::Mutex::new(()))),
        })
    }

    async fn open_postgres(url: &str) -> Result<Self, DbError> {
        let options = PgConnectOptions::from_str(url).map_err(|source| DbError::InvalidUrl {
            url: redact_url(url),
            source,
        })?;
        let connect_error = |source| DbError::Connect {
            url: redact_url(url),
            source,
        };
        // One connection first: the pool retries a refused connection until
        // its timeout and then reports only the timeout, not the cause.
        let probe = options.connect().await.map_err(connect_error)?;
        let _ = probe.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(connect_error)?;
        Ok(Self {
            pool: Pool::Postgres(pool),
            sqlite_writers: None,
        })
    }

    /// Begins a [`WriteTx`]; dropping it uncommitted rolls it back.
    pub async fn begin_write(&self) -> Result<WriteTx, sqlx::Error> {
        let turn = match &self.sqlite_writers {
            Some(writers) => Some(writers.clone().lock_owned().await),
            None => None,
        };
        let tx = match &self.pool {
            Pool::Sqlite(pool) => TxInner::Sqlite(pool.begin_write().await?),
            Pool::Postgres(pool) => TxInner::Postgres(pool.begin_write().await?),
        };
        Ok(WriteTx(tx, turn))
    }

    /// One round trip, for readiness checks.
    pub async fn ping(&self) -> Result<(), DbError> {
        let result = match &self.pool {
            Pool::Sqlite(pool) => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()),
            Pool::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()),
        };
        result.map_err(|source| DbError::Query {
            action: "ping",
            source,
        })
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Waits for the connections to close; later queries fail.
    pub async fn close(&self) {
        with_pool!(self, |pool| pool.close().await)
    }
}

/// `url` with any password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact_url("postgres://hub:s3cret@db.example.org:5432/sifhub"),
            "postgres://hub:***@db.example.org:5432/sifhub"
        );
        assert_eq!(
            redact_url("postgres://hub@db/sifhub"),
            "postgres://hub@db/sifhub"
        );
        assert_eq!(
            redact_url("sqlite://./data/sifhub.db"),
            "sqlite://./data/sifhub.db"
        );
    }

    #[test]
    fn timestamps_saturate() {
        let t = Timestamp::from_unix_millis(i64::MAX - 1);
        assert_eq!(t.plus(Duration::from_secs(1)).unix_millis(), i64::MAX);
        assert_eq!(
            Timestamp::from_unix_millis(1_000).plus(Duration::from_millis(500)),
            Timestamp::from_unix_millis(1_500)
        );
    }

    #[tokio::test]
    async fn unsupported_urls_are_refused_by_name() {
        let err = Db::open("mysql://root@localhost/hub").await.unwrap_err();
        assert!(
            err.to_string().contains("mysql://root@localhost/hub"),
            "{err}"
        );
    }
}
