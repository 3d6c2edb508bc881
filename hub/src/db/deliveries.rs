//! Webhook deliveries by GitHub's `X-GitHub-Delivery` id: a delivery sent
//! twice (GitHub retries, a replay) is acted on once, and every one is kept
//! for the audit trail with what the hub made of it.

use super::{with_pool, with_tx, Db, DbError, Timestamp, WriteTx};

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
        let action = "record webhook delivery";
        let mut tx = self.begin_write().await.map_err(DbError::query(action))?;
        let new = record_delivery_in(&mut tx, delivery_id, event, now)
            .await
            .map_err(DbError::query(action))?;
        tx.commit().await?;
        Ok(new)
    }

    /// Notes what the hub made of a delivery; false when it was never recorded.
    pub async fn set_delivery_outcome(
        &self,
        delivery_id: &str,
        outcome: &str,
    ) -> Result<bool, DbError> {
        let action = "set webhook delivery outcome";
        let mut tx = self.begin_write().await.map_err(DbError::query(action))?;
        let found = set_delivery_outcome_in(&mut tx, delivery_id, outcome)
            .await
            .map_err(DbError::query(action))?;
        tx.commit().await?;
        Ok(found)
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

/// [`Db::record_delivery`] inside a caller's transaction. On PostgreSQL a
/// concurrent transaction inserting the same id waits here until this one
/// ends, then sees it recorded: a delivery's work is done once.
pub(crate) async fn record_delivery_in(
    tx: &mut WriteTx,
    delivery_id: &str,
    event: &str,
    now: Timestamp,
) -> Result<bool, sqlx::Error> {
    with_tx!(tx, |conn| {
        sqlx::query(
            "INSERT INTO webhook_deliveries (delivery_id, event, received_at)
             VALUES ($1, $2, $3)
             ON CONFLICT (delivery_id) DO NOTHING",
        )
        .bind(delivery_id)
        .bind(event)
        .bind(now)
        .execute(&mut **conn)
        .await
        .map(|done| done.rows_affected() == 1)
    })
}

/// [`Db::set_delivery_outcome`] inside a caller's transaction.
pub(crate) async fn set_delivery_outcome_in(
    tx: &mut WriteTx,
    delivery_id: &str,
    outcome: &str,
) -> Result<bool, sqlx::Error> {
    with_tx!(tx, |conn| {
        sqlx::query("UPDATE webhook_deliveries SET outcome = $2 WHERE delivery_id = $1")
            .bind(delivery_id)
            .bind(outcome)
            .execute(&mut **conn)
            .await
            .map(|done| done.rows_affected() > 0)
    })
}
