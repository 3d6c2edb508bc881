//! The hub's database on both backends: every test body runs on a SQLite
//! file and on a throwaway PostgreSQL database.

use std::future::Future;
use std::time::Duration;

use sifhub::db::{
    hash_token, Db, DbError, NewImage, NewRepository, NewToken, NewUser, RepositorySettings,
    Timestamp, TokenScope,
};
use sifhub_tests::postgres::both_backends;

const T0: Timestamp = Timestamp::from_unix_millis(1_700_000_000_000);

/// Runs `body` on a migrated SQLite database, then on a PostgreSQL one.
async fn on_both<F, Fut>(test: &str, body: F)
where
    F: Fn(Db) -> Fut,
    Fut: Future<Output = ()>,
{
    for database in both_backends(test) {
        eprintln!("--- {test} on {database:?}");
        let db = Db::connect(&database.url)
            .await
            .unwrap_or_else(|e| panic!("connect to {database:?}: {e:?}"));
        body(db.clone()).await;
        db.close().await;
    }
}

fn digest(byte: char) -> String {
    format!("sha256:{}", byte.to_string().repeat(64))
}

async fn repository(db: &Db) -> i64 {
    db.insert_repository(
        &NewRepository {
            github_id: Some(42),
            owner: "Lab".into(),
            name: "Containers".into(),
            default_branch: "main".into(),
            installation_id: None,
            settings: RepositorySettings {
                build_branches: vec!["main".into(), "dev".into()],
                private: false,
                paused: false,
                webhook_secret: Some("s3cret".into()),
            },
        },
        T0,
    )
    .await
    .unwrap()
    .id
}

#[tokio::test]
async fn migrations_apply_once_and_reapply_as_no_ops() {
    for database in both_backends("migrations") {
        let db = Db::open(&database.url).await.unwrap();
        let applied = db.migrate().await.unwrap();
        assert_eq!(applied, db.known_migrations(), "{database:?}");
        assert_eq!(applied[0].version, 1);
        assert_eq!(applied[0].description, "initial");
        assert!(db.migrate().await.unwrap().is_empty(), "{database:?}");
        db.close().await;
        // A second hub starting on the same database migrates nothing.
        let again = Db::connect(&database.url).await.unwrap();
        assert!(again.migrate().await.unwrap().is_empty(), "{database:?}");
        assert_eq!(again.find_delivery("none").await.unwrap(), None);
        again.close().await;
    }
}

#[tokio::test]
async fn sqlite_runs_in_wal_mode_with_foreign_keys() {
    let database = sifhub_tests::postgres::sqlite_database();
    let db = Db::connect(&database.url).await.unwrap();
    // A recipe of a repository that does not exist violates a foreign key.
    let err = db
        .upsert_recipe(999, "Singularity", "x", "latest", T0)
        .await
        .unwrap_err();
    assert!(matches!(err, DbError::Query { .. }), "{err:?}");
    db.close().await;
    // The file header records WAL mode: file format versions 2 at bytes 18 and 19.
    let path = database.url.trim_start_matches("sqlite://");
    let header = std::fs::read(path).unwrap();
    assert_eq!(
        &header[18..20],
        &[2, 2],
        "sqlite database at {path} is not in WAL mode"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delivery_sent_twice_is_recorded_once() {
    on_both("deliveries", |db| async move {
        assert!(db.record_delivery("d-1", "push", T0).await.unwrap());
        assert!(!db.record_delivery("d-1", "push", T0).await.unwrap());
        assert!(db.record_delivery("d-2", "ping", T0).await.unwrap());
        assert!(db
            .set_delivery_outcome("d-1", "queued 2 builds")
            .await
            .unwrap());
        let delivery = db.find_delivery("d-1").await.unwrap().unwrap();
        assert_eq!(delivery.event, "push");
        assert_eq!(delivery.outcome.as_deref(), Some("queued 2 builds"));

        // Eight concurrent requests carrying one id: exactly one is new.
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let db = db.clone();
                tokio::spawn(async move { db.record_delivery("d-race", "push", T0).await.unwrap() })
            })
            .collect();
        let mut new = 0;
        for task in tasks {
            new += usize::from(task.await.unwrap());
        }
        assert_eq!(new, 1);
    })
    .await;
}

