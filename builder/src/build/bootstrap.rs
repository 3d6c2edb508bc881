//! Bootstrap agents: how a stage's root folder gets its first content.
//!
//! - `docker`: pulled over the OCI distribution API ([`crate::oci::Puller`])
//!   and its layers applied in order; the image config becomes
//!   `.singularity.d` env, runscript and labels, and `oci-config.json`.
//! - `oci`: an OCI image layout folder inside the build context
//!   (`From: layout:tag`, `From: layout@sha256:…`), applied the same way.
//! - `localimage`: a SIF (its primary squashfs partition), a bare squashfs
//!   file, or a sandbox folder, inside the build context (or a folder the
//!   options allow): the recipe cannot name the host's files.
//! - `scratch`: an empty root.
//! - `busybox`: the static busybox binary from `MirrorURL`, installed by
//!   itself (`busybox --install /bin`) inside the sandbox.
//!
//! Everything else (`library`, `shub`, `oras`, `debootstrap`, `yum`, …) is a
//! clear error naming the agent.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::deffile::Stage;
use crate::oci::{
    ApplyOptions, ApptainerFiles, BlobKind, ImageConfig, ImageReference, LayerApplier, PullEvent,
    PulledImage, Puller, RegistryConfig,
};
use crate::sandbox::{NetworkMode, RunSpec};
use crate::sif::{FsType, ObjectKind, SifFile, MAX_METADATA_SIZE};

use super::error::BuildError;
use super::log::BuildEvent;
use super::Build;

/// What a stage was bootstrapped from, as recorded in the provenance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseRecord {
    /// The agent (`docker`, `localimage`, …).
    pub bootstrap: String,
    /// `From:` as written in the recipe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The full reference pulled (`docker.io/library/ubuntu:22.04`), or
    /// the local image's path relative to the build context.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The digest it resolved to: the registry's manifest (or index) digest,
    /// or the sha256 of a local image file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// `registry/repository@digest`, which pulls exactly this image again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinned: Option<String>,
}

/// What the bootstrap hands to the rest of the stage.
#[derive(Debug, Default)]
pub(crate) struct Bootstrapped {
    pub record: BaseRecord,
    /// The image config's `config` object, stored as `oci-config.json`.
    pub oci_config_json: Option<String>,
    /// `.singularity.d` files derived from an OCI config, written after the base layout.
    pub apptainer_files: Option<ApptainerFiles>,
    /// Whether the base `.singularity.d` layout may overwrite existing files
    /// (not for a local image, as apptainer).
    pub overwrite_layout: bool,
    /// The base image name and digest for the build labels.
    pub label_base: Option<(String, String)>,
}

/// The step text for a stage's bootstrap.
pub(crate) fn describe(stage: &Stage) -> String {
    let agent = agent_of(stage);
    let from = stage.header.from().unwrap_or("").trim();
    match agent.as_str() {
        "docker" => {
            match ImageReference::from_recipe(
                from,
                stage.header.get("registry"),
                stage.header.get("namespace"),
            ) {
                Ok(r) => format!("pulling {r}"),
                Err(_) => format!("pulling {from}"),
            }
        }
        "oci" => format!("unpacking OCI layout {from}"),
        "localimage" => format!("unpacking local image {from}"),
        "scratch" => "starting from scratch".to_owned(),
        "busybox" => format!(
            "installing busybox from {}",
            stage.header.get("mirrorurl").unwrap_or("")
        ),
        other => format!("bootstrap {other}"),
    }
}

