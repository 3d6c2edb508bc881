//! Commit statuses of builds, posted in the background and in order.
//!
//! A build's status goes queued → building → succeeded/failed, reported
//! from different places (the webhook, the worker API) right after each
//! state commits. Posted from independent tasks they could reach GitHub out
//! of order — a late "building" after "success" would leave the commit
//! pending forever. So every report goes through one [`StatusReporter`]:
//! reports of a build are posted one after another in the order given, and
//! a report that is behind one already posted for the same build (a
//! "queued" that lost the race to the worker's claim) is dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::{CommitStatus, GitHubApi, RepoRef, StatusState};

/// Builds of different lanes are posted concurrently; one build always
/// goes through the same lane, so its reports stay in order.
const LANES: usize = 4;

/// Finished builds a lane remembers, to drop reports that come after the end.
const REMEMBERED_FINISHED: usize = 10_000;

const FINISHED_RANK: u8 = 2;

/// How far a build has got, as its commit status shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum BuildStage {
    Queued,
    Building,
    Succeeded,
    Failed,
}

impl BuildStage {
    fn rank(self) -> u8 {
        match self {
            BuildStage::Queued => 0,
            BuildStage::Building => 1,
            BuildStage::Succeeded | BuildStage::Failed => FINISHED_RANK,
        }
    }

    fn state(self) -> StatusState {
        match self {
            BuildStage::Queued | BuildStage::Building => StatusState::Pending,
            BuildStage::Succeeded => StatusState::Success,
            BuildStage::Failed => StatusState::Failure,
        }
    }
}

/// One status to post.
#[derive(Debug, Clone)]
pub struct BuildReport {
    pub build_id: i64,
    pub repo: RepoRef,
    pub commit_sha: String,
    pub recipe_path: String,
    pub stage: BuildStage,
    /// One short line, e.g. `queued`, `building on worker-1`, `built: sha256:…`.
    pub description: String,
}

/// Posts build statuses in order (see the module documentation). Cheap to
/// clone; the posting tasks end when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct StatusReporter {
    lanes: Arc<Vec<mpsc::UnboundedSender<BuildReport>>>,
}

impl StatusReporter {
    /// Starts the posting tasks on the current tokio runtime. Links point
    /// at `<public_url>/builds/<id>`.
    pub fn spawn(github: Arc<dyn GitHubApi>, public_url: &str) -> Self {
        let public_url = public_url.trim_end_matches('/').to_owned();
        let lanes = (0..LANES)
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(post_lane(rx, github.clone(), public_url.clone()));
                tx
            })
            .collect();
        StatusReporter {
            lanes: Arc::new(lanes),
        }
    }

    /// Queues a status; returns at once.
    pub fn report(&self, report: BuildReport) {
        let lane = report.build_id.unsigned_abs() as usize % self.lanes.len();
        if self.lanes[lane].send(report).is_err() {
            tracing::warn!("commit status dropped: the status poster has stopped");
        }
    }
}

async fn post_lane(
    mut reports: mpsc::UnboundedReceiver<BuildReport>,
    github: Arc<dyn GitHubApi>,
    public_url: String,
) {
    // The furthest stage posted per build. Finished builds are remembered
    // (so a straggling "queued" is still dropped) up to a bound.
    let mut posted: HashMap<i64, u8> = HashMap::new();
    let mut finished: VecDeque<i64> = VecDeque::new();
    while let Some(report) = reports.recv().await {
        let rank = report.stage.rank();
        if posted.get(&report.build_id).is_some_and(|r| *r > rank) {
            continue;
        }
        if posted.insert(report.build_id, rank) != Some(rank) && rank == FINISHED_RANK {
            finished.push_back(report.build_id);
            if finished.len() > REMEMBERED_FINISHED {
                if let Some(oldest) = finished.pop_front() {
                    posted.remove(&oldest);
                }
            }
        }
        let status = CommitStatus {
            state: report.stage.state(),
            context: format!("sifhub/{}", report.recipe_path),
            description: report.description.clone(),
            target_url: Some(format!("{public_url}/builds/{}", report.build_id)),
        };
        if let Err(e) = github
            .set_status(&report.repo, &report.commit_sha, &status)
            .await
        {
            tracing::warn!(
                "cannot set the {:?} status of build {} on {}@{}: {e}",
                report.stage,
                report.build_id,
                report.repo.full_name(),
                report.commit_sha
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::github::{ByteStream, GitHubError, RemoteRepository, TreeListing};

    /// Records statuses, the first one slowly, as a slow GitHub would.
    #[derive(Debug, Default)]
    struct Recorder {
        seen: Mutex<Vec<(String, &'static str, String)>>,
    }

    #[async_trait::async_trait]
    impl GitHubApi for Recorder {
        async fn tarball(&self, _: &RepoRef, _: &str) -> Result<ByteStream, GitHubError> {
            unreachable!("not used")
        }
        async fn tree(&self, _: &RepoRef, _: &str) -> Result<TreeListing, GitHubError> {
            unreachable!("not used")
        }
        async fn set_status(
            &self,
            _: &RepoRef,
            _: &str,
            status: &CommitStatus,
        ) -> Result<(), GitHubError> {
            let first = self.seen.lock().map(|s| s.is_empty()).unwrap_or(false);
            if first {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            if let Ok(mut seen) = self.seen.lock() {
                seen.push((
                    status.context.clone(),
                    status.state.as_str(),
                    status.description.clone(),
                ));
            }
            Ok(())
        }
        async fn installation_repositories(
            &self,
            _: i64,
        ) -> Result<Vec<RemoteRepository>, GitHubError> {
            unreachable!("not used")
        }
        async fn branch_head(&self, _: &RepoRef, _: &str) -> Result<String, GitHubError> {
            unreachable!("not used")
        }
    }

    fn report(build_id: i64, stage: BuildStage, description: &str) -> BuildReport {
        BuildReport {
            build_id,
            repo: RepoRef {
                owner: "alice".into(),
                name: "analysis".into(),
                installation_id: None,
            },
            commit_sha: "a".repeat(40),
            recipe_path: format!("r{build_id}/Singularity"),
            stage,
            description: description.into(),
        }
    }

    #[tokio::test]
    async fn a_builds_statuses_arrive_in_order_and_never_go_back() {
        let recorder = Arc::new(Recorder::default());
        let reporter = StatusReporter::spawn(recorder.clone(), "https://hub.example/");
        // The claim's "building" overtook the webhook's "queued".
        reporter.report(report(1, BuildStage::Building, "building"));
        reporter.report(report(1, BuildStage::Queued, "queued"));
        reporter.report(report(1, BuildStage::Succeeded, "built"));
        reporter.report(report(1, BuildStage::Queued, "straggler"));
        reporter.report(report(2, BuildStage::Queued, "queued"));
        reporter.report(report(2, BuildStage::Building, "building"));
        reporter.report(report(2, BuildStage::Failed, "failed"));
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let seen = recorder.seen.lock().unwrap().clone();
        let of = |context: &str| -> Vec<(&'static str, String)> {
            seen.iter()
                .filter(|(c, _, _)| c == context)
                .map(|(_, s, d)| (*s, d.clone()))
                .collect()
        };
        assert_eq!(
            of("sifhub/r1/Singularity"),
            [("pending", "building".into()), ("success", "built".into())]
        );
        assert_eq!(
            of("sifhub/r2/Singularity"),
            [
                ("pending", "queued".into()),
                ("pending", "building".into()),
                ("failure", "failed".into())
            ]
        );
    }
}
