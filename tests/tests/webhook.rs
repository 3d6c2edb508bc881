//! GitHub webhook deliveries through the hub's real router and database:
//! signatures, deduplication, what a push builds, installation events, and
//! `sifhub admin repo add` followed by a plain-mode delivery.

use std::future::Future;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};
use sifhub::config::{Config, Secret};
use sifhub::db::Db;
use sifhub::github::scan::run_pending_scans;
use sifhub::github::webhook::sign;
use sifhub::queue::BuildStatus;
use sifhub::serve::{router, AppState};
use sifhub_tests::git::ZERO_SHA;
use sifhub_tests::github::GitHubStandIn;
use sifhub_tests::postgres::{both_backends, sqlite_database};
use sifhub_tests::webhook;
use tower::ServiceExt as _;

const APP_SECRET: &str = "app-webhook-secret";
const INSTALLATION: i64 = 42;
const REPO_ID: i64 = 1001;

struct Hub {
    state: AppState,
    standin: GitHubStandIn,
    _data_dir: tempfile::TempDir,
}

struct Answer {
    status: StatusCode,
    body: Value,
}

impl Hub {
    async fn new(url: &str) -> Hub {
        let standin = GitHubStandIn::start().await;
        let data_dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: data_dir.path().to_owned(),
            database_url: Some(url.to_owned()),
            github_webhook_secret: Some(Secret::new(APP_SECRET)),
            public_url: Some("https://hub.example".to_owned()),
            github_api_url: standin.base_url(),
            github_app_id: Some(standin.app_id()),
            github_app_key_file: Some(standin.app_key_file().to_owned()),
            ..Config::default()
        };
        Hub {
            state: AppState::open(&config).await.unwrap(),
            standin,
            _data_dir: data_dir,
        }
    }

    /// Records a recipe of alice/analysis, as an earlier push would have.
    async fn add_recipe(&self, path: &str, container: &str, tag: &str) {
        let repo = self
            .db()
            .find_repository("alice", "analysis")
            .await
            .unwrap()
            .unwrap();
        self.db()
            .upsert_recipe(repo.id, path, container, tag, sifhub::db::Timestamp::now())
            .await
            .unwrap();
    }

    fn db(&self) -> &Db {
        &self.state.db
    }

    /// Posts raw `body` with the given headers.
    async fn post(&self, path: &str, headers: &[(&str, String)], body: Vec<u8>) -> Answer {
        let mut request = Request::post(path).header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = router(self.state.clone())
            .oneshot(request.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Answer { status, body }
    }

    /// Sends `payload` as GitHub does: event, delivery id, signature.
    async fn deliver(
        &self,
        path: &str,
        secret: &str,
        event: &str,
        delivery: &str,
        payload: &Value,
    ) -> Answer {
        let body = serde_json::to_vec(payload).unwrap();
        let headers = [
            ("x-github-event", event.to_owned()),
            ("x-github-delivery", delivery.to_owned()),
            ("x-hub-signature-256", sign(secret.as_bytes(), &body)),
            ("user-agent", "GitHub-Hookshot/test".to_owned()),
        ];
        self.post(path, &headers, body).await
    }

    async fn app(&self, event: &str, delivery: &str, payload: &Value) -> Answer {
        self.deliver("/webhooks/github", APP_SECRET, event, delivery, payload)
            .await
    }

    /// The App installed on alice with `alice/analysis` granted.
    async fn install(&self) {
        let answer = self
            .app(
                "installation",
                "install-1",
                &json!({
                    "action": "created",
                    "installation": {"id": INSTALLATION, "account": {"login": "alice"}},
                    "repositories": [repo_short(REPO_ID, "alice/analysis")],
                }),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    }

    /// Every build as `(container:tag, recipe path, branch, sha, status)`, sorted.
    async fn builds(&self) -> Vec<(String, String, String, String, BuildStatus)> {
        let mut all = Vec::new();
        for repo in self.db().list_repositories().await.unwrap() {
            for recipe in self.db().list_recipes(repo.id).await.unwrap() {
                for build in self.state.queue.builds_of_recipe(recipe.id).await.unwrap() {
                    all.push((
                        format!("{}:{}", recipe.container_name, recipe.tag),
                        recipe.path.clone(),
                        build.branch,
                        build.commit_sha,
                        build.status,
                    ));
                }
            }
        }
        all.sort_by(|a, b| (&a.0, &a.1, &a.2, &a.3).cmp(&(&b.0, &b.1, &b.2, &b.3)));
        all
    }

    async fn build_count(&self) -> usize {
        self.builds().await.len()
    }
}

fn repo_short(id: i64, full_name: &str) -> Value {
    let name = full_name.split('/').nth(1).unwrap();
    json!({"id": id, "full_name": full_name, "name": name, "private": false})
}

fn commit(sha: &str, added: &[&str], modified: &[&str], removed: &[&str]) -> Value {
    json!({"id": sha, "added": added, "modified": modified, "removed": removed})
}

fn push(git_ref: &str, after: &str, commits: Vec<Value>) -> Value {
    json!({
        "ref": git_ref,
        "before": "1111111111111111111111111111111111111111",
        "after": after,
        "created": false,
        "deleted": false,
        "forced": false,
        "commits": commits,
        "head_commit": null,
        "repository": {
            "id": REPO_ID, "full_name": "alice/analysis", "name": "analysis",
            "private": false, "default_branch": "main", "owner": {"login": "alice"}
        },
        "installation": {"id": INSTALLATION},
        "sender": {"login": "alice"},
    })
}

async fn on_both<F, Fut>(test: &str, body: F)
where
    F: Fn(Hub) -> Fut,
    Fut: Future<Output = ()>,
{
    for database in both_backends(test) {
        eprintln!("--- {test} on {database:?}");
        let hub = Hub::new(&database.url).await;
        body(hub).await;
    }
}

/// A repository that already has a recipe, so pushes use the payload's
/// file lists (its first delivery would list the tree instead).
async fn installed_with_a_recipe(hub: &Hub) {
    hub.install().await;
    hub.add_recipe("legacy/Singularity", "legacy", "latest")
        .await;
}

#[tokio::test]
async fn a_push_builds_the_recipes_it_changed_and_only_those() {
    on_both("webhook_push", |hub| async move {
        installed_with_a_recipe(&hub).await;
        let first = hub
            .app(
                "push",
                "push-1",
                &push(
                    "refs/heads/main",
                    "a1",
                    vec![commit(
                        "a1",
                        &["Singularity", "envs/tools/Singularity.v2", "README.md"],
                        &[],
                        &[],
                    )],
                ),
            )
            .await;
        assert_eq!(first.status, StatusCode::ACCEPTED, "{:?}", first.body);
        assert_eq!(first.body["builds"].as_array().unwrap().len(), 2);
        assert_eq!(
            hub.builds().await,
            [
                (
                    "analysis:latest".into(),
                    "Singularity".into(),
                    "main".into(),
                    "a1".into(),
                    BuildStatus::Queued
                ),
                (
                    "tools:v2".into(),
                    "envs/tools/Singularity.v2".into(),
                    "main".into(),
                    "a1".into(),
                    BuildStatus::Queued
                ),
            ]
        );
        let delivery = hub.db().find_delivery("push-1").await.unwrap().unwrap();
        assert_eq!(delivery.outcome.as_deref(), Some("queued 2 build(s)"));

        let second = hub
            .app(
                "push",
                "push-2",
                &push(
                    "refs/heads/main",
                    "b2",
                    vec![commit("b2", &[], &["envs/tools/Singularity.v2"], &[])],
                ),
            )
            .await;
        assert_eq!(second.status, StatusCode::ACCEPTED, "{:?}", second.body);
        let builds = hub.builds().await;
        assert_eq!(builds.len(), 3, "{builds:?}");
        let tools: Vec<_> = builds.iter().filter(|b| b.0 == "tools:v2").collect();
        // The newer build of the same recipe replaced the queued one.
        assert_eq!(tools[0].3, "a1");
        assert_eq!(tools[0].4, BuildStatus::Superseded);
        assert_eq!(tools[1].3, "b2");
        assert_eq!(tools[1].4, BuildStatus::Queued);
    })
    .await;
}

#[tokio::test]
async fn a_file_removed_later_in_the_push_is_not_built_and_a_rename_keeps_its_recipe() {
    on_both("webhook_removed", |hub| async move {
        installed_with_a_recipe(&hub).await;
        let answer = hub
            .app(
                "push",
                "push-r",
                &push(
                    "refs/heads/main",
                    "c3",
                    vec![
                        commit("c1", &["a/Singularity", "b/Singularity"], &[], &[]),
                        commit("c2", &[], &[], &["a/Singularity"]),
                        // A rename: the recorded recipe follows its file.
                        commit(
                            "c3",
                            &["moved/legacy/Singularity"],
                            &[],
                            &["legacy/Singularity"],
                        ),
                    ],
                ),
            )
            .await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
        let builds = hub.builds().await;
        let names: Vec<(&str, &str)> = builds
            .iter()
            .map(|b| (b.0.as_str(), b.1.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("b:latest", "b/Singularity"),
                ("legacy:latest", "moved/legacy/Singularity")
            ]
        );
        let repo = hub
            .db()
            .find_repository("alice", "analysis")
            .await
            .unwrap()
            .unwrap();
        let paths: Vec<String> = hub
            .db()
            .list_recipes(repo.id)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.path)
            .collect();
        assert_eq!(paths, ["b/Singularity", "moved/legacy/Singularity"]);
    })
    .await;
}