pub(crate) fn agent_of(stage: &Stage) -> String {
    stage
        .header
        .bootstrap()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn header_line(stage: &Stage, key: &str) -> usize {
    stage.header.entry(key).map_or(stage.line, |e| e.line)
}

/// Fills `root` (an empty folder) as the stage's agent says.
pub(crate) fn bootstrap(
    build: &mut Build<'_, '_>,
    stage: &Stage,
    root: &Path,
) -> Result<Bootstrapped, BuildError> {
    let agent = agent_of(stage);
    let line = header_line(stage, "bootstrap");
    match agent.as_str() {
        "docker" => docker(build, stage, root),
        "oci" => oci_layout(build, stage, root),
        "localimage" => local_image(build, stage, root),
        "scratch" => Ok(Bootstrapped {
            record: BaseRecord {
                bootstrap: agent,
                ..BaseRecord::default()
            },
            overwrite_layout: true,
            ..Bootstrapped::default()
        }),
        "busybox" => busybox(build, stage, root),
        _ => Err(BuildError::UnsupportedAgent { agent, line }),
    }
}

fn from_header(stage: &Stage, agent: &str) -> Result<(String, usize), BuildError> {
    let line = header_line(stage, "from");
    match stage.header.from().map(str::trim).filter(|f| !f.is_empty()) {
        Some(from) => Ok((from.to_owned(), line)),
        None => Err(BuildError::Header {
            line: header_line(stage, "bootstrap"),
            message: format!("bootstrap agent {agent} needs a From: header"),
        }),
    }
}

fn docker(
    build: &mut Build<'_, '_>,
    stage: &Stage,
    root: &Path,
) -> Result<Bootstrapped, BuildError> {
    let (from, line) = from_header(stage, "docker")?;
    let reference = ImageReference::from_recipe(
        &from,
        stage.header.get("registry"),
        stage.header.get("namespace"),
    )
    .map_err(|e| BuildError::Header {
        line,
        message: e.to_string(),
    })?;
    let puller = build.puller()?;
    let image = pull_with_events(&puller, &reference, build)?;
    for warning in &image.warnings {
        build.log.warn(warning.clone());
    }
    build.log.info(format!(
        "{reference} is {} (manifest {}, {} layers)",
        image.pinned_reference(),
        image.manifest_digest,
        image.layers.len()
    ));
    let layers: Vec<(PathBuf, String)> = image
        .layers
        .iter()
        .map(|l| (l.path.clone(), l.digest.clone()))
        .collect();
    apply_layers(build, root, &layers, &reference.to_string())?;
    Ok(Bootstrapped {
        record: BaseRecord {
            bootstrap: "docker".into(),
            from: Some(from),
            reference: Some(reference.to_string()),
            digest: Some(image.base_digest().to_owned()),
            pinned: Some(image.pinned_reference()),
        },
        oci_config_json: Some(image.config.container_config_json.clone()),
        apptainer_files: Some(image.apptainer_files()),
        overwrite_layout: true,
        label_base: Some((reference.to_string(), image.base_digest().to_owned())),
    })
}

/// Pulls on a helper thread, turning the puller's progress into build events.
fn pull_with_events(
    puller: &Puller,
    reference: &ImageReference,
    build: &mut Build<'_, '_>,
) -> Result<PulledImage, BuildError> {
    let (tx, rx) = std::sync::mpsc::channel::<BuildEvent>();
    let result = std::thread::scope(|scope| {
        let worker = scope.spawn(move || {
            let progress = move |event: &PullEvent<'_>| {
                let event = match *event {
                    PullEvent::Resolved { .. } => return,
                    PullEvent::BlobStarted {
                        digest,
                        kind,
                        size,
                        cached,
                    } => BuildEvent::Blob {
                        digest: digest.to_owned(),
                        kind,
                        downloaded: if cached { size } else { 0 },
                        size,
                        cached,
                        done: false,
                    },
                    PullEvent::BlobProgress {
                        digest,
                        downloaded,
                        size,
                    } => BuildEvent::Blob {
                        digest: digest.to_owned(),
                        kind: BlobKind::Layer,
                        downloaded,
                        size,
                        cached: false,
                        done: false,
                    },
                    PullEvent::BlobDone {
                        digest,
                        kind,
                        size,
                        cached,
                    } => BuildEvent::Blob {
                        digest: digest.to_owned(),
                        kind,
                        downloaded: size,
                        size,
                        cached,
                        done: true,
                    },
                };
                // The receiver lives until the pull returns.
                let _ = tx.send(event);
            };
            puller.pull_blocking(reference, &progress)
        });
        for event in rx {
            build.log.emit(event);
        }
        worker.join()
    });
    match result {
        Ok(pulled) => pulled.map_err(|source| BuildError::Pull {
            reference: reference.to_string(),
            source,
        }),
        Err(_) => Err(BuildError::Options(format!(
            "the pull of {reference} panicked"
        ))),
    }
}

fn apply_layers(
    build: &mut Build<'_, '_>,
    root: &Path,
    layers: &[(PathBuf, String)],
    reference: &str,
) -> Result<(), BuildError> {
    let unpack = |source| BuildError::Unpack {
        reference: reference.to_owned(),
        source,
    };
    let mut applier = LayerApplier::new(root, ApplyOptions::default()).map_err(unpack)?;
    for (i, (path, digest)) in layers.iter().enumerate() {
        let stats = applier.apply_file(path, digest).map_err(unpack)?;
        build.log.info(format!(
            "applied layer {}/{} {digest}: {} entries, {} files, {}",
            i + 1,
            layers.len(),
            stats.entries,
            stats.files,
            crate::sandbox::format_bytes(stats.bytes)
        ));
    }
    let report = applier.finish();
    for warning in report.warnings {
        build.log.warn(warning);
    }
    Ok(())
}

