//! OCI distribution (`oras://`) of a running `sifhub serve`, its images
//! published through the worker protocol, read with skopeo (the real
//! containers/image client) and with plain HTTP: manifests shaped as
//! apptainer's `push oras://` writes them, by tag and by digest, for root
//! and sub-folder containers; `skopeo copy` giving the SIF byte for byte
//! as the layer; blob ranges; tag lists with pagination; `HEAD`; the
//! distribution spec's error bodies; the token flow for a private
//! repository (skopeo `--creds`); and pushes with a push token (skopeo
//! copying a SIF layout as apptainer's `push oras://` writes it, a chunked
//! upload by hand, refusals of wrong digests, missing layers, read-only
//! and foreign tokens, leaving nothing behind). The lookups behind it run
//! on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod seeded_hub;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{json, Value};
use sifhub::db::{
    hash_token, Db, NewImage, NewRepository, NewToken, NewUser, RepositorySettings, Timestamp,
    TokenScope,
};
use sifhub_tests::postgres::both_backends;
use sifhub_tests::{pseudo_random_bytes, sha256_hex};

use seeded_hub::SeededHub;

const EMPTY_CONFIG_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

fn skopeo(args: &[&str]) -> Output {
    let skopeo = sifhub_tests::system_tool("skopeo", "skopeo");
    let dir = tempfile::tempdir().unwrap();
    // No stray credentials or policy from the machine: accept anything,
    // with an empty auth file.
    let policy = dir.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    let auth = dir.path().join("auth.json");
    std::fs::write(&auth, "{}").unwrap();
    let mut command = Command::new(skopeo);
    command
        .arg("--policy")
        .arg(&policy)
        .args(args)
        .env("REGISTRY_AUTH_FILE", &auth)
        .env("HOME", dir.path());
    command.output().unwrap()
}

