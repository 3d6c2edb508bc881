//! Schema migrations, embedded from `migrations/<backend>/` at build time.
//!
//! This follows sqlx's own `Migrator::run` step by step (lock, ensure the
//! bookkeeping table, refuse a dirty or altered history, apply what is
//! missing, unlock) so it can report which migrations it applied.

use std::collections::HashMap;

use sqlx::migrate::{Migrate, MigrateError, Migrator};

use super::{with_pool, Backend, Db, DbError};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");

/// sqlx's bookkeeping table (its default name, so its CLI reads it too).
const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

/// A migration applied by [`Db::migrate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    pub version: i64,
    pub description: String,
}

impl std::fmt::Display for AppliedMigration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04} {}", self.version, self.description)
    }
}

impl Db {
    /// Applies the migrations the database lacks, in order, and returns
    /// them; an up-to-date database gives an empty list. On PostgreSQL,
    /// hubs starting together are serialized by sqlx's advisory lock; a
    /// SQLite file belongs to one hub process, so it needs none.
    pub async fn migrate(&self) -> Result<Vec<AppliedMigration>, DbError> {
        let backend = self.backend();
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        let wrap = |source| DbError::Migrate { backend, source };
        with_pool!(self, |pool| {
            let mut conn = pool
                .acquire()
                .await
                .map_err(|e| wrap(MigrateError::Execute(e)))?;
            apply_missing(migrator, &mut *conn, wrap).await
        })
    }

    /// Every migration this build of sifhub knows for the backend.
    pub fn known_migrations(&self) -> Vec<AppliedMigration> {
        let migrator = match self.backend() {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator
            .iter()
            .filter(|m| !m.migration_type.is_down_migration())
            .map(|m| AppliedMigration {
                version: m.version,
                description: m.description.to_string(),
            })
            .collect()
    }
}

async fn apply_missing<C: Migrate>(
    migrator: &Migrator,
    conn: &mut C,
    wrap: impl Fn(MigrateError) -> DbError,
) -> Result<Vec<AppliedMigration>, DbError> {
    conn.lock().await.map_err(&wrap)?;
    let result = apply_locked(migrator, conn, &wrap).await;
    // Unlock even after a failure so the next attempt is not blocked; the
    // first error is the one worth reporting.
    let unlocked = conn.unlock().await.map_err(&wrap);
    let applied = result?;
    unlocked?;
    Ok(applied)
}

async fn apply_locked<C: Migrate>(
    migrator: &Migrator,
    conn: &mut C,
    wrap: &impl Fn(MigrateError) -> DbError,
) -> Result<Vec<AppliedMigration>, DbError> {
    conn.ensure_migrations_table(MIGRATIONS_TABLE)
        .await
        .map_err(wrap)?;
    if let Some(version) = conn.dirty_version(MIGRATIONS_TABLE).await.map_err(wrap)? {
        return Err(wrap(MigrateError::Dirty(version)));
    }
    let already: HashMap<i64, _> = conn
        .list_applied_migrations(MIGRATIONS_TABLE)
        .await
        .map_err(wrap)?
        .into_iter()
        .map(|m| (m.version, m.checksum))
        .collect();
    // A version we do not know means a newer sifhub ran here: refuse to
    // run an older schema's code against it.
    if let Some(&version) = already
        .keys()
        .filter(|v| !migrator.iter().any(|m| m.version == **v))
        .max()
    {
        return Err(DbError::UnknownMigration { version });
    }
    let mut applied = Vec::new();
    for migration in migrator
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
    {
        match already.get(&migration.version) {
            Some(checksum) if *checksum != migration.checksum => {
                return Err(wrap(MigrateError::VersionMismatch(migration.version)));
            }
            Some(_) => {}
            None => {
                conn.apply(MIGRATIONS_TABLE, migration)
                    .await
                    .map_err(wrap)?;
                applied.push(AppliedMigration {
                    version: migration.version,
                    description: migration.description.to_string(),
                });
            }
        }
    }
    Ok(applied)
}
