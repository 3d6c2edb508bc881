//! The catalog page through the hub's real router, database and storage,
//! on SQLite and PostgreSQL: search by owner, repository, container, tag
//! and label text; each sort; pages with counts; rows with the latest tag,
//! size, build time and status; the download counter (counted once a
//! `GET` reaches the image's end, not for `HEAD`, 304, a range from the
//! middle or an abandoned body) and `last_updated` moving with a tag.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use bytes::Bytes;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use sifhub::config::Config;
use sifhub::db::{NewImage, NewRepository, RepositorySettings, Timestamp};
use sifhub::queue::{NewBuild, Trigger};
use sifhub::serve::{router, AppState};
use sifhub::storage::StorageKey;
use sifhub_tests::postgres::both_backends;
use tower::ServiceExt as _;

const DAY: Duration = Duration::from_secs(86_400);
const LEASE: Duration = Duration::from_secs(600);
/// Image bytes: 2 KiB.
const IMAGE_SIZE: usize = 2048;

struct Hub {
    state: AppState,
    _data_dir: tempfile::TempDir,
}

impl Hub {
    async fn new(url: &str) -> Hub {
        let data_dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: data_dir.path().to_owned(),
            database_url: Some(url.to_owned()),
            ..Config::default()
        };
        Hub {
            state: AppState::open(&config).await.unwrap(),
            _data_dir: data_dir,
        }
    }

    async fn request(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut request = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        router(self.state.clone())
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    /// The catalog page at `path`, read whole.
    async fn page(&self, path: &str) -> String {
        let response = self.request(Method::GET, path, &[]).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
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

    /// Stores `IMAGE_SIZE` bytes made from `seed`; returns the image to record.
    async fn stored_image(
        &self,
        repository_id: i64,
        seed: u8,
        labels: serde_json::Value,
    ) -> NewImage {
        let bytes = vec![seed; IMAGE_SIZE];
        let hex = hex::encode(Sha256::digest(&bytes));
        self.state
            .storage
            .put_bytes(&StorageKey::image(&hex).unwrap(), Bytes::from(bytes))
            .await
            .unwrap();
        NewImage {
            digest: format!("sha256:{hex}"),
            size: IMAGE_SIZE as u64,
            sif_metadata: json!({ "labels": labels }),
            repository_id: Some(repository_id),
            ..NewImage::default()
        }
    }

    /// Tags `container:tag` at `at` with a new image; returns its digest.
    async fn tag_image(
        &self,
        repository_id: i64,
        container: &str,
        tag: &str,
        seed: u8,
        labels: serde_json::Value,
        at: Timestamp,
    ) -> String {
        let db = &self.state.db;
        let image = self.stored_image(repository_id, seed, labels).await;
        let image = db.insert_image(&image, at).await.unwrap().image;
        let container = db
            .upsert_container(repository_id, container, at)
            .await
            .unwrap();
        let change = db.set_tag(container.id, tag, image.id, at).await.unwrap();
        assert!(change.moved);
        image.digest
    }

    /// Queues a build of `container:tag` and hands it to a worker.
    async fn running_build(
        &self,
        repository_id: i64,
        container: &str,
        tag: &str,
    ) -> (sifhub::queue::Lease, i64) {
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
        let queue = &self.state.queue;
        queue
            .enqueue(&NewBuild {
                recipe_id: recipe.id,
                commit_sha: "1234567890abcdef1234567890abcdef12345678".to_owned(),
                branch: "main".to_owned(),
                trigger: Trigger::Push,
                max_attempts: 3,
            })
            .await
            .unwrap();
        let claimed = queue.claim("catalog-test", LEASE).await.unwrap().unwrap();
        (claimed.lease, recipe.container_id)
    }

    /// The download count the catalog shows for `owner/name`.
    async fn downloads(&self, full_name: &str) -> String {
        let page = self.page("/?sort=downloads").await;
        let row = row(&page, full_name);
        let last_cell = row.rfind("<td>").unwrap();
        row[last_cell + 4..row.rfind("</td>").unwrap()].to_owned()
    }

    /// Waits until the catalog shows `expected` downloads for each collection.
    async fn wait_for_downloads(&self, expected: &[(&str, &str)]) {
        for _ in 0..100 {
            let mut all = true;
            for (full_name, count) in expected {
                all &= self.downloads(full_name).await == *count;
            }
            if all {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for (full_name, count) in expected {
            assert_eq!(self.downloads(full_name).await, *count, "{full_name}");
        }
    }
}

type Response = axum::http::Response<Body>;

/// The table row of `owner/name` in a catalog page.
fn row<'a>(page: &'a str, full_name: &str) -> &'a str {
    let start = page
        .find(&format!("<tr><td><a href=\"/{full_name}\">"))
        .unwrap_or_else(|| panic!("no row for {full_name}:\n{page}"));
    let end = start + page[start..].find("</tr>").unwrap();
    &page[start..end]
}

/// The collections a catalog page lists, in order.
fn listed(page: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = page;
    while let Some(at) = rest.find("<tr><td><a href=\"/") {
        rest = &rest[at + "<tr><td><a href=\"/".len()..];
        names.push(rest[..rest.find('"').unwrap()].to_owned());
    }
    names
}

#[tokio::test]
async fn catalog_searches_sorts_pages_and_counts() {
    for database in both_backends("web_catalog") {
        eprintln!("--- on {database:?}");
        let hub = Hub::new(&database.url).await;
        let day_ago = Timestamp::now().minus(DAY);

        // Alpha/one: an image tagged a day ago, labelled, never built here.
        let alpha = hub.repository("Alpha", "one", false).await;
        let alpha_digest = hub
            .tag_image(
                alpha,
                "tools",
                "v1",
                1,
                json!({ "org.label-schema.author": "Ada Lovelace" }),
                day_ago,
            )
            .await;
        // beta/two: an image its build published just now.
        let beta = hub.repository("beta", "two", false).await;
        let (lease, container_id) = hub.running_build(beta, "analysis", "2.0").await;
        let image = hub
            .stored_image(
                beta,
                2,
                json!({ "description": "Genome pipeline", "release": 3 }),
            )
            .await;
        hub.state
            .queue
            .publish(&lease, &image, container_id, "2.0", None)
            .await
            .unwrap();
        // gamma/three: a failed build, no image.
        let gamma = hub.repository("gamma", "three", false).await;
        let (lease, _) = hub.running_build(gamma, "broken", "latest").await;
        hub.state
            .queue
            .fail(&lease, "recipe failed", None)
            .await
            .unwrap();
        // A private collection matching the same searches.
        let secret = hub.repository("corp", "secret", true).await;
        hub.tag_image(
            secret,
            "tools",
            "v1",
            3,
            json!({ "description": "Genome secrets" }),
            Timestamp::now(),
        )
        .await;

        // Rows: latest tag (linking its container), size, build time
        // (relative, exact on hover), status badge, downloads.
        let home = hub.page("/").await;
        assert_eq!(listed(&home), ["Alpha/one", "beta/two", "gamma/three"]);
        assert!(home.contains("1–3 of 3 collections"), "{home}");
        let alpha_row = row(&home, "Alpha/one");
        assert!(
            alpha_row.contains("<a href=\"/Alpha/one/tools\">tools:v1</a>"),
            "{alpha_row}"
        );
        assert!(alpha_row.contains("<td>2.0 KiB</td>"), "{alpha_row}");
        assert!(alpha_row.contains(">1 day ago</time>"), "{alpha_row}");
        let exact = chrono::DateTime::from_timestamp_millis(day_ago.unix_millis()).unwrap();
        assert!(
            alpha_row.contains(&format!(
                "<time datetime=\"{}\" title=\"{}\">",
                exact.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                exact.format("%Y-%m-%d %H:%M UTC")
            )),
            "{alpha_row}"
        );
        assert!(alpha_row.contains("no builds"), "{alpha_row}");
        let beta_row = row(&home, "beta/two");
        assert!(beta_row.contains(">analysis:2.0</a>"), "{beta_row}");
        assert!(beta_row.contains(">just now</time>"), "{beta_row}");
        assert!(
            beta_row.contains("<span class=\"status status-succeeded\">succeeded</span>"),
            "{beta_row}"
        );
        let gamma_row = row(&home, "gamma/three");
        assert!(gamma_row.contains("no images yet"), "{gamma_row}");
        assert!(gamma_row.contains("status-failed"), "{gamma_row}");

        // Search: owner, repository, container, tag, label key and value,
        // without case; never the private collection; counted.
        for (search, expected) in [
            ("ALPHA", "Alpha/one"),
            ("two", "beta/two"),
            ("tools", "Alpha/one"),
            // Two characters: below SQLite's trigram index, a scan.
            ("V1", "Alpha/one"),
            ("analysis", "beta/two"),
            ("2.0", "beta/two"),
            ("lovelace", "Alpha/one"),
            ("label-schema.author", "Alpha/one"),
            ("genome PIPELINE", "beta/two"),
            ("release=3", "beta/two"),
            ("genome", "beta/two"),
            ("gamma/three", "gamma/three"),
        ] {
            let found = hub.page(&format!("/?q={}", search.replace(' ', "+"))).await;
            assert_eq!(listed(&found), [expected], "{search}:\n{found}");
            assert!(found.contains("1–1 of 1 collection<"), "{search}:\n{found}");
        }
        let nothing = hub.page("/?q=secrets").await;
        assert!(listed(&nothing).is_empty(), "{nothing}");
        assert!(nothing.contains("No collection matches"), "{nothing}");

        // Sorted by recent builds: newest tag first, no images last.
        let updated = hub.page("/?sort=updated").await;
        assert_eq!(listed(&updated), ["beta/two", "Alpha/one", "gamma/three"]);
        // `last_updated` moves with a tag: Alpha's tag moves after beta's.
        let later = Timestamp::now().plus(Duration::from_secs(5));
        hub.tag_image(alpha, "tools", "v1", 4, json!({}), later)
            .await;
        let updated = hub.page("/?sort=updated").await;
        assert_eq!(listed(&updated), ["Alpha/one", "beta/two", "gamma/three"]);
        // Its search text follows the tag: the old image's labels are gone.
        assert!(listed(&hub.page("/?q=lovelace").await).is_empty());
        let moved = chrono::DateTime::from_timestamp_millis(later.unix_millis()).unwrap();
        assert!(
            row(&updated, "Alpha/one").contains(&format!(
                "datetime=\"{}\"",
                moved.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )),
            "{updated}"
        );

        // Downloads: only a GET that reaches the image's end counts.
        // Alpha's first image, no longer tagged, is still there by digest.
        let alpha_hex = alpha_digest.strip_prefix("sha256:").unwrap();
        let by_tag = "/download/beta/two/analysis:2.0";
        let by_digest = format!("/download/sha256/{alpha_hex}");
        let etag = format!("\"sha256:{alpha_hex}\"");
        for (method, path, headers, status) in [
            (Method::HEAD, by_tag, vec![], StatusCode::OK),
            (
                Method::GET,
                by_tag,
                vec![("range", "bytes=0-99")],
                StatusCode::PARTIAL_CONTENT,
            ),
            (
                Method::GET,
                by_digest.as_str(),
                vec![("if-none-match", etag.as_str())],
                StatusCode::NOT_MODIFIED,
            ),
        ] {
            let response = hub.request(method, path, &headers).await;
            assert_eq!(response.status(), status, "{path} {headers:?}");
            axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
        }
        // A body nobody reads to the end: the client went away.
        let abandoned = hub.request(Method::GET, by_tag, &[]).await;
        assert_eq!(abandoned.status(), StatusCode::OK);
        drop(abandoned);
        // Counted: two whole downloads of beta's, one of Alpha's by
        // digest, and the rest of a resumed one.
        for (path, headers) in [
            (by_tag, vec![]),
            (by_tag, vec![]),
            (by_digest.as_str(), vec![]),
            (by_tag, vec![("range", "bytes=100-")]),
        ] {
            let response = hub.request(Method::GET, path, &headers).await;
            assert!(response.status().is_success(), "{path}");
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            assert!(!body.is_empty());
        }
        hub.wait_for_downloads(&[("beta/two", "3"), ("Alpha/one", "1"), ("gamma/three", "0")])
            .await;
        // Nothing more arrives late.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(hub.downloads("beta/two").await, "3");
        assert_eq!(hub.downloads("Alpha/one").await, "1");
        let by_downloads = hub.page("/?sort=downloads").await;
        assert_eq!(
            listed(&by_downloads),
            ["beta/two", "Alpha/one", "gamma/three"]
        );

        // Pages of 20 with counts, in every order; page links keep the
        // search and the sort.
        for n in 0..45 {
            hub.repository("bulk", &format!("r-{n:02}"), false).await;
        }
        let first = hub.page("/").await;
        assert!(first.contains("1–20 of 48 collections"), "{first}");
        assert_eq!(listed(&first)[..2], ["Alpha/one", "beta/two"]);
        assert!(first.contains("href=\"/?page=2\" rel=\"next\""), "{first}");
        let last = hub.page("/?page=3").await;
        assert!(last.contains("41–48 of 48 collections"), "{last}");
        assert_eq!(listed(&last).len(), 8);
        assert_eq!(listed(&last).last().unwrap(), "gamma/three");
        assert!(!last.contains("rel=\"next\""), "{last}");
        assert!(last.contains("href=\"/?page=2\" rel=\"prev\""), "{last}");
        let beyond = hub.page("/?page=9").await;
        assert!(listed(&beyond).is_empty(), "{beyond}");
        let mut seen = Vec::new();
        for page in 1..=3 {
            let by_update = hub.page(&format!("/?sort=updated&page={page}")).await;
            seen.extend(listed(&by_update));
        }
        assert_eq!(seen.len(), 48);
        assert_eq!(seen[..2], ["Alpha/one", "beta/two"]);
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 48, "no collection twice across pages");
        let bulk = hub.page("/?q=bulk&sort=downloads&page=2").await;
        assert!(bulk.contains("21–40 of 45 collections"), "{bulk}");
        assert!(
            bulk.contains("href=\"/?q=bulk&#38;sort=downloads&#38;page=3\" rel=\"next\""),
            "{bulk}"
        );
    }
}
