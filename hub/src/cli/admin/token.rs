//! `sifhub admin token create|list|revoke`: API tokens for people. `create`
//! prints the token once (the hub keeps only its hash); an owner who never
//! signed in is looked up on GitHub and recorded.

use std::process::ExitCode;
use std::sync::Arc;

use crate::config::Config;
use crate::db::{ApiToken, Db, Timestamp, TokenScope};
use crate::github::{GitHubApi, GitHubClient};
use crate::user_tokens::{find_or_fetch_user, issue_user_token, TokenRequest};

#[derive(Debug, thiserror::Error)]
pub enum TokenCommandError {
    #[error(
        "no user {0:?} has a token here (they never signed in and no token was made for them)"
    )]
    UnknownUser(String),
    #[error("no token {0}, or it was revoked already")]
    UnknownToken(i64),
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Make a token for OWNER (a GitHub login) and print it once.
    Create {
        /// The GitHub login the token acts for.
        owner: String,
        /// What the token may do: read, push or admin.
        #[arg(long, value_parser = parse_scope)]
        scope: TokenScope,
        /// Days until it expires; without it, it never does.
        #[arg(long, value_name = "DAYS")]
        expires: Option<u64>,
        /// A label for the owner's token list.
        #[arg(long, default_value = "cli")]
        name: String,
    },
    /// List OWNER's tokens, revoked and expired ones included.
    List {
        /// The GitHub login.
        owner: String,
    },
    /// Revoke a token by id (a person's or a worker's): every API refuses it from now on.
    Revoke {
        /// The id `list` shows.
        id: i64,
    },
}

fn parse_scope(text: &str) -> Result<TokenScope, String> {
    match text.parse::<TokenScope>() {
        Ok(TokenScope::Worker) | Err(_) => {
            Err(format!("{text:?} is not a scope: use read, push or admin"))
        }
        Ok(scope) => Ok(scope),
    }
}

pub fn run(config: &Config, command: Command) -> crate::cli::CliResult {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let db = Db::connect(&config.resolved_database_url()).await?;
        let result = match command {
            Command::Create {
                owner,
                scope,
                expires,
                name,
            } => {
                let github: Arc<dyn GitHubApi> = Arc::new(GitHubClient::from_config(config)?);
                let request = TokenRequest {
                    name,
                    scope,
                    expires_in_days: expires,
                };
                create(&db, github.as_ref(), &owner, &request).await
            }
            Command::List { owner } => list(&db, &owner).await,
            Command::Revoke { id } => revoke(&db, id).await,
        };
        db.close().await;
        result
    })
}

async fn create(
    db: &Db,
    github: &dyn GitHubApi,
    owner: &str,
    request: &TokenRequest,
) -> crate::cli::CliResult {
    // Checked before GitHub is asked, so a bad request records no user.
    request.check()?;
    let now = Timestamp::now();
    let user = find_or_fetch_user(db, github, owner, now).await?;
    let (token, secret) = issue_user_token(db, user.id, request, now).await?;
    let expiry = match token.expires_at {
        Some(at) => format!("expires {}", date(at)),
        None => "never expires".to_owned(),
    };
    eprintln!(
        "token {} ({}, {} scope) for {} created, {expiry}; it is shown only now:",
        token.id, token.name, token.scope, user.login
    );
    println!("{secret}");
    Ok(ExitCode::SUCCESS)
}

async fn list(db: &Db, owner: &str) -> crate::cli::CliResult {
    let user = db
        .find_user_by_login(owner)
        .await?
        .ok_or_else(|| TokenCommandError::UnknownUser(owner.to_owned()))?;
    let now = Timestamp::now();
    for token in db.list_user_tokens(user.id).await? {
        println!(
            "{}\t{}\t{}\tcreated {}\t{}",
            token.id,
            token.name,
            token.scope,
            date(token.created_at),
            state(&token, now)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn state(token: &ApiToken, now: Timestamp) -> String {
    match (token.revoked_at, token.expires_at) {
        (Some(at), _) => format!("revoked {}", date(at)),
        (None, Some(at)) if at <= now => format!("expired {}", date(at)),
        (None, Some(at)) => format!("expires {}", date(at)),
        (None, None) => "never expires".to_owned(),
    }
}

async fn revoke(db: &Db, id: i64) -> crate::cli::CliResult {
    if !db.revoke_token(id, Timestamp::now()).await? {
        return Err(TokenCommandError::UnknownToken(id).into());
    }
    println!("token {id} revoked");
    Ok(ExitCode::SUCCESS)
}

/// `2026-11-27 16:55 UTC`.
fn date(at: Timestamp) -> String {
    chrono::DateTime::from_timestamp_millis(at.unix_millis())
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| at.unix_millis().to_string())
}
