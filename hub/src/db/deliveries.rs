//! Webhook deliveries by GitHub's `X-GitHub-Delivery` id: a delivery sent
//! twice (GitHub retries, a replay) is acted on once, and every one is kept
//! for the audit trail with what the hub made of it.

use super::{with_pool, Db, DbError, Timestamp};

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct WebhookDelivery {
    pub id: i64,
    pub delivery_id: String,
    /// `X-GitHub-Event`: `push`, `ping`, `installation`, …
    pub event: String,
    pub received_at: Timestamp,
    /// What the hub did, e.g. `queued 2 builds`; NULL until decided.
    pub outcome: Option<String>,
}

impl Db {
    /// Records a delivery; true when it is new, false when this id was
    /// recorded before. One statement, so of two concurrent requests with
    /// the same id exactly one sees true.
    pub async fn record_delivery(
        &self,
        delivery_id: &str,
        event: &str,
        now: Timestamp,
    ) -> Result<bool, DbError> {
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO webhook_deliveries (delivery_id, event, received_at)
                 VALUES ($1, $2, $3)
                 ON CONFLICT (delivery_id) DO NOTHING",
            )
            .bind(delivery_id)
            .bind(event)
            .bind(now)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        })
        .map(|rows| rows == 1)
        .map_err(DbError::query("record webhook delivery"))
    }

    /// Notes what the hub made of a delivery; false when it was never recorded.
    pub async fn set_delivery_outcome(
        &self,
        delivery_id: &str,
        outcome: &str,
    ) -> Result<bool, DbError> {
        with_pool!(self, |pool| {
            sqlx::query("UPDATE webhook_deliveries SET outcome = $2 WHERE delivery_id = $1")
                .bind(delivery_id)
                .bind(outcome)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })
        .map(|rows| rows > 0)
        .map_err(DbError::query("set webhook delivery outcome"))
    }

    pub async fn find_delivery(
        &self,
        delivery_id: &str,
    ) -> Result<Option<WebhookDelivery>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as("SELECT * FROM webhook_deliveries WHERE delivery_id = $1")
                .bind(delivery_id)
                .fetch_optional(pool)
                .await
        })
        .map_err(DbError::query("find webhook delivery"))
    }
}