#[tokio::test]
async fn two_files_for_one_container_and_tag_build_the_earliest_and_report_the_other() {
    on_both("webhook_conflict", |hub| async move {
        installed_with_a_recipe(&hub).await;
        let answer = hub
            .app(
                "push",
                "push-c",
                &push(
                    "refs/heads/main",
                    "d4",
                    vec![commit(
                        "d4",
                        &["b/tools/Singularity", "a/tools/Singularity"],
                        &[],
                        &[],
                    )],
                ),
            )
            .await;
        assert_eq!(answer.body["builds"].as_array().unwrap().len(), 1);
        let outcome = answer.body["outcome"].as_str().unwrap();
        assert!(
            outcome.contains(
                "b/tools/Singularity not built: a/tools/Singularity already builds tools:latest"
            ),
            "{outcome}"
        );
        // Later, the recorded file keeps its container and tag.
        let later = hub
            .app(
                "push",
                "push-c2",
                &push(
                    "refs/heads/main",
                    "e5",
                    vec![commit("e5", &[], &["b/tools/Singularity"], &[])],
                ),
            )
            .await;
        assert_eq!(
            later.body["builds"].as_array().unwrap().len(),
            0,
            "{:?}",
            later.body
        );
        assert_eq!(hub.build_count().await, 1);
    })
    .await;
}

