//! The native JSON API (`/api/v1/`) against a real `sifhub serve`, on
//! SQLite and PostgreSQL: every route (rebuilds of a recipe at the branch
//! head GitHub names, within the trigger rate limit; settings), cursor pagination walked to the end
//! (nothing missed, nothing twice), the error objects, private collections
//! (404 without a token, content with the owner's token, 401 with an
//! expired or revoked one), tokens made by `sifhub admin token create`
//! (owners looked up on the GitHub stand-in) and through the API. The
//! OpenAPI document validates with `openapi-spec-validator`, and every
//! operation in it is called here with each status it documents, and
//! answers only statuses it documents.
//!
//! And download rate limits (`/download/…`, OCI image blobs and library image files): a client
//! over the limit gets 429 with `Retry-After`, another address or a token
//! is unaffected, the bucket refills, and `X-Forwarded-For` counts only
//! from a trusted proxy.
//!
//! Needs the Debian packages postgresql and python3-venv, and
//! openapi-spec-validator in the tests' venv (scripts/install-deps.sh test).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use sifhub::db::{
    hash_token, Db, NewImage, NewRepository, NewToken, RepositorySettings, Timestamp, TokenScope,
};
use sifhub::queue::{NewBuild, Queue, Trigger};
use sifhub::storage::{Storage, StorageKey};
use sifhub_tests::github::GitHubStandIn;
use sifhub_tests::hub::HubProcess;
use sifhub_tests::postgres::both_backends;
use sifhub_tests::sifhub_bin;

const LEASE: Duration = Duration::from_secs(600);
const SHA: &str = "1234567890abcdef1234567890abcdef12345678";

/// One request the tests made, for the coverage check.
#[derive(Debug, Clone)]
struct Call {
    method: String,
    /// Without the query.
    path: String,
    status: u16,
}

/// Every API call of every test in this file.
static CALLS: Mutex<Vec<Call>> = Mutex::new(Vec::new());

/// An answer: status, headers, body.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// Checks the error object and returns its code.
    fn error_code(&self) -> String {
        let body = self.json();
        let message = body["error"]["message"].as_str().unwrap_or("");
        assert!(!message.is_empty(), "no error message: {body}");
        body["error"]["code"].as_str().unwrap().to_owned()
    }
}

