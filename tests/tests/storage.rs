//! Object storage on a local folder and on a real S3-compatible server
//! (`s3s-fs`), the same test body for both: objects written, read (whole and
//! by range) and deleted; identical images stored once; no partial object
//! ever visible under its key, whether the body fails, does not match its
//! digest or size, or the process dies mid-upload. Promoting a worker's
//! upload to its image key publishes verified bytes only, and removes the
//! upload; on S3 such uploads arrive through a signed `PUT` URL, which a
//! local folder does not hand out.

use std::path::Path;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::{stream, StreamExt as _, TryStreamExt as _};
use sifhub::storage::{Expected, Storage, StorageError, StorageKey};
use sifhub_tests::s3::S3Server;
use sifhub_tests::{pseudo_random_bytes, sha256_hex};

/// `data` as a body of uneven chunks.
fn body(data: &[u8]) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let chunks: Vec<Result<Bytes, std::io::Error>> = data
        .chunks(3 * 1024 * 1024 + 17)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    stream::iter(chunks)
}

async fn read_all(
    storage: &Storage,
    key: &StorageKey,
    range: Option<std::ops::Range<u64>>,
) -> Vec<u8> {
    let chunks: Vec<Bytes> = storage
        .get(key, range)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    chunks.concat()
}

/// The test body both backends run.
async fn exercise(storage: &Storage) {
    // Larger than one multipart part (16 MiB), so several parts are sent.
    let image = pseudo_random_bytes(20 * 1024 * 1024 + 5, 1);
    let hex = sha256_hex(&image);
    let key = StorageKey::image(&hex).unwrap();
    assert_eq!(storage.head(&key).await.unwrap(), None);

    let stored = storage
        .put_stream(
            &key,
            body(&image),
            Expected {
                sha256_hex: None,
                size: Some(image.len() as u64),
            },
        )
        .await
        .unwrap();
    assert_eq!(stored.sha256_hex, hex);
    assert_eq!(stored.size, image.len() as u64);
    assert!(!stored.already_present);

    let info = storage.head(&key).await.unwrap().unwrap();
    assert_eq!(info.size, image.len() as u64);
    assert!(
        read_all(storage, &key, None).await == image,
        "whole object differs"
    );
    for range in [
        0..1,
        5..1000,
        16 * 1024 * 1024 - 3..16 * 1024 * 1024 + 9,
        image.len() as u64 - 7..image.len() as u64,
    ] {
        let got = read_all(storage, &key, Some(range.clone())).await;
        assert!(
            got == image[range.start as usize..range.end as usize],
            "range {range:?} differs"
        );
    }

    // Identical bytes again, from a file: verified, not rewritten.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("image.sif");
    std::fs::write(&file, &image).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = storage
        .put_file(&key, &file, Expected::default())
        .await
        .unwrap();
    assert!(again.already_present);
    assert_eq!(again.sha256_hex, hex);
    assert_eq!(
        storage.head(&key).await.unwrap(),
        Some(info.clone()),
        "object rewritten"
    );

    // Identical digest key but different bytes: refused, the object kept.
    let wrong = pseudo_random_bytes(4096, 2);
    let err = storage
        .put_stream(&key, body(&wrong), Expected::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::DigestMismatch { .. }), "{err}");
    assert_eq!(storage.head(&key).await.unwrap(), Some(info));

    // A body that fails after a part went out: nothing under the key.
    let other = pseudo_random_bytes(18 * 1024 * 1024, 3);
    let other_key = StorageKey::image(&sha256_hex(&other)).unwrap();
    let failing = body(&other[..17 * 1024 * 1024]).chain(stream::iter([Err(
        std::io::Error::other("client went away"),
    )]));
    let err = storage
        .put_stream(&other_key, failing, Expected::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Body { .. }), "{err}");
    assert_eq!(storage.head(&other_key).await.unwrap(), None);

    // A body that does not match the digest of its key: nothing stored.
    let err = storage
        .put_stream(&other_key, body(&other[1..]), Expected::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::DigestMismatch { .. }), "{err}");
    assert_eq!(storage.head(&other_key).await.unwrap(), None);

    // Sizes that do not match, shorter and longer: nothing stored.
    for size in [other.len() as u64 + 1, other.len() as u64 - 1] {
        let err = storage
            .put_stream(
                &other_key,
                body(&other),
                Expected {
                    sha256_hex: None,
                    size: Some(size),
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::SizeMismatch { .. }), "{err}");
        assert_eq!(storage.head(&other_key).await.unwrap(), None);
    }
    // An expected digest other than the key's is refused before reading.
    let err = storage
        .put_stream(
            &other_key,
            body(&other),
            Expected {
                sha256_hex: Some(hex.clone()),
                size: None,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::DigestMismatch { .. }), "{err}");

    // Empty objects work (an image cannot be, but a log can).
    let log = StorageKey::build_log(7);
    storage.put_bytes(&log, Bytes::new()).await.unwrap();
    assert_eq!(storage.get_bytes(&log).await.unwrap(), Bytes::new());
    storage
        .put_bytes(&log, Bytes::from_static(b"step 1\n"))
        .await
        .unwrap();
    storage
        .put_bytes(&log, Bytes::from_static(b"step 1\nstep 2\n"))
        .await
        .unwrap();
    assert_eq!(
        &storage.get_bytes(&log).await.unwrap()[..],
        b"step 1\nstep 2\n"
    );
    assert_eq!(storage.head(&log).await.unwrap().unwrap().size, 14);

    // A log streamed in is checked against what the caller expects too.
    let streamed_log = StorageKey::build_log(8);
    let text = b"hello log\n";
    let err = storage
        .put_stream(
            &streamed_log,
            body(text),
            Expected {
                sha256_hex: Some(sha256_hex(b"something else")),
                size: None,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::DigestMismatch { .. }), "{err}");
    assert_eq!(storage.head(&streamed_log).await.unwrap(), None);
    let stored = storage
        .put_stream(&streamed_log, body(text), Expected::default())
        .await
        .unwrap();
    assert_eq!(stored.sha256_hex, sha256_hex(text));
    assert_eq!(&storage.get_bytes(&streamed_log).await.unwrap()[..], text);

    // Deleting: gone, and deleting again is fine.
    storage.delete(&log).await.unwrap();
    assert_eq!(storage.head(&log).await.unwrap(), None);
    storage.delete(&log).await.unwrap();
    assert!(matches!(
        storage.get_bytes(&log).await.unwrap_err(),
        StorageError::NotFound { .. }
    ));
    assert!(matches!(
        storage.get(&log, None).await.err().unwrap(),
        StorageError::NotFound { .. }
    ));
    storage.delete(&key).await.unwrap();
    assert_eq!(storage.head(&key).await.unwrap(), None);
}

