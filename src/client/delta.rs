//! Downloads said as records (`delta`): where an older copy of a file is already in the output
//! folder, the request carries its signature and the reply says the new file as copies of its
//! blocks and the bytes it lacks; where there is none and compression is on, the request says
//! it holds nothing and the whole file comes as records, compressed where that pays. The file is
//! built in `<name>.part` (a small one in memory), checked against the whole file's digest, and
//! only then put in place over any older copy, as every download is.
//!
//! The reply is checked as it is read: a copy of a block the older copy does not have, more
//! bytes than the header announced, or a compressed record that does not give what it says, ends
//! the connection (the server is not speaking sense) and leaves nothing behind; a rebuilt file
//! whose digest is wrong is deleted and reported, and the older copy stays.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;

use super::conn::Client;
use super::outdir::OutDir;
use super::part::Partial;
use super::result::{ClientError, Downloaded};
use super::saver::SMALL_FILE;
use super::saver::{Received, Whole};
use crate::compress::Unpacking;
use crate::delta::{MIN_BLOCK, Shape, Signature};
use crate::digest::{Digest, Hasher};
use crate::name::Name;
use crate::wire::{self as protocol, DeltaHeader, ProtocolError, Record, Request};

/// Older copies smaller than this are not worth a signature: the file is fetched whole.
pub const DELTA_FROM: u64 = 64 << 10;

/// A signature larger than this waits until no other request is in flight before it is sent,
/// so the client never blocks writing requests while the server blocks writing replies.
pub const SMALL_SIGNATURE: usize = 16 << 10;

/// The older copy a delta download rebuilds from.
pub(super) struct Older {
    file: File,
    shape: Shape,
    /// When the older copy is the file's own `.part` (a download cut off, of this version or an
    /// older one): held, so no other download takes it, until the reply comes; then its name is
    /// given to the rebuild, and its bytes are read through `file`.
    part: Option<Partial>,
}

/// The request for a delta download of `name` against the older copy in `dir`, and the
/// signature that follows its line; `None` where there is no older copy worth one (or it cannot
/// be read: then the file is fetched whole).
///
/// With `resume` and no older copy, a `.part` left by an earlier download is the older copy, as
/// rsync's `--partial` uses it: what it holds is found wherever it is in the server's file, so a
/// download cut off before the file changed on the server still spares the bytes it got.
pub(super) fn prepare(name: &Name, dir: &OutDir, resume: bool) -> Option<(Request, Vec<u8>, Older)> {
    let (file, size, part) = match dir.open_older(name) {
        Some((file, size)) => (file, size, None),
        // A .part that cannot be taken (another download's) is reported by the plain request.
        None if resume => {
            let part = dir.reopen(name).ok()??;
            (part.file().try_clone().ok()?, part.len(), Some(part))
        }
        None => return None,
    };
    if size < DELTA_FROM {
        return None;
    }
    let shape = Shape::for_size(size)?;
    let signature = Signature::of_file(shape, &file).ok()?;
    let request = Request::Delta { shape, name: name.clone() };
    Some((request, signature.to_bytes(), Older { file, shape, part }))
}

/// Whether [`prepare`] may find something to rebuild `name` from: an older copy, or with
/// `resume` a `.part` (not opened, nor taken, here).
pub(super) fn has_older(name: &Name, dir: &OutDir, resume: bool) -> bool {
    dir.open_older(name).is_some() || (resume && dir.part_path(name).symlink_metadata().is_ok_and(|m| m.is_file()))
}

/// The request for all of `name` as records, compressed where the server finds it pays.
pub(super) fn whole(name: &Name) -> Request {
    Request::Delta { shape: Shape { size: 0, block: MIN_BLOCK }, name: name.clone() }
}