#[tokio::test]
async fn a_delivery_is_acted_on_once_even_when_sent_twice_at_once() {
    on_both("webhook_dedup", |hub| async move {
        installed_with_a_recipe(&hub).await;
        let payload = push(
            "refs/heads/main",
            "f6",
            vec![commit("f6", &["Singularity"], &[], &[])],
        );
        let again = hub.app("push", "dup-1", &payload).await;
        assert_eq!(again.body["duplicate"], false);
        let twice = hub.app("push", "dup-1", &payload).await;
        assert_eq!(twice.status, StatusCode::OK);
        assert_eq!(twice.body["duplicate"], true, "{:?}", twice.body);
        assert_eq!(hub.build_count().await, 1);

        // Two copies of a new delivery at the same moment.
        let payload = push(
            "refs/heads/main",
            "g7",
            vec![commit("g7", &["envs/x/Singularity"], &[], &[])],
        );
        let (a, b) = tokio::join!(
            hub.app("push", "dup-2", &payload),
            hub.app("push", "dup-2", &payload)
        );
        let mut duplicates = [a.body["duplicate"].clone(), b.body["duplicate"].clone()];
        duplicates.sort_by_key(|v| v.to_string());
        assert_eq!(
            duplicates,
            [json!(false), json!(true)],
            "{:?} {:?}",
            a.body,
            b.body
        );
        assert_eq!(hub.build_count().await, 2);
    })
    .await;
}

