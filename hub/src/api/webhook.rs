//! GitHub webhook deliveries: `POST /webhooks/github` for the GitHub App
//! (signed with `github_webhook_secret`) and
//! `POST /webhooks/github/{owner}/{repo}` for a repository in plain webhook
//! mode (signed with its own secret, see `sifhub admin repo add`).
//!
//! A delivery is checked before anything else: the body is read up to
//! GitHub's 25 MiB cap (413 beyond), and its `X-Hub-Signature-256` must
//! match (401) before any JSON is parsed. Then, in ONE transaction, the
//! delivery is recorded by its `X-GitHub-Delivery` id (a second copy finds
//! it recorded and does nothing), and what it asks for is done: a push
//! records its changed recipes and queues their builds, or records a
//! repository scan when the tree must be listed; installation events add
//! and detach repositories. The answer never waits for GitHub: the scan and
//! the commit statuses happen in the background.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;

use crate::db::{
    attach_repository_in, count_recipes_in, delete_installation_in, detach_repository_in,
    insert_repository_in, is_unique_violation, record_delivery_in, request_scan_in,
    set_default_branch_in, set_delivery_outcome_in, upsert_installation_in, NewRepository,
    Repository, RepositorySettings, Timestamp, WriteTx,
};
use crate::github::discovery::{needs_tree_listing, resolve_conflicts, ChangeSet};
use crate::github::scan::{queue_recipes_in, report_queued, QueuedBuild, TX_RETRIES};
use crate::github::webhook::{
    verify_signature, InstallationEvent, InstallationRepositoriesEvent, PayloadRepository,
    PushEvent, SignatureError,
};
use crate::github::RepoRef;
use crate::serve::AppState;

/// GitHub never sends a larger payload.
pub const MAX_BODY_BYTES: usize = 25 * 1024 * 1024;

/// The default branch assumed for a repository an installation grants,
/// whose payload does not say it; the first push corrects it.
const ASSUMED_DEFAULT_BRANCH: &str = "main";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/webhooks/github", post(app_delivery))
        .route("/webhooks/github/{owner}/{repo}", post(plain_delivery))
}

/// What the hub answers to a delivery it accepted.
#[derive(Debug, Serialize)]
pub struct DeliveryResponse {
    pub delivery: String,
    /// What the hub made of it (also recorded with the delivery).
    pub outcome: String,
    /// This delivery id was handled before; nothing was done now.
    pub duplicate: bool,
    pub builds: Vec<QueuedBuild>,
    /// The repository scan requested, when the tree must be listed.
    pub scan: Option<i64>,
}

/// A refused delivery: `{"error": "..."}` with its status.
#[derive(Debug)]
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        if self.0.is_server_error() {
            tracing::error!("webhook: {}", self.1);
        }
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal(status, message.into())
}

fn internal(e: impl std::fmt::Display) -> Refusal {
    refuse(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}"))
}

/// Which endpoint a delivery came to.
enum Mode {
    App,
    /// Plain webhook mode for this repository.
    Plain(Repository),
}

async fn app_delivery(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
    let Some(secret) = state.config.github_webhook_secret.clone() else {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            "this hub has no GitHub App webhook secret (github_webhook_secret); \
             a repository in plain webhook mode posts to /webhooks/github/OWNER/REPO",
        ));
    };
    let body = verified_body(secret.expose().as_bytes(), &headers, body).await?;
    handle(&state, &headers, &body, Mode::App).await
}

async fn plain_delivery(
    State(state): State<AppState>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
    let repository = state
        .db
        .find_repository(&owner, &repo)
        .await
        .map_err(internal)?;
    let Some((repository, secret)) =
        repository.and_then(|r| r.webhook_secret.clone().map(|s| (r, s)))
    else {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            format!(
                "no plain webhook is set up for {owner}/{repo} (sifhub admin repo add {owner}/{repo})"
            ),
        ));
    };
    let body = verified_body(secret.as_bytes(), &headers, body).await?;
    handle(&state, &headers, &body, Mode::Plain(repository)).await
}

/// The body, read up to [`MAX_BODY_BYTES`] and checked against the
/// signature header; nothing of it is parsed before the check passes.
async fn verified_body(
    secret: &[u8],
    headers: &HeaderMap,
    body: Body,
) -> Result<bytes::Bytes, Refusal> {
    let signature = headers
        .get("x-hub-signature-256")
        .map(|v| v.to_str().map_err(|_| SignatureError::Malformed))
        .transpose()
        .map_err(|e| refuse(StatusCode::UNAUTHORIZED, e.to_string()))?;
    // Unsigned: refused before reading a byte of the body.
    if signature.is_none() {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            SignatureError::Missing.to_string(),
        ));
    }
    let too_large = || {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("webhook body larger than {MAX_BODY_BYTES} bytes"),
        )
    };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| too_large())?;
    verify_signature(secret, &body, signature)
        .map_err(|e| refuse(StatusCode::UNAUTHORIZED, e.to_string()))?;
    Ok(body)
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Result<&'h str, Refusal> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, format!("missing {name} header")))
}

