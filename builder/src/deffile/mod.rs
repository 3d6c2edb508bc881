//! Apptainer definition files, read exactly as apptainer reads them.
//!
//! [`parse`] takes the file's bytes and the `--build-arg`s and returns a
//! [`Recipe`] — or the [`DefError`] for a file apptainer would refuse to build
//! (or crash on). What apptainer accepts, this accepts and reads the same way;
//! the rules, with the apptainer functions they come from, are in
//! `shared/corpus/PARSER-RULES.md`, and `shared/corpus/fingerprint.py` is the
//! reference the tests compare with.
//!
//! How a file is read:
//! 1. It is cut into stages before every line starting with `bootstrap:` (any
//!    case), even inside a script ([`lines`]).
//! 2. Each stage is split into a header and `%` sections: a line whose first
//!    word starts with `%` opens a section; section text is kept byte for byte
//!    ([`sections`], [`header`]).
//! 3. `{{ name }}` build arguments are replaced (values from [`BuildArgs`],
//!    defaults from `%arguments`) and the stage is read again ([`args`]).
//! 4. The checks apptainer makes before bootstrapping run: headers, the agent
//!    and the keys it needs, `%files from <stage>` ([`checks`]).
//!
//! ```
//! use sifhub_builder::deffile::{parse, BuildArgs};
//! let recipe = parse(b"Bootstrap: docker\nFrom: alpine\n%post -c /bin/sh\n  echo hi\n", &BuildArgs::new()).unwrap();
//! let stage = &recipe.stages[0];
//! assert_eq!(stage.header.bootstrap(), Some("docker"));
//! assert_eq!(stage.sections[0].name, "post");
//! assert_eq!(stage.sections[0].args, "-c /bin/sh");
//! assert_eq!(stage.sections[0].line, 3);
//! assert_eq!(stage.sections[0].text.as_bytes(), b"  echo hi\n");
//! ```
//!
//! Line numbers are 1-based and count from the top of the file, across
//! stages; after a build argument whose value spans lines they still name
//! the line in the file. Section text, the definition and other byte fields
//! never lose bytes that are not UTF-8; names, arguments, header values and
//! `%files` paths are `String`s, decoded with U+FFFD (a warning says so).

mod args;
mod checks;
mod error;
mod header;
mod lines;
mod sections;
mod text;

use serde::Serialize;

pub use args::BuildArgs;
pub use checks::{files_source, FilesSource, AGENTS};
pub use error::{BuildArgProblem, DefError, InvalidSection};
pub use header::{is_valid_key, Header, HeaderEntry, HEADER_KEYS};
pub use sections::{split_files_line, APP_SECTIONS, VALID_SECTIONS};
pub use text::Text;

use header::HeaderContext;
use lines::{cut_stages, LineMap};
use sections::{parse_stage, StageInput};

/// A parsed definition file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recipe {
    /// The stages in file order (apptainer drops empty ones, such as a
    /// comment block before the first `Bootstrap:`).
    pub stages: Vec<Stage>,
    /// Things apptainer accepts silently that a user would want to know,
    /// each starting with `line N: ` where there is a line.
    pub warnings: Vec<String>,
    /// The definition as apptainer stores it in the image: the kept stages'
    /// text after build-argument substitution (the file itself when there
    /// are no build arguments and nothing before the first stage).
    #[serde(skip)]
    pub definition: Text,
}

/// One build stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stage {
    /// 1-based line of the stage's first line (its `Bootstrap:` line, or 1).
    pub line: usize,
    /// 1-based line of the stage's last line.
    pub last_line: usize,
    pub header: Header,
    /// Sections in first-seen order; repeats merged as apptainer merges them.
    pub sections: Vec<Section>,
}

/// A section, with every occurrence of it merged as apptainer merges them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Section {
    /// Lowercased name without `%`: `post`, `files`, `apprun` …
    pub name: String,
    /// The app of an app section (`%apprun foo` → `foo`, case kept).
    pub app: Option<String>,
    /// Raw argument text after the name (`-c /bin/bash`, `from build`),
    /// untrimmed; for repeats the last line with a space wins. Always empty
    /// for app sections (apptainer drops their extra words).
    pub args: String,
    /// 1-based line of the (first) `%` line.
    pub line: usize,
    /// The body byte for byte, without the `%` line; repeats concatenated.
    pub text: Text,
    /// `%files`/`%appfiles` entries, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileEntry>,
    /// Lines of every `%` line merged into this section (the first is `line`).
    #[serde(skip_serializing_if = "has_one")]
    pub occurrences: Vec<usize>,
    /// The body as apptainer hands it to the build: lines without their
    /// trailing CR, each ending in `\n` (and trimmed for a first section
    /// that has no header before it).
    #[serde(skip)]
    pub script: Text,
}

fn has_one(v: &[usize]) -> bool {
    v.len() == 1
}

impl Section {
    /// apptainer's key for it: `post`, or `apprun foo` for an app section.
    pub fn key(&self) -> String {
        match &self.app {
            Some(app) => format!("{} {app}", self.name),
            None => self.name.clone(),
        }
    }
}

/// One `%files` line: `src [dest]` as apptainer's splitter reads it (an
/// empty `dest` means the same path as `src`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileEntry {
    pub src: String,
    pub dest: String,
    pub line: usize,
}

impl Stage {
    /// The stage's name (`Stage:`), for `%files from`.
    pub fn name(&self) -> Option<&str> {
        self.header.stage()
    }