#[tokio::test]
async fn identical_images_are_stored_once() {
    on_both("image_dedupe", |db| async move {
        let repo = repository(&db).await;
        let first = NewImage {
            digest: digest('a'),
            size: 4096,
            sif_metadata: serde_json::json!({"labels": {"org.label-schema.build-arch": "amd64"}}),
            repository_id: Some(repo),
            commit_sha: Some("0123abcd".into()),
            recipe_path: Some("Singularity".into()),
            base_image_digest: Some(digest('b')),
            builder_version: Some("0.1.0".into()),
            pushed: false,
        };
        let stored = db.insert_image(&first, T0).await.unwrap();
        assert!(stored.inserted);
        assert_eq!(stored.image.sif_metadata, first.sif_metadata);
        assert_eq!(stored.image.size, 4096);

        // The same bytes from another build: the first record stands.
        let again = NewImage {
            commit_sha: Some("ffff0000".into()),
            ..first.clone()
        };
        let stored_again = db.insert_image(&again, T0).await.unwrap();
        assert!(!stored_again.inserted);
        assert_eq!(stored_again.image, stored.image);
        assert_eq!(stored_again.image.commit_sha.as_deref(), Some("0123abcd"));

        let by_digest = db
            .find_image_by_digest(&digest('a'))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(by_digest.id, stored.image.id);

        let bad = NewImage {
            digest: "sha256:XYZ".into(),
            ..first
        };
        let err = db.insert_image(&bad, T0).await.unwrap_err();
        assert!(err.to_string().contains("sha256:XYZ"), "{err}");
    })
    .await;
}

#[tokio::test]
async fn a_retagged_tag_keeps_its_history() {
    on_both("tag_history", |db| async move {
        let repo = repository(&db).await;
        let recipe = db
            .upsert_recipe(repo, "envs/tools/Singularity.v2", "tools", "v2", T0)
            .await
            .unwrap();
        assert_eq!(recipe.container_name, "tools");
        let image = |c| {
            let db = db.clone();
            async move {
                let new = NewImage {
                    digest: digest(c),
                    size: 1,
                    ..NewImage::default()
                };
                db.insert_image(&new, T0).await.unwrap().image.id
            }
        };
        let (first, second) = (image('1').await, image('2').await);
        let t1 = T0.plus(Duration::from_secs(60));
        let t2 = T0.plus(Duration::from_secs(120));

        let set = db
            .set_tag(recipe.container_id, "v2", first, t1)
            .await
            .unwrap();
        assert!(set.moved);
        assert_eq!(set.previous_image_id, None);
        let same = db
            .set_tag(recipe.container_id, "v2", first, t1)
            .await
            .unwrap();
        assert!(!same.moved);
        let moved = db
            .set_tag(recipe.container_id, "v2", second, t2)
            .await
            .unwrap();
        assert!(moved.moved);
        assert_eq!(moved.previous_image_id, Some(first));
        assert_eq!(moved.tag.image_id, Some(second));

        let history = db.tag_history(moved.tag.id).await.unwrap();
        let summary: Vec<_> = history
            .iter()
            .map(|h| (h.image_id, h.valid_from, h.valid_to))
            .collect();
        assert_eq!(summary, vec![(second, t2, None), (first, t1, Some(t2))]);

        // A frozen tag keeps its image.
        assert!(db.set_tag_frozen(moved.tag.id, true, t2).await.unwrap());
        let err = db
            .set_tag(recipe.container_id, "v2", first, t2)
            .await
            .unwrap_err();
        assert!(
            matches!(err, DbError::TagFrozen { image_id, .. } if image_id == second),
            "{err:?}"
        );
        let tag = db
            .find_tag(recipe.container_id, "v2")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(tag.image_id, Some(second));
        assert_eq!(db.tag_history(tag.id).await.unwrap().len(), 2);
    })
    .await;
}

