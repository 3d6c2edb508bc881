//! The header: `Key: value` lines before the first section (apptainer's
//! `doHeader`).
//!
//! Lines are trimmed; blank and `#` lines are skipped and `#` cuts a line.
//! A line splits at its first `:`; the key is trimmed and lowercased, the
//! value trimmed. A value ending in `\` is joined with the next line with no
//! separator (`\n\` gives a newline); still pending when the header ends,
//! the key is dropped; a blank or comment line while pending crashes apptainer.
//! A repeated key: the last value wins.

use serde::ser::{Serialize, SerializeMap, Serializer};

use super::checks::closest;
use super::error::{did_you_mean, DefError};
use super::sections::VALID_SECTIONS;
use super::text::{lossy, lower, split_once, trim};

/// apptainer's header keys (`validHeaders`); `otherurl&n` stands for
/// `otherurl` followed by digits.
pub const HEADER_KEYS: &[&str] = &[
    "bootstrap",
    "from",
    "includecmd",
    "mirrorurl",
    "updateurl",
    "osversion",
    "include",
    "library",
    "registry",
    "namespace",
    "stage",
    "product",
    "user",
    "regcode",
    "productpgp",
    "registerurl",
    "modules",
    "otherurl&n",
    "fingerprints",
    "confurl",
    "setopt",
    "target",
    "frontend",
    "filename",
    "buildargs",
];

/// The keys as a reader would write them, for messages.
pub(crate) const KEYWORD_LIST: &str = "Bootstrap, From, Stage, MirrorURL, OSVersion, Include, IncludeCmd, UpdateURL, Library, Registry, Namespace, Product, User, Regcode, ProductPGP, RegisterURL, Modules, OtherURL<N>, Fingerprints, ConfURL, SetOpt, Target, Frontend, Filename, BuildArgs";

/// One `Key: value` of a header.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HeaderEntry {
    /// Lowercased key.
    pub key: String,
    /// Trimmed value (continuation lines joined).
    pub value: String,
    /// 1-based line where the key is written (the last one, if repeated).
    pub line: usize,
}

/// A stage's header: lowercased keys in first-seen order, each with its
/// last value. Serialized as a JSON object `{key: value}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    entries: Vec<HeaderEntry>,
}

impl Header {
    /// The value of a key (give it lowercased).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entry(key).map(|e| e.value.as_str())
    }

    /// The entry of a key (give it lowercased).
    pub fn entry(&self, key: &str) -> Option<&HeaderEntry> {
        self.entries.iter().find(|e| e.key == key)
    }

    /// `Bootstrap:`, the agent.
    pub fn bootstrap(&self) -> Option<&str> {
        self.get("bootstrap")
    }

    /// `From:`, the base image.
    pub fn from(&self) -> Option<&str> {
        self.get("from")
    }

    /// `Stage:`, the stage's name for `%files from`.
    pub fn stage(&self) -> Option<&str> {
        self.get("stage")
    }

    pub fn entries(&self) -> &[HeaderEntry] {
        &self.entries
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sets a key; a repeated key keeps its place and takes the new value.
    /// Returns the line of the value it replaced.
    fn insert(&mut self, key: String, value: String, line: usize) -> Option<usize> {
        if let Some(e) = self.entries.iter_mut().find(|e| e.key == key) {
            let old = e.line;
            e.value = value;
            e.line = line;
            return Some(old);
        }
        self.entries.push(HeaderEntry { key, value, line });
        None
    }
}

impl Serialize for Header {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.entries.len()))?;
        for e in &self.entries {
            map.serialize_entry(&e.key, &e.value)?;
        }
        map.end()
    }
}

/// Whether apptainer accepts a (lowercased) header key.
pub fn is_valid_key(key: &[u8]) -> bool {
    let known = |k: &[u8]| HEADER_KEYS.iter().any(|h| h.as_bytes() == k);
    // `otherurl&n` itself is only a pattern (fingerprint.py accepts it, Go does not).
    if known(key) && !key.ends_with(b"&n") {
        return true;
    }
    // `\d+$` → `&n`; a key without trailing digits is not retried.
    let stem_len = key.len() - key.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    stem_len < key.len() && known(&[&key[..stem_len], b"&n"].concat())
}

