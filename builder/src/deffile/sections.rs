//! One stage: header token, section tokens, and how apptainer merges them
//! (`doSections`, `parseTokenSection`, `populateDefinition`, `isEmpty`).
//!
//! A section line loses its leading `%`s; its name is the lowercased text up
//! to the first space (not tab) and its arguments the raw rest. A repeated
//! section's body is appended; a repeat whose line has a space replaces the
//! arguments (`%post ` clears them), a bare one keeps them. `%files` sections
//! merge only with the same raw arguments. App sections are keyed
//! `appX name` as written; words after the app name are dropped.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use regex::bytes::Regex;

use super::error::{did_you_mean, DefError, InvalidSection};
use super::header::{parse_header, Header, HeaderContext};
use super::lines::{tokens, LineMap, Token};
use super::text::{lossy, lower, split_once, trim, trim_start};
use super::{FileEntry, Section, Text};

/// How many invalid sections an error message details.
pub(crate) const MAX_SHOWN_INVALID: usize = 10;

/// apptainer's `validSections`.
pub const VALID_SECTIONS: &[&str] = &[
    "help",
    "setup",
    "files",
    "labels",
    "environment",
    "pre",
    "post",
    "runscript",
    "test",
    "startscript",
    "arguments",
];

/// apptainer's `appSections`.
pub const APP_SECTIONS: &[&str] = &[
    "appinstall",
    "applabels",
    "appfiles",
    "appenv",
    "apptest",
    "apphelp",
    "apprun",
    "appstart",
];

/// Sections whose emptiness is worth a warning (an empty `%setup` is a
/// common, harmless template leftover).
const SCRIPT_SECTIONS: &[&str] = &["post", "test", "runscript", "startscript"];

/// apptainer's `fileSplitter` (RE2 `\s` is `[\t\n\f\r ]`, `\w` is ASCII),
/// matched on bytes so a byte that is not UTF-8 is just a non-space byte.
#[allow(clippy::expect_used)] // a constant pattern, exercised by the unit tests
static FILE_SPLITTER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?-u)([^\t\n\f\r "']*\{\{[\t\n\f\r ]*[0-9A-Za-z_]+[\t\n\f\r ]*\}\}*[^\t\n\f\r {}"']*)+|([^\t\n\f\r "']+|"([^"]*)"|'([^']*))"#,
    )
    .expect("constant fileSplitter pattern")
});

/// One `%files` line as apptainer splits it: `(src, dest)`, or `None` when
/// the splitter finds nothing (apptainer crashes on such a line).
pub fn split_files_line(line: &[u8]) -> Option<(Vec<u8>, Vec<u8>, usize)> {
    let words: Vec<&[u8]> = FILE_SPLITTER
        .find_iter(line)
        .map(|m| m.as_bytes())
        .collect();
    let first = words.first()?;
    let strip = |w: &[u8]| {
        let w = trim(w);
        let start = w.iter().position(|&b| b != b'"').unwrap_or(w.len());
        let end = w.iter().rposition(|&b| b != b'"').map_or(start, |i| i + 1);
        w[start..end.max(start)].to_vec()
    };
    let dest = words.get(1).map(|w| strip(w)).unwrap_or_default();
    Some((strip(first), dest, words.len()))
}

/// A stage as one parse pass sees it.
pub(crate) struct StageParse {
    pub header: Header,
    pub sections: Vec<Section>,
    /// The `%arguments` body as apptainer holds it (for build-arg defaults).
    pub arguments: Vec<u8>,
}

/// Where a stage is and what the parser should know about it.
pub(crate) struct StageInput<'a> {
    pub text: &'a [u8],
    pub lines: &'a LineMap,
    pub header_ctx: HeaderContext,
}

/// What a section line says: what it merges on, its name, app and arguments
/// (`None`: the line leaves earlier arguments alone).
struct Identity {
    merge_key: Vec<u8>,
    name: Vec<u8>,
    app: Option<Vec<u8>>,
    args: Option<Vec<u8>>,
}

/// A section being assembled from its occurrences.
struct Building {
    /// apptainer's key (`post`, `apprun foo`, `files`).
    key: Vec<u8>,
    /// The section line as written, for messages.
    head: Vec<u8>,
    /// `%files` entries so far, `(src, dest)` → line, to spot repeats.
    seen_files: HashMap<(String, String), usize>,
    section: Section,
    text: Vec<u8>,
    script: Vec<u8>,
}