fn parse<T: serde::de::DeserializeOwned>(event: &str, body: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|e| {
        refuse(
            StatusCode::BAD_REQUEST,
            format!("malformed {event} payload: {e}"),
        )
    })
}

/// What a verified delivery asks the hub to do, decided before the
/// transaction from the payload and the repository.
enum Plan {
    /// Record the delivery and do nothing else, answering `status`.
    Nothing {
        status: StatusCode,
        reason: String,
    },
    Push(Box<PushPlan>),
    Installation(InstallationPlan),
}

struct PushPlan {
    repository: Repository,
    /// How to reach it on GitHub, for commit statuses.
    repo_ref: RepoRef,
    sha: String,
    branch: String,
    commit_count: usize,
    changes: ChangeSet,
    /// GitHub's default branch when the catalog has another.
    new_default_branch: Option<String>,
}

enum InstallationPlan {
    /// Record the installation and attach (or add) these repositories.
    Grant {
        installation_github_id: i64,
        account: String,
        repositories: Vec<PayloadRepository>,
    },
    /// Detach these repositories (GitHub ids) from the installation.
    Revoke {
        repositories: Vec<PayloadRepository>,
    },
    /// The App was uninstalled.
    Delete { installation_github_id: i64 },
}

async fn handle(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
    mode: Mode,
) -> Result<Response, Refusal> {
    let event = header(headers, "x-github-event")?;
    let delivery = header(headers, "x-github-delivery")?;
    let plan = match (event, &mode) {
        ("ping", _) => Plan::Nothing {
            status: StatusCode::OK,
            reason: "pong".to_owned(),
        },
        ("push", _) => plan_push(state, parse(event, body)?, mode).await?,
        ("installation", Mode::App) => plan_installation(parse(event, body)?),
        ("installation_repositories", Mode::App) => {
            plan_installation_repositories(parse(event, body)?)
        }
        _ => Plan::Nothing {
            status: StatusCode::ACCEPTED,
            reason: format!("ignored: the hub does not act on {event} events"),
        },
    };
    deliver(state, delivery, event, plan).await
}

async fn plan_push(state: &AppState, push: PushEvent, mode: Mode) -> Result<Plan, Refusal> {
    let full_name = &push.repository.full_name;
    let nothing = |reason: String| Plan::Nothing {
        status: StatusCode::OK,
        reason,
    };
    let repository = match mode {
        Mode::Plain(repository) => {
            if !repository.full_name().eq_ignore_ascii_case(full_name) {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "the push is for {full_name}, not {}",
                        repository.full_name()
                    ),
                ));
            }
            repository
        }
        Mode::App => {
            let by_id = state
                .db
                .find_repository_by_github_id(push.repository.id)
                .await
                .map_err(internal)?;
            match by_id.filter(|r| r.installation_id.is_some()) {
                Some(repository) => repository,
                None => {
                    return Ok(nothing(format!(
                        "unknown repository {full_name}: the GitHub App is not installed on it"
                    )))
                }
            }
        }
    };
    if repository.paused {
        return Ok(nothing(format!(
            "{} is paused: nothing built",
            repository.full_name()
        )));
    }
    let Some(branch) = push.branch() else {
        return Ok(nothing(format!(
            "{} is not a branch: tag pushes build nothing",
            push.git_ref
        )));
    };
    if push.is_deletion() {
        return Ok(nothing(format!(
            "branch {branch} was deleted: nothing built"
        )));
    }
    let new_default_branch = push
        .repository
        .default_branch
        .clone()
        .filter(|b| *b != repository.default_branch);
    let mut effective = repository.clone();
    if let Some(default_branch) = &new_default_branch {
        effective.default_branch = default_branch.clone();
    }
    if !effective.builds_branch(branch) {
        let configured = if effective.build_branches.is_empty() {
            format!("the default branch {}", effective.default_branch)
        } else {
            effective.build_branches.join(", ")
        };
        return Ok(nothing(format!(
            "branch {branch} is not configured to build (builds: {configured})"
        )));
    }
    let (owner, name) = (repository.owner.clone(), repository.name.clone());
    Ok(Plan::Push(Box::new(PushPlan {
        repository,
        // App deliveries name the installation; plain ones use the hub's token.
        repo_ref: RepoRef {
            owner,
            name,
            installation_id: push.installation.as_ref().map(|i| i.id),
        },
        sha: push.after.clone(),
        branch: branch.to_owned(),
        commit_count: push.commits.len(),
        changes: crate::github::discovery::change_set(&push.commits),
        new_default_branch,
    })))
}

