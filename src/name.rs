//! A checked, relative file name: the only way a path from the wire reaches the file system.
//!
//! The server parses every requested name into a [`Name`] before it looks at a file, and the
//! client parses the name it asked for into the same type before it writes anything locally, so
//! both sides share one definition of "a name that stays inside its folder". A `Name` is a
//! `/`-separated list of plain components: no absolute paths, no `.` or `..`, no empty parts, no
//! NUL, bounded in length. Any other byte is allowed, as Linux allows it (a newline, a tab, an
//! escape, a backslash, bytes that are not UTF-8), so every file a Linux tree holds can be named.
//!
//! A name has three written forms:
//! - on the wire of protocol version 2 and later, [`Name::escaped`]: percent-encoded, one token
//!   with no space or control byte in it, decoded exactly once by [`Name::from_escaped`] (which
//!   refuses an encoded `/` or NUL, so decoding cannot add a component);
//! - on the wire of version 1, [`Name::plain`]: the name itself, which must then be UTF-8 without
//!   control characters (a name that is not has no version 1 form);
//! - for people, its `Display`: escaped so that nothing in it acts on a terminal.
//!
//! Containment against symlinks is not decided here (a name cannot know the disk); it is enforced
//! when a file is opened, by opening beneath the root directory (see `store/root.rs`).

use std::borrow::Cow;
use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Longest accepted name, in bytes. Keeps a `get` request well under the request-line cap, even
/// escaped (up to three bytes on the wire per byte of the name).
pub const MAX_NAME_LEN: usize = 1024;
/// Longest accepted component, in bytes (the usual `NAME_MAX`).
pub const MAX_COMPONENT_LEN: usize = 255;

/// A relative, `/`-separated name that cannot leave the folder it is resolved in.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(Box<[u8]>);

/// Why some bytes are not a [`Name`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("empty name")]
    Empty,
    #[error("name longer than {MAX_NAME_LEN} bytes")]
    TooLong,
    #[error("absolute names are not allowed")]
    Absolute,
    #[error("empty path component")]
    EmptyComponent,
    #[error("'.' and '..' components are not allowed")]
    DotComponent,
    #[error("path component longer than {MAX_COMPONENT_LEN} bytes")]
    ComponentTooLong,
    #[error("NUL bytes are not allowed")]
    Nul,
    /// The version 1 wire cannot carry it.
    #[error("control characters are not allowed (this server speaks protocol version 1)")]
    Control,
    /// The version 1 wire cannot carry it.
    #[error("the name is not UTF-8 (this server speaks protocol version 1)")]
    NotUtf8,
    #[error("bad escape in name: {0}")]
    BadEscape(&'static str),
}

