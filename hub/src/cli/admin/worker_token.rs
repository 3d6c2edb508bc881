//! `sifhub admin worker-token create [--name N]`: makes a token for
//! `sifhub worker` and prints it once (the hub keeps only its hash).

use std::process::ExitCode;

use crate::api::worker::issue_worker_token;
use crate::config::Config;
use crate::db::{Db, Timestamp};

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Make a worker token and print it.
    Create {
        /// A label for the token, shown in the hub's log and token lists.
        #[arg(long, default_value = "worker")]
        name: String,
    },
}

pub fn run(config: &Config, command: Command) -> crate::cli::CliResult {
    let Command::Create { name } = command;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let db = Db::connect(&config.resolved_database_url()).await?;
        let (token, secret) = issue_worker_token(&db, &name, Timestamp::now()).await?;
        db.close().await;
        eprintln!(
            "worker token {} ({name}) created; it is shown only now:",
            token.id
        );
        println!("{secret}");
        Ok(ExitCode::SUCCESS)
    })
}
