//! The build worker: claims builds from a hub over the worker protocol
//! ([`protocol`], [`client`]), builds them with `sifhub_builder` and sends
//! back the log and the image. It holds no database or storage credentials,
//! only a worker token: it runs untrusted recipes. `sifhub worker` runs it
//! against a remote hub; `sifhub serve` runs it in-process against itself.
//!
//! Each of the `slots` loops: claim (long poll) → download the source
//! tarball from the hub → unpack it ([`unpack`]) → build in a blocking
//! task, streaming log lines to the hub in ordered chunks and renewing the
//! lease every third of its length → upload the image → complete, or fail
//! with the builder's error. A lost lease (409) cancels the build and
//! drops its result: another worker has it or it was cancelled.

pub mod client;
pub mod protocol;
pub mod unpack;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sifhub_builder::build::{BuildOptions, BuildReport, Builder};
use sifhub_builder::deffile::{self, BuildArgs};
use sifhub_builder::sandbox::Limits;
use sifhub_builder::sif::SifFile;
use tokio::sync::{mpsc, watch};

use crate::config::Secret;
use crate::error_chain;
use client::{next_backoff, ClientError, HubClient};
use protocol::{CompleteRequest, Job};

/// A log chunk goes out when it reaches this size…
const LOG_CHUNK_BYTES: usize = 64 * 1024;
/// …or when its first line is this old.
const LOG_CHUNK_AGE: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("cannot create the worker folder {path}")]
    WorkDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Why a job did not produce an image.
#[derive(Debug, thiserror::Error)]
enum JobError {
    /// The build itself failed: reported to the hub as the build's failure.
    #[error("{0}")]
    Build(String),
    /// The hub took the build back; nothing more to say to it.
    #[error(transparent)]
    LeaseLost(ClientError),
    /// The hub could not be reached for long: the lease will expire and
    /// the build run again.
    #[error(transparent)]
    Hub(ClientError),
}

impl From<ClientError> for JobError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::LeaseLost { .. } => JobError::LeaseLost(e),
            e => JobError::Hub(e),
        }
    }
}

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// The hub's base URL, e.g. `http://hub.example.org:8080`.
    pub hub_url: String,
    pub token: Secret,
    /// Builds run at once.
    pub slots: usize,
    /// Names this worker in leases and the hub's log (`host-pid` by default).
    pub name: String,
    /// Where sources are unpacked and images built; emptied per build.
    pub work_dir: PathBuf,
    /// The OCI blob cache shared by the builds.
    pub cache_dir: PathBuf,
    /// Registries spoken to over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Limits of every sandboxed command.
    pub limits: Limits,
}

impl WorkerSettings {
    /// Settings with the builder's defaults for everything but the hub.
    pub fn new(hub_url: &str, token: Secret, slots: usize, work_dir: PathBuf) -> Self {
        Self {
            hub_url: hub_url.to_owned(),
            token,
            slots,
            name: default_name(),
            work_dir,
            cache_dir: sifhub_builder::build::default_cache_dir(),
            insecure_registries: Vec::new(),
            limits: Limits::default(),
        }
    }
}

/// `hostname-pid`.
fn default_name() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "worker".to_owned());
    format!("{host}-{}", std::process::id())
}

/// A worker: `slots` claim-build-report loops against one hub.
#[derive(Debug, Clone)]
pub struct Worker {
    settings: Arc<WorkerSettings>,
    client: HubClient,
}

impl Worker {
    pub fn new(settings: WorkerSettings) -> Result<Self, WorkerError> {
        std::fs::create_dir_all(&settings.work_dir).map_err(|source| WorkerError::WorkDir {
            path: settings.work_dir.clone(),
            source,
        })?;
        let client = HubClient::new(&settings.hub_url, settings.token.clone())?;
        Ok(Self {
            settings: Arc::new(settings),
            client,
        })
    }

