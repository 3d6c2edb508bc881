//! The hub's GitHub client against the GitHub stand-in: App tokens, source
//! tarballs, trees, statuses, installation repositories and errors; and the
//! stand-in's webhook sender checked independently.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use sifhub::config::{Config, Secret};
use sifhub::github::app::AppKey;
use sifhub::github::{CommitStatus, GitHubApi, GitHubClient, RepoRef, StatusState};
use sifhub_tests::git::ZERO_SHA;
use sifhub_tests::github::{AuthKind, GitHubStandIn, RecordedStatus, StandInRepo};
use sifhub_tests::webhook;

fn app_config(standin: &GitHubStandIn) -> Config {
    Config {
        github_api_url: standin.base_url(),
        github_app_id: Some(standin.app_id()),
        github_app_key_file: Some(standin.app_key_file().to_owned()),
        ..Config::default()
    }
}

fn token_config(standin: &GitHubStandIn) -> Config {
    Config {
        github_api_url: standin.base_url(),
        github_token: Some(Secret::new(standin.plain_token())),
        ..Config::default()
    }
}

fn anonymous_config(standin: &GitHubStandIn) -> Config {
    Config {
        github_api_url: standin.base_url(),
        ..Config::default()
    }
}

fn repo_ref(repo: &StandInRepo, via_app: bool) -> RepoRef {
    RepoRef {
        owner: repo.owner.clone(),
        name: repo.name.clone(),
        installation_id: if via_app { repo.installation_id } else { None },
    }
}

/// A repository with a few files in folders, one commit; returns its sha.
fn fill(repo: &StandInRepo) -> String {
    repo.git
        .write("Singularity", "Bootstrap: docker\nFrom: alpine:3.20\n");
    repo.git.write(
        "envs/tools/Singularity.v2",
        "Bootstrap: docker\nFrom: debian:12\n",
    );
    repo.git.write("envs/data/blob.bin", [0u8, 1, 2, 255, 254]);
    repo.git.write("README.md", "# test\n");
    repo.git.commit("first")
}

async fn collect(mut stream: sifhub::github::ByteStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.unwrap());
    }
    bytes
}

/// path → contents of every file of a `.tar.gz` (folders as empty entries).
fn unpack(tar_gz: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tar_gz));
    let mut files = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut contents = Vec::new();
        entry.read_to_end(&mut contents).unwrap();
        files.insert(path, contents);
    }
    files
}

fn mints(standin: &GitHubStandIn, installation: i64) -> usize {
    standin
        .requests_to(&format!("/app/installations/{installation}/access_tokens"))
        .len()
}