#[tokio::test]
async fn tokens_are_found_by_hash_unless_expired_or_revoked() {
    on_both("tokens", |db| async move {
        let user = db
            .upsert_user(
                &NewUser {
                    github_id: 7,
                    login: "ada".into(),
                    name: Some("Ada".into()),
                    avatar_url: None,
                },
                T0,
            )
            .await
            .unwrap();
        let token = |secret: &str, expires_at| NewToken {
            token_hash: hash_token(secret),
            user_id: Some(user.id),
            name: "laptop".into(),
            scope: TokenScope::Push,
            expires_at,
        };
        let later = T0.plus(Duration::from_secs(3600));
        let live = db
            .insert_token(&token("live-secret", None), T0)
            .await
            .unwrap();
        db.insert_token(&token("expiring-secret", Some(later)), T0)
            .await
            .unwrap();
        let revoked = db
            .insert_token(&token("revoked-secret", None), T0)
            .await
            .unwrap();
        assert!(db.revoke_token(revoked.id, T0).await.unwrap());
        assert!(!db.revoke_token(revoked.id, T0).await.unwrap());

        let found = db
            .find_token_by_hash(&hash_token("live-secret"), T0)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.id, live.id);
        assert_eq!(found.scope, TokenScope::Push);
        assert_eq!(found.token_hash, hash_token("live-secret"));
        assert!(
            db.find_token_by_hash("live-secret", T0)
                .await
                .unwrap()
                .is_none(),
            "the secret itself is not a key"
        );
        assert!(db
            .find_token_by_hash(&hash_token("revoked-secret"), T0)
            .await
            .unwrap()
            .is_none());
        assert!(db
            .find_token_by_hash(&hash_token("expiring-secret"), T0)
            .await
            .unwrap()
            .is_some());
        assert!(db
            .find_token_by_hash(&hash_token("expiring-secret"), later)
            .await
            .unwrap()
            .is_none());
        assert!(db
            .find_token_by_hash(&hash_token("unknown"), T0)
            .await
            .unwrap()
            .is_none());

        db.mark_token_used(live.id, later).await.unwrap();
        let listed = db.list_user_tokens(user.id).await.unwrap();
        assert_eq!(listed.len(), 3);
        assert_eq!(
            listed
                .iter()
                .find(|t| t.id == live.id)
                .unwrap()
                .last_used_at,
            Some(later)
        );
    })
    .await;
}

#[tokio::test]
async fn repositories_and_recipes_are_found_again() {
    on_both("repositories", |db| async move {
        let id = repository(&db).await;
        // GitHub names are case-insensitive.
        let repo = db
            .find_repository("lab", "containers")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(repo.id, id);
        assert_eq!(repo.full_name(), "Lab/Containers");
        assert_eq!(
            repo.build_branches,
            vec!["main".to_owned(), "dev".to_owned()]
        );
        assert!(repo.builds_branch("dev") && !repo.builds_branch("feature"));
        assert!(
            !format!("{repo:?}").contains("s3cret"),
            "the secret stays out of Debug"
        );
        assert_eq!(
            db.find_repository_by_github_id(42)
                .await
                .unwrap()
                .unwrap()
                .id,
            id
        );

        let dup = NewRepository {
            github_id: None,
            owner: "LAB".into(),
            name: "containers".into(),
            default_branch: "main".into(),
            installation_id: None,
            settings: RepositorySettings::default(),
        };
        let err = db.insert_repository(&dup, T0).await.unwrap_err();
        assert!(matches!(err, DbError::AlreadyExists { .. }), "{err:?}");

        let settings = RepositorySettings {
            paused: true,
            ..RepositorySettings::default()
        };
        let updated = db
            .update_repository_settings(id, &settings)
            .await
            .unwrap()
            .unwrap();
        assert!(updated.paused && updated.build_branches.is_empty());
        assert!(updated.builds_branch("main") && !updated.builds_branch("dev"));

        let recipe = db
            .upsert_recipe(id, "Singularity", "containers", "latest", T0)
            .await
            .unwrap();
        let again = db
            .upsert_recipe(
                id,
                "Singularity",
                "containers",
                "latest",
                T0.plus(Duration::from_secs(5)),
            )
            .await
            .unwrap();
        assert_eq!(again.id, recipe.id);
        assert_eq!(again.updated_at, T0, "an unchanged recipe keeps its time");
        assert_eq!(
            db.find_recipe(id, "Singularity").await.unwrap(),
            Some(recipe.clone())
        );
        assert_eq!(db.find_recipe_by_id(recipe.id).await.unwrap(), Some(recipe));

        let installation = db.upsert_installation(1001, "lab", T0).await.unwrap();
        assert_eq!(
            db.find_installation_by_github_id(1001).await.unwrap(),
            Some(installation)
        );
        assert!(db.delete_installation(1001, T0).await.unwrap());
        assert!(!db.delete_installation(1001, T0).await.unwrap());
    })
    .await;
}

#[test]
fn sifhub_migrate_prints_what_it_applied() {
    for database in both_backends("cli_migrate") {
        let run = || {
            let out = sifhub_tests::sifhub(["migrate", "--database-url", &database.url]);
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "sifhub migrate on {database:?} failed: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            stdout
        };
        let first = run();
        assert!(
            first.contains("applied 0001 initial"),
            "{database:?}: {first}"
        );
        let second = run();
        assert!(second.contains("up to date"), "{database:?}: {second}");
        assert!(!second.contains("applied 0001"), "{database:?}: {second}");
    }
}
