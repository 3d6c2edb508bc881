//! The definition-file parser against apptainer's reading of real recipes.
//!
//! * Every recipe of `shared/corpus/recipes/` (and `fingerprint-selftest/`)
//!   is parsed and reduced to fingerprint.py's shape (headers, section keys
//!   in first-seen order, arguments, `%files` arguments) or to apptainer's
//!   error message; all must agree with `expected.jsonl`.
//! * A few hundred mutants of those recipes go through both our parser and
//!   `fingerprint.py` (one python3 run) and must agree too.
//! * The real `sifhub parse` binary prints the documented JSON and fails
//!   with `file:line: message` on a bad recipe.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use sifhub_builder::deffile::{self, BuildArgs, DefError, Recipe};

fn corpus_dir() -> PathBuf {
    sifhub_tests::shared_dir().join("corpus")
}

/// Our result in fingerprint.py's shape.
fn fingerprint(file: &str, result: &Result<Recipe, DefError>) -> Value {
    match result {
        Err(e) => json!({"file": file, "stages": null, "error": e.apptainer_message()}),
        Ok(recipe) => {
            let stages: Vec<Value> = recipe
                .stages
                .iter()
                .map(|stage| {
                    let header: serde_json::Map<String, Value> = stage
                        .header
                        .iter()
                        .map(|(k, v)| (k.to_owned(), Value::from(v)))
                        .collect();
                    let mut keys: Vec<String> = Vec::new();
                    let mut args = serde_json::Map::new();
                    let mut files_args: Vec<Value> = Vec::new();
                    for section in &stage.sections {
                        let key = section.key();
                        if !keys.contains(&key) {
                            keys.push(key.clone());
                        }
                        if section.name == "files" {
                            if !section.args.is_empty() {
                                files_args.push(Value::from(section.args.as_str()));
                            }
                        } else if !section.args.is_empty() {
                            args.insert(key, Value::from(section.args.as_str()));
                        }
                    }
                    if !files_args.is_empty() {
                        args.insert("files".into(), Value::Array(files_args));
                    }
                    json!({"header": header, "sections": keys, "args": args})
                })
                .collect();
            json!({"file": file, "stages": stages, "error": null})
        }
    }
}

fn read_expected(path: &Path) -> BTreeMap<String, Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l}: {e}"));
            (v["file"].as_str().unwrap_or_default().to_owned(), v)
        })
        .collect()
}

/// Compares one file's result with the reference; a description if they differ.
fn compare(
    file: &str,
    bytes: &[u8],
    result: &Result<Recipe, DefError>,
    expected: &Value,
) -> Option<String> {
    let ours = fingerprint(file, result);
    let expected_error = expected["error"].as_str();
    let agree = match (expected_error, result) {
        // apptainer crashes here; we must give a (clear) error instead.
        (Some(msg), Err(e)) if msg.starts_with("panic:") => e.apptainer_panics(),
        _ => ours == *expected,
    };
    if !agree {
        let ours_text = match result {
            Err(e) => format!("{ours}\n  our message: {e}"),
            Ok(_) => ours.to_string(),
        };
        return Some(format!("{file}\n  want {expected}\n  got  {ours_text}"));
    }
    if let Ok(recipe) = result {
        return section_lines_point_at_percent_lines(file, bytes, recipe);
    }
    None
}

/// Every section's recorded lines hold a `%` line in the file.
fn section_lines_point_at_percent_lines(
    file: &str,
    bytes: &[u8],
    recipe: &Recipe,
) -> Option<String> {
    let lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    for stage in &recipe.stages {
        for section in &stage.sections {
            for &line in &section.occurrences {
                let text = lines.get(line.wrapping_sub(1)).copied().unwrap_or_default();
                let trimmed = String::from_utf8_lossy(text);
                if !trimmed.trim_start().starts_with('%') {
                    return Some(format!(
                        "{file}: section %{} claims line {line}, which is `{trimmed}`",
                        section.name
                    ));
                }
            }
        }
    }
    None
}

fn check_folder(dir: &Path, expected_file: &Path, expect_count: Option<usize>) {
    let expected = read_expected(expected_file);
    if let Some(n) = expect_count {
        assert_eq!(expected.len(), n, "entries in {}", expected_file.display());
    }
    let mut mismatches = Vec::new();
    for (file, want) in &expected {
        let path = dir.join(file);
        let bytes =
            std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let result = deffile::parse(&bytes, &BuildArgs::new());
        if let Some(m) = compare(file, &bytes, &result, want) {
            mismatches.push(m);
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} recipes disagree with {}:\n{}",
        mismatches.len(),
        expected.len(),
        expected_file.display(),
        mismatches.join("\n")
    );
}