impl Name {
    /// Checks `bytes` and wraps them. No decoding of any kind happens: `%2e%2e` is a literal name.
    pub fn from_bytes(bytes: &[u8]) -> Result<Name, NameError> {
        if bytes.is_empty() {
            return Err(NameError::Empty);
        }
        if bytes.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong);
        }
        if bytes[0] == b'/' {
            return Err(NameError::Absolute);
        }
        if bytes.contains(&0) {
            return Err(NameError::Nul);
        }
        for part in bytes.split(|&b| b == b'/') {
            match part {
                b"" => return Err(NameError::EmptyComponent),
                b"." | b".." => return Err(NameError::DotComponent),
                p if p.len() > MAX_COMPONENT_LEN => return Err(NameError::ComponentTooLong),
                _ => {}
            }
        }
        Ok(Name(bytes.into()))
    }

    /// [`Name::from_bytes`] of a string.
    pub fn parse(s: &str) -> Result<Name, NameError> {
        Name::from_bytes(s.as_bytes())
    }

    /// [`Name::from_bytes`] of a path's bytes (a command-line argument, a local file's name).
    pub fn from_os(s: &OsStr) -> Result<Name, NameError> {
        Name::from_bytes(s.as_bytes())
    }

    /// Reads a name in its version 1 wire form: UTF-8 without control characters.
    pub fn from_plain(s: &str) -> Result<Name, NameError> {
        if s.chars().any(char::is_control) {
            return Err(NameError::Control);
        }
        Name::parse(s)
    }

    /// The version 1 wire form, if the name has one (UTF-8 without control characters).
    pub fn plain(&self) -> Result<&str, NameError> {
        let s = std::str::from_utf8(&self.0).map_err(|_| NameError::NotUtf8)?;
        if s.chars().any(char::is_control) {
            return Err(NameError::Control);
        }
        Ok(s)
    }

    /// The wire form of version 2: each byte that is a control byte, a space, `%`, DEL, or part of
    /// no UTF-8 character becomes `%HH`; the rest is as it is. One token, printable, and what
    /// [`Name::from_escaped`] reads back exactly.
    pub fn escaped(&self) -> Cow<'_, str> {
        crate::escape::token(&self.0)
    }

    /// Reads a name in its version 2 wire form, decoding each `%HH` once. An encoded `/` or NUL,
    /// a `%` not followed by two hex digits, and a raw space or control byte are refused.
    pub fn from_escaped(s: &str) -> Result<Name, NameError> {
        let encoded = |what: &str| s.as_bytes().windows(3).any(|w| w.eq_ignore_ascii_case(what.as_bytes()));
        if encoded("%2F") {
            return Err(NameError::BadEscape("an encoded '/' (%2F)"));
        }
        if encoded("%00") {
            return Err(NameError::BadEscape("an encoded NUL (%00)"));
        }
        Name::from_bytes(&crate::escape::untoken(s).map_err(NameError::BadEscape)?)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The name as a string, if it is UTF-8.
    pub fn to_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// The name as a relative path, for opening beneath a directory.
    pub fn as_path(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.0))
    }

    /// The name `self/child`, checked like any other name.
    pub fn join(&self, child: impl AsRef<[u8]>) -> Result<Name, NameError> {
        let child = child.as_ref();
        let mut joined = Vec::with_capacity(self.0.len() + 1 + child.len());
        joined.extend_from_slice(&self.0);
        joined.push(b'/');
        joined.extend_from_slice(child);
        Name::from_bytes(&joined)
    }

    /// The folder part (`a/b` for `a/b/c`), if the name has one.
    pub fn parent(&self) -> Option<&Path> {
        self.parent_bytes().map(|dir| Path::new(OsStr::from_bytes(dir)))
    }

    /// The folder part's bytes, if the name has one.
    pub fn parent_bytes(&self) -> Option<&[u8]> {
        self.split().0
    }

    /// The folder part (if any) and the last component.
    pub fn split(&self) -> (Option<&[u8]>, &[u8]) {
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => (Some(&self.0[..i]), &self.0[i + 1..]),
            None => (None, &self.0),
        }
    }

    /// The last component.
    pub fn file_name(&self) -> &OsStr {
        OsStr::from_bytes(self.split().1)
    }

    /// The components, outermost first.
    pub fn components(&self) -> impl Iterator<Item = &[u8]> {
        self.0.split(|&b| b == b'/')
    }

    /// How many components deep the name is beneath its folder (0 for `a`, 1 for `a/b`).
    pub fn depth(&self) -> usize {
        self.0.iter().filter(|&&b| b == b'/').count()
    }

    /// Whether the name lies beneath `folder` (`folder/...`; not `folder` itself).
    pub fn is_beneath(&self, folder: &Name) -> bool {
        self.0.len() > folder.0.len() && self.0.starts_with(&folder.0) && self.0[folder.0.len()] == b'/'
    }
}

/// For people: control characters, bidirectional overrides, invisible characters, a backslash and
/// bytes that are not UTF-8 are escaped (see [`crate::escape::escape_bytes`]).
impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.plain() {
            Ok(s) if !s.contains('\\') && !s.chars().any(crate::escape::needs_escape) => f.write_str(s),
            _ => f.write_str(&crate::escape::escape_bytes(&self.0)),
        }
    }
}

impl std::str::FromStr for Name {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Name, NameError> {
        Name::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_name_linux_allows_but_those_that_climb() {
        for ok in [
            &b"file1.txt"[..],
            b"docs/a.txt",
            b"a/b/c/d",
            b"with space.txt",
            b" leading and trailing ",
            "ünïcödé/日本語.txt".as_bytes(),
            b"%2e%2e/x",
            b"...",
            b"..x",
            b".hidden",
            b"new\nline",
            b"tab\there",
            b"esc\x1b[2J",
            b"back\\slash",
            b"not utf-8 \xff\xfe",
        ] {
            assert_eq!(Name::from_bytes(ok).map(|n| n.as_bytes().to_vec()), Ok(ok.to_vec()));
        }
    }

    #[test]
    fn refuses_everything_that_could_leave_the_root() {
        let cases: &[(&[u8], NameError)] = &[
            (b"", NameError::Empty),
            (b"/etc/passwd", NameError::Absolute),
            (b"..", NameError::DotComponent),
            (b"../x", NameError::DotComponent),
            (b"a/../../x", NameError::DotComponent),
            (b"a/./b", NameError::DotComponent),
            (b".", NameError::DotComponent),
            (b"a//b", NameError::EmptyComponent),
            (b"a/", NameError::EmptyComponent),
            (b"x\0y", NameError::Nul),
        ];
        for (bad, why) in cases {
            assert_eq!(Name::from_bytes(bad), Err(why.clone()), "{bad:?}");
        }
        assert_eq!(Name::parse(&"a".repeat(256)), Err(NameError::ComponentTooLong));
        assert_eq!(Name::parse(&"a/".repeat(600)), Err(NameError::TooLong));
    }

