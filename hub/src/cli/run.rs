//! `sifhub run IMAGE.sif [ARGS…]` and `sifhub exec IMAGE.sif CMD [ARGS…]`:
//! run an image as `apptainer run`/`exec` would — its runscript (or a
//! command) with the image's environment, the caller's home and working
//! folder bound, the host's network — inside the sandbox. The image's root
//! is extracted once into `~/.cache/sifhub/images/<sha256>` and reused.
//! Output is streamed to stdout (the sandbox merges stdout and stderr; the
//! command gets no stdin), and the command's exit code is returned.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sifhub_builder::run::{exit_code, run_image, run_limits, Action, RunOptions};
use sifhub_builder::sandbox::{Bind, LogLine, LogSource, NetworkMode, Termination};

use super::build::{handle_interrupts, parse_duration, parse_network, parse_size};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The SIF image.
    pub image: PathBuf,
    /// Arguments for the runscript (`run`), or the command and its arguments (`exec`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
    /// Network: host (apptainer's default), slirp (outbound only) or none.
    #[arg(long, default_value = "host", value_parser = parse_network)]
    pub network: NetworkMode,
    /// Memory limit, e.g. 4G (default: the machine's memory).
    #[arg(long, value_parser = parse_size)]
    pub memory: Option<u64>,
    /// Wall-time limit, e.g. 2h (default: 30 days).
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Process limit.
    #[arg(long)]
    pub pids: Option<u64>,
    /// Do not bind the home folder.
    #[arg(long)]
    pub no_home: bool,
    /// Pass none of the host's environment.
    #[arg(long, alias = "cleanenv", short = 'e')]
    pub clean_env: bool,
    /// Set a variable in the container (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Bind a host path: SRC[:DEST[:ro]] (repeatable).
    #[arg(long = "bind", short = 'B', value_name = "SRC[:DEST[:ro]]")]
    pub binds: Vec<String>,
    /// Run a SCIF app of the image.
    #[arg(long)]
    pub app: Option<String>,
    /// Where extracted images are kept (default: ~/.cache/sifhub/images).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

/// `sifhub run`.
pub fn run(args: Args) -> super::CliResult {
    execute(args, Action::Run)
}

/// `sifhub exec`.
pub fn exec(args: Args) -> super::CliResult {
    if args.args.is_empty() {
        return Err("exec needs a command to run in the image".into());
    }
    execute(args, Action::Exec)
}

fn execute(args: Args, action: Action) -> super::CliResult {
    let interrupted = Arc::new(AtomicI32::new(0));
    handle_interrupts(interrupted.clone());
    let mut options = RunOptions::new(&args.image, action, args.args);
    options.network = args.network;
    let defaults = run_limits();
    options.limits.memory = args.memory.unwrap_or(defaults.memory);
    options.limits.time = args.timeout.unwrap_or(defaults.time);
    options.limits.processes = args.pids.unwrap_or(defaults.processes);
    options.bind_home = !args.no_home;
    options.clean_env = args.clean_env;
    options.app = args.app;
    if let Some(dir) = args.cache_dir {
        options.cache_dir = dir;
    }
    for pair in &args.env {
        let Some((name, value)) = pair.split_once('=') else {
            return Err(format!("--env {pair:?}: expected NAME=VALUE").into());
        };
        options.env.push((name.to_owned(), value.to_owned()));
    }
    for spec in &args.binds {
        options.binds.push(parse_bind(spec)?);
    }
    let stdout = std::io::stdout();
    let result = run_image(&options, &mut |line: LogLine| match line.source {
        LogSource::Command => {
            let mut out = stdout.lock();
            let _ = writeln!(out, "{}", line.text);
            let _ = out.flush();
        }
        LogSource::Sandbox => eprintln!("sifhub: {}", line.text),
    });
    // Interrupted: the run was ended on purpose; say so with the shell's code.
    let signal = interrupted.load(Ordering::SeqCst);
    if signal != 0 {
        return Ok(ExitCode::from(128u8.saturating_add(signal as u8)));
    }
    // The message already holds its causes.
    let outcome = result.map_err(|e| e.to_string())?;
    if let Termination::Killed(reason) = &outcome.termination {
        eprintln!("sifhub: {reason}");
    }
    let code = exit_code(&outcome.termination);
    Ok(ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1)))
}

/// `SRC[:DEST[:ro|rw]]`.
fn parse_bind(spec: &str) -> Result<Bind, String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [s] => (*s, *s, "rw"),
        [s, d] => (*s, *d, "rw"),
        [s, d, m] => (*s, *d, *m),
        _ => return Err(format!("--bind {spec:?}: expected SRC[:DEST[:ro]]")),
    };
    if source.is_empty() || !target.starts_with('/') {
        return Err(format!(
            "--bind {spec:?}: the source must be given and the destination absolute"
        ));
    }
    let source = std::fs::canonicalize(source)
        .map_err(|e| format!("--bind {spec:?}: cannot open {source}: {e}"))?;
    match mode {
        "ro" => Ok(Bind::read_only(source, target)),
        "rw" => Ok(Bind::read_write(source, target)),
        other => Err(format!(
            "--bind {spec:?}: unknown mode {other:?} (ro or rw)"
        )),
    }
}
