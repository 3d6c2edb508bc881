//! Cutting a file into stages, and a stage into apptainer's tokens.
//!
//! apptainer (`parser.All`) cuts the file before every line that starts with
//! `bootstrap:` (any case, no indent), even inside a script or a heredoc.
//! Each stage is then read by `scanDefinitionFile`: lines split on LF with
//! one trailing CR removed; a line whose first word starts with `%` ends the
//! current token and starts a new one. The first token is the header unless
//! it starts with `%`. A token (with the `%` line that ends it) must fit in
//! bufio.Scanner's 64 KiB buffer.

use std::ops::Range;

use super::text::trim_start;

/// bufio.MaxScanTokenSize.
pub(crate) const MAX_TOKEN: usize = 64 * 1024;

/// One stage's bytes in the file.
#[derive(Debug, Clone)]
pub(crate) struct Chunk {
    pub range: Range<usize>,
    /// 1-based line of its first byte.
    pub first_line: usize,
}

/// Whether `bytes` starts with `bootstrap:` as Go's `(?i)` reads it: ASCII
/// letters in any case, and `s` also as `ſ` (U+017F, which folds to `s`).
fn starts_with_bootstrap(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    for &want in b"bootstrap" {
        match rest.first() {
            Some(&b) if b.eq_ignore_ascii_case(&want) => rest = &rest[1..],
            _ if want == b's' && rest.starts_with("ſ".as_bytes()) => rest = &rest[2..],
            _ => return false,
        }
    }
    rest.first() == Some(&b':')
}

/// Byte offsets where apptainer starts a new stage: `(?mi)^bootstrap:`.
pub(crate) fn stage_cuts(input: &[u8]) -> Vec<usize> {
    let mut cuts = Vec::new();
    let mut line_start = 0;
    loop {
        if starts_with_bootstrap(&input[line_start..]) {
            cuts.push(line_start);
        }
        match input[line_start..].iter().position(|&b| b == b'\n') {
            Some(i) => line_start += i + 1,
            None => return cuts,
        }
    }
}

/// The stages of a file as apptainer cuts it; empty pieces are dropped.
pub(crate) fn cut_stages(input: &[u8]) -> Vec<Chunk> {
    let mut bounds = vec![0];
    bounds.extend(stage_cuts(input));
    bounds.push(input.len());
    let mut line = 1;
    let mut chunks = Vec::new();
    for pair in bounds.windows(2) {
        let range = pair[0]..pair[1];
        if range.is_empty() {
            continue;
        }
        chunks.push(Chunk {
            range: range.clone(),
            first_line: line,
        });
        line += input[range].iter().filter(|&&b| b == b'\n').count();
    }
    chunks
}

/// One token of `scanDefinitionFile`: the header (preamble) or a section.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    /// apptainer's text: each line without its trailing CR, ending in `\n`.
    pub view: Vec<u8>,
    /// 0-based index of its first line in the stage.
    pub first_line: usize,
    /// Raw bytes in the stage: from its first line to its end.
    pub raw: Range<usize>,
    /// Where its second line starts (the body of a section token).
    pub body_start: usize,
    /// Raw size, counted as bufio.Scanner counts it.
    size: usize,
}

/// A token over the 64 KiB limit.
#[derive(Debug, Clone)]
pub(crate) struct TooLong {
    /// 0-based line of the token's first line in the stage.
    pub first_line: usize,
    /// The token's first line (apptainer's text).
    pub head: Vec<u8>,
    pub size: usize,
}