#[tokio::test]
async fn bad_unsigned_and_oversized_deliveries_are_refused_before_anything_is_recorded() {
    let database = sqlite_database();
    let hub = Hub::new(&database.url).await;
    installed_with_a_recipe(&hub).await;
    let payload = push(
        "refs/heads/main",
        "h8",
        vec![commit("h8", &["Singularity"], &[], &[])],
    );

    let forged = hub
        .deliver(
            "/webhooks/github",
            "not-the-secret",
            "push",
            "bad-1",
            &payload,
        )
        .await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED, "{:?}", forged.body);
    assert!(forged.body["error"]
        .as_str()
        .unwrap()
        .contains("does not match"));

    let body = serde_json::to_vec(&payload).unwrap();
    let unsigned = hub
        .post(
            "/webhooks/github",
            &[
                ("x-github-event", "push".into()),
                ("x-github-delivery", "bad-2".into()),
            ],
            body.clone(),
        )
        .await;
    assert_eq!(
        unsigned.status,
        StatusCode::UNAUTHORIZED,
        "{:?}",
        unsigned.body
    );

    let garbled = hub
        .post(
            "/webhooks/github",
            &[
                ("x-github-event", "push".into()),
                ("x-github-delivery", "bad-3".into()),
                ("x-hub-signature-256", "sha256=nothex".into()),
            ],
            body,
        )
        .await;
    assert_eq!(garbled.status, StatusCode::UNAUTHORIZED);

    // Not JSON at all, and signed with the wrong secret: refused by the signature.
    let junk = vec![b'{'; 100];
    let junk_answer = hub
        .post(
            "/webhooks/github",
            &[
                ("x-github-event", "push".into()),
                ("x-github-delivery", "bad-4".into()),
                ("x-hub-signature-256", sign(b"wrong", &junk)),
            ],
            junk,
        )
        .await;
    assert_eq!(junk_answer.status, StatusCode::UNAUTHORIZED);

    let huge = vec![b' '; 25 * 1024 * 1024 + 1];
    let oversized = hub
        .post(
            "/webhooks/github",
            &[
                ("x-github-event", "push".into()),
                ("x-github-delivery", "bad-5".into()),
                ("x-hub-signature-256", sign(APP_SECRET.as_bytes(), &huge)),
            ],
            huge,
        )
        .await;
    assert_eq!(oversized.status, StatusCode::PAYLOAD_TOO_LARGE);

    for id in ["bad-1", "bad-2", "bad-3", "bad-4", "bad-5"] {
        assert_eq!(hub.db().find_delivery(id).await.unwrap(), None, "{id}");
    }
    assert_eq!(hub.build_count().await, 0);

    // A correctly signed copy of the forged delivery is then acted on.
    let genuine = hub.app("push", "bad-1", &payload).await;
    assert_eq!(genuine.status, StatusCode::ACCEPTED, "{:?}", genuine.body);
    assert_eq!(hub.build_count().await, 1);
}

