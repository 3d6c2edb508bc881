//! The web UI in a real browser: headless Chromium (Debian `chromium`)
//! driven over WebDriver (`chromium-driver`, through fantoccini) against
//! a real `sifhub serve` with the GitHub stand-in and the seeded
//! docker-registry, as a maintainer and a researcher meet it:
//!
//! sign in with GitHub → connect (enable) a repository on `/connect` →
//! a signed push → the build page shows log lines arriving live, without
//! a reload → the container page lists the tag → the download button's
//! file has the image's sha256 → the catalog search finds the collection.
//! A private collection whose recipe puts `<script>` and quotes in its
//! labels and `%help` shows to its signed-in owner with no script run, and
//! is a 404 page to a signed-out browser; a form without the session's
//! CSRF token is refused and changes nothing; the owner's settings form
//! makes a collection private. Each step saves a screenshot under
//! `<workspace>/target/screenshots/`.
//!
//! Needs root and the Debian packages chromium, chromium-driver,
//! docker-registry, skopeo, umoci, squashfs-tools, slirp4netns and git
//! (scripts/install-deps.sh test).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sifhub::db::Db;
use sifhub::queue::{Build, BuildStatus, Queue};
use sifhub_tests::git::ZERO_SHA;
use sifhub_tests::github::{GitHubStandIn, StandInRepo};
use sifhub_tests::hub::HubProcess;
use sifhub_tests::registry::{free_port, http_status, seeded_registry, Registry};
use sifhub_tests::webhook;

const SECRET: &str = "browser-webhook-secret";
/// What a script in user data would set if it ran.
const PWNED: &str = "<script>window.__pwned=1</script>";

/// A recipe that prints numbered lines a second apart in `%post`, so the
/// build page has log lines to receive while it is open.
fn slow_recipe(registry: &str) -> String {
    format!(
        "Bootstrap: docker\nFrom: {registry}/busybox:latest\n\n%post\n    for i in 1 2 3 4 5 6 7 8 9 10; do echo \"tick $i\"; sleep 1; done\n    echo hello > /greeting\n\n%runscript\n    cat /greeting\n\n%labels\n    Maintainer alice@example.org\n\n%help\n    Says hello.\n"
    )
}

/// A recipe whose labels and help try to run a script.
fn evil_recipe(registry: &str) -> String {
    format!(
        "Bootstrap: docker\nFrom: {registry}/busybox:latest\n\n%post\n    echo secret > /secret\n\n%labels\n    Evil {PWNED} \"quoted\" <img src=x onerror=\"window.__pwned=2\">\n\n%help\n    {PWNED} \"help\" <img src=x onerror=\"window.__pwned=3\">\n"
    )
}

/// chromedriver on a free port, stopped when dropped.
struct ChromeDriver {
    child: Child,
    url: String,
}

