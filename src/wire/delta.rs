//! Delta transfer on the wire (feature `delta`): the request with the receiver's signature, the
//! reply's header, and the records that rebuild the file.
//!
//! ```text
//! delta SIZE BLOCK NAME\n  then ceil(SIZE / BLOCK) signature entries of 8 bytes
//!                          (rolling checksum u32, strong checksum u32, little-endian; see `delta/`);
//!                          SIZE 0 (no entries): the asker holds nothing, and the whole file
//!                          comes as records (compressed, where feature zstd was agreed)
//!   -> OK delta size=<size> mode=<octal> mtime=<s> mtime_ns=<ns>\n
//!      then records, each a tag byte and LEB128 numbers:
//!        'c' BLOCK COUNT     copy your blocks BLOCK .. BLOCK+COUNT (COUNT >= 1)
//!        'l' LEN  + LEN bytes   these bytes (1 <= LEN <= MAX_RECORD)
//!        'z' LEN PACKED + PACKED bytes   LEN bytes as one zstd frame of PACKED bytes
//!                            (1 <= PACKED <= LEN <= MAX_RECORD; feature zstd)
//!        'e' SIZE            the end: SIZE bytes were described (must equal size=)
//!      then the trailer: OK xxh3=<digest of the whole new file>\n, or ERR changed ...\n
//!   -> ERR <code> <message>\n   (after the signature was read: the connection stays in step)
//! ```
//!
//! The request line and its signature are one unit: a line that cannot be read, or whose shape
//! is refused (a block size out of range, more than `delta::MAX_BLOCKS` blocks), closes the
//! connection, since the signature's length cannot be trusted to skip it.

use std::io::{self, BufRead, Write};

use crate::delta::Shape;
use crate::mtime::Mtime;

use super::line::ProtocolError;
use super::text::{malformed, parse_i64, parse_mode, parse_nanos, parse_u64};

/// Longest literal record a receiver takes.
pub const MAX_RECORD: u64 = 1 << 20;

/// The header of a `delta` reply: the new file's size, mode and time (its digest comes in the
/// trailer, after the records).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeltaHeader {
    pub size: u64,
    pub mode: u32,
    pub mtime: Mtime,
}

impl DeltaHeader {
    pub fn write(&self, w: &mut impl Write) -> io::Result<()> {
        let Mtime { secs, nanos } = self.mtime;
        writeln!(w, "OK delta size={} mode={:o} mtime={secs} mtime_ns={nanos}", self.size, self.mode)
    }

    /// Parses the fields after `OK `; unknown `key=value` fields are ignored.
    pub fn parse(fields: &str) -> Result<DeltaHeader, ProtocolError> {
        let bad = |what: &str| malformed(what, fields.as_bytes());
        let mut parts = fields.split(' ');
        if parts.next() != Some("delta") {
            return Err(bad("expected 'OK delta ...'"));
        }
        let (mut size, mut mode, mut secs, mut nanos) = (None, None, None, 0);
        for field in parts {
            match field.split_once('=') {
                Some(("size", v)) => size = Some(parse_u64(v).ok_or_else(|| bad("bad size"))?),
                Some(("mode", v)) => mode = Some(parse_mode(v).ok_or_else(|| bad("bad mode"))?),
                Some(("mtime", v)) => secs = Some(parse_i64(v).ok_or_else(|| bad("bad mtime"))?),
                Some(("mtime_ns", v)) => nanos = parse_nanos(v).ok_or_else(|| bad("bad mtime_ns"))?,
                _ => {}
            }
        }
        match (size, mode, secs) {
            (Some(size), Some(mode), Some(secs)) => Ok(DeltaHeader { size, mode, mtime: Mtime::new(secs, nanos) }),
            _ => Err(bad("a delta header needs size, mode and mtime")),
        }
    }
}

/// The reply to `signature NAME` (feature `patch`): the shape of the server's copy, whose
/// signature entries follow the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignatureHeader(pub Shape);

impl SignatureHeader {
    pub fn write(&self, w: &mut impl Write) -> io::Result<()> {
        writeln!(w, "OK signature size={} block={}", self.0.size, self.0.block)
    }

