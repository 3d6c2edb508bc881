//! Atom feeds and build badges through the hub's real router, database and
//! storage, on SQLite and PostgreSQL: the feeds parse with Python's
//! `feedparser` (a reader nobody here wrote) and list each image a tag got,
//! newest first; the badge parses as SVG and changes colour with the
//! container's latest build; names with `<` and `&` stay well-formed;
//! private and unknown collections answer 404.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};
use sifhub::config::Config;
use sifhub::db::{NewImage, NewRepository, RepositorySettings, Timestamp};
use sifhub::queue::{Lease, NewBuild, Trigger};
use sifhub::serve::{router, AppState};
use sifhub_tests::postgres::both_backends;
use tower::ServiceExt as _;

const PUBLIC_URL: &str = "http://hub.example:8080";
const LEASE: Duration = Duration::from_secs(600);
const EVIL_TAG: &str = "v<1&2>\"";

/// Reads a feed (`feed`) or an SVG (`svg`) from stdin and prints what it
/// found as JSON: feedparser's entries, or the SVG root and its fills.
const READER: &str = r#"
import json, sys
data = sys.stdin.buffer.read()
if sys.argv[1] == "feed":
    import feedparser
    feed = feedparser.parse(data)
    print(json.dumps({
        "bozo": bool(feed.bozo),
        "bozo_exception": str(feed.get("bozo_exception", "")),
        "version": feed.version,
        "title": feed.feed.get("title"),
        "entries": [{
            "id": e.id,
            "title": e.title,
            "updated": e.updated,
            "summary": e.summary,
            "links": [l.href for l in e.links],
        } for e in feed.entries],
    }))
else:
    import xml.etree.ElementTree as ET
    root = ET.fromstring(data)
    ns = "{http://www.w3.org/2000/svg}"
    print(json.dumps({
        "root": root.tag,
        "fills": [r.get("fill") for r in root.iter(ns + "rect")],
        "texts": [t.text for t in root.iter(ns + "text")],
        "title": root.find(ns + "title").text,
    }))
"#;

