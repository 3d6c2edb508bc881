//! SIF interoperability against the reference `siftool` (sylabs/sif 2.8.3):
//! images we write must read correctly in siftool, images siftool writes
//! must read the same in `sifhub inspect` and our reader, our writer must be
//! deterministic, and `sifhub inspect` must reject broken files clearly.

// Helpers here are test code too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use sifhub_builder::sif::{
    Arch, CryptoMessageInfo, DescriptorInput, FormatType, FsType, HashType, Link, MessageType,
    ObjectKind, PartType, PartitionInfo, SbomFormat, SifBuilder, SifFile, SifLayout, SignatureInfo,
    Uuid,
};
use sifhub_tests::{oracle, sifhub, system_tool};

const IMAGE_TIME: i64 = 1_700_000_000;
const IMAGE_TIME_GO: &str = "2023-11-14 22:13:20 +0000 UTC";
const FINGERPRINT_HEX: &str = "433FE984155206BD962725E20E8713472A879943";
const RECIPE: &str = "Bootstrap: docker\nFrom: alpine:3.19\n\n%post\n    echo built by sifhub\n";
const LABELS: &str = r#"{"maintainer":"sifhub tests","org.label-schema.schema-version":"1.0"}"#;
const OCI_CONFIG: &str = r#"{"Env":["PATH=/usr/bin"],"Cmd":["/bin/sh"]}"#;

/// Runs a command, failing the test with its stderr unless it succeeds.
fn run_ok(program: &Path, args: &[&dyn AsRef<OsStr>]) -> Output {
    let mut command = Command::new(program);
    for arg in args {
        command.arg(arg);
    }
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    assert!(
        output.status.success(),
        "{} {:?} failed: {}\n{}",
        program.display(),
        args.iter()
            .map(|a| a.as_ref().to_owned())
            .collect::<Vec<_>>(),
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    output
}

fn siftool(args: &[&dyn AsRef<OsStr>]) -> Output {
    run_ok(&oracle("siftool"), args)
}

/// A small squashfs image of a temp tree, made by the real mksquashfs.
fn make_squashfs(dir: &Path) -> PathBuf {
    let tree = dir.join("rootfs");
    fs::create_dir_all(tree.join("etc")).unwrap();
    fs::create_dir_all(tree.join("bin")).unwrap();
    fs::write(tree.join("etc/os-release"), "ID=sifhub-test\n").unwrap();
    fs::write(
        tree.join("bin/hello"),
        "#!/bin/sh\necho hello\n".repeat(300),
    )
    .unwrap();
    let image = dir.join("rootfs.squashfs");
    run_ok(
        &system_tool("mksquashfs", "squashfs-tools"),
        &[&tree, &image, &"-noappend", &"-quiet", &"-no-progress"],
    );
    image
}

/// Parses `Key: value` lines (siftool header / info) with whitespace runs
/// collapsed.
fn key_values(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_string(), squash_spaces(value)))
        .collect()
}

fn squash_spaces(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// One row of `siftool list`.
#[derive(Debug, Clone, PartialEq)]
struct ListRow {
    id: u32,
    group: String,
    link: String,
    start: i64,
    end: i64,
    kind: String,
}

fn siftool_list(image: &Path) -> Vec<ListRow> {
    let output = siftool(&[&"list", &image]);
    let text = String::from_utf8(output.stdout).unwrap();
    let rows: Vec<ListRow> = text
        .lines()
        .filter(|line| !line.starts_with("---") && !line.starts_with("ID "))
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            assert_eq!(cells.len(), 5, "unexpected siftool list line: {line:?}");
            let (start, end) = cells[3].split_once('-').unwrap();
            ListRow {
                id: cells[0].parse().unwrap(),
                group: squash_spaces(cells[1]),
                link: squash_spaces(cells[2]),
                start: start.parse().unwrap(),
                end: end.parse().unwrap(),
                kind: cells[4].to_string(),
            }
        })
        .collect();
    assert!(!rows.is_empty(), "siftool list printed no objects:\n{text}");
    rows
}

