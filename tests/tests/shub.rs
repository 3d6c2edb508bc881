//! The Singularity Hub API (`shub://`) of a running `sifhub serve`, its
//! images published through the worker protocol: the exact answer shape
//! for root and sub-folder containers, by tag and by digest, the image
//! fetched from `image` matching `version`, a moved tag changing `commit`,
//! 404 JSON for unknown images, and a private collection visible only with
//! a token that may read it (expired and revoked tokens: 401).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod seeded_hub;

use std::time::Duration;

use serde_json::{json, Value};
use sifhub::db::{Timestamp, TokenScope};
use sifhub_tests::{pseudo_random_bytes, sha256_hex};

use seeded_hub::SeededHub;

/// `(status, JSON body)` of `GET <hub>/api/container/<reference>`.
async fn shub(hub: &SeededHub, reference: &str, token: Option<&str>) -> (u16, Value) {
    let mut request =
        reqwest::Client::new().get(format!("{}/api/container/{reference}", hub.url()));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{reference}: {status} body is not JSON ({e}): {text:?}"));
    (status, body)
}

/// What the API must answer for an image of `hex` under `name:tag`.
fn expected(hub: &SeededHub, name: &str, tag: &str, hex: &str) -> Value {
    json!({
        "image": format!("{}/download/sha256/{hex}", hub.url()),
        "name": name,
        "tag": tag,
        "version": format!("sha256:{hex}"),
        "commit": hex,
    })
}

/// Downloads `answer["image"]` and checks its sha256 against `version`.
async fn download_matches_version(answer: &Value, token: Option<&str>, bytes: &[u8]) {
    let mut request = reqwest::Client::new().get(answer["image"].as_str().unwrap());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "{answer}");
    let body = response.bytes().await.unwrap();
    assert_eq!(
        format!("sha256:{}", sha256_hex(&body)),
        answer["version"].as_str().unwrap()
    );
    assert_eq!(&body[..], bytes);
}

fn assert_not_found(status: u16, body: &Value, what: &str) {
    assert_eq!(status, 404, "{what}: {body}");
    assert_eq!(body["error"]["code"], 404, "{what}: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("not found")),
        "{what}: {body}"
    );
}

