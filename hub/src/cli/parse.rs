//! `sifhub parse RECIPE [--json] [--build-arg NAME=VALUE]…`: reads a
//! definition file as apptainer reads it and prints its stages, headers,
//! sections (with line numbers and arguments), `%files` entries and
//! warnings — or, for a file apptainer would reject, the reason on stderr
//! as `error: FILE:LINE: message` and a non-zero exit.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use sifhub_builder::deffile::{self, BuildArgs, Recipe};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The definition file (`Singularity`, `*.def`).
    pub recipe: PathBuf,
    /// Print one JSON document instead of the readable form.
    #[arg(long)]
    pub json: bool,
    /// A build argument for `{{ NAME }}`, as apptainer's --build-arg (repeatable).
    #[arg(long = "build-arg", value_name = "NAME=VALUE")]
    pub build_args: Vec<String>,
}

pub fn run(args: Args) -> super::CliResult {
    let path = args.recipe.display().to_string();
    let bytes = std::fs::read(&args.recipe)
        .map_err(|e| format!("cannot read definition file {path}: {e}"))?;
    let build_args = BuildArgs::from_pairs(&args.build_args)?;
    let recipe = deffile::parse(&bytes, &build_args).map_err(|e| match e.line() {
        Some(line) => format!("{path}:{line}: {}", e.detail()),
        None => format!("{path}: {e}"),
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&recipe)?);
    } else {
        print!("{}", render(&recipe));
    }
    Ok(ExitCode::SUCCESS)
}

/// The readable form.
fn render(recipe: &Recipe) -> String {
    let mut out = String::new();
    for (i, stage) in recipe.stages.iter().enumerate() {
        let _ = writeln!(
            out,
            "stage {}{} (lines {}-{})",
            i + 1,
            stage.name().map(|n| format!(" `{n}`")).unwrap_or_default(),
            stage.line,
            stage.last_line
        );
        let _ = writeln!(out, "  header:");
        for entry in stage.header.entries() {
            let _ = writeln!(
                out,
                "    {:<12} {:<40} line {}",
                format!("{}:", entry.key),
                entry.value.replace('\n', "\\n"),
                entry.line
            );
        }
        let _ = writeln!(out, "  sections:");
        for section in &stage.sections {
            let mut title = format!("%{}", section.name);
            if let Some(app) = &section.app {
                title.push(' ');
                // apptainer reads `%appenv  x` (two spaces) as an empty app name.
                title.push_str(if app.is_empty() { "\"\"" } else { app });
            }
            if !section.args.is_empty() {
                title.push(' ');
                title.push_str(&section.args);
            }
            let lines = section
                .text
                .as_bytes()
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + usize::from(
                    !section.text.as_bytes().ends_with(b"\n") && !section.text.is_empty(),
                );
            let occurrences = if section.occurrences.len() > 1 {
                format!(
                    ", merged from lines {}",
                    section
                        .occurrences
                        .iter()
                        .map(usize::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "    {:<40} line {}, {} line{}{}",
                title,
                section.line,
                lines,
                if lines == 1 { "" } else { "s" },
                occurrences
            );
            for file in &section.files {
                let dest = if file.dest.is_empty() {
                    &file.src
                } else {
                    &file.dest
                };
                let _ = writeln!(out, "      {} -> {}  (line {})", file.src, dest, file.line);
            }
        }
    }
    if !recipe.warnings.is_empty() {
        let _ = writeln!(out, "warnings:");
        for w in &recipe.warnings {
            let _ = writeln!(out, "  {w}");
        }
    }
    out
}
