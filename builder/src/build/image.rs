//! The last stage becomes the image: a squashfs of its root and a SIF with
//! apptainer's objects, in apptainer's order (`assemblers/sif.go`): the
//! definition, the JSON objects sorted by name, then the squashfs as the
//! primary system partition (amd64). sifhub adds its provenance record as one
//! more JSON object, `sifhub-provenance.json`, which sorts after apptainer's.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::deffile::Recipe;
use crate::sif::{
    format_unix_time, Arch, DescriptorInput, FsType, ObjectKind, PartType, PartitionInfo,
    SifBuilder, Uuid,
};
use crate::squashfs::{squash, SquashOptions};

use super::bootstrap::BaseRecord;
use super::error::BuildError;
use super::log::BuildEvent;
use super::stage::StageOutcome;
use super::{build_args_map, Build};

/// Numbered steps this part adds: squashfs, SIF.
pub(crate) const STEPS: usize = 2;

/// apptainer's name of the inspect metadata object.
pub const INSPECT_METADATA_JSON: &str = "inspect-metadata.json";
/// apptainer's name of the OCI config object.
pub const OCI_CONFIG_JSON: &str = super::bootstrap::OCI_CONFIG_JSON;
/// The name of sifhub's provenance object.
pub const PROVENANCE_JSON: &str = "sifhub-provenance.json";
/// The `schema` value of [`Provenance`].
pub const PROVENANCE_SCHEMA: &str = "https://sifhub.dev/provenance/v1";

/// Where an image came from: stored in the SIF as `sifhub-provenance.json`,
/// so anyone can rebuild it with the same recipe, commit and base digests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    pub schema: String,
    /// The recipe's path relative to the build context (or as the builder was told).
    pub recipe: String,
    /// sha256 (hex) of the recipe file as read.
    pub recipe_sha256: String,
    /// The source commit, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// `sifhub <version>`.
    pub builder: String,
    /// The `--build-arg` values.
    #[serde(default)]
    pub build_args: BTreeMap<String, String>,
    /// The image time, RFC 3339.
    pub created: String,
    /// The image time, Unix seconds.
    pub created_unix: i64,
    /// The final stage's base image.
    pub base: BaseRecord,
    /// Every stage's base, in order.
    pub stages: Vec<StageRecord>,
    /// Squashfs compression.
    pub compression: String,
    /// Image architecture (`amd64`).
    pub arch: String,
}

/// One stage in the provenance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub base: BaseRecord,
}

/// What [`write_image`] produced.
pub(crate) struct Written {
    pub sha256: String,
    pub size: u64,
    pub sif_id: Uuid,
    pub provenance: Provenance,
}