#[test]
fn every_corpus_recipe_reads_as_apptainer_reads_it() {
    let dir = corpus_dir();
    let on_disk = std::fs::read_dir(dir.join("recipes")).unwrap().count();
    assert_eq!(on_disk, 93, "recipes in the corpus");
    check_folder(
        &dir.join("recipes"),
        &dir.join("expected.jsonl"),
        Some(on_disk),
    );
}

#[test]
fn fingerprint_selftest_cases_agree() {
    let dir = corpus_dir().join("fingerprint-selftest");
    check_folder(&dir, &dir.join("expected.jsonl"), None);
}

/// Small deterministic generator (no external randomness: failures replay).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INSERTED_LINES: &[&str] = &[
    "%post",
    "%post -c /bin/bash",
    "%post ",
    "%enviroment",
    "%environment",
    "%files",
    "%files from build",
    "%files from nowhere",
    "%appinstall foo",
    "%apprun",
    "%apprun foo extra",
    "%AppRun foo",
    "%labels",
    "  %s",
    "%",
    "%%runscript",
    "Bootstrap: docker",
    "bootstrap: dokcer",
    "Bootstrap: debootstrap",
    "Bootstrap:",
    "From: ubuntu:22.04",
    "Stage: build",
    "OSVersion: jammy",
    "MirrorURL: http://example.org/%{OSVERSION}/",
    "From: \\",
    "Bootsrap: docker",
    "  echo {{ X }}",
    "# {{ Y }}",
    "%arguments",
    "X=1",
    "\"",
    "'a b' c",
    "",
    "   ",
    "# comment",
    "\r",
    "no colon here",
];

const INSERTED_BYTES: &[u8] = b"%{}#\\:\"' \t\n\rXx=!";

fn mutate(original: &[u8], rng: &mut XorShift) -> Vec<u8> {
    let mut lines: Vec<Vec<u8>> = original
        .split(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(lines.len());
        match rng.below(6) {
            0 => {
                let line = &mut lines[at];
                if !line.is_empty() {
                    let i = rng.below(line.len());
                    line[i] = INSERTED_BYTES[rng.below(INSERTED_BYTES.len())];
                }
            }
            1 if lines.len() > 1 => {
                lines.remove(at);
            }
            2 => {
                let copy = lines[at].clone();
                lines.insert(at, copy);
            }
            3 | 4 => {
                let new = INSERTED_LINES[rng.below(INSERTED_LINES.len())];
                lines.insert(at, new.as_bytes().to_vec());
            }
            _ => {
                let mut joined = lines.join(&b'\n');
                joined.truncate(rng.below(joined.len() + 1));
                lines = joined.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
            }
        }
    }
    lines.join(&b'\n')
}

