//! Delta downloads: where an older copy of a file is already in the output folder, the request
//! carries its signature and the reply says the new file as copies of its blocks and the bytes it
//! lacks. The new file is built in `<name>.part` from both, checked against the whole file's
//! digest, and only then put in place over the older copy, as any download is.
//!
//! The reply is checked as it is read: a copy of a block the older copy does not have, or more
//! bytes than the header announced, ends the connection (the server is not speaking sense); a
//! rebuilt file whose digest is wrong is deleted and reported, and the older copy stays.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;

use super::conn::Client;
use super::outdir::OutDir;
use super::part::Partial;
use super::result::{ClientError, Downloaded};
use crate::delta::{Shape, Signature};
use crate::digest::Hasher;
use crate::name::Name;
use crate::wire::{self as protocol, DeltaHeader, ProtocolError, Record, Request};

/// Older copies smaller than this are not worth a signature: the file is fetched whole.
pub const DELTA_FROM: u64 = 64 << 10;

/// A signature larger than this waits until no other request is in flight before it is sent,
/// so the client never blocks writing requests while the server blocks writing replies.
pub const SMALL_SIGNATURE: usize = 32 << 10;

/// The older copy a delta download rebuilds from.
pub(super) struct Older {
    file: File,
    shape: Shape,
}

/// The request for a delta download of `name` against the older copy in `dir`, and the
/// signature that follows its line; `None` where there is no older copy worth one (or it cannot
/// be read: then the file is fetched whole).
pub(super) fn prepare(name: &Name, dir: &OutDir) -> Option<(Request, Vec<u8>, Older)> {
    let (file, size) = dir.open_older(name)?;
    if size < DELTA_FROM {
        return None;
    }
    let shape = Shape::for_size(size)?;
    let signature = Signature::compute(shape, &mut io::BufReader::with_capacity(256 << 10, &file)).ok()?;
    let request = Request::Delta { shape, name: name.clone() };
    Some((request, signature.to_bytes(), Older { file, shape }))
}

impl Client {
    /// Reads the reply to a `delta` of `name`: the file rebuilt from `older` and the records into
    /// its `.part`, verified, and put in place.
    pub(super) fn receive_delta(&mut self, name: Name, older: Older, dir: &OutDir) -> Result<Downloaded, ClientError> {
        let header = self.read_reply(DeltaHeader::parse)?.into_result().map_err(ClientError::Server)?;
        let local = |source| ClientError::Local { path: dir.part_path(&name), source };
        self.broken = true;
        if let Some(progress) = &self.progress {
            progress.begin(&name, header.size);
        }
        // A local failure is kept until the reply has been read to its end, so the connection
        // stays in step; the records are then read and dropped.
        let mut partial = dir.begin(&name).and_then(|mut p| {
            p.set_mode(dir.mode_for(Some(header.mode)));
            p.set_mtime(Some(header.mtime));
            match p.check_room(header.size) {
                Ok(()) => Ok(p),
                Err(e) => {
                    p.abort();
                    Err(e)
                }
            }
        });
        let mut hasher = Hasher::default();
        let read = self.read_records(&older, header.size, partial.as_mut().ok(), &mut hasher);
        let Rebuilt { described, built, reused, failed } = match read {
            Ok(rebuilt) => rebuilt,
            Err(e) => {
                // A reply that makes no sense leaves nothing to resume from; a lost connection
                // keeps the `.part` (its bytes are checked again before any resume uses them).
                if let (ClientError::Protocol(ProtocolError::Malformed(_)), Ok(partial)) = (&e, partial) {
                    partial.abort();
                }
                return Err(e);
            }
        };
        // At the trailer: in step again, unless reading it fails.
        self.broken = false;
        let digest =
            self.read_reply(protocol::parse_trailer).and_then(|r| r.into_result().map_err(ClientError::Server));
        let mut partial = match partial {
            Ok(partial) => partial,
            Err(e) => {
                digest?;
                return Err(local(e));
            }
        };
        let digest = match digest {
            Ok(digest) => digest,
            Err(e) => {
                partial.abort();
                return Err(e);
            }
        };
        if described != built || built != header.size {
            partial.abort();
            return Err(self.lost(bad(format!("{built} bytes described of {} announced", header.size))));
        }
        if let Some(e) = failed {
            partial.abort();
            return Err(local(e));
        }
        if let Err(e) = partial.flush() {
            partial.abort();
            return Err(local(e));
        }
        let actual = hasher.digest();
        if actual != digest {
            partial.abort();
            return Err(ClientError::Integrity { expected: digest, actual });
        }
        let done = Downloaded { size: header.size, resumed_from: 0, started_over: false, digest, reused };
        let path = dir.path().join(name.as_path());
        match partial.commit() {
            Ok(()) => Ok(done),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(ClientError::Kept { path }),
            Err(source) => Err(ClientError::Local { path, source }),
        }
    }

