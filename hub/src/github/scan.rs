//! Queueing the builds of discovered recipes, for webhook deliveries and
//! for repository scans: the durable requests, written with a delivery,
//! to list a repository's tree at a commit (GitHub's payload may have cut
//! the commit list, or the repository is new) and build every recipe in
//! it. A background task works the scans off, so the webhook answers
//! without calling GitHub and a restart loses no scan.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::discovery::{resolve_conflicts, Conflict, RecipeTarget};
use super::status::{BuildReport, BuildStage, StatusReporter};
use super::{GitHubApi, RepoRef};
use crate::db::{
    find_recipe_for_target_in, finish_scan_in, is_unique_violation, move_recipe_in,
    upsert_recipe_in, Db, DbError, Repository, RepositoryScan, Timestamp, WriteTx,
};
use crate::queue::{enqueue_in, NewBuild, Queue, Trigger, DEFAULT_MAX_ATTEMPTS};

/// How often the scanner looks for pending scans.
pub const SCAN_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Tries of a scan before it is given up (GitHub down, repository gone).
const SCAN_MAX_ATTEMPTS: i64 = 5;
/// Times a transaction is retried when a concurrent enqueue of the same
/// recipe and branch won a race on PostgreSQL.
pub(crate) const TX_RETRIES: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("scan {scan_id}: {action}")]
    Query {
        scan_id: i64,
        action: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "scan {scan_id}: kept conflicting with concurrent builds; gave up after {TX_RETRIES} tries"
    )]
    Contended { scan_id: i64 },
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A build a delivery or scan queued.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QueuedBuild {
    pub build_id: i64,
    pub recipe_path: String,
    pub container: String,
    pub tag: String,
}

/// What [`queue_recipes_in`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Queued {
    pub builds: Vec<QueuedBuild>,
    /// Recipe files not built: another file builds their container and tag.
    pub conflicts: Vec<Conflict>,
}

impl Queued {
    /// One line for a delivery's or scan's outcome.
    pub fn summary(&self) -> String {
        let mut line = format!("queued {} build(s)", self.builds.len());
        for conflict in &self.conflicts {
            line.push_str("; ");
            line.push_str(&conflict.to_string());
        }
        line
    }
}

/// Records the recipes and queues a push build of each at `commit_sha`,
/// inside the caller's transaction. A recipe whose container and tag are
/// already built by another recorded file is a conflict (that file keeps
/// them), unless that file is in `removed`: then the file was renamed or
/// moved, and the recorded recipe follows it, history and all.
pub(crate) async fn queue_recipes_in(
    tx: &mut WriteTx,
    repository: &Repository,
    recipes: &[(String, RecipeTarget)],
    removed: &BTreeSet<String>,
    commit_sha: &str,
    branch: &str,
    now: Timestamp,
) -> Result<Queued, sqlx::Error> {
    let mut queued = Queued::default();
    for (path, target) in recipes {
        let owner =
            find_recipe_for_target_in(tx, repository.id, &target.container, &target.tag).await?;
        let recipe_id = match owner {
            Some(owner) if owner.path == *path => owner.id,
            Some(owner) if removed.contains(&owner.path) => {
                move_recipe_in(tx, owner.id, path, now).await?;
                owner.id
            }
            Some(owner) => {
                queued.conflicts.push(Conflict {
                    path: path.clone(),
                    target: target.clone(),
                    kept: owner.path,
                });
                continue;
            }
            None => {
                upsert_recipe_in(tx, repository.id, path, &target.container, &target.tag, now)
                    .await?
                    .id
            }
        };
        let new = NewBuild {
            recipe_id,
            commit_sha: commit_sha.to_owned(),
            branch: branch.to_owned(),
            trigger: Trigger::Push,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        };
        let enqueued = enqueue_in(tx, &new, now).await?;
        queued.builds.push(QueuedBuild {
            build_id: enqueued.build.id,
            recipe_path: path.clone(),
            container: target.container.clone(),
            tag: target.tag.clone(),
        });
    }
    Ok(queued)
}

/// How the hub reaches `repository` on GitHub.
pub async fn repo_ref(db: &Db, repository: &Repository) -> Result<RepoRef, DbError> {
    let installation_id = match repository.installation_id {
        Some(id) => db.find_installation(id).await?.map(|i| i.github_id),
        None => None,
    };
    Ok(RepoRef {
        owner: repository.owner.clone(),
        name: repository.name.clone(),
        installation_id,
    })
}

