//! The hub end to end, the way a researcher meets it: a GitHub App
//! installation grants a repository; a signed push adding `Singularity` and
//! `envs/tools/Singularity.v2` builds both in `sifhub serve`'s in-process
//! worker (a real process, sandboxed builds from the seeded docker-registry,
//! sources from the GitHub stand-in); the images download by tag and by
//! digest with the sha256 the build recorded; GitHub hears each build's
//! state in order; a second push changing one recipe builds only that one;
//! redeliveries, bad or missing signatures, oversized bodies and pushes to
//! other branches queue nothing. Runs on SQLite + a local storage folder and
//! on PostgreSQL + an S3-compatible server. And a hub killed with SIGKILL
//! in the middle of an artifact upload shows no partial object after its
//! restart, and the build is retried to success.
//! Needs root and the Debian packages docker-registry, skopeo, umoci,
//! squashfs-tools, slirp4netns, git, postgresql, and s3s-fs
//! (scripts/install-deps.sh test).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};
use sifhub::db::{Db, Recipe};
use sifhub::queue::{Build, BuildStatus, Queue};
use sifhub_tests::git::ZERO_SHA;
use sifhub_tests::github::{GitHubStandIn, StandInRepo};
use sifhub_tests::hub::HubProcess;
use sifhub_tests::postgres::PgCluster;
use sifhub_tests::registry::seeded_registry;
use sifhub_tests::s3::S3Server;
use sifhub_tests::webhook;

const SECRET: &str = "e2e-webhook-secret";

fn recipe(registry: &str, greeting: &str) -> String {
    format!(
        "Bootstrap: docker\nFrom: {registry}/busybox:latest\n\n%post\n    echo '{greeting}' > /greeting\n\n%runscript\n    cat /greeting\n\n%labels\n    Maintainer alice@example.org\n\n%help\n    Prints: {greeting}.\n"
    )
}

/// Where a hub under test keeps things, and what it talks to.
struct World {
    standin: GitHubStandIn,
    repo: StandInRepo,
    hub: HubProcess,
    db: Db,
    registry: String,
    _registry: sifhub_tests::registry::Registry,
    _data: tempfile::TempDir,
}

