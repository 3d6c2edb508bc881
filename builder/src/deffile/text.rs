//! Byte-string helpers with Go's semantics.
//!
//! apptainer works on raw bytes with Go's `strings` package: `TrimSpace` and
//! `Fields` decode UTF-8 and treat only valid `unicode.IsSpace` runes as
//! space, an invalid byte is never space, and `ToLower` maps rune by rune.
//! These helpers do the same on `&[u8]`, so input that is not UTF-8 is read
//! exactly as apptainer reads it, without ever being decoded lossily.

use serde::{Serialize, Serializer};

/// Go's `unicode.IsSpace`.
pub(crate) fn is_go_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n'
            | '\u{0b}'
            | '\u{0c}'
            | '\r'
            | ' '
            | '\u{85}'
            | '\u{a0}'
            | '\u{1680}'
            | '\u{2000}'
            ..='\u{200a}' | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}'
    )
}

/// The first character of `bytes` and its length, if it is valid UTF-8.
fn first_char(bytes: &[u8]) -> Option<(char, usize)> {
    let chunk = bytes.utf8_chunks().next()?;
    let c = chunk.valid().chars().next()?;
    Some((c, c.len_utf8()))
}

/// The last character of `bytes` and its length, if it is valid UTF-8.
fn last_char(bytes: &[u8]) -> Option<(char, usize)> {
    for len in 1..=bytes.len().min(4) {
        let tail = &bytes[bytes.len() - len..];
        if let Ok(s) = std::str::from_utf8(tail) {
            let mut chars = s.chars();
            return match (chars.next(), chars.next()) {
                (Some(c), None) => Some((c, len)),
                _ => None,
            };
        }
    }
    None
}

/// `bytes` without leading Go whitespace.
pub(crate) fn trim_start(mut bytes: &[u8]) -> &[u8] {
    while let Some((c, len)) = first_char(bytes) {
        if !is_go_space(c) {
            break;
        }
        bytes = &bytes[len..];
    }
    bytes
}

/// `bytes` without trailing Go whitespace.
pub(crate) fn trim_end(mut bytes: &[u8]) -> &[u8] {
    while let Some((c, len)) = last_char(bytes) {
        if !is_go_space(c) {
            break;
        }
        bytes = &bytes[..bytes.len() - len];
    }
    bytes
}

/// Go's `strings.TrimSpace`.
pub(crate) fn trim(bytes: &[u8]) -> &[u8] {
    trim_end(trim_start(bytes))
}

/// Go's `strings.Fields`: the words between runs of whitespace.
pub(crate) fn fields(mut bytes: &[u8]) -> Vec<&[u8]> {
    let mut words = Vec::new();
    loop {
        bytes = trim_start(bytes);
        if bytes.is_empty() {
            return words;
        }
        let mut end = 0;
        while end < bytes.len() {
            match first_char(&bytes[end..]) {
                Some((c, _)) if is_go_space(c) => break,
                Some((_, len)) => end += len,
                None => end += 1,
            }
        }
        words.push(&bytes[..end]);
        bytes = &bytes[end..];
    }
}

/// Rune-by-rune lowercase; a rune whose lowercase is several runes, and any
/// byte that is not UTF-8, is kept as it is (as fingerprint.py's `lower`).
pub(crate) fn lower(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        let mut buf = [0u8; 4];
        for c in chunk.valid().chars() {
            let mut lowered = c.to_lowercase();
            let one = match (lowered.next(), lowered.next()) {
                (Some(l), None) => l,
                _ => c,
            };
            out.extend_from_slice(one.encode_utf8(&mut buf).as_bytes());
        }
        out.extend_from_slice(chunk.invalid());
    }
    out
}

/// `bytes` split at the first `sep`: `(before, Some(after))`, or `(bytes, None)`.
pub(crate) fn split_once(bytes: &[u8], sep: u8) -> (&[u8], Option<&[u8]>) {
    match bytes.iter().position(|&b| b == sep) {
        Some(i) => (&bytes[..i], Some(&bytes[i + 1..])),
        None => (bytes, None),
    }
}

/// Display form of bytes: UTF-8, with U+FFFD for bytes that are not.
pub(crate) fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Raw bytes of a recipe part (a section's text, the whole definition),
/// kept exactly as read: a definition file need not be UTF-8.
///
/// Serialized as a JSON string; bytes that are not UTF-8 appear there as
/// U+FFFD (the Rust value itself is always lossless).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Text(Vec<u8>);

impl Text {
    pub fn new(bytes: Vec<u8>) -> Self {
        Text(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The text, if it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// The text with U+FFFD for bytes that are not UTF-8.
    pub fn to_string_lossy(&self) -> String {
        lossy(&self.0)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

impl AsRef<[u8]> for Text {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&String::from_utf8_lossy(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_follows_go_whitespace() {
        assert_eq!(trim(b" \t\r\n x y \x0b"), b"x y");
        assert_eq!(trim("\u{a0}x\u{3000}".as_bytes()), b"x");
        // U+FEFF (a BOM) is not whitespace for Go.
        assert_eq!(trim("\u{feff}x".as_bytes()), "\u{feff}x".as_bytes());
        // An invalid byte is never whitespace.
        assert_eq!(trim(b"\x85 x \xa0"), b"\x85 x \xa0");
        assert_eq!(trim(b""), b"");
        assert_eq!(trim(b"   "), b"");
    }

    #[test]
    fn fields_split_on_unicode_space() {
        assert_eq!(
            fields("from\u{a0}build  x".as_bytes()),
            vec![&b"from"[..], b"build", b"x"]
        );
        assert!(fields(b" \t ").is_empty());
        assert_eq!(fields(b"a\xffb c"), vec![&b"a\xffb"[..], b"c"]);
    }

    #[test]
    fn lower_keeps_multi_rune_and_invalid() {
        assert_eq!(lower(b"BootStrap"), b"bootstrap");
        assert_eq!(lower("İX".as_bytes()), "İx".as_bytes());
        assert_eq!(lower(b"A\xffB"), b"a\xffb");
    }
}