    /// Runs the loops until `shutdown` resolves. Builds running then are
    /// cancelled without a report: their leases expire and another worker
    /// runs them again.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let (stop, stopped) = watch::channel(false);
        let mut loops = tokio::task::JoinSet::new();
        for slot in 0..self.settings.slots.max(1) {
            loops.spawn(self.clone().slot_loop(slot, stopped.clone()));
        }
        tracing::info!(
            "worker {}: {} slot(s) building for {}",
            self.settings.name,
            self.settings.slots.max(1),
            self.client.hub_url()
        );
        shutdown.await;
        let _ = stop.send(true);
        while loops.join_next().await.is_some() {}
    }

    async fn slot_loop(self, slot: usize, mut stopped: watch::Receiver<bool>) {
        let name = format!("{}-{slot}", self.settings.name);
        let mut pause = Duration::ZERO;
        while !*stopped.borrow() {
            let claimed = tokio::select! {
                claimed = self.client.claim(&name) => claimed,
                _ = stopped.changed() => return,
            };
            match claimed {
                Ok(Some(job)) => {
                    pause = Duration::ZERO;
                    tokio::select! {
                        () = self.run_job(job) => {}
                        _ = stopped.changed() => return,
                    }
                }
                Ok(None) => pause = Duration::ZERO,
                Err(e) => {
                    pause = next_backoff(pause);
                    tracing::warn!("{name}: {}; claiming again in {pause:?}", error_chain(&e));
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        _ = stopped.changed() => return,
                    }
                }
            }
        }
    }

    /// Runs one claimed build to its report. Dropping the future (shutdown)
    /// cancels the build.
    async fn run_job(&self, job: Job) {
        let id = job.build_id;
        tracing::info!(
            "build {id} attempt {}: {} {} at {}",
            job.attempt,
            job.repository,
            job.recipe_path,
            job.commit
        );
        let cancel = Arc::new(AtomicBool::new(false));
        // Set when the builder must stop, whatever happens to this future.
        let _cancel_on_drop = CancelOnDrop(cancel.clone());
        let lost = Arc::new(AtomicBool::new(false));
        let heartbeat = tokio::spawn(heartbeat_loop(
            self.client.clone(),
            job.clone(),
            cancel.clone(),
            lost.clone(),
        ));
        let _stop_heartbeat = AbortOnDrop(heartbeat);
        let (lines, lines_rx) = mpsc::unbounded_channel::<String>();
        let shipper = tokio::spawn(ship_log(self.client.clone(), job.clone(), lines_rx));

        let outcome = self.build(&job, cancel.clone(), lines.clone()).await;
        if let Err(JobError::Build(message)) = &outcome {
            let _ = lines.send(format!("error: {message}\n"));
        }
        drop(lines);
        // Every chunk is in before the result: the hub assembles the log then.
        let shipped = shipper.await.unwrap_or(Ok(()));
        if lost.load(Ordering::SeqCst) {
            tracing::warn!(
                "build {id} attempt {}: lease lost, build dropped",
                job.attempt
            );
            return;
        }
        let reported = match (outcome, shipped) {
            (_, Err(e)) | (Err(JobError::LeaseLost(e) | JobError::Hub(e)), _) => Err(e),
            (Ok((report, _dir)), Ok(())) => self.publish(&job, &report).await,
            (Err(JobError::Build(message)), Ok(())) => self.client.fail(&job, &message).await,
        };
        match reported {
            Ok(()) => {}
            Err(e @ ClientError::LeaseLost { .. }) => {
                tracing::warn!("build {id} attempt {}: {e}", job.attempt)
            }
            Err(e) => tracing::error!(
                "build {id} attempt {}: {}; the hub will run it again when the lease expires",
                job.attempt,
                error_chain(&e)
            ),
        }
    }

    /// Fetches, unpacks and builds; the image is in the returned folder.
    async fn build(
        &self,
        job: &Job,
        cancel: Arc<AtomicBool>,
        lines: mpsc::UnboundedSender<String>,
    ) -> Result<(BuildReport, tempfile::TempDir), JobError> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("build-{}-{}-", job.build_id, job.attempt))
            .tempdir_in(&self.settings.work_dir)
            .map_err(|e| {
                JobError::Build(format!(
                    "cannot make a build folder in {}: {e}",
                    self.settings.work_dir.display()
                ))
            })?;
        let recipe_path = safe_relative(&job.recipe_path).ok_or_else(|| {
            JobError::Build(format!(
                "recipe path {:?} leaves the repository",
                job.recipe_path
            ))
        })?;
        let _ = lines.send(format!(
            "fetching the source of {} at {}\n",
            job.repository, job.commit
        ));
        let archive = dir.path().join("source.tar.gz");
        match self.client.download_source(job, &archive).await {
            Ok(_) => {}
            Err(e @ ClientError::LeaseLost { .. }) => return Err(JobError::LeaseLost(e)),
            // The hub answered but could not give the source: the build fails.
            Err(ClientError::Refused { message, .. }) => return Err(JobError::Build(message)),
            Err(e) => return Err(JobError::Hub(e)),
        }
        let unpack_dir = dir.path().join("src");
        std::fs::create_dir(&unpack_dir)
            .map_err(|e| JobError::Build(format!("cannot create {}: {e}", unpack_dir.display())))?;
        let root =
            tokio::task::spawn_blocking(move || unpack::unpack_source(&archive, &unpack_dir))
                .await
                .map_err(|e| JobError::Build(format!("unpacking the source stopped: {e}")))?
                .map_err(|e| JobError::Build(error_chain(&e)))?;

        let mut options = BuildOptions::new(root.join(&recipe_path), dir.path().join("image.sif"));
        options.recipe_name = Some(job.recipe_path.clone());
        options.context = Some(root);
        options.work_dir = Some(dir.path().to_owned());
        options.cache_dir = self.settings.cache_dir.clone();
        options.timestamp = Some(job.timestamp);
        options.insecure_registries = self.settings.insecure_registries.clone();
        options.limits = self.settings.limits.clone();
        options.commit = Some(job.commit.clone());
        options.cancel = Some(cancel);
        let report = tokio::task::spawn_blocking(move || {
            Builder::new(options).build(&mut |event| {
                if let Some(line) = event.log_text() {
                    let _ = lines.send(line + "\n");
                }
            })
        })
        .await
        .map_err(|e| JobError::Build(format!("the build stopped: {e}")))?
        .map_err(|e| JobError::Build(error_chain(&e)))?;
        Ok((report, dir))
    }

    /// Uploads the image and reports it.
    async fn publish(&self, job: &Job, report: &BuildReport) -> Result<(), ClientError> {
        self.client
            .upload_artifact(job, &report.output, &report.sha256, report.size)
            .await?;
        let request = CompleteRequest {
            attempt: job.attempt,
            sha256: report.sha256.clone(),
            size: report.size,
            sif_metadata: image_metadata(report),
            base_image_digest: report.provenance.base.digest.clone(),
            builder_version: Some(report.provenance.builder.clone()),
        };
        let done = self.client.complete(job, &request).await?;
        tracing::info!(
            "build {} attempt {}: published {}",
            job.build_id,
            job.attempt,
            done.digest
        );
        Ok(())
    }
}