/// A client of the hub's API that records what it calls.
struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(base: &str) -> Api {
        Api {
            base: base.to_owned(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        let method_value = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .http
            .request(method_value, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        CALLS.lock().unwrap().push(Call {
            method: method.to_owned(),
            path: path.split('?').next().unwrap().to_owned(),
            status,
        });
        Answer {
            status,
            headers,
            text,
        }
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.send("GET", path, token, None).await
    }

    /// GETs JSON that must come with 200.
    async fn ok(&self, path: &str, token: Option<&str>) -> Value {
        let answer = self.get(path, token).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.text);
        answer.json()
    }

    /// Walks every page of a list at `limit` items a page; returns the
    /// items in order, after checking each page's size.
    async fn walk(&self, path: &str, limit: usize, token: Option<&str>) -> Vec<Value> {
        let join = if path.contains('?') { '&' } else { '?' };
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..1000 {
            let url = match &cursor {
                None => format!("{path}{join}limit={limit}"),
                Some(c) => format!("{path}{join}limit={limit}&cursor={c}"),
            };
            let page = self.ok(&url, token).await;
            let got = page["items"].as_array().unwrap();
            assert!(got.len() <= limit, "{url}: {page}");
            items.extend(got.iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => {
                    assert_eq!(got.len(), limit, "a page before the last is full: {page}");
                    cursor = Some(next.to_owned());
                }
                None => return items,
            }
        }
        panic!("{path}: more than 1000 pages");
    }
}

/// What the seed made, for the checks.
struct Seeded {
    /// Public collections, `owner/name`, in the API's order.
    public: Vec<String>,
    /// alice/analysis's builds, newest first, with their status.
    builds: Vec<(i64, &'static str)>,
    /// Builds of container `analysis`, newest first.
    analysis_builds: Vec<i64>,
    running_build: i64,
    failed_build: i64,
    private_build: i64,
    /// Digests tag `latest` of alice/analysis/analysis got, newest first.
    latest_history: Vec<String>,
    labelled_digest: String,
    private_digest: String,
}

async fn repository(db: &Db, owner: &str, name: &str, private: bool) -> i64 {
    let new = NewRepository {
        github_id: None,
        owner: owner.to_owned(),
        name: name.to_owned(),
        default_branch: "main".to_owned(),
        installation_id: None,
        settings: RepositorySettings {
            private,
            ..RepositorySettings::default()
        },
    };
    db.insert_repository(&new, Timestamp::now())
        .await
        .unwrap()
        .id
}

/// An image with bytes in storage; returns its digest and id.
async fn image(
    db: &Db,
    storage: &Storage,
    repository_id: i64,
    seed: u64,
    metadata: Value,
) -> (String, i64) {
    let bytes = sifhub_tests::pseudo_random_bytes(4096, seed);
    let hex = sifhub_tests::sha256_hex(&bytes);
    storage
        .put_bytes(&StorageKey::image(&hex).unwrap(), Bytes::from(bytes))
        .await
        .unwrap();
    let stored = db
        .insert_image(
            &NewImage {
                digest: format!("sha256:{hex}"),
                size: 4096,
                sif_metadata: metadata,
                repository_id: Some(repository_id),
                commit_sha: Some(SHA.to_owned()),
                recipe_path: Some("Singularity".to_owned()),
                builder_version: Some("sifhub-test".to_owned()),
                ..NewImage::default()
            },
            Timestamp::now(),
        )
        .await
        .unwrap();
    (stored.image.digest, stored.image.id)
}

async fn tag(db: &Db, repository_id: i64, container: &str, tag: &str, image_id: i64) {
    let container = db
        .upsert_container(repository_id, container, Timestamp::now())
        .await
        .unwrap();
    db.set_tag(container.id, tag, image_id, Timestamp::now())
        .await
        .unwrap();
    // Tag moves in one millisecond would tie on time.
    tokio::time::sleep(Duration::from_millis(5)).await;
}

async fn enqueue(queue: &Queue, db: &Db, repository_id: i64, path: &str, container: &str) -> i64 {
    let recipe = db
        .upsert_recipe(repository_id, path, container, "latest", Timestamp::now())
        .await
        .unwrap();
    queue
        .enqueue(&NewBuild {
            recipe_id: recipe.id,
            commit_sha: SHA.to_owned(),
            branch: "main".to_owned(),
            trigger: Trigger::Push,
            max_attempts: 3,
        })
        .await
        .unwrap()
        .build
        .id
}

async fn seed(db: &Db, storage: &Storage) -> Seeded {
    let queue = Queue::new(db.clone());
    let analysis = repository(db, "alice", "analysis", false).await;
    let secret = repository(db, "alice", "secret", true).await;
    let bobs = repository(db, "bob", "hidden", true).await;
    let mut public = vec!["alice/analysis".to_owned()];
    for (owner, name) in [
        ("bob", "one"),
        ("bob", "two"),
        ("Carol", "Three"),
        ("dave", "four"),
        ("erin", "five"),
        ("frank", "six"),
    ] {
        repository(db, owner, name, false).await;
        public.push(format!("{owner}/{name}"));
    }
    public.sort_by_key(|full| full.to_lowercase());

    // Tag `latest` of container `analysis` moves three times; `v1` stays.
    let labels = json!({
        "labels": { "maintainer": "alice@example.org", "version": 2 },
        "help": "Prints a greeting.",
    });
    let mut latest_history = Vec::new();
    let mut first_id = 0;
    for seed in 1..=3 {
        let (digest, id) = image(db, storage, analysis, seed, labels.clone()).await;
        if seed == 1 {
            first_id = id;
        }
        tag(db, analysis, "analysis", "latest", id).await;
        latest_history.insert(0, digest);
    }
    tag(db, analysis, "analysis", "v1", first_id).await;
    let (_, tools_image) = image(db, storage, analysis, 4, json!({})).await;
    tag(db, analysis, "tools", "v1", tools_image).await;
    db.upsert_container(analysis, "empty", Timestamp::now())
        .await
        .unwrap();
    let (private_digest, private_image) = image(db, storage, secret, 5, json!({})).await;
    tag(db, secret, "hidden", "latest", private_image).await;
    let (_, bobs_image) = image(db, storage, bobs, 6, json!({})).await;
    tag(db, bobs, "bobs", "latest", bobs_image).await;

    // Builds: failed (log in storage), running (log in chunks), superseded,
    // queued, and a cancelled one of another container.
    let failed = enqueue(&queue, db, analysis, "Singularity", "analysis").await;
    let lease = queue.claim("api-test", LEASE).await.unwrap().unwrap().lease;
    let log_key = StorageKey::build_log(failed);
    storage
        .put_bytes(&log_key, Bytes::from_static(b"stored log: exit 1\n"))
        .await
        .unwrap();
    queue
        .fail(&lease, "recipe failed", Some(&log_key.path()))
        .await
        .unwrap();
    let running = enqueue(&queue, db, analysis, "Singularity", "analysis").await;
    let lease = queue.claim("api-test", LEASE).await.unwrap().unwrap().lease;
    for (seq, text) in ["step 1\n", "step 2\n"].into_iter().enumerate() {
        db.append_log_chunk(running, lease.attempt, seq as i64, text, Timestamp::now())
            .await
            .unwrap();
    }
    let superseded = enqueue(&queue, db, analysis, "Singularity", "analysis").await;
    let queued = enqueue(&queue, db, analysis, "Singularity", "analysis").await;
    let cancelled = enqueue(&queue, db, analysis, "tools/Singularity", "tools").await;
    assert!(queue.cancel(cancelled).await.unwrap());
    let private_build = enqueue(&queue, db, secret, "Singularity", "hidden").await;

    Seeded {
        public,
        builds: vec![
            (cancelled, "cancelled"),
            (queued, "queued"),
            (superseded, "superseded"),
            (running, "running"),
            (failed, "failed"),
        ],
        analysis_builds: vec![queued, superseded, running, failed],
        running_build: running,
        failed_build: failed,
        private_build,
        latest_history,
        labelled_digest: String::new(),
        private_digest,
    }
    .with_labelled()
}

impl Seeded {
    fn with_labelled(mut self) -> Self {
        self.labelled_digest = self.latest_history[0].clone();
        self
    }
}

/// `sifhub admin token …` against the hub's database and the stand-in.
fn admin_token(env: &[(String, String)], args: &[&str]) -> std::process::Output {
    Command::new(sifhub_bin())
        .args(["admin", "token"])
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("run sifhub admin token")
}

async fn admin_token_async(env: &[(String, String)], args: &[&str]) -> std::process::Output {
    let env = env.to_vec();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        admin_token(&env, &args)
    })
    .await
    .unwrap()
}