fn skopeo_ok(args: &[&str]) -> String {
    let out = skopeo(args);
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `skopeo inspect --raw` of `docker://HOST/<reference>`.
fn inspect_raw(hub: &SeededHub, reference: &str, creds: Option<&str>) -> Output {
    let image = format!("docker://{}/{reference}", hub.host());
    let mut args = vec!["inspect", "--raw", "--tls-verify=false"];
    if let Some(creds) = creds {
        args.extend(["--creds", creds]);
    }
    args.push(&image);
    skopeo(&args)
}

/// `skopeo copy` of `docker://HOST/<reference>` into an OCI layout in
/// `dir`; returns the bytes of the one layer's blob.
fn copy_layer(hub: &SeededHub, reference: &str, creds: Option<&str>, dir: &Path) -> Vec<u8> {
    let source = format!("docker://{}/{reference}", hub.host());
    let destination = format!("oci:{}:copied", dir.display());
    let mut args = vec!["copy", "--src-tls-verify=false"];
    if let Some(creds) = creds {
        args.extend(["--src-creds", creds]);
    }
    args.extend([source.as_str(), destination.as_str()]);
    skopeo_ok(&args);
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(
            dir.join("blobs/sha256")
                .join(manifest_digest.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{manifest}");
    std::fs::read(
        dir.join("blobs/sha256").join(
            layers[0]["digest"]
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:"),
        ),
    )
    .unwrap()
}

/// `(status, headers, body)` of one request.
async fn http(
    method: reqwest::Method,
    url: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut request = reqwest::Client::new().request(method, url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.unwrap().to_vec();
    (status, headers, body)
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {headers:?}"))
        .to_str()
        .unwrap()
}

/// Checks a distribution-spec error body: `{"errors":[{"code":…}]}`.
fn assert_error(status: u16, body: &[u8], want_status: u16, code: &str) {
    let text = String::from_utf8_lossy(body);
    assert_eq!(status, want_status, "{text}");
    let body: Value = serde_json::from_slice(body).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(body["errors"][0]["code"], code, "{body}");
    assert!(body["errors"][0]["message"].is_string(), "{body}");
}

/// Checks the manifest apptainer's `pull oras://` accepts: one SIF layer
/// of `hex` titled `title`, the SIF config.
fn assert_sif_manifest(manifest: &Value, hex: &str, size: usize, title: &str) {
    assert_eq!(manifest["schemaVersion"], 2, "{manifest}");
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        manifest["config"],
        json!({
            "mediaType": "application/vnd.sylabs.sif.config.v1+json",
            "size": 2,
            "digest": EMPTY_CONFIG_DIGEST,
            "data": "e30=",
        })
    );
    assert_eq!(
        manifest["layers"],
        json!([{
            "mediaType": "application/vnd.sylabs.sif.layer.v1.sif",
            "size": size,
            "digest": format!("sha256:{hex}"),
            "annotations": {"org.opencontainers.image.title": title},
        }])
    );
    assert!(
        manifest["annotations"]["org.opencontainers.image.created"].is_string(),
        "{manifest}"
    );
}

#[tokio::test]
async fn skopeo_pulls_sif_manifests_and_layers_from_public_containers() {
    let hub = SeededHub::start().await;
    let root = pseudo_random_bytes(180_000, 11);
    let samtools_1 = pseudo_random_bytes(90_000, 12);
    let samtools_2 = pseudo_random_bytes(95_000, 13);
    let root_hex = hub
        .publish(
            ("alice", "tools", false),
            "Singularity",
            ("tools", "latest"),
            &root,
        )
        .await;
    let s1_hex = hub
        .publish(
            ("alice", "tools", false),
            "samtools/Singularity.1.2",
            ("samtools", "1.2"),
            &samtools_1,
        )
        .await;
    let s2_hex = hub
        .publish(
            ("alice", "tools", false),
            "samtools/Singularity.2.0",
            ("samtools", "2.0"),
            &samtools_2,
        )
        .await;
    let v2 = format!("{}/v2", hub.url());

    // skopeo: manifests of the sub-folder and the root container.
    let out = inspect_raw(&hub, "alice/tools/samtools:1.2", None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_sif_manifest(&manifest, &s1_hex, samtools_1.len(), "samtools_1.2.sif");
    let out = inspect_raw(&hub, "alice/tools:latest", None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_sif_manifest(&manifest, &root_hex, root.len(), "tools_latest.sif");

    // skopeo copy: the layer is the SIF, byte for byte.
    let dir = tempfile::tempdir().unwrap();
    let layer = copy_layer(&hub, "alice/tools/samtools:2.0", None, dir.path());
    assert_eq!(sha256_hex(&layer), s2_hex);
    assert_eq!(layer, samtools_2);

    // The manifest over HTTP: its digest header, the same bytes by digest,
    // HEAD with the length and no body.
    let (status, headers, by_tag) = http(
        reqwest::Method::GET,
        &format!("{v2}/alice/tools/samtools/manifests/1.2"),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-type"),
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        header(&headers, "docker-distribution-api-version"),
        "registry/2.0"
    );
    let digest = header(&headers, "docker-content-digest").to_owned();
    assert_eq!(digest, format!("sha256:{}", sha256_hex(&by_tag)));
    let (status, headers, by_digest) = http(
        reqwest::Method::GET,
        &format!("{v2}/alice/tools/samtools/manifests/{digest}"),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(by_digest, by_tag, "the manifest is the same every time");
    assert_eq!(header(&headers, "docker-content-digest"), digest);
    let (status, headers, body) = http(
        reqwest::Method::HEAD,
        &format!("{v2}/alice/tools/samtools/manifests/1.2"),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.is_empty());
    assert_eq!(header(&headers, "content-length"), by_tag.len().to_string());
    assert_eq!(header(&headers, "docker-content-digest"), digest);

    // Blobs: the config, a range of the layer, HEAD of the layer.
    let blobs = format!("{v2}/alice/tools/samtools/blobs");
    let (status, headers, body) = http(
        reqwest::Method::GET,
        &format!("{blobs}/{EMPTY_CONFIG_DIGEST}"),
        &[],
    )
    .await;
    assert_eq!((status, body.as_slice()), (200, b"{}".as_slice()));
    assert_eq!(
        header(&headers, "docker-content-digest"),
        EMPTY_CONFIG_DIGEST
    );
    let (status, headers, body) = http(
        reqwest::Method::GET,
        &format!("{blobs}/sha256:{s1_hex}"),
        &[("Range", "bytes=1000-1999")],
    )
    .await;
    assert_eq!(status, 206);
    assert_eq!(body, samtools_1[1000..2000]);
    assert_eq!(
        header(&headers, "content-range"),
        format!("bytes 1000-1999/{}", samtools_1.len())
    );
    assert_eq!(
        header(&headers, "docker-content-digest"),
        format!("sha256:{s1_hex}")
    );
    let (status, headers, body) = http(
        reqwest::Method::HEAD,
        &format!("{blobs}/sha256:{s1_hex}"),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.is_empty());
    assert_eq!(
        header(&headers, "content-length"),
        samtools_1.len().to_string()
    );

    // Tags, a page at a time.
    let (status, headers, body) = http(
        reqwest::Method::GET,
        &format!("{v2}/alice/tools/samtools/tags/list?n=1"),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    let page: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        page,
        json!({"name": "alice/tools/samtools", "tags": ["1.2"]})
    );
    let link = header(&headers, "link");
    let next = link
        .strip_prefix('<')
        .and_then(|rest| rest.split_once(">; rel=\"next\""))
        .map(|(url, _)| url)
        .unwrap_or_else(|| panic!("bad link {link:?}"));
    let (status, headers, body) =
        http(reqwest::Method::GET, &format!("{}{next}", hub.url()), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"name": "alice/tools/samtools", "tags": ["2.0"]})
    );
    assert!(headers.get("link").is_none(), "{headers:?}");
    let (_, _, body) = http(
        reqwest::Method::GET,
        &format!("{v2}/alice/tools/tags/list"),
        &[],
    )
    .await;
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"name": "alice/tools", "tags": ["latest"]})
    );

    // Errors as the distribution spec writes them.
    let (status, _, body) = http(
        reqwest::Method::GET,
        &format!("{v2}/alice/tools/samtools/manifests/9.9"),
        &[],
    )
    .await;
    assert_error(status, &body, 404, "MANIFEST_UNKNOWN");
    let (status, _, body) = http(
        reqwest::Method::GET,
        &format!(
            "{v2}/alice/tools/samtools/manifests/sha256:{}",
            "0".repeat(64)
        ),
        &[],
    )
    .await;
    assert_error(status, &body, 404, "MANIFEST_UNKNOWN");
    // Another container's image is no blob of this one.
    let (status, _, body) = http(
        reqwest::Method::GET,
        &format!("{blobs}/sha256:{root_hex}"),
        &[],
    )
    .await;
    assert_error(status, &body, 404, "BLOB_UNKNOWN");
    let (status, _, body) = http(reqwest::Method::GET, &format!("{blobs}/sha256:abc"), &[]).await;
    assert_error(status, &body, 400, "DIGEST_INVALID");
    let (status, _, body) = http(
        reqwest::Method::HEAD,
        &format!("{v2}/alice/tools/samtools/manifests/9.9"),
        &[],
    )
    .await;
    assert_eq!((status, body.len()), (404, 0));
    // Deletes are not offered; pushes without credentials get the challenge.
    let (status, _, body) = http(
        reqwest::Method::DELETE,
        &format!("{v2}/alice/tools/samtools/manifests/1.2"),
        &[],
    )
    .await;
    assert_error(status, &body, 405, "UNSUPPORTED");
    let (status, headers, body) = http(
        reqwest::Method::POST,
        &format!("{v2}/alice/tools/samtools/blobs/uploads/"),
        &[],
    )
    .await;
    assert_error(status, &body, 401, "UNAUTHORIZED");
    assert!(
        header(&headers, "www-authenticate")
            .ends_with(",scope=\"repository:alice/tools/samtools:pull,push\""),
        "{headers:?}"
    );

    // The ping: a challenge without credentials (clients learn the token
    // realm from it), 200 with the anonymous token.
    let (status, headers, body) = http(reqwest::Method::GET, &format!("{v2}/"), &[]).await;
    assert_error(status, &body, 401, "UNAUTHORIZED");
    assert_eq!(
        header(&headers, "www-authenticate"),
        format!(
            "Bearer realm=\"{}/v2/token\",service=\"{}\"",
            hub.url(),
            hub.host()
        )
    );
    let (status, _, body) = http(reqwest::Method::GET, &format!("{v2}/token"), &[]).await;
    assert_eq!(status, 200);
    let anonymous: Value = serde_json::from_slice(&body).unwrap();
    // No OAuth2 form: a 404 sends go-containerregistry back to the GET.
    let (status, _, _) = http(reqwest::Method::POST, &format!("{v2}/token"), &[]).await;
    assert_eq!(status, 404);
    let bearer = format!("Bearer {}", anonymous["token"].as_str().unwrap());
    assert_eq!(anonymous["access_token"], anonymous["token"]);
    let (status, _, body) = http(
        reqwest::Method::GET,
        &format!("{v2}/"),
        &[("Authorization", &bearer)],
    )
    .await;
    assert_eq!((status, body.as_slice()), (200, b"{}".as_slice()));
}

#[tokio::test]
async fn a_private_repository_needs_the_token_dance() {
    let hub = SeededHub::start().await;
    let bytes = pseudo_random_bytes(100_000, 21);
    let hex = hub
        .publish(
            ("carol", "secret", true),
            "Singularity",
            ("secret", "v1"),
            &bytes,
        )
        .await;
    let owner = hub.user_token("carol", TokenScope::Read, None).await;
    let stranger = hub.user_token("dave", TokenScope::Read, None).await;
    let v2 = format!("{}/v2", hub.url());

    // Without credentials skopeo is told to authenticate, as for a
    // repository that does not exist; a stranger's token finds nothing.
    for reference in ["carol/secret:v1", "carol/missing:v1"] {
        let out = inspect_raw(&hub, reference, None);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("authentication required"), "{stderr}");
    }
    let out = inspect_raw(&hub, "carol/secret:v1", Some(&format!("dave:{stranger}")));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not found"), "{stderr}");

    // With the owner's API token as the password: the manifest and the SIF.
    let creds = format!("carol:{owner}");
    let out = inspect_raw(&hub, "carol/secret:v1", Some(&creds));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_sif_manifest(&manifest, &hex, bytes.len(), "secret_v1.sif");
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        copy_layer(&hub, "carol/secret:v1", Some(&creds), dir.path()),
        bytes
    );

    // The token endpoint by hand: a short-lived read token, stored as an
    // API token that expires, which opens the manifest as a Bearer.
    let basic = format!(
        "Basic {}",
        sifhub_tests::registry::base64(format!("carol:{owner}").as_bytes())
    );
    let before = Timestamp::now();
    let (status, _, body) = http(
        reqwest::Method::GET,
        &format!(
            "{v2}/token?service={}&scope=repository:carol/secret:pull",
            hub.host()
        ),
        &[("Authorization", &basic)],
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer: Value = serde_json::from_slice(&body).unwrap();
    let token = answer["token"].as_str().unwrap().to_owned();
    assert_eq!(answer["access_token"], answer["token"]);
    assert_eq!(answer["expires_in"], 300);
    assert_ne!(token, owner);
    let row = hub
        .db
        .find_token_by_hash(&hash_token(&token), Timestamp::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.scope, TokenScope::Read);
    let expires = row.expires_at.unwrap().unix_millis();
    assert!(
        expires
            <= Timestamp::now()
                .plus(Duration::from_secs(300))
                .unix_millis()
    );
    assert!(expires >= before.plus(Duration::from_secs(299)).unix_millis());
    let manifest_url = format!("{v2}/carol/secret/manifests/v1");
    let (status, _, _) = http(
        reqwest::Method::GET,
        &manifest_url,
        &[("Authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(status, 200);

    // A push scope is not granted to a read token.
    let (_, _, body) = http(
        reqwest::Method::GET,
        &format!("{v2}/token?scope=repository:carol/secret:pull,push"),
        &[("Authorization", &basic)],
    )
    .await;
    let answer: Value = serde_json::from_slice(&body).unwrap();
    let row = hub
        .db
        .find_token_by_hash(
            &hash_token(answer["token"].as_str().unwrap()),
            Timestamp::now(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.scope, TokenScope::Read);

    // The anonymous token reads nothing private: a challenge naming the scope.
    let (status, headers, body) = http(
        reqwest::Method::GET,
        &manifest_url,
        &[("Authorization", "Bearer anonymous")],
    )
    .await;
    assert_error(status, &body, 401, "UNAUTHORIZED");
    assert!(
        header(&headers, "www-authenticate").ends_with(",scope=\"repository:carol/secret:pull\""),
        "{headers:?}"
    );
    // A stranger's token: not found, as if it did not exist.
    let (status, _, body) = http(
        reqwest::Method::GET,
        &manifest_url,
        &[("Authorization", &format!("Bearer {stranger}"))],
    )
    .await;
    assert_error(status, &body, 404, "NAME_UNKNOWN");

    // Expired and revoked credentials get 401, at the token endpoint too.
    let expiring = hub
        .user_token("carol", TokenScope::Read, Some(Duration::from_millis(1)))
        .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let revoked = hub.user_token("carol", TokenScope::Read, None).await;
    hub.db
        .revoke_token(hub.token_id(&revoked).await, Timestamp::now())
        .await
        .unwrap();
    for dead in [&expiring, &revoked] {
        let (status, _, body) = http(
            reqwest::Method::GET,
            &manifest_url,
            &[("Authorization", &format!("Bearer {dead}"))],
        )
        .await;
        assert_error(status, &body, 401, "UNAUTHORIZED");
        let basic = format!(
            "Basic {}",
            sifhub_tests::registry::base64(format!("carol:{dead}").as_bytes())
        );
        let (status, _, body) = http(
            reqwest::Method::GET,
            &format!("{v2}/token?scope=repository:carol/secret:pull"),
            &[("Authorization", &basic)],
        )
        .await;
        assert_error(status, &body, 401, "UNAUTHORIZED");
    }
}

/// Writes an OCI layout in `dir` holding, as `ref_name`, the SIF
/// manifest apptainer's `push oras://` makes for `sif` (file `title`).
fn write_sif_layout(dir: &Path, sif: &[u8], title: &str, ref_name: &str) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let hex = sha256_hex(sif);
    std::fs::write(blobs.join(&hex), sif).unwrap();
    std::fs::write(
        blobs.join(EMPTY_CONFIG_DIGEST.trim_start_matches("sha256:")),
        "{}",
    )
    .unwrap();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.sylabs.sif.config.v1+json",
            "size": 2,
            "digest": EMPTY_CONFIG_DIGEST,
            "data": "e30=",
        },
        "layers": [{
            "mediaType": "application/vnd.sylabs.sif.layer.v1.sif",
            "size": sif.len(),
            "digest": format!("sha256:{hex}"),
            "annotations": {"org.opencontainers.image.title": title},
        }],
        "annotations": {"org.opencontainers.image.created": "2026-01-02T03:04:05Z"},
    }))
    .unwrap();
    let manifest_hex = sha256_hex(&manifest);
    std::fs::write(blobs.join(&manifest_hex), &manifest).unwrap();
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": format!("sha256:{manifest_hex}"),
                "size": manifest.len(),
                "annotations": {"org.opencontainers.image.ref.name": ref_name},
            }],
        }))
        .unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// `skopeo copy` of the layout in `dir` to `docker://HOST/<reference>`.