/// Parses one stage (`ParseDefinitionFile`). `Ok(None)` is apptainer's
/// "empty definition file": the stage is dropped.
pub(crate) fn parse_stage(
    input: &StageInput<'_>,
    warnings: &mut Vec<String>,
) -> Result<Option<StageParse>, DefError> {
    let toks = tokens(input.text).map_err(|long| {
        let head = trim(&long.head);
        let part = if head.starts_with(b"%") {
            format!("section `{}`", lossy(&head[..head.len().min(60)]))
        } else {
            "the header".to_owned()
        };
        DefError::TokenTooLong {
            line: input.lines.line(long.first_line),
            part,
            size: long.size,
        }
    })?;
    let Some(first_tok) = toks.first() else {
        return Ok(None);
    };
    let mut header = Header::default();
    let first_view = &first_tok.view;
    let first = trim(first_view);
    // (apptainer's text, token) for every section token, the first trimmed.
    let mut section_toks: Vec<(&[u8], &Token)> = Vec::new();
    if !first.is_empty() && first[0] != b'%' {
        let lead = first_view.len() - trim_start(first_view).len();
        let skipped_lines = first_view[..lead].iter().filter(|&&b| b == b'\n').count();
        let line = input.lines.line(first_tok.first_line + skipped_lines);
        header = parse_header(first, line, &input.header_ctx, warnings)?;
    } else if !first.is_empty() {
        section_toks.push((first, first_tok));
    }
    section_toks.extend(toks.iter().skip(1).map(|t| (t.view.as_slice(), t)));

    let mut built: Vec<Building> = Vec::new();
    // Hash lookups keep a file with very many sections linear.
    let mut built_by_merge_key: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut order: Vec<(Vec<u8>, usize, Vec<u8>)> = Vec::new(); // key, line, head
    let mut seen_keys: HashSet<Vec<u8>> = HashSet::new();
    let mut any_files = false;
    for (view, tok) in section_toks {
        let line = input.lines.line(tok.first_line);
        let (head, Some(body)) = split_once(view, b'\n') else {
            return Err(DefError::SectionWithoutBody {
                line,
                section: lossy(view),
            });
        };
        let raw_body = &input.text[tok.body_start.min(tok.raw.end)..tok.raw.end];
        let name = trim_percent(head);
        let lowered = lower(name);
        let mut key = split_once(&lowered, b' ').0.to_vec();
        let identity: Identity;
        if key == b"files" {
            any_files = true;
            let args = split_once(name, b' ').1.unwrap_or_default().to_vec();
            for (k, body_line) in body.split(|&b| b == b'\n').enumerate() {
                if trim(body_line) == b"\"" {
                    return Err(DefError::FilesLoneQuote {
                        line: input.lines.line(tok.first_line + 1 + k),
                    });
                }
            }
            identity = Identity {
                merge_key: [&b"files\n"[..], &args].concat(),
                name: key.clone(),
                app: None,
                args: Some(args),
            };
        } else if APP_SECTIONS.iter().any(|a| a.as_bytes() == key.as_slice()) {
            let mut parts = name.splitn(3, |&b| b == b' ');
            let kind = parts.next().unwrap_or_default();
            let Some(app_name) = parts.next() else {
                return Err(DefError::AppSectionWithoutName {
                    line,
                    section: lossy(kind),
                });
            };
            if app_name.is_empty() {
                warnings.push(format!(
                    "line {line}: `{}` has two spaces before the app name; apptainer reads an empty app name and drops the rest",
                    lossy(head)
                ));
            } else if parts.next().is_some_and(|rest| !trim(rest).is_empty()) {
                warnings.push(format!(
                    "line {line}: apptainer ignores the words after the app name in `{}`",
                    lossy(head)
                ));
            }
            key = [kind, b" ", app_name].concat();
            identity = Identity {
                merge_key: key.clone(),
                name: kind.to_vec(),
                app: Some(app_name.to_vec()),
                args: None,
            };
        } else {
            identity = Identity {
                merge_key: key.clone(),
                name: key.clone(),
                app: None,
                args: split_once(name, b' ').1.map(<[u8]>::to_vec),
            };
        }
        let Identity {
            merge_key,
            name: section_name,
            app,
            args: new_args,
        } = identity;
        if seen_keys.insert(key.clone()) {
            order.push((key.clone(), line, head.to_vec()));
        }
        let index = match built_by_merge_key.get(&merge_key).copied() {
            Some(i) => {
                let b = &mut built[i];
                b.section.occurrences.push(line);
                // One note per section is enough, however often it repeats.
                if b.section.occurrences.len() == 2 {
                    warnings.push(format!(
                        "line {line}: `{}` repeats the section of line {}; apptainer appends this body to it",
                        lossy(head),
                        b.section.line
                    ));
                }
                if b.section.name != "files" {
                    if let Some(args) = &new_args {
                        if b.section.args.as_bytes() != args.as_slice()
                            && !b.section.args.is_empty()
                        {
                            warnings.push(format!(
                                "line {line}: this `%{}` line replaces the arguments `{}` of line {}; apptainer keeps only the last ones",
                                b.section.name, b.section.args, b.section.line
                            ));
                        }
                        b.section.args = lossy(args);
                    }
                }
                i
            }
            None => {
                // Repeats merge on the key, and for `%files` its raw arguments.
                built_by_merge_key.insert(merge_key, built.len());
                built.push(Building {
                    key: key.clone(),
                    seen_files: HashMap::new(),
                    head: head.to_vec(),
                    section: Section {
                        name: lossy(&section_name),
                        app: app.as_deref().map(lossy),
                        args: new_args.as_deref().map(lossy).unwrap_or_default(),
                        line,
                        occurrences: vec![line],
                        text: Text::default(),
                        script: Text::default(),
                        files: Vec::new(),
                    },
                    text: Vec::new(),
                    script: Vec::new(),
                });
                built.len() - 1
            }
        };
        let b = &mut built[index];
        b.text.extend_from_slice(raw_body);
        b.script.extend_from_slice(body);
        if b.key == b"files" || b.key.starts_with(b"appfiles ") {
            let body_first_line = tok.first_line + 1;
            add_file_entries(
                &mut b.section.files,
                &mut b.seen_files,
                body,
                body_first_line,
                input.lines,
                warnings,
            );
        }
    }

    // populateDefinition: every key must be a known section.
    let invalid: Vec<InvalidSection> = order
        .iter()
        .filter(|(key, _, _)| !is_known_key(key))
        .enumerate()
        .map(|(n, (key, line, head))| InvalidSection {
            line: *line,
            key: lossy(key),
            found: lossy(head),
            // Advice for the first few is plenty (and keeps huge files fast).
            hint: if n < MAX_SHOWN_INVALID {
                invalid_hint(key, head)
            } else {
                String::new()
            },
        })
        .collect();
    if !invalid.is_empty() {
        return Err(DefError::InvalidSections { sections: invalid });
    }

    // isEmpty: does anything reach apptainer's Definition struct?
    let counts = |b: &Building| {
        let kind = split_once(&b.key, b' ').0;
        if APP_SECTIONS.iter().any(|a| a.as_bytes() == kind) {
            return true;
        }
        if b.key == b"labels" {
            return b
                .script
                .split(|&c| c == b'\n')
                .map(trim)
                .any(|t| !t.is_empty() && !t.starts_with(b"#"));
        }
        !b.section.args.is_empty() || !b.script.is_empty()
    };
    if header.is_empty() && !any_files && !built.iter().any(counts) {
        return Ok(None);
    }

    let arguments = built
        .iter()
        .find(|b| b.key == b"arguments")
        .map(|b| b.script.clone())
        .unwrap_or_default();
    let sections = built
        .into_iter()
        .map(|b| {
            let mut section = b.section;
            if SCRIPT_SECTIONS.contains(&section.name.as_str()) && trim(&b.script).is_empty() {
                warnings.push(format!(
                    "line {}: %{} is empty",
                    section.line, section.name
                ));
            }
            if section.name == "labels" && !section.args.trim().is_empty() {
                warnings.push(format!(
                    "line {}: apptainer ignores the text after `%labels` (`{}`); labels go on the lines below it",
                    section.line, section.args
                ));
            }
            if std::str::from_utf8(&b.text).is_err() || std::str::from_utf8(&b.head).is_err() {
                warnings.push(format!(
                    "line {}: section `{}` is not valid UTF-8; it is kept byte for byte, but shown with U+FFFD replacements",
                    section.line,
                    lossy(&b.head)
                ));
            }
            section.text = Text::new(b.text);
            section.script = Text::new(b.script);
            section
        })
        .collect();
    Ok(Some(StageParse {
        header,
        sections,
        arguments,
    }))
}

