//! What owners do to their collections, once, for every front end (the
//! web pages' forms now, the JSON API later): rebuild a recipe, change a
//! repository's settings, enable a repository the App can see, disable
//! one. Each checks the caller's permission itself: through the hub's
//! access rules for a repository it knows, or GitHub's word (the
//! permission GitHub reported to the signed-in user) for one it may not
//! know yet.

use crate::access::Viewer;
use crate::api::webhook::{grant_repository_in, GrantedRepository};
use crate::config::Secret;
use crate::db::{
    request_scan_in, upsert_installation_in, DbError, Permission, Repository, RepositorySettings,
};
use crate::github::oauth::{OAuthClient, UserInstallation, UserRepository};
use crate::github::scan::{repo_ref, report_queued, QueuedBuild};
use crate::github::{GitHubError, RepoRef};
use crate::queue::{NewBuild, QueueError, Trigger, DEFAULT_MAX_ATTEMPTS};
use crate::serve::AppState;

/// Longest branch name accepted in the settings (git allows more; nobody
/// needs it).
const MAX_BRANCH_NAME: usize = 255;
/// Branches a repository may build.
const MAX_BUILD_BRANCHES: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// Unknown, or not visible to the caller.
    #[error("repository {0} not found")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("cannot {action}")]
    Query {
        action: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    GitHub(#[from] GitHubError),
}

fn query(action: &'static str) -> impl FnOnce(sqlx::Error) -> ActionError {
    move |source| ActionError::Query { action, source }
}

/// What an owner may change about a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsUpdate {
    /// Empty: the default branch only.
    pub build_branches: Vec<String>,
    pub private: bool,
    pub paused: bool,
}

/// `owner/name` when `viewer` may read it and has at least `needed`.
async fn repository_for(
    state: &AppState,
    viewer: &Viewer,
    owner: &str,
    name: &str,
    needed: Permission,
) -> Result<Repository, ActionError> {
    let repository = state
        .db
        .readable_repository(viewer, owner, name)
        .await?
        .ok_or_else(|| ActionError::NotFound(format!("{owner}/{name}")))?;
    if state.db.permission(viewer, &repository).await? < Some(needed) {
        return Err(ActionError::Forbidden(format!(
            "changing {} needs write access to it on GitHub",
            repository.full_name()
        )));
    }
    Ok(repository)
}

/// Why `branch` is not a branch name git would accept, if it is not.
fn branch_problem(branch: &str) -> Option<&'static str> {
    if branch.len() > MAX_BRANCH_NAME {
        return Some("is too long");
    }
    if branch.starts_with('/') || branch.ends_with('/') || branch.ends_with(".lock") {
        return Some("cannot start or end with / or end with .lock");
    }
    if branch.contains("..") || branch.contains("//") || branch.contains("@{") {
        return Some("cannot contain .., // or @{");
    }
    if branch
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c))
    {
        return Some("cannot contain spaces, control characters or any of ~^:?*[\\");
    }
    None
}

/// Queues a build of the recipe at `recipe_path` at the head of the
/// repository's default branch (trigger `rebuild`); returns its id.
pub async fn rebuild_recipe(
    state: &AppState,
    viewer: &Viewer,
    owner: &str,
    name: &str,
    recipe_path: &str,
) -> Result<i64, ActionError> {
    let repository = repository_for(state, viewer, owner, name, Permission::Write).await?;
    if repository.paused {
        return Err(ActionError::Invalid(format!(
            "{} is paused: unpause it to build",
            repository.full_name()
        )));
    }
    let recipe = state
        .db
        .list_recipes(repository.id)
        .await?
        .into_iter()
        .find(|r| r.path == recipe_path)
        .ok_or_else(|| {
            ActionError::Invalid(format!(
                "{} has no recipe {recipe_path:?}",
                repository.full_name()
            ))
        })?;
    let repo = repo_ref(&state.db, &repository).await?;
    let branch = repository.default_branch.clone();
    let head = state.github.branch_head(&repo, &branch).await?;
    let enqueued = state
        .queue
        .enqueue(&NewBuild {
            recipe_id: recipe.id,
            commit_sha: head.clone(),
            branch,
            trigger: Trigger::Rebuild,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        })
        .await?;
    let build_id = enqueued.build.id;
    tracing::info!(
        "rebuild of {}:{} queued as build {build_id} at {head} by {}",
        repository.full_name(),
        recipe.path,
        viewer.login().unwrap_or("?")
    );
    report_queued(
        &state.statuses,
        &repo,
        &head,
        &[QueuedBuild {
            build_id,
            recipe_path: recipe.path,
            container: recipe.container_name,
            tag: recipe.tag,
        }],
    );
    Ok(build_id)
}

/// Changes which branches build and whether the repository is private or
/// paused.
pub async fn update_settings(
    state: &AppState,
    viewer: &Viewer,
    owner: &str,
    name: &str,
    update: &SettingsUpdate,
) -> Result<Repository, ActionError> {
    let repository = repository_for(state, viewer, owner, name, Permission::Write).await?;
    if update.build_branches.len() > MAX_BUILD_BRANCHES {
        return Err(ActionError::Invalid(format!(
            "at most {MAX_BUILD_BRANCHES} branches can build"
        )));
    }
    for branch in &update.build_branches {
        if let Some(problem) = branch_problem(branch) {
            return Err(ActionError::Invalid(format!(
                "branch name {branch:?} {problem}"
            )));
        }
    }
    let settings = RepositorySettings {
        build_branches: update.build_branches.clone(),
        private: update.private,
        paused: update.paused,
        webhook_secret: repository.webhook_secret.clone(),
    };
    state
        .db
        .update_repository_settings(repository.id, &settings)
        .await?
        .ok_or_else(|| ActionError::NotFound(repository.full_name()))
}

