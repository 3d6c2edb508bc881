//! Property tests of the definition-file parser: it never panics, whatever
//! the bytes (random input, and corpus recipes with bytes flipped, lines
//! deleted, duplicated or inserted, and truncated), its errors are well
//! formed, and for what it accepts the section texts tile the file exactly.

use std::path::PathBuf;
use std::sync::OnceLock;

use proptest::prelude::*;
use sifhub_builder::deffile::{parse, BuildArgs, DefError, Recipe};

/// The corpus recipes (`$SIFHUB_SHARED` or `../shared` beside the clone).
fn corpus() -> &'static [Vec<u8>] {
    static RECIPES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    RECIPES.get_or_init(|| {
        let shared = std::env::var_os("SIFHUB_SHARED")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
        let dir = shared.join("corpus").join("recipes");
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| {
                panic!(
                    "corpus not found at {} ({e}); set SIFHUB_SHARED",
                    dir.display()
                )
            })
            .map(|entry| entry.unwrap_or_else(|e| panic!("{e}")).path())
            .collect();
        paths.sort();
        let recipes: Vec<Vec<u8>> = paths
            .iter()
            .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
            .collect();
        assert!(recipes.len() >= 90, "corpus has {} recipes", recipes.len());
        recipes
    })
}

const LINES: &[&str] = &[
    "%post",
    "%post -c /bin/bash",
    "%files from build",
    "%files",
    "%appinstall x",
    "%apprun",
    "%enviroment",
    "  %s",
    "%",
    "Bootstrap: docker",
    "bootstrap: library",
    "Bootstrap:",
    "From: alpine",
    "Stage: build",
    "From: \\",
    "{{ X }}",
    "  echo {{ Y }} # {{ Z }}",
    "%arguments",
    "X=1",
    "\"",
    "'a b' c",
    "",
    "\r",
    "#",
    "\u{feff}",
];

#[derive(Debug, Clone)]
enum Mutation {
    SetByte(usize, u8),
    DeleteLine(usize),
    DuplicateLine(usize),
    InsertLine(usize, usize),
    InsertBytes(usize, Vec<u8>),
    Truncate(usize),
}

fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        any::<u8>(),
        prop::sample::select(b"%{}#\\:\"' \t\n\r=!bB".to_vec()),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), interesting_byte()).prop_map(|(i, b)| Mutation::SetByte(i, b)),
        any::<usize>().prop_map(Mutation::DeleteLine),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (any::<usize>(), 0..LINES.len()).prop_map(|(i, l)| Mutation::InsertLine(i, l)),
        (
            any::<usize>(),
            prop::collection::vec(interesting_byte(), 1..8)
        )
            .prop_map(|(i, b)| Mutation::InsertBytes(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len().max(1);
        let mut lines: Vec<Vec<u8>> = bytes.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
        let nlines = lines.len();
        match m {
            Mutation::SetByte(i, b) => {
                if !bytes.is_empty() {
                    bytes[i % len] = *b;
                }
                continue;
            }
            Mutation::InsertBytes(i, new) => {
                let at = i % (bytes.len() + 1);
                bytes.splice(at..at, new.iter().copied());
                continue;
            }
            Mutation::Truncate(i) => {
                bytes.truncate(i % (bytes.len() + 1));
                continue;
            }
            Mutation::DeleteLine(i) => {
                lines.remove(i % nlines);
            }
            Mutation::DuplicateLine(i) => {
                let copy = lines[i % nlines].clone();
                lines.insert(i % nlines, copy);
            }
            Mutation::InsertLine(i, l) => {
                lines.insert(i % (nlines + 1), LINES[*l].as_bytes().to_vec());
            }
        }
        bytes = lines.join(&b'\n');
    }
    bytes
}

fn line_count(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count() + 1
}