fn plan_installation(event: InstallationEvent) -> Plan {
    match event.action.as_str() {
        "created" | "unsuspend" => Plan::Installation(InstallationPlan::Grant {
            installation_github_id: event.installation.id,
            account: event.installation.account.login,
            repositories: event.repositories,
        }),
        "deleted" => Plan::Installation(InstallationPlan::Delete {
            installation_github_id: event.installation.id,
        }),
        action => Plan::Nothing {
            status: StatusCode::ACCEPTED,
            reason: format!("ignored: installation {action}"),
        },
    }
}

fn plan_installation_repositories(event: InstallationRepositoriesEvent) -> Plan {
    match event.action.as_str() {
        "added" => Plan::Installation(InstallationPlan::Grant {
            installation_github_id: event.installation.id,
            account: event.installation.account.login,
            repositories: event.repositories_added,
        }),
        "removed" => Plan::Installation(InstallationPlan::Revoke {
            repositories: event.repositories_removed,
        }),
        action => Plan::Nothing {
            status: StatusCode::ACCEPTED,
            reason: format!("ignored: installation_repositories {action}"),
        },
    }
}

/// What carrying out a plan did.
struct Done {
    status: StatusCode,
    outcome: String,
    builds: Vec<QueuedBuild>,
    scan: Option<i64>,
}

impl Done {
    fn nothing(status: StatusCode, outcome: String) -> Self {
        Done {
            status,
            outcome,
            builds: Vec::new(),
            scan: None,
        }
    }
}

/// Records the delivery and carries out the plan in one transaction,
/// retried whole when a concurrent enqueue won a race on PostgreSQL.
async fn deliver(
    state: &AppState,
    delivery: &str,
    event: &str,
    plan: Plan,
) -> Result<Response, Refusal> {
    for _ in 0..TX_RETRIES {
        let now = state.queue.now();
        let mut tx = state.db.begin_write().await.map_err(internal)?;
        let new = record_delivery_in(&mut tx, delivery, event, now)
            .await
            .map_err(internal)?;
        if !new {
            drop(tx);
            let previous = state
                .db
                .find_delivery(delivery)
                .await
                .map_err(internal)?
                .and_then(|d| d.outcome)
                .unwrap_or_default();
            return Ok(respond(
                delivery,
                Done::nothing(
                    StatusCode::OK,
                    format!("duplicate delivery: handled before ({previous})"),
                ),
                true,
            ));
        }
        let done = match carry_out(&mut tx, &plan, delivery, now).await {
            Ok(done) => done,
            Err(e) if is_unique_violation(&e) => continue,
            Err(e) => return Err(internal(format!("delivery {delivery}: {e}"))),
        };
        set_delivery_outcome_in(&mut tx, delivery, &done.outcome)
            .await
            .map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        state.queue.wake_workers();
        tracing::info!("webhook {event} {delivery}: {}", done.outcome);
        if let Plan::Push(push) = &plan {
            report_queued(&state.statuses, &push.repo_ref, &push.sha, &done.builds);
        }
        return Ok(respond(delivery, done, false));
    }
    Err(refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("delivery {delivery}: kept conflicting with concurrent builds; redeliver it"),
    ))
}

fn respond(delivery: &str, done: Done, duplicate: bool) -> Response {
    let body = DeliveryResponse {
        delivery: delivery.to_owned(),
        outcome: done.outcome,
        duplicate,
        builds: done.builds,
        scan: done.scan,
    };
    (done.status, Json(body)).into_response()
}

async fn carry_out(
    tx: &mut WriteTx,
    plan: &Plan,
    delivery: &str,
    now: Timestamp,
) -> Result<Done, sqlx::Error> {
    match plan {
        Plan::Nothing { status, reason } => Ok(Done::nothing(*status, reason.clone())),
        Plan::Push(push) => carry_out_push(tx, push, delivery, now).await,
        Plan::Installation(installation) => carry_out_installation(tx, installation, now).await,
    }
}

