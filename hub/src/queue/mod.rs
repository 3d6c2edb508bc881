//! The build queue: rows of the `builds` table, claimed by workers under a
//! lease rather than inside a long transaction (SQLite has no
//! `SKIP LOCKED`, and a worker may run for an hour on another machine).
//!
//! - [`Queue::enqueue`] adds a build. Its priority comes from what
//!   triggered it ([`Trigger`]): a push is the bulk of the work and waits
//!   its turn; a manual trigger has a person waiting for it; a rebuild is a
//!   person retrying one build they are looking at, so it goes first. A
//!   newer build of the same recipe on the same branch supersedes a queued
//!   older one (status `superseded`), and inherits its priority if higher.
//! - [`Queue::claim`] hands the oldest build of the highest priority to a
//!   worker in one atomic `UPDATE`: status `running`, `worker_id`,
//!   `lease_until`, `attempt + 1`. Concurrent claimers never get the same
//!   build (PostgreSQL: `FOR UPDATE SKIP LOCKED`; SQLite serializes
//!   writers).
//! - The holder renews its lease with [`Queue::heartbeat`] and ends the
//!   build with [`Queue::complete`] or [`Queue::fail`]. A [`Lease`] names
//!   the attempt as well as the worker, so a worker that lost its lease
//!   cannot renew or finish the build even if it was handed to the same
//!   worker id again.
//! - [`Queue::reap_expired`] takes back builds whose lease ran out: each
//!   counts as an attempt and goes back to the queue, until `max_attempts`
//!   attempts, when it fails with "worker lost N times: lease expired".
//!   `claim` reaps first, so a hub needs no separate reaper to make progress.
//! - [`Queue::cancel`] stops a queued or running build; its worker finds
//!   out at its next heartbeat.
//!
//! Time comes from a [`Clock`], so tests move it by hand.

use std::sync::Arc;
use std::time::Duration;

use crate::db::{
    check_digest, image_size, insert_image_in, is_unique_violation, set_tag_in, text_enum,
    with_pool, with_tx, BeginWrite as _, Db, DbError, NewImage, Pool, StoredImage, TagChange,
    Timestamp, WriteTx,
};

mod clock;

pub use clock::{Clock, ManualClock, SystemClock};

/// How many times a build is handed out before a lost worker fails it.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// How many times an enqueue or a reap is retried when a concurrent one on
/// PostgreSQL took the single queued slot of the same recipe and branch.
const CONFLICT_RETRIES: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("worker {worker_id} does not hold the lease of build {build_id} (attempt {attempt}): it expired, was cancelled or was handed to another worker")]
    NotLeaseHolder {
        build_id: i64,
        worker_id: String,
        attempt: i64,
    },
    #[error("{action}: kept conflicting with concurrent builds of the same recipe and branch; gave up after {CONFLICT_RETRIES} tries")]
    Contended { action: &'static str },
    #[error(transparent)]
    Db(#[from] DbError),
}

text_enum! {
    /// Where a build is in its life.
    pub enum BuildStatus {
        Queued = "queued",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Cancelled = "cancelled",
        /// A newer build of the same recipe and branch replaced it.
        Superseded = "superseded",
    }
}

impl BuildStatus {
    /// Whether the build is over (no worker will touch it again).
    pub fn is_finished(self) -> bool {
        !matches!(self, BuildStatus::Queued | BuildStatus::Running)
    }
}

text_enum! {
    /// What asked for a build; decides its priority.
    pub enum Trigger {
        /// A push to the repository (also the first build of a new one).
        Push = "push",
        /// A person or script asked for a build (UI, API, `sifhub admin`).
        Manual = "manual",
        /// A person asked to run a build again.
        Rebuild = "rebuild",
    }
}

impl Trigger {
    /// Higher runs first: rebuild > manual > push.
    pub const fn priority(self) -> i64 {
        match self {
            Trigger::Push => 0,
            Trigger::Manual => 10,
            Trigger::Rebuild => 20,
        }
    }
}

/// A build: a row of the `builds` table.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Build {
    pub id: i64,
    pub recipe_id: i64,
    pub commit_sha: String,
    pub branch: String,
    #[sqlx(rename = "trigger_kind")]
    pub trigger: Trigger,
    pub priority: i64,
    pub status: BuildStatus,
    pub queued_at: Timestamp,
    /// When the latest attempt started.
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    /// The worker of the latest attempt.
    pub worker_id: Option<String>,
    /// While running: the holder must heartbeat before this.
    pub lease_until: Option<Timestamp>,
    /// Attempts so far (claims); the running one included.
    pub attempt: i64,
    pub max_attempts: i64,
    /// Why it failed, was superseded, or why the last attempt was lost.
    pub error: Option<String>,
    /// Storage key of the build log.
    pub log_key: Option<String>,
    /// The image built, once succeeded.
    pub image_id: Option<i64>,
}

