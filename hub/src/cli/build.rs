//! `sifhub build RECIPE -o OUT.sif`: builds an image from a definition file
//! with the hub's builder, locally — every user command in the sandbox, with
//! limits. Steps are printed as they start, with a progress bar per layer
//! and for the squashfs on a terminal (plain lines otherwise); the full log,
//! with timestamps, goes to `OUT.sif.log` (or `--log`). On success the
//! image's sha256 and path are printed on stdout, as `sha256sum` prints them.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use sifhub_builder::build::{BuildEvent, BuildOptions, Builder, LineSource};
use sifhub_builder::deffile::BuildArgs;
use sifhub_builder::oci::BlobKind;
use sifhub_builder::sandbox::{Limits, NetworkMode};
use sifhub_builder::squashfs::Compression;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The definition file (`Singularity`, `*.def`).
    pub recipe: PathBuf,
    /// Where the SIF image goes (written atomically).
    #[arg(short, long, value_name = "OUT.sif")]
    pub output: PathBuf,
    /// A build argument for `{{ NAME }}`, as apptainer's --build-arg (repeatable).
    #[arg(long = "build-arg", value_name = "NAME=VALUE")]
    pub build_args: Vec<String>,
    /// Every time in the image, Unix seconds (e.g. the commit time): with the
    /// same inputs, two builds give the same bytes. Default: now.
    #[arg(long, env = "SOURCE_DATE_EPOCH", value_name = "UNIX_SECONDS")]
    pub timestamp: Option<i64>,
    /// The source commit, recorded in the image's provenance.
    #[arg(long)]
    pub commit: Option<String>,
    /// Squashfs compression: gzip (apptainer's default), zstd, xz or lz4.
    #[arg(long, default_value = "gzip", value_parser = parse_compression)]
    pub compression: Compression,
    /// Network of %setup, %post and %test: slirp (outbound only, no host
    /// loopback), none, or host (trusted recipes only).
    #[arg(long, default_value = "slirp", value_parser = parse_network)]
    pub network: NetworkMode,
    /// A registry spoken to over plain HTTP (repeatable; loopback ones always are).
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
    /// Memory limit of each command, e.g. 2G, 512M.
    #[arg(long, value_parser = parse_size)]
    pub memory: Option<u64>,
    /// Wall-time limit of each command, e.g. 30m, 2h, 90s.
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Process limit of each command.
    #[arg(long)]
    pub pids: Option<u64>,
    /// Disk limit of the build root (and of what %files copies), e.g. 20G.
    #[arg(long, value_parser = parse_size)]
    pub disk: Option<u64>,
    /// Skip %test.
    #[arg(long)]
    pub notest: bool,
    /// The build log (default: OUT.sif.log).
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// The build context for %files and %setup (default: the recipe's folder).
    #[arg(long, value_name = "DIR")]
    pub context: Option<PathBuf>,
    /// The OCI layer cache (default: ~/.cache/sifhub/oci).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Where the temporary build roots go (default: the temp folder).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Keep the temporary build roots (for debugging).
    #[arg(long)]
    pub keep_work_dir: bool,
    /// A folder outside the recipe's from which `Bootstrap: localimage` may
    /// take images (repeatable).
    #[arg(long = "allow-local-image", value_name = "DIR")]
    pub local_image_dirs: Vec<PathBuf>,
    /// Print only errors and the result.
    #[arg(short, long)]
    pub quiet: bool,
}

