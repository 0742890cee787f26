//! The header of a `get` or `resume` reply, the trailer that carries the digest after a body
//! whose header had none, and the line after the bytes of a `put -` or a `patch`.

use std::fmt;
use std::io::{self, Write};

use crate::digest::Digest;
use crate::mtime::Mtime;

use super::line::ProtocolError;
use super::text::{malformed, parse_i64, parse_mode, parse_nanos, parse_u64};

/// The status line of a `get` or `resume` reply: `<len>` body bytes follow, which are the
/// file's bytes from `offset` on; the whole file is `size` bytes with digest `digest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetHeader {
    pub len: u64,
    pub offset: u64,
    pub size: u64,
    /// The whole file's digest; `None` when it follows the body in a trailer (see
    /// [`write_trailer`]), which only a client that agreed to the `trailer` feature is sent.
    pub digest: Option<Digest>,
    /// The file's permission bits on the server (`mode=` in octal), so the client never saves
    /// it more permissive; `None` from a server that does not send them.
    pub mode: Option<u32>,
    /// The file's modification time (seconds, nanoseconds), which the client gives its copy;
    /// `None` from a server that does not send it.
    pub mtime: Option<Mtime>,
}

impl GetHeader {
    /// The header for the whole file.
    pub fn whole(size: u64, digest: Digest) -> GetHeader {
        GetHeader { len: size, offset: 0, size, digest: Some(digest), mode: None, mtime: None }
    }

    /// Writes `OK <len> [offset=<o> size=<size>] [xxh3=<digest>] [mode=<octal>]`; offset and size
    /// only for a partial body, so a plain `get` reads `OK <size> xxh3=... mode=...`; no digest
    /// when a trailer will carry it.
    pub fn write(&self, w: &mut impl Write) -> io::Result<()> {
        write!(w, "OK {}", self.len)?;
        if self.offset != 0 {
            write!(w, " offset={} size={}", self.offset, self.size)?;
        }
        if let Some(digest) = self.digest {
            write!(w, " xxh3={digest}")?;
        }
        if let Some(mode) = self.mode {
            write!(w, " mode={mode:o}")?;
        }
        if let Some(Mtime { secs, nanos }) = self.mtime {
            write!(w, " mtime={secs} mtime_ns={nanos}")?;
        }
        writeln!(w)
    }

    /// Parses the fields after `OK `. Unknown `key=value` fields are ignored; known ones must be
    /// well-formed, and `offset + len` must equal `size`. A missing digest means a trailer follows
    /// the body: the caller decides whether it agreed to that.
    pub fn parse(fields: &str) -> Result<GetHeader, ProtocolError> {
        let bad = |what: &str| malformed(what, fields.as_bytes());
        let mut parts = fields.split(' ');
        let len = parts.next().and_then(parse_u64).ok_or_else(|| bad("expected a decimal size"))?;
        let (mut offset, mut size, mut digest, mut mode, mut mtime, mut mtime_ns) = (0, None, None, None, None, 0);
        for field in parts {
            match field.split_once('=') {
                Some(("offset", v)) => offset = parse_u64(v).ok_or_else(|| bad("bad offset"))?,
                Some(("size", v)) => size = Some(parse_u64(v).ok_or_else(|| bad("bad size"))?),
                Some(("xxh3", v)) => digest = Some(Digest::parse(v).ok_or_else(|| bad("bad xxh3 digest"))?),
                Some(("mode", v)) => mode = Some(parse_mode(v).ok_or_else(|| bad("bad mode"))?),
                Some(("mtime", v)) => mtime = Some(parse_i64(v).ok_or_else(|| bad("bad mtime"))?),
                Some(("mtime_ns", v)) => mtime_ns = parse_nanos(v).ok_or_else(|| bad("bad mtime_ns"))?,
                _ => {}
            }
        }
        let mtime = mtime.map(|secs| Mtime::new(secs, mtime_ns));
        let size = size.unwrap_or(len);
        if offset.checked_add(len) != Some(size) {
            return Err(bad("offset + length disagrees with size"));
        }
        Ok(GetHeader { len, offset, size, digest, mode, mtime })
    }
}