impl ChromeDriver {
    fn start() -> ChromeDriver {
        let driver = sifhub_tests::system_tool("chromedriver", "chromium-driver");
        sifhub_tests::system_tool("chromium", "chromium");
        let port = free_port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let host = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_status(&host, "/status") != Some(200) {
            assert!(
                Instant::now() < deadline,
                "chromedriver not ready after 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        ChromeDriver {
            child,
            url: format!("http://{host}"),
        }
    }

    /// A fresh headless browser session (its own profile: no cookies).
    async fn browser(&self) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-background-networking",
                    "--disable-extensions",
                    "--no-first-run",
                    "--window-size=1280,1000",
                ],
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("open a chromium session")
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Saves what the browser shows as `<workspace>/target/screenshots/<name>.png`.
async fn screenshot(browser: &Client, name: &str) {
    let dir: PathBuf = sifhub_tests::repo_root().join("target").join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let png = browser.screenshot().await.unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

async fn text_of(browser: &Client, css: &str) -> String {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .text()
        .await
        .unwrap()
}

async fn body_text(browser: &Client) -> String {
    text_of(browser, "body").await
}

struct World {
    standin: GitHubStandIn,
    hub: HubProcess,
    db: Db,
    registry: String,
    _registry: Registry,
    _data: tempfile::TempDir,
}

impl World {
    async fn start() -> World {
        let registry = seeded_registry();
        let standin = GitHubStandIn::start().await;
        let data = tempfile::tempdir().unwrap();
        let env: Vec<(&str, String)> = vec![
            ("SIFHUB_GITHUB_API_URL", standin.base_url()),
            ("SIFHUB_GITHUB_WEB_URL", standin.base_url()),
            ("SIFHUB_GITHUB_APP_ID", standin.app_id().to_string()),
            (
                "SIFHUB_GITHUB_APP_KEY_FILE",
                standin.app_key_file().display().to_string(),
            ),
            ("SIFHUB_GITHUB_WEBHOOK_SECRET", SECRET.to_owned()),
            ("SIFHUB_GITHUB_CLIENT_ID", standin.oauth_client_id()),
            ("SIFHUB_GITHUB_CLIENT_SECRET", standin.oauth_client_secret()),
            ("SIFHUB_GITHUB_APP_SLUG", "sifhub-test".to_owned()),
            ("SIFHUB_WORKER_SLOTS", "2".to_owned()),
        ];
        let data_dir = data.path().to_owned();
        let hub = tokio::task::spawn_blocking(move || {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            HubProcess::start(&data_dir, &env)
        })
        .await
        .unwrap();
        let db = Db::connect(&format!(
            "sqlite://{}",
            data.path().join("sifhub.db").display()
        ))
        .await
        .unwrap();
        World {
            registry: registry.host().to_owned(),
            _registry: registry,
            standin,
            hub,
            db,
            _data: data,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.hub.url())
    }

    /// Commits `files` on `main` and delivers the push, signed.
    async fn push(&self, repo: &StandInRepo, files: &[(&str, String)]) -> String {
        let before = repo
            .git
            .resolve("refs/heads/main")
            .unwrap_or_else(|| ZERO_SHA.to_owned());
        for (path, text) in files {
            repo.git.write(path, text);
        }
        let sha = repo.git.commit("update recipes");
        let payload = webhook::push_payload(repo, "refs/heads/main", &before, &sha);
        let (status, body) = webhook::deliver(
            &self.url("/webhooks/github"),
            "push",
            &payload,
            Some(SECRET),
        )
        .await;
        assert!(status < 300, "push: {status} {body}");
        sha
    }

    /// The build of `owner/name`'s recipe `path` at `sha`, once queued.
    async fn build_of(&self, owner: &str, name: &str, path: &str, sha: &str) -> Build {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(repository) = self.db.find_repository(owner, name).await.unwrap() {
                let recipes = self.db.list_recipes(repository.id).await.unwrap();
                if let Some(recipe) = recipes.iter().find(|r| r.path == path) {
                    let builds = Queue::new(self.db.clone())
                        .builds_of_recipe(recipe.id)
                        .await
                        .unwrap();
                    if let Some(build) = builds.into_iter().find(|b| b.commit_sha == sha) {
                        return build;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no build of {owner}/{name}:{path} at {sha} after 120 s:\n{}",
                self.hub.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until build `id` succeeded; a failure fails the test.
    async fn wait_succeeded(&self, id: i64) -> Build {
        let queue = Queue::new(self.db.clone());
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let build = queue.get(id).await.unwrap().unwrap();
            match build.status {
                BuildStatus::Succeeded => return build,
                BuildStatus::Failed | BuildStatus::Cancelled | BuildStatus::Superseded => panic!(
                    "build {id} {:?}: {:?}\n{}",
                    build.status,
                    build.error,
                    self.hub.log()
                ),
                _ => {}
            }
            assert!(
                Instant::now() < deadline,
                "build {id} not done after 600 s:\n{}",
                self.hub.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Signs in as whoever the stand-in signs in, through the header's link.
async fn sign_in(browser: &Client, world: &World) {
    browser.goto(&world.url("/")).await.unwrap();
    browser
        .find(Locator::LinkText("Sign in with GitHub"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // GitHub (the stand-in) sends the browser straight back, signed in.
    browser
        .wait()
        .for_element(Locator::Css("nav.account form button"))
        .await
        .unwrap();
}

/// Presses the enable button of `owner/name` on the connect page.
async fn enable(browser: &Client, world: &World, owner: &str, name: &str) {
    browser.goto(&world.url("/connect")).await.unwrap();
    browser
        .find(Locator::Css(&format!(
            "form[action='/connect/{owner}/{name}/enable'] button"
        )))
        .await
        .unwrap_or_else(|e| panic!("no enable button for {owner}/{name}: {e}"))
        .click()
        .await
        .unwrap();
    browser
        .wait()
        .for_element(Locator::Css(&format!(
            "form[action='/connect/{owner}/{name}/disable']"
        )))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn maintainer_and_researcher_in_a_browser() {
    let world = World::start().await;
    let reg = world.registry.clone();
    let installation = world.standin.create_installation("alice");
    let analysis = world
        .standin
        .create_repo("alice", "analysis", false, Some(installation));
    let secret = world
        .standin
        .create_repo("alice", "secret", true, Some(installation));
    analysis.git.write("README.md", "# analysis\n");
    analysis.git.commit("start");
    secret
        .git
        .write("Singularity", evil_recipe(&world.registry));
    secret.git.commit("an evil recipe");
    world.standin.sign_in_as("alice");

    let driver = ChromeDriver::start();
    let browser = driver.browser().await;

    // 1. Signed out: the catalog offers to sign in; signing in goes through
    //    GitHub and comes back signed in.
    browser.goto(&world.url("/")).await.unwrap();
    screenshot(&browser, "01-catalog-signed-out").await;
    sign_in(&browser, &world).await;
    assert!(
        body_text(&browser).await.contains("Signed in as alice"),
        "{}",
        browser.source().await.unwrap()
    );

    // 2. The connect page lists both repositories, disabled, with the
    //    install link; enabling them adds them to the hub.
    browser.goto(&world.url("/connect")).await.unwrap();
    let connect = body_text(&browser).await;
    assert!(connect.contains("alice/analysis"), "{connect}");
    assert!(connect.contains("alice/secret"), "{connect}");
    screenshot(&browser, "02-connect").await;
    enable(&browser, &world, "alice", "analysis").await;
    enable(&browser, &world, "alice", "secret").await;
    screenshot(&browser, "03-connect-enabled").await;
    // Enabling queued the secret repository's recipe at its branch head.
    let evil_build = world
        .build_of("alice", "secret", "Singularity", &secret.git.head())
        .await;

    // 3. A push adding a recipe builds it; its page, opened while it is
    //    queued or running, receives log lines without a reload.
    let sha = world
        .push(&analysis, &[("Singularity", slow_recipe(&reg))])
        .await;
    let build = world
        .build_of("alice", "analysis", "Singularity", &sha)
        .await;
    browser
        .goto(&world.url(&format!("/builds/{}", build.id)))
        .await
        .unwrap();
    let first_render = text_of(&browser, "#log").await;
    assert!(!first_render.contains("tick 9"), "{first_render}");
    // Gone after a reload: proves the lines came over the event stream.
    browser
        .execute("window.__same_page = true;", vec![])
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (log, same): (String, Value) = (
            text_of(&browser, "#log").await,
            browser
                .execute("return window.__same_page === true;", vec![])
                .await
                .unwrap(),
        );
        if log.contains("tick 9") {
            assert_eq!(same, Value::Bool(true), "the page reloaded to show the log");
            break;
        }
        assert_eq!(
            same,
            Value::Bool(true),
            "the page reloaded before the log grew:\n{log}"
        );
        assert!(
            Instant::now() < deadline,
            "no live log line after 300 s; log:\n{log}\n{}",
            world.hub.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    screenshot(&browser, "04-build-live-log").await;
    let built = world.wait_succeeded(build.id).await;
    // The page reloads itself once the build ended.
    let deadline = Instant::now() + Duration::from_secs(30);
    while text_of(&browser, "#status").await != "succeeded" {
        assert!(Instant::now() < deadline, "build page did not show success");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    screenshot(&browser, "05-build-succeeded").await;

    // 4. The container page lists the tag; its download button fetches a
    //    file with the image's digest (with the browser's session cookie).
    browser
        .goto(&world.url("/alice/analysis/analysis"))
        .await
        .unwrap();
    assert!(text_of(&browser, "table").await.contains("latest"));
    screenshot(&browser, "06-container").await;
    // On a phone's width the page still reads (no sideways page scroll).
    browser.set_window_size(390, 844).await.unwrap();
    let overflow = browser
        .execute(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
            vec![],
        )
        .await
        .unwrap();
    screenshot(&browser, "06b-container-phone").await;
    assert!(
        overflow.as_i64().is_some_and(|px| px <= 0),
        "the page scrolls sideways on a phone by {overflow}px"
    );
    browser.set_window_size(1280, 1000).await.unwrap();
    let href = browser
        .find(Locator::Css("#tag-latest a.button[download]"))
        .await
        .unwrap()
        .prop("href")
        .await
        .unwrap()
        .expect("the download button has an href");
    let session = browser.get_named_cookie("sifhub_session").await.unwrap();
    let bytes = reqwest::Client::new()
        .get(&href)
        .header("cookie", format!("sifhub_session={}", session.value()))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let digest = world
        .db
        .find_image(built.image_id.unwrap())
        .await
        .unwrap()
        .unwrap()
        .digest;
    assert_eq!(
        format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
        digest
    );

    // 5. The catalog search finds the collection.
    browser.goto(&world.url("/")).await.unwrap();
    let search = browser
        .find(Locator::Css("main input[type=search]"))
        .await
        .unwrap();
    search.send_keys("analys").await.unwrap();
    browser
        .find(Locator::Css("main form[role=search] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait()
        .for_element(Locator::Css("main a[href='/alice/analysis']"))
        .await
        .unwrap();
    screenshot(&browser, "07-catalog-search").await;

    // 6. The private collection's evil labels and help show as text to its
    //    owner, and no script ran.
    world.wait_succeeded(evil_build.id).await;
    browser
        .goto(&world.url("/alice/secret/secret"))
        .await
        .unwrap();
    let page = body_text(&browser).await;
    assert!(
        page.contains(PWNED),
        "labels and help show as text:\n{page}"
    );
    let pwned = browser
        .execute("return typeof window.__pwned;", vec![])
        .await
        .unwrap();
    assert_eq!(pwned, json!("undefined"), "a script in user data ran");
    screenshot(&browser, "08-private-inert").await;

    // 7. A form without the session's CSRF token is refused and changes
    //    nothing.
    let refused = reqwest::Client::new()
        .post(world.url("/alice/analysis/-/settings"))
        .header("cookie", format!("sifhub_session={}", session.value()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("csrf=not-the-token&private=on")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let analysis_row = world
        .db
        .find_repository("alice", "analysis")
        .await
        .unwrap()
        .unwrap();
    assert!(!analysis_row.private, "a refused form changed the settings");

    // 8. The owner makes alice/analysis private with the settings form.
    browser.goto(&world.url("/alice/analysis")).await.unwrap();
    browser
        .find(Locator::Css("input[name=private]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    screenshot(&browser, "09-owner-settings").await;
    browser
        .find(Locator::Css("form.settings button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait()
        .for_element(Locator::Css("h1 .muted"))
        .await
        .unwrap();
    assert!(text_of(&browser, "h1").await.contains("(private)"));

    // 9. Signed out, both private collections are the 404 page, and the
    //    catalog lists neither.
    browser
        .find(Locator::Css("nav.account form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait()
        .for_element(Locator::LinkText("Sign in with GitHub"))
        .await
        .unwrap();
    for path in ["/alice/secret", "/alice/secret/secret", "/alice/analysis"] {
        browser.goto(&world.url(path)).await.unwrap();
        let title = text_of(&browser, "h1").await;
        assert_eq!(title, "404 · Not found", "{path} signed out");
    }
    screenshot(&browser, "10-private-signed-out").await;
    browser.goto(&world.url("/")).await.unwrap();
    let catalog = text_of(&browser, "main").await;
    assert!(!catalog.contains("alice/secret"), "{catalog}");
    assert!(!catalog.contains("alice/analysis"), "{catalog}");

    browser.close().await.unwrap();
}