pub fn run(args: Args) -> super::CliResult {
    let interrupted = Arc::new(AtomicI32::new(0));
    handle_interrupts(interrupted.clone());
    let build_args = BuildArgs::from_pairs(&args.build_args)?;
    let defaults = Limits::default();
    let limits = Limits {
        time: args.timeout.unwrap_or(defaults.time),
        memory: args.memory.unwrap_or(defaults.memory),
        processes: args.pids.unwrap_or(defaults.processes),
        disk: args.disk.unwrap_or(defaults.disk),
    };
    let log_file = args.log.clone().unwrap_or_else(|| {
        let mut name = args.output.clone().into_os_string();
        name.push(".log");
        PathBuf::from(name)
    });
    let mut options = BuildOptions::new(&args.recipe, &args.output);
    options.build_args = build_args;
    options.context = args.context;
    options.work_dir = args.work_dir;
    options.keep_work_dir = args.keep_work_dir;
    if let Some(dir) = args.cache_dir {
        options.cache_dir = dir;
    }
    options.timestamp = args.timestamp;
    options.compression = args.compression;
    options.network = args.network;
    options.insecure_registries = args.insecure_registries;
    options.limits = limits;
    options.run_tests = !args.notest;
    options.commit = args.commit;
    options.log_file = Some(log_file.clone());
    options.local_image_dirs = args.local_image_dirs;
    let cancel = Arc::new(AtomicBool::new(false));
    options.cancel = Some(cancel.clone());
    {
        // The builder stops at its next step once interrupted.
        let interrupted = interrupted.clone();
        std::thread::spawn(move || loop {
            if interrupted.load(Ordering::SeqCst) != 0 {
                cancel.store(true, Ordering::SeqCst);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        });
    }

    let mut view = Progress::new(args.quiet);
    let result = Builder::new(options).build(&mut |event| view.show(event));
    view.finish();
    match result {
        Ok(report) => {
            println!("{}  {}", report.sha256, report.output.display());
            if !args.quiet {
                eprintln!("build log: {}", log_file.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let signal = interrupted.load(Ordering::SeqCst);
            if signal != 0 {
                eprintln!(
                    "error: interrupted by signal {signal}: {e} (build log: {})",
                    log_file.display()
                );
                return Ok(ExitCode::from(128u8.saturating_add(signal as u8)));
            }
            Err(format!("{e} (build log: {})", log_file.display()).into())
        }
    }
}

/// What the terminal shows: lines, and bars for layers and the squashfs.
struct Progress {
    quiet: bool,
    multi: Option<MultiProgress>,
    blobs: HashMap<String, ProgressBar>,
    squash: Option<ProgressBar>,
}

impl Progress {
    fn new(quiet: bool) -> Self {
        let multi = (!quiet && std::io::stderr().is_terminal()).then(MultiProgress::new);
        Progress {
            quiet,
            multi,
            blobs: HashMap::new(),
            squash: None,
        }
    }

    fn line(&self, text: &str) {
        if self.quiet {
            return;
        }
        match &self.multi {
            Some(multi) => {
                let _ = multi.println(text);
            }
            None => eprintln!("{text}"),
        }
    }

    fn show(&mut self, event: &BuildEvent) {
        match event {
            BuildEvent::Blob {
                digest,
                kind,
                size,
                downloaded,
                done,
                ..
            } => {
                let Some(multi) = &self.multi else {
                    if *done {
                        if let Some(text) = event.log_text() {
                            self.line(&text);
                        }
                    }
                    return;
                };
                let bar = self.blobs.entry(digest.clone()).or_insert_with(|| {
                    let bar = multi.add(ProgressBar::new(*size));
                    bar.set_style(bar_style(
                        "{msg:24} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec}",
                    ));
                    bar.set_message(short_digest(*kind, digest));
                    bar
                });
                bar.set_length(*size);
                bar.set_position(*downloaded);
                if *done {
                    // A finished blob leaves its line, as without a terminal.
                    bar.finish_and_clear();
                    multi.remove(bar);
                    if let Some(text) = event.log_text() {
                        let _ = multi.println(text);
                    }
                }
            }
            BuildEvent::Squash { percent } => {
                let Some(multi) = &self.multi else {
                    return;
                };
                let bar = self.squash.get_or_insert_with(|| {
                    let bar = multi.add(ProgressBar::new(100));
                    bar.set_style(bar_style("{msg:24} [{bar:30}] {pos:>3}%"));
                    bar.set_message("squashfs");
                    bar
                });
                bar.set_position(u64::from(*percent));
                if *percent >= 100 {
                    bar.finish_and_clear();
                    multi.remove(bar);
                }
            }
            // main prints the error once, with the log's path.
            BuildEvent::Failed(_) => {}
            BuildEvent::Step { .. } | BuildEvent::Warning(_) => {
                if let Some(text) = event.log_text() {
                    self.line(&text);
                }
            }
            BuildEvent::Line { source, text } => {
                let text = match source {
                    LineSource::Command => format!("  {text}"),
                    LineSource::Sandbox => format!("  sandbox: {text}"),
                    LineSource::Builder => format!("  {text}"),
                };
                self.line(&text);
            }
        }
    }

    fn finish(&mut self) {
        for bar in self.blobs.values() {
            if !bar.is_finished() {
                bar.abandon();
            }
        }
        if let Some(multi) = &self.multi {
            let _ = multi.clear();
        }
    }
}

/// On SIGINT, SIGTERM or SIGHUP: records the signal in `signal` and keeps
/// killing this process's children (the sandbox's setup process, which takes
/// the whole run down with it; mksquashfs; slirp4netns) until the process
/// exits. The sandbox then sees its run end and removes its cgroups and
/// folders, and a build removes its work folder, instead of a default
/// signal death leaving them behind. Call it before any thread starts: the
/// signals are blocked here and in every thread made later, and waited for
/// on a thread of their own (the sandbox and `Command` reset the mask in
/// their children).
pub(crate) fn handle_interrupts(signal: Arc<AtomicI32>) {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    if set.thread_block().is_err() {
        return;
    }
    std::thread::spawn(move || {
        let Ok(received) = set.wait() else {
            return;
        };
        signal.store(received as i32, Ordering::SeqCst);
        loop {
            kill_children();
            std::thread::sleep(Duration::from_millis(100));
        }
    });
}

/// SIGKILLs every process whose parent is this one.
fn kill_children() {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if parent == Some(me) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn bar_style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

fn short_digest(kind: BlobKind, digest: &str) -> String {
    let hex = digest.trim_start_matches("sha256:");
    let kind = match kind {
        BlobKind::Config => "config",
        BlobKind::Layer => "layer",
    };
    format!("{kind} {}", &hex[..hex.len().min(12)])
}

fn parse_compression(text: &str) -> Result<Compression, String> {
    text.parse()
}

/// `slirp`, `none` or `host`.
pub(crate) fn parse_network(text: &str) -> Result<NetworkMode, String> {
    match text {
        "slirp" => Ok(NetworkMode::Slirp),
        "none" => Ok(NetworkMode::None),
        "host" => Ok(NetworkMode::Host),
        other => Err(format!(
            "unknown network {other:?} (expected slirp, none or host)"
        )),
    }
}

/// `512M`, `2G`, `64MiB`, `1.5G`, `1048576` (bytes; K/M/G/T are powers of 1024).
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits_end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(digits_end);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid size {text:?} (expected e.g. 512M or 2G)"))?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit.trim_end_matches('b').trim_end_matches('i');
    let factor: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(format!("invalid size unit in {text:?} (use K, M, G or T)")),
    };
    let bytes = value * factor as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(format!("size {text:?} out of range"));
    }
    Ok(bytes as u64)
}

/// `90s`, `30m`, `2h`, `1h30m`, `1d`, or plain seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let bad = || format!("invalid duration {text:?} (expected e.g. 90s, 30m, 2h or 1h30m)");
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = 0u64;
    let mut number = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().map_err(|_| bad())?;
        number.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        total = total.saturating_add(n.saturating_mul(unit));
    }
    if !number.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("2Q").is_err());
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("h").is_err());
        assert_eq!(parse_network("none"), Ok(NetworkMode::None));
    }
}