#[tokio::test]
async fn pushes_that_build_nothing_say_why() {
    let database = sqlite_database();
    let hub = Hub::new(&database.url).await;
    installed_with_a_recipe(&hub).await;
    let recipe = vec![commit("i9", &["Singularity"], &[], &[])];
    let mut deleted = push(
        "refs/heads/main",
        "0000000000000000000000000000000000000000",
        vec![],
    );
    deleted["deleted"] = json!(true);
    let mut unknown = push("refs/heads/main", "i9", recipe.clone());
    unknown["repository"] = json!({"id": 9999, "full_name": "mallory/other", "name": "other"});
    let cases = [
        (
            "other-branch",
            push("refs/heads/feature", "i9", recipe.clone()),
            "branch feature is not configured to build",
        ),
        (
            "tag",
            push("refs/tags/v1", "i9", recipe.clone()),
            "refs/tags/v1 is not a branch",
        ),
        ("deleted", deleted, "branch main was deleted"),
        ("unknown", unknown, "unknown repository mallory/other"),
    ];
    for (delivery, payload, why) in cases {
        let answer = hub.app("push", delivery, &payload).await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "{delivery}: {:?}",
            answer.body
        );
        let outcome = answer.body["outcome"].as_str().unwrap().to_owned();
        assert!(outcome.contains(why), "{delivery}: {outcome}");
        let recorded = hub.db().find_delivery(delivery).await.unwrap().unwrap();
        assert_eq!(recorded.outcome.as_deref(), Some(outcome.as_str()));
    }
    // Paused.
    let repo = hub
        .db()
        .find_repository("alice", "analysis")
        .await
        .unwrap()
        .unwrap();
    let mut settings = sifhub::db::RepositorySettings {
        build_branches: vec![],
        private: false,
        paused: true,
        webhook_secret: None,
    };
    hub.db()
        .update_repository_settings(repo.id, &settings)
        .await
        .unwrap();
    let paused = hub
        .app(
            "push",
            "paused",
            &push("refs/heads/main", "i9", recipe.clone()),
        )
        .await;
    assert!(
        paused.body["outcome"].as_str().unwrap().contains("paused"),
        "{:?}",
        paused.body
    );
    assert_eq!(hub.build_count().await, 0);

    // Configured branches build; ping and other events are answered.
    settings.paused = false;
    settings.build_branches = vec!["feature".into()];
    hub.db()
        .update_repository_settings(repo.id, &settings)
        .await
        .unwrap();
    let feature = hub
        .app("push", "feature", &push("refs/heads/feature", "i9", recipe))
        .await;
    assert_eq!(
        feature.body["builds"].as_array().unwrap().len(),
        1,
        "{:?}",
        feature.body
    );
    let ping = hub
        .app(
            "ping",
            "ping-1",
            &json!({"zen": "Design for failure.", "hook_id": 1}),
        )
        .await;
    assert_eq!(ping.status, StatusCode::OK);
    let issues = hub
        .app("issues", "issues-1", &json!({"action": "opened"}))
        .await;
    assert_eq!(issues.status, StatusCode::ACCEPTED);
    assert!(issues.body["outcome"]
        .as_str()
        .unwrap()
        .starts_with("ignored"));
}

#[tokio::test]
async fn a_truncated_push_or_a_new_repository_asks_for_a_tree_listing() {
    on_both("webhook_scan_request", |hub| async move {
        hub.install().await;
        // First delivery: no recipes known yet.
        let first = hub
            .app(
                "push",
                "first",
                &push(
                    "refs/heads/main",
                    "j1",
                    vec![commit("j1", &["README.md"], &[], &[])],
                ),
            )
            .await;
        assert_eq!(first.status, StatusCode::ACCEPTED, "{:?}", first.body);
        let scan_id = first.body["scan"].as_i64().unwrap();
        let scan = hub.db().find_scan(scan_id).await.unwrap().unwrap();
        assert_eq!(
            (scan.commit_sha.as_str(), scan.branch.as_str()),
            ("j1", "main")
        );
        assert_eq!(scan.done_at, None);
        assert_eq!(scan.delivery_id.as_deref(), Some("first"));

        // With recipes known, a push listing GitHub's 20 commits may be cut short.
        hub.add_recipe("Singularity", "analysis", "latest").await;
        let commits = (0..20)
            .map(|i| commit(&format!("k{i}"), &[], &["Singularity"], &[]))
            .collect();
        let long = hub
            .app("push", "long", &push("refs/heads/main", "k19", commits))
            .await;
        assert!(long.body["scan"].is_i64(), "{:?}", long.body);
        assert_eq!(hub.build_count().await, 0);
        assert_eq!(hub.db().pending_scans().await.unwrap().len(), 2);
    })
    .await;
}