/// Squashes the last stage and writes the SIF to the output path.
pub(crate) fn write_image(
    build: &mut Build<'_, '_>,
    recipe: &Recipe,
    stages: &[StageOutcome],
    recipe_sha256: &str,
) -> Result<Written, BuildError> {
    let options = build.options;
    let last = stages
        .last()
        .ok_or_else(|| BuildError::Options("the recipe has no stage".into()))?;

    build.log.step(format!(
        "making the squashfs partition ({})",
        options.compression.as_str()
    ))?;
    let squashfs = build.work.join("rootfs.squashfs");
    let squash_options = SquashOptions {
        compression: options.compression,
        timestamp: options.timestamp.and_then(|t| u64::try_from(t).ok()),
        ..SquashOptions::default()
    };
    {
        let log = &mut *build.log;
        squash(&last.root, &squashfs, &squash_options, &mut |percent| {
            log.emit(BuildEvent::Squash { percent })
        })?;
    }
    let squash_size = std::fs::metadata(&squashfs)
        .map_err(BuildError::io("cannot read", &squashfs))?
        .len();
    let squash_sha = sha256_file(&squashfs)?;
    build.log.info(format!(
        "squashfs {} (sha256:{squash_sha})",
        crate::sandbox::format_bytes(squash_size)
    ));

    build
        .log
        .step(format!("writing {}", options.output.display()))?;
    let recipe_name = match &options.recipe_name {
        Some(name) => name.clone(),
        None => {
            let recipe_path =
                std::fs::canonicalize(&options.recipe).unwrap_or_else(|_| options.recipe.clone());
            build.context_relative(&recipe_path)
        }
    };
    let provenance = Provenance {
        schema: PROVENANCE_SCHEMA.into(),
        recipe: recipe_name,
        recipe_sha256: recipe_sha256.to_owned(),
        commit: options.commit.clone(),
        builder: format!("sifhub {}", env!("CARGO_PKG_VERSION")),
        build_args: build_args_map(&options.build_args),
        created: format_unix_time(build.timestamp),
        created_unix: build.timestamp,
        base: last.base.clone(),
        stages: stages
            .iter()
            .map(|s| StageRecord {
                name: s.name.clone(),
                base: s.base.clone(),
            })
            .collect(),
        compression: options.compression.as_str().into(),
        arch: "amd64".into(),
    };
    let provenance_json = serde_json::to_string_pretty(&provenance)
        .map_err(|e| BuildError::Options(format!("cannot encode the provenance: {e}")))?;
    let inspect_json = go_json_compact(&last.inspect);

    // The JSON objects, sorted by name as apptainer adds them.
    let mut json_objects: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
    json_objects.insert(INSPECT_METADATA_JSON, inspect_json.into_bytes());
    if let Some(config) = &last.oci_config_json {
        json_objects.insert(OCI_CONFIG_JSON, config.clone().into_bytes());
    }
    json_objects.insert(PROVENANCE_JSON, provenance_json.into_bytes());

    // The id names the content: the same inputs give the same image.
    let mut content = Sha256::new();
    content.update(recipe.definition.as_bytes());
    for (name, bytes) in &json_objects {
        content.update(name.as_bytes());
        content.update(Sha256::digest(bytes));
    }
    content.update(squash_sha.as_bytes());
    let sif_id = Uuid::new_v5(&sif_id_namespace(), &content.finalize());

    let mut sif = SifBuilder::new().id(sif_id).timestamp(build.timestamp);
    sif.add_bytes(
        DescriptorInput::new(ObjectKind::Deffile),
        recipe.definition.as_bytes().to_vec(),
    );
    for (name, bytes) in json_objects {
        sif.add_bytes(
            DescriptorInput::new(ObjectKind::GenericJson).name(name),
            bytes,
        );
    }
    sif.add_file(
        DescriptorInput::new(ObjectKind::Partition(PartitionInfo {
            fs_type: FsType::Squashfs,
            part_type: PartType::PrimarySystem,
            arch: Arch::AMD64,
        })),
        &squashfs,
    );
    sif.write_to(&options.output)?;
    let size = std::fs::metadata(&options.output)
        .map_err(BuildError::io("cannot read", &options.output))?
        .len();
    let sha256 = sha256_file(&options.output)?;
    Ok(Written {
        sha256,
        size,
        sif_id,
        provenance,
    })
}

/// The namespace of content-derived SIF ids.
fn sif_id_namespace() -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_URL, b"https://sifhub.dev/sif-id")
}

/// sha256 (hex) of a file, streamed.
pub(crate) fn sha256_file(path: &Path) -> Result<String, BuildError> {
    let mut file = std::fs::File::open(path).map_err(BuildError::io("cannot open", path))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buffer)
            .map_err(BuildError::io("cannot read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Go's `json.Marshal`: compact, with `<`, `>`, `&`, U+2028 and U+2029
/// escaped (they only ever occur inside strings), so the inspect object
/// reads as apptainer's own.
pub fn go_json_compact<T: Serialize>(value: &T) -> String {
    let text = serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned());
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_json_escapes_html_characters() {
        let value = serde_json::json!({"deffile": "echo a > b && c < d"});
        assert_eq!(
            go_json_compact(&value),
            r#"{"deffile":"echo a \u003e b \u0026\u0026 c \u003c d"}"#
        );
    }

    #[test]
    fn provenance_round_trips() {
        let p = Provenance {
            schema: PROVENANCE_SCHEMA.into(),
            recipe: "Singularity".into(),
            recipe_sha256: "ab".into(),
            commit: None,
            builder: "sifhub 0".into(),
            build_args: BTreeMap::new(),
            created: "1970-01-01T00:00:00Z".into(),
            created_unix: 0,
            base: BaseRecord::default(),
            stages: vec![],
            compression: "gzip".into(),
            arch: "amd64".into(),
        };
        let text = serde_json::to_string(&p).unwrap();
        assert!(!text.contains("commit"));
        assert_eq!(serde_json::from_str::<Provenance>(&text).unwrap(), p);
    }
}
