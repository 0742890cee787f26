//! Sending an [`Answer`]'s body through whatever a speaker writes to: a [`Sink`] takes bytes from
//! memory and ranges of open files, by `sendfile` where it can (ft over plain TCP) or by copying
//! (TLS, a pipe, a test's buffer). What happens once the body is out is decided here, for every
//! speaker alike: a file read for admission is published in the cache, a body sent while hashed
//! gets its digest (or the news that the file changed), and the bytes are counted.

use std::cell::Cell;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;

use super::bytes::Bytes;
use super::get::{Answer, Source};
use super::refusal::Refusal;
use crate::digest::Digest;

/// Where a body's bytes go.
pub trait Sink {
    /// Writes bytes held in memory (a cache hit): after the header, in the same buffer.
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()>;

    /// Called before the first byte of a body of `len` bytes taken from a file: a sink that
    /// buffers sends what it holds (the header) now.
    fn before_file(&mut self, len: u64) -> io::Result<()> {
        let _ = len;
        Ok(())
    }

    /// Sends up to `most` bytes of `file` from `offset`, through `scratch` if it copies; returns
    /// how many went (0: the file ended).
    fn send_at(&mut self, file: &File, offset: u64, most: usize, scratch: &mut [u8]) -> io::Result<usize> {
        let want = most.min(scratch.len());
        let n = file.read_at(&mut scratch[..want], offset)?;
        self.write_all(&scratch[..n])?;
        Ok(n)
    }

    /// Whether [`Sink::send_at`] needs a scratch buffer (false for one that moves file bytes in
    /// the kernel).
    fn copies(&self) -> bool {
        true
    }

    /// Called after a whole file range went through [`Sink::send_at`].
    fn after_file(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Any writer is a sink that copies.
impl Sink for Vec<u8> {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        io::Write::write_all(self, bytes)
    }
}

/// How a body's sending went.
pub struct Sent {
    /// Body bytes that went out, counted as they went: a transfer cut part-way still counts what it
    /// sent.
    pub went: u64,
    /// How it ended, or the sink's error.
    pub end: io::Result<Ending>,
}

/// How a body that could be sent ended.
#[derive(Debug)]
pub enum Ending {
    /// All of it went, under the digest its header carried.
    Done,
    /// All of it went, and its header carried no digest: this is the digest to send after it, or
    /// why the bytes must not be trusted (the file changed while they went).
    Trailer(Result<Digest, Refusal>),
    /// The file ended early (it shrank while sent): `sent` of the header's `len` bytes went, and
    /// the peer, promised more, cannot be told so in step.
    Shrank { sent: u64 },
}

impl Answer<'_> {
    /// Sends the body into `sink` (the header is the speaker's to write first), then settles it:
    /// admission to the cache, or the trailer's digest. Counts the bytes in `stats`.
    pub fn send(mut self, sink: &mut impl Sink) -> Sent {
        let len = self.header.len;
        let went = Cell::new(0u64);
        let sent = match &mut self.body {
            Source::Hashing(hashing) => sink.before_file(len).and_then(|()| {
                hashing.send(|file, at, most, buf| sink.send_at(file, at, most, buf).inspect(|&n| count(&went, n)))
            }),
            Source::Memory { bytes, from, len } => match bytes.bytes() {
                Bytes::Heap(heap) => {
                    let (from, len) = (*from as usize, *len as usize);
                    sink.write_all(&heap[from..from + len]).map(|()| {
                        count(&went, len);
                        len as u64
                    })
                }
                Bytes::Sealed { file, .. } => send_range(sink, file, *from, *len, &went),
            },
            Source::File { file, from, len } => send_range(sink, file, *from, *len, &went),
        };
        self.shared.bytes_sent.fetch_add(went.get(), Ordering::Relaxed);
        let end = sent.map(|sent| match self.body {
            _ if sent != len => Ending::Shrank { sent },
            Source::Hashing(hashing) => Ending::Trailer(hashing.finish()),
            _ => {
                self.admit();
                Ending::Done
            }
        });
        Sent { went: went.get(), end }
    }
}

fn count(went: &Cell<u64>, n: usize) {
    went.set(went.get() + n as u64);
}

/// Sends `len` bytes of `file` from `from` into `sink`; returns how many went (fewer if the file
/// ended early).
fn send_range(sink: &mut impl Sink, file: &File, from: u64, len: u64, went: &Cell<u64>) -> io::Result<u64> {
    sink.before_file(len)?;
    let mut scratch = if sink.copies() {
        vec![0u8; usize::try_from(len).unwrap_or(usize::MAX).clamp(1, 256 << 10)]
    } else {
        Vec::new()
    };
    let mut sent = 0u64;
    while sent < len {
        let most = usize::try_from(len - sent).unwrap_or(usize::MAX).min(1 << 30);
        match sink.send_at(file, from + sent, most, &mut scratch) {
            Ok(0) => break,
            Ok(n) => {
                sent += n as u64;
                count(went, n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    sink.after_file()?;
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copying_a_file_sends_the_range_and_stops_where_it_ends() {
        let data: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
        let mut file = tempfile::tempfile().unwrap();
        io::Write::write_all(&mut file, &data).unwrap();
        let mut out = Vec::new();
        let went = Cell::new(0);
        assert_eq!(send_range(&mut out, &file, 5, 600_000, &went).unwrap(), 600_000);
        assert_eq!(went.get(), 600_000);
        assert_eq!(out, &data[5..600_005]);
        out.clear();
        assert_eq!(send_range(&mut out, &file, 699_990, 100, &went).unwrap(), 10, "the file ends early");
        assert_eq!(out, &data[699_990..]);
    }
}
