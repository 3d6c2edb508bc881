//! `sifhub migrate [--config FILE] [--database-url URL]`: applies the schema
//! migrations the database lacks (as `sifhub serve` does at start-up) and
//! prints each one it applied.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::Config;
use crate::db::{redact_url, Db};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// TOML configuration file; `SIFHUB_*` environment variables override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The database to migrate (`sqlite://PATH`, `postgres://…`); default:
    /// the configuration's `database_url`.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

pub fn run(args: Args) -> super::CliResult {
    let config = Config::load(args.config.as_deref())?;
    let url = args
        .database_url
        .unwrap_or_else(|| config.resolved_database_url());
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let db = Db::open(&url).await?;
        let applied = db.migrate().await?;
        let shown = redact_url(&url);
        if applied.is_empty() {
            let known = db.known_migrations().len();
            println!("{shown}: up to date ({known} {})", migrations(known));
        } else {
            for migration in &applied {
                println!("applied {migration}");
            }
            let count = applied.len();
            println!("{shown}: applied {count} {}", migrations(count));
        }
        db.close().await;
        Ok(ExitCode::SUCCESS)
    })
}

fn migrations(count: usize) -> &'static str {
    if count == 1 {
        "migration"
    } else {
        "migrations"
    }
}
