//! `sifhub admin repo add|list`: repositories in plain webhook mode, for a
//! hub without a GitHub App (or a repository the App cannot reach).

use std::process::ExitCode;

use crate::config::Config;
use crate::db::{Db, NewRepository, Repository, RepositorySettings, Timestamp};

/// Bytes of randomness in a generated webhook secret (hex-encoded).
const SECRET_BYTES: usize = 32;
/// Assumed until the first push says which branch is the default.
const ASSUMED_DEFAULT_BRANCH: &str = "main";

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("{0:?} is not OWNER/REPO")]
    BadName(String),
    #[error("cannot generate a webhook secret")]
    Random(#[source] getrandom::Error),
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Enable a repository in plain webhook mode and print its webhook URL and secret.
    Add {
        /// The GitHub repository, OWNER/REPO.
        repository: String,
        /// A branch whose pushes build (repeatable); default: the repository's default branch.
        #[arg(long = "branch", value_name = "BRANCH")]
        branches: Vec<String>,
        /// Only owners and collaborators see its images.
        #[arg(long)]
        private: bool,
        /// For a repository added before: replace its webhook secret.
        #[arg(long)]
        rotate_secret: bool,
    },
    /// List the repositories and how their deliveries are verified.
    List,
}

pub fn run(config: &Config, command: Command) -> super::super::CliResult {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let db = Db::connect(&config.resolved_database_url()).await?;
        match command {
            Command::Add {
                repository,
                branches,
                private,
                rotate_secret,
            } => add(config, &db, &repository, branches, private, rotate_secret).await,
            Command::List => list(&db).await,
        }
    })
}

async fn add(
    config: &Config,
    db: &Db,
    full_name: &str,
    branches: Vec<String>,
    private: bool,
    rotate_secret: bool,
) -> super::super::CliResult {
    let (owner, name) = full_name
        .split_once('/')
        .filter(|(o, n)| !o.is_empty() && !n.is_empty() && !n.contains('/'))
        .ok_or_else(|| RepoError::BadName(full_name.to_owned()))?;
    if let Some(existing) = db.find_repository(owner, name).await? {
        if !rotate_secret {
            println!(
                "{} is already added ({}); nothing changed. Use --rotate-secret for a new webhook secret.",
                existing.full_name(),
                mode(&existing)
            );
            return Ok(ExitCode::SUCCESS);
        }
        let secret = generate_secret()?;
        let settings = RepositorySettings {
            build_branches: existing.build_branches.clone(),
            private: existing.private,
            paused: existing.paused,
            webhook_secret: Some(secret.clone()),
        };
        db.update_repository_settings(existing.id, &settings)
            .await?;
        println!("new webhook secret for {}:", existing.full_name());
        print_setup(config, &existing.owner, &existing.name, &secret);
        return Ok(ExitCode::SUCCESS);
    }
    let secret = generate_secret()?;
    let new = NewRepository {
        github_id: None,
        owner: owner.to_owned(),
        name: name.to_owned(),
        default_branch: ASSUMED_DEFAULT_BRANCH.to_owned(),
        installation_id: None,
        settings: RepositorySettings {
            build_branches: branches.clone(),
            private,
            paused: false,
            webhook_secret: Some(secret.clone()),
        },
    };
    let repository = db.insert_repository(&new, Timestamp::now()).await?;
    let builds = if branches.is_empty() {
        "the default branch".to_owned()
    } else {
        branches.join(", ")
    };
    println!(
        "added {} in plain webhook mode; pushes to {builds} build",
        repository.full_name()
    );
    print_setup(config, &repository.owner, &repository.name, &secret);
    Ok(ExitCode::SUCCESS)
}

fn print_setup(config: &Config, owner: &str, name: &str, secret: &str) {
    let url = format!(
        "{}/webhooks/github/{owner}/{name}",
        config.resolved_public_url().trim_end_matches('/')
    );
    println!("On GitHub: {owner}/{name} → Settings → Webhooks → Add webhook, with");
    println!("  Payload URL:  {url}");
    println!("  Content type: application/json");
    println!("  Secret:       {secret}");
    println!("  Events:       Just the push event");
    println!(
        "The secret is shown only now; sifhub admin repo add --rotate-secret makes a new one."
    );
}

async fn list(db: &Db) -> super::super::CliResult {
    for repository in db.list_repositories().await? {
        let branches = if repository.build_branches.is_empty() {
            repository.default_branch.clone()
        } else {
            repository.build_branches.join(",")
        };
        println!(
            "{}\t{}\tbranches: {branches}{}{}",
            repository.full_name(),
            mode(&repository),
            if repository.private { "\tprivate" } else { "" },
            if repository.paused { "\tpaused" } else { "" },
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn mode(repository: &Repository) -> &'static str {
    match (&repository.webhook_secret, repository.installation_id) {
        (_, Some(_)) => "github app",
        (Some(_), None) => "plain webhook",
        (None, None) => "detached (no app installation, no webhook secret)",
    }
}

fn generate_secret() -> Result<String, RepoError> {
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::getrandom(&mut bytes).map_err(RepoError::Random)?;
    Ok(hex::encode(bytes))
}