/// `Bootstrap: oci`: an OCI image layout folder in the build context.
fn oci_layout(
    build: &mut Build<'_, '_>,
    stage: &Stage,
    root: &Path,
) -> Result<Bootstrapped, BuildError> {
    let (from, line) = from_header(stage, "oci")?;
    let bad = |reason: String| BuildError::LocalImage {
        line,
        path: from.clone(),
        reason,
    };
    // `path:tag` or `path@sha256:…`; a bare path takes the only image.
    let (path_text, selector) = match from.rsplit_once('@') {
        Some((p, d)) => (p.to_owned(), Some(Selector::Digest(d.to_owned()))),
        None => match from.rsplit_once(':') {
            Some((p, t)) if !t.contains('/') => (p.to_owned(), Some(Selector::Tag(t.to_owned()))),
            _ => (from.clone(), None),
        },
    };
    let layout = build.local_path(&path_text).map_err(&bad)?;
    let read_json = |rel: &Path| -> Result<serde_json::Value, BuildError> {
        let path = layout.join(rel);
        let bytes =
            std::fs::read(&path).map_err(|e| bad(format!("cannot read {}: {e}", rel.display())))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| bad(format!("{}: invalid json: {e}", rel.display())))
    };
    let blob_path = |digest: &str| -> Result<PathBuf, BuildError> {
        crate::oci::reference::validate_digest(digest).map_err(|e| bad(e.to_string()))?;
        let hex = digest.trim_start_matches("sha256:");
        let path = layout.join("blobs").join("sha256").join(hex);
        let real = std::fs::canonicalize(&path).map_err(|e| bad(format!("blob {digest}: {e}")))?;
        if !real.starts_with(&layout) {
            return Err(bad(format!(
                "blob {digest} is a symlink leading out of the layout"
            )));
        }
        Ok(real)
    };
    let index = read_json(Path::new("index.json"))?;
    let mut descriptor = pick_descriptor(&index, selector.as_ref()).map_err(&bad)?;
    // An index inside the layout: resolve it to linux/amd64.
    for _ in 0..4 {
        let media = descriptor["mediaType"].as_str().unwrap_or_default();
        if !media.contains("index") && !media.contains("manifest.list") {
            break;
        }
        let digest = descriptor["digest"].as_str().unwrap_or_default().to_owned();
        let nested: serde_json::Value = serde_json::from_slice(
            &std::fs::read(blob_path(&digest)?).map_err(|e| bad(format!("blob {digest}: {e}")))?,
        )
        .map_err(|e| bad(format!("index {digest}: {e}")))?;
        descriptor = nested["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == "amd64")
            .cloned()
            .ok_or_else(|| bad(format!("index {digest} has no linux/amd64 image")))?;
    }
    let manifest_digest = descriptor["digest"]
        .as_str()
        .ok_or_else(|| bad("the image descriptor has no digest".into()))?
        .to_owned();
    let manifest_path = blob_path(&manifest_digest)?;
    let manifest_bytes =
        std::fs::read(&manifest_path).map_err(|e| bad(format!("manifest: {e}")))?;
    let manifest: serde_json::Value =
        serde_json::from_slice(&manifest_bytes).map_err(|e| bad(format!("manifest: {e}")))?;
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .ok_or_else(|| bad("the manifest has no config".into()))?
        .to_owned();
    let config_bytes =
        std::fs::read(blob_path(&config_digest)?).map_err(|e| bad(format!("config: {e}")))?;
    let config =
        ImageConfig::parse(&config_bytes, &config_digest).map_err(|e| bad(e.to_string()))?;
    let mut layers = Vec::new();
    for layer in manifest["layers"].as_array().into_iter().flatten() {
        let digest = layer["digest"]
            .as_str()
            .ok_or_else(|| bad("a layer has no digest".into()))?
            .to_owned();
        let path = blob_path(&digest)?;
        let actual = crate::oci::cache::sha256_file(&path)
            .map_err(|e| bad(format!("layer {digest}: {e}")))?;
        if actual != digest {
            return Err(bad(format!("layer {digest} hashes to {actual}")));
        }
        layers.push((path, digest));
    }
    build.log.info(format!(
        "{from}: manifest {manifest_digest}, {} layers",
        layers.len()
    ));
    apply_layers(build, root, &layers, &from)?;
    Ok(Bootstrapped {
        record: BaseRecord {
            bootstrap: "oci".into(),
            from: Some(from.clone()),
            reference: Some(build.context_relative(&layout)),
            digest: Some(manifest_digest),
            pinned: None,
        },
        oci_config_json: Some(config.container_config_json.clone()),
        apptainer_files: Some(config.apptainer_files()),
        overwrite_layout: true,
        label_base: None,
    })
}