#[tokio::test]
async fn shub_answers_for_root_and_sub_folder_containers_by_tag_and_digest() {
    let hub = SeededHub::start().await;
    let root_v1 = pseudo_random_bytes(200_000, 1);
    let sub = pseudo_random_bytes(150_000, 2);
    let root_hex = hub
        .publish(
            ("alice", "tools", false),
            "Singularity",
            ("tools", "latest"),
            &root_v1,
        )
        .await;
    let sub_hex = hub
        .publish(
            ("alice", "tools", false),
            "samtools/Singularity.1.2",
            ("samtools", "1.2"),
            &sub,
        )
        .await;

    // The root container, as apptainer asks for it (tag `latest` spelled
    // out by its parser) and with the tag left out.
    for reference in ["alice/tools:latest", "alice/tools"] {
        let (status, answer) = shub(&hub, reference, None).await;
        assert_eq!(status, 200, "{reference}: {answer}");
        assert_eq!(answer, expected(&hub, "alice/tools", "latest", &root_hex));
    }
    let (status, answer) = shub(&hub, "alice/tools/samtools:1.2", None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        expected(&hub, "alice/tools/samtools", "1.2", &sub_hex)
    );
    download_matches_version(&answer, None, &sub).await;

    // By digest: bare hex (what `commit` gives) or `sha256:` prefixed,
    // with or without the tag.
    for reference in [
        format!("alice/tools@{root_hex}"),
        format!("alice/tools:latest@sha256:{root_hex}"),
    ] {
        let (status, answer) = shub(&hub, &reference, None).await;
        assert_eq!(status, 200, "{reference}: {answer}");
        assert_eq!(answer, expected(&hub, "alice/tools", "latest", &root_hex));
        download_matches_version(&answer, None, &root_v1).await;
    }
    let (status, answer) = shub(&hub, &format!("alice/tools/samtools@{sub_hex}"), None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        expected(&hub, "alice/tools/samtools", "1.2", &sub_hex)
    );

    // A rebuild moves the tag: new version and commit; the old digest
    // still resolves, through the tag's history.
    let root_v2 = pseudo_random_bytes(210_000, 3);
    let root_v2_hex = hub
        .publish(
            ("alice", "tools", false),
            "Singularity",
            ("tools", "latest"),
            &root_v2,
        )
        .await;
    let (_, moved) = shub(&hub, "alice/tools", None).await;
    assert_eq!(moved, expected(&hub, "alice/tools", "latest", &root_v2_hex));
    assert_ne!(moved["commit"], json!(root_hex));
    download_matches_version(&moved, None, &root_v2).await;
    let (status, old) = shub(&hub, &format!("alice/tools@{root_hex}"), None).await;
    assert_eq!(status, 200, "{old}");
    assert_eq!(old["commit"], json!(root_hex));

    // Unknown images, tags, digests and collections: 404 with a JSON body.
    let (status, body) = shub(&hub, "alice/tools:nope", None).await;
    assert_not_found(status, &body, "unknown tag");
    let (status, body) = shub(&hub, "alice/nothing", None).await;
    assert_not_found(status, &body, "unknown collection");
    let (status, body) = shub(&hub, "alice/tools/nothing:1.2", None).await;
    assert_not_found(status, &body, "unknown container");
    let (status, body) = shub(&hub, &format!("alice/tools@{}", "0".repeat(64)), None).await;
    assert_not_found(status, &body, "unknown digest");
    // A digest of another container's image is not this container's.
    let (status, body) = shub(&hub, &format!("alice/tools@{sub_hex}"), None).await;
    assert_not_found(status, &body, "other container's digest");
    // A digest the named tag never had.
    let (status, body) = shub(&hub, &format!("alice/tools:v9@{root_hex}"), None).await;
    assert_not_found(status, &body, "digest not under that tag");
    let (status, body) = shub(&hub, "alice", None).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], 400);
}

#[tokio::test]
async fn a_private_collection_answers_only_with_a_token_that_may_read_it() {
    let hub = SeededHub::start().await;
    let bytes = pseudo_random_bytes(120_000, 7);
    let hex = hub
        .publish(
            ("carol", "secret", true),
            "Singularity",
            ("secret", "latest"),
            &bytes,
        )
        .await;
    let owner = hub.user_token("carol", TokenScope::Read, None).await;
    let stranger = hub.user_token("dave", TokenScope::Admin, None).await;

    for token in [None, Some(stranger.as_str())] {
        for reference in ["carol/secret".to_owned(), format!("carol/secret@{hex}")] {
            let (status, body) = shub(&hub, &reference, token).await;
            assert_not_found(status, &body, &format!("{reference} with {token:?}"));
        }
    }

    let (status, answer) = shub(&hub, "carol/secret", Some(&owner)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, expected(&hub, "carol/secret", "latest", &hex));
    download_matches_version(&answer, Some(&owner), &bytes).await;
    let (status, _) = shub(&hub, &format!("carol/secret@{hex}"), Some(&owner)).await;
    assert_eq!(status, 200);

    // Tokens that no longer work are refused outright.
    let expiring = hub
        .user_token("carol", TokenScope::Read, Some(Duration::from_millis(1)))
        .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (status, body) = shub(&hub, "carol/secret", Some(&expiring)).await;
    assert_eq!(status, 401, "expired token: {body}");
    let revoked = hub.user_token("carol", TokenScope::Read, None).await;
    assert!(hub
        .db
        .revoke_token(hub.token_id(&revoked).await, Timestamp::now())
        .await
        .unwrap());
    let (status, body) = shub(&hub, "carol/secret", Some(&revoked)).await;
    assert_eq!(status, 401, "revoked token: {body}");
    let (status, body) = shub(&hub, "carol/secret", Some("sift_not-a-token")).await;
    assert_eq!(status, 401, "unknown token: {body}");
}
