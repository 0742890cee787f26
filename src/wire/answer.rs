//! The `OK` replies that carry more than a count, each a type with its writer beside its parser,
//! so the server writes and the client reads the same thing: the rights a token grants (`auth`),
//! a size and a digest (`sum`, `put`, `partial`), and readiness (`health`).

use std::fmt;
use std::io::{self, Write};

use crate::digest::Digest;

use super::line::ProtocolError;
use super::text::{malformed, parse_u64};

/// What a token allows: the reply to `auth` (`OK rights=read` or `OK rights=read,write`), and
/// the rights column of the server's auth file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rights {
    /// `list`, `walk`, `get`, `resume`, `sum`, `stat`, `stats`: every token has it.
    pub read: bool,
    /// Uploads (`put`, `partial`, `mkdir`), where the server takes them.
    pub write: bool,
}

impl Rights {
    pub const READ: Rights = Rights { read: true, write: false };
    pub const READ_WRITE: Rights = Rights { read: true, write: true };

    /// Parses `read` or `read,write` (in any order); every set of rights includes reading.
    pub fn parse_list(s: &str) -> Option<Rights> {
        let mut rights = Rights { read: false, write: false };
        for right in s.split(',') {
            match right {
                "read" => rights.read = true,
                "write" => rights.write = true,
                _ => return None,
            }
        }
        rights.read.then_some(rights)
    }

    /// Writes `OK rights=<rights>`.
    pub fn write(&self, w: &mut impl Write) -> io::Result<()> {
        writeln!(w, "OK rights={self}")
    }

    /// Parses the fields of the `OK` line answering `auth`; a server that names no rights (an
    /// older one) grants reading. Unknown fields, and rights a later version may add, are
    /// ignored; an empty list is malformed.
    pub fn parse(fields: &str) -> Result<Rights, ProtocolError> {
        let Some(list) = fields.split(' ').find_map(|f| f.strip_prefix("rights=")) else { return Ok(Rights::READ) };
        if list.is_empty() {
            return Err(malformed("bad rights", fields.as_bytes()));
        }
        Ok(Rights { read: true, write: list.split(',').any(|r| r == "write") })
    }
}

/// Rights compare with their text: `read` or `read,write`.
impl PartialEq<&str> for Rights {
    fn eq(&self, other: &&str) -> bool {
        Rights::parse_list(other) == Some(*self)
    }
}

impl fmt::Display for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.write { "read,write" } else { "read" })
    }
}

/// A size and a digest: `OK <size> xxh3=<digest>`. The reply to `sum` (a file's size and
/// digest), to `put` (the size and digest of the file stored), and to `partial` (how many bytes
/// of an interrupted upload are held, and their digest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summed {
    pub size: u64,
    pub digest: Digest,
}

impl Summed {
    pub fn write(&self, w: &mut impl Write) -> io::Result<()> {
        writeln!(w, "OK {} xxh3={}", self.size, self.digest)
    }

    /// Parses the fields after `OK `; unknown fields are ignored.
    pub fn parse(fields: &str) -> Result<Summed, ProtocolError> {
        let bad = || malformed("expected <size> xxh3=<digest>", fields.as_bytes());
        let size = fields.split(' ').next().and_then(parse_u64).ok_or_else(bad)?;
        let digest = fields.split(' ').find_map(|f| f.strip_prefix("xxh3=")).and_then(Digest::parse).ok_or_else(bad)?;
        Ok(Summed { size, digest })
    }
}

/// The reply to `health` from a server taking clients: `OK ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready;

impl Ready {
    pub fn write(&self, w: &mut impl Write) -> io::Result<()> {
        writeln!(w, "OK ready")
    }

    pub fn parse(fields: &str) -> Result<Ready, ProtocolError> {
        match fields.split(' ').next() {
            Some("ready") => Ok(Ready),
            _ => Err(malformed("expected OK ready", fields.as_bytes())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(write: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> String {
        let mut out = Vec::new();
        write(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn rights_round_trip_and_default_to_reading() {
        for rights in [Rights::READ, Rights::READ_WRITE] {
            let line = written(|w| rights.write(w));
            let fields = line.trim_end().strip_prefix("OK ").unwrap();
            assert_eq!(Rights::parse(fields).unwrap(), rights);
        }
        assert_eq!(written(|w| Rights::READ_WRITE.write(w)), "OK rights=read,write\n");
        assert_eq!(Rights::parse("").unwrap(), Rights::READ, "an older server names none");
        assert_eq!(Rights::parse("later=1 rights=write,read").unwrap(), Rights::READ_WRITE);
        assert_eq!(Rights::parse("rights=write").unwrap(), Rights::READ_WRITE, "reading is always granted");
        assert_eq!(Rights::parse("rights=read,later").unwrap(), Rights::READ, "rights a later version adds");
        assert!(Rights::parse("rights=").is_err());
        assert!(Rights::READ_WRITE == "read,write" && Rights::READ == "read" && Rights::READ != "write");
    }

    #[test]
    fn sums_round_trip_and_are_checked() {
        let sum = Summed { size: 12345, digest: Digest::of(b"twelve") };
        let line = written(|w| sum.write(w));
        assert_eq!(line, format!("OK 12345 xxh3={}\n", sum.digest));
        let fields = line.trim_end().strip_prefix("OK ").unwrap();
        assert_eq!(Summed::parse(fields).unwrap(), sum);
        assert_eq!(Summed::parse(&format!("{fields} later=field")).unwrap(), sum);
        assert!(Summed::parse("12345").is_err());
        assert!(Summed::parse("-1 xxh3=00").is_err());
    }

    #[test]
    fn ready_round_trips() {
        assert_eq!(written(|w| Ready.write(w)), "OK ready\n");
        assert!(matches!(Ready::parse("ready"), Ok(Ready)));
        assert!(Ready::parse("").is_err());
    }
}
