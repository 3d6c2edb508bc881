//! The `sifhub` command line. One file per subcommand; each exposes `Args`
//! (its clap arguments) and `run`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod admin;
pub mod build;
pub mod inspect;
pub mod migrate;
pub mod parse;
pub mod run;
pub mod serve;
pub mod worker;

/// What every subcommand's `run` returns: the exit code, or an error that
/// `main` prints as `error: …` with its causes.
pub type CliResult = Result<ExitCode, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Parser, Debug)]
#[command(name = "sifhub", version, about = "A build hub for Singularity/Apptainer images", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the hub: HTTP server on SQLite and a local storage folder by default.
    Serve(serve::Args),
    /// Read a definition file as apptainer reads it and print its structure.
    Parse(parse::Args),
    /// Print a SIF image's header, descriptors, recipe and labels.
    Inspect(inspect::Args),
    /// Build a SIF image from a definition file, every command sandboxed.
    Build(build::Args),
    /// Run an image's runscript with arguments, as `apptainer run`.
    Run(run::Args),
    /// Run a command in an image, as `apptainer exec`.
    Exec(run::Args),
    /// Apply the database migrations the database lacks and print them.
    Migrate(migrate::Args),
    /// Operator commands: repositories in plain webhook mode.
    Admin(admin::Args),
    /// Run builds for a hub: claim, build in the sandbox, upload, report.
    Worker(worker::Args),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Parse(args) => parse::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Build(args) => build::run(args),
        Command::Run(args) => run::run(args),
        Command::Exec(args) => run::exec(args),
        Command::Migrate(args) => migrate::run(args),
        Command::Admin(args) => admin::run(args),
        Command::Worker(args) => worker::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", crate::error_chain(err.as_ref()));
            ExitCode::FAILURE
        }
    }
}
