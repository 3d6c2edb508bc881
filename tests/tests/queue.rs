//! The build queue with leases, on both backends: every test body runs on
//! a SQLite file and on a throwaway PostgreSQL database. Time is a manual
//! clock the tests move, so lease expiry needs no sleeping.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sifhub::db::{Db, NewImage, NewRepository, RepositorySettings, Timestamp};
use sifhub::queue::{BuildStatus, ManualClock, NewBuild, Queue, QueueError, Trigger};
use sifhub_tests::postgres::both_backends;

const T0: Timestamp = Timestamp::from_unix_millis(1_700_000_000_000);
const LEASE: Duration = Duration::from_secs(60);

/// A queue on a fresh database and the clock that drives it.
struct Fixture {
    queue: Queue,
    clock: ManualClock,
    db: Db,
}

impl Fixture {
    /// A recipe to build (`path` in one repository), created on demand.
    async fn recipe(&self, path: &str) -> i64 {
        let repo = match self.db.find_repository("lab", "containers").await.unwrap() {
            Some(repo) => repo.id,
            None => {
                let new = NewRepository {
                    github_id: None,
                    owner: "lab".into(),
                    name: "containers".into(),
                    default_branch: "main".into(),
                    installation_id: None,
                    settings: RepositorySettings::default(),
                };
                self.db.insert_repository(&new, T0).await.unwrap().id
            }
        };
        let container = path.split('/').next().unwrap_or("containers");
        self.db
            .upsert_recipe(repo, path, container, "latest", T0)
            .await
            .unwrap()
            .id
    }

    async fn enqueue(&self, recipe_id: i64, branch: &str, trigger: Trigger) -> i64 {
        self.queue
            .enqueue(&NewBuild {
                recipe_id,
                commit_sha: format!("{:040x}", self.clock_millis()),
                branch: branch.into(),
                trigger,
                max_attempts: 3,
            })
            .await
            .unwrap()
            .build
            .id
    }

    fn clock_millis(&self) -> i64 {
        self.queue.now().unix_millis()
    }

    /// Moves time on, so the next enqueue is younger.
    fn tick(&self) {
        self.clock.advance(Duration::from_secs(1));
    }

    async fn status(&self, build_id: i64) -> BuildStatus {
        self.queue.get(build_id).await.unwrap().unwrap().status
    }
}

/// Runs `body` on a migrated SQLite database, then on a PostgreSQL one.
async fn on_both<F, Fut>(test: &str, body: F)
where
    F: Fn(Fixture) -> Fut,
    Fut: Future<Output = ()>,
{
    for database in both_backends(test) {
        eprintln!("--- {test} on {database:?}");
        let db = Db::connect(&database.url)
            .await
            .unwrap_or_else(|e| panic!("connect to {database:?}: {e:?}"));
        let clock = ManualClock::new(T0);
        let queue = Queue::with_clock(db.clone(), Arc::new(clock.clone()));
        body(Fixture {
            queue,
            clock,
            db: db.clone(),
        })
        .await;
        db.close().await;
    }
}