impl World {
    async fn start(database_url: Option<String>, extra_env: Vec<(&'static str, String)>) -> World {
        let registry = seeded_registry();
        let standin = GitHubStandIn::start().await;
        let installation = standin.create_installation("alice");
        let repo = standin.create_repo("alice", "analysis", false, Some(installation));
        let data = tempfile::tempdir().unwrap();
        let mut env: Vec<(&str, String)> = vec![
            ("SIFHUB_GITHUB_API_URL", standin.base_url()),
            ("SIFHUB_GITHUB_APP_ID", standin.app_id().to_string()),
            (
                "SIFHUB_GITHUB_APP_KEY_FILE",
                standin.app_key_file().display().to_string(),
            ),
            ("SIFHUB_GITHUB_WEBHOOK_SECRET", SECRET.to_owned()),
            ("SIFHUB_WORKER_SLOTS", "2".to_owned()),
        ];
        if let Some(url) = &database_url {
            env.push(("SIFHUB_DATABASE_URL", url.clone()));
        }
        env.extend(extra_env);
        let data_dir = data.path().to_owned();
        let hub = tokio::task::spawn_blocking(move || {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            HubProcess::start(&data_dir, &env)
        })
        .await
        .unwrap();
        let db_url = database_url
            .unwrap_or_else(|| format!("sqlite://{}", data.path().join("sifhub.db").display()));
        let db = Db::connect(&db_url).await.unwrap();

        let world = World {
            registry: registry.host().to_owned(),
            _registry: registry,
            standin,
            repo,
            hub,
            db,
            _data: data,
        };
        // The App is installed on alice's account with the repository.
        let payload = webhook::installation_payload(
            "created",
            installation,
            "alice",
            world.standin.app_id(),
            &[&world.repo],
        );
        let (status, body) = world.deliver("installation", &payload).await;
        assert!(status < 300, "installation: {status} {body}");
        world
    }

    fn hook(&self) -> String {
        format!("{}/webhooks/github", self.hub.url())
    }

    async fn deliver(&self, event: &str, payload: &Value) -> (u16, String) {
        webhook::deliver(&self.hook(), event, payload, Some(SECRET)).await
    }

    /// Commits `files` on `branch` and delivers the push; returns the
    /// commit and the hub's answer.
    async fn push(&self, branch: &str, files: &[(&str, String)]) -> (String, u16, Value) {
        let git = &self.repo.git;
        // GitHub's `before` of a new branch is all zeros.
        let before = git
            .resolve(&format!("refs/heads/{branch}"))
            .unwrap_or_else(|| ZERO_SHA.to_owned());
        if git.resolve("HEAD").is_some() {
            git.checkout(branch);
        }
        for (path, text) in files {
            git.write(path, text);
        }
        let sha = git.commit("update recipes");
        let payload =
            webhook::push_payload(&self.repo, &format!("refs/heads/{branch}"), &before, &sha);
        let (status, body) = self.deliver("push", &payload).await;
        let body: Value = serde_json::from_str(&body)
            .unwrap_or_else(|_| panic!("push answer is not JSON: {status} {body}"));
        (sha, status, body)
    }

    /// Delivers a body over the size limit with curl, which (like a
    /// well-behaved client) asks with `Expect: 100-continue` first, so the
    /// refusal arrives before the body is sent; returns the HTTP status.
    fn deliver_oversized(&self, payload: &Value) -> String {
        let body = serde_json::to_vec(payload).unwrap();
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &body).unwrap();
        let mut curl = std::process::Command::new(sifhub_tests::system_tool("curl", "curl"));
        curl.args(["-s", "-o", "/dev/null", "-w", "%{http_code}"]);
        for (name, value) in
            webhook::delivery_headers("push", &webhook::new_delivery_id(), &body, Some(SECRET))
        {
            curl.arg("-H").arg(format!("{name}: {value}"));
        }
        let out = curl
            .arg("--data-binary")
            .arg(format!("@{}", file.path().display()))
            .arg(self.hook())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    async fn recipes(&self) -> BTreeMap<String, Recipe> {
        let repo = self
            .db
            .find_repository("alice", "analysis")
            .await
            .unwrap()
            .expect("the installation added alice/analysis");
        self.db
            .list_recipes(repo.id)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.path.clone(), r))
            .collect()
    }

    async fn builds(&self, recipe: &Recipe) -> Vec<Build> {
        Queue::new(self.db.clone())
            .builds_of_recipe(recipe.id)
            .await
            .unwrap()
    }

    async fn all_builds(&self) -> usize {
        let mut n = 0;
        for recipe in self.recipes().await.values() {
            n += self.builds(recipe).await.len();
        }
        n
    }

    /// Waits until the newest build of each of `paths` at `sha` succeeded;
    /// returns them by path. A failed build fails the test with its error
    /// and the server's log.
    async fn wait_built(&self, sha: &str, paths: &[&str]) -> BTreeMap<String, Build> {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let recipes = self.recipes().await;
            let mut done = BTreeMap::new();
            for path in paths {
                let Some(recipe) = recipes.get(*path) else {
                    continue;
                };
                let builds = self.builds(recipe).await;
                let Some(build) = builds.iter().find(|b| b.commit_sha == sha) else {
                    continue;
                };
                match build.status {
                    BuildStatus::Succeeded => {
                        done.insert((*path).to_owned(), build.clone());
                    }
                    BuildStatus::Failed | BuildStatus::Cancelled => panic!(
                        "build {} of {path} {:?}: {:?}\n{}",
                        build.id,
                        build.status,
                        build.error,
                        self.hub.log()
                    ),
                    _ => {}
                }
            }
            if done.len() == paths.len() {
                return done;
            }
            assert!(
                Instant::now() < deadline,
                "builds of {paths:?} at {sha} not done after 600 s:\n{}",
                self.hub.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn image_digest(&self, build: &Build) -> String {
        let id = build.image_id.expect("a succeeded build names its image");
        self.db.find_image(id).await.unwrap().unwrap().digest
    }

    async fn download(&self, path: &str) -> (u16, Vec<u8>) {
        let response = reqwest::get(format!("{}{path}", self.hub.url()))
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.bytes().await.unwrap().to_vec())
    }
}

fn sha256_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

