//! Build arguments: `{{ name }}` in a stage takes `--build-arg name=value`,
//! else the default from the stage's `%arguments` (`name=value` lines).
//!
//! As apptainer's `args.NewReader`: a `{{ name }}` is skipped when `#` and a
//! character other than `!` precede it on its line; a value's own
//! `{{ other }}` are replaced once (one level of nesting, unknown ones kept).

use std::collections::{BTreeMap, BTreeSet};

use super::error::{BuildArgProblem, DefError};
use super::lines::LineMap;
use super::text::{lossy, trim};

/// `--build-arg` values by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct BuildArgs(BTreeMap<String, String>);

impl BuildArgs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name` to `value` (both trimmed, as apptainer does).
    pub fn insert(&mut self, name: &str, value: &str) {
        self.0
            .insert(name.trim().to_owned(), value.trim().to_owned());
    }

    /// From `NAME=VALUE` strings, as apptainer reads `--build-arg`: split at
    /// the first `=`, both sides trimmed; a later one wins.
    pub fn from_pairs<I, S>(pairs: I) -> Result<Self, DefError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut args = BuildArgs::new();
        for pair in pairs {
            let pair = pair.as_ref();
            let Some((name, value)) = pair.split_once('=') else {
                return Err(DefError::BadBuildArg {
                    arg: pair.to_owned(),
                    problem: BuildArgProblem::NoEquals,
                });
            };
            if name.trim().is_empty() {
                return Err(DefError::BadBuildArg {
                    arg: pair.to_owned(),
                    problem: BuildArgProblem::EmptyName,
                });
            }
            args.insert(name, value);
        }
        Ok(args)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A stage's `%arguments` defaults, and the lines apptainer skips.
pub(crate) struct Defaults {
    pub values: BTreeMap<Vec<u8>, Vec<u8>>,
    pub skipped: Vec<Vec<u8>>,
}

/// `args.ReadDefaults`: the `KEY=VALUE` lines, both sides trimmed.
pub(crate) fn defaults_of(arguments: &[u8]) -> Defaults {
    let mut values = BTreeMap::new();
    let mut skipped = Vec::new();
    for line in arguments.split(|&b| b == b'\n') {
        let line = trim(line);
        if line.is_empty() || line.starts_with(b"#") {
            continue;
        }
        match line.iter().position(|&b| b == b'=') {
            Some(i) if !trim(&line[..i]).is_empty() => {
                values.insert(trim(&line[..i]).to_vec(), trim(&line[i + 1..]).to_vec());
            }
            _ => skipped.push(line.to_vec()),
        }
    }
    Defaults { values, skipped }
}

/// One `{{ name }}` in a text.
struct ArgMatch {
    start: usize,
    end: usize,
    name: std::ops::Range<usize>,
}

fn is_re2_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | b'\x0c' | b'\r' | b' ')
}

/// The matches of `{{\s*(\w+)\s*}}`, leftmost first, not overlapping.
fn find_args(text: &[u8]) -> Vec<ArgMatch> {
    let mut found = Vec::new();
    let mut i = 0;
    while i + 1 < text.len() {
        if let Some(m) = match_arg_at(text, i) {
            i = m.end;
            found.push(m);
        } else {
            i += 1;
        }
    }
    found
}

fn match_arg_at(text: &[u8], start: usize) -> Option<ArgMatch> {
    if !text[start..].starts_with(b"{{") {
        return None;
    }
    let mut p = start + 2;
    while p < text.len() && is_re2_space(text[p]) {
        p += 1;
    }
    let name_start = p;
    while p < text.len() && (text[p].is_ascii_alphanumeric() || text[p] == b'_') {
        p += 1;
    }
    let name = name_start..p;
    if name.is_empty() {
        return None;
    }
    while p < text.len() && is_re2_space(text[p]) {
        p += 1;
    }
    text[p..].starts_with(b"}}").then_some(ArgMatch {
        start,
        end: p + 2,
        name,
    })
}

/// Answers "does `#` followed by anything but `!` occur in `raw[from..to]`"
/// for queries whose `from` and `to` never decrease, scanning each byte once
/// (a long line with many commented-out `{{ }}` stays linear).
#[derive(Default)]
struct CommentScan {
    from: usize,
    scanned_to: usize,
    found: Option<usize>,
}