/// Makes a token with the CLI and returns (id, secret).
async fn cli_token(
    env: &[(String, String)],
    owner: &str,
    scope: &str,
    extra: &[&str],
) -> (i64, String) {
    let mut args = vec!["create", owner, "--scope", scope];
    args.extend_from_slice(extra);
    let out = admin_token_async(env, &args).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let secret = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        secret.starts_with("sifh_") && secret.len() > 40,
        "{secret:?}"
    );
    // "token 7 (cli, read scope) for alice created, …"
    let id = stderr
        .split_whitespace()
        .nth(1)
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no token id in {stderr:?}"));
    (id, secret)
}

/// The tests venv's python with openapi-spec-validator.
fn python() -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    let python = PathBuf::from(home).join(".cache/sifhub/tools/py/bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import openapi_spec_validator"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} with openapi-spec-validator is missing: run scripts/install-deps.sh test \
         (Debian package python3-venv, then `pip install openapi-spec-validator` in that venv)",
        python.display()
    );
    python
}

fn validate_openapi(document: &str, folder: &Path) {
    let file = folder.join("openapi.json");
    std::fs::write(&file, document).unwrap();
    let out = Command::new(python())
        .args([
            "-c",
            "import json, sys\nfrom openapi_spec_validator import validate\nvalidate(json.load(open(sys.argv[1])))\nprint('valid')",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openapi.json does not validate:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The documented operations: (method, path template) → statuses.
fn documented(document: &Value) -> BTreeMap<(String, String), BTreeSet<u16>> {
    let mut operations = BTreeMap::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if !["get", "post", "put", "patch", "delete", "head"].contains(&method.as_str()) {
                continue;
            }
            let statuses = operation["responses"]
                .as_object()
                .unwrap()
                .keys()
                .map(|s| s.parse::<u16>().unwrap())
                .collect();
            operations.insert((method.to_uppercase(), path.clone()), statuses);
        }
    }
    operations
}

/// Whether `path` is an instance of the `template` (`{name}`: one segment).
fn matches_template(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| (t.starts_with('{') && t.ends_with('}') && !p.is_empty()) || t == p)
}

/// Every documented operation was called with each status it documents,
/// and every call under the API answered a status its operation documents.
fn check_coverage(document: &Value) {
    let operations = documented(document);
    assert_eq!(operations.len(), 15, "{operations:?}");
    let calls = CALLS.lock().unwrap().clone();
    let mut seen: BTreeMap<(String, String), BTreeSet<u16>> = BTreeMap::new();
    for call in &calls {
        if !call.path.starts_with("/api/v1/") || call.path == "/api/v1/openapi.json" {
            continue;
        }
        let found: Vec<&(String, String)> = operations
            .keys()
            .filter(|(method, template)| {
                *method == call.method && matches_template(template, &call.path)
            })
            .collect();
        match found.as_slice() {
            [operation] => {
                let statuses = &operations[*operation];
                assert!(
                    statuses.contains(&call.status),
                    "{} {} answered {}, which {operation:?} does not document ({statuses:?})",
                    call.method,
                    call.path,
                    call.status
                );
                seen.entry((*operation).clone())
                    .or_default()
                    .insert(call.status);
            }
            [] => assert!(
                call.status == 404 || call.status == 405,
                "{} {} is no documented operation but answered {}",
                call.method,
                call.path,
                call.status
            ),
            many => panic!("{} {} matches {many:?}", call.method, call.path),
        }
    }
    for (operation, statuses) in &operations {
        let got = seen.get(operation).cloned().unwrap_or_default();
        let missing: Vec<_> = statuses.difference(&got).collect();
        assert!(
            missing.is_empty(),
            "{operation:?}: documented statuses {missing:?} are never tested"
        );
    }
}

/// Every operation of the API with example paths: (method, path, body).
fn every_operation(s: &Seeded, token_id: i64) -> Vec<(&'static str, String, Option<Value>)> {
    vec![
        ("GET", "/api/v1/collections".to_owned(), None),
        ("GET", "/api/v1/collections/alice/analysis".to_owned(), None),
        (
            "GET",
            "/api/v1/collections/alice/analysis/containers".to_owned(),
            None,
        ),
        (
            "GET",
            "/api/v1/collections/alice/analysis/containers/analysis".to_owned(),
            None,
        ),
        (
            "GET",
            "/api/v1/collections/alice/analysis/containers/analysis/history".to_owned(),
            None,
        ),
        (
            "GET",
            "/api/v1/collections/alice/analysis/containers/analysis/builds".to_owned(),
            None,
        ),
        (
            "GET",
            "/api/v1/collections/alice/analysis/builds".to_owned(),
            None,
        ),
        ("GET", format!("/api/v1/images/{}", s.labelled_digest), None),
        ("GET", format!("/api/v1/builds/{}", s.failed_build), None),
        (
            "GET",
            format!("/api/v1/builds/{}/log", s.failed_build),
            None,
        ),
        (
            "POST",
            "/api/v1/collections/alice/analysis/rebuild".to_owned(),
            Some(json!({"recipe_path": "Singularity"})),
        ),
        (
            "PATCH",
            "/api/v1/collections/alice/analysis/settings".to_owned(),
            Some(json!({"paused": false})),
        ),
        ("GET", "/api/v1/tokens".to_owned(), None),
        (
            "POST",
            "/api/v1/tokens".to_owned(),
            Some(json!({"name": "x", "scope": "read"})),
        ),
        ("DELETE", format!("/api/v1/tokens/{token_id}"), None),
    ]
}