/// What the header parser knows about where it is, for better messages.
pub(crate) struct HeaderContext {
    /// The file starts with a UTF-8 BOM and this header holds line 1.
    pub bom_on_line_one: bool,
    /// Advice when this stage was cut from a script by a `Bootstrap:` line.
    pub stage_cut_hint: String,
}

/// Parses a header token (apptainer's text, already trimmed) whose first
/// line is file line `first_line`.
pub(crate) fn parse_header(
    text: &[u8],
    first_line: usize,
    ctx: &HeaderContext,
    warnings: &mut Vec<String>,
) -> Result<Header, DefError> {
    let mut header = Header::default();
    // The key and value of a `\`-continued line, and where it started.
    let mut key_cont: Vec<u8> = Vec::new();
    let mut val_cont: Vec<u8> = Vec::new();
    let mut cont_line = 0;
    for (index, raw_line) in trim(text).split(|&b| b == b'\n').enumerate() {
        let line_no = first_line + index;
        let line = trim(raw_line);
        if line.is_empty() || line.starts_with(b"#") {
            if !key_cont.is_empty() {
                return Err(DefError::HeaderContinuationCrash {
                    line: line_no,
                    continued_at: cont_line,
                    key: lossy(&key_cont),
                });
            }
            continue;
        }
        let (cut, _) = split_once(line, b'#');
        let (key, mut val, key_line);
        if val_cont.is_empty() {
            let (k, v) = split_once(cut, b':');
            let Some(v) = v else {
                return Err(DefError::HeaderLineWithoutColon {
                    line: line_no,
                    found: lossy(cut),
                    hint: colon_hint(cut, line_no, ctx),
                });
            };
            key = lower(trim(k));
            val = trim(v).to_vec();
            key_line = line_no;
        } else {
            // A continuation is glued on with no separator; note that Go
            // keeps `keyCont` set when the pending value was empty.
            key = std::mem::take(&mut key_cont);
            val = std::mem::take(&mut val_cont);
            val.extend_from_slice(trim(cut));
            key_line = cont_line;
        }
        if let Some(stripped) = val.strip_suffix(b"\\") {
            let mut pending = stripped.to_vec();
            if pending.ends_with(b"\\n") {
                pending.truncate(pending.len() - 2);
                pending.push(b'\n');
            }
            key_cont = key;
            val_cont = pending;
            cont_line = key_line;
            continue;
        }
        if !is_valid_key(&key) {
            return Err(DefError::InvalidHeaderKey {
                line: line_no,
                key: lossy(&key),
                hint: key_hint(&key, line_no, ctx),
            });
        }
        let key = lossy(&key);
        if std::str::from_utf8(&val).is_err() {
            warnings.push(format!(
                "line {key_line}: the value of header key `{key}` is not valid UTF-8; it is shown with U+FFFD replacements"
            ));
        }
        if let Some(old) = header.insert(key.clone(), lossy(&val), key_line) {
            warnings.push(format!(
                "line {key_line}: header key `{key}` repeats the one on line {old}; apptainer keeps only this last value"
            ));
        }
    }
    if !key_cont.is_empty() {
        warnings.push(format!(
            "line {cont_line}: the value of header key `{}` ends in `\\` but the header ends there; apptainer silently drops this key",
            lossy(&key_cont)
        ));
    }
    Ok(header)
}

fn bom_hint(line_no: usize, ctx: &HeaderContext) -> Option<String> {
    (ctx.bom_on_line_one && line_no == 1).then(|| {
        "; the file starts with a UTF-8 byte order mark (BOM), which apptainer reads as part of the first line: save the file without a BOM".to_owned()
    })
}

