//! Webhooks as GitHub sends them: the sender (GitHub's headers, HMAC
//! signatures of the raw body) and payload builders with GitHub's shapes,
//! computed from the stand-in's git repositories.

use ring::hmac;
use serde_json::{json, Value};

use crate::git::ZERO_SHA;
use crate::github::StandInRepo;

/// Commits a push payload lists by default: the cap GitHub documents for
/// push events (the "20 commits a payload lists").
pub const PUSH_PAYLOAD_COMMITS: usize = 20;

/// The sender every payload names.
pub const SENDER_LOGIN: &str = "octo-pusher";
const SENDER_ID: i64 = 583231;

/// A new delivery id (GitHub: a UUID per delivery; a redelivery reuses it).
pub fn new_delivery_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `sha256=<hex>`, GitHub's `X-Hub-Signature-256`.
pub fn signature_256(secret: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    format!("sha256={}", hex::encode(hmac::sign(&key, body).as_ref()))
}

/// `sha1=<hex>`, GitHub's legacy `X-Hub-Signature`.
pub fn signature_1(secret: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    format!("sha1={}", hex::encode(hmac::sign(&key, body).as_ref()))
}

/// The headers GitHub sends with a delivery of `body`; signatures only when
/// the hook has a secret, as on GitHub.
pub fn delivery_headers(
    event: &str,
    delivery_id: &str,
    body: &[u8],
    secret: Option<&str>,
) -> Vec<(String, String)> {
    let mut headers = vec![
        (
            "User-Agent".to_owned(),
            "GitHub-Hookshot/8c4bd3f".to_owned(),
        ),
        ("Content-Type".to_owned(), "application/json".to_owned()),
        ("X-GitHub-Event".to_owned(), event.to_owned()),
        ("X-GitHub-Delivery".to_owned(), delivery_id.to_owned()),
        ("X-GitHub-Hook-ID".to_owned(), "424242".to_owned()),
    ];
    if let Some(secret) = secret {
        headers.push(("X-Hub-Signature".to_owned(), signature_1(secret, body)));
        headers.push((
            "X-Hub-Signature-256".to_owned(),
            signature_256(secret, body),
        ));
    }
    headers
}

/// Delivers `payload` as event `event` to `url` with a new delivery id;
/// returns the answer's status and body.
pub async fn deliver(
    url: &str,
    event: &str,
    payload: &Value,
    secret: Option<&str>,
) -> (u16, String) {
    deliver_as(&new_delivery_id(), url, event, payload, secret).await
}

/// Delivers with the given delivery id (a redelivery).
pub async fn deliver_as(
    delivery_id: &str,
    url: &str,
    event: &str,
    payload: &Value,
    secret: Option<&str>,
) -> (u16, String) {
    let body = serde_json::to_vec(payload).unwrap();
    deliver_raw(
        url,
        &delivery_headers(event, delivery_id, &body, secret),
        body,
    )
    .await
}

/// Sends `body` with exactly `headers` (for tampered or unsigned
/// deliveries).
pub async fn deliver_raw(url: &str, headers: &[(String, String)], body: Vec<u8>) -> (u16, String) {
    let client = reqwest::Client::new();
    let mut request = client.post(url).body(body);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("cannot deliver webhook to {url}: {e}"));
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

fn sender() -> Value {
    json!({"login": SENDER_LOGIN, "id": SENDER_ID, "type": "User"})
}

fn installation(repo: &StandInRepo) -> Option<Value> {
    repo.installation_id
        .map(|id| json!({"id": id, "node_id": format!("MDIz{id}")}))
}

/// The `repository` object of a push payload.
fn push_repository(repo: &StandInRepo) -> Value {
    let full_name = repo.full_name();
    json!({
        "id": repo.id,
        "node_id": format!("R_{}", repo.id),
        "name": repo.name,
        "full_name": full_name,
        "private": repo.private,
        "owner": {
            "name": repo.owner,
            "login": repo.owner,
            "id": repo.owner_id,
            "type": "User",
        },
        "html_url": format!("https://github.com/{full_name}"),
        "clone_url": format!("https://github.com/{full_name}.git"),
        "default_branch": repo.default_branch,
        "master_branch": repo.default_branch,
    })
}

/// The short `repository` object of installation payloads.
fn short_repository(repo: &StandInRepo) -> Value {
    json!({
        "id": repo.id,
        "node_id": format!("R_{}", repo.id),
        "name": repo.name,
        "full_name": repo.full_name(),
        "private": repo.private,
    })
}

fn commit_json(repo: &StandInRepo, sha: &str) -> Value {
    let (message, name, email, timestamp, tree) = repo.git.commit_info(sha);
    let changes = repo.git.changes(sha);
    let person = json!({"name": name, "email": email, "username": SENDER_LOGIN});
    json!({
        "id": sha,
        "tree_id": tree,
        "distinct": true,
        "message": message,
        "timestamp": timestamp,
        "url": format!("https://github.com/{}/commit/{sha}", repo.full_name()),
        "author": person,
        "committer": person,
        "added": changes.added,
        "removed": changes.removed,
        "modified": changes.modified,
    })
}