#[tokio::test]
async fn app_token_is_minted_once_and_refreshed_near_expiry() {
    let standin = GitHubStandIn::start().await;
    let installation = standin.create_installation("octo");
    let repo = standin.create_repo("octo", "private-recipes", true, Some(installation));
    let sha = fill(&repo);
    // Expires just past the 5-minute refresh margin: fresh for ~2 s.
    standin.set_token_lifetime(Duration::from_secs(5 * 60 + 2));
    let client = GitHubClient::from_config(&app_config(&standin)).unwrap();
    assert_eq!(client.mode(), format!("app 4242 at {}", standin.base_url()));
    let target = repo_ref(&repo, true);

    client.tree(&target, &sha).await.unwrap();
    client.tree(&target, &sha).await.unwrap();
    assert_eq!(
        mints(&standin, installation),
        1,
        "{:#?}",
        standin.requests()
    );
    let trees = standin.requests_to("/repos/octo/private-recipes/git/trees");
    assert_eq!(trees.len(), 2);
    assert!(trees
        .iter()
        .all(|r| r.auth == AuthKind::Installation(installation)));

    tokio::time::sleep(Duration::from_millis(2500)).await;
    client.tree(&target, &sha).await.unwrap();
    assert_eq!(
        mints(&standin, installation),
        2,
        "{:#?}",
        standin.requests()
    );

    // Concurrent callers share one refresh.
    standin.set_token_lifetime(Duration::from_secs(3600));
    let client = Arc::new(GitHubClient::from_config(&app_config(&standin)).unwrap());
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let client = client.clone();
            let target = target.clone();
            let sha = sha.clone();
            tokio::spawn(async move { client.tree(&target, &sha).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(mints(&standin, installation), 3);
    // The JWT the stand-in checked was the App's.
    let mint_auths: Vec<AuthKind> = standin
        .requests_to("/app/installations/")
        .into_iter()
        .map(|r| r.auth)
        .collect();
    assert!(
        mint_auths.iter().all(|a| *a == AuthKind::AppJwt),
        "{mint_auths:?}"
    );
}

#[tokio::test]
async fn private_tarball_is_git_archive_in_app_and_token_mode() {
    let standin = GitHubStandIn::start().await;
    let installation = standin.create_installation("octo");
    let repo = standin.create_repo("octo", "secret", true, Some(installation));
    fill(&repo);
    repo.git.write(
        "envs/tools/Singularity.v2",
        "Bootstrap: docker\nFrom: debian:13\n",
    );
    repo.git.remove("README.md");
    let sha = repo.git.commit("second");
    let prefix = format!("octo-secret-{}/", &sha[..7]);
    let expected = unpack(&repo.git.archive("tar.gz", &prefix, &sha));
    assert!(expected.contains_key(&format!("{prefix}envs/tools/Singularity.v2")));
    assert!(!expected.contains_key(&format!("{prefix}README.md")));

    for (config, via_app) in [
        (app_config(&standin), true),
        (token_config(&standin), false),
    ] {
        let client = GitHubClient::from_config(&config).unwrap();
        let stream = client
            .tarball(&repo_ref(&repo, via_app), &sha)
            .await
            .unwrap();
        let got = unpack(&collect(stream).await);
        assert_eq!(got, expected, "via_app={via_app}");
    }
    // Both went through the codeload redirect.
    assert_eq!(standin.requests_to("/_codeload/").len(), 2);
    let auths: Vec<AuthKind> = standin
        .requests_to("/repos/octo/secret/tarball/")
        .into_iter()
        .map(|r| r.auth)
        .collect();
    assert_eq!(
        auths,
        [AuthKind::Installation(installation), AuthKind::Token]
    );
}

#[tokio::test]
async fn anonymous_reads_public_repositories_only_and_posts_no_status() {
    let standin = GitHubStandIn::start().await;
    let private = standin.create_repo("octo", "hidden", true, None);
    let public = standin.create_repo("octo", "open", false, None);
    let private_sha = fill(&private);
    let public_sha = fill(&public);
    let client = GitHubClient::from_config(&anonymous_config(&standin)).unwrap();
    assert_eq!(
        client.mode(),
        format!("anonymous at {}", standin.base_url())
    );

    let err = match client
        .tarball(&repo_ref(&private, false), &private_sha)
        .await
    {
        Ok(_) => panic!("anonymous tarball of a private repository succeeded"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("octo/hidden")
            && err.contains("404")
            && err.contains("private repository? set SIFHUB_GITHUB_TOKEN or install the App"),
        "{err}"
    );
    let err = client
        .tree(&repo_ref(&private, false), &private_sha)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("private repository?"), "{err}");

    let stream = client
        .tarball(&repo_ref(&public, false), &public_sha)
        .await
        .unwrap();
    let files = unpack(&collect(stream).await);
    let prefix = format!("octo-open-{}/", &public_sha[..7]);
    assert_eq!(files[&format!("{prefix}README.md")], b"# test\n");

    let status = CommitStatus {
        state: StatusState::Pending,
        context: "sifhub/Singularity".to_owned(),
        description: "queued".to_owned(),
        target_url: None,
    };
    client
        .set_status(&repo_ref(&public, false), &public_sha, &status)
        .await
        .unwrap();
    assert!(standin.statuses().is_empty());
    assert!(standin.requests_to("/repos/octo/open/statuses").is_empty());

    // With credentials, a missing repository is a plain 404 with GitHub's
    // message, not the private-repository hint.
    let client = GitHubClient::from_config(&token_config(&standin)).unwrap();
    let missing = RepoRef {
        owner: "octo".to_owned(),
        name: "nowhere".to_owned(),
        installation_id: None,
    };
    let err = client
        .tree(&missing, &public_sha)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("404 Not Found") && !err.contains("private"),
        "{err}"
    );
}

#[tokio::test]
async fn tree_lists_the_files_of_a_commit() {
    let standin = GitHubStandIn::start().await;
    let installation = standin.create_installation("octo");
    let repo = standin.create_repo("octo", "recipes", true, Some(installation));
    let first = fill(&repo);
    repo.git.remove("envs/data/blob.bin");
    repo.git
        .write("envs/new/Singularity", "Bootstrap: scratch\n");
    let second = repo.git.commit("second");
    let client = GitHubClient::from_config(&app_config(&standin)).unwrap();

    let mut listing = client.tree(&repo_ref(&repo, true), &first).await.unwrap();
    listing.paths.sort();
    assert_eq!(
        listing.paths,
        [
            "README.md",
            "Singularity",
            "envs/data/blob.bin",
            "envs/tools/Singularity.v2"
        ]
    );
    assert!(!listing.truncated);
    let mut listing = client.tree(&repo_ref(&repo, true), &second).await.unwrap();
    listing.paths.sort();
    assert_eq!(
        listing.paths,
        [
            "README.md",
            "Singularity",
            "envs/new/Singularity",
            "envs/tools/Singularity.v2"
        ]
    );
    let trees = standin.requests_to("/repos/octo/recipes/git/trees/");
    assert!(
        trees.iter().all(|r| r.path.ends_with("?recursive=1")),
        "{trees:?}"
    );
}

#[tokio::test]
async fn statuses_arrive_in_order_with_their_fields() {
    let standin = GitHubStandIn::start().await;
    let installation = standin.create_installation("octo");
    let app_repo = standin.create_repo("octo", "app-repo", true, Some(installation));
    let plain_repo = standin.create_repo("octo", "plain-repo", true, None);
    let app_sha = fill(&app_repo);
    let plain_sha = fill(&plain_repo);
    let mut config = app_config(&standin);
    config.github_token = Some(Secret::new(standin.plain_token()));
    let client = GitHubClient::from_config(&config).unwrap();
    assert_eq!(
        client.mode(),
        format!("app 4242 and token at {}", standin.base_url())
    );

    let long = "x".repeat(200);
    let steps = [
        (StatusState::Pending, "queued", None),
        (
            StatusState::Pending,
            "building",
            Some("http://hub.test/octo/app-repo/builds/1"),
        ),
        (
            StatusState::Failure,
            long.as_str(),
            Some("http://hub.test/octo/app-repo/builds/1"),
        ),
    ];
    for (state, description, target_url) in &steps {
        let status = CommitStatus {
            state: *state,
            context: "sifhub/envs/tools/Singularity.v2".to_owned(),
            description: (*description).to_owned(),
            target_url: target_url.map(str::to_owned),
        };
        client
            .set_status(&repo_ref(&app_repo, true), &app_sha, &status)
            .await
            .unwrap();
    }
    let success = CommitStatus {
        state: StatusState::Success,
        context: "sifhub/Singularity".to_owned(),
        description: "built in 2m 10s".to_owned(),
        target_url: Some("http://hub.test/octo/plain-repo/builds/2".to_owned()),
    };
    client
        .set_status(&repo_ref(&plain_repo, false), &plain_sha, &success)
        .await
        .unwrap();

    let expected = |repo: &str, sha: &str, state: &str, url: Option<&str>, description: &str| {
        let (context, auth) = if repo == "octo/app-repo" {
            (
                "sifhub/envs/tools/Singularity.v2",
                AuthKind::Installation(installation),
            )
        } else {
            ("sifhub/Singularity", AuthKind::Token)
        };
        RecordedStatus {
            repo: repo.to_owned(),
            sha: sha.to_owned(),
            state: state.to_owned(),
            target_url: url.map(str::to_owned),
            description: Some(description.to_owned()),
            context: context.to_owned(),
            auth,
        }
    };
    let build_1 = Some("http://hub.test/octo/app-repo/builds/1");
    let clipped = format!("{}…", "x".repeat(139));
    assert_eq!(
        standin.statuses(),
        [
            expected("octo/app-repo", &app_sha, "pending", None, "queued"),
            expected("octo/app-repo", &app_sha, "pending", build_1, "building"),
            expected("octo/app-repo", &app_sha, "failure", build_1, &clipped),
            expected(
                "octo/plain-repo",
                &plain_sha,
                "success",
                Some("http://hub.test/octo/plain-repo/builds/2"),
                "built in 2m 10s"
            ),
        ]
    );

    // GitHub refuses a status on an unknown commit; the error says so.
    let err = client
        .set_status(&repo_ref(&plain_repo, false), &"f".repeat(40), &success)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("422") && err.contains("No commit found"),
        "{err}"
    );
}

