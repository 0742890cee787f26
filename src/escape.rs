//! Showing text that came from elsewhere (a peer, a file system) to a person: whatever could
//! mislead someone reading it on a terminal is escaped. Imports nothing of ours, so names, the
//! wire and the binaries all escape the same way; and the printable token form the wire writes
//! names, link targets and messages in ([`token`], [`untoken`]).

use std::borrow::Cow;

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
    let mut out = String::with_capacity(s.len() + 8);
    push_escaped(&mut out, s, false);
    out
}

/// [`escape`] for bytes that may not be UTF-8 (a file name): what is not UTF-8 is shown byte by
/// byte as `\xHH`, and a backslash as `\\`, so every distinct name shows distinctly.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        push_escaped(&mut out, chunk.valid(), true);
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02X}"));
        }
    }
    out
}

fn push_escaped(out: &mut String, s: &str, backslash: bool) {
    for c in s.chars() {
        if backslash && c == '\\' {
            out.push_str("\\\\");
        } else if needs_escape(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
}

/// Bytes as one printable token of the wire (names, symlink targets, messages in version 2):
/// each byte that is a control byte, a space, `%`, DEL, part of a control character, or part of
/// no UTF-8 character becomes `%HH`; the rest is kept. [`untoken`] reads it back exactly.
pub fn token(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(bytes)
        && !s.bytes().any(is_escaped_ascii)
        && !s.chars().any(char::is_control)
    {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(bytes.len() * 3);
    let hex = |out: &mut String, b: u8| out.push_str(&format!("%{b:02X}"));
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() || (c.is_ascii() && is_escaped_ascii(c as u8)) {
                let mut buf = [0u8; 4];
                c.encode_utf8(&mut buf).bytes().for_each(|b| hex(&mut out, b));
            } else {
                out.push(c);
            }
        }
        chunk.invalid().iter().for_each(|&b| hex(&mut out, b));
    }
    Cow::Owned(out)
}

/// Reads a [`token`] back, decoding each `%HH` once. A `%` not followed by two hex digits, and a
/// raw space or control byte (which a token never holds), are refused.
pub fn untoken(s: &str) -> Result<Vec<u8>, &'static str> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let value = bytes
                .get(i + 1..i + 3)
                .and_then(|d| std::str::from_utf8(d).ok())
                .filter(|d| d.bytes().all(|c| c.is_ascii_hexdigit()))
                .and_then(|d| u8::from_str_radix(d, 16).ok())
                .ok_or("'%' not followed by two hex digits")?;
            out.push(value);
            i += 3;
        } else if is_escaped_ascii(b) {
            return Err("a space or control byte that should be written %HH");
        } else {
            out.push(b);
            i += 1;
        }
    }
    Ok(out)
}

/// The ASCII bytes a [`token`] writes as `%HH`.
fn is_escaped_ascii(b: u8) -> bool {
    b <= b' ' || b == b'%' || b == 0x7f
}

/// Whether `c` is escaped by [`escape`].
pub fn needs_escape(c: char) -> bool {
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

    #[test]
    fn bytes_show_distinctly_whatever_they_hold() {
        assert_eq!(escape_bytes(b"ok/\xc3\xbc"), "ok/ü");
        assert_eq!(escape_bytes(b"a\xffb\n"), "a\\xFFb\\n");
        assert_eq!(escape_bytes(b"back\\slash"), "back\\\\slash");
        assert_ne!(escape_bytes(b"\\n"), escape_bytes(b"\n"));
        assert_ne!(escape_bytes(b"\\xFF"), escape_bytes(b"\xff"));
    }

    #[test]
    fn tokens_are_printable_and_read_back_exactly() {
        for bytes in [&b"plain"[..], b"a b%\n\x7f", b"\xff\xc3", "\u{85}\u{202e}".as_bytes(), b""] {
            let t = token(bytes);
            assert!(!t.bytes().any(|b| b <= b' ' || b == 0x7f), "{t}");
            assert_eq!(untoken(&t).unwrap(), bytes);
        }
        assert_eq!(token(b"a b"), "a%20b");
        assert!(untoken("a%").is_err() && untoken("a%zz").is_err() && untoken("a b").is_err());
    }
}