#[tokio::test]
async fn installation_events_add_and_remove_repositories() {
    on_both("webhook_installation", |hub| async move {
        hub.install().await;
        let repo = hub.db().find_repository("alice", "analysis").await.unwrap().unwrap();
        assert_eq!(repo.github_id, Some(REPO_ID));
        assert!(repo.installation_id.is_some());
        assert_eq!(repo.webhook_secret, None);

        let added = hub
            .app(
                "installation_repositories",
                "repos-added",
                &json!({
                    "action": "added",
                    "installation": {"id": INSTALLATION, "account": {"login": "alice"}},
                    "repository_selection": "selected",
                    "repositories_added": [repo_short(1002, "alice/second")],
                    "repositories_removed": [],
                }),
            )
            .await;
        assert_eq!(added.status, StatusCode::OK, "{:?}", added.body);
        let second = hub.db().find_repository("alice", "second").await.unwrap().unwrap();
        assert_eq!(second.installation_id, repo.installation_id);

        let removed = hub
            .app(
                "installation_repositories",
                "repos-removed",
                &json!({
                    "action": "removed",
                    "installation": {"id": INSTALLATION, "account": {"login": "alice"}},
                    "repositories_added": [],
                    "repositories_removed": [repo_short(1002, "alice/second")],
                }),
            )
            .await;
        assert_eq!(removed.status, StatusCode::OK, "{:?}", removed.body);
        let second = hub.db().find_repository("alice", "second").await.unwrap().unwrap();
        assert_eq!(second.installation_id, None);
        // A detached repository's pushes build nothing.
        let mut payload = push("refs/heads/main", "l1", vec![commit("l1", &["Singularity"], &[], &[])]);
        payload["repository"] = json!({"id": 1002, "full_name": "alice/second", "name": "second", "default_branch": "main"});
        let ignored = hub.app("push", "after-removal", &payload).await;
        assert!(ignored.body["outcome"].as_str().unwrap().contains("unknown repository"), "{:?}", ignored.body);

        let deleted = hub
            .app(
                "installation",
                "uninstall",
                &json!({
                    "action": "deleted",
                    "installation": {"id": INSTALLATION, "account": {"login": "alice"}},
                }),
            )
            .await;
        assert_eq!(deleted.status, StatusCode::OK, "{:?}", deleted.body);
        let repo = hub.db().find_repository("alice", "analysis").await.unwrap().unwrap();
        assert_eq!(repo.installation_id, None);
        let installation = hub.db().find_installation_by_github_id(INSTALLATION).await.unwrap().unwrap();
        assert!(installation.deleted_at.is_some());

        // Reinstalling attaches the same repository again.
        let again = hub
            .app(
                "installation",
                "reinstall",
                &json!({
                    "action": "created",
                    "installation": {"id": INSTALLATION, "account": {"login": "alice"}},
                    "repositories": [repo_short(REPO_ID, "alice/analysis")],
                }),
            )
            .await;
        assert_eq!(again.status, StatusCode::OK);
        let repo_again = hub.db().find_repository("alice", "analysis").await.unwrap().unwrap();
        assert_eq!(repo_again.id, repo.id);
        assert!(repo_again.installation_id.is_some());
    })
    .await;
}

#[tokio::test]
async fn a_hub_without_an_app_secret_refuses_app_deliveries_by_name() {
    let database = sqlite_database();
    let mut hub = Hub::new(&database.url).await;
    let mut config = (*hub.state.config).clone();
    config.github_webhook_secret = None;
    hub.state.config = Arc::new(config);
    let answer = hub.app("ping", "p", &json!({})).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(answer.body["error"]
        .as_str()
        .unwrap()
        .contains("github_webhook_secret"));
}

/// The line `  <label> <value>` of the command's output.
fn printed(stdout: &str, label: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label} in:\n{stdout}"))
        .trim()
        .to_owned()
}