fn push_layout(hub: &SeededHub, dir: &Path, reference: &str, creds: Option<&str>) -> Output {
    let source = format!("oci:{}:v1", dir.display());
    let destination = format!("docker://{}/{reference}", hub.host());
    let mut args = vec!["copy", "--dest-tls-verify=false"];
    if let Some(creds) = creds {
        args.extend(["--dest-creds", creds]);
    }
    args.extend([source.as_str(), destination.as_str()]);
    skopeo(&args)
}

#[tokio::test]
async fn a_push_token_pushes_sif_images_whole_and_in_chunks() {
    let hub = SeededHub::start().await;
    let built = pseudo_random_bytes(50_000, 30);
    hub.publish(
        ("alice", "tools", false),
        "Singularity",
        ("tools", "latest"),
        &built,
    )
    .await;
    let pusher = hub.user_token("alice", TokenScope::Push, None).await;
    let reader = hub.user_token("alice", TokenScope::Read, None).await;
    let stranger = hub.user_token("dave", TokenScope::Push, None).await;
    let storage = sifhub::storage::Storage::open(&format!(
        "file://{}",
        hub.hub.data_dir().join("storage").display()
    ))
    .unwrap();
    let stored = |hex: String| {
        let storage = storage.clone();
        async move {
            storage
                .head(&sifhub::storage::StorageKey::image(&hex).unwrap())
                .await
                .unwrap()
                .is_some()
        }
    };

    // skopeo pushes a SIF layout as apptainer's `push oras://` writes it.
    let sif = pseudo_random_bytes(150_000, 31);
    let hex = sha256_hex(&sif);
    let layout = tempfile::tempdir().unwrap();
    write_sif_layout(layout.path(), &sif, "mine.sif", "v1");
    for (creds, refusal) in [
        (None, "authentication required"),
        (Some(format!("alice:{reader}")), "may not push"),
        (Some(format!("dave:{stranger}")), "may not push"),
    ] {
        let out = push_layout(
            &hub,
            layout.path(),
            "alice/tools/pushed:v1",
            creds.as_deref(),
        );
        assert!(!out.status.success(), "{creds:?} pushed");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(refusal), "{creds:?}: {stderr}");
    }
    assert!(
        !stored(hex.clone()).await,
        "a refused push stored its layer"
    );
    let out = push_layout(
        &hub,
        layout.path(),
        "alice/tools/pushed:v1",
        Some(&format!("alice:{pusher}")),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // It pulls back as the hub's SIF manifest, the layer byte for byte,
    // and is recorded as pushed.
    let out = inspect_raw(&hub, "alice/tools/pushed:v1", None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_sif_manifest(&manifest, &hex, sif.len(), "pushed_v1.sif");
    let pulled = tempfile::tempdir().unwrap();
    assert_eq!(
        copy_layer(&hub, "alice/tools/pushed:v1", None, pulled.path()),
        sif
    );
    let image = hub
        .db
        .find_image_by_digest(&format!("sha256:{hex}"))
        .await
        .unwrap()
        .unwrap();
    assert!(image.pushed);
    assert_eq!(image.commit_sha, None);

    // By hand: a chunked upload, then the manifest.
    let v2 = format!("{}/v2", hub.url());
    let auth = format!("Bearer {pusher}");
    let chunked = pseudo_random_bytes(70_001, 32);
    let chunked_hex = sha256_hex(&chunked);
    let client = reqwest::Client::new();
    let started = client
        .post(format!("{v2}/alice/tools/chunked/blobs/uploads/"))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 202);
    let location = header(started.headers(), "location").to_owned();
    let mut sent = 0;
    for part in chunked.chunks(30_000) {
        let patched = client
            .patch(format!("{}{location}", hub.url()))
            .header("Authorization", &auth)
            .body(part.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(patched.status(), 202);
        sent += part.len();
        assert_eq!(
            header(patched.headers(), "range"),
            format!("0-{}", sent - 1)
        );
    }
    let finished = client
        .put(format!(
            "{}{location}?digest=sha256:{chunked_hex}",
            hub.url()
        ))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(finished.status(), 201);
    assert_eq!(
        header(finished.headers(), "docker-content-digest"),
        format!("sha256:{chunked_hex}")
    );
    let sif_manifest = |digest: &str, size: usize, layers: usize| {
        let layer = json!({
            "mediaType": "application/vnd.sylabs.sif.layer.v1.sif",
            "size": size,
            "digest": digest,
        });
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.sylabs.sif.config.v1+json",
                "size": 2,
                "digest": EMPTY_CONFIG_DIGEST,
            },
            "layers": vec![layer; layers],
        }))
        .unwrap()
    };
    let put = client
        .put(format!("{v2}/alice/tools/chunked/manifests/c1"))
        .header("Authorization", &auth)
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .body(sif_manifest(
            &format!("sha256:{chunked_hex}"),
            chunked.len(),
            1,
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let pushed_digest = header(put.headers(), "docker-content-digest").to_owned();
    let (status, headers, _) = http(
        reqwest::Method::GET,
        &format!("{v2}/alice/tools/chunked/manifests/c1"),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "docker-content-digest"), pushed_digest);
    let (status, _, body) = http(
        reqwest::Method::GET,
        &format!("{v2}/alice/tools/chunked/blobs/sha256:{chunked_hex}"),
        &[],
    )
    .await;
    assert_eq!((status, body == chunked), (200, true));

    // A whole blob in one POST.
    let whole = pseudo_random_bytes(20_000, 34);
    let posted = client
        .post(format!(
            "{v2}/alice/tools/chunked/blobs/uploads/?digest=sha256:{}",
            sha256_hex(&whole)
        ))
        .header("Authorization", &auth)
        .body(whole.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 201);
    assert!(stored(sha256_hex(&whole)).await);

    // Bytes that do not match their digest are refused and kept nowhere.
    let wrong = pseudo_random_bytes(10_000, 33);
    let (status, _, body) = http(
        reqwest::Method::POST,
        &format!(
            "{v2}/alice/tools/chunked/blobs/uploads/?digest=sha256:{}",
            sha256_hex(b"something else")
        ),
        &[("Authorization", &auth)],
    )
    .await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let refused = client
        .post(format!(
            "{v2}/alice/tools/chunked/blobs/uploads/?digest=sha256:{}",
            sha256_hex(b"something else")
        ))
        .header("Authorization", &auth)
        .body(wrong.clone())
        .send()
        .await
        .unwrap();
    let status = refused.status().as_u16();
    assert_error(
        status,
        &refused.bytes().await.unwrap(),
        400,
        "DIGEST_INVALID",
    );
    assert!(!stored(sha256_hex(&wrong)).await);
    assert!(!stored(sha256_hex(b"something else")).await);
    let leftovers: Vec<_> = std::fs::read_dir(hub.hub.data_dir().join("oci-uploads"))
        .unwrap()
        .collect();
    assert!(leftovers.is_empty(), "uploads left behind: {leftovers:?}");

    // Manifests naming missing layers, or not one SIF layer, are refused.
    for (manifest, code) in [
        (
            sif_manifest(&format!("sha256:{}", "0".repeat(64)), 5, 1),
            "MANIFEST_BLOB_UNKNOWN",
        ),
        (
            sif_manifest(&format!("sha256:{chunked_hex}"), chunked.len() + 1, 1),
            "MANIFEST_BLOB_UNKNOWN",
        ),
        (
            sif_manifest(&format!("sha256:{chunked_hex}"), chunked.len(), 2),
            "MANIFEST_INVALID",
        ),
    ] {
        let refused = client
            .put(format!("{v2}/alice/tools/chunked/manifests/c2"))
            .header("Authorization", &auth)
            .body(manifest)
            .send()
            .await
            .unwrap();
        let status = refused.status().as_u16();
        assert_error(status, &refused.bytes().await.unwrap(), 400, code);
    }
    let (status, _, body) = http(
        reqwest::Method::GET,
        &format!("{v2}/alice/tools/chunked/manifests/c2"),
        &[],
    )
    .await;
    assert_error(status, &body, 404, "MANIFEST_UNKNOWN");
}

