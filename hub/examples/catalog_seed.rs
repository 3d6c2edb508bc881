//! Seeds a fresh hub database with a catalog for the catalog benchmark
//! (bench/catalog.sh): `catalog_seed [COLLECTIONS]` (default 5,000), each
//! collection with 4 containers of 5 tags, so 20 images (100,000 in all),
//! with labels, recipes and one build per image (every tenth collection
//! also a newer failed build). The hub's configuration comes from
//! `SIFHUB_*`, as for `sifhub serve`.
//!
//! Bulk rows go in with multi-row INSERTs, a transaction per 100
//! collections; then each collection's last tag is set through
//! [`Db::set_tag`], so the catalog columns (last update, latest tag,
//! search text) are written by the hub's own code.

use std::time::Instant;

use sha2::{Digest as _, Sha256};
use sifhub::config::Config;
use sifhub::db::{Db, Timestamp};
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
use sqlx::AssertSqlSafe;

type Error = Box<dyn std::error::Error + Send + Sync>;

const CONTAINERS: [&str; 4] = ["base", "tools", "analysis", "report"];
const TAGS: [&str; 5] = ["1.0", "1.1", "2.0", "dev", "latest"];
const REPOS: [&str; 10] = [
    "rnaseq",
    "chipseq",
    "variant-calling",
    "assembly",
    "imaging",
    "md-sim",
    "qc",
    "annotation",
    "phylogeny",
    "proteomics",
];
const TOOLS: [&str; 25] = [
    "salmon",
    "star",
    "bwa",
    "gatk",
    "samtools",
    "bcftools",
    "fastqc",
    "multiqc",
    "trimmomatic",
    "cutadapt",
    "spades",
    "megahit",
    "prokka",
    "iqtree",
    "raxml",
    "gromacs",
    "namd",
    "fiji",
    "cellprofiler",
    "maxquant",
    "openms",
    "kraken2",
    "bowtie2",
    "hisat2",
    "deseq2",
];
const IMAGES_PER_COLLECTION: usize = CONTAINERS.len() * TAGS.len();
/// Collections per transaction.
const BATCH: usize = 100;
const DAY_MS: i64 = 86_400_000;

enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to either backend's pool.
macro_rules! on_pool {
    ($pool:expr, |$p:ident| $body:expr) => {
        match $pool {
            Pool::Sqlite($p) => $body,
            Pool::Postgres($p) => $body,
        }
    };
}

