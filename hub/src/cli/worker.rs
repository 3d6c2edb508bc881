//! `sifhub worker --hub URL --token T`: a build worker for a remote hub.
//! It needs root (the builds' sandbox) and no database or storage access.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::Secret;
use crate::worker::{Worker, WorkerSettings};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The hub's URL, e.g. http://hub.example.org:8080.
    #[arg(long, env = "SIFHUB_HUB_URL", value_name = "URL")]
    pub hub: String,
    /// A worker token (`sifhub admin worker-token create` prints one).
    #[arg(
        long,
        env = "SIFHUB_WORKER_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: String,
    /// Builds to run at once.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub slots: usize,
    /// Registry spoken to over plain HTTP (repeatable).
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
    /// Where sources are unpacked and images built.
    #[arg(long, value_name = "DIR", default_value_os_t = std::env::temp_dir().join("sifhub-worker"))]
    pub work_dir: PathBuf,
    /// OCI layer cache (default ~/.cache/sifhub/oci).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Name of this worker in the hub's log (default HOST-PID).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// `tracing` filter for the log.
    #[arg(long, env = "SIFHUB_LOG", default_value = "info")]
    pub log: String,
}

pub fn run(args: Args) -> super::CliResult {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let mut settings = WorkerSettings::new(
        &args.hub,
        Secret::new(args.token),
        args.slots,
        args.work_dir,
    );
    settings.insecure_registries = args.insecure_registries;
    if let Some(dir) = args.cache_dir {
        settings.cache_dir = dir;
    }
    if let Some(name) = args.name {
        settings.name = name;
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let worker = Worker::new(settings)?;
        worker
            .run(async {
                let _ = tokio::signal::ctrl_c().await;
                tracing::info!("stopping: running builds go back to the queue");
            })
            .await;
        Ok(ExitCode::SUCCESS)
    })
}
