//! A real `sifhub serve` (no in-process worker) whose images are published
//! the way a worker publishes them: the test records a repository and a
//! recipe and queues a build through the `sifhub` library on the hub's
//! SQLite file, then claims it, uploads the image and completes it over
//! the worker protocol. Shared by the shub and OCI suites.

use sifhub::db::{hash_token, Db, NewRepository, NewToken, NewUser, RepositorySettings, Timestamp};
use sifhub::queue::{NewBuild, Queue, Trigger};
use sifhub_tests::hub::{admin_worker_token, HubProcess};
use sifhub_tests::sha256_hex;

const WORKER_PROTOCOL: &str = "/api/worker/v1";

pub struct SeededHub {
    pub hub: HubProcess,
    pub db: Db,
    worker_token: String,
    http: reqwest::Client,
    _data: tempfile::TempDir,
}

// Each suite uses part of these helpers.
#[allow(dead_code)]
impl SeededHub {
    pub async fn start() -> SeededHub {
        let data = tempfile::tempdir().unwrap();
        let data_dir = data.path().to_owned();
        let (hub, worker_token) = tokio::task::spawn_blocking(move || {
            let hub = HubProcess::start(
                &data_dir,
                &[
                    ("SIFHUB_WORKER_SLOTS", "0"),
                    ("SIFHUB_CLAIM_WAIT_SECONDS", "10"),
                    ("SIFHUB_CLAIM_POLL_MILLIS", "50"),
                    // Commit statuses go nowhere: nothing listens on the discard port.
                    ("SIFHUB_GITHUB_API_URL", "http://127.0.0.1:9"),
                ],
            );
            let token = admin_worker_token(&data_dir, "seeding worker");
            (hub, token)
        })
        .await
        .unwrap();
        let url = format!("sqlite://{}", data.path().join("sifhub.db").display());
        let db = Db::connect(&url).await.unwrap();
        SeededHub {
            hub,
            db,
            worker_token,
            http: reqwest::Client::new(),
            _data: data,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.hub.url()
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.url().trim_start_matches("http://").to_owned()
    }

    /// Builds `container:tag` of `owner/repo` (created public or private
    /// when new) from `recipe_path`, the build's image being `bytes`, and
    /// publishes it through the worker protocol. Returns the image's hex
    /// sha256.
    pub async fn publish(
        &self,
        (owner, repo, private): (&str, &str, bool),
        recipe_path: &str,
        (container, tag): (&str, &str),
        bytes: &[u8],
    ) -> String {
        let now = Timestamp::now();
        let repository = match self.db.find_repository(owner, repo).await.unwrap() {
            Some(repository) => repository,
            None => self
                .db
                .insert_repository(
                    &NewRepository {
                        github_id: None,
                        owner: owner.to_owned(),
                        name: repo.to_owned(),
                        default_branch: "main".to_owned(),
                        installation_id: None,
                        settings: RepositorySettings {
                            private,
                            ..Default::default()
                        },
                    },
                    now,
                )
                .await
                .unwrap(),
        };
        let recipe = self
            .db
            .upsert_recipe(repository.id, recipe_path, container, tag, now)
            .await
            .unwrap();
        let hex = sha256_hex(bytes);
        // A commit per image, so every build is new.
        let commit = sha256_hex(format!("{recipe_path}{hex}").as_bytes())[..40].to_owned();
        let queued = Queue::new(self.db.clone())
            .enqueue(&NewBuild {
                recipe_id: recipe.id,
                commit_sha: commit,
                branch: "main".to_owned(),
                trigger: Trigger::Push,
                max_attempts: 1,
            })
            .await
            .unwrap()
            .build;

        let job: serde_json::Value = self
            .worker_call(reqwest::Method::POST, "/claim")
            .json(&serde_json::json!({"worker": "seed"}))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(job["build_id"], queued.id, "claimed another build: {job}");
        let attempt = job["attempt"].as_i64().unwrap();
        let stored = self
            .worker_call(
                reqwest::Method::PUT,
                &format!(
                    "/builds/{}/artifact?attempt={attempt}&sha256={hex}&size={}",
                    queued.id,
                    bytes.len()
                ),
            )
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(stored.status(), 201, "{}", stored.text().await.unwrap());
        let completed = self
            .worker_call(
                reqwest::Method::POST,
                &format!("/builds/{}/complete", queued.id),
            )
            .json(&serde_json::json!({
                "attempt": attempt,
                "sha256": hex,
                "size": bytes.len(),
                "sif_metadata": {},
                "base_image_digest": null,
                "builder_version": "test",
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(
            completed.status(),
            200,
            "{}",
            completed.text().await.unwrap()
        );
        hex
    }

    fn worker_call(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{WORKER_PROTOCOL}{path}", self.url()))
            .bearer_auth(&self.worker_token)
    }

    /// A user `login` with an API token of `scope` (expiring after
    /// `valid_for` when given); returns the token's secret.
    pub async fn user_token(
        &self,
        login: &str,
        scope: sifhub::db::TokenScope,
        valid_for: Option<std::time::Duration>,
    ) -> String {
        let now = Timestamp::now();
        let user = match self.db.find_user_by_login(login).await.unwrap() {
            Some(user) => user,
            None => self
                .db
                .upsert_user(
                    &NewUser {
                        github_id: i64::from(
                            u32::from_str_radix(&sha256_hex(login.as_bytes())[..8], 16).unwrap(),
                        ),
                        login: login.to_owned(),
                        name: None,
                        avatar_url: None,
                    },
                    now,
                )
                .await
                .unwrap(),
        };
        let secret = format!("sift_{}", uuid::Uuid::new_v4().simple());
        self.db
            .insert_token(
                &NewToken {
                    token_hash: hash_token(&secret),
                    user_id: Some(user.id),
                    name: format!("{login} test token"),
                    scope,
                    expires_at: valid_for.map(|d| now.plus(d)),
                },
                now,
            )
            .await
            .unwrap();
        secret
    }

    /// The row id of the usable token `secret`.
    pub async fn token_id(&self, secret: &str) -> i64 {
        self.db
            .find_token_by_hash(&hash_token(secret), Timestamp::now())
            .await
            .unwrap()
            .unwrap()
            .id
    }
}
