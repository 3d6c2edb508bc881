//! Downloads from a running `sifhub serve`: an image put in its database
//! and storage through the library, then fetched with curl by digest and by
//! tag, whole, by range, resumed (`curl -C -`), conditionally; unknown and
//! private images answer 404; with S3 storage the hub redirects to a signed
//! URL. The lookups behind it run on SQLite and PostgreSQL.

use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sifhub::access::{Via, Viewer, ViewerUser};
use sifhub::db::{
    Db, NewImage, NewRepository, NewUser, Permission, RepositorySettings, Timestamp, TokenScope,
};
use sifhub::storage::{Expected, Storage, StorageKey};
use sifhub_tests::postgres::both_backends;
use sifhub_tests::s3::S3Server;
use sifhub_tests::{pseudo_random_bytes, sha256_hex};

struct Hub {
    child: Child,
    addr: String,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `sifhub serve` on a free port with `data_dir` and `env`.
fn start_hub(data_dir: &Path, env: &[(&str, String)]) -> Hub {
    let mut command = Command::new(sifhub_tests::sifhub_bin());
    command
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("SIFHUB_LISTEN", "127.0.0.1:0")
        .env("SIFHUB_DATA_DIR", data_dir)
        .env("SIFHUB_WORKER_SLOTS", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut hub = Hub {
        child: command.spawn().unwrap(),
        addr: String::new(),
    };
    let stdout = hub.child.stdout.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lines = Vec::new();
    let mut reader = BufReader::new(stdout);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            panic!("serve exited early: {lines:?}");
        }
        if let Some(rest) = line.split("listening on ").nth(1) {
            let addr = rest.split(';').next().unwrap().trim().to_owned();
            // Keep draining the log so the hub never blocks on a full pipe.
            std::thread::spawn(move || for _ in reader.lines() {});
            lines.push(line);
            assert!(
                lines.iter().any(|l| l.contains("storage: ")),
                "no storage line: {lines:?}"
            );
            hub.addr = addr;
            return hub;
        }
        lines.push(line);
        assert!(
            Instant::now() < deadline,
            "no 'listening on' line: {lines:?}"
        );
    }
}

/// Records `owner/repo` (public or not) with `container:tag` naming an
/// image of `bytes`, stored in `storage`. Returns the image's hex digest.
async fn publish(
    db: &Db,
    storage: &Storage,
    (owner, repo, private): (&str, &str, bool),
    (container, tag): (&str, &str),
    bytes: &[u8],
) -> String {
    let now = Timestamp::now();
    let repository = match db.find_repository(owner, repo).await.unwrap() {
        Some(repository) => repository,
        None => db
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
    let container = db
        .upsert_container(repository.id, container, now)
        .await
        .unwrap();
    let hex = sha256_hex(bytes);
    storage
        .put_stream(
            &StorageKey::image(&hex).unwrap(),
            futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(
                bytes,
            ))]),
            Expected::default(),
        )
        .await
        .unwrap();
    let image = db
        .insert_image(
            &NewImage {
                digest: format!("sha256:{hex}"),
                size: bytes.len() as u64,
                sif_metadata: serde_json::json!({}),
                repository_id: Some(repository.id),
                ..Default::default()
            },
            now,
        )
        .await
        .unwrap();
    db.set_tag(container.id, tag, image.image.id, now)
        .await
        .unwrap();
    hex
}

fn curl() -> PathBuf {
    sifhub_tests::system_tool("curl", "curl")
}

