//! Why a definition file is rejected.
//!
//! Every variant is a file apptainer rejects too (or crashes on). `Display`
//! is our message: the 1-based line in the whole file, what was found, what
//! was expected, and a suggestion for near-misses. [`DefError::apptainer_message`]
//! is the text apptainer itself prints, for comparing with the reference.

/// A definition file that apptainer would not build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefError {
    /// Nothing but blank lines and comments.
    #[error("no stages found: the file holds neither a header nor a section; expected a `Bootstrap:` line")]
    NoStages,

    /// A header or section over bufio.Scanner's 64 KiB token limit.
    #[error(
        "line {line}: {part} is too long: {size} bytes (with the line that ends it), over apptainer's 64 KiB limit per section (bufio.Scanner: token too long); move large content into a file and copy it with %files"
    )]
    TokenTooLong {
        line: usize,
        part: String,
        size: usize,
    },

    /// A header line without `:`.
    #[error("line {line}: header line `{found}` has no `:`; expected `Key: value`{hint}")]
    HeaderLineWithoutColon {
        line: usize,
        found: String,
        hint: String,
    },

    /// A header key apptainer does not know.
    #[error(
        "line {line}: invalid header keyword `{key}`; expected one of {}{hint}",
        super::header::KEYWORD_LIST
    )]
    InvalidHeaderKey {
        line: usize,
        key: String,
        hint: String,
    },

    /// A `\`-continued header value followed by a blank or comment line:
    /// apptainer stores into a nil map there and crashes.
    #[error(
        "line {line}: the value of header key `{key}` is continued with `\\` (line {continued_at}) but this line is blank or a comment; apptainer crashes on this (panic: assignment to entry in nil map); join the value onto one line or remove the blank line"
    )]
    HeaderContinuationCrash {
        line: usize,
        continued_at: usize,
        key: String,
    },

    /// A headerless file that starts with a section line and nothing else.
    #[error(
        "line {line}: section `{section}` has no body and there is no header; expected a `Bootstrap:` header and the section's lines below it"
    )]
    SectionWithoutBody { line: usize, section: String },

    /// `%appinstall` (etc.) without an app name.
    #[error(
        "line {line}: app section `%{section}` has no app name; expected `%{section} <app name>`"
    )]
    AppSectionWithoutName { line: usize, section: String },

    /// Section names apptainer does not know.
    #[error("line {}: {}", first_line(.sections), describe_invalid(.sections))]
    InvalidSections { sections: Vec<InvalidSection> },

    /// A `%files` line holding only `"`: apptainer's splitter finds nothing
    /// and it indexes an empty list.
    #[error(
        "line {line}: %files line `\"` is a lone double quote; expected `source [destination]` (apptainer crashes on this line: index out of range)"
    )]
    FilesLoneQuote { line: usize },

    /// A stage that is empty once build arguments are substituted.
    #[error("line {line}: the stage is empty after build arguments are substituted; expected a header or a section")]
    EmptyAfterSubstitution { line: usize },

    /// `{{ name }}` with neither a `--build-arg` nor a `%arguments` default.
    #[error(
        "line {line}: build argument `{name}` is not defined; expected `--build-arg {name}=VALUE` or a `{name}=VALUE` line in this stage's %arguments{hint}"
    )]
    UndefinedBuildArg {
        line: usize,
        name: String,
        hint: String,
    },

    /// `--build-arg`s that no `{{ name }}` uses.
    #[error("unused build argument(s) {}: the recipe has no `{{{{ name }}}}` for them{hint}", .names.join(", "))]
    UnusedBuildArgs { names: Vec<String>, hint: String },

    /// A `--build-arg` that is not `KEY=VALUE`.
    #[error("build argument `{arg}` {problem}; expected `NAME=VALUE`")]
    BadBuildArg {
        arg: String,
        problem: BuildArgProblem,
    },

    /// A stage without header in a file (apptainer needs one on every stage).
    #[error(
        "line {line}: this stage has no header; expected a `Bootstrap:` line (and the agent's keys) before its first section"
    )]
    StageWithoutHeader { line: usize },

    /// A header without `Bootstrap:`.
    #[error("line {line}: the header has no `Bootstrap:` key; expected e.g. `Bootstrap: docker`")]
    NoBootstrap { line: usize },

    /// An unknown bootstrap agent.
    #[error("line {line}: invalid bootstrap agent `{agent}`; expected one of {}{hint}", super::checks::AGENTS.join(", "))]
    InvalidAgent {
        line: usize,
        agent: String,
        hint: String,
    },

    /// `Bootstrap:` with an empty value: apptainer falls back to its OCI
    /// agent and fails to pull.
    #[error("line {line}: `Bootstrap:` has an empty value; expected an agent such as docker, library or localimage")]
    EmptyAgent {
        line: usize,
        /// The image reference apptainer would try (for its message).
        reference: String,
    },

    /// A header key the agent needs is missing.
    #[error("line {line}: bootstrap agent `{agent}` needs the header key `{key}`; {why}")]
    AgentMissingKey {
        line: usize,
        agent: String,
        key: &'static str,
        why: &'static str,
        /// apptainer's text.
        message: &'static str,
    },

    /// `%files from X` where no stage is named X.
    #[error("line {line}: `%files {args}` copies from stage `{stage}`, but no stage has `Stage: {stage}`; {known}{hint}")]
    FilesFromUnknownStage {
        line: usize,
        args: String,
        stage: String,
        known: String,
        hint: String,
    },
}

/// What is wrong with a `--build-arg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildArgProblem {
    NoEquals,
    EmptyName,
}

