//! The worker protocol end to end, with real processes: a `sifhub serve`
//! (no in-process worker) on a temporary data folder, builds queued by the
//! test through the `sifhub` library on the same SQLite file, sources from
//! the GitHub stand-in, base images from the seeded local registry, and
//! `sifhub worker` processes doing the builds. Covers a build published
//! (image row with the SIF's sha256, the object in storage, the tag, the
//! log), the protocol's refusals (bad token, wrong attempt, a wrong
//! sha256, a log chunk sent twice), and a worker killed with SIGKILL in
//! the middle of a build: the lease expires and a second worker finishes
//! it, with exactly one image and one succeeded build. On S3 storage the
//! worker uploads the image straight to a signed URL and the hub verifies
//! it before publishing: a build over S3 never sends the image through the
//! hub, and an upload of wrong bytes is refused at completion with nothing
//! published; on a local folder the hub declines to sign.
//! Needs root (the build sandbox) and the packages the build tests need.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use sifhub::db::{Db, NewRepository, Recipe, RepositorySettings, Timestamp};
use sifhub::queue::{Build, BuildStatus, NewBuild, Queue, Trigger};
use sifhub::storage::{Storage, StorageKey};
use sifhub_tests::github::GitHubStandIn;
use sifhub_tests::registry::{fixtures_dir, seeded_registry};
use sifhub_tests::s3::S3Server;
use sifhub_tests::sifhub_bin;