#[tokio::test]
async fn claims_go_by_priority_then_age() {
    on_both("claim_order", |f| async move {
        let (a, b, c, d) = (
            f.recipe("a/Singularity").await,
            f.recipe("b/Singularity").await,
            f.recipe("c/Singularity").await,
            f.recipe("d/Singularity").await,
        );
        let old_push = f.enqueue(a, "main", Trigger::Push).await;
        f.tick();
        let manual = f.enqueue(b, "main", Trigger::Manual).await;
        f.tick();
        let new_push = f.enqueue(c, "main", Trigger::Push).await;
        f.tick();
        let rebuild = f.enqueue(d, "main", Trigger::Rebuild).await;

        let mut order = Vec::new();
        while let Some(claimed) = f.queue.claim("w1", LEASE).await.unwrap() {
            assert_eq!(claimed.build.status, BuildStatus::Running);
            assert_eq!(claimed.build.attempt, 1);
            assert_eq!(claimed.build.worker_id.as_deref(), Some("w1"));
            assert_eq!(claimed.lease.lease_until, f.queue.now().plus(LEASE));
            order.push(claimed.build.id);
        }
        assert_eq!(order, vec![rebuild, manual, old_push, new_push]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claimers_never_share_a_build() {
    on_both("concurrent_claims", |f| async move {
        let mut queued = HashSet::new();
        for i in 0..5 {
            let recipe = f.recipe(&format!("r{i}/Singularity")).await;
            queued.insert(f.enqueue(recipe, "main", Trigger::Push).await);
        }
        let claimers: Vec<_> = (0..8)
            .map(|w| {
                let queue = f.queue.clone();
                tokio::spawn(
                    async move { queue.claim(&format!("worker-{w}"), LEASE).await.unwrap() },
                )
            })
            .collect();
        let mut claimed = Vec::new();
        for claimer in claimers {
            if let Some(c) = claimer.await.unwrap() {
                claimed.push(c.build.id);
            }
        }
        assert_eq!(claimed.len(), 5, "every build claimed once: {claimed:?}");
        assert_eq!(claimed.iter().copied().collect::<HashSet<_>>(), queued);
        assert!(f.queue.claim("late", LEASE).await.unwrap().is_none());
    })
    .await;
}

#[tokio::test]
async fn only_the_holder_renews_a_lease() {
    on_both("heartbeat", |f| async move {
        let recipe = f.recipe("Singularity").await;
        let build = f.enqueue(recipe, "main", Trigger::Push).await;
        let claimed = f.queue.claim("w1", LEASE).await.unwrap().unwrap();
        assert_eq!(claimed.build.id, build);

        f.clock.advance(Duration::from_secs(30));
        let renewed = f.queue.heartbeat(&claimed.lease, LEASE).await.unwrap();
        assert_eq!(renewed.lease_until, f.queue.now().plus(LEASE));
        let stored = f.queue.get(build).await.unwrap().unwrap();
        assert_eq!(stored.lease_until, Some(renewed.lease_until));

        let mut intruder = claimed.lease.clone();
        intruder.worker_id = "w2".into();
        let err = f.queue.heartbeat(&intruder, LEASE).await.unwrap_err();
        assert!(matches!(err, QueueError::NotLeaseHolder { .. }), "{err:?}");
        assert!(err.to_string().contains("w2"), "{err}");
        let stored = f.queue.get(build).await.unwrap().unwrap();
        assert_eq!(
            stored.lease_until,
            Some(renewed.lease_until),
            "refused heartbeat changed nothing"
        );
        assert_eq!(stored.worker_id.as_deref(), Some("w1"));

        // Past its end the lease is gone, even before anyone reaps it.
        f.clock.advance(LEASE + Duration::from_secs(1));
        let err = f.queue.heartbeat(&renewed, LEASE).await.unwrap_err();
        assert!(matches!(err, QueueError::NotLeaseHolder { .. }), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn an_expired_lease_requeues_and_counts_an_attempt() {
    on_both("lease_expiry", |f| async move {
        let recipe = f.recipe("Singularity").await;
        let build = f.enqueue(recipe, "main", Trigger::Push).await;
        let first = f.queue.claim("w1", LEASE).await.unwrap().unwrap();

        // Not yet expired: nothing to reap.
        f.clock.advance(LEASE);
        assert!(f.queue.reap_expired().await.unwrap().is_empty());

        f.clock.advance(Duration::from_millis(1));
        let reaped = f.queue.reap_expired().await.unwrap();
        assert_eq!(reaped.requeued, vec![build]);
        let stored = f.queue.get(build).await.unwrap().unwrap();
        assert_eq!(stored.status, BuildStatus::Queued);
        assert_eq!(stored.attempt, 1, "the lost attempt counts");
        assert!(stored.error.unwrap().contains("w1"));

        let second = f.queue.claim("w2", LEASE).await.unwrap().unwrap();
        assert_eq!(second.build.id, build);
        assert_eq!(second.build.attempt, 2);
        // The first worker comes back: its lease is no longer good.
        let err = f
            .queue
            .complete(&first.lease, None, None)
            .await
            .unwrap_err();
        assert!(matches!(err, QueueError::NotLeaseHolder { .. }), "{err:?}");
        let done = f
            .queue
            .complete(&second.lease, None, Some("logs/1"))
            .await
            .unwrap();
        assert_eq!(done.status, BuildStatus::Succeeded);
        assert_eq!(done.error, None);
        assert_eq!(done.log_key.as_deref(), Some("logs/1"));
    })
    .await;
}

#[tokio::test]
async fn a_build_whose_workers_keep_dying_fails_with_the_reason() {
    on_both("max_attempts", |f| async move {
        let recipe = f.recipe("Singularity").await;
        let build = f.enqueue(recipe, "main", Trigger::Push).await;
        for attempt in 1..=3 {
            // `claim` reaps the previous attempt's expired lease itself.
            let claimed = f
                .queue
                .claim(&format!("w{attempt}"), LEASE)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(claimed.build.attempt, attempt);
            f.clock.advance(LEASE + Duration::from_secs(1));
        }
        assert!(f.queue.claim("w4", LEASE).await.unwrap().is_none());
        let failed = f.queue.get(build).await.unwrap().unwrap();
        assert_eq!(failed.status, BuildStatus::Failed);
        assert_eq!(failed.attempt, 3);
        assert_eq!(
            failed.error.as_deref(),
            Some("worker lost 3 times: lease expired")
        );
        assert_eq!(failed.finished_at, Some(f.queue.now()));
    })
    .await;
}

#[tokio::test]
async fn a_newer_build_supersedes_a_queued_older_one() {
    on_both("supersede", |f| async move {
        let recipe = f.recipe("Singularity").await;
        let other = f.recipe("tools/Singularity").await;
        let old = f.enqueue(recipe, "main", Trigger::Manual).await;
        let other_branch = f.enqueue(recipe, "dev", Trigger::Push).await;
        let other_recipe = f.enqueue(other, "main", Trigger::Push).await;
        f.tick();
        let enqueued = f
            .queue
            .enqueue(&NewBuild {
                recipe_id: recipe,
                commit_sha: "b".repeat(40),
                branch: "main".into(),
                trigger: Trigger::Push,
                max_attempts: 3,
            })
            .await
            .unwrap();
        assert_eq!(enqueued.superseded, vec![old]);
        assert_eq!(f.status(old).await, BuildStatus::Superseded);
        assert_eq!(f.status(other_branch).await, BuildStatus::Queued);
        assert_eq!(f.status(other_recipe).await, BuildStatus::Queued);
        // It keeps the priority of the manual build it replaced.
        assert_eq!(enqueued.build.priority, Trigger::Manual.priority());

        // A running build is not superseded; it finishes, and the newer one queues.
        let running = f.queue.claim("w1", LEASE).await.unwrap().unwrap();
        assert_eq!(running.build.id, enqueued.build.id);
        let newest = f.enqueue(recipe, "main", Trigger::Push).await;
        assert_eq!(f.status(running.build.id).await, BuildStatus::Running);
        assert_eq!(f.status(newest).await, BuildStatus::Queued);

        // If the running one's worker dies, it is not built again: the newer build covers it.
        f.clock.advance(LEASE + Duration::from_secs(1));
        let reaped = f.queue.reap_expired().await.unwrap();
        assert_eq!(reaped.superseded, vec![running.build.id]);
        assert_eq!(f.status(running.build.id).await, BuildStatus::Superseded);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_enqueues_leave_one_queued_build() {
    on_both("concurrent_enqueues", |f| async move {
        let recipe = f.recipe("Singularity").await;
        let pushes: Vec<_> = (0..8)
            .map(|i| {
                let queue = f.queue.clone();
                tokio::spawn(async move {
                    let new = NewBuild {
                        recipe_id: recipe,
                        commit_sha: format!("{i:040x}"),
                        branch: "main".into(),
                        trigger: Trigger::Push,
                        max_attempts: 3,
                    };
                    queue.enqueue(&new).await.unwrap()
                })
            })
            .collect();
        let mut superseded = 0;
        for push in pushes {
            superseded += push.await.unwrap().superseded.len();
        }
        let builds = f.queue.builds_of_recipe(recipe).await.unwrap();
        let queued: Vec<_> = builds
            .iter()
            .filter(|b| b.status == BuildStatus::Queued)
            .collect();
        assert_eq!(builds.len(), 8);
        assert_eq!(queued.len(), 1, "{builds:?}");
        assert_eq!(superseded, 7);
    })
    .await;
}

#[tokio::test]
async fn cancel_stops_queued_and_running_builds() {
    on_both("cancel", |f| async move {
        let (a, b) = (
            f.recipe("a/Singularity").await,
            f.recipe("b/Singularity").await,
        );
        let queued = f.enqueue(a, "main", Trigger::Push).await;
        f.tick();
        let running = f.enqueue(b, "main", Trigger::Manual).await;
        let claimed = f.queue.claim("w1", LEASE).await.unwrap().unwrap();
        assert_eq!(claimed.build.id, running);

        assert!(f.queue.cancel(queued).await.unwrap());
        assert!(f.queue.cancel(running).await.unwrap());
        assert!(!f.queue.cancel(running).await.unwrap(), "already cancelled");
        assert_eq!(f.status(queued).await, BuildStatus::Cancelled);
        assert_eq!(f.status(running).await, BuildStatus::Cancelled);

        // The worker learns at its next heartbeat, and cannot finish it.
        let err = f.queue.heartbeat(&claimed.lease, LEASE).await.unwrap_err();
        assert!(matches!(err, QueueError::NotLeaseHolder { .. }), "{err:?}");
        assert!(f.queue.complete(&claimed.lease, None, None).await.is_err());
        assert!(f.queue.claim("w2", LEASE).await.unwrap().is_none());
    })
    .await;
}

#[tokio::test]
async fn only_the_holder_completes_or_fails_a_build() {
    on_both("complete", |f| async move {
        let (a, b) = (
            f.recipe("a/Singularity").await,
            f.recipe("b/Singularity").await,
        );
        let first = f.enqueue(a, "main", Trigger::Push).await;
        f.tick();
        let second = f.enqueue(b, "main", Trigger::Push).await;
        let lease_a = f.queue.claim("w1", LEASE).await.unwrap().unwrap().lease;
        let lease_b = f.queue.claim("w2", LEASE).await.unwrap().unwrap().lease;
        assert_eq!((lease_a.build_id, lease_b.build_id), (first, second));

        let mut intruder = lease_a.clone();
        intruder.worker_id = "w2".into();
        let err = f.queue.complete(&intruder, None, None).await.unwrap_err();
        assert!(matches!(err, QueueError::NotLeaseHolder { .. }), "{err:?}");
        let err = f.queue.fail(&intruder, "nope", None).await.unwrap_err();
        assert!(matches!(err, QueueError::NotLeaseHolder { .. }), "{err:?}");
        assert_eq!(f.status(first).await, BuildStatus::Running);

        let done = f.queue.complete(&lease_a, None, None).await.unwrap();
        assert_eq!(done.status, BuildStatus::Succeeded);
        assert_eq!(done.finished_at, Some(f.queue.now()));
        assert!(
            f.queue.complete(&lease_a, None, None).await.is_err(),
            "completes once"
        );

        let failed = f
            .queue
            .fail(&lease_b, "%post exited with status 1", None)
            .await
            .unwrap();
        assert_eq!(failed.status, BuildStatus::Failed);
        assert_eq!(failed.error.as_deref(), Some("%post exited with status 1"));
        assert!(
            f.queue.claim("w3", LEASE).await.unwrap().is_none(),
            "a build failure is not retried"
        );
    })
    .await;
}

#[tokio::test]
async fn publish_records_image_tag_and_success_together_for_the_holder_only() {
    on_both("publish", |f| async move {
        let recipe = f.recipe("tools/Singularity").await;
        let recipe_row = f.db.find_recipe_by_id(recipe).await.unwrap().unwrap();
        let first = f.enqueue(recipe, "main", Trigger::Push).await;
        let lease = f.queue.claim("w1", LEASE).await.unwrap().unwrap().lease;
        let image = NewImage {
            digest: format!("sha256:{}", "ab".repeat(32)),
            size: 4096,
            sif_metadata: serde_json::json!({"sif_id": "x"}),
            repository_id: Some(recipe_row.repository_id),
            commit_sha: Some("c0ffee".into()),
            recipe_path: Some("tools/Singularity".into()),
            base_image_digest: Some(format!("sha256:{}", "cd".repeat(32))),
            builder_version: Some("sifhub 0.1.0".into()),
            pushed: false,
        };

        // Not the holder: nothing at all is recorded.
        let mut intruder = lease.clone();
        intruder.attempt += 1;
        let err = f
            .queue
            .publish(&intruder, &image, recipe_row.container_id, "latest", None)
            .await
            .unwrap_err();
        assert!(matches!(err, QueueError::NotLeaseHolder { .. }), "{err:?}");
        assert!(f
            .db
            .find_image_by_digest(&image.digest)
            .await
            .unwrap()
            .is_none());
        assert!(f
            .db
            .find_tag(recipe_row.container_id, "latest")
            .await
            .unwrap()
            .is_none());

        let published = f
            .queue
            .publish(
                &lease,
                &image,
                recipe_row.container_id,
                "latest",
                Some("logs/1.log"),
            )
            .await
            .unwrap();
        assert!(published.image.inserted);
        assert_eq!(published.build.status, BuildStatus::Succeeded);
        assert_eq!(published.build.image_id, Some(published.image.image.id));
        assert_eq!(published.build.log_key.as_deref(), Some("logs/1.log"));
        let tag = published.tag.clone().unwrap();
        assert!(tag.moved);
        assert_eq!(tag.tag.image_id, Some(published.image.image.id));
        assert_eq!(f.status(first).await, BuildStatus::Succeeded);

        // The same bytes built again: one image row, the tag unchanged;
        // a frozen tag is not moved by a different image.
        f.tick();
        f.enqueue(recipe, "main", Trigger::Push).await;
        let again = f.queue.claim("w2", LEASE).await.unwrap().unwrap().lease;
        let same = f
            .queue
            .publish(&again, &image, recipe_row.container_id, "latest", None)
            .await
            .unwrap();
        assert!(!same.image.inserted);
        assert_eq!(same.image.image.id, published.image.image.id);
        assert!(!same.tag.unwrap().moved);
        assert!(f.db.set_tag_frozen(tag.tag.id, true, T0).await.unwrap());
        f.tick();
        f.enqueue(recipe, "main", Trigger::Push).await;
        let third = f.queue.claim("w3", LEASE).await.unwrap().unwrap().lease;
        let other = NewImage {
            digest: format!("sha256:{}", "ef".repeat(32)),
            ..image.clone()
        };
        let kept = f
            .queue
            .publish(&third, &other, recipe_row.container_id, "latest", None)
            .await
            .unwrap();
        assert_eq!(kept.tag, Err(published.image.image.id));
        assert_eq!(kept.build.status, BuildStatus::Succeeded);
    })
    .await;
}

#[tokio::test]
async fn log_chunks_are_kept_once_and_read_in_order() {
    on_both("log_chunks", |f| async move {
        let recipe = f.recipe("tools/Singularity").await;
        let build = f.enqueue(recipe, "main", Trigger::Push).await;
        assert!(f
            .db
            .append_log_chunk(build, 1, 1, "two\n", T0)
            .await
            .unwrap());
        assert!(f
            .db
            .append_log_chunk(build, 1, 0, "one\n", T0)
            .await
            .unwrap());
        assert!(!f
            .db
            .append_log_chunk(build, 1, 0, "again\n", T0)
            .await
            .unwrap());
        assert!(f
            .db
            .append_log_chunk(build, 2, 0, "retry\n", T0)
            .await
            .unwrap());
        assert_eq!(f.db.build_log_text(build, 1).await.unwrap(), "one\ntwo\n");
        assert_eq!(f.db.build_log_text(build, 2).await.unwrap(), "retry\n");
        assert_eq!(f.db.delete_log_chunks(build).await.unwrap(), 3);
        assert_eq!(f.db.build_log_text(build, 1).await.unwrap(), "");
    })
    .await;
}
