//! Build log chunks as workers stream them: stored by (build, attempt,
//! sequence number) so a retried chunk lands once, read back in order when
//! the build ends and the hub writes the whole log to storage.

use super::{with_pool, Db, DbError, Timestamp};

impl Db {
    /// Stores a chunk of a build attempt's log; false when the chunk with
    /// this sequence number was already stored (the first one is kept).
    pub async fn append_log_chunk(
        &self,
        build_id: i64,
        attempt: i64,
        seq: i64,
        text: &str,
        now: Timestamp,
    ) -> Result<bool, DbError> {
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO build_log_chunks (build_id, attempt, seq, text, created_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (build_id, attempt, seq) DO NOTHING",
            )
            .bind(build_id)
            .bind(attempt)
            .bind(seq)
            .bind(text)
            .bind(now)
            .execute(pool)
            .await
            .map(|done| done.rows_affected() > 0)
        })
        .map_err(DbError::query("append build log chunk"))
    }

    /// The log of a build attempt so far: its chunks joined in sequence order.
    pub async fn build_log_text(&self, build_id: i64, attempt: i64) -> Result<String, DbError> {
        let chunks: Vec<String> = with_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT text FROM build_log_chunks WHERE build_id = $1 AND attempt = $2
                 ORDER BY seq",
            )
            .bind(build_id)
            .bind(attempt)
            .fetch_all(pool)
            .await
        })
        .map_err(DbError::query("read build log chunks"))?;
        Ok(chunks.concat())
    }

    /// The chunks of a build attempt after sequence number `after_seq`, in
    /// order, as `(seq, text)`: what a live log viewer has not seen yet.
    pub async fn log_chunks_after(
        &self,
        build_id: i64,
        attempt: i64,
        after_seq: i64,
    ) -> Result<Vec<(i64, String)>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT seq, text FROM build_log_chunks
                 WHERE build_id = $1 AND attempt = $2 AND seq > $3
                 ORDER BY seq",
            )
            .bind(build_id)
            .bind(attempt)
            .bind(after_seq)
            .fetch_all(pool)
            .await
        })
        .map_err(DbError::query(
            "read build log chunks after a sequence number",
        ))
    }

    /// Deletes every stored chunk of a build (all attempts), once its log
    /// is in storage.
    pub async fn delete_log_chunks(&self, build_id: i64) -> Result<u64, DbError> {
        with_pool!(self, |pool| {
            sqlx::query("DELETE FROM build_log_chunks WHERE build_id = $1")
                .bind(build_id)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })
        .map_err(DbError::query("delete build log chunks"))
    }
}