fn siftool_info(image: &Path, id: u32) -> BTreeMap<String, String> {
    let output = siftool(&[&"info", &id.to_string(), &image]);
    key_values(&String::from_utf8(output.stdout).unwrap())
}

fn siftool_dump(image: &Path, id: u32) -> Vec<u8> {
    siftool(&[&"dump", &id.to_string(), &image]).stdout
}

fn fingerprint() -> [u8; 20] {
    let bytes = hex::decode(FINGERPRINT_HEX).unwrap();
    bytes.try_into().unwrap()
}

/// What one object of our test image should look like to siftool.
struct Expected {
    bytes: Vec<u8>,
    name: &'static str,
    siftool_type: &'static str,
    group: &'static str,
    link: &'static str,
    extra_info: Vec<(&'static str, String)>,
}

/// Writes an image with one object of every interesting kind and returns
/// its layout and, per object, what siftool should report.
fn write_our_image(dir: &Path, squashfs: &Path, out: &Path) -> (SifLayout, Vec<Expected>) {
    let squashfs_bytes = fs::read(squashfs).unwrap();
    let signature = b"-----BEGIN PGP SIGNATURE-----\nnot really\n-----END PGP SIGNATURE-----\n";
    let sbom = br#"{"spdxVersion":"SPDX-2.3","name":"rootfs"}"#;
    let key = b"-----BEGIN MESSAGE-----\nAAAA\n-----END MESSAGE-----\n";
    let blob: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    let blob_path = dir.join("blob.bin");
    fs::write(&blob_path, &blob).unwrap();

    let mut builder = SifBuilder::new()
        .id(Uuid::from_u128(0x5eed_0000_0000_4000_8000_0000_0000_0001))
        .timestamp(IMAGE_TIME);
    builder
        .add_bytes(DescriptorInput::new(ObjectKind::Deffile), RECIPE)
        .add_bytes(
            DescriptorInput::new(ObjectKind::Labels).name("labels.json"),
            LABELS,
        )
        .add_object(
            DescriptorInput::new(ObjectKind::GenericJson)
                .group(2)
                .name("oci-config.json"),
            OCI_CONFIG.as_bytes(),
        )
        .add_file(
            DescriptorInput::new(ObjectKind::Partition(PartitionInfo {
                fs_type: FsType::Squashfs,
                part_type: PartType::PrimarySystem,
                arch: Arch::AMD64,
            }))
            .name("rootfs"),
            squashfs,
        )
        .add_bytes(
            DescriptorInput::new(ObjectKind::Signature(SignatureInfo {
                hash_type: HashType::Sha256,
                fingerprint: Some(fingerprint()),
            }))
            .no_group()
            .link(Link::Object(4)),
            &signature[..],
        )
        .add_bytes(
            DescriptorInput::new(ObjectKind::Sbom(SbomFormat::SpdxJson)).no_group(),
            &sbom[..],
        )
        .add_bytes(
            DescriptorInput::new(ObjectKind::CryptoMessage(CryptoMessageInfo {
                format: FormatType::Pem,
                message: MessageType::RsaOaep,
            }))
            .link(Link::Object(4)),
            &key[..],
        )
        .add_file(
            DescriptorInput::new(ObjectKind::Generic)
                .group(3)
                .link(Link::Group(1))
                .alignment(512)
                .name("blob.bin"),
            &blob_path,
        );
    let layout = builder.write_to(out).unwrap();

    let expected = vec![
        Expected {
            bytes: RECIPE.as_bytes().to_vec(),
            name: "",
            siftool_type: "Def.FILE",
            group: "1",
            link: "NONE",
            extra_info: vec![],
        },
        Expected {
            bytes: LABELS.as_bytes().to_vec(),
            name: "labels.json",
            siftool_type: "JSON.Labels",
            group: "1",
            link: "NONE",
            extra_info: vec![],
        },
        Expected {
            bytes: OCI_CONFIG.as_bytes().to_vec(),
            name: "oci-config.json",
            siftool_type: "JSON.Generic",
            group: "2",
            link: "NONE",
            extra_info: vec![],
        },
        Expected {
            bytes: squashfs_bytes,
            name: "rootfs",
            siftool_type: "FS (Squashfs/*System/amd64)",
            group: "1",
            link: "NONE",
            extra_info: vec![
                ("Filesystem Type", "Squashfs".into()),
                ("Partition Type", "*System".into()),
                ("Architecture", "amd64".into()),
            ],
        },
        Expected {
            bytes: signature.to_vec(),
            name: "",
            siftool_type: "Signature (SHA-256)",
            group: "NONE",
            link: "4",
            extra_info: vec![
                ("Hash Type", "SHA-256".into()),
                ("Entity", FINGERPRINT_HEX.into()),
            ],
        },
        Expected {
            bytes: sbom.to_vec(),
            name: "",
            siftool_type: "SBOM (spdx-json)",
            group: "NONE",
            link: "NONE",
            extra_info: vec![("Format", "spdx-json".into())],
        },
        Expected {
            bytes: key.to_vec(),
            name: "",
            siftool_type: "Cryptographic Message (PEM/RSA-OAEP)",
            group: "1",
            link: "4",
            extra_info: vec![
                ("Format Type", "PEM".into()),
                ("Message Type", "RSA-OAEP".into()),
            ],
        },
        Expected {
            bytes: blob,
            name: "blob.bin",
            siftool_type: "Generic/Raw",
            group: "3",
            link: "1 (G)",
            extra_info: vec![],
        },
    ];
    (layout, expected)
}

#[test]
fn our_image_passes_siftool_header_list_info_and_dump() {
    let dir = tempfile::tempdir().unwrap();
    let squashfs = make_squashfs(dir.path());
    let image = dir.path().join("ours.sif");
    let (layout, expected) = write_our_image(dir.path(), &squashfs, &image);
    assert_eq!(layout.descriptors.len(), expected.len());

    let header = key_values(&String::from_utf8(siftool(&[&"header", &image]).stdout).unwrap());
    let want_header = [
        ("Launch Script", "#!/usr/bin/env run-singularity"),
        ("Version", "01"),
        ("Primary Architecture", "amd64"),
        ("ID", "5eed0000-0000-4000-8000-000000000001"),
        ("Created At", IMAGE_TIME_GO),
        ("Modified At", IMAGE_TIME_GO),
        ("Descriptors Free", "40"),
        ("Descriptors Total", "48"),
        ("Descriptors Offset", "4096"),
        ("Data Offset", "32176"),
    ];
    for (key, value) in want_header {
        assert_eq!(
            header.get(key).map(String::as_str),
            Some(value),
            "siftool header {key}: {header:?}"
        );
    }

    let rows = siftool_list(&image);
    assert_eq!(rows.len(), expected.len(), "{rows:?}");
    for ((row, want), descriptor) in rows.iter().zip(&expected).zip(&layout.descriptors) {
        let id = descriptor.id;
        assert_eq!(row.id, id);
        assert_eq!(row.kind, want.siftool_type, "type of object {id}");
        assert_eq!(row.group, want.group, "group of object {id}");
        assert_eq!(row.link, want.link, "link of object {id}");
        assert_eq!(row.start, descriptor.offset, "start of object {id}");
        assert_eq!(
            row.end - row.start,
            want.bytes.len() as i64,
            "size of object {id}"
        );

        let info = siftool_info(&image, id);
        let base_type = want.siftool_type.split(" (").next().unwrap();
        assert_eq!(info["Data Type"], base_type, "info {id}: {info:?}");
        assert_eq!(info["ID"], id.to_string());
        assert_eq!(info["Group ID"], want.group);
        assert_eq!(info["Linked ID"], want.link);
        assert_eq!(info["Offset"], descriptor.offset.to_string());
        assert_eq!(info["Size"], want.bytes.len().to_string());
        assert_eq!(info["Created At"], IMAGE_TIME_GO);
        assert_eq!(
            info.get("Name").map(String::as_str).unwrap_or(""),
            want.name,
            "name of object {id}"
        );
        for (key, value) in &want.extra_info {
            assert_eq!(info.get(*key), Some(value), "info {id} {key}: {info:?}");
        }

        assert!(
            siftool_dump(&image, id) == want.bytes,
            "siftool dump {id} differs from the bytes written"
        );
    }

    // The partition siftool extracts is a squashfs unsquashfs can list.
    let dumped = dir.path().join("dumped.squashfs");
    fs::write(&dumped, siftool_dump(&image, 4)).unwrap();
    let listing = run_ok(
        &system_tool("unsquashfs", "squashfs-tools"),
        &[&"-l", &dumped],
    );
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.contains("etc/os-release"), "{listing}");
}