/// A build to enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBuild {
    pub recipe_id: i64,
    pub commit_sha: String,
    pub branch: String,
    pub trigger: Trigger,
    /// At least 1; [`DEFAULT_MAX_ATTEMPTS`] is the usual.
    pub max_attempts: u32,
}

/// The result of [`Queue::enqueue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    pub build: Build,
    /// Queued builds of the same recipe and branch this one replaced.
    pub superseded: Vec<i64>,
}

/// A worker's hold on a running build: which build, which worker, which
/// attempt, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub build_id: i64,
    pub worker_id: String,
    pub attempt: i64,
    pub lease_until: Timestamp,
}

/// What [`Queue::claim`] hands a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub lease: Lease,
    pub build: Build,
}

/// What [`Queue::reap_expired`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reaped {
    /// Back in the queue for another attempt.
    pub requeued: Vec<i64>,
    /// Out of attempts: failed.
    pub failed: Vec<i64>,
    /// A newer build of the same recipe and branch exists: not worth retrying.
    pub superseded: Vec<i64>,
}

impl Reaped {
    pub fn is_empty(&self) -> bool {
        self.requeued.is_empty() && self.failed.is_empty() && self.superseded.is_empty()
    }
}

/// The queue over a [`Db`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct Queue {
    db: Db,
    clock: Arc<dyn Clock>,
    /// Woken when this process queues a build, so claimers waiting here
    /// (the worker protocol's long poll) need not wait for their next poll.
    queued: Arc<tokio::sync::Notify>,
}

/// The result of [`Queue::publish`].
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    /// The build, succeeded, naming the image.
    pub build: Build,
    /// The image (an existing row when the same bytes were built before).
    pub image: StoredImage,
    /// The tag moved (or already naming the image), or `Err(image id)`:
    /// the tag is frozen and keeps that image.
    pub tag: Result<TagChange, i64>,
}