#[tokio::test]
async fn installation_repositories_are_read_over_all_pages() {
    let standin = GitHubStandIn::start().await;
    let installation = standin.create_installation("octo");
    let other = standin.create_installation("someone-else");
    let mut expected = Vec::new();
    let mut made = Vec::new();
    for i in 0..5 {
        let repo =
            standin.create_repo("octo", &format!("repo-{i}"), i % 2 == 0, Some(installation));
        expected.push((repo.id, repo.name.clone(), repo.private));
        made.push(repo);
    }
    standin.create_repo("someone-else", "theirs", false, Some(other));
    standin.set_max_per_page(2);
    let client = GitHubClient::from_config(&app_config(&standin)).unwrap();

    let repos = client
        .installation_repositories(installation)
        .await
        .unwrap();
    let got: Vec<(i64, String, bool)> = repos
        .iter()
        .map(|r| (r.github_id, r.name.clone(), r.private))
        .collect();
    assert_eq!(got, expected);
    assert!(repos
        .iter()
        .all(|r| r.owner == "octo" && r.default_branch == "main"));
    let pages = standin.requests_to("/installation/repositories");
    assert_eq!(pages.len(), 3, "{pages:#?}");
    assert!(pages[1].path.ends_with("page=2") && pages[2].path.ends_with("page=3"));
    assert!(pages[0].path.contains("per_page=100"), "{pages:#?}");
    assert!(pages
        .iter()
        .all(|p| p.auth == AuthKind::Installation(installation)));

    // A repository taken out of the installation is no longer listed, and
    // its private sources are out of the installation's reach.
    let sha = fill(&made[0]);
    standin.remove_from_installation(&made[0]);
    let names: Vec<String> = client
        .installation_repositories(installation)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["repo-1", "repo-2", "repo-3", "repo-4"]);
    let gone = RepoRef {
        installation_id: Some(installation),
        ..repo_ref(&made[0], false)
    };
    let err = client.tree(&gone, &sha).await.unwrap_err().to_string();
    assert!(err.contains("404"), "{err}");

    // The installation itself, as the App sees it.
    let key = AppKey::load(standin.app_id(), standin.app_key_file()).unwrap();
    let jwt = key.jwt(std::time::SystemTime::now()).unwrap();
    let answer: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{}/app/installations/{installation}",
            standin.base_url()
        ))
        .bearer_auth(jwt)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["account"]["login"], "octo");
    assert_eq!(answer["app_id"], 4242);

    // Without an App, the hub cannot list installations.
    let client = GitHubClient::from_config(&token_config(&standin)).unwrap();
    let err = client
        .installation_repositories(installation)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("SIFHUB_GITHUB_APP_ID"), "{err}");
}

