//! A file said as records (see `wire/delta.rs`), both ways, apart from any connection: the
//! sender's side turns the matcher's [`Op`]s into records, its bytes gathered into records of
//! up to [`RECORD`] bytes and each compressed where that pays; the receiver's side
//! ([`Rebuild`]) reads records back as the plain bytes of the file, taking copies from its own
//! older copy, for a store that wants a body to read. `delta` replies go the first way from the
//! server; `patch` uploads go the same way from the client.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, BufRead, Read, Write};
use std::os::unix::fs::FileExt;
use std::time::Instant;

use crate::compress::{Packer, RECORD, Unpacker};
use crate::delta::Shape;
use crate::delta::matcher::Op;
use crate::digest::Hasher;
use crate::wire::{ProtocolError, Record};

/// Records going out: bytes gathered until a record is full or a copy comes, then sent as they
/// are or compressed (with a packer).
pub struct RecordWriter<'w, W: Write> {
    out: &'w mut W,
    pending: Vec<u8>,
    packer: Option<&'w mut Packer>,
    /// Bytes of the file's content that went (compressed or not).
    pub went: u64,
    /// Bytes compression spared.
    pub spared: u64,
}

impl<'w, W: Write> RecordWriter<'w, W> {
    /// Records of one file to `out`, compressed where `packer` finds it pays.
    pub fn new(out: &'w mut W, mut packer: Option<&'w mut Packer>) -> RecordWriter<'w, W> {
        if let Some(packer) = packer.as_deref_mut() {
            packer.begin_file();
        }
        RecordWriter { out, pending: Vec::new(), packer, went: 0, spared: 0 }
    }

    /// Says one op. A copy goes out at once (flushed), so the receiver copies those blocks while
    /// the scan goes on.
    pub fn say(&mut self, op: Op<'_>) -> io::Result<()> {
        match op {
            Op::Copy { block, count } => {
                self.flush()?;
                Record::Copy { block, count }.write(self.out)?;
                self.out.flush()
            }
            Op::Literal(mut bytes) => {
                while !bytes.is_empty() {
                    let room = RECORD - self.pending.len();
                    let (now, later) = bytes.split_at(room.min(bytes.len()));
                    self.pending.extend_from_slice(now);
                    bytes = later;
                    if self.pending.len() == RECORD {
                        self.flush()?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Sends the bytes gathered, if any.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let len = self.pending.len() as u64;
        let mut packer = self.packer.as_deref_mut();
        let began = Instant::now();
        let packed = match packer.as_deref_mut() {
            Some(packer) if packer.pace.compress_next() => packer.pack(&self.pending).map(<[u8]>::len),
            _ => None,
        };
        let packing = began.elapsed();
        let began = Instant::now();
        match (packed, packer) {
            (Some(n), Some(packer)) => {
                Record::Zstd { len, packed: n as u64 }.write(self.out)?;
                self.out.write_all(packer.packed())?;
                self.went += n as u64;
                self.spared += len - n as u64;
                packer.pace.packed(len, n as u64, packing, began.elapsed());
            }
            (_, packer) => {
                Record::Literal { len }.write(self.out)?;
                self.out.write_all(&self.pending)?;
                self.went += len;
                if let Some(packer) = packer {
                    packer.pace.sent(len, began.elapsed());
                }
            }
        }
        self.pending.clear();
        Ok(())
    }
}

/// The piece of a record being read out.
enum Piece {
    None,
    Copy { at: u64, left: u64 },
    Literal { left: u64 },
    Unpacked { at: usize },
}

/// The bytes of a file of `size` bytes, read from its records on `stream`: copies taken from
/// `base` (the receiver's copy, of the shape its signature had), literals from the stream,
/// compressed records unpacked. The end record is read with the last byte, so once `size` bytes
/// were given the stream is at what follows the records. Records that do not fit (a copy of a
/// block the base does not have, more bytes than announced, a compressed record that does not
/// give what it says, an end that disagrees) are an [`io::ErrorKind::InvalidData`] error. With
/// `skipping`, nothing is read from the base (its bytes come as zeros): for passing over records
/// that are refused, staying in step.
pub struct Rebuild<'c, S: BufRead> {
    stream: &'c RefCell<S>,
    /// The shape of the base's signature, and the base (none when skipping).
    shape: Option<Shape>,
    file: Option<&'c File>,
    size: u64,
    /// Bytes the records read so far describe.
    described: u64,
    /// Bytes given out.
    given: u64,
    piece: Piece,
    unpacker: Option<Unpacker>,
    packed: Vec<u8>,
    raw: Vec<u8>,
    skipping: bool,
    ended: bool,
    /// Bytes taken from the base.
    pub reused: u64,
    /// Bytes compression spared the wire.
    pub spared: u64,
}

fn invalid(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("records: {what}"))
}

impl<'c, S: BufRead> Rebuild<'c, S> {
    pub fn new(stream: &'c RefCell<S>, base: Option<(&'c File, Shape)>, size: u64) -> Rebuild<'c, S> {
        Rebuild {
            stream,
            shape: base.map(|(_, shape)| shape),
            file: base.map(|(file, _)| file),
            size,
            described: 0,
            given: 0,
            piece: Piece::None,
            unpacker: None,
            packed: Vec::new(),
            raw: Vec::new(),
            skipping: false,
            ended: false,
            reused: 0,
            spared: 0,
        }
    }

    /// Reads records of a file of `size` bytes against a base of shape `base` (`None`: no base)
    /// to their end, without reading any base: for passing over records that are refused,
    /// staying in step. An error if they do not fit.
    pub fn skip(stream: &'c RefCell<S>, base: Option<Shape>, size: u64) -> io::Result<()> {
        let mut skipping = Rebuild::new(stream, None, size);
        skipping.shape = base;
        skipping.skipping = true;
        io::copy(&mut skipping, &mut io::sink()).map(drop)
    }

    /// Reads the rest of the records to their end without reading the base (what a store that
    /// stopped early left unread).
    pub fn skip_rest(&mut self) -> io::Result<()> {
        self.skipping = true;
        io::copy(self, &mut io::sink()).map(drop)
    }

    /// Whether the end record was read.
    pub fn ended(&self) -> bool {
        self.ended
    }

    fn record(&mut self) -> io::Result<Record> {
        Record::read(&mut *self.stream.borrow_mut()).map_err(|e| match e {
            ProtocolError::Io(e) => e,
            ProtocolError::Closed => io::Error::new(io::ErrorKind::UnexpectedEof, "the records were cut off"),
            other => invalid(other),
        })
    }

    /// Reads the next record into `piece`; at `size` bytes, the end record.
    fn next(&mut self) -> io::Result<()> {
        let record = self.record()?;
        if self.described == self.size {
            return match record {
                Record::End { size } if size == self.size => {
                    self.ended = true;
                    Ok(())
                }
                other => Err(invalid(format!("{other:?} after the {} bytes announced", self.size))),
            };
        }
        let len = match record {
            Record::End { size } => return Err(invalid(format!("the end at {size} of {} bytes", self.size))),
            Record::Copy { block, count } => {
                let Some(shape) = self.shape else { return Err(invalid("a copy with no copy to copy from")) };
                let b = u64::from(shape.block);
                match block.checked_add(count).filter(|&end| end <= shape.count()) {
                    Some(end) => (end * b).min(shape.size) - block * b,
                    None => return Err(invalid(format!("a copy of blocks {block}+{count} of {}", shape.count()))),
                }
            }
            Record::Literal { len } | Record::Zstd { len, .. } => len,
        };
        if self.described.checked_add(len).is_none_or(|total| total > self.size) {
            return Err(invalid(format!("more than the {} bytes announced", self.size)));
        }
        self.described += len;
        self.piece = match record {
            Record::Copy { block, .. } => {
                self.reused += len;
                let b = self.shape.map_or(0, |shape| u64::from(shape.block));
                Piece::Copy { at: block * b, left: len }
            }
            Record::Zstd { packed, .. } => {
                let unpacker = match &mut self.unpacker {
                    Some(u) => u,
                    None => self.unpacker.insert(Unpacker::new()?),
                };
                self.packed.resize(packed as usize, 0);
                self.stream.borrow_mut().read_exact(&mut self.packed)?;
                unpacker.unpack(&self.packed, len as usize, &mut self.raw)?;
                self.spared += len - packed;
                Piece::Unpacked { at: 0 }
            }
            _ => Piece::Literal { left: len },
        };
        Ok(())
    }
}