/// Splits one stage into tokens exactly as `scanDefinitionFile` does.
pub(crate) fn tokens(stage: &[u8]) -> Result<Vec<Token>, TooLong> {
    let mut toks: Vec<Token> = Vec::new();
    let mut pos = 0;
    let mut line_index = 0;
    while pos < stage.len() {
        let (content_end, next, last) = match stage[pos..].iter().position(|&b| b == b'\n') {
            Some(i) => (pos + i, pos + i + 1, false),
            None => (stage.len(), stage.len(), true),
        };
        let mut content = &stage[pos..content_end];
        if let Some(stripped) = content.strip_suffix(b"\r") {
            content = stripped;
        }
        let raw_len = next - pos;
        let opens_section = trim_start(content).first() == Some(&b'%');
        if opens_section || toks.is_empty() {
            if let Some(prev) = toks.last() {
                // The token plus the `%` line ending it must fit (one byte less at EOF).
                if prev.size + raw_len > MAX_TOKEN - usize::from(last) {
                    return Err(too_long(prev, prev.size + raw_len));
                }
            }
            toks.push(Token {
                view: Vec::new(),
                first_line: line_index,
                raw: pos..pos,
                body_start: next,
                size: 0,
            });
        }
        if let Some(tok) = toks.last_mut() {
            tok.view.extend_from_slice(content);
            tok.view.push(b'\n');
            tok.size += raw_len;
            tok.raw.end = next;
        }
        pos = next;
        line_index += 1;
    }
    if let Some(tok) = toks.last() {
        // The last token must leave a free byte in the buffer.
        if tok.size >= MAX_TOKEN {
            return Err(too_long(tok, tok.size));
        }
    }
    Ok(toks)
}

fn too_long(tok: &Token, size: usize) -> TooLong {
    let head_end = tok
        .view
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(tok.view.len());
    TooLong {
        first_line: tok.first_line,
        head: tok.view[..head_end].to_vec(),
        size,
    }
}

/// Maps a stage's 0-based line index (in the text actually parsed, which may
/// be the text after build-argument substitution) to its 1-based line in the file.
#[derive(Debug, Clone)]
pub(crate) struct LineMap {
    first_line: usize,
    /// File line of each parsed line, when substitution changed the text.
    table: Option<Vec<usize>>,
}

impl LineMap {
    pub fn identity(first_line: usize) -> Self {
        LineMap {
            first_line,
            table: None,
        }
    }

    pub fn from_table(first_line: usize, table: Vec<usize>) -> Self {
        LineMap {
            first_line,
            table: Some(table),
        }
    }

    pub fn line(&self, index: usize) -> usize {
        match &self.table {
            None => self.first_line + index,
            Some(table) => match table.get(index) {
                Some(&line) => line,
                None => table
                    .last()
                    .map_or(self.first_line, |&last| last + index + 1 - table.len()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_at_line_start_any_case() {
        let text = b"# pre\nBootstrap: docker\n  bootstrap: no\nBOOTSTRAP:x\nbootstrap :no\n";
        assert_eq!(stage_cuts(text), vec![6, 40]);
        assert_eq!(stage_cuts("bootſtrap: x".as_bytes()), vec![0]);
        // A BOM keeps the first line from matching.
        assert!(stage_cuts("\u{feff}Bootstrap: docker\n".as_bytes()).is_empty());
        let chunks = cut_stages(b"Bootstrap: a\nx\nbootstrap: b\n");
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[1].first_line, 3);
    }

    #[test]
    fn tokens_split_at_percent_lines() {
        let toks = tokens(b"Bootstrap: x\r\n\n%post\r\n  echo 100%\n  %s\nend").unwrap();
        let views: Vec<_> = toks
            .iter()
            .map(|t| String::from_utf8_lossy(&t.view).into_owned())
            .collect();
        assert_eq!(
            views,
            vec!["Bootstrap: x\n\n", "%post\n  echo 100%\n", "  %s\nend\n"]
        );
        assert_eq!(toks[1].first_line, 2);
        assert_eq!(toks[2].raw.end, 42);
    }

    #[test]
    fn token_limit_matches_bufio() {
        // 65535 bytes of header then a `%` line: too long with the % line.
        let mut text = vec![b'a'; MAX_TOKEN - 1];
        text.push(b'\n');
        text.extend_from_slice(b"%post\n");
        assert!(tokens(&text).is_err());
        let fits = vec![b'a'; MAX_TOKEN - 1];
        assert!(tokens(&fits).is_ok());
        let over = vec![b'a'; MAX_TOKEN];
        assert!(tokens(&over).is_err());
    }
}