#[tokio::test]
async fn bad_app_keys_are_clear_errors() {
    let standin = GitHubStandIn::start().await;
    let installation = standin.create_installation("octo");
    let repo = standin.create_repo("octo", "recipes", true, Some(installation));
    let sha = fill(&repo);

    let garbage = standin.temp_dir().join("garbage.pem");
    std::fs::write(&garbage, "not a key\n").unwrap();
    let mut config = app_config(&standin);
    config.github_app_key_file = Some(garbage);
    let err = GitHubClient::from_config(&config).unwrap_err().to_string();
    assert!(err.contains("garbage.pem") && err.contains("PEM"), "{err}");

    config.github_app_key_file = Some(standin.temp_dir().join("missing.pem"));
    let err = GitHubClient::from_config(&config).unwrap_err().to_string();
    assert!(
        err.contains("missing.pem") && err.contains("cannot read"),
        "{err}"
    );

    config.github_app_key_file = None;
    let err = GitHubClient::from_config(&config).unwrap_err().to_string();
    assert!(err.contains("SIFHUB_GITHUB_APP_KEY_FILE"), "{err}");

    // A well-formed key that is not the App's: GitHub refuses the JWT.
    let wrong = standin.temp_dir().join("wrong.pem");
    std::fs::write(&wrong, sifhub_tests::github::generate_rsa_key_pem()).unwrap();
    config.github_app_key_file = Some(wrong);
    let client = GitHubClient::from_config(&config).unwrap();
    let err = client
        .tree(&repo_ref(&repo, true), &sha)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("installation {installation} token"))
            && err.contains("401 Bad credentials"),
        "{err}"
    );
    let mint = &standin.requests_to("/app/installations/")[0];
    assert!(
        matches!(&mint.auth, AuthKind::Invalid(reason) if reason.contains("signature")),
        "{mint:?}"
    );
}