impl Client {
    /// Reads the reply to a `delta` of `name`: the file rebuilt from `older` (if any) and the
    /// records, verified; a small one without an older copy comes back in memory, anything else
    /// is built in its `.part` and put in place here.
    pub(super) fn receive_records(
        &mut self,
        name: Name,
        mut older: Option<Older>,
        dir: &OutDir,
    ) -> Result<Received, ClientError> {
        let header = self.read_reply(DeltaHeader::parse)?.into_result().map_err(ClientError::Server)?;
        // Rebuilding from the file's own .part: the rebuild takes its name (a new file, which
        // holds what is rebuilt so far if this is cut off too); the old bytes stay readable.
        if let Some(part) = older.as_mut().and_then(|o| o.part.take()) {
            part.abort();
        }
        if let Some(progress) = &self.progress {
            progress.begin(&name, header.size);
        }
        if older.is_none() && header.size <= SMALL_FILE {
            let mut bytes = Vec::with_capacity(header.size as usize);
            let (rebuilt, digest) = self.rebuild(None, &header, Some(&mut bytes))?;
            let done = rebuilt.done(&header, digest);
            return Ok(Received::Whole(Whole {
                name,
                bytes,
                done,
                mode: Some(header.mode),
                mtime: Some(header.mtime),
            }));
        }
        let local = |source| ClientError::Local { path: dir.part_path(&name), source };
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
        let (rebuilt, digest) = match self.rebuild(older.as_ref(), &header, partial.as_mut().ok()) {
            Ok(done) => done,
            Err(ClientError::Local { source, .. }) => {
                if let Ok(partial) = partial {
                    partial.abort();
                }
                return Err(local(source));
            }
            Err(e) => {
                // A reply that makes no sense, or bytes that fail the check, leave nothing to
                // resume from; a lost connection keeps the `.part` (its bytes are checked again
                // before any resume uses them).
                let senseless =
                    matches!(e, ClientError::Protocol(ProtocolError::Malformed(_)) | ClientError::Server(_))
                        || matches!(e, ClientError::Integrity { .. });
                if let (true, Ok(partial)) = (senseless, partial) {
                    partial.abort();
                }
                return Err(e);
            }
        };
        let mut partial = partial.map_err(local)?;
        if let Err(e) = partial.flush() {
            partial.abort();
            return Err(local(e));
        }
        let done = rebuilt.done(&header, digest);
        let path = dir.path().join(name.as_path());
        match partial.commit() {
            Ok(()) => Ok(Received::Saved(done)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(ClientError::Kept { path }),
            Err(source) => Err(ClientError::Local { path, source }),
        }
    }

    /// Reads a records reply's records and trailer, writing the file they describe into `out`
    /// (while it takes the bytes: a local failure is reported once the reply has been read), and
    /// checks it against the trailer's digest. Leaves the connection in step unless it fails to
    /// read the reply.
    pub(super) fn rebuild(
        &mut self,
        older: Option<&Older>,
        header: &DeltaHeader,
        out: Option<&mut impl Write>,
    ) -> Result<(Rebuilt, Digest), ClientError> {
        let mut hasher = Hasher::default();
        self.broken = true;
        // The connection's decompressor and buffers, kept between replies.
        let mut unpacker = self.unpacker.take();
        let rebuilt = self.read_records(older, header.size, out, &mut hasher, &mut unpacker);
        self.unpacker = unpacker;
        let rebuilt = rebuilt?;
        // At the trailer: in step again, unless reading it fails.
        self.broken = false;
        let digest = self.read_reply(protocol::parse_trailer)?.into_result().map_err(ClientError::Server)?;
        if rebuilt.described != rebuilt.built || rebuilt.built != header.size {
            return Err(self.lost(bad(format!("{} bytes described of {} announced", rebuilt.built, header.size))));
        }
        if let Some(source) = rebuilt.failed {
            return Err(ClientError::Local { path: "-".into(), source });
        }
        let actual = hasher.digest();
        if actual != digest {
            return Err(ClientError::Integrity { expected: digest, actual });
        }
        Ok((rebuilt, digest))
    }

    /// Reads the records of a reply up to its end, writing the bytes they describe into `out`
    /// (until it fails: the first failure is kept in `failed`, and the rest read and dropped)
    /// and hashing them.
    fn read_records(
        &mut self,
        older: Option<&Older>,
        size: u64,
        mut out: Option<&mut impl Write>,
        hasher: &mut Hasher,
        unpacker: &mut Option<Box<Unpacking>>,
    ) -> Result<Rebuilt, ClientError> {
        let mut done = Rebuilt { described: 0, built: 0, reused: 0, compression_saved: 0, failed: None };
        loop {
            let record = Record::read(&mut self.stream).map_err(|e| self.lost(e))?;
            let len = match record {
                Record::End { size } => {
                    done.described = size;
                    return Ok(done);
                }
                Record::Copy { block, count } => {
                    let Some(older) = older else {
                        return Err(self.lost(bad("a copy of blocks the client does not have".into())));
                    };
                    let b = u64::from(older.shape.block);
                    let end = block.checked_add(count).filter(|&end| end <= older.shape.count());
                    let Some(end) = end else {
                        return Err(
                            self.lost(bad(format!("a copy of blocks {block}+{count} of {}", older.shape.count())))
                        );
                    };
                    (end * b).min(older.shape.size) - block * b
                }
                Record::Literal { len } | Record::Zstd { len, .. } => len,
            };
            if done.built.checked_add(len).is_none_or(|total| total > size) {
                return Err(self.lost(bad(format!("more than the {size} bytes announced"))));
            }
            let writing = out.as_deref_mut().filter(|_| done.failed.is_none());
            let written = match (record, older) {
                (Record::Copy { block, .. }, Some(older)) => {
                    done.reused += len;
                    if let Some(progress) = &self.progress {
                        progress.advance(len);
                    }
                    copy_from(&older.file, block * u64::from(older.shape.block), len, writing, hasher)
                }
                (Record::Zstd { packed, .. }, _) => {
                    let Unpacking { unpacker, packed: packed_bytes, raw } = match unpacker {
                        Some(u) => &mut **u,
                        None => unpacker.insert(Box::new(Unpacking::new()?)),
                    };
                    packed_bytes.resize(packed as usize, 0);
                    let read = self.stream.read_exact(packed_bytes);
                    self.or_lost(read)?;
                    if let Err(e) = unpacker.unpack(packed_bytes, len as usize, raw) {
                        return Err(self.lost(bad(e.to_string())));
                    }
                    hasher.update(raw);
                    done.compression_saved += len - packed;
                    if let Some(progress) = &self.progress {
                        progress.advance(len);
                    }
                    writing.map_or(Ok(()), |w| w.write_all(raw))
                }
                _ => {
                    let written = match writing {
                        Some(w) => self.copy_body(len, w, hasher, true)?,
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

/// What the records of a reply made.
pub(super) struct Rebuilt {
    /// The size the end record said.
    described: u64,
    /// Bytes the records described.
    built: u64,
    /// Of those, bytes taken from the older copy.
    reused: u64,
    /// Bytes compression spared the wire.
    compression_saved: u64,
    /// The first local failure to write them.
    failed: Option<io::Error>,
}

impl Rebuilt {
    fn done(&self, header: &DeltaHeader, digest: Digest) -> Downloaded {
        Downloaded {
            size: header.size,
            resumed_from: 0,
            started_over: false,
            digest,
            reused: self.reused,
            compression_saved: self.compression_saved,
        }
    }
}

fn bad(what: String) -> ProtocolError {
    ProtocolError::Malformed(format!("delta reply: {what}"))
}

/// Copies `len` bytes of the older copy from `from` into `out` (if any), hashing them.
fn copy_from(
    older: &File,
    from: u64,
    len: u64,
    mut out: Option<&mut impl Write>,
    hasher: &mut Hasher,
) -> io::Result<()> {
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
