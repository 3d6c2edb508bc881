//! GitHub, behind the [`GitHubApi`] trait: the hub asks it for source
//! tarballs, recipe listings and repository lists, and tells it build
//! states as commit statuses. The real client speaks GitHub's REST API at a
//! configurable base URL (github.com, GitHub Enterprise, the test
//! stand-in); webhooks come the other way (see `hub/src/api/webhook.rs`).

pub mod app;
mod client;
pub mod discovery;
pub mod oauth;
pub mod scan;
pub mod status;
pub mod webhook;

pub use client::GitHubClient;

use std::pin::Pin;

use bytes::Bytes;
use futures_util::Stream;

/// A stream of body bytes (a source tarball).
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, GitHubError>> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    /// GitHub answered with an error status.
    #[error("github {what}: {status} {message}")]
    Status {
        what: String,
        status: u16,
        message: String,
    },
    /// GitHub could not be reached or the answer was cut off.
    #[error("github {what}: {message}")]
    Transport { what: String, message: String },
    /// GitHub's answer did not have the expected shape.
    #[error("github {what}: unexpected answer: {message}")]
    Decode { what: String, message: String },
    /// The hub is not set up for this call (no App key, no token).
    #[error("github {what}: {message}")]
    NotConfigured { what: String, message: String },
}

/// A repository on GitHub and how the hub is allowed to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoRef {
    pub owner: String,
    pub name: String,
    /// GitHub's id of the App installation that granted the repository
    /// (App mode: calls use an installation token). `None` in plain webhook
    /// mode: calls use the configured token, or none.
    pub installation_id: Option<i64>,
}

impl RepoRef {
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }
}

/// A commit status's state, as GitHub names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusState {
    Pending,
    Success,
    Failure,
    Error,
}

impl StatusState {
    pub fn as_str(self) -> &'static str {
        match self {
            StatusState::Pending => "pending",
            StatusState::Success => "success",
            StatusState::Failure => "failure",
            StatusState::Error => "error",
        }
    }
}

/// A commit status: one per recipe (`context`), linking to the build page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitStatus {
    pub state: StatusState,
    /// E.g. `sifhub/envs/tools/Singularity.v2`.
    pub context: String,
    /// One short line, e.g. `queued`, `building`, `built in 2m 10s`.
    pub description: String,
    pub target_url: Option<String>,
}

/// A repository an installation can reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteRepository {
    pub github_id: i64,
    pub owner: String,
    pub name: String,
    pub private: bool,
    pub default_branch: String,
}

/// The files of a commit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TreeListing {
    /// Paths of the regular files (blobs), relative to the repository root.
    pub paths: Vec<String>,
    /// GitHub cut the listing short (very large trees).
    pub truncated: bool,
}

/// The GitHub calls the hub makes.
#[async_trait::async_trait]
pub trait GitHubApi: Send + Sync + std::fmt::Debug {
    /// The source tarball (`.tar.gz`) of `repo` at `sha`; private
    /// repositories too, with the repository's credentials.
    async fn tarball(&self, repo: &RepoRef, sha: &str) -> Result<ByteStream, GitHubError>;

    /// Every file path of `repo` at `sha` (for the first build of a
    /// repository and for pushes beyond the 20 commits a payload lists).
    async fn tree(&self, repo: &RepoRef, sha: &str) -> Result<TreeListing, GitHubError>;

    /// Sets a commit status. Does nothing (Ok) when the hub has no
    /// credentials for the repository, as in plain webhook mode without a
    /// token.
    async fn set_status(
        &self,
        repo: &RepoRef,
        sha: &str,
        status: &CommitStatus,
    ) -> Result<(), GitHubError>;

    /// The repositories an App installation can reach.
    async fn installation_repositories(
        &self,
        installation_id: i64,
    ) -> Result<Vec<RemoteRepository>, GitHubError>;

    /// The commit `branch` of `repo` points at now (for a repository's
    /// first builds and for rebuilds).
    async fn branch_head(&self, repo: &RepoRef, branch: &str) -> Result<String, GitHubError>;
}