/// Reports a "queued" status for each build; returns at once: the caller
/// (a webhook request) does not wait for GitHub.
pub fn report_queued(
    statuses: &StatusReporter,
    repo: &RepoRef,
    commit_sha: &str,
    builds: &[QueuedBuild],
) {
    for build in builds {
        statuses.report(BuildReport {
            build_id: build.build_id,
            repo: repo.clone(),
            commit_sha: commit_sha.to_owned(),
            recipe_path: build.recipe_path.clone(),
            stage: BuildStage::Queued,
            description: "queued".to_owned(),
        });
    }
}

/// Works off the pending scans once; returns how many finished.
pub async fn run_pending_scans(
    queue: &Queue,
    github: &Arc<dyn GitHubApi>,
    statuses: &StatusReporter,
) -> Result<usize, ScanError> {
    let mut finished = 0;
    for scan in queue.db().pending_scans().await? {
        if run_scan(queue, github, statuses, &scan).await? {
            finished += 1;
        }
    }
    Ok(finished)
}

/// Runs the scanner until the process ends: pending scans are picked up
/// at start (after a restart too) and every [`SCAN_POLL_INTERVAL`].
pub fn spawn_scanner(
    queue: Queue,
    github: Arc<dyn GitHubApi>,
    statuses: StatusReporter,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Err(e) = run_pending_scans(&queue, &github, &statuses).await {
                tracing::warn!("repository scans: {e}");
            }
            tokio::time::sleep(SCAN_POLL_INTERVAL).await;
        }
    })
}

/// Lists the tree and queues its recipes; true when the scan is done
/// (false: GitHub failed and it will be tried again).
async fn run_scan(
    queue: &Queue,
    github: &Arc<dyn GitHubApi>,
    statuses: &StatusReporter,
    scan: &RepositoryScan,
) -> Result<bool, ScanError> {
    let db = queue.db();
    let Some(repository) = db.find_repository_by_id(scan.repository_id).await? else {
        // The repository row is gone; its scans went with it (cascade).
        return Ok(false);
    };
    let repo = repo_ref(db, &repository).await?;
    let tree = match github.tree(&repo, &scan.commit_sha).await {
        Ok(tree) => tree,
        Err(e) => {
            let give_up = scan.attempts + 1 >= SCAN_MAX_ATTEMPTS;
            tracing::warn!(
                "scan {} of {}@{}: {e}{}",
                scan.id,
                repository.full_name(),
                scan.commit_sha,
                if give_up {
                    "; giving up"
                } else {
                    "; will retry"
                }
            );
            db.fail_scan(
                scan.id,
                &format!("listing the tree failed: {e}"),
                give_up,
                queue.now(),
            )
            .await?;
            return Ok(give_up);
        }
    };
    let (recipes, conflicts) = resolve_conflicts(&repository.name, &tree.paths);
    let present: BTreeSet<&String> = tree.paths.iter().collect();
    let removed: BTreeSet<String> = db
        .list_recipes(repository.id)
        .await?
        .into_iter()
        .map(|r| r.path)
        .filter(|p| !present.contains(p))
        .collect();
    let query = |action| {
        move |source| ScanError::Query {
            scan_id: scan.id,
            action,
            source,
        }
    };
    for _ in 0..TX_RETRIES {
        let now = queue.now();
        let mut tx = db.begin_write().await.map_err(query("begin"))?;
        let result = queue_recipes_in(
            &mut tx,
            &repository,
            &recipes,
            &removed,
            &scan.commit_sha,
            &scan.branch,
            now,
        )
        .await;
        let mut queued = match result {
            Ok(queued) => queued,
            Err(e) if is_unique_violation(&e) => continue,
            Err(e) => return Err(query("queue recipes")(e)),
        };
        queued.conflicts.splice(0..0, conflicts.iter().cloned());
        let mut outcome = format!("listed {} files; {}", tree.paths.len(), queued.summary());
        if tree.truncated {
            outcome.push_str("; GitHub truncated the listing: recipes beyond it were not found");
        }
        if !finish_scan_in(&mut tx, scan.id, &outcome, now)
            .await
            .map_err(query("finish"))?
        {
            // Another scanner finished it meanwhile; drop this work.
            return Ok(false);
        }
        tx.commit().await?;
        queue.wake_workers();
        tracing::info!(
            "scan {} of {}@{}: {outcome}",
            scan.id,
            repository.full_name(),
            scan.commit_sha
        );
        report_queued(statuses, &repo, &scan.commit_sha, &queued.builds);
        return Ok(true);
    }
    Err(ScanError::Contended { scan_id: scan.id })
}