async fn push_builds_and_serves(world: World) {
    let reg = world.registry.clone();
    // 1. A push adding two recipes, at the root and in a sub-folder.
    let (first, status, answer) = world
        .push(
            "main",
            &[
                ("Singularity", recipe(&reg, "analysis latest")),
                ("envs/tools/Singularity.v2", recipe(&reg, "tools v2")),
                ("README.md", "# analysis\n".to_owned()),
            ],
        )
        .await;
    assert!(status < 300, "first push: {status} {answer}");
    let built = world
        .wait_built(&first, &["Singularity", "envs/tools/Singularity.v2"])
        .await;
    assert_eq!(world.all_builds().await, 2, "README.md built nothing");

    // 2. Each image downloads by tag and by digest, as the build recorded it.
    for (path, container, tag) in [
        ("Singularity", "analysis", "latest"),
        ("envs/tools/Singularity.v2", "tools", "v2"),
    ] {
        let digest = world.image_digest(&built[path]).await;
        let (status, by_tag) = world
            .download(&format!("/download/alice/analysis/{container}:{tag}"))
            .await;
        assert_eq!(status, 200, "{container}:{tag}");
        assert_eq!(sha256_of(&by_tag), digest, "{container}:{tag} by tag");
        let hex = digest.trim_start_matches("sha256:");
        let (status, by_digest) = world.download(&format!("/download/sha256/{hex}")).await;
        assert_eq!(status, 200);
        assert_eq!(by_digest, by_tag, "{container}:{tag} by digest");
        assert_eq!(
            &by_tag[..10],
            b"#!/usr/bin",
            "{container}:{tag} is a SIF with its launch line"
        );
    }

    // 3. GitHub heard each build go pending → success, in order, linking
    //    to the build page.
    let statuses = world.standin.statuses();
    for (path, build) in &built {
        let states: Vec<&str> = statuses
            .iter()
            .filter(|s| s.context == format!("sifhub/{path}") && s.sha == first)
            .map(|s| s.state.as_str())
            .collect();
        assert!(
            states.len() >= 2 && states[..states.len() - 1].iter().all(|s| *s == "pending"),
            "{path}: {states:?}"
        );
        assert_eq!(states.last(), Some(&"success"), "{path}: {states:?}");
        let last = statuses
            .iter()
            .rfind(|s| s.context == format!("sifhub/{path}"))
            .unwrap();
        assert!(
            last.target_url
                .as_deref()
                .is_some_and(|u| u.ends_with(&format!("/builds/{}", build.id))),
            "{last:?}"
        );
    }

    // 4. A second push changing only the sub-folder recipe builds only it.
    let (second, status, answer) = world
        .push(
            "main",
            &[("envs/tools/Singularity.v2", recipe(&reg, "tools v2, again"))],
        )
        .await;
    assert!(status < 300, "second push: {status} {answer}");
    let rebuilt = world
        .wait_built(&second, &["envs/tools/Singularity.v2"])
        .await;
    let recipes = world.recipes().await;
    assert_eq!(world.builds(&recipes["Singularity"]).await.len(), 1);
    assert_eq!(
        world
            .builds(&recipes["envs/tools/Singularity.v2"])
            .await
            .len(),
        2
    );
    let new_digest = world
        .image_digest(&rebuilt["envs/tools/Singularity.v2"])
        .await;
    let (_, bytes) = world.download("/download/alice/analysis/tools:v2").await;
    assert_eq!(
        sha256_of(&bytes),
        new_digest,
        "the tag moved to the rebuild"
    );

    // 5. Nothing else queues a build.
    let before = world.all_builds().await;
    let git = &world.repo.git;
    git.write("Singularity", recipe(&reg, "changed again"));
    let third = git.commit("change the root recipe");
    let payload = webhook::push_payload(&world.repo, "refs/heads/main", &second, &third);
    // The same delivery twice queues once.
    let id = webhook::new_delivery_id();
    let (status, _) = webhook::deliver_as(&id, &world.hook(), "push", &payload, Some(SECRET)).await;
    assert!(status < 300);
    let (status, again) =
        webhook::deliver_as(&id, &world.hook(), "push", &payload, Some(SECRET)).await;
    assert!(status < 300, "{again}");
    assert!(again.contains("\"duplicate\":true"), "{again}");
    assert_eq!(world.all_builds().await, before + 1);
    // A bad signature, no signature, an oversized body: refused.
    let (status, _) =
        webhook::deliver(&world.hook(), "push", &payload, Some("not-the-secret")).await;
    assert_eq!(status, 401);
    let (status, _) = webhook::deliver(&world.hook(), "push", &payload, None).await;
    assert_eq!(status, 401);
    let mut huge = payload.clone();
    huge["padding"] = Value::String("x".repeat(26 * 1024 * 1024));
    assert_eq!(world.deliver_oversized(&huge), "413");
    // A push to a branch that is not configured.
    let (_, status, answer) = world
        .push(
            "feature",
            &[("Singularity", recipe(&reg, "on a feature branch"))],
        )
        .await;
    assert!(status < 300, "{answer}");
    assert_eq!(
        answer["builds"].as_array().map(Vec::len),
        Some(0),
        "{answer}"
    );
    assert_eq!(world.all_builds().await, before + 1, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn push_builds_and_serves_on_sqlite_and_a_local_folder() {
    let world = World::start(None, Vec::new()).await;
    push_builds_and_serves(world).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn push_builds_and_serves_on_postgresql_and_s3() {
    let cluster = PgCluster::shared();
    let database = cluster.create_database("hub_e2e_pg_s3");
    let s3 = tokio::task::spawn_blocking(S3Server::start).await.unwrap();
    let mut env: Vec<(&'static str, String)> = s3.env();
    env.push(("SIFHUB_STORAGE_URL", s3.storage_url("hub")));
    let world = World::start(Some(database), env).await;
    push_builds_and_serves(world).await;
    // Images went to the bucket, nothing half-written beside them.
    let files = s3.files();
    assert!(
        files
            .iter()
            .filter(|f| f.contains("images/sha256/"))
            .count()
            >= 3,
        "{files:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hub_killed_during_an_upload_shows_nothing_partial_and_retries_the_build() {
    let mut world = World::start(
        None,
        vec![
            ("SIFHUB_WORKER_SLOTS", "0".to_owned()),
            ("SIFHUB_BUILD_LEASE_SECONDS", "3".to_owned()),
        ],
    )
    .await;
    let reg = world.registry.clone();
    let (sha, status, answer) = world
        .push("main", &[("Singularity", recipe(&reg, "after a crash"))])
        .await;
    assert!(status < 300, "{answer}");

    // This test is the worker: it claims the build and starts uploading.
    let token = {
        let out = std::process::Command::new(sifhub_tests::sifhub_bin())
            .args(["admin", "worker-token", "create", "--name", "uploader"])
            .env("SIFHUB_DATA_DIR", world.hub.data_dir())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let client = reqwest::Client::new();
    let api = format!("{}/api/worker/v1", world.hub.url());
    let deadline = Instant::now() + Duration::from_secs(60);
    let job: Value = loop {
        let response = client
            .post(format!("{api}/claim"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"worker": "uploader"}))
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            break response.json().await.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "nothing to claim: {}",
            world.hub.log()
        );
    };
    let build_id = job["build_id"].as_i64().unwrap();
    let content: Vec<u8> = (0..64u32 << 20).map(|i| (i % 251) as u8).collect();
    let partial_hex = hex::encode(Sha256::digest(&content));
    let (chunks, body) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let upload = tokio::spawn(
        client
            .put(format!(
                "{api}/builds/{build_id}/artifact?attempt={}&sha256={partial_hex}&size={}",
                job["attempt"],
                content.len()
            ))
            .bearer_auth(&token)
            .body(reqwest::Body::wrap_stream(tokio_stream_from(body)))
            .send(),
    );
    for chunk in content.chunks(8 << 20).take(3) {
        chunks.send(Ok(chunk.to_vec())).await.unwrap();
    }
    // Let the hub write what it got, then kill it mid-upload.
    tokio::time::sleep(Duration::from_millis(500)).await;
    world.hub.kill();
    drop(chunks);
    // Whatever the client makes of it, the hub died mid-request.
    let _ = upload.await.unwrap();
    let images = world.hub.data_dir().join("storage/images/sha256");
    let final_path = images.join(format!("{partial_hex}.sif"));
    assert!(
        !final_path.exists(),
        "a partial upload is visible at {}",
        final_path.display()
    );
    let staged: Vec<String> = std::fs::read_dir(&images)
        .map(|dir| {
            dir.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        staged
            .iter()
            .any(|name| name.starts_with(&format!("{partial_hex}.sif#"))),
        "the hub was killed before it stored any of the upload: {staged:?}"
    );

    // Back up with an in-process worker: the lease runs out and the build
    // is built again, to success.
    world.hub.set_env("SIFHUB_WORKER_SLOTS", "1");
    tokio::task::block_in_place(|| world.hub.restart());
    let built = world.wait_built(&sha, &["Singularity"]).await;
    let build = &built["Singularity"];
    assert_eq!(build.attempt, 2, "{build:?}");
    let digest = world.image_digest(build).await;
    assert!(
        !final_path.exists(),
        "the partial upload appeared after the restart"
    );
    let (status, _) = world
        .download(&format!("/download/sha256/{partial_hex}"))
        .await;
    assert_eq!(status, 404);
    let visible: Vec<String> = std::fs::read_dir(&images)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".sif"))
        .collect();
    assert_eq!(
        visible,
        [format!("{}.sif", digest.trim_start_matches("sha256:"))],
        "only the finished image is under a final key"
    );
    assert!(world
        .db
        .find_image_by_digest(&format!("sha256:{partial_hex}"))
        .await
        .unwrap()
        .is_none());
}

/// The receiving end of a channel as a stream, for a request body sent
/// piece by piece.
fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