/// Maps siftool's list TYPE base names to `sifhub inspect --json` types.
fn inspect_type_for(siftool_base: &str) -> &'static str {
    match siftool_base {
        "Def.FILE" => "deffile",
        "Env.Vars" => "env-vars",
        "JSON.Labels" => "labels",
        "FS" => "partition",
        "Signature" => "signature",
        "JSON.Generic" => "generic-json",
        "Generic/Raw" => "generic",
        "Cryptographic Message" => "crypto-message",
        "SBOM" => "sbom",
        other => panic!("siftool type {other:?} not mapped"),
    }
}

/// Reads `sifhub inspect --json` for `image`, failing the test on error.
fn inspect_json(image: &Path) -> Value {
    let output = sifhub([
        OsStr::new("inspect"),
        OsStr::new("--json"),
        image.as_os_str(),
    ]);
    assert!(
        output.status.success(),
        "sifhub inspect --json {} failed: {}",
        image.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "inspect --json printed invalid JSON ({e}):\n{}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

#[test]
fn siftool_image_reads_the_same_in_sifhub_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let squashfs = make_squashfs(d);
    let files = [
        ("recipe.def", RECIPE.as_bytes().to_vec()),
        ("labels.json", LABELS.as_bytes().to_vec()),
        ("inspect.json", OCI_CONFIG.as_bytes().to_vec()),
        ("sig.asc", b"signature bytes".to_vec()),
        ("blob.bin", (0..200u8).collect()),
        ("sbom.json", br#"{"bomFormat":"CycloneDX"}"#.to_vec()),
    ];
    for (name, bytes) in &files {
        fs::write(d.join(name), bytes).unwrap();
    }
    let image = d.join("theirs.sif");
    siftool(&[&"new", &image]);
    let signature_flags =
        format!("--datatype 5 --signhash 2 --signentity {FINGERPRINT_HEX} --link 4");
    let adds: [(&str, PathBuf); 7] = [
        ("--datatype 1 --filename recipe.def", d.join("recipe.def")),
        (
            "--datatype 3 --groupid 1 --filename labels.json",
            d.join("labels.json"),
        ),
        (
            "--datatype 6 --groupid 2 --filename inspect.json",
            d.join("inspect.json"),
        ),
        (
            "--datatype 4 --parttype 2 --partfs 1 --partarch 2 --groupid 1 --filename rootfs",
            squashfs.clone(),
        ),
        (&signature_flags, d.join("sig.asc")),
        (
            "--datatype 7 --alignment 64 --groupid 3",
            d.join("blob.bin"),
        ),
        (
            "--datatype 9 --sbomformat cyclonedx-json --link 4",
            d.join("sbom.json"),
        ),
    ];
    for (flags, source) in &adds {
        let mut args: Vec<&dyn AsRef<OsStr>> = vec![&"add"];
        let flags: Vec<&str> = flags.split_whitespace().collect();
        for flag in &flags {
            args.push(flag);
        }
        args.push(&image);
        args.push(source);
        siftool(&args);
    }

    let report = inspect_json(&image);
    let rows = siftool_list(&image);
    let descriptors = report["descriptors"].as_array().unwrap();
    assert_eq!(descriptors.len(), rows.len(), "{report:#}");

    for (row, ours) in rows.iter().zip(descriptors) {
        let id = row.id;
        assert_eq!(ours["id"], id, "object order/id: {ours}");
        let (base, details) = match row.kind.split_once(" (") {
            Some((base, rest)) => (base, rest.trim_end_matches(')')),
            None => (row.kind.as_str(), ""),
        };
        assert_eq!(ours["type"], inspect_type_for(base), "type of {id}");
        let group = match row.group.as_str() {
            "NONE" => Value::Null,
            n => Value::from(n.parse::<u32>().unwrap()),
        };
        assert_eq!(ours["group"], group, "group of {id}");
        let link = match row.link.as_str() {
            "NONE" => Value::Null,
            text => match text.strip_suffix(" (G)") {
                Some(g) => serde_json::json!({"kind": "group", "id": g.parse::<u32>().unwrap()}),
                None => serde_json::json!({"kind": "object", "id": text.parse::<u32>().unwrap()}),
            },
        };
        assert_eq!(ours["link"], link, "link of {id}");
        assert_eq!(ours["offset"], row.start, "offset of {id}");
        assert_eq!(ours["size"], row.end - row.start, "size of {id}");
        let info = siftool_info(&image, id);
        assert_eq!(
            ours["name"].as_str().unwrap(),
            info.get("Name").map(String::as_str).unwrap_or(""),
            "name of {id}"
        );
        match base {
            "FS" => {
                assert_eq!(details, "Squashfs/*System/amd64");
                assert_eq!(
                    ours["partition"],
                    serde_json::json!({"fs_type": "squashfs", "part_type": "primsys", "arch": "amd64"})
                );
            }
            "Signature" => {
                assert_eq!(details, "SHA-384");
                assert_eq!(ours["signature"]["hash_type"], "sha384");
                assert_eq!(ours["signature"]["fingerprint"], info["Entity"]);
            }
            "SBOM" => {
                assert_eq!(ours["sbom"]["format"], details);
            }
            _ => assert_eq!(details, "", "unexpected details for {id}"),
        }
    }

    let header = key_values(&String::from_utf8(siftool(&[&"header", &image]).stdout).unwrap());
    assert_eq!(report["header"]["id"], header["ID"]);
    assert_eq!(report["header"]["arch"], header["Primary Architecture"]);
    assert_eq!(report["header"]["descriptors_free"], 41);
    assert_eq!(report["recipe"], RECIPE);
    assert_eq!(
        report["labels"],
        serde_json::from_str::<Value>(LABELS).unwrap()
    );
    assert_eq!(
        report["primary_partition"],
        serde_json::json!({"id": 4, "fs_type": "squashfs", "arch": "amd64"})
    );
    assert_eq!(report["json_objects"][0]["name"], "inspect.json");
    assert_eq!(
        report["json_objects"][0]["value"],
        serde_json::from_str::<Value>(OCI_CONFIG).unwrap()
    );
    assert_eq!(report["warnings"], serde_json::json!([]));

    // Object bytes through our reader equal siftool's dump.
    let mut sif = SifFile::open(&image).unwrap();
    assert_eq!(sif.primary_fs_type(), Some(FsType::Squashfs));
    for row in &rows {
        let mut ours = Vec::new();
        std::io::Read::read_to_end(&mut sif.read_object(row.id).unwrap(), &mut ours).unwrap();
        assert!(
            ours == siftool_dump(&image, row.id),
            "object {} read by SifFile differs from siftool dump",
            row.id
        );
    }
    assert_eq!(
        sif.read_object_bytes(4, u64::MAX).unwrap(),
        fs::read(&squashfs).unwrap()
    );
}

#[test]
fn writer_output_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let squashfs = make_squashfs(dir.path());
    let first = dir.path().join("first.sif");
    let second = dir.path().join("second.sif");
    write_our_image(dir.path(), &squashfs, &first);
    write_our_image(dir.path(), &squashfs, &second);
    let first_bytes = fs::read(&first).unwrap();
    assert!(
        first_bytes == fs::read(&second).unwrap(),
        "two writes with the same inputs differ"
    );

    // The inputs do matter: another timestamp changes the bytes.
    let later = dir.path().join("later.sif");
    let mut builder = SifBuilder::new()
        .id(Uuid::from_u128(0x5eed_0000_0000_4000_8000_0000_0000_0001))
        .timestamp(IMAGE_TIME + 1);
    builder.add_bytes(DescriptorInput::new(ObjectKind::Deffile), RECIPE);
    builder.write_to(&later).unwrap();
    let mut same_time = SifBuilder::new()
        .id(Uuid::from_u128(0x5eed_0000_0000_4000_8000_0000_0000_0001))
        .timestamp(IMAGE_TIME + 1);
    same_time.add_bytes(DescriptorInput::new(ObjectKind::Deffile), RECIPE);
    let again = dir.path().join("again.sif");
    same_time.write_to(&again).unwrap();
    assert_eq!(fs::read(&later).unwrap(), fs::read(&again).unwrap());
    assert_ne!(fs::read(&later).unwrap()[..128], first_bytes[..128]);
}

#[test]
fn inspect_text_shows_header_descriptors_recipe_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let squashfs = make_squashfs(dir.path());
    let image = dir.path().join("ours.sif");
    write_our_image(dir.path(), &squashfs, &image);
    let output = sifhub([OsStr::new("inspect"), image.as_os_str()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let text = String::from_utf8(output.stdout).unwrap();
    for needle in [
        "5eed0000-0000-4000-8000-000000000001",
        "amd64",
        "2023-11-14T22:13:20Z",
        "squashfs/primsys/amd64",
        "sha256 433FE984155206BD962725E20E8713472A879943",
        "pem/rsa-oaep",
        "oci-config.json",
        "echo built by sifhub",
        "\"maintainer\": \"sifhub tests\"",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }

    let report = inspect_json(&image);
    let descriptors = report["descriptors"].as_array().unwrap();
    assert_eq!(descriptors.len(), 8);
    assert_eq!(descriptors[7]["offset"].as_i64().unwrap() % 512, 0);
    assert_eq!(report["primary_partition"]["fs_type"], "squashfs");
}

/// Runs `sifhub inspect` (text and JSON) on a broken file and returns the
/// error message, checking it failed and named the path.
fn inspect_error(image: &Path) -> String {
    let mut message = String::new();
    for json in [false, true] {
        let mut args = vec![OsStr::new("inspect"), image.as_os_str()];
        if json {
            args.push(OsStr::new("--json"));
        }
        let output = sifhub(args);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            !output.status.success(),
            "sifhub inspect accepted {}",
            image.display()
        );
        assert!(
            output.stdout.is_empty(),
            "printed a report for a broken file"
        );
        assert!(
            stderr.contains(&image.display().to_string()),
            "message does not name the path: {stderr}"
        );
        message = stderr;
    }
    message
}

#[test]
fn inspect_rejects_a_non_sif_file() {
    let dir = tempfile::tempdir().unwrap();
    let not_sif = dir.path().join("notes.txt");
    fs::write(
        &not_sif,
        "this is not an image, just a long enough text file\n".repeat(4),
    )
    .unwrap();
    let message = inspect_error(&not_sif);
    assert!(message.contains("not a SIF image"), "{message}");

    let empty = dir.path().join("empty.sif");
    fs::write(&empty, b"").unwrap();
    let message = inspect_error(&empty);
    assert!(message.contains("not a SIF image"), "{message}");

    let missing = dir.path().join("missing.sif");
    let message = inspect_error(&missing);
    assert!(message.contains("cannot open"), "{message}");
}

#[test]
fn inspect_rejects_a_truncated_sif() {
    let dir = tempfile::tempdir().unwrap();
    let squashfs = make_squashfs(dir.path());
    let image = dir.path().join("ours.sif");
    write_our_image(dir.path(), &squashfs, &image);
    let bytes = fs::read(&image).unwrap();
    // Inside the header, inside the descriptor table, inside the partition,
    // and one byte short.
    for cut in [100, 5000, 32_768 + 100, bytes.len() - 1] {
        let truncated = dir.path().join(format!("cut-{cut}.sif"));
        fs::write(&truncated, &bytes[..cut]).unwrap();
        let message = inspect_error(&truncated);
        assert!(message.contains("truncated"), "cut at {cut}: {message}");
    }
}