/// A section line without its leading `%`s (Go's `TrimLeft(line, "%")`).
fn trim_percent(head: &[u8]) -> &[u8] {
    let n = head.iter().take_while(|&&b| b == b'%').count();
    &head[n..]
}

fn is_known_key(key: &[u8]) -> bool {
    VALID_SECTIONS.iter().any(|s| s.as_bytes() == key)
        || APP_SECTIONS
            .iter()
            .any(|s| s.as_bytes() == split_once(key, b' ').0)
}

fn invalid_hint(key: &[u8], head: &[u8]) -> String {
    let hint = advice_for_invalid(key, head);
    if std::str::from_utf8(head).is_err() {
        return format!("{hint} (the line is not valid UTF-8; shown with U+FFFD)");
    }
    hint
}

fn advice_for_invalid(key: &[u8], head: &[u8]) -> String {
    if head.first().is_some_and(|&b| b != b'%') {
        return " (an indented line whose first word starts with % still opens a section, and apptainer then reads its name as empty; section lines start with % at the beginning of the line, and a script line must not start with %)".to_owned();
    }
    let (kind, app) = split_once(key, b' ');
    let kind_lower = lossy(&lower(kind));
    if let Some(app) = app {
        if APP_SECTIONS.contains(&kind_lower.as_str()) {
            return format!(
                " (did you mean %{kind_lower} {}? app section names must be lowercase)",
                lossy(app)
            );
        }
    }
    let candidates = VALID_SECTIONS.iter().chain(APP_SECTIONS).copied();
    match closest_section(&kind_lower, candidates) {
        Some(s) => did_you_mean(Some(format!("%{s}"))),
        None => {
            " (every line whose first word starts with % opens a section, even inside a script)"
                .to_owned()
        }
    }
}