fn run_curl(args: &[&str]) -> Output {
    let out = Command::new(curl()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `(status, headers lower-cased, body)` of a request with extra headers.
fn request(method: &str, url: &str, headers: &[&str]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let header_file = dir.path().join("headers");
    let body_file = dir.path().join("body");
    let mut args = vec![
        "-sS".to_owned(),
        "-X".to_owned(),
        method.to_owned(),
        "-D".to_owned(),
        header_file.display().to_string(),
        "-o".to_owned(),
        body_file.display().to_string(),
    ];
    if method == "HEAD" {
        // curl -I writes the headers where the body would go: no -o.
        args = vec![
            "-sS".to_owned(),
            "-I".to_owned(),
            "-D".to_owned(),
            header_file.display().to_string(),
            "-o".to_owned(),
            "/dev/null".to_owned(),
        ];
    }
    for header in headers {
        args.push("-H".to_owned());
        args.push((*header).to_owned());
    }
    args.push(url.to_owned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_curl(&args);
    let raw = std::fs::read_to_string(&header_file).unwrap();
    let mut lines = raw.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (
        status,
        headers,
        std::fs::read(&body_file).unwrap_or_default(),
    )
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test(flavor = "multi_thread")]
async fn downloads_from_a_local_folder() {
    let data = tempfile::tempdir().unwrap();
    let hub = start_hub(data.path(), &[]);
    let db = Db::connect(&format!(
        "sqlite://{}",
        data.path().join("sifhub.db").display()
    ))
    .await
    .unwrap();
    let storage =
        Storage::open(&format!("file://{}", data.path().join("storage").display())).unwrap();
    let image = pseudo_random_bytes(3 * 1024 * 1024 + 123, 1);
    let hex = publish(
        &db,
        &storage,
        ("Alice", "Tools", false),
        ("lolcow", "latest"),
        &image,
    )
    .await;
    let secret = pseudo_random_bytes(1000, 2);
    let secret_hex = publish(
        &db,
        &storage,
        ("alice", "private", true),
        ("hidden", "v1"),
        &secret,
    )
    .await;
    let base = format!("http://{}", hub.addr);
    let by_digest = format!("{base}/download/sha256/{hex}");
    let size = image.len();

    // Whole image, by digest and by tag (owner and repo in any case, tag
    // optional), with its headers.
    for url in [
        by_digest.clone(),
        format!("{base}/download/alice/tools/lolcow:latest"),
        format!("{base}/download/ALICE/tools/lolcow"),
    ] {
        let (status, headers, body) = request("GET", &url, &[]);
        assert_eq!(status, 200, "{url}");
        assert_eq!(sha256_hex(&body), hex, "{url}");
        assert_eq!(
            header(&headers, "content-length"),
            Some(size.to_string().as_str())
        );
        assert_eq!(
            header(&headers, "etag"),
            Some(format!("\"sha256:{hex}\"").as_str())
        );
        assert_eq!(header(&headers, "accept-ranges"), Some("bytes"));
        assert_eq!(
            header(&headers, "content-type"),
            Some("application/octet-stream")
        );
        assert!(header(&headers, "last-modified").is_some());
    }
    let (_, headers, _) = request("GET", &format!("{base}/download/alice/tools/lolcow"), &[]);
    assert_eq!(
        header(&headers, "content-disposition"),
        Some("attachment; filename=\"lolcow_latest.sif\"")
    );
    let (_, headers, _) = request("GET", &by_digest, &[]);
    assert_eq!(
        header(&headers, "content-disposition"),
        Some(format!("attachment; filename=\"{hex}.sif\"").as_str())
    );

    // HEAD: the same headers, no body.
    let (status, headers, _) = request("HEAD", &by_digest, &[]);
    assert_eq!(status, 200);
    let mut stream = std::net::TcpStream::connect(&hub.addr).unwrap();
    write!(
        stream,
        "HEAD /download/sha256/{hex} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        hub.addr
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    assert!(raw.ends_with("\r\n\r\n"), "HEAD sent a body: {raw}");
    assert_eq!(
        header(&headers, "content-length"),
        Some(size.to_string().as_str())
    );
    assert_eq!(
        header(&headers, "etag"),
        Some(format!("\"sha256:{hex}\"").as_str())
    );
    let last_modified = header(&headers, "last-modified").unwrap().to_owned();

    // Ranges.
    for (range, expected, content_range) in [
        ("bytes=0-99", &image[..100], format!("bytes 0-99/{size}")),
        (
            "bytes=1000000-",
            &image[1_000_000..],
            format!("bytes 1000000-{}/{size}", size - 1),
        ),
        (
            "bytes=-500",
            &image[size - 500..],
            format!("bytes {}-{}/{size}", size - 500, size - 1),
        ),
        (
            "bytes=10-99999999",
            &image[10..],
            format!("bytes 10-{}/{size}", size - 1),
        ),
    ] {
        let (status, headers, body) = request("GET", &by_digest, &[&format!("Range: {range}")]);
        assert_eq!(status, 206, "{range}");
        assert!(body == expected, "{range}: wrong bytes");
        assert_eq!(
            header(&headers, "content-range"),
            Some(content_range.as_str()),
            "{range}"
        );
        assert_eq!(
            header(&headers, "content-length"),
            Some(expected.len().to_string().as_str())
        );
    }
    // Unsatisfiable.
    let (status, headers, _) = request("GET", &by_digest, &[&format!("Range: bytes={size}-")]);
    assert_eq!(status, 416);
    assert_eq!(
        header(&headers, "content-range"),
        Some(format!("bytes */{size}").as_str())
    );
    // Several ranges: the whole image.
    let (status, _, body) = request("GET", &by_digest, &["Range: bytes=0-1,5-6"]);
    assert_eq!(status, 200);
    assert_eq!(body.len(), size);
    // If-Range: a matching validator gets the range, another the whole image.
    let etag = format!("\"sha256:{hex}\"");
    let (status, _, _) = request(
        "GET",
        &by_digest,
        &["Range: bytes=0-9", &format!("If-Range: {etag}")],
    );
    assert_eq!(status, 206);
    let (status, _, _) = request(
        "GET",
        &by_digest,
        &["Range: bytes=0-9", &format!("If-Range: {last_modified}")],
    );
    assert_eq!(status, 206);
    let (status, _, body) = request(
        "GET",
        &by_digest,
        &["Range: bytes=0-9", "If-Range: \"sha256:other\""],
    );
    assert_eq!(status, 200);
    assert_eq!(body.len(), size);
    // If-None-Match.
    let (status, headers, body) = request("GET", &by_digest, &[&format!("If-None-Match: {etag}")]);
    assert_eq!(status, 304);
    assert!(body.is_empty());
    assert_eq!(header(&headers, "etag"), Some(etag.as_str()));
    let (status, _, _) = request("GET", &by_digest, &["If-None-Match: \"sha256:other\""]);
    assert_eq!(status, 200);

    // `curl -C -` resumes a partial download to the right bytes.
    let dir = tempfile::tempdir().unwrap();
    let partial = dir.path().join("lolcow.sif");
    std::fs::write(&partial, &image[..1_234_567]).unwrap();
    run_curl(&[
        "-sS",
        "--fail",
        "-C",
        "-",
        "-o",
        partial.to_str().unwrap(),
        &by_digest,
    ]);
    assert_eq!(sha256_hex(&std::fs::read(&partial).unwrap()), hex);

    // Unknown, malformed and private: 404.
    for path in [
        format!("/download/sha256/{}", "0".repeat(64)),
        "/download/sha256/..%2F..%2Fetc%2Fpasswd".to_owned(),
        "/download/sha256/xyz".to_owned(),
        "/download/alice/tools/lolcow:nosuchtag".to_owned(),
        "/download/alice/tools/nosuch".to_owned(),
        "/download/nobody/tools/lolcow".to_owned(),
        "/download/alice/private/hidden:v1".to_owned(),
        format!("/download/sha256/{secret_hex}"),
    ] {
        let (status, _, body) = request("GET", &format!("{base}{path}"), &[]);
        assert_eq!(status, 404, "{path}");
        assert!(!body.is_empty() && body.len() < 200, "{path}: {body:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_downloads_redirect_to_a_signed_url() {
    let server = S3Server::start();
    let data = tempfile::tempdir().unwrap();
    let mut env: Vec<(&str, String)> = server.env();
    let url = server.storage_url("hub");
    env.push(("SIFHUB_STORAGE_URL", url.clone()));
    let hub = start_hub(data.path(), &env);
    let db = Db::connect(&format!(
        "sqlite://{}",
        data.path().join("sifhub.db").display()
    ))
    .await
    .unwrap();
    let aws_env = server.env().into_iter().map(|(k, v)| (k.to_owned(), v));
    let storage = Storage::open_with_env(&url, aws_env).unwrap();
    let image = pseudo_random_bytes(2 * 1024 * 1024 + 1, 3);
    let hex = publish(
        &db,
        &storage,
        ("bob", "images", false),
        ("tools", "v2"),
        &image,
    )
    .await;
    let base = format!("http://{}", hub.addr);

    for url in [
        format!("{base}/download/sha256/{hex}"),
        format!("{base}/download/bob/images/tools:v2"),
    ] {
        let (status, headers, _) = request("GET", &url, &[]);
        assert_eq!(status, 307, "{url}");
        let location = header(&headers, "location").unwrap();
        assert!(location.starts_with(server.endpoint()), "{location}");
        assert!(location.contains("X-Amz-Signature="), "{location}");
        assert!(location.contains("X-Amz-Expires=43200"), "{location}");
        let out = run_curl(&["-sS", "--fail", "-L", &url]);
        assert_eq!(sha256_hex(&out.stdout), hex, "{url}");
        // A range follows the redirect to the bucket.
        let out = run_curl(&["-sS", "--fail", "-L", "-r", "100-199", &url]);
        assert!(out.stdout == image[100..200], "{url}");
    }
    // HEAD is answered by the hub itself.
    let (status, headers, _) = request("HEAD", &format!("{base}/download/sha256/{hex}"), &[]);
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-length"),
        Some(image.len().to_string().as_str())
    );
    let (status, _, _) = request(
        "GET",
        &format!("{base}/download/sha256/{}", "1".repeat(64)),
        &[],
    );
    assert_eq!(status, 404);
}

/// The catalog lookups downloads rely on, on both databases: tags resolve
/// to images case-insensitively on owner and repo only, private
/// repositories stay hidden, and a digest is served when a public
/// repository built or tagged it.
#[tokio::test(flavor = "multi_thread")]
async fn lookups_on_both_backends() {
    for database in both_backends("download_lookups") {
        let db = Db::connect(&database.url).await.unwrap();
        let backend = database.backend;
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(&format!("file://{}", dir.path().display())).unwrap();
        let public = publish(
            &db,
            &storage,
            ("Carol", "Pub", false),
            ("app", "1.0"),
            b"public bytes",
        )
        .await;
        let private = publish(
            &db,
            &storage,
            ("carol", "priv", true),
            ("app", "1.0"),
            b"private bytes",
        )
        .await;

        let anonymous = Viewer::anonymous();
        let found = db
            .find_readable_tagged_image(&anonymous, "carol", "PUB", "app", "1.0")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.digest, format!("sha256:{public}"), "{backend}");
        for (owner, repo, container, tag) in [
            ("carol", "pub", "APP", "1.0"),
            ("carol", "pub", "app", "2.0"),
            ("carol", "priv", "app", "1.0"),
            ("dave", "pub", "app", "1.0"),
        ] {
            assert_eq!(
                db.find_readable_tagged_image(&anonymous, owner, repo, container, tag)
                    .await
                    .unwrap(),
                None,
                "{backend}: {owner}/{repo}/{container}:{tag}"
            );
        }
        assert!(db
            .find_readable_image_by_digest(&anonymous, &format!("sha256:{public}"))
            .await
            .unwrap()
            .is_some());
        assert_eq!(
            db.find_readable_image_by_digest(&anonymous, &format!("sha256:{private}"))
                .await
                .unwrap(),
            None,
            "{backend}"
        );
        // The owner (by login, any case) and a member see the private
        // image; another signed-in user and a worker token do not.
        let now = Timestamp::now();
        let mut viewers = Vec::new();
        for (github_id, login) in [(1, "CAROL"), (2, "erin"), (3, "frank")] {
            let user = db
                .upsert_user(
                    &NewUser {
                        github_id,
                        login: login.to_owned(),
                        name: None,
                        avatar_url: None,
                    },
                    now,
                )
                .await
                .unwrap();
            viewers.push(Viewer {
                user: Some(ViewerUser {
                    id: user.id,
                    login: user.login,
                }),
                via: Via::Session,
            });
        }
        let priv_repo = db.find_repository("carol", "priv").await.unwrap().unwrap();
        db.set_memberships(
            viewers[1].user_id().unwrap(),
            &[(priv_repo.id, Permission::Read)],
            now,
        )
        .await
        .unwrap();
        let worker = Viewer {
            user: None,
            via: Via::Token {
                id: 1,
                scope: TokenScope::Worker,
            },
        };
        for (viewer, sees) in [
            (&viewers[0], true),
            (&viewers[1], true),
            (&viewers[2], false),
            (&worker, false),
        ] {
            let tagged = db
                .find_readable_tagged_image(viewer, "carol", "priv", "app", "1.0")
                .await
                .unwrap();
            let by_digest = db
                .find_readable_image_by_digest(viewer, &format!("sha256:{private}"))
                .await
                .unwrap();
            assert_eq!(tagged.is_some(), sees, "{backend}: {viewer:?}");
            assert_eq!(by_digest.is_some(), sees, "{backend}: {viewer:?}");
        }
        // Permissions: the owner administers, the member reads, a read
        // token of the owner reads only, the stranger gets nothing.
        assert_eq!(
            db.permission(&viewers[0], &priv_repo).await.unwrap(),
            Some(Permission::Admin)
        );
        assert_eq!(
            db.permission(&viewers[1], &priv_repo).await.unwrap(),
            Some(Permission::Read)
        );
        let owner_read_token = Viewer {
            user: viewers[0].user.clone(),
            via: Via::Token {
                id: 2,
                scope: TokenScope::Read,
            },
        };
        assert_eq!(
            db.permission(&owner_read_token, &priv_repo).await.unwrap(),
            Some(Permission::Read)
        );
        assert_eq!(db.permission(&viewers[2], &priv_repo).await.unwrap(), None);
        assert!(db
            .readable_repository(&viewers[2], "carol", "priv")
            .await
            .unwrap()
            .is_none());
        assert!(db
            .readable_repository(&viewers[1], "Carol", "Priv")
            .await
            .unwrap()
            .is_some());
        // The private image tagged in a public repository too: served.
        publish(
            &db,
            &storage,
            ("carol", "pub", false),
            ("copy", "latest"),
            b"private bytes",
        )
        .await;
        assert!(
            db.find_readable_image_by_digest(&anonymous, &format!("sha256:{private}"))
                .await
                .unwrap()
                .is_some(),
            "{backend}"
        );
    }
}