/// Renews the lease every third of its length; on a 409 stops the build.
async fn heartbeat_loop(
    client: HubClient,
    job: Job,
    cancel: Arc<AtomicBool>,
    lost: Arc<AtomicBool>,
) {
    let every = Duration::from_millis(job.lease_seconds.max(1) * 1000 / 3);
    loop {
        tokio::time::sleep(every).await;
        match client.heartbeat(&job).await {
            Ok(_) => {}
            Err(e @ ClientError::LeaseLost { .. }) => {
                tracing::warn!("build {} attempt {}: {e}", job.build_id, job.attempt);
                lost.store(true, Ordering::SeqCst);
                cancel.store(true, Ordering::SeqCst);
                return;
            }
            // Retried inside; keep beating while the lease may still hold.
            Err(e) => tracing::warn!("build {}: {e}", job.build_id),
        }
    }
}

/// Sends the log lines in ordered chunks (every [`LOG_CHUNK_AGE`] or
/// [`LOG_CHUNK_BYTES`]) until the channel closes; each chunk is retried
/// before the next goes, so the hub's sequence has no holes.
async fn ship_log(
    client: HubClient,
    job: Job,
    mut lines: mpsc::UnboundedReceiver<String>,
) -> Result<(), ClientError> {
    let mut seq = 0i64;
    let mut chunk = String::new();
    let mut open = true;
    while open {
        // Wait for a first line, then gather until the chunk is full or old.
        match lines.recv().await {
            Some(line) => chunk.push_str(&line),
            None => break,
        }
        let deadline = tokio::time::Instant::now() + LOG_CHUNK_AGE;
        while chunk.len() < LOG_CHUNK_BYTES {
            match tokio::time::timeout_at(deadline, lines.recv()).await {
                Ok(Some(line)) => chunk.push_str(&line),
                Ok(None) => {
                    open = false;
                    break;
                }
                Err(_) => break,
            }
        }
        client.append_log(&job, seq, &chunk).await?;
        seq += 1;
        chunk.clear();
    }
    Ok(())
}

/// `path` as a relative path inside a tree (no `..`, not absolute).
fn safe_relative(path: &str) -> Option<PathBuf> {
    let path = Path::new(path);
    let normal = path
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    (normal && path.components().next().is_some()).then(|| path.to_owned())
}

/// Sets the flag when dropped: the builder in its blocking task stops at
/// its next step even when the async side went away.
/// What the hub's pages show of an image: its SIF id, provenance, labels,
/// and the final stage's `%help` and `%runscript` from the recipe stored in
/// it. What cannot be read is left out and logged; the image still publishes.
fn image_metadata(report: &BuildReport) -> serde_json::Value {
    let mut metadata = serde_json::json!({
        "sif_id": report.sif_id.to_string(),
        "provenance": report.provenance,
    });
    let mut sif = match SifFile::open(&report.output) {
        Ok(sif) => sif,
        Err(e) => {
            tracing::warn!(
                "image metadata of {}: {}",
                report.output.display(),
                error_chain(&e)
            );
            return metadata;
        }
    };
    match sif.labels() {
        Ok(Some(labels)) => metadata["labels"] = labels,
        Ok(None) => {}
        Err(e) => tracing::warn!("labels of {}: {}", report.output.display(), error_chain(&e)),
    }
    let recipe = match sif.recipe() {
        Ok(recipe) => recipe,
        Err(e) => {
            tracing::warn!("recipe of {}: {}", report.output.display(), error_chain(&e));
            None
        }
    };
    // The stored definition has its build arguments substituted already.
    let final_stage = recipe
        .as_deref()
        .and_then(|text| deffile::parse(text.as_bytes(), &BuildArgs::new()).ok())
        .and_then(|parsed| parsed.stages.last().cloned());
    if let Some(stage) = final_stage {
        for name in ["help", "runscript"] {
            if let Some(section) = stage.section(name) {
                metadata[name] = section.text.to_string_lossy().trim().into();
            }
        }
    }
    if let Some(recipe) = recipe {
        metadata["recipe"] = recipe.into();
    }
    metadata
}

struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