/// The private collection's operations: 404 to others, 200 to the owner.
fn private_paths(s: &Seeded) -> Vec<String> {
    vec![
        "/api/v1/collections/alice/secret".to_owned(),
        "/api/v1/collections/alice/secret/containers".to_owned(),
        "/api/v1/collections/alice/secret/containers/hidden".to_owned(),
        "/api/v1/collections/alice/secret/containers/hidden/history".to_owned(),
        "/api/v1/collections/alice/secret/containers/hidden/builds".to_owned(),
        "/api/v1/collections/alice/secret/builds".to_owned(),
        format!("/api/v1/images/{}", s.private_digest),
        format!("/api/v1/builds/{}", s.private_build),
        format!("/api/v1/builds/{}/log", s.private_build),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_on_both_backends() {
    let standin = GitHubStandIn::start().await;
    standin.create_user("alice");
    standin.create_user("carol");
    // Rebuilds build the head of the default branch, which GitHub names.
    let github_repo = standin.create_repo("alice", "analysis", false, None);
    github_repo.git.write("Singularity", "Bootstrap: scratch\n");
    let head = github_repo.git.commit("a recipe");
    let mut document = Value::Null;
    for database in both_backends("api_native") {
        eprintln!("--- on {database:?}");
        let data = tempfile::tempdir().unwrap();
        let is_sqlite = database.backend == "sqlite";
        let db_url = if is_sqlite {
            format!("sqlite://{}", data.path().join("sifhub.db").display())
        } else {
            database.url.clone()
        };
        let mut env: Vec<(String, String)> = vec![
            ("SIFHUB_DATA_DIR".into(), data.path().display().to_string()),
            ("SIFHUB_GITHUB_API_URL".into(), standin.base_url()),
            ("SIFHUB_WORKER_SLOTS".into(), "0".into()),
            ("SIFHUB_TRIGGER_RATE_PER_MINUTE".into(), "3".into()),
        ];
        if !is_sqlite {
            env.push(("SIFHUB_DATABASE_URL".into(), db_url.clone()));
        }
        let db = Db::connect(&db_url).await.unwrap();
        let storage =
            Storage::open(&format!("file://{}", data.path().join("storage").display())).unwrap();
        let seeded = seed(&db, &storage).await;

        let hub_env = env.clone();
        let data_dir = data.path().to_owned();
        let hub = tokio::task::spawn_blocking(move || {
            let env: Vec<(&str, &str)> = hub_env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            HubProcess::start(&data_dir, &env)
        })
        .await
        .unwrap();
        let api = Api::new(&hub.url());

        // Tokens from the command line: alice is looked up on GitHub.
        assert!(db.find_user_by_login("alice").await.unwrap().is_none());
        let (_, read) = cli_token(
            &env,
            "alice",
            "read",
            &["--name", "laptop", "--expires", "30"],
        )
        .await;
        let alice = db.find_user_by_login("alice").await.unwrap().unwrap();
        let (_, admin) = cli_token(&env, "alice", "admin", &[]).await;
        let (revoked_id, revoked) = cli_token(&env, "alice", "read", &["--name", "old"]).await;
        let out = admin_token_async(&env, &["revoke", &revoked_id.to_string()]).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = admin_token_async(&env, &["revoke", &revoked_id.to_string()]).await;
        assert!(!out.status.success(), "revoking twice succeeds");
        let expired = "sifh_expired_token_for_the_test";
        db.insert_token(
            &NewToken {
                token_hash: hash_token(expired),
                user_id: Some(alice.id),
                name: "expired".to_owned(),
                scope: TokenScope::Admin,
                expires_at: Some(Timestamp::now().minus(Duration::from_secs(60))),
            },
            Timestamp::now().minus(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
        let (_, carols) = cli_token(&env, "carol", "push", &[]).await;
        // Unknown to the hub and to GitHub: refused, nothing recorded.
        let out = admin_token_async(&env, &["create", "nobody", "--scope", "read"]).await;
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("github has no account \"nobody\""),
            "{stderr}"
        );
        assert!(db.find_user_by_login("nobody").await.unwrap().is_none());
        let out = admin_token_async(&env, &["create", "alice", "--scope", "worker"]).await;
        assert!(!out.status.success(), "a worker scope for a person");
        let out = admin_token_async(&env, &["list", "alice"]).await;
        let listed = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success());
        assert_eq!(listed.lines().count(), 4, "{listed}");
        assert!(
            listed.lines().any(
                |l| l.starts_with(&format!("{revoked_id}\told\tread")) && l.contains("revoked")
            ),
            "{listed}"
        );
        assert!(
            listed.contains("laptop\tread") && listed.contains("expires"),
            "{listed}"
        );

        // Collections: every page walked, anonymous sees the public ones…
        let walked: Vec<String> = api
            .walk("/api/v1/collections", 2, None)
            .await
            .iter()
            .map(|c| {
                format!(
                    "{}/{}",
                    c["owner"].as_str().unwrap(),
                    c["name"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(walked, seeded.public);
        // …alice her private one too, not bob's; carol only the public ones.
        let mut alices = seeded.public.clone();
        alices.push("alice/secret".to_owned());
        alices.sort_by_key(|full| full.to_lowercase());
        for limit in [1, 3, 200] {
            let walked: Vec<String> = api
                .walk("/api/v1/collections", limit, Some(&read))
                .await
                .iter()
                .map(|c| {
                    format!(
                        "{}/{}",
                        c["owner"].as_str().unwrap(),
                        c["name"].as_str().unwrap()
                    )
                })
                .collect();
            assert_eq!(walked, alices, "limit {limit}");
        }
        assert_eq!(
            api.walk("/api/v1/collections", 4, Some(&carols))
                .await
                .len(),
            seeded.public.len()
        );
        let found = api.ok("/api/v1/collections?search=TOOLS", None).await;
        assert_eq!(found["items"].as_array().unwrap().len(), 1, "{found}");
        assert_eq!(found["items"][0]["name"], "analysis");
        assert_eq!(found["items"][0]["containers"], 3);
        assert!(found["items"][0]["updated_at"]
            .as_str()
            .unwrap()
            .ends_with('Z'));
        let found = api.ok("/api/v1/collections?search=100%25_", None).await;
        assert_eq!(found["items"], json!([]));

        // A collection and its containers.
        let analysis = api.ok("/api/v1/collections/Alice/Analysis", None).await;
        assert_eq!(analysis["owner"], "alice");
        assert_eq!(analysis["private"], false);
        assert_eq!(analysis["permission"], "read");
        assert_eq!(analysis["default_branch"], "main");
        // The owner's permission, capped by the token's scope.
        let as_owner = api
            .ok("/api/v1/collections/alice/analysis", Some(&admin))
            .await;
        assert_eq!(as_owner["permission"], "admin");
        let as_reader = api
            .ok("/api/v1/collections/alice/analysis", Some(&read))
            .await;
        assert_eq!(as_reader["permission"], "read");
        let containers: Vec<Value> = api
            .walk("/api/v1/collections/alice/analysis/containers", 2, None)
            .await;
        let names: Vec<&str> = containers
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["analysis", "empty", "tools"]);
        assert_eq!(containers[0]["tags"], 2);
        assert_eq!(containers[1]["tags"], 0);
        assert_eq!(containers[1]["updated_at"], Value::Null);

        // A container with its tags.
        let container = api
            .ok(
                "/api/v1/collections/alice/analysis/containers/analysis",
                None,
            )
            .await;
        assert_eq!(container["latest_build_status"], "queued");
        let tags = container["tags"].as_array().unwrap();
        assert_eq!(tags.len(), 2);
        assert_eq!(tags[0]["name"], "latest");
        assert_eq!(tags[0]["digest"], seeded.latest_history[0].as_str());
        assert_eq!(tags[0]["commit_sha"], SHA);
        let download = tags[0]["download_url"].as_str().unwrap();
        let path = &download[download.find("/download/").unwrap()..];
        let got = reqwest::get(format!("{}{path}", hub.url())).await.unwrap();
        assert_eq!(got.status(), 200);
        let bytes = got.bytes().await.unwrap();
        assert_eq!(
            format!("sha256:{}", sifhub_tests::sha256_hex(&bytes)),
            seeded.latest_history[0]
        );

        // Tag history, newest first, one tag or all.
        let history = api
            .walk(
                "/api/v1/collections/alice/analysis/containers/analysis/history?tag=latest",
                1,
                None,
            )
            .await;
        let digests: Vec<&str> = history
            .iter()
            .map(|h| h["digest"].as_str().unwrap())
            .collect();
        assert_eq!(digests, seeded.latest_history);
        assert_eq!(history[0]["replaced_at"], Value::Null);
        assert!(history[1]["replaced_at"].is_string());
        let all = api
            .walk(
                "/api/v1/collections/alice/analysis/containers/analysis/history",
                2,
                None,
            )
            .await;
        assert_eq!(all.len(), 4);
        assert_eq!(all[0]["tag"], "v1");

        // An image by digest: metadata, provenance, labels.
        let image = api
            .ok(&format!("/api/v1/images/{}", seeded.labelled_digest), None)
            .await;
        assert_eq!(image["size"], 4096);
        assert_eq!(
            image["labels"],
            json!({"maintainer": "alice@example.org", "version": "2"})
        );
        assert_eq!(image["metadata"]["help"], "Prints a greeting.");
        assert_eq!(image["provenance"]["collection"], "alice/analysis");
        assert_eq!(image["provenance"]["commit_sha"], SHA);
        assert_eq!(image["provenance"]["builder_version"], "sifhub-test");
        assert_eq!(image["provenance"]["pushed"], false);

        // Builds: all pages, by status, per container; one build; logs.
        let builds = api
            .walk("/api/v1/collections/alice/analysis/builds", 2, None)
            .await;
        let got: Vec<(i64, &str)> = builds
            .iter()
            .map(|b| (b["id"].as_i64().unwrap(), b["status"].as_str().unwrap()))
            .collect();
        assert_eq!(got, seeded.builds);
        let failed = api
            .walk(
                "/api/v1/collections/alice/analysis/builds?status=failed",
                5,
                None,
            )
            .await;
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0]["id"], seeded.failed_build);
        let of_container: Vec<i64> = api
            .walk(
                "/api/v1/collections/alice/analysis/containers/analysis/builds",
                3,
                None,
            )
            .await
            .iter()
            .map(|b| b["id"].as_i64().unwrap())
            .collect();
        assert_eq!(of_container, seeded.analysis_builds);
        let build = api
            .ok(&format!("/api/v1/builds/{}", seeded.failed_build), None)
            .await;
        assert_eq!(build["status"], "failed");
        assert_eq!(build["error"], "recipe failed");
        assert_eq!(build["owner"], "alice");
        assert_eq!(build["repo"], "analysis");
        assert_eq!(build["container"], "analysis");
        assert_eq!(build["recipe_path"], "Singularity");
        assert_eq!(build["trigger"], "push");
        assert!(build["finished_at"].is_string());
        let log = api
            .get(&format!("/api/v1/builds/{}/log", seeded.failed_build), None)
            .await;
        assert_eq!(log.status, 200);
        assert_eq!(log.text, "stored log: exit 1\n");
        assert!(log.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        let log = api
            .get(
                &format!("/api/v1/builds/{}/log", seeded.running_build),
                None,
            )
            .await;
        assert_eq!(log.text, "step 1\nstep 2\n");

        // Private: 404 without a token and with carol's, content with alice's.
        for path in private_paths(&seeded) {
            for token in [None, Some(carols.as_str())] {
                let answer = api.get(&path, token).await;
                assert_eq!(answer.status, 404, "{path}: {}", answer.text);
                assert_eq!(answer.error_code(), "not_found");
            }
            let answer = api.get(&path, Some(&read)).await;
            assert_eq!(answer.status, 200, "{path}: {}", answer.text);
        }
        for path in [
            "/download/alice/secret/hidden:latest".to_owned(),
            format!("/download/sha256/{}", &seeded.private_digest[7..]),
        ] {
            assert_eq!(api.get(&path, None).await.status, 404, "{path}");
            assert_eq!(api.get(&path, Some(&read)).await.status, 200, "{path}");
        }

        // Tokens through the API.
        let mine = api.walk("/api/v1/tokens", 1, Some(&read)).await;
        assert_eq!(mine.len(), 4);
        assert!(mine
            .iter()
            .all(|t| t.get("token").is_none() && t.get("token_hash").is_none()));
        assert!(mine.iter().any(|t| t["revoked_at"].is_string()));
        let answer = api.get("/api/v1/tokens", None).await;
        assert_eq!(
            (answer.status, answer.error_code().as_str()),
            (401, "unauthorized")
        );
        let new_token = json!({"name": "ci", "scope": "push", "expires_in_days": 7});
        let answer = api
            .send("POST", "/api/v1/tokens", Some(&read), Some(&new_token))
            .await;
        assert_eq!(
            (answer.status, answer.error_code().as_str()),
            (403, "forbidden")
        );
        let answer = api
            .send("POST", "/api/v1/tokens", None, Some(&new_token))
            .await;
        assert_eq!(answer.status, 401);
        for bad in [
            json!({"name": "ci", "scope": "worker"}),
            json!({"name": "ci", "scope": "root"}),
            json!({"name": "", "scope": "read"}),
            json!({"name": "ci", "scope": "read", "expires_in_days": 0}),
            json!({"name": "ci"}),
            json!({"name": "ci", "scope": "read", "extra": 1}),
        ] {
            let answer = api
                .send("POST", "/api/v1/tokens", Some(&admin), Some(&bad))
                .await;
            assert_eq!(
                (answer.status, answer.error_code().as_str()),
                (400, "bad_request"),
                "{bad}: {}",
                answer.text
            );
        }
        let answer = api
            .send("POST", "/api/v1/tokens", Some(&admin), Some(&new_token))
            .await;
        assert_eq!(answer.status, 201, "{}", answer.text);
        let created = answer.json();
        assert_eq!(created["scope"], "push");
        assert_eq!(created["name"], "ci");
        assert!(created["expires_at"].is_string());
        let secret = created["token"].as_str().unwrap().to_owned();
        let ci_id = created["id"].as_i64().unwrap();
        assert_eq!(
            api.ok("/api/v1/collections/alice/secret", Some(&secret))
                .await["name"],
            "secret"
        );
        let listed = api.ok("/api/v1/tokens?limit=1", Some(&secret)).await;
        assert_eq!(listed["items"][0]["id"], ci_id);
        assert!(listed["items"][0]["last_used_at"].is_string(), "{listed}");
        let revoke = format!("/api/v1/tokens/{ci_id}");
        let answer = api.send("DELETE", &revoke, Some(&read), None).await;
        assert_eq!(answer.status, 403);
        let answer = api
            .send(
                "DELETE",
                &format!("/api/v1/tokens/{ci_id}"),
                Some(&carols),
                None,
            )
            .await;
        assert_eq!(answer.status, 403, "carol's push token may not revoke");
        let answer = api.send("DELETE", &revoke, Some(&admin), None).await;
        assert_eq!(answer.status, 204, "{}", answer.text);
        let answer = api.send("DELETE", &revoke, Some(&admin), None).await;
        assert_eq!(
            (answer.status, answer.error_code().as_str()),
            (404, "not_found")
        );
        let answer = api
            .get("/api/v1/collections/alice/secret", Some(&secret))
            .await;
        assert_eq!(answer.status, 401, "a revoked token");

        // Rebuilds: by those who may write, as their trigger limit allows.
        let rebuild = "/api/v1/collections/alice/analysis/rebuild";
        let recipe = json!({"recipe_path": "Singularity"});
        let answer = api.send("POST", rebuild, None, Some(&recipe)).await;
        assert_eq!(
            (answer.status, answer.error_code().as_str()),
            (401, "unauthorized")
        );
        for token in [&read, &carols] {
            let answer = api.send("POST", rebuild, Some(token), Some(&recipe)).await;
            assert_eq!(
                (answer.status, answer.error_code().as_str()),
                (403, "forbidden"),
                "{}",
                answer.text
            );
        }
        for bad in [
            json!({"path": "Singularity"}),
            json!({"recipe_path": "nope"}),
        ] {
            let answer = api.send("POST", rebuild, Some(&admin), Some(&bad)).await;
            assert_eq!(
                (answer.status, answer.error_code().as_str()),
                (400, "bad_request"),
                "{bad}: {}",
                answer.text
            );
        }
        let answer = api.send("POST", rebuild, Some(&admin), Some(&recipe)).await;
        assert_eq!(answer.status, 202, "{}", answer.text);
        let build_id = answer.json()["build_id"].as_i64().unwrap();
        let build = api.ok(&format!("/api/v1/builds/{build_id}"), None).await;
        assert_eq!(build["trigger"], "rebuild");
        assert_eq!(build["status"], "queued");
        assert_eq!(build["commit_sha"], head.as_str());
        assert_eq!(build["recipe_path"], "Singularity");
        let answer = api
            .send(
                "POST",
                "/api/v1/collections/bob/hidden/rebuild",
                Some(&admin),
                Some(&recipe),
            )
            .await;
        assert_eq!(
            (answer.status, answer.error_code().as_str()),
            (404, "not_found")
        );
        // Three a minute: the fourth of this token is refused.
        let answer = api.send("POST", rebuild, Some(&admin), Some(&recipe)).await;
        assert_eq!(
            (answer.status, answer.error_code().as_str()),
            (429, "rate_limited"),
            "{}",
            answer.text
        );
        let retry: u64 = answer.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=20).contains(&retry), "{retry}");

        // Settings: partial updates by those who may write.
        let settings = "/api/v1/collections/alice/analysis/settings";
        let pause = json!({"paused": true, "build_branches": ["main", "release/v2"]});
        let answer = api.send("PATCH", settings, None, Some(&pause)).await;
        assert_eq!(answer.status, 401);
        let answer = api.send("PATCH", settings, Some(&read), Some(&pause)).await;
        assert_eq!(
            (answer.status, answer.error_code().as_str()),
            (403, "forbidden")
        );
        for bad in [
            json!({"build_branches": ["a b"]}),
            json!({"colour": "red"}),
            json!({"paused": "yes"}),
        ] {
            let answer = api.send("PATCH", settings, Some(&admin), Some(&bad)).await;
            assert_eq!(
                (answer.status, answer.error_code().as_str()),
                (400, "bad_request"),
                "{bad}: {}",
                answer.text
            );
        }
        let answer = api
            .send(
                "PATCH",
                "/api/v1/collections/bob/hidden/settings",
                Some(&admin),
                Some(&pause),
            )
            .await;
        assert_eq!(answer.status, 404);
        let answer = api
            .send("PATCH", settings, Some(&admin), Some(&pause))
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        let changed = answer.json();
        assert_eq!(changed["paused"], true);
        assert_eq!(changed["private"], false, "left out, so kept");
        assert_eq!(changed["build_branches"], json!(["main", "release/v2"]));
        assert_eq!(changed["permission"], "admin");
        let now = api.ok("/api/v1/collections/alice/analysis", None).await;
        assert_eq!(
            (now["paused"].clone(), now["build_branches"].clone()),
            (json!(true), json!(["main", "release/v2"]))
        );

        // Every operation: 401 with an expired or a revoked token, even on
        // public collections, with WWW-Authenticate.
        for (method, path, body) in every_operation(&seeded, ci_id) {
            for token in [expired, revoked.as_str(), "sifh_never_issued"] {
                let answer = api.send(method, &path, Some(token), body.as_ref()).await;
                assert_eq!(answer.status, 401, "{method} {path}: {}", answer.text);
                assert_eq!(answer.error_code(), "unauthorized");
                assert!(
                    answer.headers.contains_key("www-authenticate"),
                    "{method} {path}"
                );
            }
        }
        for path in ["/download/alice/analysis/analysis:latest"] {
            assert_eq!(api.get(path, Some(expired)).await.status, 401, "{path}");
        }

        // Bad input: clear errors.
        for path in [
            "/api/v1/collections?cursor=not-a-cursor",
            "/api/v1/collections?limit=0",
            "/api/v1/collections?limit=many",
            "/api/v1/collections/alice/analysis/containers?cursor=%25",
            "/api/v1/collections/alice/analysis/containers/analysis/history?limit=201",
            "/api/v1/collections/alice/analysis/builds?status=exploded",
            "/api/v1/collections/alice/analysis/containers/analysis/builds?cursor=eyJ4Ijox",
            "/api/v1/tokens?limit=-1",
            "/api/v1/builds/abc",
            "/api/v1/builds/1e3/log",
        ] {
            let answer = api.get(path, Some(&read)).await;
            assert_eq!(answer.status, 400, "{path}: {}", answer.text);
            assert_eq!(answer.error_code(), "bad_request", "{path}");
        }
        let answer = api
            .send("DELETE", "/api/v1/tokens/latest", Some(&admin), None)
            .await;
        assert_eq!(
            (answer.status, answer.error_code().as_str()),
            (400, "bad_request")
        );
        for path in [
            "/api/v1/collections/alice/nothing",
            "/api/v1/collections/alice/analysis/containers/nothing",
            "/api/v1/collections/alice/analysis/containers/nothing/history",
            "/api/v1/collections/alice/analysis/containers/nothing/builds",
            "/api/v1/collections/nobody/nothing/containers",
            "/api/v1/collections/nobody/nothing/builds",
            "/api/v1/images/sha256:0000",
            "/api/v1/builds/999999",
            "/api/v1/builds/999999/log",
            "/api/v1/no/such/route",
        ] {
            let answer = api.get(path, None).await;
            assert_eq!(answer.status, 404, "{path}: {}", answer.text);
            assert_eq!(answer.error_code(), "not_found", "{path}");
        }

        // The document: served, valid, and the one the binary generates.
        let answer = api.get("/api/v1/openapi.json", None).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.headers["content-type"], "application/json");
        validate_openapi(&answer.text, data.path());
        document = answer.json();
        drop(hub);
        db.close().await;
    }
    assert_eq!(
        document,
        serde_json::to_value(sifhub::api::native::openapi()).unwrap()
    );
    check_coverage(&document);
}

/// A download client from `address` (any 127.x.y.z reaches the hub).
fn client_from(address: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(address.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
}

async fn head(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    forwarded: Option<&str>,
) -> reqwest::Response {
    let mut request = client.head(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(forwarded) = forwarded {
        request = request.header("x-forwarded-for", forwarded);
    }
    request.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn downloads_are_rate_limited_per_client() {
    const PER_MINUTE: usize = 60;
    let standin = GitHubStandIn::start().await;
    standin.create_user("alice");
    let data = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!(
        "sqlite://{}",
        data.path().join("sifhub.db").display()
    ))
    .await
    .unwrap();
    let storage =
        Storage::open(&format!("file://{}", data.path().join("storage").display())).unwrap();
    let repo = repository(&db, "alice", "analysis", false).await;
    let (digest, image_id) = image(&db, &storage, repo, 1, json!({})).await;
    tag(&db, repo, "analysis", "latest", image_id).await;
    let env: Vec<(String, String)> = vec![
        ("SIFHUB_DATA_DIR".into(), data.path().display().to_string()),
        ("SIFHUB_GITHUB_API_URL".into(), standin.base_url()),
        ("SIFHUB_WORKER_SLOTS".into(), "0".into()),
        (
            "SIFHUB_DOWNLOAD_RATE_PER_MINUTE".into(),
            PER_MINUTE.to_string(),
        ),
        ("SIFHUB_TRUSTED_PROXIES".into(), "127.0.0.3".into()),
    ];
    let (_, token) = cli_token(&env, "alice", "read", &[]).await;
    let hub_env = env.clone();
    let data_dir = data.path().to_owned();
    let hub = tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = hub_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        HubProcess::start(&data_dir, &env)
    })
    .await
    .unwrap();
    let by_tag = format!("{}/download/alice/analysis/analysis:latest", hub.url());
    let by_digest = format!("{}/download/sha256/{}", hub.url(), &digest[7..]);

    // A minute's worth at once from one address, by tag and by digest alike…
    let first = client_from("127.0.0.1");
    for n in 0..PER_MINUTE {
        let url = if n % 2 == 0 { &by_tag } else { &by_digest };
        let response = head(&first, url, None, None).await;
        assert_eq!(response.status(), 200, "download {n}");
    }
    // …then 429 with Retry-After and a JSON error, a forged
    // X-Forwarded-For from an untrusted peer changing nothing.
    for forwarded in [None, Some("192.0.2.1")] {
        let response = first
            .get(&by_tag)
            .headers(
                forwarded
                    .map(|f| {
                        let mut h = reqwest::header::HeaderMap::new();
                        h.insert("x-forwarded-for", f.parse().unwrap());
                        h
                    })
                    .unwrap_or_default(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 429);
        let retry_after: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry_after), "{retry_after}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "rate_limited");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("per minute"),
            "{body}"
        );
    }
    // The OCI API's image blobs take from the same allowance; its config
    // blob (not an image) does not.
    let blob = format!("{}/v2/alice/analysis/blobs/{digest}", hub.url());
    let response = first.get(&blob).send().await.unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "TOOMANYREQUESTS", "{body}");
    // So do the library API's image files, in its own error envelope.
    let imagefile = format!(
        "{}/v1/imagefile/alice/analysis/analysis:latest?arch=amd64",
        hub.url()
    );
    let response = first.get(&imagefile).send().await.unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], 429, "{body}");
    let config = format!(
        "{}/v2/alice/analysis/blobs/sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
        hub.url()
    );
    assert_eq!(first.get(&config).send().await.unwrap().status(), 200);
    // The bucket refills at one a second (60 a minute): after a second
    // and a bit, one or two more (what was left under one, plus one).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut refilled = 0;
    while head(&first, &by_tag, None, None).await.status() == 200 {
        refilled += 1;
        assert!(refilled <= 2, "more than a second's refill");
    }
    assert!(refilled >= 1, "nothing refilled after a second");
    // Another address and a token have their own buckets.
    assert_eq!(
        head(&client_from("127.0.0.2"), &by_tag, None, None)
            .await
            .status(),
        200
    );
    assert_eq!(
        head(&first, &by_tag, Some(&token), None).await.status(),
        200
    );
    // Through the trusted proxy the forwarded address counts: one
    // forwarded client used up, another still fine.
    let proxy = client_from("127.0.0.3");
    for _ in 0..PER_MINUTE {
        assert_eq!(
            head(&proxy, &by_tag, None, Some("198.51.100.7"))
                .await
                .status(),
            200
        );
    }
    assert_eq!(
        head(&proxy, &by_tag, None, Some("198.51.100.7"))
            .await
            .status(),
        429
    );
    assert_eq!(
        head(&proxy, &by_tag, None, Some("198.51.100.8, 127.0.0.3"))
            .await
            .status(),
        200
    );
    drop(hub);
}
