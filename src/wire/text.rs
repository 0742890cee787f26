//! Numbers and peer text on the wire: strict decimal parsing, and escaping whatever a peer sent
//! before it reaches a log or a terminal.

use super::line::ProtocolError;

/// A strict decimal `u64`: ASCII digits only (no sign, no spaces), no overflow.
pub fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

pub(super) fn parse_i64(s: &str) -> Option<i64> {
    match s.strip_prefix('-') {
        Some(digits) => parse_u64(digits).and_then(|v| 0i64.checked_sub_unsigned(v)),
        None => parse_u64(s).and_then(|v| i64::try_from(v).ok()),
    }
}

/// Escapes what could make a peer's text mislead a person reading it on a terminal: control
/// characters (a forged line, an escape sequence that retitles the window or clears the screen),
/// line and paragraph separators, bidirectional overrides, embeddings and isolates (which can show
/// `exe.txt` for `txt.exe`), and invisible zero-width characters. Each becomes `\u{...}` (`\n`,
/// `\t` for the common ones). Such characters may be in names (a file system allows them); they
/// are only ever printed escaped. JSON output carries them as they are, for programs.
pub fn escape(s: &str) -> String {
    if !s.chars().any(needs_escape) {
        return s.to_string();
    }
    s.chars().flat_map(|c| if needs_escape(c) { c.escape_default().collect::<Vec<_>>() } else { vec![c] }).collect()
}

/// Whether `c` is escaped by [`escape`].
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{061c}'                    // Arabic letter mark
            | '\u{180e}'                  // Mongolian vowel separator
            | '\u{200b}'..='\u{200f}'     // zero-width space, non-joiner, joiner; LRM, RLM
            | '\u{2028}' | '\u{2029}'     // line and paragraph separators
            | '\u{202a}'..='\u{202e}'     // bidi embeddings and overrides
            | '\u{2060}'..='\u{2064}'     // word joiner, invisible operators
            | '\u{2066}'..='\u{2069}'     // bidi isolates
            | '\u{feff}'                  // zero-width no-break space (BOM)
        )
}

pub(super) fn malformed(what: &str, line: &[u8]) -> ProtocolError {
    let shown: String = String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned();
    ProtocolError::Malformed(format!("{what}: {:?}", escape(&shown)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_nothing_that_acts_on_a_terminal_or_hides() {
        assert_eq!(escape("plain ünï 日本"), "plain ünï 日本");
        assert_eq!(escape("a\nb\tc"), "a\\nb\\tc");
        assert_eq!(escape("\x1b]0;pwned\x07\x1b[2J"), "\\u{1b}]0;pwned\\u{7}\\u{1b}[2J");
        assert_eq!(escape("invoice\u{202e}fdp.exe"), "invoice\\u{202e}fdp.exe");
        for c in ['\u{200b}', '\u{200d}', '\u{2028}', '\u{2029}', '\u{2066}', '\u{feff}', '\u{85}'] {
            let shown = escape(&format!("x{c}y"));
            assert!(shown.starts_with("x\\u{") && !shown.contains(c), "{c:?}: {shown}");
        }
    }
}
