//! `sifhub inspect IMAGE.sif [--json]`: print a SIF image's header, every
//! descriptor with its type-specific metadata, and, where present, the
//! recipe, the labels, other JSON metadata and the primary partition's
//! filesystem type.
//!
//! A file that is not a SIF image, or is truncated or corrupt, is an error
//! naming the path. Metadata objects that exist but cannot be decoded (bad
//! JSON, absurd size) become warnings so the rest is still shown.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use serde::Serialize;
use sifhub_builder::sif::{
    format_unix_time, DataType, Descriptor, Link, ObjectKind, SifError, SifFile,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The SIF image to inspect.
    pub image: PathBuf,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> super::CliResult {
    let report = Report::read(&args.image)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Everything `inspect` shows; its serde form is the `--json` document, so
/// field names and order here are the stable output format.
#[derive(Debug, Serialize)]
struct Report {
    path: String,
    header: HeaderReport,
    descriptors: Vec<DescriptorReport>,
    primary_partition: Option<PrimaryPartitionReport>,
    recipe: Option<String>,
    labels: Option<serde_json::Value>,
    json_objects: Vec<JsonObjectReport>,
    warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
struct HeaderReport {
    id: String,
    arch: &'static str,
    version: String,
    launch_script: String,
    created_at: i64,
    created_at_utc: String,
    modified_at: i64,
    modified_at_utc: String,
    descriptors_free: i64,
    descriptors_total: i64,
    descriptors_offset: i64,
    descriptors_size: i64,
    data_offset: i64,
    data_size: i64,
    file_size: u64,
}

#[derive(Debug, Serialize)]
struct DescriptorReport {
    id: u32,
    /// Stable lowercase type label, e.g. "partition".
    #[serde(rename = "type")]
    data_type: &'static str,
    type_code: i32,
    group: Option<u32>,
    link: Option<LinkReport>,
    offset: i64,
    size: i64,
    size_with_padding: i64,
    name: String,
    created_at: i64,
    modified_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    partition: Option<PartitionReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signature: Option<SignatureReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    crypto_message: Option<CryptoMessageReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sbom: Option<SbomReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    oci_digest: Option<String>,
}

#[derive(Debug, Serialize)]
struct LinkReport {
    /// "object" or "group".
    kind: &'static str,
    id: u32,
}

#[derive(Debug, Serialize)]
struct PartitionReport {
    fs_type: &'static str,
    part_type: &'static str,
    arch: &'static str,
}

#[derive(Debug, Serialize)]
struct SignatureReport {
    hash_type: &'static str,
    /// Upper-case hex, as siftool prints it.
    fingerprint: Option<String>,
}

#[derive(Debug, Serialize)]
struct CryptoMessageReport {
    format: &'static str,
    message: &'static str,
}

#[derive(Debug, Serialize)]
struct SbomReport {
    format: &'static str,
}

#[derive(Debug, Serialize)]
struct PrimaryPartitionReport {
    id: u32,
    fs_type: &'static str,
    arch: &'static str,
}

#[derive(Debug, Serialize)]
struct JsonObjectReport {
    id: u32,
    name: String,
    value: serde_json::Value,
}

impl Report {
    /// Opens the image and gathers the report; fails only if the image
    /// itself cannot be read.
    fn read(path: &std::path::Path) -> Result<Report, SifError> {
        let mut sif = SifFile::open(path)?;
        let header = sif.header();
        let header_report = HeaderReport {
            id: header.id.to_string(),
            arch: header.arch.go_name(),
            version: header.version_text(),
            launch_script: header.launch_script_text(),
            created_at: header.created_at,
            created_at_utc: format_unix_time(header.created_at),
            modified_at: header.modified_at,
            modified_at_utc: format_unix_time(header.modified_at),
            descriptors_free: header.descriptors_free,
            descriptors_total: header.descriptors_total,
            descriptors_offset: header.descriptors_offset,
            descriptors_size: header.descriptors_size,
            data_offset: header.data_offset,
            data_size: header.data_size,
            file_size: sif.file_len(),
        };
        let descriptors = sif.descriptors().iter().map(describe).collect();
        let primary_partition = sif.primary_partition().and_then(|d| {
            d.partition().map(|p| PrimaryPartitionReport {
                id: d.id,
                fs_type: p.fs_type.label(),
                arch: p.arch.go_name(),
            })
        });

        let mut warnings = Vec::new();
        let recipe = sif.recipe().unwrap_or_else(|err| {
            warnings.push(format!("recipe not shown: {err}"));
            None
        });
        let labels = sif.labels().unwrap_or_else(|err| {
            warnings.push(format!("labels not shown: {}", crate::error_chain(&err)));
            None
        });
        let generic_json: Vec<(u32, String)> = sif
            .descriptors_of(DataType::GenericJson)
            .map(|d| (d.id, d.name()))
            .collect();
        let mut json_objects = Vec::new();
        for (id, name) in generic_json {
            match sif.read_json(id) {
                Ok(value) => json_objects.push(JsonObjectReport { id, name, value }),
                Err(err) => warnings.push(format!(
                    "JSON object {id} not shown: {}",
                    crate::error_chain(&err)
                )),
            }
        }

        Ok(Report {
            path: path.display().to_string(),
            header: header_report,
            descriptors,
            primary_partition,
            recipe,
            labels,
            json_objects,
            warnings,
        })
    }

    /// The human-readable form.
    fn to_text(&self) -> String {
        let h = &self.header;
        let mut out = String::new();
        let mut line = |key: &str, value: String| {
            let _ = writeln!(out, "{key:<13} {value}");
        };
        line("Image:", self.path.clone());
        line("ID:", h.id.clone());
        line("Arch:", h.arch.to_string());
        line("Version:", h.version.clone());
        if !h.launch_script.is_empty() {
            line("Launch:", h.launch_script.trim_end().to_string());
        }
        line(
            "Created:",
            format!("{} ({})", h.created_at_utc, h.created_at),
        );
        line(
            "Modified:",
            format!("{} ({})", h.modified_at_utc, h.modified_at),
        );
        line(
            "Descriptors:",
            format!(
                "{} used, {} free of {} (table at offset {}, {} bytes)",
                self.descriptors.len(),
                h.descriptors_free,
                h.descriptors_total,
                h.descriptors_offset,
                h.descriptors_size
            ),
        );
        line(
            "Data:",
            format!(
                "offset {}, {} bytes (file {} bytes)",
                h.data_offset, h.data_size, h.file_size
            ),
        );
        match &self.primary_partition {
            Some(p) => line(
                "Primary:",
                format!("object {} ({}, {})", p.id, p.fs_type, p.arch),
            ),
            None => line("Primary:", "none".into()),
        }

        out.push('\n');
        out.push_str(&descriptor_table(&self.descriptors));

        if let Some(recipe) = &self.recipe {
            out.push_str("\nRecipe:\n");
            for text in recipe.lines() {
                let _ = writeln!(out, "  {text}");
            }
        }
        if let Some(labels) = &self.labels {
            out.push_str("\nLabels:\n");
            push_indented_json(&mut out, labels);
        }
        for object in &self.json_objects {
            let _ = writeln!(out, "\nJSON object {} {:?}:", object.id, object.name);
            push_indented_json(&mut out, &object.value);
        }
        out
    }
}

/// The report entry for one descriptor.
fn describe(d: &Descriptor) -> DescriptorReport {
    let mut report = DescriptorReport {
        id: d.id,
        data_type: d.data_type.label(),
        type_code: d.data_type.code(),
        group: d.group(),
        link: match d.link() {
            Link::None => None,
            Link::Object(id) => Some(LinkReport { kind: "object", id }),
            Link::Group(id) => Some(LinkReport { kind: "group", id }),
        },
        offset: d.offset,
        size: d.size,
        size_with_padding: d.size_with_padding,
        name: d.name(),
        created_at: d.created_at,
        modified_at: d.modified_at,
        partition: None,
        signature: None,
        crypto_message: None,
        sbom: None,
        oci_digest: None,
    };
    match d.kind() {
        ObjectKind::Partition(p) => {
            report.partition = Some(PartitionReport {
                fs_type: p.fs_type.label(),
                part_type: p.part_type.label(),
                arch: p.arch.go_name(),
            });
        }
        ObjectKind::Signature(s) => {
            report.signature = Some(SignatureReport {
                hash_type: s.hash_type.label(),
                fingerprint: s.fingerprint_hex(),
            });
        }
        ObjectKind::CryptoMessage(m) => {
            report.crypto_message = Some(CryptoMessageReport {
                format: m.format.label(),
                message: m.message.label(),
            });
        }
        ObjectKind::Sbom(format) => {
            report.sbom = Some(SbomReport {
                format: format.label(),
            });
        }
        ObjectKind::OciRootIndex { digest } | ObjectKind::OciBlob { digest } => {
            report.oci_digest = Some(digest);
        }
        ObjectKind::Deffile
        | ObjectKind::EnvVars
        | ObjectKind::Labels
        | ObjectKind::GenericJson
        | ObjectKind::Generic
        | ObjectKind::Other(_) => {}
    }
    report
}

/// The descriptor table as aligned text columns.
fn descriptor_table(descriptors: &[DescriptorReport]) -> String {
    let headings = [
        "ID", "TYPE", "GROUP", "LINK", "OFFSET", "SIZE", "NAME", "DETAILS",
    ];
    let rows: Vec<[String; 8]> = descriptors
        .iter()
        .map(|d| {
            [
                d.id.to_string(),
                d.data_type.to_string(),
                d.group.map_or("none".into(), |g| g.to_string()),
                match &d.link {
                    None => "none".into(),
                    Some(l) if l.kind == "group" => format!("group {}", l.id),
                    Some(l) => l.id.to_string(),
                },
                d.offset.to_string(),
                d.size.to_string(),
                d.name.clone(),
                details(d),
            ]
        })
        .collect();
    let mut widths = headings.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push_row = |cells: &[&str]| {
        let mut text = String::new();
        for (cell, width) in cells.iter().zip(widths) {
            let _ = write!(text, "{cell:<width$}  ");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    push_row(&headings);
    for row in &rows {
        push_row(&row.each_ref().map(String::as_str));
    }
    out
}

/// Type-specific metadata in one short cell.
fn details(d: &DescriptorReport) -> String {
    if let Some(p) = &d.partition {
        return format!("{}/{}/{}", p.fs_type, p.part_type, p.arch);
    }
    if let Some(s) = &d.signature {
        return match &s.fingerprint {
            Some(fp) => format!("{} {fp}", s.hash_type),
            None => s.hash_type.to_string(),
        };
    }
    if let Some(m) = &d.crypto_message {
        return format!("{}/{}", m.format, m.message);
    }
    if let Some(s) = &d.sbom {
        return s.format.to_string();
    }
    d.oci_digest.clone().unwrap_or_default()
}

fn push_indented_json(out: &mut String, value: &serde_json::Value) {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    for line in text.lines() {
        let _ = writeln!(out, "  {line}");
    }
}