/// The container lookups and registry-token upkeep, on both backends.
#[tokio::test]
async fn container_lookups_on_both_backends() {
    for database in both_backends("oci_lookups") {
        let backend = database.backend;
        let db = Db::connect(&database.url).await.unwrap();
        let now = Timestamp::now();
        let repository = db
            .insert_repository(
                &NewRepository {
                    github_id: None,
                    owner: "alice".to_owned(),
                    name: "tools".to_owned(),
                    default_branch: "main".to_owned(),
                    installation_id: None,
                    settings: RepositorySettings::default(),
                },
                now,
            )
            .await
            .unwrap();
        let container = db
            .upsert_container(repository.id, "tools", now)
            .await
            .unwrap();
        let other = db
            .upsert_container(repository.id, "other", now)
            .await
            .unwrap();
        let mut images = Vec::new();
        for seed in 0..3u8 {
            let stored = db
                .insert_image(
                    &NewImage {
                        digest: format!("sha256:{}", sha256_hex(&[seed])),
                        size: 10,
                        sif_metadata: json!({}),
                        ..Default::default()
                    },
                    now,
                )
                .await
                .unwrap();
            images.push(stored.image);
        }
        // latest: image 0 then image 1; v1: image 0; other:x image 2.
        let t = |ms| now.plus(Duration::from_millis(ms));
        db.set_tag(container.id, "latest", images[0].id, t(1))
            .await
            .unwrap();
        db.set_tag(container.id, "v1", images[0].id, t(2))
            .await
            .unwrap();
        db.set_tag(container.id, "latest", images[1].id, t(3))
            .await
            .unwrap();
        db.set_tag(other.id, "x", images[2].id, t(4)).await.unwrap();
        db.upsert_tag(container.id, "empty", t(5)).await.unwrap();

        // Image 0 is named by v1 now, by latest before: v1 wins.
        let found = db
            .find_container_image_by_digest(container.id, &images[0].digest, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (found.tag.as_str(), found.image.id),
            ("v1", images[0].id),
            "{backend}"
        );
        let found = db
            .find_container_image_by_digest(container.id, &images[0].digest, Some("latest"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.tag, "latest", "{backend}");
        assert!(db
            .find_container_image_by_digest(container.id, &images[1].digest, Some("v1"))
            .await
            .unwrap()
            .is_none());
        assert!(db
            .find_container_image_by_digest(container.id, &images[2].digest, None)
            .await
            .unwrap()
            .is_none());

        let pairs: Vec<(String, i64)> = db
            .container_tagged_images(container.id, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|pair| (pair.tag, pair.image.id))
            .collect();
        assert_eq!(
            pairs,
            [
                ("latest".to_owned(), images[1].id),
                ("v1".to_owned(), images[0].id),
                ("latest".to_owned(), images[0].id),
            ],
            "{backend}"
        );
        assert_eq!(
            db.container_tagged_images(container.id, 1)
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            db.container_tag_names(container.id).await.unwrap(),
            ["latest", "v1"],
            "{backend}"
        );

        // Only the user's expired tokens of that name go.
        let user = db
            .upsert_user(
                &NewUser {
                    github_id: 1,
                    login: "alice".to_owned(),
                    name: None,
                    avatar_url: None,
                },
                now,
            )
            .await
            .unwrap();
        for (hash, name, expires) in [
            (
                "a",
                "oci registry token",
                Some(now.minus(Duration::from_secs(1))),
            ),
            (
                "b",
                "oci registry token",
                Some(now.plus(Duration::from_secs(60))),
            ),
            ("c", "laptop", Some(now.minus(Duration::from_secs(1)))),
            ("d", "oci registry token", None),
        ] {
            db.insert_token(
                &NewToken {
                    token_hash: hash.to_owned(),
                    user_id: Some(user.id),
                    name: name.to_owned(),
                    scope: TokenScope::Read,
                    expires_at: expires,
                },
                now,
            )
            .await
            .unwrap();
        }
        let deleted = db
            .delete_expired_tokens_named(user.id, "oci registry token", now)
            .await
            .unwrap();
        assert_eq!(deleted, 1, "{backend}");
        let mut left: Vec<String> = db
            .list_user_tokens(user.id)
            .await
            .unwrap()
            .into_iter()
            .map(|token| token.token_hash)
            .collect();
        left.sort();
        assert_eq!(left, ["b", "c", "d"], "{backend}");
    }
}