impl<S: BufRead> Read for Rebuild<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.ended {
                return Ok(0);
            }
            let n = match &mut self.piece {
                Piece::None => 0,
                Piece::Copy { at, left } => {
                    let want = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                    let n = match (self.skipping, self.file) {
                        (false, Some(file)) => file.read_at(&mut buf[..want], *at)?,
                        _ => {
                            buf[..want].fill(0);
                            want
                        }
                    };
                    if n == 0 {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the copy shrank while it was read"));
                    }
                    *at += n as u64;
                    *left -= n as u64;
                    if *left == 0 {
                        self.piece = Piece::None;
                    }
                    n
                }
                Piece::Literal { left } => {
                    let want = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                    let n = self.stream.borrow_mut().read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the records were cut off"));
                    }
                    *left -= n as u64;
                    if *left == 0 {
                        self.piece = Piece::None;
                    }
                    n
                }
                Piece::Unpacked { at } => {
                    let n = (self.raw.len() - *at).min(buf.len());
                    buf[..n].copy_from_slice(&self.raw[*at..*at + n]);
                    *at += n;
                    if *at == self.raw.len() {
                        self.piece = Piece::None;
                    }
                    n
                }
            };
            self.given += n as u64;
            // The last byte given: the end record with it, so the stream is past the records.
            if matches!(self.piece, Piece::None) && (n == 0 || self.given == self.size) {
                self.next()?;
            }
            if n > 0 {
                return Ok(n);
            }
        }
    }
}

/// A reader that hashes what passes through it.
pub struct Hashing<'h, R>(pub R, pub &'h mut Hasher);