    /// Parses the fields after `OK `, the shape checked (so what follows is bounded); unknown
    /// `key=value` fields are ignored.
    pub fn parse(fields: &str) -> Result<SignatureHeader, ProtocolError> {
        let bad = |what: &str| malformed(what, fields.as_bytes());
        let mut parts = fields.split(' ');
        if parts.next() != Some("signature") {
            return Err(bad("expected 'OK signature ...'"));
        }
        let (mut size, mut block) = (None, None);
        for field in parts {
            match field.split_once('=') {
                Some(("size", v)) => size = Some(parse_u64(v).ok_or_else(|| bad("bad size"))?),
                Some(("block", v)) => block = Some(parse_u64(v).ok_or_else(|| bad("bad block"))?),
                _ => {}
            }
        }
        let (Some(size), Some(block)) = (size, block) else { return Err(bad("a signature needs size and block")) };
        Shape::checked(size, block).map(SignatureHeader).map_err(|e| bad(&e.to_string()))
    }
}

/// One record of a `delta` reply, as read (a literal's bytes follow its record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    Copy {
        block: u64,
        count: u64,
    },
    Literal {
        len: u64,
    },
    /// `len` bytes compressed into `packed` bytes, which follow.
    Zstd {
        len: u64,
        packed: u64,
    },
    End {
        size: u64,
    },
}

const COPY: u8 = b'c';
const LITERAL: u8 = b'l';
const ZSTD: u8 = b'z';
const END: u8 = b'e';

impl Record {
    /// Writes the record (for a literal, only its head: its bytes are the caller's to write).
    pub fn write(&self, w: &mut impl Write) -> io::Result<()> {
        let mut buf = [0u8; 21];
        let n = match *self {
            Record::Copy { block, count } => head(&mut buf, COPY, &[block, count]),
            Record::Literal { len } => head(&mut buf, LITERAL, &[len]),
            Record::Zstd { len, packed } => head(&mut buf, ZSTD, &[len, packed]),
            Record::End { size } => head(&mut buf, END, &[size]),
        };
        w.write_all(&buf[..n])
    }

    /// Reads one record, checked for shape: a copy of at least one block, a literal of 1 to
    /// [`MAX_RECORD`] bytes, a compressed one no larger packed than unpacked. Whether it fits the file is the receiver's to check.
    pub fn read(r: &mut impl BufRead) -> Result<Record, ProtocolError> {
        let bad = |what: &str| ProtocolError::Malformed(format!("bad delta record: {what}"));
        let record = match byte(r)? {
            COPY => Record::Copy { block: varint(r)?, count: varint(r)? },
            LITERAL => Record::Literal { len: varint(r)? },
            ZSTD => Record::Zstd { len: varint(r)?, packed: varint(r)? },
            END => Record::End { size: varint(r)? },
            other => return Err(bad(&format!("unknown tag 0x{other:02x}"))),
        };
        match record {
            Record::Copy { count: 0, .. } => Err(bad("a copy of no blocks")),
            Record::Literal { len } if len == 0 || len > MAX_RECORD => {
                Err(bad(&format!("a literal of {len} bytes (1 to {MAX_RECORD})")))
            }
            Record::Zstd { len, packed } if len == 0 || len > MAX_RECORD || packed == 0 || packed > len => {
                Err(bad(&format!("{len} bytes packed in {packed} (1 <= packed <= bytes <= {MAX_RECORD})")))
            }
            record => Ok(record),
        }
    }
}

/// Writes a tag and numbers as LEB128 into `buf`; returns the length.
fn head(buf: &mut [u8; 21], tag: u8, numbers: &[u64]) -> usize {
    buf[0] = tag;
    let mut n = 1;
    for &v in numbers {
        let mut v = v;
        loop {
            let low = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                buf[n] = low;
                n += 1;
                break;
            }
            buf[n] = low | 0x80;
            n += 1;
        }
    }
    n
}

fn byte(r: &mut impl BufRead) -> Result<u8, ProtocolError> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => ProtocolError::Closed,
        _ => ProtocolError::Io(e),
    })?;
    Ok(b[0])
}

