//! Upkeep of the short-lived tokens the OCI token endpoint issues: they
//! are ordinary API tokens, so once expired they only clutter the list.

use super::{with_pool, Db, DbError, Timestamp};

impl Db {
    /// Deletes `user_id`'s tokens called `name` that expired by `now`.
    pub async fn delete_expired_tokens_named(
        &self,
        user_id: i64,
        name: &str,
        now: Timestamp,
    ) -> Result<u64, DbError> {
        with_pool!(self, |pool| {
            sqlx::query(
                "DELETE FROM api_tokens
                 WHERE user_id = $1 AND name = $2 AND expires_at IS NOT NULL AND expires_at <= $3",
            )
            .bind(user_id)
            .bind(name)
            .bind(now)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        })
        .map_err(DbError::query("delete expired tokens"))
    }
}