/// A child process killed (SIGKILL) on drop, its output collected.
struct Proc {
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(command: &mut Command) -> Proc {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sifhub");
        let output = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let mut out = output.lock().unwrap();
                    out.push_str(&line);
                    out.push('\n');
                }
            });
        }
        Proc { child, output }
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits until the output has a line containing `needle`; returns it.
    fn wait_for_line(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.output().lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no line with {needle:?} within {timeout:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `sifhub serve`, without in-process worker unless `env` asks for one.
struct Hub {
    proc: Proc,
    addr: String,
    data: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
    db: Db,
}

impl Hub {
    fn start(github_api_url: &str, lease_seconds: u64, env: &[(&str, String)]) -> Hub {
        let data = tempfile::tempdir().unwrap();
        let proc = Proc::spawn(
            Command::new(sifhub_bin())
                .arg("serve")
                .env("SIFHUB_LISTEN", "127.0.0.1:0")
                .env("SIFHUB_DATA_DIR", data.path())
                .env("SIFHUB_WORKER_SLOTS", "0")
                .env("SIFHUB_GITHUB_API_URL", github_api_url)
                .env("SIFHUB_BUILD_LEASE_SECONDS", lease_seconds.to_string())
                .env("SIFHUB_CLAIM_WAIT_SECONDS", "2")
                .env("SIFHUB_CLAIM_POLL_MILLIS", "100")
                .env("SIFHUB_LOG", "info")
                .envs(env.iter().map(|(k, v)| (k, v))),
        );
        let line = proc.wait_for_line("listening on ", Duration::from_secs(60));
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split(';').next())
            .unwrap()
            .to_owned();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let url = format!("sqlite://{}", data.path().join("sifhub.db").display());
        let db = runtime.block_on(Db::connect(&url)).unwrap();
        Hub {
            proc,
            addr,
            data,
            runtime,
            db,
        }
    }

    fn queue(&self) -> Queue {
        Queue::new(self.db.clone())
    }

    /// Adds `owner/name` with a recipe at `path` building `container:tag`.
    fn add_recipe(
        &self,
        owner: &str,
        name: &str,
        path: &str,
        container: &str,
        tag: &str,
    ) -> Recipe {
        self.runtime.block_on(async {
            let repo = match self.db.find_repository(owner, name).await.unwrap() {
                Some(repo) => repo,
                None => self
                    .db
                    .insert_repository(
                        &NewRepository {
                            github_id: None,
                            owner: owner.to_owned(),
                            name: name.to_owned(),
                            default_branch: "main".to_owned(),
                            installation_id: None,
                            settings: RepositorySettings::default(),
                        },
                        Timestamp::now(),
                    )
                    .await
                    .unwrap(),
            };
            self.db
                .upsert_recipe(repo.id, path, container, tag, Timestamp::now())
                .await
                .unwrap()
        })
    }

    fn enqueue(&self, recipe: &Recipe, commit: &str) -> Build {
        self.runtime
            .block_on(self.queue().enqueue(&NewBuild {
                recipe_id: recipe.id,
                commit_sha: commit.to_owned(),
                branch: "main".to_owned(),
                trigger: Trigger::Push,
                max_attempts: 3,
            }))
            .unwrap()
            .build
    }

    fn build(&self, id: i64) -> Build {
        self.runtime
            .block_on(self.queue().get(id))
            .unwrap()
            .unwrap()
    }

    /// Waits until build `id` is finished.
    fn wait_finished(&self, id: i64, timeout: Duration, workers: &[&Proc]) -> Build {
        let deadline = Instant::now() + timeout;
        loop {
            let build = self.build(id);
            if build.status.is_finished() {
                return build;
            }
            assert!(
                Instant::now() < deadline,
                "build {id} not finished within {timeout:?}: {build:?}\nhub:\n{}\nworkers:\n{}",
                self.proc.output(),
                workers
                    .iter()
                    .map(|w| w.output())
                    .collect::<Vec<_>>()
                    .join("\n---\n")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `sifhub admin worker-token create` on the hub's data folder.
    fn worker_token(&self) -> String {
        sifhub_tests::hub::admin_worker_token(self.data.path(), "test worker")
    }

    fn worker(&self, token: &str, work: &Path) -> Proc {
        Proc::spawn(
            Command::new(sifhub_bin())
                .arg("worker")
                .arg("--hub")
                .arg(format!("http://{}", self.addr))
                .arg("--token")
                .arg(token)
                .arg("--work-dir")
                .arg(work)
                .arg("--cache-dir")
                .arg(fixtures_dir().join("build-oci-cache")),
        )
    }

    /// One HTTP/1.1 request; returns the status and the body.
    fn http(&self, method: &str, path: &str, token: &str, body: &[u8]) -> (u16, String) {
        let mut stream = TcpStream::connect(&self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.addr,
            body.len()
        )
        .unwrap();
        stream.write_all(body).unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let response = String::from_utf8_lossy(&response).into_owned();
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {response:?}"));
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    fn storage_file(&self, relative: &str) -> PathBuf {
        self.data.path().join("storage").join(relative)
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

#[test]
fn protocol_refuses_strangers_stale_attempts_and_wrong_digests() {
    // GitHub is never reached here: no source is fetched.
    let hub = Hub::start("http://127.0.0.1:9", 30, &[]);
    let recipe = hub.add_recipe("alice", "tools", "envs/Singularity.v1", "envs", "v1");
    let build = hub.enqueue(&recipe, COMMIT);
    let claim = br#"{"worker":"probe"}"#;

    let (status, body) = hub.http("POST", "/api/worker/v1/claim", "sifw_not-a-token", claim);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("\"error\""), "JSON error body: {body}");
    assert_eq!(hub.build(build.id).status, BuildStatus::Queued);

    let token = hub.worker_token();
    let (status, body) = hub.http("POST", "/api/worker/v1/claim", &token, claim);
    assert_eq!(status, 200, "{body}");
    let job: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(job["build_id"], build.id);
    assert_eq!(job["attempt"], 1);
    assert_eq!(job["repository"], "alice/tools");
    assert_eq!(job["recipe_path"], "envs/Singularity.v1");
    assert_eq!(job["container"], "envs");
    assert_eq!(job["tag"], "v1");
    assert_eq!(job["commit"], COMMIT);
    assert_eq!(
        job["source_url"],
        format!("/api/worker/v1/builds/{}/source?attempt=1", build.id)
    );
    hub.proc.wait_for_line(
        &format!("build {} attempt 1: claimed by probe@token-", build.id),
        Duration::from_secs(5),
    );
    // Nothing else is queued: the long poll ends empty.
    let (status, body) = hub.http("POST", "/api/worker/v1/claim", &token, claim);
    assert_eq!(status, 204, "{body}");

    let builds = format!("/api/worker/v1/builds/{}", build.id);
    let (status, body) = hub.http(
        "POST",
        &format!("{builds}/heartbeat"),
        &token,
        br#"{"attempt":2}"#,
    );
    assert_eq!(
        status, 409,
        "a stale or future attempt is not the holder: {body}"
    );
    let (status, body) = hub.http(
        "POST",
        &format!("{builds}/heartbeat"),
        &token,
        br#"{"attempt":1}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("lease_until"), "{body}");

    // Log chunks: idempotent by sequence number, assembled in order.
    let chunk = |seq: i64, text: &str| {
        serde_json::json!({"attempt": 1, "seq": seq, "text": text}).to_string()
    };
    let (status, body) = hub.http(
        "POST",
        &format!("{builds}/log"),
        &token,
        chunk(1, "world\n").as_bytes(),
    );
    assert_eq!((status, body.as_str()), (200, r#"{"stored":true}"#));
    let (status, body) = hub.http(
        "POST",
        &format!("{builds}/log"),
        &token,
        chunk(0, "hello\n").as_bytes(),
    );
    assert_eq!((status, body.as_str()), (200, r#"{"stored":true}"#));
    let (status, body) = hub.http(
        "POST",
        &format!("{builds}/log"),
        &token,
        chunk(0, "hello\n").as_bytes(),
    );
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"stored":false}"#),
        "sent twice, stored once"
    );

    // An artifact whose bytes do not match the announced sha256 is refused
    // and leaves nothing in storage.
    let sif = b"SIF bytes of a build that never ran".to_vec();
    let wrong = sha256_hex(b"something else");
    let (status, body) = hub.http(
        "PUT",
        &format!(
            "{builds}/artifact?attempt=1&sha256={wrong}&size={}",
            sif.len()
        ),
        &token,
        &sif,
    );
    assert_eq!(status, 422, "{body}");
    let right = sha256_hex(&sif);
    for hex in [&wrong, &right] {
        assert!(!hub
            .storage_file(&format!("images/sha256/{hex}.sif"))
            .exists());
    }
    // A local folder hands out no signed upload URL: through the hub.
    let ask = serde_json::json!({"attempt": 1, "sha256": right, "size": sif.len()});
    let (status, body) = hub.http(
        "POST",
        &format!("{builds}/artifact-url"),
        &token,
        ask.to_string().as_bytes(),
    );
    assert_eq!(status, 404, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("through the hub"),
        "{body}"
    );
    // Nor is completing without the image uploaded.
    let complete = serde_json::json!({
        "attempt": 1, "sha256": right, "size": sif.len(), "sif_metadata": {},
        "base_image_digest": null, "builder_version": null,
    });
    let (status, body) = hub.http(
        "POST",
        &format!("{builds}/complete"),
        &token,
        complete.to_string().as_bytes(),
    );
    assert_eq!(status, 422, "{body}");
    // Another token is not the holder.
    let other = hub.worker_token();
    let (status, body) = hub.http(
        "POST",
        &format!("{builds}/heartbeat"),
        &other,
        br#"{"attempt":1}"#,
    );
    assert_eq!(status, 409, "{body}");

    let (status, body) = hub.http(
        "POST",
        &format!("{builds}/fail"),
        &token,
        br#"{"attempt":1,"error":"recipe line 3: no such agent"}"#,
    );
    assert_eq!(status, 204, "{body}");
    let failed = hub.build(build.id);
    assert_eq!(failed.status, BuildStatus::Failed);
    assert_eq!(
        failed.error.as_deref(),
        Some("recipe line 3: no such agent")
    );
    hub.proc.wait_for_line(
        &format!("build {} attempt 1: failed: recipe line 3", build.id),
        Duration::from_secs(5),
    );
    let log_key = failed.log_key.expect("log key");
    assert_eq!(
        std::fs::read_to_string(hub.storage_file(&log_key)).unwrap(),
        "hello\nworld\n"
    );
    // Finished: the lease is gone.
    let (status, body) = hub.http(
        "POST",
        &format!("{builds}/heartbeat"),
        &token,
        br#"{"attempt":1}"#,
    );
    assert_eq!(status, 409, "{body}");
}

/// The stand-in serving `alice/tools` with `recipe` at `path`, on its own
/// runtime; returns the commit.
fn github_with_recipe(
    path: &str,
    recipe: &str,
) -> (tokio::runtime::Runtime, GitHubStandIn, String) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let github = runtime.block_on(GitHubStandIn::start());
    let repo = github.create_repo("alice", "tools", false, None);
    repo.git.write(path, recipe);
    repo.git.write("README.md", "tools\n");
    let commit = repo.git.commit("add the recipe");
    (runtime, github, commit)
}

/// The files under the storage's image folder.
fn stored_images(hub: &Hub) -> Vec<PathBuf> {
    match std::fs::read_dir(hub.storage_file("images/sha256")) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn a_worker_builds_and_the_hub_publishes_image_tag_log_and_status() {
    let registry = seeded_registry();
    let recipe = format!(
        "Bootstrap: docker\nFrom: {}/busybox:amd64\n\n%post\n    echo built by a worker > /built\n\n%labels\n    Built-By worker\n",
        registry.host()
    );
    let (_runtime, github, commit) = github_with_recipe("Singularity", &recipe);
    let hub = Hub::start(
        &github.base_url(),
        30,
        &[("SIFHUB_GITHUB_TOKEN", github.plain_token())],
    );
    let recipe_row = hub.add_recipe("alice", "tools", "Singularity", "tools", "latest");
    let build = hub.enqueue(&recipe_row, &commit);
    let work = tempfile::tempdir().unwrap();
    let worker = hub.worker(&hub.worker_token(), work.path());

    let done = hub.wait_finished(build.id, Duration::from_secs(300), &[&worker]);
    assert_eq!(
        done.status,
        BuildStatus::Succeeded,
        "{done:?}\nhub:\n{}\nworker:\n{}",
        hub.proc.output(),
        worker.output()
    );
    let image = hub
        .runtime
        .block_on(hub.db.find_image(done.image_id.unwrap()))
        .unwrap()
        .unwrap();
    let hex = image.digest.strip_prefix("sha256:").unwrap();
    let stored = std::fs::read(hub.storage_file(&format!("images/sha256/{hex}.sif"))).unwrap();
    assert_eq!(
        sha256_hex(&stored),
        hex,
        "the stored object is the recorded digest"
    );
    assert_eq!(stored.len() as i64, image.size);
    assert_eq!(stored_images(&hub).len(), 1);
    assert_eq!(image.commit_sha.as_deref(), Some(commit.as_str()));
    assert_eq!(image.recipe_path.as_deref(), Some("Singularity"));
    assert!(
        image
            .base_image_digest
            .as_deref()
            .unwrap_or("")
            .starts_with("sha256:"),
        "{image:?}"
    );
    assert_eq!(image.sif_metadata["provenance"]["commit"], commit.as_str());

    let tag = hub
        .runtime
        .block_on(hub.db.find_tag(recipe_row.container_id, "latest"))
        .unwrap()
        .unwrap();
    assert_eq!(tag.image_id, Some(image.id));

    let log = std::fs::read_to_string(hub.storage_file(done.log_key.as_deref().unwrap())).unwrap();
    assert!(log.contains("fetching the source of alice/tools"), "{log}");
    assert!(
        log.contains(&format!("pulling {}/busybox:amd64", registry.host())),
        "{log}"
    );
    assert!(log.contains("echo built by a worker"), "{log}");
    assert_eq!(
        hub.runtime
            .block_on(hub.db.build_log_text(build.id, 1))
            .unwrap(),
        "",
        "chunks are dropped once the log is stored"
    );

    let hub_log = hub.proc.output();
    assert!(
        hub_log.contains(&format!("build {} attempt 1: claimed by", build.id)),
        "{hub_log}"
    );
    // A local folder signs no upload URL: the image went through the hub.
    let builds = format!("/api/worker/v1/builds/{}", build.id);
    assert!(
        hub_log.contains(&format!("POST {builds}/artifact-url 404 ")),
        "{hub_log}"
    );
    assert!(
        hub_log.contains(&format!("PUT {builds}/artifact 201 ")),
        "{hub_log}"
    );
    hub.proc.wait_for_line(
        &format!(
            "build {} attempt 1: succeeded with {}",
            build.id, image.digest
        ),
        Duration::from_secs(5),
    );
    // Commit statuses: building, then built, for the recipe's context.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let states: Vec<(String, String)> = github
            .statuses()
            .into_iter()
            .filter(|s| s.sha == commit)
            .map(|s| (s.state, s.context))
            .collect();
        let context = "sifhub/Singularity".to_owned();
        if states
            == [
                ("pending".to_owned(), context.clone()),
                ("success".to_owned(), context),
            ]
        {
            break;
        }
        assert!(Instant::now() < deadline, "statuses: {states:?}\n{hub_log}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The source came from the stand-in through the hub, never to the worker.
    assert_eq!(github.requests_to("/repos/alice/tools/tarball").len(), 1);
}

#[test]
fn a_worker_killed_mid_build_loses_its_lease_and_another_finishes_it() {
    let registry = seeded_registry();
    let recipe = format!(
        "Bootstrap: docker\nFrom: {}/busybox:amd64\n\n%post\n    echo started\n    sleep 6\n    echo done > /done\n",
        registry.host()
    );
    let (_runtime, github, commit) = github_with_recipe("Singularity", &recipe);
    let hub = Hub::start(&github.base_url(), 3, &[]);
    let recipe_row = hub.add_recipe("alice", "tools", "Singularity", "tools", "latest");
    let build = hub.enqueue(&recipe_row, &commit);
    let token = hub.worker_token();
    let work = tempfile::tempdir().unwrap();
    let mut first = hub.worker(&token, &work.path().join("first"));

    // Kill the first worker once its %post runs (its log chunks say so).
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let log = hub
            .runtime
            .block_on(hub.db.build_log_text(build.id, 1))
            .unwrap();
        if log.contains("+ sleep 6") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first worker never reached %post:\n{log}\n{}",
            first.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    first.kill();
    assert_eq!(hub.build(build.id).status, BuildStatus::Running);

    let second = hub.worker(&token, &work.path().join("second"));
    let done = hub.wait_finished(build.id, Duration::from_secs(300), &[&second]);
    assert_eq!(
        done.status,
        BuildStatus::Succeeded,
        "{done:?}\nhub:\n{}\nsecond worker:\n{}",
        hub.proc.output(),
        second.output()
    );
    assert_eq!(done.attempt, 2, "the lost attempt counted");
    hub.proc.wait_for_line(
        &format!("build {}: lease expired, queued again", build.id),
        Duration::from_secs(5),
    );
    let builds = hub
        .runtime
        .block_on(hub.queue().builds_of_recipe(recipe_row.id))
        .unwrap();
    assert_eq!(builds.len(), 1);
    assert_eq!(stored_images(&hub).len(), 1, "exactly one image published");
    let log = std::fs::read_to_string(hub.storage_file(done.log_key.as_deref().unwrap())).unwrap();
    assert!(
        log.contains("+ sleep 6"),
        "the log is the finishing attempt's: {log}"
    );
}

#[test]
fn serve_builds_with_its_in_process_worker_through_the_same_protocol() {
    let registry = seeded_registry();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let github = runtime.block_on(GitHubStandIn::start());
    let repo = github.create_repo("alice", "tools", false, None);
    for (path, word) in [("Singularity", "root"), ("envs/Singularity.v2", "envs")] {
        repo.git.write(
            path,
            format!(
                "Bootstrap: docker\nFrom: {}/busybox:amd64\n\n%post\n    echo {word} > /which\n",
                registry.host()
            ),
        );
    }
    let commit = repo.git.commit("two recipes");
    let hub = Hub::start(
        &github.base_url(),
        30,
        &[("SIFHUB_WORKER_SLOTS", "2".to_owned())],
    );
    let root = hub.add_recipe("alice", "tools", "Singularity", "tools", "latest");
    let envs = hub.add_recipe("alice", "tools", "envs/Singularity.v2", "envs", "v2");
    let builds = [hub.enqueue(&root, &commit), hub.enqueue(&envs, &commit)];
    let mut digests = Vec::new();
    for (build, recipe) in builds.iter().zip([&root, &envs]) {
        let done = hub.wait_finished(build.id, Duration::from_secs(300), &[]);
        assert_eq!(
            done.status,
            BuildStatus::Succeeded,
            "{done:?}\n{}",
            hub.proc.output()
        );
        assert!(
            done.worker_id
                .as_deref()
                .unwrap()
                .starts_with("in-process-"),
            "{done:?}"
        );
        let image = hub
            .runtime
            .block_on(hub.db.find_image(done.image_id.unwrap()))
            .unwrap()
            .unwrap();
        let tag = hub
            .runtime
            .block_on(hub.db.find_tag(recipe.container_id, &recipe.tag))
            .unwrap()
            .unwrap();
        assert_eq!(tag.image_id, Some(image.id));
        let hex = image.digest.strip_prefix("sha256:").unwrap().to_owned();
        let stored = std::fs::read(hub.storage_file(&format!("images/sha256/{hex}.sif"))).unwrap();
        assert_eq!(sha256_hex(&stored), hex);
        digests.push(hex);
    }
    assert_ne!(digests[0], digests[1], "two recipes, two images");
    assert_eq!(stored_images(&hub).len(), 2);
}

/// A hub on `server`'s bucket (prefix `hub`), and a storage handle on it.
fn hub_on_s3(server: &S3Server, github_api_url: &str, extra: &[(&str, String)]) -> (Hub, Storage) {
    let mut env = server.env();
    env.push(("SIFHUB_STORAGE_URL", server.storage_url("hub")));
    env.extend(extra.iter().cloned());
    let hub = Hub::start(github_api_url, 30, &env);
    let aws = server.env().into_iter().map(|(k, v)| (k.to_owned(), v));
    let storage = Storage::open_with_env(&server.storage_url("hub"), aws).unwrap();
    (hub, storage)
}

/// The bucket's objects under the hub's prefix, relative to it.
fn bucket_objects(server: &S3Server) -> Vec<String> {
    server
        .files()
        .into_iter()
        .filter(|f| !f.starts_with('.') && !f.contains("/."))
        .filter_map(|f| f.strip_prefix("sifhub-test/hub/").map(str::to_owned))
        .collect()
}

#[test]
fn on_s3_a_worker_uploads_to_a_signed_url_and_the_hub_verifies_it() {
    let registry = seeded_registry();
    let recipe = format!(
        "Bootstrap: docker\nFrom: {}/busybox:amd64\n\n%post\n    echo uploaded to s3 > /built\n",
        registry.host()
    );
    let (_runtime, github, commit) = github_with_recipe("Singularity", &recipe);
    let server = S3Server::start();
    let (hub, storage) = hub_on_s3(
        &server,
        &github.base_url(),
        &[("SIFHUB_GITHUB_TOKEN", github.plain_token())],
    );
    let recipe_row = hub.add_recipe("alice", "tools", "Singularity", "tools", "latest");
    let build = hub.enqueue(&recipe_row, &commit);
    let work = tempfile::tempdir().unwrap();
    let worker = hub.worker(&hub.worker_token(), work.path());

    let done = hub.wait_finished(build.id, Duration::from_secs(300), &[&worker]);
    assert_eq!(
        done.status,
        BuildStatus::Succeeded,
        "{done:?}\nhub:\n{}\nworker:\n{}\ns3s-fs:\n{}",
        hub.proc.output(),
        worker.output(),
        server.log()
    );
    let image = hub
        .runtime
        .block_on(hub.db.find_image(done.image_id.unwrap()))
        .unwrap()
        .unwrap();
    let hex = image.digest.strip_prefix("sha256:").unwrap();
    let stored = hub
        .runtime
        .block_on(storage.get_bytes(&StorageKey::image(hex).unwrap()))
        .unwrap();
    assert_eq!(sha256_hex(&stored), hex);
    assert_eq!(stored.len() as i64, image.size);
    let mut objects = bucket_objects(&server);
    objects.sort();
    assert_eq!(
        objects,
        [
            format!("images/sha256/{hex}.sif"),
            format!("logs/{}.log", build.id)
        ],
        "one image, its log, and no upload left"
    );

    // The image went to the signed URL, never through the hub.
    let hub_log = hub.proc.output();
    let builds = format!("/api/worker/v1/builds/{}", build.id);
    assert!(
        hub_log.contains(&format!("POST {builds}/artifact-url 200 ")),
        "{hub_log}"
    );
    assert!(
        !hub_log.contains(&format!("PUT {builds}/artifact ")),
        "{hub_log}"
    );
    assert!(
        hub_log.contains(&format!("POST {builds}/complete 200 ")),
        "{hub_log}"
    );
    assert!(
        !worker.output().contains("uploading through the hub"),
        "{}",
        worker.output()
    );
}

#[test]
fn on_s3_a_signed_upload_of_wrong_bytes_publishes_nothing() {
    let server = S3Server::start();
    // GitHub is never reached here: no source is fetched.
    let (hub, _storage) = hub_on_s3(&server, "http://127.0.0.1:9", &[]);
    let recipe = hub.add_recipe("alice", "tools", "Singularity", "tools", "latest");
    let build = hub.enqueue(&recipe, COMMIT);
    let token = hub.worker_token();
    let (status, body) = hub.http(
        "POST",
        "/api/worker/v1/claim",
        &token,
        br#"{"worker":"probe"}"#,
    );
    assert_eq!(status, 200, "{body}");

    let sif = b"the SIF bytes the worker announces".to_vec();
    let hex = sha256_hex(&sif);
    let builds = format!("/api/worker/v1/builds/{}", build.id);
    let ask = serde_json::json!({"attempt": 1, "sha256": hex, "size": sif.len()});
    let (status, body) = hub.http(
        "POST",
        &format!("{builds}/artifact-url"),
        &hub.worker_token(),
        ask.to_string().as_bytes(),
    );
    assert_eq!(status, 409, "only the lease holder gets a url: {body}");
    let (status, body) = hub.http(
        "POST",
        &format!("{builds}/artifact-url"),
        &token,
        ask.to_string().as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(answer["expires_in"].as_u64().unwrap() >= 3600, "{body}");
    let url = answer["url"].as_str().unwrap().to_owned();

    // Other bytes of the same length go to the signed URL.
    let wrong = vec![b'x'; sif.len()];
    let put = hub.runtime.block_on(async {
        reqwest::Client::new()
            .put(&url)
            .body(wrong)
            .send()
            .await
            .unwrap()
            .status()
    });
    assert!(put.is_success(), "{put}");
    assert_eq!(
        bucket_objects(&server),
        [format!("uploads/{}-1.sif", build.id)]
    );

    let complete = serde_json::json!({
        "attempt": 1, "sha256": hex, "size": sif.len(), "sif_metadata": {},
        "base_image_digest": null, "builder_version": null,
    });
    let (status, body) = hub.http(
        "POST",
        &format!("{builds}/complete"),
        &token,
        complete.to_string().as_bytes(),
    );
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("sha256"), "{body}");
    assert!(
        bucket_objects(&server).is_empty(),
        "nothing published, the upload removed: {:?}",
        bucket_objects(&server)
    );
    let still = hub.build(build.id);
    assert_eq!(still.status, BuildStatus::Running, "{still:?}");
    assert_eq!(still.image_id, None);
}