#[test]
fn keys_cannot_escape_their_folder() {
    for bad in [
        "../x",
        "../../etc/passwd",
        "",
        "sha256:abc",
        &"A".repeat(64),
    ] {
        assert!(
            matches!(
                StorageKey::image(bad),
                Err(StorageError::InvalidDigest { .. })
            ),
            "{bad:?} accepted"
        );
    }
    assert!(matches!(
        Storage::open("file://relative/path"),
        Err(StorageError::UnsupportedUrl { .. })
    ));
    assert!(matches!(
        Storage::open("ftp://host/x"),
        Err(StorageError::UnsupportedUrl { .. })
    ));
}

/// The promotion body both backends run: `upload` stores bytes under an
/// upload key as a worker would.
async fn exercise_promote<F, Fut>(storage: &Storage, upload: F)
where
    F: Fn(StorageKey, Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    // Larger than one multipart part, so the promotion sends several.
    let image = pseudo_random_bytes(17 * 1024 * 1024 + 3, 11);
    let hex = sha256_hex(&image);
    let key = StorageKey::image(&hex).unwrap();
    let exact = Expected {
        sha256_hex: Some(hex.clone()),
        size: Some(image.len() as u64),
    };

    // Wrong bytes: nothing published, the upload removed.
    let first = StorageKey::upload(1, 1);
    upload(first.clone(), pseudo_random_bytes(image.len(), 12)).await;
    assert!(storage.head(&first).await.unwrap().is_some());
    let err = storage
        .promote(&first, &key, exact.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::DigestMismatch { .. }), "{err}");
    assert_eq!(storage.head(&key).await.unwrap(), None);
    assert_eq!(storage.head(&first).await.unwrap(), None);

    // The right bytes but a size other than announced: the same.
    let second = StorageKey::upload(1, 2);
    upload(second.clone(), image.clone()).await;
    let err = storage
        .promote(
            &second,
            &key,
            Expected {
                sha256_hex: Some(hex.clone()),
                size: Some(image.len() as u64 + 1),
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::SizeMismatch { .. }), "{err}");
    assert_eq!(storage.head(&key).await.unwrap(), None);
    assert_eq!(storage.head(&second).await.unwrap(), None);

    // No upload at all: not found, nothing published.
    let err = storage
        .promote(&second, &key, exact.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::NotFound { .. }), "{err}");
    assert_eq!(storage.head(&key).await.unwrap(), None);

    // The right bytes: published under the image key, the upload removed.
    let third = StorageKey::upload(2, 1);
    upload(third.clone(), image.clone()).await;
    let stored = storage.promote(&third, &key, exact.clone()).await.unwrap();
    assert_eq!(stored.sha256_hex, hex);
    assert_eq!(stored.size, image.len() as u64);
    assert!(!stored.already_present);
    assert!(read_all(storage, &key, None).await == image);
    assert_eq!(storage.head(&third).await.unwrap(), None);

    // The same image uploaded again by another build: verified, kept once.
    let fourth = StorageKey::upload(3, 1);
    upload(fourth.clone(), image.clone()).await;
    let again = storage.promote(&fourth, &key, exact).await.unwrap();
    assert!(again.already_present);
    assert_eq!(storage.head(&fourth).await.unwrap(), None);
    storage.delete(&key).await.unwrap();
}