fn colon_hint(cut: &[u8], line_no: usize, ctx: &HeaderContext) -> String {
    let mut hint = String::new();
    if let Some(bom) = bom_hint(line_no, ctx) {
        hint.push_str(&bom);
    } else {
        let first_word = lower(
            super::text::fields(cut)
                .first()
                .copied()
                .unwrap_or_default(),
        );
        let first_word = lossy(&first_word);
        let word = first_word.trim_start_matches('%');
        if VALID_SECTIONS.contains(&word) || super::sections::APP_SECTIONS.contains(&word) {
            hint.push_str(&format!(
                " (did you mean %{word}? a section line starts with `%`)"
            ));
        } else if let Some(key) = closest(
            word,
            HEADER_KEYS.iter().copied().filter(|k| !k.contains('&')),
        ) {
            hint.push_str(&format!(" (did you mean `{key}:`?)"));
        }
    }
    hint.push_str(&ctx.stage_cut_hint);
    hint
}

fn key_hint(key: &[u8], line_no: usize, ctx: &HeaderContext) -> String {
    let mut hint = String::new();
    let not_utf8 = std::str::from_utf8(key).is_err();
    let key = lossy(key);
    if let Some(bom) = bom_hint(line_no, ctx) {
        hint.push_str(&bom);
    } else if key.starts_with("otherurl") {
        hint.push_str(" (OtherURL needs a number, e.g. `OtherURL1:`)");
    } else {
        let candidates = HEADER_KEYS.iter().copied().filter(|k| !k.contains('&'));
        hint.push_str(&did_you_mean(closest(&key, candidates).map(str::to_owned)));
    }
    if not_utf8 {
        hint.push_str(" (the key is not valid UTF-8; shown with U+FFFD)");
    }
    hint.push_str(&ctx.stage_cut_hint);
    hint
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> HeaderContext {
        HeaderContext {
            bom_on_line_one: false,
            stage_cut_hint: String::new(),
        }
    }

    fn parse(text: &str) -> Result<(Header, Vec<String>), DefError> {
        let mut warnings = Vec::new();
        parse_header(text.as_bytes(), 1, &ctx(), &mut warnings).map(|h| (h, warnings))
    }

    #[test]
    fn keys_are_case_insensitive_and_values_trimmed() {
        let (h, w) = parse("BOOTSTRAP:docker\nFrom : a:b#c\nOtherURL12: x\n  # comment\n").unwrap();
        assert_eq!(h.bootstrap(), Some("docker"));
        assert_eq!(h.from(), Some("a:b"));
        assert_eq!(h.get("otherurl12"), Some("x"));
        assert!(w.is_empty());
    }

    #[test]
    fn continuation_and_last_wins() {
        let (h, w) =
            parse("Bootstrap: docker\nInclude: a \\\n  b\nFrom: x\nFrom: y\nStage: \\n\\\nz")
                .unwrap();
        assert_eq!(h.get("include"), Some("a b"), "the space before `\\` stays");
        assert_eq!(h.from(), Some("y"));
        assert_eq!(h.stage(), Some("\nz"));
        assert_eq!(h.entries()[2].key, "from");
        assert_eq!(w.len(), 1, "{w:?}");
        let (h, w) = parse("Bootstrap: docker\nFrom: x \\").unwrap();
        assert_eq!(h.from(), None);
        assert!(w[0].contains("drops"), "{w:?}");
    }

    #[test]
    fn errors_name_the_line() {
        match parse("Bootstrap: docker\nFrom: x \\\n\n") {
            // The trailing blank line is trimmed off the token, so no crash here.
            Ok((h, _)) => assert_eq!(h.from(), None),
            Err(e) => panic!("{e}"),
        }
        let e = parse("Bootstrap: docker\nFrom: x \\\n\nStage: a").unwrap_err();
        assert_eq!(e.line(), Some(3));
        assert!(e.apptainer_panics());
        let e = parse("Bootsrap: docker").unwrap_err();
        assert!(e.to_string().contains("did you mean bootstrap?"), "{e}");
        let e = parse("Bootstrap: docker\npost").unwrap_err();
        assert_eq!(e.line(), Some(2));
        assert!(e.to_string().contains("%post"), "{e}");
        assert!(!is_valid_key(b"otherurl&n"));
        assert!(!is_valid_key(b"otherurl"));
        assert!(is_valid_key(b"otherurl0"));
    }
}