/// Writes the trailer that follows a body whose header had no digest: `OK xxh3=<digest>`, the
/// whole file's digest, sent only if the server read the same bytes twice and the file's version
/// did not change meanwhile (else it sends `ERR changed` instead, and the body must be thrown
/// away).
pub fn write_trailer(w: &mut impl Write, digest: Digest) -> io::Result<()> {
    writeln!(w, "OK xxh3={digest}")
}

/// Parses the fields of a trailer's `OK` line down to its digest (unknown fields are ignored).
pub fn parse_trailer(fields: &str) -> Result<Digest, ProtocolError> {
    let digest = fields.split(' ').find_map(|f| f.strip_prefix("xxh3="));
    digest.and_then(Digest::parse).ok_or_else(|| malformed("expected a trailer 'OK xxh3=<digest>'", fields.as_bytes()))
}

/// The line after a `put -`'s bytes: the digest of the whole file, or the sender giving up on it
/// (it changed or shrank while it was read), which stores nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutTrailer {
    Digest(Digest),
    Abort,
}

impl PutTrailer {
    pub fn parse(line: &[u8]) -> Option<PutTrailer> {
        let line = std::str::from_utf8(line).ok()?.trim_end_matches(['\r', '\n']);
        match line.strip_prefix("xxh3=") {
            Some(hex) => Digest::parse(hex).map(PutTrailer::Digest),
            None if line == "abort" => Some(PutTrailer::Abort),
            None => None,
        }
    }
}

impl fmt::Display for PutTrailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutTrailer::Digest(d) => write!(f, "xxh3={d}"),
            PutTrailer::Abort => f.write_str("abort"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_headers_round_trip_and_are_checked() {
        let d = Digest::of(b"x");
        for h in [
            GetHeader::whole(10, d),
            GetHeader {
                len: 4,
                offset: 6,
                size: 10,
                digest: Some(d),
                mode: None,
                mtime: Some(Mtime::new(-5, 999_999_999)),
            },
            GetHeader { mode: Some(0o4755), ..GetHeader::whole(0, d) },
            GetHeader { digest: None, mode: Some(0o644), ..GetHeader::whole(3, d) },
        ] {
            let mut out = Vec::new();
            h.write(&mut out).unwrap();
            let fields = std::str::from_utf8(&out).unwrap().strip_prefix("OK ").unwrap().trim_end();
            assert_eq!(GetHeader::parse(fields).unwrap(), h);
        }
        assert_eq!(GetHeader::parse(&format!("5 future=1 xxh3={d}")).unwrap(), GetHeader::whole(5, d));
        assert_eq!(GetHeader::parse("5").unwrap().digest, None, "a trailer follows");
        let mut out = Vec::new();
        write_trailer(&mut out, d).unwrap();
        assert_eq!(out, format!("OK xxh3={d}\n").as_bytes());
        assert_eq!(parse_trailer(&format!("later=1 xxh3={d}")).unwrap(), d);
        assert!(parse_trailer("xxh3=00").is_err() && parse_trailer("").is_err());
        for bad in [
            format!("5 xxh3={d}0"),
            format!("5 offset=1 xxh3={d}"),
            format!("5 offset=1 size=7 xxh3={d}"),
            format!("5 offset=x size=6 xxh3={d}"),
            format!("18446744073709551615 offset=1 size=0 xxh3={d}"),
        ] {
            assert!(GetHeader::parse(&bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn get_headers_round_trip(len in any::<u64>(), offset in any::<u64>(), d in any::<u128>()) {
            if let Some(size) = len.checked_add(offset) {
                let h = GetHeader { len, offset, size, digest: Some(Digest(d)), mode: None, mtime: None };
                let mut out = Vec::new();
                h.write(&mut out).unwrap();
                let line = std::str::from_utf8(&out).unwrap();
                prop_assert_eq!(GetHeader::parse(&line[3..line.len() - 1]).unwrap(), h);
            }
        }
    }
}