/// The test venv's python, which has `feedparser`.
fn python() -> PathBuf {
    let home = std::env::var_os("HOME").expect("HOME is set");
    let python = PathBuf::from(home).join(".cache/sifhub/tools/py/bin/python");
    let usable = Command::new(&python)
        .args(["-c", "import feedparser"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        usable,
        "{} with feedparser is missing: run scripts/install-deps.sh test \
         (Debian package python3-venv, then `pip install feedparser` in that venv)",
        python.display()
    );
    python
}

/// What [`READER`] makes of `body` in `mode`.
fn read(mode: &str, body: &str) -> Value {
    let mut child = Command::new(python())
        .args(["-c", READER, mode])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{mode} reader failed: {}\n{body}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

struct Hub {
    state: AppState,
    _data_dir: tempfile::TempDir,
}

struct Fetched {
    status: StatusCode,
    content_type: Option<String>,
    cache_control: Option<String>,
    body: String,
}

impl Hub {
    async fn new(url: &str) -> Hub {
        let data_dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: data_dir.path().to_owned(),
            database_url: Some(url.to_owned()),
            public_url: Some(PUBLIC_URL.to_owned()),
            ..Config::default()
        };
        Hub {
            state: AppState::open(&config).await.unwrap(),
            _data_dir: data_dir,
        }
    }

    async fn get(&self, path: &str) -> Fetched {
        let response = router(self.state.clone())
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let (content_type, cache_control) = (header("content-type"), header("cache-control"));
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        Fetched {
            status,
            content_type,
            cache_control,
            body: String::from_utf8(bytes.to_vec()).unwrap(),
        }
    }

    /// The feed at `path`, parsed by feedparser, after checking it is a
    /// well-formed Atom 1.0 feed.
    async fn feed(&self, path: &str) -> Value {
        let fetched = self.get(path).await;
        assert_eq!(fetched.status, StatusCode::OK, "{path}: {}", fetched.body);
        assert_eq!(
            fetched.content_type.as_deref(),
            Some("application/atom+xml"),
            "{path}"
        );
        let feed = read("feed", &fetched.body);
        assert_eq!(feed["bozo"], false, "{path}: {feed}\n{}", fetched.body);
        assert_eq!(feed["version"], "atom10", "{path}: {feed}");
        feed
    }

    /// The badge at `path`, parsed as SVG.
    async fn badge(&self, path: &str) -> Value {
        let fetched = self.get(path).await;
        assert_eq!(fetched.status, StatusCode::OK, "{path}: {}", fetched.body);
        assert_eq!(fetched.content_type.as_deref(), Some("image/svg+xml"));
        assert_eq!(fetched.cache_control.as_deref(), Some("no-cache"));
        let svg = read("svg", &fetched.body);
        assert_eq!(svg["root"], "{http://www.w3.org/2000/svg}svg", "{svg}");
        svg
    }

    /// The badge's message and its colour.
    async fn badge_state(&self, path: &str) -> (String, String) {
        let svg = self.badge(path).await;
        (
            svg["texts"][1].as_str().unwrap().to_owned(),
            svg["fills"][1].as_str().unwrap().to_owned(),
        )
    }

    async fn repository(&self, owner: &str, name: &str, private: bool) -> i64 {
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
        self.state
            .db
            .insert_repository(&new, Timestamp::now())
            .await
            .unwrap()
            .id
    }

    /// An image tagged `container:tag` at `millis`; returns its digest.
    async fn tag_image(
        &self,
        repository_id: i64,
        container: &str,
        tag: &str,
        seed: u8,
        millis: i64,
    ) -> String {
        let db = &self.state.db;
        let now = Timestamp::from_unix_millis(millis);
        let digest = format!("sha256:{}", hex::encode([seed; 32]));
        let image = NewImage {
            digest: digest.clone(),
            size: 1024,
            sif_metadata: json!({}),
            repository_id: Some(repository_id),
            commit_sha: Some(format!("{seed:02x}").repeat(20)),
            recipe_path: Some(format!("{container}/Singularity")),
            ..NewImage::default()
        };
        let image = db.insert_image(&image, now).await.unwrap().image;
        let container = db
            .upsert_container(repository_id, container, now)
            .await
            .unwrap();
        db.set_tag(container.id, tag, image.id, now).await.unwrap();
        digest
    }

    /// Queues a build of the recipe making `container:tag`.
    async fn queue_build(&self, repository_id: i64, container: &str, tag: &str) -> i64 {
        let recipe = self
            .state
            .db
            .upsert_recipe(
                repository_id,
                &format!("{container}/Singularity"),
                container,
                tag,
                Timestamp::now(),
            )
            .await
            .unwrap();
        self.state
            .queue
            .enqueue(&NewBuild {
                recipe_id: recipe.id,
                commit_sha: "1234567890abcdef1234567890abcdef12345678".to_owned(),
                branch: "main".to_owned(),
                trigger: Trigger::Push,
                max_attempts: 1,
            })
            .await
            .unwrap()
            .build
            .id
    }

    async fn claim(&self, build_id: i64) -> Lease {
        let claimed = self
            .state
            .queue
            .claim("feed-test", LEASE)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(claimed.build.id, build_id);
        claimed.lease
    }
}

fn entry_ids(feed: &Value) -> Vec<String> {
    feed["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn feeds_list_new_images_and_badges_follow_builds() {
    python();
    for database in both_backends("web_feeds") {
        eprintln!("--- on {database:?}");
        let hub = Hub::new(&database.url).await;
        let lolcow = hub.repository("Sylabs", "lolcow", false).await;
        let base = 1_800_000_000_000;

        // One image: both feeds list it, with links and summary.
        let first = hub.tag_image(lolcow, "lolcow", "latest", 0xab, base).await;
        let other = hub
            .tag_image(lolcow, "tools", "v1", 0xcd, base + 1000)
            .await;
        let feed = hub.feed("/Sylabs/lolcow/lolcow/feed.atom").await;
        assert_eq!(feed["title"], "Sylabs/lolcow/lolcow", "{feed}");
        let entries = feed["entries"].as_array().unwrap();
        assert_eq!(entries.len(), 1, "{feed}");
        let entry = &entries[0];
        assert!(entry["id"].as_str().unwrap().contains(&first), "{entry}");
        assert_eq!(entry["title"], "lolcow:latest → sha256:abababababab…");
        assert_eq!(entry["updated"], "2027-01-15T08:00:00Z", "{entry}");
        let summary = entry["summary"].as_str().unwrap();
        assert!(summary.contains(&"ab".repeat(20)), "{summary}");
        assert!(summary.contains("lolcow/Singularity"), "{summary}");
        let links = entry["links"].to_string();
        assert!(
            links.contains("http://hub.example:8080/Sylabs/lolcow/lolcow#tag-latest"),
            "{links}"
        );
        assert!(
            links.contains(&format!(
                "http://hub.example:8080/download/sha256/{}",
                "ab".repeat(32)
            )),
            "{links}"
        );
        let collection = hub.feed("/sylabs/LOLCOW/feed.atom").await;
        let ids = entry_ids(&collection);
        assert_eq!(ids.len(), 2, "{collection}");
        assert!(
            ids[0].contains(&other) && ids[1].contains(&first),
            "{ids:?}"
        );

        // The tag moves: the new image comes first, the old one stays, and
        // entry ids are stable across renders.
        let second = hub
            .tag_image(lolcow, "lolcow", "latest", 0xef, base + 2000)
            .await;
        let moved = hub.feed("/Sylabs/lolcow/lolcow/feed.atom").await;
        let ids = entry_ids(&moved);
        assert_eq!(ids.len(), 2, "{moved}");
        assert!(ids[0].contains(&second), "{ids:?}");
        assert_eq!(ids[1], entry["id"].as_str().unwrap());
        let ids = entry_ids(&hub.feed("/Sylabs/lolcow/feed.atom").await);
        assert!(ids[0].contains(&second), "{ids:?}");
        assert_eq!(ids.len(), 3, "{ids:?}");

        // Names with markup stay well-formed and read back as written.
        let evil = hub
            .tag_image(lolcow, "lolcow", EVIL_TAG, 0x11, base + 3000)
            .await;
        let feed = hub.feed("/Sylabs/lolcow/lolcow/feed.atom").await;
        let newest = &feed["entries"][0];
        assert_eq!(
            newest["title"],
            format!("lolcow:{EVIL_TAG} → sha256:111111111111…"),
            "{feed}"
        );
        assert!(newest["id"].as_str().unwrap().contains(&evil));

        // Pages point at the feeds and the badge.
        let page = hub.get("/Sylabs/lolcow/lolcow").await.body;
        assert!(
            page.contains(
                "<link rel=\"alternate\" type=\"application/atom+xml\" \
                 title=\"New images of Sylabs/lolcow/lolcow\" href=\"/Sylabs/lolcow/lolcow/feed.atom\">"
            ),
            "{page}"
        );
        assert!(
            page.contains(
                "[![build status](http://hub.example:8080/Sylabs/lolcow/lolcow/badge.svg)]\
                 (http://hub.example:8080/Sylabs/lolcow/lolcow)"
            ),
            "{page}"
        );
        let page = hub.get("/Sylabs/lolcow").await.body;
        assert!(
            page.contains("type=\"application/atom+xml\"")
                && page.contains("href=\"/Sylabs/lolcow/feed.atom\""),
            "{page}"
        );

        // The badge follows the latest build: none, queued, building,
        // passing, then failing; per tag too.
        let badge = "/Sylabs/lolcow/lolcow/badge.svg";
        let tagged = "/Sylabs/lolcow/lolcow/badge.svg?tag=latest";
        assert_eq!(
            hub.badge_state(badge).await,
            ("unknown".to_owned(), "#d3d3d3".to_owned())
        );
        let build = hub.queue_build(lolcow, "lolcow", "latest").await;
        assert_eq!(
            hub.badge_state(badge).await,
            ("queued".to_owned(), "#9f9f9f".to_owned())
        );
        let lease = hub.claim(build).await;
        assert_eq!(
            hub.badge_state(tagged).await,
            ("building".to_owned(), "#007ec6".to_owned())
        );
        hub.state.queue.complete(&lease, None, None).await.unwrap();
        assert_eq!(
            hub.badge_state(badge).await,
            ("passing".to_owned(), "#4c1".to_owned())
        );
        let build = hub.queue_build(lolcow, "lolcow", "latest").await;
        let lease = hub.claim(build).await;
        hub.state
            .queue
            .fail(&lease, "recipe failed", None)
            .await
            .unwrap();
        assert_eq!(
            hub.badge_state(tagged).await,
            ("failing".to_owned(), "#e05d44".to_owned())
        );
        // Another tag has no build; markup in the asked tag stays escaped.
        let svg = hub
            .badge("/Sylabs/lolcow/lolcow/badge.svg?tag=%3Cb%3E%26")
            .await;
        assert_eq!(svg["texts"][1], "unknown", "{svg}");
        assert_eq!(svg["title"], "lolcow:<b>& build: unknown", "{svg}");

        // Private and unknown: 404 for feeds and badges alike.
        let secret = hub.repository("corp", "hidden", true).await;
        hub.tag_image(secret, "hidden", "latest", 0x22, base).await;
        for path in [
            "/corp/hidden/feed.atom",
            "/corp/hidden/hidden/feed.atom",
            "/corp/hidden/hidden/badge.svg",
            "/nobody/nothing/feed.atom",
            "/Sylabs/lolcow/missing/feed.atom",
            "/Sylabs/lolcow/missing/badge.svg",
        ] {
            let fetched = hub.get(path).await;
            assert_eq!(fetched.status, StatusCode::NOT_FOUND, "{path}");
            assert!(!fetched.body.contains("corp"), "{path}: {}", fetched.body);
        }
    }
}