async fn carry_out_push(
    tx: &mut WriteTx,
    push: &PushPlan,
    delivery: &str,
    now: Timestamp,
) -> Result<Done, sqlx::Error> {
    let repository = &push.repository;
    if let Some(default_branch) = &push.new_default_branch {
        set_default_branch_in(tx, repository.id, default_branch).await?;
    }
    // Counted inside the transaction: of two first pushes, the second sees
    // the recipes the first recorded (or, if the first scanned, scans too).
    let has_recipes = count_recipes_in(tx, repository.id).await? > 0;
    if needs_tree_listing(push.commit_count, has_recipes) {
        let scan = request_scan_in(
            tx,
            repository.id,
            &push.sha,
            &push.branch,
            Some(delivery),
            now,
        )
        .await?;
        let why = if has_recipes {
            "the payload may list only some of the commits"
        } else {
            "no recipes are known for the repository yet"
        };
        return Ok(Done {
            status: StatusCode::ACCEPTED,
            outcome: format!("listing the tree at {} (scan {scan}): {why}", push.sha),
            builds: Vec::new(),
            scan: Some(scan),
        });
    }
    let (recipes, conflicts) = resolve_conflicts(&repository.name, &push.changes.changed);
    let mut queued = queue_recipes_in(
        tx,
        repository,
        &recipes,
        &push.changes.removed,
        &push.sha,
        &push.branch,
        now,
    )
    .await?;
    queued.conflicts.splice(0..0, conflicts);
    let outcome = if recipes.is_empty() {
        "no recipe changed: nothing built".to_owned()
    } else {
        queued.summary()
    };
    Ok(Done {
        status: StatusCode::ACCEPTED,
        outcome,
        builds: queued.builds,
        scan: None,
    })
}

/// A repository an installation grants, as GitHub names it.
pub(crate) struct GrantedRepository<'a> {
    pub github_id: i64,
    pub owner: &'a str,
    pub name: &'a str,
    pub private: bool,
    /// `None`: not said (installation payloads); assumed `main`.
    pub default_branch: Option<&'a str>,
}

/// Puts the repository under the installation (internal id
/// `installation_id`), adding it to the catalog when it is new, inside
/// the caller's transaction: what an installation delivery does for each
/// repository, and what enabling one on the connect page does.
pub(crate) async fn grant_repository_in(
    tx: &mut WriteTx,
    installation_id: i64,
    repo: &GrantedRepository<'_>,
    now: Timestamp,
) -> Result<Repository, sqlx::Error> {
    let attached =
        attach_repository_in(tx, repo.github_id, repo.owner, repo.name, installation_id).await?;
    if let Some(attached) = attached {
        return Ok(attached);
    }
    let new = NewRepository {
        github_id: Some(repo.github_id),
        owner: repo.owner.to_owned(),
        name: repo.name.to_owned(),
        default_branch: repo
            .default_branch
            .unwrap_or(ASSUMED_DEFAULT_BRANCH)
            .to_owned(),
        installation_id: Some(installation_id),
        settings: RepositorySettings {
            private: repo.private,
            ..RepositorySettings::default()
        },
    };
    insert_repository_in(tx, &new, now).await
}

async fn carry_out_installation(
    tx: &mut WriteTx,
    plan: &InstallationPlan,
    now: Timestamp,
) -> Result<Done, sqlx::Error> {
    let outcome = match plan {
        InstallationPlan::Grant {
            installation_github_id,
            account,
            repositories,
        } => {
            let installation =
                upsert_installation_in(tx, *installation_github_id, account, now).await?;
            let mut names = BTreeSet::new();
            for repo in repositories {
                let Some((owner, name)) = repo.owner_and_name() else {
                    continue;
                };
                let granted = GrantedRepository {
                    github_id: repo.id,
                    owner,
                    name,
                    private: repo.private,
                    default_branch: repo.default_branch.as_deref(),
                };
                grant_repository_in(tx, installation.id, &granted, now).await?;
                names.insert(repo.full_name.clone());
            }
            format!(
                "installation {installation_github_id} on {account}: added {} repositories ({})",
                names.len(),
                names.into_iter().collect::<Vec<_>>().join(", ")
            )
        }
        InstallationPlan::Revoke { repositories } => {
            let mut names = Vec::new();
            for repo in repositories {
                if detach_repository_in(tx, repo.id).await? {
                    names.push(repo.full_name.clone());
                }
            }
            format!(
                "removed {} repositories ({}): they build nothing until granted again",
                names.len(),
                names.join(", ")
            )
        }
        InstallationPlan::Delete {
            installation_github_id,
        } => {
            delete_installation_in(tx, *installation_github_id, now).await?;
            format!("installation {installation_github_id} deleted: its repositories build nothing")
        }
    };
    Ok(Done::nothing(StatusCode::OK, outcome))
}