/// Every file under `root`, relative to it.
fn files_under(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut folders = vec![root.to_owned()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else {
                found.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn local_folder() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("storage");
    let storage = Storage::open(&format!("file://{}", root.display())).unwrap();
    assert!(storage.describe().contains(&root.display().to_string()));
    exercise(&storage).await;
    // Failed uploads left no staging files behind.
    assert_eq!(files_under(&root), ["logs/8.log"]);
    assert_eq!(
        storage
            .signed_download_url(&StorageKey::build_log(8), Duration::from_secs(60))
            .await
            .unwrap(),
        None
    );
    // Uploads go through the hub here: no signed upload URL.
    assert_eq!(
        storage
            .signed_upload_url(&StorageKey::upload(1, 1), Duration::from_secs(60))
            .await
            .unwrap(),
        None
    );
    exercise_promote(&storage, |key, bytes| {
        let storage = storage.clone();
        async move { storage.put_bytes(&key, bytes.into()).await.unwrap() }
    })
    .await;
    assert_eq!(files_under(&root), ["logs/8.log"]);
}

/// On S3 a worker's upload arrives through a signed `PUT` URL, holding no
/// credentials, and the hub promotes it to its image key.
#[tokio::test(flavor = "multi_thread")]
async fn s3_signed_uploads_are_promoted_only_when_verified() {
    let server = S3Server::start();
    let env = server.env().into_iter().map(|(k, v)| (k.to_owned(), v));
    let storage = Storage::open_with_env(&server.storage_url("hub"), env).unwrap();
    let http = reqwest::Client::new();
    exercise_promote(&storage, |key, bytes| {
        let (storage, http) = (storage.clone(), http.clone());
        async move {
            let url = storage
                .signed_upload_url(&key, Duration::from_secs(600))
                .await
                .unwrap()
                .unwrap();
            assert!(!url.contains(sifhub_tests::s3::SECRET_KEY), "{url}");
            let response = http.put(&url).body(bytes).send().await.unwrap();
            assert!(
                response.status().is_success(),
                "{}: {}",
                response.status(),
                response.text().await.unwrap()
            );
        }
    })
    .await;
    let files: Vec<String> = server
        .files()
        .into_iter()
        .filter(|f| !f.starts_with(".") && !f.contains("/."))
        .collect();
    assert!(files.is_empty(), "{files:?}\n{}", server.log());

    // A signed upload URL is for its key alone and writes nothing unsigned.
    let url = storage
        .signed_upload_url(&StorageKey::upload(9, 1), Duration::from_secs(600))
        .await
        .unwrap()
        .unwrap();
    let elsewhere = url.replace("uploads/9-1.sif", "images/sha256/evil.sif");
    let response = http.put(&elsewhere).body("x").send().await.unwrap();
    assert_eq!(response.status().as_u16(), 403);
    let unsigned = format!("{}/sifhub-test/hub/uploads/9-1.sif", server.endpoint());
    let response = http.put(&unsigned).body("x").send().await.unwrap();
    assert_eq!(response.status().as_u16(), 403);
    assert!(server
        .files()
        .iter()
        .all(|f| f.starts_with(".") || f.contains("/.")));
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_compatible_server() {
    let server = S3Server::start();
    let env = server.env().into_iter().map(|(k, v)| (k.to_owned(), v));
    let storage = Storage::open_with_env(&server.storage_url("hub/prefix"), env).unwrap();
    let described = storage.describe();
    assert!(
        described.contains("s3://sifhub-test/hub/prefix/"),
        "{described}"
    );
    assert!(
        !described.contains(sifhub_tests::s3::SECRET_KEY),
        "{described}"
    );
    exercise(&storage).await;
    // Everything lives under the prefix.
    let files: Vec<String> = server
        .files()
        .into_iter()
        .filter(|f| !f.starts_with(".") && !f.contains("/."))
        .collect();
    assert_eq!(
        files,
        ["sifhub-test/hub/prefix/logs/8.log"],
        "{}",
        server.log()
    );

    // A signed URL downloads the object without credentials.
    let key = StorageKey::build_log(8);
    let url = storage
        .signed_download_url(&key, Duration::from_secs(600))
        .await
        .unwrap()
        .unwrap();
    let curl = sifhub_tests::system_tool("curl", "curl");
    let out = std::process::Command::new(&curl)
        .args(["-sS", "--fail", &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"hello log\n");
    let unsigned = format!("{}/sifhub-test/hub/prefix/logs/8.log", server.endpoint());
    let out = std::process::Command::new(&curl)
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", &unsigned])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "403");
}

/// A process that dies mid-upload (its upload never completed nor aborted,
/// as after SIGKILL) leaves nothing under the key, and the next open sweeps
/// its staging file once stale.
#[tokio::test(flavor = "multi_thread")]
async fn upload_cut_off_by_a_crash_leaves_nothing_visible() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("storage");
    let url = format!("file://{}", root.display());
    let storage = Storage::open(&url).unwrap();
    let data = pseudo_random_bytes(40 * 1024 * 1024, 4);
    let key = StorageKey::image(&sha256_hex(&data)).unwrap();

    // A body that delivers 33 MiB and then stalls for ever.
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    for chunk in data[..33 * 1024 * 1024].chunks(1024 * 1024) {
        sender
            .send(Ok(Bytes::copy_from_slice(chunk)))
            .await
            .unwrap();
    }
    let stalled = stream::unfold(receiver, |mut r| async {
        r.recv().await.map(|item| (item, r))
    });
    let mut upload = Box::pin(storage.put_stream(&key, stalled, Expected::default()));
    let started = tokio::time::timeout(Duration::from_secs(2), upload.as_mut()).await;
    assert!(started.is_err(), "upload finished without its body");
    // Parts reached the disk, but only in a staging file.
    let staged = files_under(&root);
    assert_eq!(staged.len(), 1, "{staged:?}");
    assert!(
        staged[0].starts_with(&format!("{}#", key.path())),
        "{staged:?}"
    );
    assert!(std::fs::metadata(root.join(&staged[0])).unwrap().len() >= 16 * 1024 * 1024);
    // Die: no completion, no abort, no cleanup.
    std::mem::forget(upload);
    std::mem::forget(sender);

    let restarted = Storage::open(&url).unwrap();
    assert_eq!(restarted.head(&key).await.unwrap(), None);
    assert!(matches!(
        restarted.get(&key, None).await.err().unwrap(),
        StorageError::NotFound { .. }
    ));
    // Fresh staging files may belong to a live upload: kept until stale.
    assert_eq!(files_under(&root), staged);
    let old = SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(root.join(&staged[0]))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let restarted = Storage::open(&url).unwrap();
    assert!(files_under(&root).is_empty(), "{:?}", files_under(&root));

    // And the image uploads normally afterwards.
    let stored = restarted
        .put_stream(&key, body(&data), Expected::default())
        .await
        .unwrap();
    assert!(!stored.already_present);
    assert!(read_all(&restarted, &key, None).await == data);
}
