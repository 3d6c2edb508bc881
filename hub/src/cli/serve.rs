//! `sifhub serve`: the hub on SQLite and a local storage folder by default.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::Config;
use crate::serve::Server;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// TOML configuration file; `SIFHUB_*` environment variables override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

pub fn run(args: Args) -> super::CliResult {
    let config = Config::load(args.config.as_deref())?;
    // Colours only on a terminal: logs piped to a file or journald stay plain.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&config.log))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let server = Server::bind(&config).await?;
        let data_dir = std::fs::canonicalize(&config.data_dir).unwrap_or(config.data_dir.clone());
        tracing::info!("data folder: {}", data_dir.display());
        let addr = server.local_addr().unwrap_or(config.listen);
        // With port 0 the kernel picks the port: link to the one we got.
        let url = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"));
        tracing::info!("listening on {addr}; open {url}");
        server
            .run(async {
                let _ = tokio::signal::ctrl_c().await;
                tracing::info!("shutting down");
            })
            .await?;
        Ok(ExitCode::SUCCESS)
    })
}