    /// The (first) section with this name and no app (`%files` may have several).
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections
            .iter()
            .find(|s| s.name == name && s.app.is_none())
    }

    /// The app section `%<name> <app>`.
    pub fn app_section(&self, name: &str, app: &str) -> Option<&Section> {
        self.sections
            .iter()
            .find(|s| s.name == name && s.app.as_deref() == Some(app))
    }

    /// The apps in the order apptainer installs them (first seen).
    pub fn apps(&self) -> Vec<&str> {
        let mut apps: Vec<&str> = Vec::new();
        for app in self.sections.iter().filter_map(|s| s.app.as_deref()) {
            if !apps.contains(&app) {
                apps.push(app);
            }
        }
        apps
    }
}

/// Reads a definition file as apptainer does (see the module docs).
pub fn parse(input: &[u8], build_args: &BuildArgs) -> Result<Recipe, DefError> {
    let chunks = cut_stages(input);
    let bom = input.starts_with("\u{feff}".as_bytes());

    // First pass (parser.All): every stage as written; empty ones dropped.
    let mut kept = Vec::new();
    for (index, chunk) in chunks.iter().enumerate() {
        let text = &input[chunk.range.clone()];
        let stage_input = StageInput {
            text,
            lines: &LineMap::identity(chunk.first_line),
            header_ctx: header_context(input, &chunks, index, bom),
        };
        if let Some(parsed) = parse_stage(&stage_input, &mut Vec::new())? {
            kept.push((index, parsed.arguments));
        }
    }
    if kept.is_empty() {
        return Err(DefError::NoStages);
    }

    // Second pass (MakeAllDefs): substitute build arguments, read again.
    let mut warnings = Vec::new();
    let mut stages = Vec::new();
    let mut used_anywhere = std::collections::BTreeSet::new();
    let mut definition = Vec::new();
    for (index, arguments) in kept {
        let chunk = &chunks[index];
        let raw = &input[chunk.range.clone()];
        let defaults = args::defaults_of(&arguments);
        let substituted = args::substitute(raw, chunk.first_line, build_args, &defaults.values)?;
        let stage_input = StageInput {
            text: &substituted.text,
            lines: &substituted.lines,
            header_ctx: header_context(input, &chunks, index, bom),
        };
        let mut stage_warnings = Vec::new();
        let Some(parsed) = parse_stage(&stage_input, &mut stage_warnings)? else {
            return Err(DefError::EmptyAfterSubstitution {
                line: chunk.first_line,
            });
        };
        let arguments_line = parsed
            .sections
            .iter()
            .find(|s| s.name == "arguments")
            .map_or(chunk.first_line, |s| s.line);
        for line in &defaults.skipped {
            stage_warnings.push(format!(
                "line {arguments_line}: apptainer skips `{}` in %arguments: expected `NAME=VALUE`",
                text::lossy(line)
            ));
        }
        for name in defaults.values.keys() {
            let name = text::lossy(name);
            if !substituted.used.contains(&name) && !args::mentions(raw, &name) {
                stage_warnings.push(format!(
                    "line {arguments_line}: build argument `{name}` has a default in %arguments but no `{{{{ {name} }}}}` uses it in this stage"
                ));
            }
        }
        used_anywhere.extend(substituted.used);
        definition.extend_from_slice(&substituted.text);
        let last_line = chunk.first_line
            + raw[..raw.len().saturating_sub(1)]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
        warnings.extend(stage_warnings);
        stages.push(Stage {
            line: chunk.first_line,
            last_line,
            header: parsed.header,
            sections: parsed.sections,
        });
    }

    let unused: Vec<String> = build_args
        .names()
        .filter(|n| !used_anywhere.contains(*n))
        .map(str::to_owned)
        .collect();
    if !unused.is_empty() {
        let mentioned = mentioned_names(&definition);
        let near: Vec<String> = unused
            .iter()
            .filter_map(|n| {
                checks::closest(n, mentioned.iter().map(String::as_str))
                    .map(|m| format!("`{n}` → `{m}`"))
            })
            .collect();
        let hint = if near.is_empty() {
            String::new()
        } else {
            format!(" (did you mean {}?)", near.join(", "))
        };
        return Err(DefError::UnusedBuildArgs {
            names: unused,
            hint,
        });
    }
    checks::check_headers(&stages)?;
    checks::check_agents(&stages)?;
    checks::check_files_from(&stages, &mut warnings)?;
    Ok(Recipe {
        stages,
        warnings,
        definition: Text::new(definition),
    })
}

/// The `{{ name }}`s left in a text (in comments, or without value).
fn mentioned_names(text: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.windows(2).position(|w| w == b"{{") {
        rest = &rest[i + 2..];
        let name: Vec<u8> = text::trim_start(rest)
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
            .copied()
            .collect();
        if !name.is_empty() {
            names.push(text::lossy(&name));
        }
    }
    names
}

fn header_context(input: &[u8], chunks: &[lines::Chunk], index: usize, bom: bool) -> HeaderContext {
    let stage_cut_hint = match index.checked_sub(1).map(|prev| &chunks[prev]) {
        Some(prev) if chunk_has_section(&input[prev.range.clone()]) => format!(
            "; note: line {} starts a new stage because it starts with `Bootstrap:` — apptainer cuts stages at every such line, even inside a script or heredoc (indent it if it belongs to a script)",
            chunks[index].first_line
        ),
        _ => String::new(),
    };
    HeaderContext {
        bom_on_line_one: bom && index == 0,
        stage_cut_hint,
    }
}

fn chunk_has_section(text: &[u8]) -> bool {
    text.split(|&b| b == b'\n')
        .any(|line| text::trim_start(line).first() == Some(&b'%'))
}

#[cfg(test)]
mod tests;
