//! Repository scans: durable requests to list a repository's tree at a
//! commit and build every recipe found (see `crate::webhook::scan`).

use super::{with_pool, with_tx, Db, DbError, Timestamp, WriteTx};

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RepositoryScan {
    pub id: i64,
    pub repository_id: i64,
    pub commit_sha: String,
    pub branch: String,
    /// The webhook delivery that asked for it.
    pub delivery_id: Option<String>,
    pub requested_at: Timestamp,
    /// Failed tries so far.
    pub attempts: i64,
    /// NULL while pending.
    pub done_at: Option<Timestamp>,
    pub outcome: Option<String>,
}

impl Db {
    /// Scans not done yet, oldest first.
    pub async fn pending_scans(&self) -> Result<Vec<RepositoryScan>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT * FROM repository_scans WHERE done_at IS NULL ORDER BY requested_at, id",
            )
            .fetch_all(pool)
            .await
        })
        .map_err(DbError::query("list pending repository scans"))
    }

    pub async fn find_scan(&self, id: i64) -> Result<Option<RepositoryScan>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as("SELECT * FROM repository_scans WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await
        })
        .map_err(DbError::query("find repository scan"))
    }

    /// Counts a failed try; with `give_up` the scan is done (failed).
    pub async fn fail_scan(
        &self,
        id: i64,
        error: &str,
        give_up: bool,
        now: Timestamp,
    ) -> Result<(), DbError> {
        with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE repository_scans SET attempts = attempts + 1, outcome = $2,
                     done_at = CASE WHEN $3 THEN $4 ELSE NULL END
                 WHERE id = $1",
            )
            .bind(id)
            .bind(error)
            .bind(give_up)
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ())
        })
        .map_err(DbError::query("record failed repository scan"))
    }
}

/// Requests a scan inside a caller's transaction, for a webhook delivery
/// or (`None`) a repository enabled on the connect page; returns its id.
pub(crate) async fn request_scan_in(
    tx: &mut WriteTx,
    repository_id: i64,
    commit_sha: &str,
    branch: &str,
    delivery_id: Option<&str>,
    now: Timestamp,
) -> Result<i64, sqlx::Error> {
    with_tx!(tx, |conn| {
        sqlx::query_scalar(
            "INSERT INTO repository_scans (repository_id, commit_sha, branch, delivery_id,
                 requested_at)
             VALUES ($1, $2, $3, $4, $5)
             RETURNING id",
        )
        .bind(repository_id)
        .bind(commit_sha)
        .bind(branch)
        .bind(delivery_id)
        .bind(now)
        .fetch_one(&mut **conn)
        .await
    })
}

/// Marks a pending scan done inside a caller's transaction; false when it
/// was done already (another scanner finished it first).
pub(crate) async fn finish_scan_in(
    tx: &mut WriteTx,
    id: i64,
    outcome: &str,
    now: Timestamp,
) -> Result<bool, sqlx::Error> {
    with_tx!(tx, |conn| {
        sqlx::query(
            "UPDATE repository_scans SET done_at = $2, outcome = $3
             WHERE id = $1 AND done_at IS NULL",
        )
        .bind(id)
        .bind(now)
        .bind(outcome)
        .execute(&mut **conn)
        .await
        .map(|done| done.rows_affected() == 1)
    })
}