/// A `push` payload for `git_ref` (a branch name, or a full `refs/…` ref
/// such as `refs/tags/v1`) moving from `before` to `after`; [`ZERO_SHA`]
/// for a new ref's `before` and a deleted ref's `after`. Commits are read
/// from the repository: the newest [`PUSH_PAYLOAD_COMMITS`], oldest first,
/// each with its `added`/`modified`/`removed` files.
pub fn push_payload(repo: &StandInRepo, git_ref: &str, before: &str, after: &str) -> Value {
    push_payload_listing(repo, git_ref, before, after, PUSH_PAYLOAD_COMMITS)
}

/// [`push_payload`] listing at most `max_commits` commits. GitHub documents
/// 20 for timeline events and a larger cap for webhook deliveries, so the
/// hub must not rely on one number.
pub fn push_payload_listing(
    repo: &StandInRepo,
    git_ref: &str,
    before: &str,
    after: &str,
    max_commits: usize,
) -> Value {
    let full_ref = if git_ref.starts_with("refs/") {
        git_ref.to_owned()
    } else {
        format!("refs/heads/{git_ref}")
    };
    let created = before == ZERO_SHA;
    let deleted = after == ZERO_SHA;
    let forced = !created && !deleted && !repo.git.is_ancestor(before, after);
    let mut commits: Vec<String> = if deleted || full_ref.starts_with("refs/tags/") {
        Vec::new()
    } else {
        repo.git.commits_between(before, after, &full_ref)
    };
    if commits.len() > max_commits {
        commits.drain(..commits.len() - max_commits);
    }
    let commits: Vec<Value> = commits.iter().map(|sha| commit_json(repo, sha)).collect();
    let head_commit = if deleted {
        Value::Null
    } else {
        commit_json(repo, after)
    };
    let compare = if created {
        format!(
            "https://github.com/{}/commit/{}",
            repo.full_name(),
            &after[..12.min(after.len())]
        )
    } else {
        format!(
            "https://github.com/{}/compare/{}...{}",
            repo.full_name(),
            &before[..12.min(before.len())],
            &after[..12.min(after.len())]
        )
    };
    let mut payload = json!({
        "ref": full_ref,
        "before": before,
        "after": after,
        "created": created,
        "deleted": deleted,
        "forced": forced,
        "base_ref": null,
        "compare": compare,
        "commits": commits,
        "head_commit": head_commit,
        "repository": push_repository(repo),
        "pusher": {"name": SENDER_LOGIN, "email": "pusher@example.com"},
        "sender": sender(),
    });
    if let Some(installation) = installation(repo) {
        payload["installation"] = installation;
    }
    payload
}

/// A `ping` payload, sent when a hook is made: for a repository's hook, or
/// the App's (`repo` = `None`, `app_id` set).
pub fn ping_payload(repo: Option<&StandInRepo>, app_id: Option<u64>) -> Value {
    let mut hook = json!({
        "type": if app_id.is_some() { "App" } else { "Repository" },
        "id": 424242,
        "name": "web",
        "active": true,
        "events": ["push"],
        "config": {"content_type": "json", "insecure_ssl": "0", "url": "https://hub.example.org/api/github/webhook"},
    });
    if let Some(app_id) = app_id {
        hook["app_id"] = json!(app_id);
    }
    let mut payload = json!({
        "zen": "Design for failure.",
        "hook_id": 424242,
        "hook": hook,
        "sender": sender(),
    });
    if let Some(repo) = repo {
        payload["repository"] = push_repository(repo);
    }
    payload
}

/// GitHub's `installation` object.
pub fn installation_object(installation_id: i64, account: &str, app_id: u64) -> Value {
    json!({
        "id": installation_id,
        "account": {"login": account, "id": 9_000_000 + installation_id, "type": "User"},
        "app_id": app_id,
        "target_type": "User",
        "repository_selection": "selected",
        "permissions": {"contents": "read", "statuses": "write", "checks": "write", "metadata": "read"},
        "events": ["push"],
    })
}

/// An `installation` payload: `action` is `created` (with the granted
/// `repos`), `deleted`, `suspend` or `unsuspend`.
pub fn installation_payload(
    action: &str,
    installation_id: i64,
    account: &str,
    app_id: u64,
    repos: &[&StandInRepo],
) -> Value {
    json!({
        "action": action,
        "installation": installation_object(installation_id, account, app_id),
        "repositories": repos.iter().map(|r| short_repository(r)).collect::<Vec<_>>(),
        "requester": null,
        "sender": sender(),
    })
}

/// An `installation_repositories` payload: repositories added to or
/// removed from an installation (`action` is `added` when any were added).
pub fn installation_repositories_payload(
    installation_id: i64,
    account: &str,
    app_id: u64,
    added: &[&StandInRepo],
    removed: &[&StandInRepo],
) -> Value {
    json!({
        "action": if added.is_empty() { "removed" } else { "added" },
        "installation": installation_object(installation_id, account, app_id),
        "repository_selection": "selected",
        "repositories_added": added.iter().map(|r| short_repository(r)).collect::<Vec<_>>(),
        "repositories_removed": removed.iter().map(|r| short_repository(r)).collect::<Vec<_>>(),
        "requester": null,
        "sender": sender(),
    })
}