/// The claim statement. Both backends pick the next build in a subquery
/// and update it in the same statement. PostgreSQL locks the row it picks
/// and skips rows other claimers hold, so concurrent claims take different
/// builds without waiting; SQLite runs one writer at a time, and a write
/// statement takes its write lock before reading, so the subquery sees
/// every earlier claim. `status = 'queued'` is checked again outside the
/// subquery for clarity; it cannot have changed.
macro_rules! claim_sql {
    ($lock:literal) => {
        concat!(
            "UPDATE builds
             SET status = 'running', worker_id = $1, lease_until = $2, started_at = $3,
                 attempt = attempt + 1
             WHERE status = 'queued' AND id = (
                 SELECT id FROM builds WHERE status = 'queued'
                 ORDER BY priority DESC, queued_at, id
                 LIMIT 1",
            $lock,
            ")
             RETURNING *"
        )
    };
}
const CLAIM_SQLITE: &str = claim_sql!("");
const CLAIM_POSTGRES: &str = claim_sql!(" FOR UPDATE SKIP LOCKED");

impl Queue {
    /// A queue on the system clock.
    pub fn new(db: Db) -> Self {
        Self::with_clock(db, Arc::new(SystemClock))
    }

    pub fn with_clock(db: Db, clock: Arc<dyn Clock>) -> Self {
        Self {
            db,
            clock,
            queued: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Resolves when this process queues a build after the call (the
    /// future must be polled or enabled before the claim it guards, so a
    /// build queued in between is not missed). Builds queued by other
    /// processes sharing the database do not wake it: poll for those.
    pub fn queued(&self) -> tokio::sync::futures::Notified<'_> {
        self.queued.notified()
    }

    /// Wakes this process's waiting claims: call after committing builds
    /// queued in a transaction of one's own ([`enqueue_in`]).
    pub fn wake_workers(&self) {
        self.queued.notify_waiters();
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Queues a build, superseding a queued older build of the same recipe
    /// on the same branch.
    pub async fn enqueue(&self, new: &NewBuild) -> Result<Enqueued, QueueError> {
        for _ in 0..CONFLICT_RETRIES {
            let now = self.now();
            let result = async {
                let mut tx = self.db.begin_write().await?;
                let enqueued = enqueue_in(&mut tx, new, now).await?;
                Ok::<_, sqlx::Error>((tx, enqueued))
            }
            .await;
            match result {
                Ok((tx, enqueued)) => {
                    tx.commit().await?;
                    self.wake_workers();
                    return Ok(enqueued);
                }
                // PostgreSQL: a concurrent enqueue (or requeue) of the same
                // recipe and branch committed first; supersede it on retry.
                Err(e) if is_unique_violation(&e) => continue,
                Err(e) => return Err(DbError::query("enqueue build")(e).into()),
            }
        }
        Err(QueueError::Contended {
            action: "enqueue build",
        })
    }

    /// Hands the next build to `worker_id` for `lease`, or `None` when
    /// nothing is queued. Expired leases are reaped first.
    pub async fn claim(
        &self,
        worker_id: &str,
        lease: Duration,
    ) -> Result<Option<Claimed>, QueueError> {
        self.reap_expired().await?;
        let now = self.now();
        let lease_until = now.plus(lease);
        let claimed: Option<Build> = match self.db.pool() {
            Pool::Sqlite(pool) => {
                sqlx::query_as(CLAIM_SQLITE)
                    .bind(worker_id)
                    .bind(lease_until)
                    .bind(now)
                    .fetch_optional(pool)
                    .await
            }
            Pool::Postgres(pool) => {
                sqlx::query_as(CLAIM_POSTGRES)
                    .bind(worker_id)
                    .bind(lease_until)
                    .bind(now)
                    .fetch_optional(pool)
                    .await
            }
        }
        .map_err(DbError::query("claim a build"))?;
        Ok(claimed.map(|build| Claimed {
            lease: Lease {
                build_id: build.id,
                worker_id: worker_id.to_owned(),
                attempt: build.attempt,
                lease_until,
            },
            build,
        }))
    }

    /// Extends a held lease to `now + extend`. Refused
    /// ([`QueueError::NotLeaseHolder`]) when the lease expired, the build was
    /// cancelled, or another attempt holds it: the worker must stop.
    pub async fn heartbeat(&self, lease: &Lease, extend: Duration) -> Result<Lease, QueueError> {
        let now = self.now();
        let lease_until = now.plus(extend);
        let renewed: Option<Timestamp> = with_pool!(self.db, |pool| {
            sqlx::query_scalar(
                "UPDATE builds SET lease_until = $1
                 WHERE id = $2 AND worker_id = $3 AND attempt = $4 AND status = 'running'
                     AND lease_until >= $5
                 RETURNING lease_until",
            )
            .bind(lease_until)
            .bind(lease.build_id)
            .bind(&lease.worker_id)
            .bind(lease.attempt)
            .bind(now)
            .fetch_optional(pool)
            .await
        })
        .map_err(DbError::query("renew a build lease"))?;
        match renewed {
            Some(lease_until) => Ok(Lease {
                lease_until,
                ..lease.clone()
            }),
            None => Err(not_holder(lease)),
        }
    }

    /// Marks the build succeeded. Only the lease's holder may; a result
    /// that arrives after the lease ran out is still taken as long as the
    /// build was not handed to anyone else (nobody else has run it).
    pub async fn complete(
        &self,
        lease: &Lease,
        image_id: Option<i64>,
        log_key: Option<&str>,
    ) -> Result<Build, QueueError> {
        let now = self.now();
        let done: Option<Build> = with_pool!(self.db, |pool| {
            sqlx::query_as(
                "UPDATE builds SET status = 'succeeded', finished_at = $1, lease_until = NULL,
                     error = NULL, image_id = $2, log_key = COALESCE($3, log_key)
                 WHERE id = $4 AND worker_id = $5 AND attempt = $6 AND status = 'running'
                 RETURNING *",
            )
            .bind(now)
            .bind(image_id)
            .bind(log_key)
            .bind(lease.build_id)
            .bind(&lease.worker_id)
            .bind(lease.attempt)
            .fetch_optional(pool)
            .await
        })
        .map_err(DbError::query("complete a build"))?;
        done.ok_or_else(|| not_holder(lease))
    }

    /// Completes the build with the image it made, in one transaction:
    /// the build is marked succeeded (only by the lease's holder, as in
    /// [`Queue::complete`]), the image recorded (identical bytes once, see
    /// [`Db::insert_image`]) and tag `tag` of the container moved to it
    /// unless frozen. A refused lease changes nothing.
    pub async fn publish(
        &self,
        lease: &Lease,
        image: &NewImage,
        container_id: i64,
        tag: &str,
        log_key: Option<&str>,
    ) -> Result<Published, QueueError> {
        check_digest(&image.digest)?;
        let size = image_size(image.size)?;
        let now = self.now();
        let published = with_pool!(self.db, |pool| async {
            // The lease check is the first statement and a write, so on
            // SQLite the write lock is held before anything is read.
            let mut tx = pool.begin_write().await?;
            let held: Option<i64> = sqlx::query_scalar(
                "UPDATE builds SET status = 'succeeded', finished_at = $1, lease_until = NULL,
                     error = NULL, log_key = COALESCE($2, log_key)
                 WHERE id = $3 AND worker_id = $4 AND attempt = $5 AND status = 'running'
                 RETURNING id",
            )
            .bind(now)
            .bind(log_key)
            .bind(lease.build_id)
            .bind(&lease.worker_id)
            .bind(lease.attempt)
            .fetch_optional(&mut *tx)
            .await?;
            if held.is_none() {
                return Ok(None);
            }
            let stored = insert_image_in!(tx, image, size, now)?;
            let build: Build =
                sqlx::query_as("UPDATE builds SET image_id = $1 WHERE id = $2 RETURNING *")
                    .bind(stored.image.id)
                    .bind(lease.build_id)
                    .fetch_one(&mut *tx)
                    .await?;
            let tag = set_tag_in!(tx, container_id, tag, stored.image.id, now)?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Some(Published {
                build,
                image: stored,
                tag,
            }))
        }
        .await)
        .map_err(DbError::query("publish a build's image"))?;
        published.ok_or_else(|| not_holder(lease))
    }

    /// Marks the build failed with `error` (the build's own failure: not
    /// retried). Only the lease's holder may, as for [`Queue::complete`].
    pub async fn fail(
        &self,
        lease: &Lease,
        error: &str,
        log_key: Option<&str>,
    ) -> Result<Build, QueueError> {
        let now = self.now();
        let done: Option<Build> = with_pool!(self.db, |pool| {
            sqlx::query_as(
                "UPDATE builds SET status = 'failed', finished_at = $1, lease_until = NULL,
                     error = $2, log_key = COALESCE($3, log_key)
                 WHERE id = $4 AND worker_id = $5 AND attempt = $6 AND status = 'running'
                 RETURNING *",
            )
            .bind(now)
            .bind(error)
            .bind(log_key)
            .bind(lease.build_id)
            .bind(&lease.worker_id)
            .bind(lease.attempt)
            .fetch_optional(pool)
            .await
        })
        .map_err(DbError::query("fail a build"))?;
        done.ok_or_else(|| not_holder(lease))
    }

    /// Cancels a queued or running build; false when it had already
    /// finished (or does not exist).
    pub async fn cancel(&self, build_id: i64) -> Result<bool, QueueError> {
        let now = self.now();
        let cancelled = with_pool!(self.db, |pool| {
            sqlx::query(
                "UPDATE builds SET status = 'cancelled', finished_at = $2, lease_until = NULL
                 WHERE id = $1 AND status IN ('queued', 'running')",
            )
            .bind(build_id)
            .bind(now)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        })
        .map_err(DbError::query("cancel a build"))?;
        Ok(cancelled > 0)
    }

    /// Takes back every running build whose lease ended before now. The
    /// lost attempt counts: a build with attempts left goes back to the
    /// queue (ahead of newer builds of its priority, as it keeps its
    /// `queued_at`); one without fails with "worker lost N times: lease
    /// expired"; one with a newer build of its recipe and branch is
    /// superseded rather than built again.
    pub async fn reap_expired(&self) -> Result<Reaped, QueueError> {
        for _ in 0..CONFLICT_RETRIES {
            let now = self.now();
            let result = with_pool!(self.db, |pool| async {
                let mut tx = pool.begin_write().await?;
                let failed: Vec<i64> = sqlx::query_scalar(
                    "UPDATE builds SET status = 'failed', finished_at = $1, lease_until = NULL,
                         error = 'worker lost ' || attempt || ' times: lease expired'
                     WHERE status = 'running' AND lease_until < $1 AND attempt >= max_attempts
                     RETURNING id",
                )
                .bind(now)
                .fetch_all(&mut *tx)
                .await?;
                let superseded: Vec<i64> = sqlx::query_scalar(
                    "UPDATE builds SET status = 'superseded', finished_at = $1, lease_until = NULL,
                         error = 'lease expired and a newer build of this recipe and branch exists'
                     WHERE status = 'running' AND lease_until < $1 AND EXISTS (
                         SELECT 1 FROM builds newer
                         WHERE newer.recipe_id = builds.recipe_id AND newer.branch = builds.branch
                             AND newer.id > builds.id AND newer.status <> 'cancelled')
                     RETURNING id",
                )
                .bind(now)
                .fetch_all(&mut *tx)
                .await?;
                let requeued: Vec<i64> = sqlx::query_scalar(
                    "UPDATE builds SET status = 'queued', lease_until = NULL,
                         error = 'attempt ' || attempt || ' lost: lease of worker '
                             || worker_id || ' expired'
                     WHERE status = 'running' AND lease_until < $1
                     RETURNING id",
                )
                .bind(now)
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok::<_, sqlx::Error>(Reaped {
                    requeued,
                    failed,
                    superseded,
                })
            }
            .await);
            match result {
                Ok(mut reaped) => {
                    if !reaped.requeued.is_empty() {
                        self.wake_workers();
                    }
                    // RETURNING gives no order; callers and logs like one.
                    reaped.requeued.sort_unstable();
                    reaped.failed.sort_unstable();
                    reaped.superseded.sort_unstable();
                    return Ok(reaped);
                }
                // PostgreSQL: a build of the same recipe and branch was
                // enqueued while we worked; the retry supersedes ours.
                Err(e) if is_unique_violation(&e) => continue,
                Err(e) => return Err(DbError::query("reap expired build leases")(e).into()),
            }
        }
        Err(QueueError::Contended {
            action: "reap expired build leases",
        })
    }

    pub async fn get(&self, build_id: i64) -> Result<Option<Build>, QueueError> {
        let build = with_pool!(self.db, |pool| {
            sqlx::query_as("SELECT * FROM builds WHERE id = $1")
                .bind(build_id)
                .fetch_optional(pool)
                .await
        })
        .map_err(DbError::query("find build"))?;
        Ok(build)
    }

    /// The builds of a recipe, newest first.
    pub async fn builds_of_recipe(&self, recipe_id: i64) -> Result<Vec<Build>, QueueError> {
        let builds = with_pool!(self.db, |pool| {
            sqlx::query_as("SELECT * FROM builds WHERE recipe_id = $1 ORDER BY id DESC")
                .bind(recipe_id)
                .fetch_all(pool)
                .await
        })
        .map_err(DbError::query("list builds of a recipe"))?;
        Ok(builds)
    }
}

fn not_holder(lease: &Lease) -> QueueError {
    QueueError::NotLeaseHolder {
        build_id: lease.build_id,
        worker_id: lease.worker_id.clone(),
        attempt: lease.attempt,
    }
}

/// [`Queue::enqueue`]'s work inside a caller's transaction, so a build
/// commits with what caused it (a webhook delivery). On PostgreSQL a
/// concurrent enqueue of the same recipe and branch may fail this with a
/// unique violation: the caller retries its whole transaction
/// ([`is_unique_violation`]).
pub(crate) async fn enqueue_in(
    tx: &mut WriteTx,
    new: &NewBuild,
    now: Timestamp,
) -> Result<Enqueued, sqlx::Error> {
    let max_attempts = i64::from(new.max_attempts.max(1));
    with_tx!(tx, |conn| {
        // The supersede comes first: it is a write, so SQLite takes the
        // write lock before anything is read.
        let superseded: Vec<(i64, i64)> = sqlx::query_as(
            "UPDATE builds SET status = 'superseded', finished_at = $3,
                 error = 'superseded by a newer build of this recipe and branch'
             WHERE recipe_id = $1 AND branch = $2 AND status = 'queued'
             RETURNING id, priority",
        )
        .bind(new.recipe_id)
        .bind(&new.branch)
        .bind(now)
        .fetch_all(&mut **conn)
        .await?;
        let priority = superseded
            .iter()
            .map(|(_, p)| *p)
            .fold(new.trigger.priority(), i64::max);
        let build: Build = sqlx::query_as(
            "INSERT INTO builds (recipe_id, commit_sha, branch, trigger_kind, priority,
                 status, queued_at, attempt, max_attempts)
             VALUES ($1, $2, $3, $4, $5, 'queued', $6, 0, $7)
             RETURNING *",
        )
        .bind(new.recipe_id)
        .bind(&new.commit_sha)
        .bind(&new.branch)
        .bind(new.trigger)
        .bind(priority)
        .bind(now)
        .bind(max_attempts)
        .fetch_one(&mut **conn)
        .await?;
        Ok(Enqueued {
            build,
            superseded: superseded.into_iter().map(|(id, _)| id).collect(),
        })
    })
}