fn closest_section<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    super::checks::closest(word, candidates)
}

/// Adds a `%files` body's entries (apptainer's per-line fileSplitter).
fn add_file_entries(
    files: &mut Vec<FileEntry>,
    seen: &mut HashMap<(String, String), usize>,
    body: &[u8],
    body_first_line: usize,
    lines: &LineMap,
    warnings: &mut Vec<String>,
) {
    for (k, raw_line) in body.split(|&b| b == b'\n').enumerate() {
        let line = trim(raw_line);
        if line.is_empty() || line.starts_with(b"#") {
            continue;
        }
        let line_no = lines.line(body_first_line + k);
        let Some((src, dest, words)) = split_files_line(line) else {
            continue;
        };
        if words > 2 {
            warnings.push(format!(
                "line {line_no}: apptainer ignores the words after the destination in `{}` (quote a path that has spaces with \"…\")",
                lossy(line)
            ));
        }
        if line.contains(&b'\'') {
            warnings.push(format!(
                "line {line_no}: apptainer does not understand single quotes in %files; `{}` is read as src `{}` dest `{}`",
                lossy(line),
                lossy(&src),
                lossy(&dest)
            ));
        }
        let entry = FileEntry {
            src: lossy(&src),
            dest: lossy(&dest),
            line: line_no,
        };
        match seen.entry((entry.src.clone(), entry.dest.clone())) {
            Entry::Occupied(first) => warnings.push(format!(
                "line {line_no}: %files entry `{}` repeats the one on line {}",
                lossy(line),
                first.get()
            )),
            Entry::Vacant(slot) => {
                slot.insert(line_no);
            }
        }
        files.push(entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(line: &str) -> Option<(String, String)> {
        split_files_line(line.as_bytes()).map(|(s, d, _)| (lossy(&s), lossy(&d)))
    }

    #[test]
    fn files_splitter_matches_apptainer() {
        assert_eq!(split("a b"), Some(("a".into(), "b".into())));
        assert_eq!(split("a"), Some(("a".into(), "".into())));
        assert_eq!(
            split("\"my file\" /opt/x"),
            Some(("my file".into(), "/opt/x".into()))
        );
        // Single quotes are not understood: `'[^']*` has no closing quote.
        assert_eq!(split("'a b' c"), Some(("'a b".into(), "' c".into())));
        assert_eq!(split("{{ X }}/a b"), Some(("{{ X }}/a".into(), "b".into())));
        assert_eq!(split("\"\" x"), Some(("".into(), "x".into())));
        assert_eq!(split("\""), None);
        assert_eq!(split("a\tb c"), Some(("a".into(), "b".into())));
    }
}