#[test]
fn mutated_recipes_agree_with_fingerprint_py() {
    let python = sifhub_tests::system_tool("python3", "python3");
    let corpus = corpus_dir();
    let mut originals: Vec<Vec<u8>> = Vec::new();
    let mut names: Vec<PathBuf> = std::fs::read_dir(corpus.join("recipes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in names {
        originals.push(std::fs::read(p).unwrap());
    }
    for entry in std::fs::read_dir(corpus.join("fingerprint-selftest")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "def") {
            originals.push(std::fs::read(p).unwrap());
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = XorShift(0x5eed_1234_abcd_0042);
    let mut files = Vec::new();
    for i in 0..320 {
        let original = &originals[rng.below(originals.len())];
        let mutant = mutate(original, &mut rng);
        // fingerprint.py's JSON carries undecodable bytes as lone surrogates.
        if std::str::from_utf8(&mutant).is_err() {
            continue;
        }
        let path = tmp.path().join(format!("mutant{i:03}.def"));
        std::fs::write(&path, &mutant).unwrap();
        files.push((path, mutant));
    }
    assert!(files.len() > 300, "only {} mutants", files.len());
    let output = Command::new(python)
        .arg(corpus.join("fingerprint.py"))
        .args(files.iter().map(|(p, _)| p))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "fingerprint.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reference: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(reference.len(), files.len());

    let mut mismatches = Vec::new();
    let mut rejected = 0;
    for ((path, bytes), want) in files.iter().zip(&reference) {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let result = deffile::parse(bytes, &BuildArgs::new());
        rejected += usize::from(result.is_err());
        // By design we also reject `%files from <unknown stage>` at parse time
        // (apptainer fails later, when copying); fingerprint.py does not check it.
        if matches!(result, Err(DefError::FilesFromUnknownStage { .. })) && want["error"].is_null()
        {
            continue;
        }
        if let Some(m) = compare(&file, bytes, &result, want) {
            mismatches.push(format!(
                "{m}\n--- mutant:\n{}\n---",
                String::from_utf8_lossy(bytes)
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} mutants disagree with fingerprint.py:\n{}",
        mismatches.len(),
        files.len(),
        mismatches.join("\n")
    );
    // The mutants must exercise both outcomes.
    assert!(
        rejected > 30 && rejected < files.len() - 30,
        "{rejected} of {} rejected",
        files.len()
    );
}

#[test]
fn sifhub_parse_json_has_the_documented_shape() {
    let dir = corpus_dir();
    let crlf = dir.join("fingerprint-selftest").join("multistage-crlf.def");
    let out = sifhub_tests::sifhub([Path::new("parse"), Path::new("--json"), &crlf]);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let stages = doc["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 2);
    assert_eq!(
        stages[0]["header"],
        json!({"bootstrap": "docker", "from": "golang:1.22", "stage": "build"})
    );
    let post = &stages[0]["sections"][1];
    assert_eq!(post["name"], "post");
    assert_eq!(post["app"], Value::Null);
    assert_eq!(post["args"], "-c /bin/bash");
    assert_eq!(post["line"], 9);
    assert!(post["text"]
        .as_str()
        .unwrap()
        .starts_with("    go version  # {{ NOT_SUBSTITUTED }}"));
    let files = &stages[1]["sections"][0];
    assert_eq!(files["name"], "files");
    assert_eq!(files["args"], "from build");
    assert_eq!(files["files"][0]["src"], "/go/bin/app");
    assert_eq!(files["files"][1]["dest"], "/build-os-release");
    assert!(doc["warnings"].is_array());

    let apps = dir.join("fingerprint-selftest").join("apps.def");
    let out = sifhub_tests::sifhub([Path::new("parse"), Path::new("--json"), &apps]);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let sections = doc["stages"][0]["sections"].as_array().unwrap();
    let apprun = sections.iter().find(|s| s["name"] == "apprun").unwrap();
    assert_eq!(apprun["app"], "foo");
    assert_eq!(apprun["line"], 8);
    assert!(!doc["warnings"].as_array().unwrap().is_empty());

    // The readable form and build arguments.
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tmp.path().join("Singularity");
    std::fs::write(
        &recipe,
        "Bootstrap: docker\nFrom: alpine:{{ V }}\n%post\n  echo hi\n",
    )
    .unwrap();
    let out = sifhub_tests::sifhub([
        Path::new("parse"),
        &recipe,
        Path::new("--build-arg"),
        Path::new("V=3.19"),
    ]);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("alpine:3.19") && text.contains("%post") && text.contains("line 3"),
        "{text}"
    );
}

#[test]
fn sifhub_parse_rejects_a_bad_recipe_on_stderr() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tmp.path().join("Singularity");
    std::fs::write(
        &recipe,
        "Bootstrap: docker\nFrom: alpine\n%post\n  echo hi\n%enviroment\n  export A=1\n",
    )
    .unwrap();
    let out = sifhub_tests::sifhub([Path::new("parse"), Path::new("--json"), &recipe]);
    assert!(!out.status.success());
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout for a rejected recipe"
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    let want = format!(
        "error: {}:5: invalid section %enviroment (did you mean %environment?)",
        recipe.display()
    );
    assert!(stderr.starts_with(&want), "{stderr}");

    let missing = tmp.path().join("no-such-recipe.def");
    let out = sifhub_tests::sifhub([Path::new("parse"), &missing]);
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("cannot read definition file") && stderr.contains("no-such-recipe.def"),
        "{stderr}"
    );

    let out = sifhub_tests::sifhub([
        Path::new("parse"),
        &recipe,
        Path::new("--build-arg"),
        Path::new("NOEQUALS"),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NOEQUALS"));
}