enum Selector {
    Tag(String),
    Digest(String),
}

fn pick_descriptor(
    index: &serde_json::Value,
    selector: Option<&Selector>,
) -> Result<serde_json::Value, String> {
    let manifests: Vec<&serde_json::Value> = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let found = match selector {
        Some(Selector::Tag(tag)) => manifests
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag.as_str()),
        Some(Selector::Digest(digest)) => manifests.iter().find(|m| m["digest"] == digest.as_str()),
        None if manifests.len() == 1 => manifests.first(),
        None => {
            return Err(format!(
                "the layout holds {} images: name one with :tag or @digest",
                manifests.len()
            ))
        }
    };
    found.map(|m| (*m).clone()).ok_or_else(|| match selector {
        Some(Selector::Tag(t)) => format!("no image tagged {t:?} in the layout"),
        Some(Selector::Digest(d)) => format!("no image {d} in the layout"),
        None => "the layout holds no image".to_owned(),
    })
}

/// `Bootstrap: localimage`.
fn local_image(
    build: &mut Build<'_, '_>,
    stage: &Stage,
    root: &Path,
) -> Result<Bootstrapped, BuildError> {
    let (from, line) = from_header(stage, "localimage")?;
    let bad = |reason: String| BuildError::LocalImage {
        line,
        path: from.clone(),
        reason,
    };
    let path = build.local_path(&from).map_err(&bad)?;
    let meta = std::fs::metadata(&path).map_err(|e| bad(e.to_string()))?;
    let mut record = BaseRecord {
        bootstrap: "localimage".into(),
        from: Some(from.clone()),
        reference: Some(build.context_relative(&path)),
        ..BaseRecord::default()
    };
    let mut oci_config_json = None;
    if meta.is_dir() {
        build.log.info(format!("copying the sandbox folder {from}"));
        let max = build.options.limits.disk;
        let stats = super::files::copy_root(&path, root, max)
            .map_err(|reason| bad(format!("cannot copy it: {reason}")))?;
        for warning in stats.warnings {
            build.log.warn(warning);
        }
    } else {
        let digest = crate::oci::cache::sha256_file(&path).map_err(|e| bad(e.to_string()))?;
        record.digest = Some(digest);
        let mut magic = [0u8; 4];
        std::fs::File::open(&path)
            .and_then(|mut f| f.read_exact(&mut magic))
            .map_err(|e| bad(e.to_string()))?;
        let offset = if &magic == b"hsqs" {
            0
        } else {
            let mut sif = SifFile::open(&path).map_err(|e| bad(e.to_string()))?;
            let partition = *sif
                .primary_partition()
                .ok_or_else(|| bad("the SIF image has no primary system partition".into()))?;
            if sif.primary_fs_type() != Some(FsType::Squashfs) {
                return Err(bad(format!(
                    "its primary partition is {}, not squashfs",
                    sif.primary_fs_type()
                        .map_or("unknown".into(), |t| t.to_string())
                )));
            }
            let config_id = sif
                .descriptors()
                .iter()
                .find(|d| d.kind() == ObjectKind::GenericJson && d.name() == OCI_CONFIG_JSON)
                .map(|d| d.id);
            if let Some(id) = config_id {
                let bytes = sif
                    .read_object_bytes(id, MAX_METADATA_SIZE)
                    .map_err(|e| bad(e.to_string()))?;
                oci_config_json = Some(String::from_utf8_lossy(&bytes).into_owned());
            }
            partition.offset.unsigned_abs()
        };
        build
            .log
            .info(format!("extracting the root filesystem of {from}"));
        let limits = build.options.limits.clone();
        let sandbox = &build.sandbox;
        let log = &mut build.log;
        crate::run::unsquash(sandbox, &path, offset, root, limits, &mut |l| {
            log.command(l)
        })
        .map_err(|e| bad(e.to_string()))?;
    }
    Ok(Bootstrapped {
        record,
        oci_config_json,
        apptainer_files: None,
        overwrite_layout: false,
        label_base: None,
    })
}