impl CommentScan {
    fn has_comment(&mut self, raw: &[u8], from: usize, to: usize) -> bool {
        if from != self.from {
            self.from = from;
            if self.found.is_some_and(|f| f < from) {
                self.found = None;
            }
            self.scanned_to = self.scanned_to.max(from);
        }
        while self.found.is_none() && self.scanned_to + 2 <= to {
            let k = self.scanned_to;
            if raw[k] == b'#' && raw[k + 1] != b'!' {
                self.found = Some(k);
            } else {
                self.scanned_to += 1;
            }
        }
        self.found.is_some_and(|f| f + 2 <= to)
    }
}

fn replace_all(hay: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    if needle.is_empty() {
        return hay.to_vec();
    }
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

/// A stage after substitution, with where its lines come from.
pub(crate) struct Substituted {
    pub text: Vec<u8>,
    pub lines: LineMap,
    /// Names replaced at least once.
    pub used: BTreeSet<String>,
}

/// Replaces the stage's `{{ name }}`s (apptainer's `args.NewReader`).
pub(crate) fn substitute(
    raw: &[u8],
    first_line: usize,
    build_args: &BuildArgs,
    defaults: &BTreeMap<Vec<u8>, Vec<u8>>,
) -> Result<Substituted, DefError> {
    let newlines: Vec<usize> = raw
        .iter()
        .enumerate()
        .filter_map(|(i, &b)| (b == b'\n').then_some(i))
        .collect();
    let line_of = |pos: usize| first_line + newlines.partition_point(|&n| n < pos);
    let lookup = |name: &[u8]| -> Option<Vec<u8>> {
        let name_str = std::str::from_utf8(name).ok()?;
        build_args
            .get(name_str)
            .map(|v| v.as_bytes().to_vec())
            .or_else(|| defaults.get(name).cloned())
    };

    let mut out = Vec::with_capacity(raw.len());
    let mut table = vec![first_line];
    let copy = |out: &mut Vec<u8>, table: &mut Vec<usize>, from: usize, to: usize| {
        for (k, &b) in raw[from..to].iter().enumerate() {
            out.push(b);
            if b == b'\n' {
                table.push(line_of(from + k) + 1);
            }
        }
    };
    let mut used = BTreeSet::new();
    let mut i = 0;
    let mut comments = CommentScan::default();
    for m in find_args(raw) {
        // The line holding the match, from the last newline at or after `i`.
        let line_start = match newlines.partition_point(|&n| n <= m.start) {
            0 => i,
            k => newlines[k - 1].max(i),
        };
        if comments.has_comment(raw, line_start, m.start) {
            continue;
        }
        let name = &raw[m.name.clone()];
        let Some(value) = lookup(name) else {
            return Err(DefError::UndefinedBuildArg {
                line: line_of(m.start),
                name: lossy(name),
                hint: undefined_hint(name, build_args, defaults),
            });
        };
        let mut new_value = value.clone();
        for nested in find_args(&value) {
            if let Some(v) = lookup(&value[nested.name.clone()]) {
                new_value = replace_all(&new_value, &value[nested.start..nested.end], &v);
            }
        }
        copy(&mut out, &mut table, i, m.start);
        let match_line = line_of(m.start);
        for &b in &new_value {
            out.push(b);
            if b == b'\n' {
                table.push(match_line);
            }
        }
        used.insert(lossy(name));
        i = m.end;
    }
    copy(&mut out, &mut table, i, raw.len());
    Ok(Substituted {
        text: out,
        lines: LineMap::from_table(first_line, table),
        used,
    })
}

fn undefined_hint(
    name: &[u8],
    build_args: &BuildArgs,
    defaults: &BTreeMap<Vec<u8>, Vec<u8>>,
) -> String {
    let known: Vec<String> = build_args
        .names()
        .map(str::to_owned)
        .chain(defaults.keys().map(|k| lossy(k)))
        .collect();
    let name = lossy(name);
    let near = super::checks::closest(&name, known.iter().map(String::as_str));
    match near {
        Some(n) => format!(" (did you mean {n}?)"),
        None => String::new(),
    }
}

/// Whether a text uses `{{ name }}` anywhere (comment lines included).
pub(crate) fn mentions(text: &[u8], name: &str) -> bool {
    find_args(text)
        .iter()
        .any(|m| &text[m.name.clone()] == name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(
        raw: &str,
        args: &[(&str, &str)],
        defaults: &[(&str, &str)],
    ) -> Result<String, DefError> {
        let mut build_args = BuildArgs::new();
        for (k, v) in args {
            build_args.insert(k, v);
        }
        let defaults = defaults
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        substitute(raw.as_bytes(), 1, &build_args, &defaults).map(|s| lossy(&s.text))
    }

    #[test]
    fn substitutes_like_apptainer() {
        assert_eq!(
            sub("a {{ X }} {{Y}}", &[("X", "1")], &[("Y", "2")]).unwrap(),
            "a 1 2"
        );
        assert_eq!(sub("{{X}}", &[("X", "1")], &[("X", "2")]).unwrap(), "1");
        // Skipped after `#` and a non-`!` character on the same line.
        assert_eq!(
            sub("# {{ X }}\n#!{{ X }}", &[("X", "1")], &[]).unwrap(),
            "# {{ X }}\n#!1"
        );
        // One level of nesting.
        assert_eq!(
            sub("{{ A }}", &[], &[("A", "x{{ B }}"), ("B", "y")]).unwrap(),
            "xy"
        );
        assert_eq!(
            sub("{{ A }}", &[], &[("A", "x{{ C }}")]).unwrap(),
            "x{{ C }}"
        );
        let err = sub("line\n{{ NOPE }}", &[], &[("NOPF", "1")]).unwrap_err();
        assert_eq!(err.line(), Some(2));
        assert!(err.to_string().contains("did you mean NOPF?"), "{err}");
        assert_eq!(
            err.apptainer_message(),
            "build var NOPE is not defined through either --build-arg (--build-arg-file) or 'arguments' section"
        );
    }

    #[test]
    fn line_map_follows_multiline_values() {
        let mut build_args = BuildArgs::new();
        build_args.insert("X", "a\nb\nc");
        let s = substitute(b"1\n{{ X }}\n3\n", 10, &build_args, &BTreeMap::new()).unwrap();
        assert_eq!(lossy(&s.text), "1\na\nb\nc\n3\n");
        assert_eq!(s.lines.line(4), 12);
        assert_eq!(s.lines.line(2), 11);
    }

    #[test]
    fn defaults_and_pairs() {
        let d = defaults_of(b"  A = 1 \n# B=2\nC\n=3\nD=\"q\"\n");
        assert_eq!(d.values.get(&b"A"[..]).map(|v| lossy(v)), Some("1".into()));
        assert_eq!(
            d.values.get(&b"D"[..]).map(|v| lossy(v)),
            Some("\"q\"".into())
        );
        assert_eq!(d.values.len(), 2);
        assert_eq!(d.skipped.len(), 2);
        assert!(BuildArgs::from_pairs(["A"]).is_err());
        assert!(BuildArgs::from_pairs([" =x"]).is_err());
        assert_eq!(
            BuildArgs::from_pairs(["A = b=c "]).unwrap().get("A"),
            Some("b=c")
        );
    }
}