fn check_error(bytes: &[u8], e: &DefError) -> Result<(), TestCaseError> {
    let shown = e.to_string();
    prop_assert!(!shown.is_empty());
    prop_assert!(!shown.starts_with(char::is_uppercase), "{}", shown);
    prop_assert!(!e.apptainer_message().is_empty());
    if let Some(line) = e.line() {
        prop_assert!(
            line >= 1 && line <= line_count(bytes),
            "line {} of {}: {}",
            line,
            line_count(bytes),
            shown
        );
    }
    Ok(())
}

/// Each section's text is the bytes under its `%` lines, up to the next
/// `%` line of the stage, concatenated over repeats; the stages' lines
/// make up the definition. (Only without build arguments, which rewrite text.)
fn check_tiling(bytes: &[u8], recipe: &Recipe) -> Result<(), TestCaseError> {
    // Lines with their terminators, 1-based.
    let mut lines: Vec<&[u8]> = vec![&[]];
    lines.extend(bytes.split_inclusive(|&b| b == b'\n'));
    let range = |from: usize, to: usize| -> Vec<u8> {
        (from..=to)
            .filter_map(|l| lines.get(l))
            .flat_map(|l| l.iter().copied())
            .collect()
    };
    let mut definition = Vec::new();
    for stage in &recipe.stages {
        prop_assert!(stage.line <= stage.last_line && stage.last_line < lines.len());
        definition.extend(range(stage.line, stage.last_line));
        let mut starts: Vec<usize> = stage
            .sections
            .iter()
            .flat_map(|s| s.occurrences.iter().copied())
            .collect();
        starts.sort_unstable();
        for section in &stage.sections {
            prop_assert_eq!(section.occurrences.first().copied(), Some(section.line));
            let mut text = Vec::new();
            for &start in &section.occurrences {
                let end = starts
                    .iter()
                    .find(|&&s| s > start)
                    .map_or(stage.last_line, |&next| next - 1);
                text.extend(range(start + 1, end));
            }
            prop_assert_eq!(
                String::from_utf8_lossy(&text),
                section.text.to_string_lossy(),
                "section %{} at line {}",
                section.name,
                section.line
            );
            prop_assert_eq!(text.as_slice(), section.text.as_bytes());
        }
    }
    prop_assert_eq!(definition.as_slice(), recipe.definition.as_bytes());
    Ok(())
}

fn check_any(bytes: &[u8]) -> Result<(), TestCaseError> {
    match parse(bytes, &BuildArgs::new()) {
        Err(e) => check_error(bytes, &e),
        Ok(recipe) if !bytes.windows(2).any(|w| w == b"{{") => check_tiling(bytes, &recipe),
        Ok(_) => Ok(()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(interesting_byte(), 0..600)) {
        check_any(&bytes)?;
        let mut args = BuildArgs::new();
        args.insert("X", "a\nb");
        if let Err(e) = parse(&bytes, &args) {
            check_error(&bytes, &e)?;
        }
    }

    #[test]
    fn mutated_recipes_never_panic(index in any::<prop::sample::Index>(), mutations in prop::collection::vec(mutation(), 1..5)) {
        let recipes = corpus();
        let bytes = apply(recipes[index.index(recipes.len())].clone(), &mutations);
        check_any(&bytes)?;
    }

    #[test]
    fn corpus_recipes_tile_exactly(index in any::<prop::sample::Index>(), crlf in any::<bool>()) {
        let recipes = corpus();
        let mut bytes = recipes[index.index(recipes.len())].clone();
        if crlf {
            bytes = bytes.split(|&b| b == b'\n').collect::<Vec<_>>().join(&b"\r\n"[..]);
        }
        check_any(&bytes)?;
    }
}

#[test]
fn build_args_never_panic_on_any_corpus_recipe() {
    let mut args = BuildArgs::new();
    for name in [
        "BASE_CONTAINER",
        "CONTAINERS_DIR",
        "DEVEL_IMAGE",
        "IMAGE",
        "FINAL_IMAGE",
        "X",
    ] {
        args.insert(name, "{{ X }}\n#x");
    }
    for bytes in corpus() {
        if let Err(e) = parse(bytes, &args) {
            check_error(bytes, &e).unwrap();
        }
    }
}