#[tokio::test]
async fn unreachable_github_is_a_transport_error() {
    // A port nothing listens on: bind, learn it, close.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let config = Config {
        github_api_url: url.clone(),
        github_token: Some(Secret::new("t")),
        ..Config::default()
    };
    let client = GitHubClient::from_config(&config).unwrap();
    let target = RepoRef {
        owner: "octo".to_owned(),
        name: "recipes".to_owned(),
        installation_id: None,
    };
    let err = client.tree(&target, "abc").await.unwrap_err().to_string();
    assert!(
        err.contains("tree of octo/recipes") && err.contains("onnect"),
        "{err}"
    );
}

/// HMAC per RFC 2104 over SHA-256, written out here so it shares nothing
/// with the sender's.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

type Captured = Arc<Mutex<Vec<(axum::http::HeaderMap, Vec<u8>)>>>;

/// A receiver recording every delivery; returns its URL.
async fn receiver(captured: Captured) -> String {
    use axum::routing::post;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/hook",
        post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| async move {
                captured.lock().unwrap().push((headers, body.to_vec()));
                (axum::http::StatusCode::ACCEPTED, "got it")
            },
        ),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[tokio::test]
async fn webhook_signatures_verify_independently() {
    let standin = GitHubStandIn::start().await;
    let repo = standin.create_repo("octo", "recipes", false, None);
    let sha = fill(&repo);
    let captured: Captured = Arc::default();
    let url = receiver(captured.clone()).await;
    let secret = "It's a Secret to Everybody";

    let payload = webhook::push_payload(&repo, "main", ZERO_SHA, &sha);
    let (status, body) = webhook::deliver(&url, "push", &payload, Some(secret)).await;
    assert_eq!((status, body.as_str()), (202, "got it"));
    let id = uuid::Uuid::new_v4().to_string();
    webhook::deliver_as(
        &id,
        &url,
        "ping",
        &webhook::ping_payload(Some(&repo), None),
        Some(secret),
    )
    .await;
    webhook::deliver_as(
        &id,
        &url,
        "ping",
        &webhook::ping_payload(Some(&repo), None),
        None,
    )
    .await;

    let captured = captured.lock().unwrap();
    assert_eq!(captured.len(), 3);
    for (headers, body) in captured.iter().take(2) {
        let header = |name: &str| headers[name].to_str().unwrap().to_owned();
        let expected = format!(
            "sha256={}",
            hex::encode(hmac_sha256(secret.as_bytes(), body))
        );
        assert_eq!(header("x-hub-signature-256"), expected);
        assert!(header("x-hub-signature").starts_with("sha1="));
        assert_eq!(header("x-hub-signature").len(), 5 + 40);
        assert!(header("user-agent").starts_with("GitHub-Hookshot/"));
        assert_eq!(header("content-type"), "application/json");
        uuid::Uuid::parse_str(&header("x-github-delivery")).unwrap();
    }
    // GitHub's documented example: this secret over "Hello, World!".
    assert_eq!(
        webhook::signature_256(secret, b"Hello, World!"),
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    );
    assert_eq!(captured[0].0["x-github-event"], "push");
    assert_eq!(captured[1].0["x-github-event"], "ping");
    // The redelivery keeps its id; a hook without a secret is unsigned.
    assert_eq!(captured[1].0["x-github-delivery"], id.as_str());
    assert_eq!(captured[2].0["x-github-delivery"], id.as_str());
    assert!(!captured[2].0.contains_key("x-hub-signature-256"));
    let sent: serde_json::Value = serde_json::from_slice(&captured[0].1).unwrap();
    assert_eq!(sent, payload);
}

