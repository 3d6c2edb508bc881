//! The web pages through the hub's real router, database and storage, on
//! SQLite and PostgreSQL: catalog (search, sort, pages), collection,
//! container (tags, digests, pull commands, download links, labels, help,
//! runscript), build pages with live and stored logs, private collections
//! answering 404 everywhere, user text escaped, and every page parsing as
//! HTML5 without errors. And signed in (a session as sign-in leaves it,
//! GitHub played by the stand-in): the owner sees their private
//! collection with its controls, the builds lists and the connect page;
//! forms need the session's CSRF token; settings and rebuild act; every
//! page, signed in or out, error pages too, parses without errors.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use bytes::Bytes;
use html5ever::tendril::TendrilSink as _;
use serde_json::json;
use sifhub::config::Config;
use sifhub::db::{hash_token, NewImage, NewRepository, NewUser, RepositorySettings, Timestamp};
use sifhub::queue::{NewBuild, Trigger};
use sifhub::serve::{router, AppState};
use sifhub::storage::StorageKey;
use sifhub_tests::github::GitHubStandIn;
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
        Hub::with(url, |_| ()).await
    }

    /// A hub on database `url` with `adjust` applied to its configuration.
    async fn with(url: &str, adjust: impl FnOnce(&mut Config)) -> Hub {
        let data_dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            data_dir: data_dir.path().to_owned(),
            database_url: Some(url.to_owned()),
            public_url: Some(PUBLIC_URL.to_owned()),
            ..Config::default()
        };
        adjust(&mut config);
        Hub {
            state: AppState::open(&config).await.unwrap(),
            _data_dir: data_dir,
        }
    }

    /// POSTs a form as the session `session`: status, `Location`, body.
    async fn post_as(&self, path: &str, session: &str, form: &str) -> (StatusCode, String, String) {
        let response = router(self.state.clone())
            .oneshot(
                Request::post(path)
                    .header("cookie", format!("sifhub_session={session}"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(Body::from(form.to_owned()))
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let location = response
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = String::from_utf8(bytes.to_vec()).unwrap();
        if !body.is_empty() {
            let errors = html_errors(&body);
            assert!(errors.is_empty(), "{path}: HTML errors {errors:?}\n{body}");
        }
        (status, location, body)
    }

    /// A session for `login`, as signing in leaves one, with GitHub token
    /// `github_token`; returns the cookie's secret and the CSRF token.
    async fn session(&self, login: &str, github_token: &str) -> (String, String) {
        let db = &self.state.db;
        let now = Timestamp::now();
        let user = db
            .upsert_user(
                &NewUser {
                    github_id: 777,
                    login: login.to_owned(),
                    name: None,
                    avatar_url: None,
                },
                now,
            )
            .await
            .unwrap();
        let secret = format!("secret-of-{login}");
        let csrf = format!("csrf-of-{login}");
        db.insert_session(
            &hash_token(&secret),
            user.id,
            &csrf,
            Some(github_token),
            now,
            now.plus(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
        (secret, csrf)
    }

    /// GETs `path`: status and body, after checking the body is valid HTML.
    async fn get(&self, path: &str) -> (StatusCode, String) {
        self.get_as(path, None).await
    }

    /// GETs `path` with the session cookie `session` when given.
    async fn get_as(&self, path: &str, session: Option<&str>) -> (StatusCode, String) {
        let mut request = Request::get(path);
        if let Some(secret) = session {
            request = request.header("cookie", format!("sifhub_session={secret}"));
        }
        let response = router(self.state.clone())
            .oneshot(request.body(Body::empty()).unwrap())
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

#[tokio::test]
async fn signed_in_pages_controls_and_every_page_parse() {
    for database in both_backends("web_pages_signed_in") {
        eprintln!("--- on {database:?}");
        let standin = GitHubStandIn::start().await;
        let installation = standin.create_installation("corp");
        let hidden = standin.create_repo("corp", "hidden", true, Some(installation));
        standin.create_repo("corp", "other", false, Some(installation));
        hidden
            .git
            .write("Singularity", "Bootstrap: docker\nFrom: busybox\n");
        let head = hidden.git.commit("a recipe");
        let hub = Hub::with(&database.url, |config| {
            config.github_api_url = standin.base_url();
            config.github_web_url = standin.base_url();
            config.github_app_id = Some(standin.app_id());
            config.github_app_key_file = Some(standin.app_key_file().to_owned());
            config.github_client_id = Some(standin.oauth_client_id());
            config.github_client_secret =
                Some(sifhub::config::Secret::new(standin.oauth_client_secret()));
            config.github_app_slug = Some("sifhub-test".to_owned());
        })
        .await;
        let db = &hub.state.db;
        let now = Timestamp::now();
        let installation_row = db
            .upsert_installation(installation, "corp", now)
            .await
            .unwrap();
        let repository = db
            .insert_repository(
                &NewRepository {
                    github_id: Some(hidden.id),
                    owner: "corp".to_owned(),
                    name: "hidden".to_owned(),
                    default_branch: "main".to_owned(),
                    installation_id: Some(installation_row.id),
                    settings: RepositorySettings {
                        private: true,
                        ..RepositorySettings::default()
                    },
                },
                now,
            )
            .await
            .unwrap();
        hub.tag_image(
            repository.id,
            "hidden",
            "latest",
            0x11,
            json!({"labels": {"k": EVIL}}),
        )
        .await;
        let running = hub
            .running_build(repository.id, "Singularity", "hidden", "latest")
            .await;
        let public = hub.repository("open", "lab", false).await;
        hub.tag_image(public, "lab", "v1", 0x22, json!({})).await;
        let (session, csrf) = hub.session("corp", &standin.user_token("corp")).await;
        let stranger = {
            // Another user, signed in, who is not a member.
            let db = &hub.state.db;
            let user = db
                .upsert_user(
                    &NewUser {
                        github_id: 888,
                        login: "mallory".to_owned(),
                        name: None,
                        avatar_url: None,
                    },
                    now,
                )
                .await
                .unwrap();
            let secret = "secret-of-mallory".to_owned();
            db.insert_session(
                &hash_token(&secret),
                user.id,
                "csrf-of-mallory",
                None,
                now,
                now.plus(Duration::from_secs(3600)),
            )
            .await
            .unwrap();
            secret
        };

        // Signed in as the owner: every page kind parses, the private
        // collection shows with its controls and the session's token.
        let build_page = format!("/builds/{}", running.build_id);
        for path in [
            "/",
            "/?q=hidden",
            "/corp/hidden",
            "/corp/hidden/hidden",
            "/corp/hidden/builds",
            "/corp/hidden/builds?status=running",
            "/builds",
            "/builds?status=failed&page=2",
            build_page.as_str(),
            "/connect",
            "/open/lab",
            "/open/lab/lab",
        ] {
            let (status, body) = hub.get_as(path, Some(&session)).await;
            assert_eq!(status, StatusCode::OK, "{path}\n{body}");
            assert!(body.contains("Signed in as corp"), "{path}\n{body}");
        }
        let (_, home) = hub.get_as("/", Some(&session)).await;
        assert!(home.contains("href=\"/corp/hidden\""), "{home}");
        let (_, collection) = hub.get_as("/corp/hidden", Some(&session)).await;
        assert!(collection.contains("Owner controls"), "{collection}");
        assert!(
            collection.contains(&format!("name=\"csrf\" value=\"{csrf}\"")),
            "{collection}"
        );
        assert!(collection.contains("value=\"Singularity\""), "{collection}");
        let (_, builds) = hub.get_as("/builds?status=running", Some(&session)).await;
        assert!(
            builds.contains(&format!("href=\"{build_page}\"")),
            "{builds}"
        );
        let (_, connect) = hub.get_as("/connect", Some(&session)).await;
        assert!(connect.contains("corp/hidden"), "{connect}");
        assert!(connect.contains("corp/other"), "{connect}");
        assert!(
            connect.contains("action=\"/connect/corp/other/enable\""),
            "{connect}"
        );
        assert!(
            connect.contains("action=\"/connect/corp/hidden/disable\""),
            "{connect}"
        );

        // Signed out, and signed in as a stranger: the private collection
        // and its builds are the 404 page; lists leave them out.
        for who in [None, Some(stranger.as_str())] {
            for path in [
                "/corp/hidden",
                "/corp/hidden/builds",
                "/corp/hidden/hidden",
                build_page.as_str(),
            ] {
                let (status, body) = hub.get_as(path, who).await;
                assert_eq!(status, StatusCode::NOT_FOUND, "{path} as {who:?}\n{body}");
            }
            let (_, builds) = hub.get_as("/builds", who).await;
            assert!(!builds.contains("corp/hidden"), "{builds}");
            let (_, open) = hub.get_as("/open/lab", who).await;
            assert!(!open.contains("Owner controls"), "{open}");
        }
        let (status, body) = hub.get("/open/lab/builds?status=queued").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("No queued builds."), "{body}");

        // Forms: without the session's token, 403 and nothing changes; a
        // stranger may not change a collection they cannot see.
        let (status, _, body) = hub
            .post_as("/corp/hidden/-/settings", &session, "csrf=wrong&paused=on")
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        let (status, _, _) = hub
            .post_as("/corp/hidden/-/settings", &session, "paused=on")
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(
            !db.find_repository("corp", "hidden")
                .await
                .unwrap()
                .unwrap()
                .paused
        );
        let (status, _, _) = hub
            .post_as(
                "/corp/hidden/-/settings",
                &stranger,
                "csrf=csrf-of-mallory&paused=on",
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _, body) = hub
            .post_as(
                "/corp/hidden/-/settings",
                &session,
                &format!("csrf={csrf}&branches=main%2C+a..b&private=on"),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

        // With it: the settings change, and a rebuild queues the recipe at
        // the branch head.
        let (status, location, _) = hub
            .post_as(
                "/corp/hidden/-/settings",
                &session,
                &format!("csrf={csrf}&branches=main%2C+dev&private=on"),
            )
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(location, "/corp/hidden");
        let changed = db.find_repository("corp", "hidden").await.unwrap().unwrap();
        assert_eq!(changed.build_branches, ["main", "dev"]);
        assert!(changed.private && !changed.paused);
        let (status, location, body) = hub
            .post_as(
                "/corp/hidden/-/rebuild",
                &session,
                &format!("csrf={csrf}&recipe=Singularity"),
            )
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
        let id: i64 = location.trim_start_matches("/builds/").parse().unwrap();
        let rebuilt = hub.state.queue.get(id).await.unwrap().unwrap();
        assert_eq!(rebuilt.commit_sha, head);
        assert_eq!(rebuilt.trigger, Trigger::Rebuild);
        let (status, _, _) = hub
            .post_as(
                "/corp/hidden/-/rebuild",
                &session,
                &format!("csrf={csrf}&recipe=nope"),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        // The connect page's buttons: disabling pauses, enabling unpauses
        // and asks for a scan of the branch head; a repository GitHub does
        // not show this user through the App cannot be enabled.
        let (status, location, _) = hub
            .post_as(
                "/connect/corp/hidden/disable",
                &session,
                &format!("csrf={csrf}"),
            )
            .await;
        assert_eq!(
            (status, location.as_str()),
            (StatusCode::SEE_OTHER, "/connect")
        );
        assert!(
            db.find_repository("corp", "hidden")
                .await
                .unwrap()
                .unwrap()
                .paused
        );
        let (_, connect) = hub.get_as("/connect", Some(&session)).await;
        assert!(
            connect.contains("action=\"/connect/corp/hidden/enable\""),
            "{connect}"
        );
        let (status, _, _) = hub
            .post_as(
                "/connect/corp/hidden/enable",
                &session,
                &format!("csrf={csrf}"),
            )
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert!(
            !db.find_repository("corp", "hidden")
                .await
                .unwrap()
                .unwrap()
                .paused
        );
        let scans = db.pending_scans().await.unwrap();
        assert!(
            scans
                .iter()
                .any(|s| s.repository_id == repository.id && s.commit_sha == head),
            "{scans:?}"
        );
        let (status, _, _) = hub
            .post_as(
                "/connect/corp/other/enable",
                &session,
                &format!("csrf={csrf}"),
            )
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert!(db.find_repository("corp", "other").await.unwrap().is_some());
        let (status, _, _) = hub
            .post_as(
                "/connect/someone/else/enable",
                &session,
                &format!("csrf={csrf}"),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _, _) = hub
            .post_as("/connect/corp/other/disable", &session, "csrf=wrong")
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(
            !db.find_repository("corp", "other")
                .await
                .unwrap()
                .unwrap()
                .paused
        );

        // Signed out: the connect page sends the visitor to sign in, and
        // error pages parse too.
        let response = router(hub.state.clone())
            .oneshot(Request::get("/connect").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            response.headers()["location"].to_str().unwrap(),
            "/login?next=/connect"
        );
        for path in ["/builds", "/builds?status=nonsense", "/no/such/page/here/x"] {
            hub.get(path).await;
        }
        let response = router(hub.state.clone())
            .oneshot(Request::get("/robots.txt").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let response = router(hub.state.clone())
            .oneshot(Request::get("/favicon.svg").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.headers()["content-type"], "image/svg+xml");
    }
}

/// The `name=value` of a `Set-Cookie` named `name` in `response`, and the
/// whole header.
fn set_cookie(response: &axum::response::Response, name: &str) -> Option<(String, String)> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|header| {
            let pair = header.split(';').next().unwrap().to_owned();
            (pair, header)
        })
}

#[tokio::test]
async fn signing_in_with_github_opens_a_session_with_memberships() {
    for database in both_backends("web_sign_in") {
        eprintln!("--- on {database:?}");
        let standin = GitHubStandIn::start().await;
        let installation = standin.create_installation("corp");
        let hidden = standin.create_repo("corp", "hidden", true, Some(installation));
        standin.add_collaborator(&hidden, "bob", sifhub_tests::github::RepoPermission::Pull);
        // A private repository the hub does not know yet, bob may write to.
        let labs = standin.create_repo("corp", "labs", true, Some(installation));
        standin.add_collaborator(&labs, "bob", sifhub_tests::github::RepoPermission::Push);
        labs.git.write("README.md", "# labs\n");
        labs.git.commit("start");
        let hub = Hub::with(&database.url, |config| {
            config.github_api_url = standin.base_url();
            config.github_web_url = standin.base_url();
            config.github_app_id = Some(standin.app_id());
            config.github_app_key_file = Some(standin.app_key_file().to_owned());
            config.github_client_id = Some(standin.oauth_client_id());
            config.github_client_secret =
                Some(sifhub::config::Secret::new(standin.oauth_client_secret()));
        })
        .await;
        let repository = hub
            .state
            .db
            .insert_repository(
                &NewRepository {
                    github_id: Some(hidden.id),
                    owner: "corp".to_owned(),
                    name: "hidden".to_owned(),
                    default_branch: "main".to_owned(),
                    installation_id: None,
                    settings: RepositorySettings {
                        private: true,
                        ..RepositorySettings::default()
                    },
                },
                Timestamp::now(),
            )
            .await
            .unwrap()
            .id;
        hub.tag_image(repository, "hidden", "latest", 0x33, json!({}))
            .await;
        let (status, _) = hub.get("/corp/hidden").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        standin.sign_in_as("bob");

        // /login sends the browser to GitHub with a state kept in a cookie.
        let login = router(hub.state.clone())
            .oneshot(
                Request::get("/login?next=/corp/hidden")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(login.status(), StatusCode::SEE_OTHER);
        let authorize = login.headers()["location"].to_str().unwrap().to_owned();
        assert!(
            authorize.starts_with(&format!("{}/login/oauth/authorize?", standin.base_url())),
            "{authorize}"
        );
        let (state_pair, state_header) = set_cookie(&login, "sifhub_oauth_state").unwrap();
        assert!(state_header.contains("HttpOnly") && state_header.contains("SameSite=Lax"));
        // GitHub (the stand-in) sends it back with a code.
        let no_redirects = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let back = no_redirects.get(&authorize).send().await.unwrap();
        assert_eq!(back.status(), 302);
        let callback = back.headers()["location"].to_str().unwrap().to_owned();
        let callback_path = callback.strip_prefix(PUBLIC_URL).unwrap().to_owned();

        // Without the state cookie (another browser's sign-in), refused.
        let (status, _) = hub.get(&callback_path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        // With it: signed in, back where the visitor was going.
        let signed_in = router(hub.state.clone())
            .oneshot(
                Request::get(&callback_path)
                    .header("cookie", &state_pair)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
        assert_eq!(signed_in.headers()["location"], "/corp/hidden");
        let (session_pair, session_header) = set_cookie(&signed_in, "sifhub_session").unwrap();
        for flag in ["HttpOnly", "SameSite=Lax", "Path=/;", "Max-Age=2592000"] {
            assert!(session_header.contains(flag), "{flag}: {session_header}");
        }
        // Behind http the cookie cannot be Secure; the public URL is http here.
        assert!(!session_header.contains("Secure"), "{session_header}");
        let secret = session_pair.trim_start_matches("sifhub_session=");
        // The database keeps the secret's hash, not the secret.
        assert!(hub
            .state
            .db
            .find_session(secret, Timestamp::now())
            .await
            .unwrap()
            .is_none());
        // The code works once.
        let again = router(hub.state.clone())
            .oneshot(
                Request::get(&callback_path)
                    .header("cookie", &state_pair)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::BAD_GATEWAY);

        // Bob is a collaborator (pull): he sees the private collection, but
        // without its owners' controls.
        let (status, body) = hub.get_as("/corp/hidden", Some(secret)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("Signed in as bob"), "{body}");
        assert!(!body.contains("Owner controls"), "{body}");
        let (_, home) = hub.get_as("/", Some(secret)).await;
        assert!(home.contains("href=\"/corp/hidden\""), "{home}");

        // Bob enables the private corp/labs (write on GitHub) and sees it at
        // once: his memberships are refreshed.
        let (_, page) = hub.get_as("/connect", Some(secret)).await;
        assert!(
            page.contains("action=\"/connect/corp/labs/enable\""),
            "{page}"
        );
        assert!(
            !page.contains("action=\"/connect/corp/hidden/"),
            "read access only: no button\n{page}"
        );
        let bob_csrf = page
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap()
            .to_owned();
        let (status, _, body) = hub
            .post_as(
                "/connect/corp/labs/enable",
                secret,
                &format!("csrf={bob_csrf}"),
            )
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
        let (status, body) = hub.get_as("/corp/labs", Some(secret)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("Owner controls"), "write access: {body}");
        // With read access only, bob may not disable corp/hidden.
        let (status, _, _) = hub
            .post_as(
                "/connect/corp/hidden/disable",
                secret,
                &format!("csrf={bob_csrf}"),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);

        // Signing out ends the session.
        let (_, page) = hub.get_as("/corp/hidden", Some(secret)).await;
        let csrf = page
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap()
            .to_owned();
        let (status, location, _) = hub.post_as("/logout", secret, "csrf=wrong").await;
        assert_eq!((status, location.as_str()), (StatusCode::FORBIDDEN, ""));
        let (status, location, _) = hub
            .post_as("/logout", secret, &format!("csrf={csrf}"))
            .await;
        assert_eq!((status, location.as_str()), (StatusCode::SEE_OTHER, "/"));
        let (status, _) = hub.get_as("/corp/hidden", Some(secret)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