#[tokio::test]
async fn admin_repo_add_then_a_plain_delivery_signed_with_the_printed_secret_queues() {
    let data = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let output = std::process::Command::new(sifhub_tests::sifhub_bin())
            .args(args)
            .env_clear()
            .env("SIFHUB_DATA_DIR", data.path())
            .env("SIFHUB_PUBLIC_URL", "https://hub.example")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{args:?}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    };
    let stdout = run(&[
        "admin",
        "repo",
        "add",
        "bob/tools",
        "--branch",
        "main",
        "--branch",
        "dev",
    ]);
    let url = printed(&stdout, "Payload URL:");
    assert_eq!(url, "https://hub.example/webhooks/github/bob/tools");
    assert!(stdout.contains("application/json"), "{stdout}");
    let secret = printed(&stdout, "Secret:");
    assert_eq!(secret.len(), 64, "{secret}");

    let again = run(&["admin", "repo", "add", "bob/tools"]);
    assert!(again.contains("already added"), "{again}");
    assert!(!again.contains(&secret));
    let listed = run(&["admin", "repo", "list"]);
    assert!(
        listed.contains("bob/tools\tplain webhook\tbranches: main,dev"),
        "{listed}"
    );

    let hub = Hub::new(&format!(
        "sqlite://{}",
        data.path().join("sifhub.db").display()
    ))
    .await;
    let repo = hub
        .db()
        .find_repository("bob", "tools")
        .await
        .unwrap()
        .unwrap();
    hub.db()
        .upsert_recipe(
            repo.id,
            "Singularity",
            "tools",
            "latest",
            sifhub::db::Timestamp::now(),
        )
        .await
        .unwrap();
    let mut payload = push(
        "refs/heads/dev",
        "m1",
        vec![commit("m1", &[], &["Singularity"], &[])],
    );
    payload["repository"] =
        json!({"id": 77, "full_name": "bob/tools", "name": "tools", "default_branch": "main"});
    payload.as_object_mut().unwrap().remove("installation");
    let path = "/webhooks/github/bob/tools";
    let wrong = hub
        .deliver(path, APP_SECRET, "push", "plain-0", &payload)
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let answer = hub
        .deliver(path, &secret, "push", "plain-1", &payload)
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    assert_eq!(
        hub.builds().await,
        [(
            "tools:latest".into(),
            "Singularity".into(),
            "dev".into(),
            "m1".into(),
            BuildStatus::Queued
        )]
    );

    // A rotated secret replaces the old one.
    let rotated = run(&["admin", "repo", "add", "bob/tools", "--rotate-secret"]);
    let new_secret = printed(&rotated, "Secret:");
    assert_ne!(new_secret, secret);
    let stale = hub
        .deliver(path, &secret, "push", "plain-2", &payload)
        .await;
    assert_eq!(stale.status, StatusCode::UNAUTHORIZED);

    let nobody = hub
        .deliver(
            "/webhooks/github/bob/none",
            &secret,
            "push",
            "plain-3",
            &payload,
        )
        .await;
    assert_eq!(nobody.status, StatusCode::NOT_FOUND);
}