impl<R: Read> Read for Hashing<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.0.read(buf)?;
        self.1.update(&buf[..n]);
        Ok(n)
    }
}

/// The first `len` bytes of a file read in order by offset (the file's own position is left
/// alone: a cached memfd is shared between connections).
pub struct At<'f> {
    file: &'f File,
    at: u64,
    len: u64,
}

impl<'f> At<'f> {
    pub fn new(file: &'f File, len: u64) -> At<'f> {
        At { file, at: 0, len }
    }
}

impl Read for At<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = usize::try_from(self.len - self.at).unwrap_or(usize::MAX).min(buf.len());
        let n = self.file.read_at(&mut buf[..want], self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delta::Signature;
    use crate::delta::matcher::{Index, scan};

    /// `new` said as records against `old` (written to a file), with or without compression,
    /// and read back through a [`Rebuild`].
    fn round_trip(old: &[u8], new: &[u8], pack: bool) -> (Vec<u8>, u64) {
        let mut base = tempfile::tempfile().unwrap();
        base.write_all(old).unwrap();
        let shape = Shape::for_size(old.len() as u64).unwrap();
        let signature = Signature::compute(shape, &mut &old[..]).unwrap();
        let mut wire = Vec::new();
        let mut packer = pack.then(|| Packer::new().unwrap());
        let mut out = RecordWriter::new(&mut wire, packer.as_mut());
        let scanned = scan(&Index::new(signature), &mut &new[..], |op| out.say(op)).unwrap();
        out.flush().unwrap();
        Record::End { size: scanned.total }.write(&mut wire).unwrap();
        wire.extend_from_slice(b"after");
        let stream = RefCell::new(&wire[..]);
        let mut rebuild = Rebuild::new(&stream, Some((&base, shape)), new.len() as u64);
        let mut got = Vec::new();
        rebuild.read_to_end(&mut got).unwrap();
        assert!(rebuild.ended());
        assert_eq!(*stream.borrow(), b"after", "the stream is left just past the records");
        (got, rebuild.reused)
    }

    #[test]
    fn records_rebuild_the_new_file_and_leave_the_stream_after_them() {
        let old: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let mut new = old.clone();
        new[100_000..101_000].fill(7);
        new.insert(0, 1);
        for pack in [false, true] {
            let (got, reused) = round_trip(&old, &new, pack);
            assert_eq!(got, new);
            assert!(reused > 190_000, "{reused}");
        }
        let text = b"a line of text that repeats\n".repeat(10_000);
        assert_eq!(round_trip(&old, &text, true).0, text);
    }

    proptest::proptest! {
        #[test]
        fn any_old_any_new_comes_back_through_the_records(
            old in proptest::collection::vec(0u8..4, 1..20_000),
            edits in proptest::collection::vec((0usize..20_000, 0usize..900, proptest::collection::vec(0u8..4, 0..900)), 0..5),
            pack: bool,
        ) {
            let mut new = old.clone();
            for (at, cut, with) in edits {
                let at = at.min(new.len());
                let cut = cut.min(new.len() - at);
                new.splice(at..at + cut, with);
            }
            proptest::prop_assume!(!new.is_empty());
            proptest::prop_assert_eq!(round_trip(&old, &new, pack).0, new);
        }
    }

    #[test]
    fn records_that_do_not_fit_are_refused() {
        let mut base = tempfile::tempfile().unwrap();
        base.write_all(&[5u8; 4096]).unwrap();
        let shape = Shape { size: 4096, block: 1024 };
        let wire = |records: &[Record], tail: &[u8]| {
            let mut w = Vec::new();
            for r in records {
                r.write(&mut w).unwrap();
            }
            w.extend_from_slice(tail);
            w
        };
        let cases: [(&str, Vec<u8>, u64); 6] = [
            ("a copy past the base", wire(&[Record::Copy { block: 3, count: 2 }], b""), 2048),
            ("a copy with no base", wire(&[Record::Copy { block: 0, count: 1 }], b""), 1024),
            ("more than announced", wire(&[Record::Literal { len: 5 }], b"12345"), 4),
            ("an end too soon", wire(&[Record::End { size: 0 }], b""), 4),
            ("a wrong end", wire(&[Record::Literal { len: 2 }], b"12e\x03"), 2),
            ("bytes that are not zstd", wire(&[Record::Zstd { len: 9, packed: 3 }], b"abc"), 9),
        ];
        for (what, bytes, size) in cases {
            let stream = RefCell::new(&bytes[..]);
            let base = (what != "a copy with no base").then_some((&base, shape));
            let err = Rebuild::new(&stream, base, size).read_to_end(&mut Vec::new()).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{what}: {err}");
        }
        let cut = wire(&[Record::Literal { len: 5 }], b"12");
        let stream = RefCell::new(&cut[..]);
        let err = Rebuild::new(&stream, None, 5).read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        // Skipped, a copy reads nothing from the base.
        let ok = wire(&[Record::Copy { block: 0, count: 4 }, Record::End { size: 4096 }], b"");
        let stream = RefCell::new(&ok[..]);
        Rebuild::skip(&stream, Some(shape), 4096).unwrap();
    }
}