    /// Reads the records of a delta reply up to its end, writing the file they describe into
    /// `out` (while it takes the bytes: a local failure is kept in `failed` and the rest read and
    /// dropped) and hashing it.
    fn read_records(
        &mut self,
        older: &Older,
        size: u64,
        mut out: Option<&mut Partial>,
        hasher: &mut Hasher,
    ) -> Result<Rebuilt, ClientError> {
        let mut done = Rebuilt { described: 0, built: 0, reused: 0, failed: None };
        loop {
            let record = Record::read(&mut self.stream).map_err(|e| self.lost(e))?;
            let len = match record {
                Record::End { size } => {
                    done.described = size;
                    return Ok(done);
                }
                Record::Copy { block, count } => {
                    let b = u64::from(older.shape.block);
                    let end = block.checked_add(count).filter(|&end| end <= older.shape.count());
                    let Some(end) = end else {
                        return Err(
                            self.lost(bad(format!("a copy of blocks {block}+{count} of {}", older.shape.count())))
                        );
                    };
                    (end * b).min(older.shape.size) - block * b
                }
                Record::Literal { len } => len,
            };
            if done.built.checked_add(len).is_none_or(|total| total > size) {
                return Err(self.lost(bad(format!("more than the {size} bytes announced"))));
            }
            let writing = out.as_deref_mut().filter(|_| done.failed.is_none());
            let written = match record {
                Record::Copy { block, .. } => {
                    done.reused += len;
                    if let Some(progress) = &self.progress {
                        progress.advance(len);
                    }
                    copy_from(&older.file, block * u64::from(older.shape.block), len, writing, hasher)
                }
                _ => {
                    let written = match writing {
                        Some(p) => self.copy_body(len, p, hasher, true)?,
                        None => self.copy_body(len, &mut io::sink(), hasher, true)?,
                    };
                    // Still inside the reply.
                    self.broken = true;
                    written
                }
            };
            if let Err(e) = written {
                done.failed.get_or_insert(e);
            }
            done.built += len;
        }
    }
}

/// What the records of a delta reply made.
struct Rebuilt {
    /// The size the end record said.
    described: u64,
    /// Bytes the records described.
    built: u64,
    /// Of those, bytes taken from the older copy.
    reused: u64,
    /// The first local failure to write them.
    failed: Option<io::Error>,
}

fn bad(what: String) -> ProtocolError {
    ProtocolError::Malformed(format!("delta reply: {what}"))
}

/// Copies `len` bytes of the older copy from `from` into `out` (if any), hashing them.
fn copy_from(older: &File, from: u64, len: u64, mut out: Option<&mut Partial>, hasher: &mut Hasher) -> io::Result<()> {
    let mut buf = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX).min(256 << 10)];
    let mut done = 0u64;
    while done < len {
        let want = usize::try_from(len - done).unwrap_or(usize::MAX).min(buf.len());
        let n = older.read_at(&mut buf[..want], from + done)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the older copy shrank while it was read"));
        }
        hasher.update(&buf[..n]);
        if let Some(out) = out.as_deref_mut() {
            out.write_all(&buf[..n])?;
        }
        done += n as u64;
    }
    Ok(())
}