impl std::fmt::Display for BuildArgProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BuildArgProblem::NoEquals => "has no `=`",
            BuildArgProblem::EmptyName => "has an empty name",
        })
    }
}

/// One unknown section of [`DefError::InvalidSections`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSection {
    pub line: usize,
    /// apptainer's key for it (lowercased name, or `appX name` as written).
    pub key: String,
    /// The section line as written.
    pub found: String,
    /// Our advice: a near-miss or an explanation.
    pub hint: String,
}

fn first_line(sections: &[InvalidSection]) -> usize {
    sections.first().map_or(0, |s| s.line)
}

fn describe_invalid(sections: &[InvalidSection]) -> String {
    let mut out = String::new();
    let shown = super::sections::MAX_SHOWN_INVALID;
    for (i, s) in sections.iter().take(shown).enumerate() {
        if i == 0 {
            out.push_str(&format!("invalid section {}{}", s.found, s.hint));
        } else {
            out.push_str(&format!(
                "; line {}: invalid section {}{}",
                s.line, s.found, s.hint
            ));
        }
    }
    if sections.len() > shown {
        out.push_str(&format!("; and {} more", sections.len() - shown));
    }
    // The full list only helps when there is no near-miss to point at.
    if sections
        .iter()
        .take(shown)
        .any(|s| !s.hint.contains("did you mean"))
    {
        out.push_str(&format!(
            "; expected one of %{} or an app section %{} <app name>",
            super::sections::VALID_SECTIONS.join(" %"),
            super::sections::APP_SECTIONS.join(" %")
        ));
    }
    out
}

impl DefError {
    /// The 1-based line in the file the error is about, if there is one.
    pub fn line(&self) -> Option<usize> {
        use DefError::*;
        match self {
            NoStages | UnusedBuildArgs { .. } | BadBuildArg { .. } => None,
            InvalidSections { sections } => sections.first().map(|s| s.line),
            TokenTooLong { line, .. }
            | HeaderLineWithoutColon { line, .. }
            | InvalidHeaderKey { line, .. }
            | HeaderContinuationCrash { line, .. }
            | SectionWithoutBody { line, .. }
            | AppSectionWithoutName { line, .. }
            | FilesLoneQuote { line }
            | EmptyAfterSubstitution { line }
            | UndefinedBuildArg { line, .. }
            | StageWithoutHeader { line }
            | NoBootstrap { line }
            | InvalidAgent { line, .. }
            | EmptyAgent { line, .. }
            | AgentMissingKey { line, .. }
            | FilesFromUnknownStage { line, .. } => Some(*line),
        }
    }

    /// The message without its `line N: ` prefix (for `file:N: message`).
    pub fn detail(&self) -> String {
        let full = self.to_string();
        match self.line() {
            Some(line) => full
                .strip_prefix(&format!("line {line}: "))
                .map(str::to_owned)
                .unwrap_or(full),
            None => full,
        }
    }

    /// Whether apptainer crashes (`panic:`) on this file instead of reporting it.
    pub fn apptainer_panics(&self) -> bool {
        matches!(
            self,
            DefError::HeaderContinuationCrash { .. } | DefError::FilesLoneQuote { .. }
        )
    }

    /// The message apptainer itself gives for the same file (without its
    /// `while parsing definition: FILE:` wrappers), as fingerprint.py prints it.
    pub fn apptainer_message(&self) -> String {
        use DefError::*;
        match self {
            NoStages => "no stages found in definition file".into(),
            TokenTooLong { .. } => "bufio.Scanner: token too long".into(),
            HeaderLineWithoutColon { found, .. } => {
                format!("failed to parse deffile header: header key {found} had no val")
            }
            InvalidHeaderKey { key, .. } => {
                format!("failed to parse deffile header: invalid header keyword found: {key}")
            }
            HeaderContinuationCrash { .. } => "panic: assignment to entry in nil map".into(),
            SectionWithoutBody { section, .. } => {
                format!("section {section}: could not be split into section name and body")
            }
            AppSectionWithoutName { section, .. } => format!(
                "app section {section}: could not be split into section name and app name"
            ),
            InvalidSections { sections } => format!(
                "invalid section(s) specified: {}",
                sections
                    .iter()
                    .map(|s| s.key.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            FilesLoneQuote { .. } => {
                "panic: runtime error: index out of range [0] with length 0".into()
            }
            EmptyAfterSubstitution { .. } => "empty definition file".into(),
            UndefinedBuildArg { name, .. } => format!(
                "build var {name} is not defined through either --build-arg (--build-arg-file) or 'arguments' section"
            ),
            UnusedBuildArgs { names, .. } => format!(
                "unused build args: {}. Use option --warn-unused-build-args to show a warning instead of a fatal message",
                names.join(" ")
            ),
            BadBuildArg { arg, problem } => match problem {
                BuildArgProblem::NoEquals => format!("{arg:?} is not a key=value pair"),
                BuildArgProblem::EmptyName => format!("missing key portion in {arg:?}"),
            },
            StageWithoutHeader { .. } => "multiple stages detected, all must have headers".into(),
            NoBootstrap { .. } => "no bootstrap specification found".into(),
            InvalidAgent { agent, .. } => format!("invalid build source {agent}"),
            EmptyAgent { reference, .. } => {
                format!("unable to parse image name :{reference}:  not a registered transport")
            }
            AgentMissingKey { message, .. } => (*message).into(),
            FilesFromUnknownStage { stage, .. } => format!("stage {stage} was not found"),
        }
    }
}

/// ` (did you mean `x`?)` for a suggestion, or nothing.
pub(crate) fn did_you_mean(suggestion: Option<String>) -> String {
    suggestion
        .map(|s| format!(" (did you mean {s}?)"))
        .unwrap_or_default()
}