/// Waits until the stand-in holds `count` statuses (they are posted in the
/// background after the answer).
async fn statuses(hub: &Hub, count: usize) -> Vec<sifhub_tests::github::RecordedStatus> {
    for _ in 0..200 {
        let statuses = hub.standin.statuses();
        if statuses.len() >= count {
            return statuses;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!(
        "expected {count} statuses, got {:?}",
        hub.standin.statuses()
    );
}

#[tokio::test]
async fn the_first_push_and_a_long_push_list_the_tree_and_build_every_recipe() {
    on_both("webhook_scan", |hub| async move {
        // The hub served over real HTTP; GitHub is the stand-in, whose
        // sender signs and delivers as GitHub does.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/webhooks/github", listener.local_addr().unwrap());
        let app = router(hub.state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        let installation = hub.standin.create_installation("alice");
        let repo = hub
            .standin
            .create_repo("alice", "analysis", false, Some(installation));
        let app_id = hub.standin.app_id();
        let (status, body) = webhook::deliver(
            &url,
            "installation",
            &webhook::installation_payload("created", installation, "alice", app_id, &[&repo]),
            Some(APP_SECRET),
        )
        .await;
        assert_eq!(status, 200, "{body}");

        // The repository already holds two recipes; the first push touches neither.
        repo.git
            .write("Singularity", "Bootstrap: docker\nFrom: alpine\n");
        repo.git.write(
            "envs/tools/Singularity.v2",
            "Bootstrap: docker\nFrom: debian\n",
        );
        let base = repo.git.commit("recipes");
        repo.git.write("README.md", "hello\n");
        let head = repo.git.commit("readme");
        let (status, body) = webhook::deliver(
            &url,
            "push",
            &webhook::push_payload(&repo, "main", &base, &head),
            Some(APP_SECRET),
        )
        .await;
        assert_eq!(status, 202, "{body}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert!(answer["scan"].is_i64(), "{answer}");
        assert_eq!(
            hub.build_count().await,
            0,
            "the answer does not wait for GitHub"
        );

        let github = hub.state.github.clone();
        let done = run_pending_scans(&hub.state.queue, &github, &hub.state.statuses)
            .await
            .unwrap();
        assert_eq!(done, 1);
        let builds = hub.builds().await;
        let built: Vec<(&str, &str, &str)> = builds
            .iter()
            .map(|b| (b.0.as_str(), b.1.as_str(), b.3.as_str()))
            .collect();
        assert_eq!(
            built,
            [
                ("analysis:latest", "Singularity", head.as_str()),
                ("tools:v2", "envs/tools/Singularity.v2", head.as_str())
            ]
        );
        let scan = hub
            .db()
            .find_scan(answer["scan"].as_i64().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert!(scan.done_at.is_some());
        assert!(
            scan.outcome
                .as_deref()
                .unwrap()
                .contains("queued 2 build(s)"),
            "{scan:?}"
        );
        // Each queued build got its pending status, linking to its page.
        let posted = statuses(&hub, 2).await;
        let mut contexts: Vec<(&str, &str, &str)> = posted
            .iter()
            .map(|s| (s.context.as_str(), s.state.as_str(), s.sha.as_str()))
            .collect();
        contexts.sort();
        assert_eq!(
            contexts,
            [
                ("sifhub/Singularity", "pending", head.as_str()),
                ("sifhub/envs/tools/Singularity.v2", "pending", head.as_str())
            ]
        );
        assert!(posted.iter().all(|s| s
            .target_url
            .as_deref()
            .unwrap()
            .starts_with("https://hub.example/builds/")));

        // A push of 21 commits, changing a third recipe early on: the payload
        // lists only the last 20, so the hub lists the tree.
        repo.git
            .write("extra/base.def", "Bootstrap: docker\nFrom: busybox\n");
        repo.git.commit("extra recipe");
        for i in 0..20 {
            repo.git.write("README.md", format!("line {i}\n"));
            repo.git.commit(&format!("readme {i}"));
        }
        let long_head = repo.git.head();
        let payload = webhook::push_payload(&repo, "main", &head, &long_head);
        assert_eq!(payload["commits"].as_array().unwrap().len(), 20);
        let (status, body) = webhook::deliver(&url, "push", &payload, Some(APP_SECRET)).await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(
            run_pending_scans(&hub.state.queue, &github, &hub.state.statuses)
                .await
                .unwrap(),
            1
        );
        let builds = hub.builds().await;
        let at_long_head: Vec<&str> = builds
            .iter()
            .filter(|b| b.3 == long_head)
            .map(|b| b.0.as_str())
            .collect();
        assert_eq!(at_long_head, ["analysis:latest", "extra:base", "tools:v2"]);

        // A branch deletion builds nothing.
        let payload = webhook::push_payload(&repo, "main", &long_head, ZERO_SHA);
        let (status, body) = webhook::deliver(&url, "push", &payload, Some(APP_SECRET)).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("was deleted"), "{body}");
        assert!(hub.db().pending_scans().await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_scan_github_refuses_is_retried_then_given_up() {
    on_both("webhook_scan_failure", |hub| async move {
        // Installed in the hub, unknown to GitHub: listing its tree fails.
        hub.install().await;
        let first = hub
            .app(
                "push",
                "gone",
                &push(
                    "refs/heads/main",
                    "n1",
                    vec![commit("n1", &["Singularity"], &[], &[])],
                ),
            )
            .await;
        let scan_id = first.body["scan"].as_i64().unwrap();
        let github = hub.state.github.clone();
        for attempt in 1..=5 {
            let done = run_pending_scans(&hub.state.queue, &github, &hub.state.statuses)
                .await
                .unwrap();
            let scan = hub.db().find_scan(scan_id).await.unwrap().unwrap();
            assert_eq!(scan.attempts, attempt);
            assert!(
                scan.outcome
                    .as_deref()
                    .unwrap()
                    .contains("listing the tree failed"),
                "{scan:?}"
            );
            // Given up after the fifth try, not before.
            assert_eq!(done, usize::from(attempt == 5));
            assert_eq!(scan.done_at.is_some(), attempt == 5);
        }
        assert!(hub.db().pending_scans().await.unwrap().is_empty());
        assert_eq!(hub.build_count().await, 0);
    })
    .await;
}
