//! Seeds a hub's database and storage with one image file, for the download
//! benchmark (bench/hub.sh): `bench_seed FILE OWNER/REPO CONTAINER TAG`,
//! with the hub's configuration from `SIFHUB_*`. Prints the image's hex digest.

use std::path::PathBuf;

use sha2::{Digest, Sha256};
use sifhub::config::Config;
use sifhub::db::{Db, NewImage, NewRepository, RepositorySettings, Timestamp};
use sifhub::storage::{Expected, Storage, StorageKey};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [file, full_name, container, tag] = args.as_slice() else {
        return Err("usage: bench_seed FILE OWNER/REPO CONTAINER TAG".into());
    };
    let (owner, name) = full_name.split_once('/').ok_or("expected OWNER/REPO")?;
    let file = PathBuf::from(file);
    let config = Config::load(None)?;
    std::fs::create_dir_all(config.storage_dir())?;
    let db = Db::connect(&config.resolved_database_url()).await?;
    let storage = Storage::open(&config.resolved_storage_url())?;

    let mut hasher = Sha256::new();
    std::io::copy(&mut std::fs::File::open(&file)?, &mut hasher)?;
    let hex = hex::encode(hasher.finalize());
    let size = std::fs::metadata(&file)?.len();
    let expected = Expected {
        sha256_hex: Some(hex.clone()),
        size: Some(size),
    };
    storage
        .put_file(&StorageKey::image(&hex)?, &file, expected)
        .await?;

    let now = Timestamp::now();
    let repo = match db.find_repository(owner, name).await? {
        Some(repo) => repo,
        None => {
            let new = NewRepository {
                github_id: None,
                owner: owner.to_owned(),
                name: name.to_owned(),
                default_branch: "main".to_owned(),
                installation_id: None,
                settings: RepositorySettings::default(),
            };
            db.insert_repository(&new, now).await?
        }
    };
    let image = NewImage {
        digest: format!("sha256:{hex}"),
        size,
        repository_id: Some(repo.id),
        ..NewImage::default()
    };
    let image = db.insert_image(&image, now).await?.image;
    let container = db.upsert_container(repo.id, container, now).await?;
    db.set_tag(container.id, tag, image.id, now).await?;
    println!("{hex}");
    Ok(())
}