/// Replaces user `user_id`'s memberships with what GitHub (asked with
/// their token) says they may do to the repositories the hub knows, so
/// private collections show to their collaborators; returns how many.
pub async fn refresh_memberships(
    state: &AppState,
    oauth: &OAuthClient,
    token: &Secret,
    user_id: i64,
) -> Result<usize, ActionError> {
    let mut memberships: Vec<(i64, Permission)> = Vec::new();
    for remote in oauth.user_repositories(token).await? {
        let Some(permission) = remote.permission else {
            continue;
        };
        // Only repositories the hub knows; the rest say nothing here.
        if let Some(known) = state
            .db
            .find_repository_by_github_id(remote.github_id)
            .await?
        {
            memberships.push((known.id, permission));
        }
    }
    state
        .db
        .set_memberships(user_id, &memberships, state.queue.now())
        .await?;
    Ok(memberships.len())
}

/// Whether GitHub says the user may change `remote`.
fn check_manageable(remote: &UserRepository) -> Result<(), ActionError> {
    if remote.permission < Some(Permission::Write) {
        return Err(ActionError::Forbidden(format!(
            "enabling or disabling {}/{} needs write access to it on GitHub",
            remote.owner, remote.name
        )));
    }
    Ok(())
}

/// Adds `remote` (granted by `installation`) to the hub, or takes it out
/// of pause, and queues the first build of every recipe on its default
/// branch through a repository scan (the scanner lists the tree and
/// queues them, as for a repository's first push); an empty repository
/// builds at its first push.
pub async fn enable_repository(
    state: &AppState,
    installation: &UserInstallation,
    remote: &UserRepository,
) -> Result<Repository, ActionError> {
    check_manageable(remote)?;
    let repo = RepoRef {
        owner: remote.owner.clone(),
        name: remote.name.clone(),
        installation_id: Some(installation.id),
    };
    // An empty repository has no branch yet: nothing to build until its
    // first push.
    let head = match state
        .github
        .branch_head(&repo, &remote.default_branch)
        .await
    {
        Ok(head) => Some(head),
        Err(GitHubError::Status {
            status: 404 | 409, ..
        }) => None,
        Err(e) => return Err(e.into()),
    };
    let now = state.queue.now();
    let mut tx = state.db.begin_write().await.map_err(query("begin"))?;
    let installation_row =
        upsert_installation_in(&mut tx, installation.id, &installation.account, now)
            .await
            .map_err(query("record the installation"))?;
    let granted = GrantedRepository {
        github_id: remote.github_id,
        owner: &remote.owner,
        name: &remote.name,
        private: remote.private,
        default_branch: Some(&remote.default_branch),
    };
    let repository = grant_repository_in(&mut tx, installation_row.id, &granted, now)
        .await
        .map_err(query("add the repository"))?;
    let scan = match &head {
        Some(head) => Some(
            request_scan_in(
                &mut tx,
                repository.id,
                head,
                &repository.default_branch,
                None,
                now,
            )
            .await
            .map_err(query("request the repository scan"))?,
        ),
        None => None,
    };
    tx.commit().await?;
    let repository = if repository.paused {
        let settings = RepositorySettings {
            build_branches: repository.build_branches.clone(),
            private: repository.private,
            paused: false,
            webhook_secret: repository.webhook_secret.clone(),
        };
        state
            .db
            .update_repository_settings(repository.id, &settings)
            .await?
            .ok_or_else(|| ActionError::NotFound(repository.full_name()))?
    } else {
        repository
    };
    match (scan, head) {
        (Some(scan), Some(head)) => tracing::info!(
            "{} enabled: scan {scan} of {head} queues its recipes",
            repository.full_name()
        ),
        _ => tracing::info!(
            "{} enabled: its branch {} has no commit yet",
            repository.full_name(),
            repository.default_branch
        ),
    }
    Ok(repository)
}

/// Pauses `remote`: pushes build nothing until it is enabled again; its
/// images stay. Nothing to do when the hub does not know it.
pub async fn disable_repository(
    state: &AppState,
    remote: &UserRepository,
) -> Result<(), ActionError> {
    check_manageable(remote)?;
    let Some(repository) = state
        .db
        .find_repository_by_github_id(remote.github_id)
        .await?
    else {
        return Ok(());
    };
    let settings = RepositorySettings {
        build_branches: repository.build_branches.clone(),
        private: repository.private,
        paused: true,
        webhook_secret: repository.webhook_secret.clone(),
    };
    state
        .db
        .update_repository_settings(repository.id, &settings)
        .await?;
    tracing::info!("{} disabled (paused)", repository.full_name());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::branch_problem;

    #[test]
    fn branch_names_follow_git() {
        assert_eq!(branch_problem("main"), None);
        assert_eq!(branch_problem("release/1.2"), None);
        assert!(branch_problem("a b").is_some());
        assert!(branch_problem("a..b").is_some());
        assert!(branch_problem("/a").is_some());
        assert!(branch_problem("x.lock").is_some());
        assert!(branch_problem("a:b").is_some());
    }
}