    #[test]
    fn the_plain_form_is_utf8_without_control_characters() {
        assert_eq!(Name::from_plain("a b/ü").unwrap().plain(), Ok("a b/ü"));
        assert_eq!(Name::from_plain("x\ny"), Err(NameError::Control));
        assert_eq!(Name::from_plain("x\u{85}"), Err(NameError::Control));
        assert_eq!(Name::from_bytes(b"x\ny").unwrap().plain(), Err(NameError::Control));
        assert_eq!(Name::from_bytes(b"x\xff").unwrap().plain(), Err(NameError::NotUtf8));
    }

    #[test]
    fn the_escaped_form_is_one_printable_token_read_back_exactly_once() {
        let cases: &[(&[u8], &str)] = &[
            (b"plain.txt", "plain.txt"),
            ("with space/ü".as_bytes(), "with%20space/ü"),
            (b"100%", "100%25"),
            (b"%2e%2e", "%252e%252e"),
            (b"a\nb\tc\x1b\x7f", "a%0Ab%09c%1B%7F"),
            (b"bad\xff\xc3", "bad%FF%C3"),
            ("c1\u{85}".as_bytes(), "c1%C2%85"),
            (b"back\\slash", "back\\slash"),
        ];
        for (bytes, wire) in cases {
            let name = Name::from_bytes(bytes).unwrap();
            assert_eq!(name.escaped(), *wire);
            assert_eq!(Name::from_escaped(wire), Ok(name));
        }
        // Decoded once: what decodes to `..` or a component boundary is refused, not followed.
        assert_eq!(Name::from_escaped("%2e%2e/x"), Err(NameError::DotComponent));
        assert!(matches!(Name::from_escaped("a%2Fb"), Err(NameError::BadEscape(_))));
        assert!(matches!(Name::from_escaped("a%00"), Err(NameError::BadEscape(_))));
        for bad in ["a%", "a%4", "a%zz", "a b", "a\tb"] {
            assert!(matches!(Name::from_escaped(bad), Err(NameError::BadEscape(_))), "{bad:?}");
        }
        assert_eq!(Name::from_escaped("%252e%252e").unwrap().as_bytes(), b"%2e%2e");
    }

    #[test]
    fn shown_to_people_nothing_acts_on_a_terminal() {
        assert_eq!(Name::from_bytes(b"a/b c").unwrap().to_string(), "a/b c");
        assert_eq!(Name::from_bytes(b"x\x1b[2J\n").unwrap().to_string(), "x\\u{1b}[2J\\n");
        assert_eq!(Name::from_bytes("inv\u{202e}txt".as_bytes()).unwrap().to_string(), "inv\\u{202e}txt");
        assert_eq!(Name::from_bytes(b"\xff").unwrap().to_string(), "\\xFF");
        assert_ne!(Name::from_bytes(b"\\n").unwrap().to_string(), Name::from_bytes(b"\n").unwrap().to_string());
    }

    #[test]
    fn join_and_parent() {
        let n = Name::parse("a/b").unwrap();
        assert_eq!(n.join("c").unwrap().as_bytes(), b"a/b/c");
        assert!(n.join("..").is_err());
        assert_eq!(n.parent(), Some(Path::new("a")));
        assert_eq!(Name::parse("top").unwrap().parent(), None);
        assert_eq!(n.split(), (Some(&b"a"[..]), &b"b"[..]));
        assert!(n.is_beneath(&Name::parse("a").unwrap()));
        assert!(!n.is_beneath(&n) && !Name::parse("ab/c").unwrap().is_beneath(&Name::parse("a").unwrap()));
        assert_eq!(n.depth(), 1);
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;
    use std::path::Component;

    proptest! {
        /// Whatever the input, an accepted name is relative, made of plain components only, and
        /// reads back as itself.
        #[test]
        fn no_accepted_name_can_leave_its_folder(s in "(\\.{1,3}|[a-z]{1,3}|/|\\\\|%2e|\u{0}|\n| |é){0,12}") {
            if let Ok(name) = Name::parse(&s) {
                prop_assert_eq!(name.as_bytes(), s.as_bytes());
                prop_assert!(name.as_path().components().all(|c| matches!(c, Component::Normal(_))));
                prop_assert!(!name.components().any(|p| p.is_empty() || p == b"." || p == b".."));
            }
        }

        /// Any bytes at all: an accepted name's escaped form is one printable token that reads
        /// back as the very same name.
        #[test]
        fn escaping_round_trips_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 1..40)) {
            if let Ok(name) = Name::from_bytes(&bytes) {
                let wire = name.escaped();
                prop_assert!(!wire.bytes().any(|b| b <= b' ' || b == 0x7f));
                prop_assert_eq!(Name::from_escaped(&wire), Ok(name.clone()));
                prop_assert!(name.as_path().components().all(|c| matches!(c, Component::Normal(_))));
            }
        }

        #[test]
        fn arbitrary_unicode_never_panics_and_never_escapes(s in "\\PC{0,40}") {
            if let Ok(name) = Name::from_escaped(&s) {
                prop_assert!(name.as_path().components().all(|c| matches!(c, Component::Normal(_))));
            }
        }
    }
}
