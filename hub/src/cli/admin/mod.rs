//! `sifhub admin`: operator commands on the hub's database, with the same
//! configuration as `sifhub serve` (`--config`, `SIFHUB_*`).

use std::path::PathBuf;

pub mod repo;
pub mod token;
pub mod worker_token;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// TOML configuration file; `SIFHUB_*` environment variables override it.
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Repositories the hub builds.
    #[command(subcommand)]
    Repo(repo::Command),
    /// API tokens for people and their scripts.
    #[command(subcommand)]
    Token(token::Command),
    /// Tokens for `sifhub worker` machines.
    #[command(subcommand)]
    WorkerToken(worker_token::Command),
}

pub fn run(args: Args) -> super::CliResult {
    let config = crate::config::Config::load(args.config.as_deref())?;
    match args.command {
        Command::Repo(command) => repo::run(&config, command),
        Command::Token(command) => token::run(&config, command),
        Command::WorkerToken(command) => worker_token::run(&config, command),
    }
}