/// apptainer's name for the OCI config object in a SIF.
pub(crate) const OCI_CONFIG_JSON: &str = "oci-config.json";

/// `Bootstrap: busybox`.
fn busybox(
    build: &mut Build<'_, '_>,
    stage: &Stage,
    root: &Path,
) -> Result<Bootstrapped, BuildError> {
    let line = header_line(stage, "mirrorurl");
    let Some(url) = stage
        .header
        .get("mirrorurl")
        .map(str::trim)
        .filter(|u| !u.is_empty())
    else {
        return Err(BuildError::Header {
            line: header_line(stage, "bootstrap"),
            message:
                "bootstrap agent busybox needs a MirrorURL: header (the busybox binary to download)"
                    .into(),
        });
    };
    let bad = |reason: String| BuildError::Busybox {
        line,
        url: url.to_owned(),
        reason,
    };
    for (rel, content) in [
        ("etc/passwd", "root:!:0:0:root:/root:/bin/sh"),
        ("etc/group", " root:x:0:"),
        (
            "etc/hosts",
            "127.0.0.1   localhost localhost.localdomain localhost4 localhost4.localdomain4",
        ),
    ] {
        crate::oci::inroot::write_file(root, Path::new(rel), content.as_bytes(), 0o664)
            .map_err(|e| bad(format!("cannot write /{rel}: {e}")))?;
    }
    let binary = download(url, build.options.limits.disk).map_err(&bad)?;
    let target = crate::oci::inroot::write_file(root, Path::new("bin/busybox"), &binary, 0o755)
        .map_err(|e| bad(format!("cannot write /bin/busybox: {e}")))?;
    let digest = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&binary))
    );
    build.log.info(format!(
        "downloaded {} ({digest}) to /{}",
        crate::sandbox::format_bytes(binary.len() as u64),
        target.display()
    ));
    std::fs::set_permissions(root.join(&target), std::fs::Permissions::from_mode(0o755))
        .map_err(|e| bad(format!("cannot make /bin/busybox executable: {e}")))?;
    // The downloaded binary is untrusted: it installs its links in the sandbox.
    let spec =
        RunSpec::in_folder(root, ["/bin/busybox", "--install", "/bin"]).network(NetworkMode::None);
    build.run_checked(&spec, "busybox --install", "bootstrap", line)?;
    Ok(Bootstrapped {
        record: BaseRecord {
            bootstrap: "busybox".into(),
            from: Some(url.to_owned()),
            reference: Some(url.to_owned()),
            digest: Some(digest),
            pinned: None,
        },
        overwrite_layout: true,
        ..Bootstrapped::default()
    })
}

/// Downloads `url` into memory (a busybox binary is ~1 MiB), at most
/// `limit` bytes. On its own thread: the caller may be inside an async
/// runtime's blocking pool, where a second runtime cannot start.
fn download(url: &str, limit: u64) -> Result<Vec<u8>, String> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| download_here(url, limit))
            .join()
            .unwrap_or_else(|_| Err("the download thread panicked".to_owned()))
    })
}

fn download_here(url: &str, limit: u64) -> Result<Vec<u8>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the download runtime: {e}"))?;
    runtime.block_on(async {
        let response = reqwest::Client::new()
            .get(url)
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("the server answered {status}"));
        }
        let expected = response.content_length();
        let mut body = Vec::new();
        let mut response = response;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("download failed: {e}"))?
        {
            body.extend_from_slice(&chunk);
            if body.len() as u64 > limit {
                return Err(format!(
                    "larger than the disk limit of {}",
                    crate::sandbox::format_bytes(limit)
                ));
            }
        }
        if let Some(expected) = expected {
            if expected != body.len() as u64 {
                return Err(format!("received {} bytes of {expected}", body.len()));
            }
        }
        Ok(body)
    })
}

/// Where `Bootstrap: docker` pulls go by default: `~/.cache/sifhub/oci`.
pub(crate) fn registry_config(
    cache_dir: &Path,
    insecure: &[String],
) -> Result<RegistryConfig, BuildError> {
    let mut config = RegistryConfig::new(cache_dir)
        .with_env_credentials()
        .map_err(|e| BuildError::Options(e.to_string()))?;
    config.insecure_registries = insecure.to_vec();
    Ok(config)
}