#[tokio::test]
async fn push_payloads_have_github_shape() {
    let standin = GitHubStandIn::start().await;
    let installation = standin.create_installation("octo");
    let repo = standin.create_repo("octo", "recipes", true, Some(installation));
    let first = fill(&repo);
    repo.git.write(
        "envs/tools/Singularity.v2",
        "Bootstrap: docker\nFrom: debian:13\n",
    );
    repo.git.remove("README.md");
    repo.git
        .write("envs/new/Singularity", "Bootstrap: scratch\n");
    let second = repo.git.commit("second\n\nwith a body");

    let push = webhook::push_payload(&repo, "main", &first, &second);
    assert_eq!(push["ref"], "refs/heads/main");
    assert_eq!(push["before"], first.as_str());
    assert_eq!(push["after"], second.as_str());
    assert_eq!(
        (
            push["created"].as_bool(),
            push["deleted"].as_bool(),
            push["forced"].as_bool()
        ),
        (Some(false), Some(false), Some(false))
    );
    let commits = push["commits"].as_array().unwrap();
    assert_eq!(commits.len(), 1);
    assert_eq!(commits[0]["id"], second.as_str());
    assert_eq!(commits[0]["message"], "second\n\nwith a body");
    assert_eq!(
        commits[0]["added"],
        serde_json::json!(["envs/new/Singularity"])
    );
    assert_eq!(
        commits[0]["modified"],
        serde_json::json!(["envs/tools/Singularity.v2"])
    );
    assert_eq!(commits[0]["removed"], serde_json::json!(["README.md"]));
    assert_eq!(push["head_commit"]["id"], second.as_str());
    assert_eq!(push["repository"]["full_name"], "octo/recipes");
    assert_eq!(push["repository"]["private"], true);
    assert_eq!(push["repository"]["default_branch"], "main");
    assert_eq!(push["repository"]["owner"]["login"], "octo");
    assert_eq!(push["installation"]["id"], installation);
    assert_eq!(push["sender"]["login"], webhook::SENDER_LOGIN);

    // A new branch with 25 commits lists the newest 20.
    repo.git.checkout("long");
    let mut shas = Vec::new();
    for i in 0..25 {
        repo.git.write(&format!("file-{i}"), format!("{i}\n"));
        shas.push(repo.git.commit(&format!("commit {i}")));
    }
    let push = webhook::push_payload(&repo, "long", ZERO_SHA, &shas[24]);
    assert_eq!(push["created"], true);
    let listed: Vec<&str> = push["commits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        shas[5..].iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(push["commits"][0]["added"], serde_json::json!(["file-5"]));
    let push = webhook::push_payload_listing(&repo, "long", &shas[0], &shas[24], 3);
    let listed: Vec<&str> = push["commits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [&shas[22], &shas[23], &shas[24]]);

    // A force push, a deletion, a tag.
    repo.git.git(&["reset", "-q", "--hard", &shas[10]]);
    let rewritten = repo.git.commit("rewritten");
    let push = webhook::push_payload(&repo, "long", &shas[24], &rewritten);
    assert_eq!(push["forced"], true);
    let push = webhook::push_payload(&repo, "long", &rewritten, ZERO_SHA);
    assert_eq!(
        (push["deleted"].as_bool(), push["after"].as_str()),
        (Some(true), Some(ZERO_SHA))
    );
    assert!(push["head_commit"].is_null());
    assert_eq!(push["commits"], serde_json::json!([]));
    repo.git.tag("v1.0");
    let push = webhook::push_payload(&repo, "refs/tags/v1.0", ZERO_SHA, &rewritten);
    assert_eq!(push["ref"], "refs/tags/v1.0");
    assert_eq!(push["head_commit"]["id"], rewritten.as_str());

    let added =
        webhook::installation_repositories_payload(installation, "octo", 4242, &[&repo], &[]);
    assert_eq!(added["action"], "added");
    assert_eq!(added["repositories_added"][0]["full_name"], "octo/recipes");
    let created = webhook::installation_payload("created", installation, "octo", 4242, &[&repo]);
    assert_eq!(created["installation"]["id"], installation);
    assert_eq!(created["repositories"][0]["id"], repo.id);
}

#[tokio::test]
async fn standin_serves_contents_zipball_repository_and_check_runs() {
    let standin = GitHubStandIn::start().await;
    let installation = standin.create_installation("octo");
    let repo = standin.create_repo("octo", "recipes", true, Some(installation));
    let sha = fill(&repo);
    let base = standin.base_url();
    let http = reqwest::Client::new();
    let token = standin.plain_token();

    // Private: 404 anonymously, found with the token.
    let url = format!("{base}/repos/octo/recipes");
    assert_eq!(http.get(&url).send().await.unwrap().status(), 404);
    let answer: serde_json::Value = http
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["full_name"], "octo/recipes");
    assert_eq!(answer["id"], repo.id);

    // A file's contents come base64-encoded; a folder lists its entries.
    let file: serde_json::Value = http
        .get(format!(
            "{base}/repos/octo/recipes/contents/envs/tools/Singularity.v2?ref={sha}"
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(file["type"], "file");
    let content: String = file["content"]
        .as_str()
        .unwrap()
        .chars()
        .filter(|c| *c != '\n')
        .collect();
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(content)
        .unwrap();
    assert_eq!(decoded, b"Bootstrap: docker\nFrom: debian:12\n");
    let folder: serde_json::Value = http
        .get(format!("{base}/repos/octo/recipes/contents/envs"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<(&str, &str)> = folder
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["path"].as_str().unwrap(), e["type"].as_str().unwrap()))
        .collect();
    assert_eq!(names, [("envs/data", "dir"), ("envs/tools", "dir")]);

    // The zipball, by branch name, through the codeload redirect.
    let zip = http
        .get(format!("{base}/repos/octo/recipes/zipball/main"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(zip.status(), 200);
    let zip = zip.bytes().await.unwrap();
    assert!(zip.starts_with(b"PK\x03\x04"));
    let member = format!("octo-recipes-{}/envs/tools/Singularity.v2", &sha[..7]);
    assert!(zip.windows(member.len()).any(|w| w == member.as_bytes()));

    // Check runs: Apps only; created, updated, completed in order.
    let checks = format!("{base}/repos/octo/recipes/check-runs");
    let body = serde_json::json!({"name": "sifhub/Singularity", "head_sha": sha});
    let refused = http
        .post(&checks)
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let key = AppKey::load(standin.app_id(), standin.app_key_file()).unwrap();
    let minted: serde_json::Value = http
        .post(format!(
            "{base}/app/installations/{installation}/access_tokens"
        ))
        .bearer_auth(key.jwt(std::time::SystemTime::now()).unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let installation_token = minted["token"].as_str().unwrap();
    let created: serde_json::Value = http
        .post(&checks)
        .bearer_auth(installation_token)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_i64().unwrap();
    assert_eq!(created["status"], "queued");
    for update in [
        serde_json::json!({"status": "in_progress", "details_url": "http://hub.test/b/1"}),
        serde_json::json!({"conclusion": "success"}),
    ] {
        let answer = http
            .patch(format!("{checks}/{id}"))
            .bearer_auth(installation_token)
            .json(&update)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
    }
    let runs = standin.check_runs();
    let seen: Vec<(&str, &str, &str)> = runs
        .iter()
        .map(|r| {
            (
                r.action.as_str(),
                r.state["status"].as_str().unwrap(),
                r.state["details_url"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("created", "queued", ""),
            ("updated", "in_progress", "http://hub.test/b/1"),
            ("updated", "completed", "http://hub.test/b/1"),
        ]
    );
    assert_eq!(runs[2].state["conclusion"], "success");
    assert!(runs.iter().all(|r| r.id == id && r.repo == "octo/recipes"));
}
