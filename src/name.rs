//! A checked, relative file name: the only way a path from the wire reaches the file system.
//!
//! The server parses every requested name into a [`Name`] before it looks at a file, and the
//! client parses the name it asked for into the same type before it writes anything locally, so
//! both sides share one definition of "a name that stays inside its folder". A `Name` is a
//! `/`-separated list of plain components: no absolute paths, no `.` or `..`, no empty parts,
//! no NUL, backslash or control characters, bounded in length. Containment against symlinks is
//! not decided here (a name cannot know the disk); it is enforced when a file is opened, by
//! opening beneath the root directory (see `root.rs`).

use std::fmt;
use std::path::Path;

/// Longest accepted name, in bytes. Keeps a `get` request well under the request-line cap.
pub const MAX_NAME_LEN: usize = 1024;
/// Longest accepted component, in bytes (the usual `NAME_MAX`).
pub const MAX_COMPONENT_LEN: usize = 255;

/// A relative, `/`-separated name that cannot leave the folder it is resolved in.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(Box<str>);

/// Why a string is not a [`Name`].
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
    #[error("backslashes are not allowed")]
    Backslash,
    #[error("control characters (including NUL) are not allowed")]
    Control,
}

impl Name {
    /// Checks `s` and wraps it. No decoding of any kind happens: `%2e%2e` is a literal name.
    pub fn parse(s: &str) -> Result<Name, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong);
        }
        if s.starts_with('/') {
            return Err(NameError::Absolute);
        }
        if s.contains('\\') {
            return Err(NameError::Backslash);
        }
        if s.chars().any(char::is_control) {
            return Err(NameError::Control);
        }
        for part in s.split('/') {
            match part {
                "" => return Err(NameError::EmptyComponent),
                "." | ".." => return Err(NameError::DotComponent),
                p if p.len() > MAX_COMPONENT_LEN => return Err(NameError::ComponentTooLong),
                _ => {}
            }
        }
        Ok(Name(s.into()))
    }

    /// The name `self/child`, checked like any other name.
    pub fn join(&self, child: &str) -> Result<Name, NameError> {
        Name::parse(&format!("{}/{child}", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a relative path, for opening beneath a directory.
    pub fn as_path(&self) -> &Path {
        Path::new(&*self.0)
    }

    /// The folder part (`a/b` for `a/b/c`), if the name has one.
    pub fn parent(&self) -> Option<&Path> {
        self.0.rsplit_once('/').map(|(dir, _)| Path::new(dir))
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
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
    fn accepts_plain_nested_unicode_and_spaces() {
        for ok in [
            "file1.txt",
            "docs/a.txt",
            "a/b/c/d",
            "with space.txt",
            " leading and trailing ",
            "ünïcödé/日本語.txt",
            "%2e%2e/x",
            "...",
            "..x",
            ".hidden",
        ] {
            assert_eq!(Name::parse(ok).map(|n| n.to_string()), Ok(ok.to_string()));
        }
    }

    #[test]
    fn refuses_everything_that_could_leave_the_root() {
        let cases: &[(&str, NameError)] = &[
            ("", NameError::Empty),
            ("/etc/passwd", NameError::Absolute),
            ("..", NameError::DotComponent),
            ("../x", NameError::DotComponent),
            ("a/../../x", NameError::DotComponent),
            ("a/./b", NameError::DotComponent),
            (".", NameError::DotComponent),
            ("a//b", NameError::EmptyComponent),
            ("a/", NameError::EmptyComponent),
            ("..\\x", NameError::Backslash),
            ("x\0y", NameError::Control),
            ("x\ny", NameError::Control),
            ("x\ry", NameError::Control),
            ("x\u{7f}", NameError::Control),
            ("x\u{85}", NameError::Control),
        ];
        for (bad, why) in cases {
            assert_eq!(Name::parse(bad), Err(why.clone()), "{bad:?}");
        }
        assert_eq!(Name::parse(&"a".repeat(256)), Err(NameError::ComponentTooLong));
        assert_eq!(Name::parse(&"a/".repeat(600)), Err(NameError::TooLong));
    }

    #[test]
    fn join_and_parent() {
        let n = Name::parse("a/b").unwrap();
        assert_eq!(n.join("c").unwrap().as_str(), "a/b/c");
        assert!(n.join("..").is_err());
        assert_eq!(n.parent(), Some(Path::new("a")));
        assert_eq!(Name::parse("top").unwrap().parent(), None);
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
                prop_assert_eq!(name.as_str(), s.as_str());
                prop_assert!(name.as_path().components().all(|c| matches!(c, Component::Normal(_))));
                prop_assert!(!name.as_str().split('/').any(|p| p.is_empty() || p == "." || p == ".."));
                prop_assert!(!name.as_str().chars().any(|c| c == '\\' || c.is_control()));
            }
        }

        #[test]
        fn arbitrary_unicode_never_panics_and_never_escapes(s in "\\PC{0,40}") {
            if let Ok(name) = Name::parse(&s) {
                prop_assert!(name.as_path().components().all(|c| matches!(c, Component::Normal(_))));
            }
        }
    }
}