/// A LEB128 number of at most 10 bytes that fits 64 bits.
fn varint(r: &mut impl BufRead) -> Result<u64, ProtocolError> {
    let mut v = 0u64;
    for i in 0..10 {
        let b = byte(r)?;
        let bits = u64::from(b & 0x7f);
        if i == 9 && bits > 1 {
            break;
        }
        v |= bits << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(ProtocolError::Malformed("bad delta record: a number past 64 bits".into()))
}

/// The request line's fields after the verb: `SIZE BLOCK NAME`, the shape checked; `None` if
/// they cannot be read (the name is the caller's to read, from the returned rest).
pub(super) fn parse_shape(arg: &str) -> Result<(Shape, &str), String> {
    let mut parts = arg.splitn(3, ' ');
    let size = parts.next().and_then(parse_u64);
    let block = parts.next().and_then(parse_u64);
    let name = parts.next().filter(|n| !n.is_empty());
    match (size, block, name) {
        (Some(size), Some(block), Some(name)) => {
            Shape::checked(size, block).map(|s| (s, name)).map_err(|e| e.to_string())
        }
        _ => Err("usage: delta SIZE BLOCK NAME".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_ones_are_refused() {
        let records = [
            Record::Copy { block: 0, count: 1 },
            Record::Copy { block: u64::MAX, count: u64::MAX },
            Record::Literal { len: MAX_RECORD },
            Record::Zstd { len: MAX_RECORD, packed: 1 },
            Record::End { size: 0 },
            Record::End { size: 1 << 40 },
        ];
        let mut wire = Vec::new();
        for r in records {
            r.write(&mut wire).unwrap();
        }
        let mut from = &wire[..];
        for r in records {
            assert_eq!(Record::read(&mut from).unwrap(), r);
        }
        assert!(matches!(Record::read(&mut from), Err(ProtocolError::Closed)));
        for bad in [
            &b"x"[..],
            b"c\x00\x00",
            b"l\x00",
            b"l\x81\x80\x40",
            b"e\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02",
            b"z\x05\x06",
            b"z\x00\x00",
            b"z\x81\x80\x40\x01",
        ] {
            assert!(matches!(Record::read(&mut &bad[..]), Err(ProtocolError::Malformed(_))), "{bad:?}");
        }
        assert!(matches!(Record::read(&mut &b"c\x05"[..]), Err(ProtocolError::Closed)), "cut inside a record");
    }

    #[test]
    fn headers_round_trip() {
        let h = DeltaHeader { size: 123, mode: 0o640, mtime: Mtime::new(-3, 5) };
        let mut out = Vec::new();
        h.write(&mut out).unwrap();
        let line = std::str::from_utf8(&out).unwrap();
        assert_eq!(line, "OK delta size=123 mode=640 mtime=-3 mtime_ns=5\n");
        assert_eq!(DeltaHeader::parse(line.strip_prefix("OK ").unwrap().trim_end()).unwrap(), h);
        assert!(DeltaHeader::parse("123 xxh3=00").is_err());
        assert!(DeltaHeader::parse("delta size=1").is_err());
    }

    #[test]
    fn signature_headers_round_trip_and_bad_shapes_are_refused() {
        let h = SignatureHeader(Shape { size: 1 << 20, block: 1024 });
        let mut out = Vec::new();
        h.write(&mut out).unwrap();
        assert_eq!(out, b"OK signature size=1048576 block=1024\n");
        assert_eq!(SignatureHeader::parse("signature size=1048576 block=1024 later=1").unwrap(), h);
        for bad in [
            "signature size=1",
            "delta size=1 block=512",
            "signature size=1 block=3",
            "signature size=18446744073709551615 block=512",
        ] {
            assert!(SignatureHeader::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shapes_on_the_line_are_checked() {
        assert_eq!(parse_shape("100 512 a b").unwrap().1, "a b");
        assert!(parse_shape("100 100 a").unwrap_err().contains("block size"));
        assert!(parse_shape("18446744073709551615 512 a").unwrap_err().contains("blocks"));
        assert!(parse_shape("100 512").unwrap_err().starts_with("usage"));
    }
}