/// A SQL string literal.
fn text(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A small deterministic spread of `n` over `0..modulo`.
fn spread(n: usize, modulo: usize) -> usize {
    n.wrapping_mul(2_654_435_761) % modulo
}

/// The SQL inserting collections `first..last` (0-based), with ids
/// derived from their numbers.
fn batch_sql(first: usize, last: usize, now: i64) -> String {
    let mut repositories = Vec::new();
    let mut containers = Vec::new();
    let mut recipes = Vec::new();
    let mut images = Vec::new();
    let mut tags = Vec::new();
    let mut history = Vec::new();
    let mut builds = Vec::new();
    for r in first..last {
        let repo_id = r + 1;
        let owner = format!("lab-{:03}", r / REPOS.len());
        let name = REPOS[r % REPOS.len()];
        // Spread over 90 days, so "recently built" differs from "name".
        let built = now - DAY_MS * 90 + (spread(r, 90 * 24) as i64) * 3_600_000;
        repositories.push(format!(
            "({repo_id}, {}, {}, 'main', {})",
            text(&owner),
            text(name),
            built - DAY_MS
        ));
        for (c, container) in CONTAINERS.iter().enumerate() {
            let container_id = r * CONTAINERS.len() + c + 1;
            containers.push(format!(
                "({container_id}, {repo_id}, {}, {})",
                text(container),
                built - DAY_MS
            ));
            let tool = TOOLS[spread(r * 7 + c, TOOLS.len())];
            for (t, tag) in TAGS.iter().enumerate() {
                let k = c * TAGS.len() + t;
                let id = r * IMAGES_PER_COLLECTION + k + 1;
                let at = built - ((IMAGES_PER_COLLECTION - k) as i64) * 60_000;
                let path = format!("{container}/Singularity.{tag}");
                let sha = hex::encode(Sha256::digest(format!("image {id}")));
                let commit = &sha[..40];
                let metadata = serde_json::json!({
                    "labels": {
                        "org.label-schema.name": format!("{owner}/{name}/{container}"),
                        "maintainer": format!("{owner}@example.org"),
                        "description": format!("{tool} for {name}, {container} stage"),
                        "version": tag,
                    },
                    "header": { "arch": "amd64", "id": &sha[..32] },
                    "descriptors": [
                        { "type": "Def.FILE", "size": 412 },
                        { "type": "JSON.Generic", "size": 1180 },
                        { "type": "FS", "fs": "Squash", "size": 50_000_000 + spread(id, 2_000_000_000) },
                    ],
                });
                recipes.push(format!(
                    "({id}, {repo_id}, {}, {container_id}, {}, {at}, {at})",
                    text(&path),
                    text(tag)
                ));
                images.push(format!(
                    "({id}, 'sha256:{sha}', {}, {}, {repo_id}, '{commit}', {}, {at})",
                    50_000_000 + spread(id, 2_000_000_000),
                    text(&metadata.to_string()),
                    text(&path)
                ));
                builds.push(format!(
                    "({id}, {id}, '{commit}', 'main', 'push', 0, 'succeeded', {}, {}, {at}, 1, 3, {id})",
                    at - 300_000,
                    at - 290_000
                ));
                // The last tag is set through the hub's code afterwards.
                if k + 1 < IMAGES_PER_COLLECTION {
                    tags.push(format!(
                        "({id}, {container_id}, {}, {id}, {at}, {at})",
                        text(tag)
                    ));
                    history.push(format!("({id}, {id}, {at})"));
                }
            }
        }
        if r % 10 == 0 {
            let id = 1_000_000 + r;
            builds.push(format!(
                "({id}, {}, 'ffffffffffffffffffffffffffffffffffffffff', 'main', 'push', 0, 'failed', {built}, {}, {}, 1, 3, NULL)",
                r * IMAGES_PER_COLLECTION + 1,
                built + 1_000,
                built + 60_000
            ));
        }
    }
    let insert = |table: &str, rows: Vec<String>| {
        format!("INSERT INTO {table} VALUES {};\n", rows.join(",\n"))
    };
    [
        insert(
            "repositories (id, owner, name, default_branch, created_at)",
            repositories,
        ),
        insert("containers (id, repository_id, name, created_at)", containers),
        insert(
            "recipes (id, repository_id, path, container_id, tag, created_at, updated_at)",
            recipes,
        ),
        insert(
            "images (id, digest, size, sif_metadata, repository_id, commit_sha, recipe_path, created_at)",
            images,
        ),
        insert(
            "tags (id, container_id, name, image_id, created_at, updated_at)",
            tags,
        ),
        insert("tag_history (tag_id, image_id, valid_from)", history),
        insert(
            "builds (id, recipe_id, commit_sha, branch, trigger_kind, priority, status, queued_at, started_at, finished_at, attempt, max_attempts, image_id)",
            builds,
        ),
    ]
    .concat()
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let collections: usize = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 5_000,
    };
    let config = Config::load(None)?;
    std::fs::create_dir_all(&config.data_dir)?;
    let url = config.resolved_database_url();
    // Migrates the fresh database.
    let db = Db::connect(&url).await?;
    let pool = if url.starts_with("postgres") {
        Pool::Postgres(PgPool::connect(&url).await?)
    } else {
        Pool::Sqlite(SqlitePool::connect(&url).await?)
    };
    let now = Timestamp::now().unix_millis();
    let started = Instant::now();
    for first in (0..collections).step_by(BATCH) {
        let sql = batch_sql(first, (first + BATCH).min(collections), now);
        on_pool!(&pool, |p| {
            let mut tx = p.begin().await?;
            sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *tx).await?;
            tx.commit().await?;
        });
    }
    if let Pool::Postgres(p) = &pool {
        // Explicit ids leave the identity sequences behind.
        for table in [
            "repositories",
            "containers",
            "recipes",
            "images",
            "tags",
            "builds",
        ] {
            let sql = format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))"
            );
            sqlx::raw_sql(AssertSqlSafe(sql)).execute(p).await?;
        }
    }
    let bulk = started.elapsed();
    let (last_container, last_tag) = (CONTAINERS.len() - 1, TAGS[TAGS.len() - 1]);
    for r in 0..collections {
        let container_id = (r * CONTAINERS.len() + last_container + 1) as i64;
        let image_id = ((r + 1) * IMAGES_PER_COLLECTION) as i64;
        let at = now - DAY_MS * 90 + (spread(r, 90 * 24) as i64) * 3_600_000;
        db.set_tag(
            container_id,
            last_tag,
            image_id,
            Timestamp::from_unix_millis(at),
        )
        .await?;
    }
    if let Pool::Postgres(p) = &pool {
        // What autovacuum does soon after such a load; without statistics
        // the planner would not know the trigram indexes pay.
        sqlx::raw_sql("VACUUM ANALYZE").execute(p).await?;
    }
    on_pool!(&pool, |p| p.close().await);
    db.close().await;
    println!(
        "seeded {collections} collections, {} images: bulk rows {:.1} s, tags through the hub {:.1} s",
        collections * IMAGES_PER_COLLECTION,
        bulk.as_secs_f64(),
        (started.elapsed() - bulk).as_secs_f64()
    );
    Ok(())
}
