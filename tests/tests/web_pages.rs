//! The web pages through the hub's real router, database and storage, on
//! SQLite and PostgreSQL: catalog (search, sort, pages), collection,
//! container (tags, digests, pull commands, download links, labels, help,
//! runscript), build pages with live and stored logs, private collections
//! answering 404 everywhere, user text escaped, and every page parsing as
//! HTML5 without errors.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use bytes::Bytes;
use html5ever::tendril::TendrilSink as _;
use serde_json::json;
use sifhub::config::Config;
use sifhub::db::{NewImage, NewRepository, RepositorySettings, Timestamp};
use sifhub::queue::{NewBuild, Trigger};
use sifhub::serve::{router, AppState};
use sifhub::storage::StorageKey;
use sifhub_tests::postgres::both_backends;
use tower::ServiceExt as _;

const PUBLIC_URL: &str = "http://hub.example:8080";
const LEASE: Duration = Duration::from_secs(600);
const EVIL: &str = "<script>alert(1)</script> \"quoted\"";

/// The parse errors an HTML5 parser reports for `html`.
fn html_errors(html: &str) -> Vec<String> {
    let opts = html5ever::ParseOpts {
        tree_builder: html5ever::tree_builder::TreeBuilderOpts {
            exact_errors: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let dom = html5ever::parse_document(markup5ever_rcdom::RcDom::default(), opts)
        .from_utf8()
        .read_from(&mut html.as_bytes())
        .unwrap();
    let errors = dom.errors.borrow().iter().map(|e| e.to_string()).collect();
    errors
}

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
            public_url: Some(PUBLIC_URL.to_owned()),
            ..Config::default()
        };
        Hub {
            state: AppState::open(&config).await.unwrap(),
            _data_dir: data_dir,
        }
    }

    /// GETs `path`: status and body, after checking the body is valid HTML.
    async fn get(&self, path: &str) -> (StatusCode, String) {
        let response = router(self.state.clone())
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = String::from_utf8(bytes.to_vec()).unwrap();
        assert_eq!(
            content_type.as_deref(),
            Some("text/html; charset=utf-8"),
            "{path}"
        );
        let errors = html_errors(&body);
        assert!(errors.is_empty(), "{path}: HTML errors {errors:?}\n{body}");
        (status, body)
    }

    async fn page(&self, path: &str) -> String {
        let (status, body) = self.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}\n{body}");
        body
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

    /// An image tagged `container:tag` in the repository; returns its digest.
    async fn tag_image(
        &self,
        repository_id: i64,
        container: &str,
        tag: &str,
        seed: u8,
        sif_metadata: serde_json::Value,
    ) -> String {
        let db = &self.state.db;
        let now = Timestamp::now();
        let digest = format!("sha256:{}", hex::encode([seed; 32]));
        let image = NewImage {
            digest: digest.clone(),
            size: 3 * 1024 * 1024,
            sif_metadata,
            repository_id: Some(repository_id),
            commit_sha: Some("c0ffee".repeat(6) + "abcd"),
            recipe_path: Some("Singularity".to_owned()),
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

    /// Queues a build of `path` and hands it to a worker; returns its id
    /// and lease.
    async fn running_build(
        &self,
        repository_id: i64,
        path: &str,
        container: &str,
        tag: &str,
    ) -> sifhub::queue::Lease {
        let recipe = self
            .state
            .db
            .upsert_recipe(repository_id, path, container, tag, Timestamp::now())
            .await
            .unwrap();
        let queue = &self.state.queue;
        let enqueued = queue
            .enqueue(&NewBuild {
                recipe_id: recipe.id,
                commit_sha: "1234567890abcdef1234567890abcdef12345678".to_owned(),
                branch: "main".to_owned(),
                trigger: Trigger::Push,
                max_attempts: 3,
            })
            .await
            .unwrap();
        let claimed = queue.claim("web-test", LEASE).await.unwrap().unwrap();
        assert_eq!(claimed.build.id, enqueued.build.id);
        claimed.lease
    }
}

#[test]
fn the_checker_finds_html_errors() {
    assert!(html_errors(
        "<!DOCTYPE html><html><head><title>t</title></head><body><p>ok</p></body></html>"
    )
    .is_empty());
    assert!(!html_errors("<html><body><p>no doctype</p></body></html>").is_empty());
    assert!(!html_errors("<!DOCTYPE html><title>t</title><b><i>misnested</b></i>").is_empty());
}

#[tokio::test]
async fn pages_show_the_catalog_and_hide_private_collections() {
    for database in both_backends("web_pages") {
        eprintln!("--- on {database:?}");
        let hub = Hub::new(&database.url).await;
        let db = &hub.state.db;

        // A public collection: a root container with labels, help and a
        // runscript full of markup, and a second container.
        let lolcow = hub.repository("Sylabs", "lolcow", false).await;
        let metadata = json!({
            "labels": { "maintainer": EVIL, "version": 2 },
            "help": format!("Usage: {EVIL}"),
            "runscript": "#!/bin/sh\necho \"moo\" </dev/null",
        });
        let latest = hub
            .tag_image(lolcow, "lolcow", "latest", 0xab, metadata)
            .await;
        let tools = hub.tag_image(lolcow, "tools", "v1", 0xcd, json!({})).await;

        // A running build with live log chunks, and a failed one whose log
        // is in storage.
        let running = hub
            .running_build(lolcow, "Singularity", "lolcow", "latest")
            .await;
        db.append_log_chunk(
            running.build_id,
            running.attempt,
            0,
            "step 1 <ok>\n",
            Timestamp::now(),
        )
        .await
        .unwrap();
        db.append_log_chunk(
            running.build_id,
            running.attempt,
            1,
            "step 2\n",
            Timestamp::now(),
        )
        .await
        .unwrap();
        let failed = hub
            .running_build(lolcow, "tools/Singularity.v1", "tools", "v1")
            .await;
        let log_key = StorageKey::build_log(failed.build_id);
        hub.state
            .storage
            .put_bytes(
                &log_key,
                Bytes::from_static(b"stored log: exit 1 & \"done\"\n"),
            )
            .await
            .unwrap();
        hub.state
            .queue
            .fail(&failed, "recipe failed", Some(&log_key.path()))
            .await
            .unwrap();

        // A private collection with an image and a build.
        let secret = hub.repository("corp", "hidden", true).await;
        hub.tag_image(secret, "hidden", "latest", 0xef, json!({}))
            .await;
        let private_build = hub
            .running_build(secret, "Singularity", "hidden", "latest")
            .await;

        // Enough collections for a second catalog page.
        for n in 0..52 {
            hub.repository("bulk", &format!("repo-{n:02}"), false).await;
        }

        // Catalog by name, 20 a page: `bulk/…` first, then `Sylabs/lolcow`
        // on the third; never the private collection.
        let home = hub.page("/").await;
        assert!(home.contains("href=\"/bulk/repo-00\""), "{home}");
        assert!(!home.contains("Sylabs/lolcow"), "{home}");
        assert!(!home.contains("corp/hidden"), "{home}");
        assert!(home.contains("href=\"/?page=2\""), "{home}");
        let second = hub.page("/?page=3").await;
        assert!(second.contains("bulk/repo-51"), "{second}");
        assert!(second.contains("href=\"/Sylabs/lolcow\""), "{second}");
        assert!(!second.contains("corp/hidden"), "{second}");
        assert!(!second.contains("rel=\"next\""), "{second}");

        // Search by owner, repository and container name, without case.
        let found = hub.page("/?q=LOLCOW").await;
        assert!(found.contains("Sylabs/lolcow"), "{found}");
        assert!(!found.contains("bulk/"), "{found}");
        let by_container = hub.page("/?q=tools").await;
        assert!(by_container.contains("Sylabs/lolcow"), "{by_container}");
        let nothing = hub.page("/?q=hidden").await;
        assert!(!nothing.contains("corp/hidden"), "{nothing}");
        assert!(nothing.contains("No collection matches"), "{nothing}");
        let wildcard = hub.page("/?q=%25").await;
        assert!(wildcard.contains("No collection matches"), "{wildcard}");

        // Sorted by update: the collection with images comes first.
        let updated = hub.page("/?sort=updated").await;
        let first_row = updated.find("<tbody>").unwrap();
        assert!(
            updated[first_row..].find("Sylabs/lolcow").unwrap()
                < updated[first_row..].find("bulk/").unwrap(),
            "{updated}"
        );

        // Collection page: containers and builds (owner without case).
        let collection = hub.page("/sylabs/LOLCOW").await;
        assert!(
            collection.contains("href=\"/Sylabs/lolcow/lolcow\""),
            "{collection}"
        );
        assert!(
            collection.contains("href=\"/Sylabs/lolcow/tools\""),
            "{collection}"
        );
        assert!(collection.contains(&format!("href=\"/builds/{}\"", running.build_id)));
        assert!(collection.contains("status-failed"), "{collection}");

        // Container page: tag, digest, size, pull commands, download link,
        // labels, help and runscript, with user text escaped.
        let container = hub.page("/Sylabs/lolcow/lolcow").await;
        for expected in [
            latest.as_str(),
            "3.0 MiB",
            "apptainer pull shub://hub.example/Sylabs/lolcow:latest",
            "apptainer pull library://hub.example:8080/Sylabs/lolcow/lolcow:latest",
            "apptainer pull oras://hub.example:8080/Sylabs/lolcow/lolcow:latest",
            "curl -L -O http://hub.example:8080/download/Sylabs/lolcow/lolcow:latest",
            "href=\"/download/Sylabs/lolcow/lolcow:latest\"",
            // askama escapes with numeric references: `&#60;` is `&lt;`.
            "<td>&#60;script&#62;alert(1)&#60;/script&#62; &#34;quoted&#34;</td>",
            "<pre>Usage: &#60;script&#62;",
            "echo &#34;moo&#34; &#60;/dev/null",
        ] {
            assert!(
                container.contains(expected),
                "{expected} missing:\n{container}"
            );
        }
        assert!(!container.contains("<script>alert"), "{container}");
        let tools_page = hub.page("/Sylabs/lolcow/tools").await;
        assert!(tools_page.contains(&tools), "{tools_page}");
        assert!(
            !tools_page.contains("shub://"),
            "not a root container: {tools_page}"
        );
        assert!(tools_page.contains("library://hub.example:8080/Sylabs/lolcow/tools:v1"));

        // Build pages: the live chunks while running, the stored log after.
        let live = hub.page(&format!("/builds/{}", running.build_id)).await;
        assert!(live.contains("running"), "{live}");
        assert!(live.contains("step 1 &#60;ok&#62;\nstep 2"), "{live}");
        assert!(live.contains("http-equiv=\"refresh\""), "{live}");
        // With JavaScript the log streams in; the refresh is for pages without it.
        assert!(
            live.contains(&format!(
                "data-events=\"/builds/{}/events\"",
                running.build_id
            )),
            "{live}"
        );
        assert!(live.contains("<noscript><meta http-equiv"), "{live}");
        assert!(
            live.contains("1234567890abcdef1234567890abcdef12345678"),
            "{live}"
        );
        let done = hub.page(&format!("/builds/{}", failed.build_id)).await;
        assert!(
            done.contains("stored log: exit 1 &#38; &#34;done&#34;"),
            "{done}"
        );
        assert!(done.contains("recipe failed"), "{done}");
        assert!(done.contains("tools/Singularity.v1"), "{done}");
        assert!(!done.contains("http-equiv"), "{done}");

        // Private and unknown: 404 on every page, the same page for both.
        for path in [
            "/corp/hidden".to_owned(),
            "/corp/hidden/hidden".to_owned(),
            format!("/builds/{}", private_build.build_id),
            "/nobody/nothing".to_owned(),
            "/Sylabs/lolcow/missing".to_owned(),
            "/builds/999999".to_owned(),
            "/builds/not-a-number".to_owned(),
            "/a/b/c/d/e".to_owned(),
        ] {
            let (status, body) = hub.get(&path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert!(body.contains("Not found"), "{path}: {body}");
            assert!(!body.contains("corp"), "{path}: {body}");
        }
    }
}
