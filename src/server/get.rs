//! Answering a `get`, a `resume` or a range, apart from any transport: which bytes go out (from
//! the cache's memory or from a file on disk), from which offset, under which digest, and whether
//! the file is admitted to the cache once sent. A speaker writes the [`Answer`]'s header its own
//! way and hands its body a [`Sink`](super::send::Sink) (`send.rs`): ft's text protocol over TCP
//! or TLS is one, a test's in-memory writer another, HTTP later a third.
//!
//! The order of events on a miss: reserve room in the cache before reading, read the whole file,
//! answer from memory, and only after the reply has gone out write the mirror file and publish
//! the entry ([`Answer::admit`]), so a client never waits for the cache's disk write.
//!
//! A file too big for the cache is streamed from disk. If its digest is remembered (or the
//! client did not agree to trailers) the header carries it and the body goes out by `sendfile`.
//! Otherwise the body goes out at once (by `sendfile` still) and the file is hashed a little
//! behind it ([`Hashing`], `hashing.rs`), the digest following the body in a trailer: the first
//! byte never waits for a whole file to be hashed, and the trailer says `ERR changed` instead if
//! the file's version changed meanwhile.

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use tracing::debug;

use super::bytes::Body;
use super::bytes::Bytes;
use super::cache::{Reservation, settled};
use super::hashing::{Hashing, unchanged};
use super::memo::{Hashed, mark_every};
use super::refusal::Refusal;
use super::shared::Shared;
use crate::digest::{Digest, Hasher, hash_file, hash_file_marked, prefix_from, state_at};
use crate::mtime::Mtime;
use crate::name::Name;
use crate::store::{FileVersion, OpenError};
use crate::wire::{ErrorCode, GetHeader};

/// Which part of a file a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// All of it.
    Whole,
    /// The rest after the first `offset` bytes, if the asker's digest of those (`prefix`)
    /// matches; else all of it (ft's `resume`).
    Resume { offset: u64, prefix: Digest },
    /// `len` bytes from `from` (fewer if the file ends first), with no check of what the asker
    /// holds (HTTP's `Range`): the header's `offset + len` may then fall short of its `size`.
    Range { from: u64, len: u64 },
}

impl Part {
    fn resume(self) -> Option<(u64, Digest)> {
        match self {
            Part::Resume { offset, prefix } => Some((offset, prefix)),
            _ => None,
        }
    }
}

/// What to send for one `get`: the header's fields and where the body's bytes are.
pub struct Answer<'a> {
    /// Where the bytes sent are counted.
    pub(super) shared: &'a Shared,
    pub(super) header: GetHeader,
    pub(super) body: Source<'a>,
    /// A file read for admission, to publish in the cache once the reply has gone out.
    pub(super) admission: Option<Admission<'a>>,
}

/// Where a body's bytes come from.
pub(super) enum Source<'a> {
    /// `len` bytes in memory (a cache hit, or a file just read for admission), from `from` on.
    Memory { bytes: Body, from: u64, len: u64 },
    /// `len` bytes of an open file from offset `from`: streamed, `sendfile` where the transport
    /// can take it. The file may turn out shorter than announced (truncated meanwhile).
    File { file: File, from: u64, len: u64 },
    /// A file range sent while being hashed, its digest in a trailer (see [`Hashing`]).
    Hashing(Hashing<'a>),
}

pub(super) struct Admission<'a> {
    reservation: Reservation<'a>,
    bytes: Body,
    digest: Digest,
    version: FileVersion,
    file: File,
    at: Instant,
}

impl Answer<'_> {
    /// The reply's header: the body's length, where it starts, the whole file's size, digest
    /// (`None`: it follows the body, see [`Sent`](super::send::Sent)), mode and time.
    pub fn header(&self) -> &GetHeader {
        &self.header
    }

    /// Publishes a file read for admission in the cache (mirror file first), if it did not change
    /// while it was read. Call once the reply has been sent.
    pub(super) fn admit(self) {
        if let Some(a) = self.admission
            && unchanged(&a.file, &a.version)
        {
            a.reservation.commit(a.bytes, a.digest, a.version, a.at);
        }
    }
}

/// Answers `get NAME` ([`Part::Whole`]), `resume OFFSET PREFIX NAME` or a range of the file:
/// from the cache if it holds a fresh copy, else from disk, read whole for admission when the
/// cache has room, else streamed. `trailer`: the asker takes the digest after the body.
pub(crate) fn answer<'a>(
    shared: &'a Shared,
    name: &Name,
    part: Part,
    trailer: bool,
    peer: &dyn std::fmt::Display,
) -> Result<Answer<'a>, Refusal> {
    let now = Instant::now();
    let fresh = |cached: &FileVersion| shared.root.version(name) == Some(*cached);
    if let Some(hit) = shared.cache.lookup(name, now, fresh) {
        debug!(%peer, %name, size = hit.body.len(), "hit");
        let (offset, len) = span(part, hit.body.len(), |off| hit.body.bytes().prefix_digest(off))?;
        return Ok(from_memory(shared, hit.body, hit.digest, (hit.mode, hit.mtime), (offset, len), None));
    }
    let (file, version) = shared.root.open_file(name).map_err(|e| Refusal::new(open_error_code(&e), e))?;
    let Some(mut reservation) = shared.cache.reserve(name, &version, now) else {
        debug!(%peer, %name, size = version.size, "miss, streamed");
        return streamed(shared, name, file, &version, part, trailer);
    };
    // Read whole before answering, so a read error is still a refusal, not a cut reply.
    let (bytes, digest) = read_whole(&file, &version)?;
    let bytes = reservation.hold(bytes);
    let (offset, len) = span(part, version.size, |off| bytes.bytes().prefix_digest(off))?;
    debug!(%peer, %name, size = version.size, "miss, admitted");
    let admission = Admission { reservation, bytes: bytes.clone(), digest, version, file, at: now };
    Ok(from_memory(shared, bytes, digest, (version.mode, version.mtime()), (offset, len), Some(admission)))
}

/// Where the body of a file of `size` bytes starts and how long it is, for `part`; a range that
/// starts past the end is refused.
fn span(part: Part, size: u64, prefix_digest: impl FnOnce(u64) -> Option<Digest>) -> Result<(u64, u64), Refusal> {
    match part {
        Part::Range { from, .. } if from > size || (from == size && size > 0) => Err(Refusal::new(
            ErrorCode::BadRequest,
            format_args!("the range starts at {from}, past the end of the file ({size} bytes)"),
        )),
        Part::Range { from, len } => Ok((from, len.min(size - from))),
        part => {
            let offset = matching_offset(part.resume(), prefix_digest);
            Ok((offset, size - offset))
        }
    }
}

/// Most times a file is read whole before the server gives up on getting the same bytes twice.
const READ_ATTEMPTS: usize = 3;

/// Reads all `version.size` bytes of `file` and their digest, then reads the file once more and
/// requires the same digest: a `write()` that began before the file was opened changes no
/// timestamp while it runs, so only a second read can show that the first one saw half-written
/// bytes. Such a body is neither sent nor cached; after [`READ_ATTEMPTS`] tries the request is
/// refused (the client may retry).
fn read_whole(file: &File, version: &FileVersion) -> Result<(Bytes, Digest), Refusal> {
    for _ in 0..READ_ATTEMPTS {
        let (bytes, digest) = match Bytes::read(file, 0, version.size) {
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(Refusal::new(ErrorCode::Internal, "file shrank while being read; try again"));
            }
            Err(e) => return Err(Refusal::new(ErrorCode::Internal, format_args!("read failed: {e}"))),
        };
        if hash_file(file, version.size, None).is_ok_and(|(again, _)| again == digest) {
            return Ok((bytes, digest));
        }
    }
    Err(Refusal::new(ErrorCode::Internal, "the file is being written; try again"))
}

fn from_memory<'a>(
    shared: &'a Shared,
    bytes: Body,
    digest: Digest,
    (mode, mtime): (u32, Mtime),
    (offset, len): (u64, u64),
    admission: Option<Admission<'a>>,
) -> Answer<'a> {
    let size = bytes.len();
    let header = GetHeader { len, offset, size, digest: Some(digest), mode: Some(mode), mtime: Some(mtime) };
    Answer { shared, header, body: Source::Memory { bytes, from: offset, len }, admission }
}

/// A file too big for the cache (or refused by it), sent from disk. Its digest comes from the
/// memo; or else, with `trailer`, after the body ([`Hashing`]); or else it is computed (once per
/// file version) before the header.
fn streamed<'a>(
    shared: &'a Shared,
    name: &Name,
    file: File,
    version: &FileVersion,
    part: Part,
    trailer: bool,
) -> Result<Answer<'a>, Refusal> {
    let resume = part.resume();
    let cannot_read = |e: io::Error| Refusal::new(ErrorCode::Internal, format_args!("cannot read the file: {e}"));
    let known = shared.digests.get(name, version);
    // A range carries the digest before its body (HTTP's ETag), so it is never sent while hashing.
    let ranged = matches!(part, Part::Range { .. });
    if trailer && !ranged && known.as_ref().is_none_or(|k| k.digest.is_none()) {
        // What a cut-off download of this version left: marks to resume from cheaply.
        let mut marks = known.map(|k| k.marks.clone()).unwrap_or_default();
        let (offset, start) = match resume {
            Some((off, want)) if off > 0 && off <= version.size => {
                let (state, read) = state_at(&file, &marks, off).map_err(cannot_read)?;
                shared.bytes_hashed.fetch_add(read, Ordering::Relaxed);
                if state.digest() == want { (off, state) } else { (0, Hasher::default()) }
            }
            _ => (0, Hasher::default()),
        };
        marks.retain(|(at, _)| *at <= offset);
        let len = version.size - offset;
        let header = GetHeader {
            len,
            offset,
            size: version.size,
            digest: None,
            mode: Some(version.mode),
            mtime: Some(version.mtime()),
        };
        let hashing = Hashing::new(shared, name, file, version, (offset, start), marks);
        return Ok(Answer { shared, header, body: Source::Hashing(hashing), admission: None });
    }
    let (digest, prefix) =
        file_digest(shared, name, &file, version, resume.map(|(off, _)| off)).map_err(cannot_read)?;
    let (offset, len) = span(part, version.size, |_| prefix)?;
    let header = GetHeader {
        len,
        offset,
        size: version.size,
        digest: Some(digest),
        mode: Some(version.mode),
        mtime: Some(version.mtime()),
    };
    Ok(Answer { shared, header, body: Source::File { file, from: offset, len }, admission: None })
}

/// The file's digest (remembered per version) and, if asked, the digest of its first bytes.
fn file_digest(
    shared: &Shared,
    name: &Name,
    file: &File,
    version: &FileVersion,
    prefix: Option<u64>,
) -> io::Result<(Digest, Option<Digest>)> {
    let memo = &shared.digests;
    let (digest, hashed) = match memo.get(name, version) {
        Some(hashed) if let Some(digest) = hashed.digest => (digest, hashed),
        _ => {
            let hashed_since = SystemTime::now();
            let (digest, marks) = hash_file_marked(file, version.size, mark_every(version.size))?;
            shared.bytes_hashed.fetch_add(version.size, Ordering::Relaxed);
            if !unchanged(file, version) {
                return Err(io::Error::other("it changed while being hashed; try again"));
            }
            shared.digests_computed.fetch_add(1, Ordering::Relaxed);
            let hashed = Arc::new(Hashed::new(Some(digest), marks));
            // Remembered only for a file that had settled before it was hashed, as the cache
            // admits only such files: one being written is hashed afresh each time instead.
            if settled(version, hashed_since) {
                memo.put(name, *version, hashed.clone());
            }
            (digest, hashed)
        }
    };
    // A resume's prefix starts from the nearest mark: a check of any offset, repeated as often
    // as a peer likes, reads at most one mark's spacing of the file.
    let prefix = match prefix {
        Some(p) if p <= version.size => match hashed.prefix(p) {
            Some(digest) => Some(digest),
            None => {
                let (digest, read) = prefix_from(file, &hashed.marks, p)?;
                shared.bytes_hashed.fetch_add(read, Ordering::Relaxed);
                hashed.remember_prefix(p, digest);
                Some(digest)
            }
        },
        _ => None,
    };
    Ok((digest, prefix))
}

/// Answers `sum NAME`: the file's size and digest, remembered per version (computed from disk
/// once, if the file has settled) and sent without the bytes.
pub(crate) fn sum(shared: &Shared, name: &Name) -> Result<(u64, Digest), Refusal> {
    let (file, version) = shared.root.open_file(name).map_err(|e| Refusal::new(open_error_code(&e), e))?;
    let (digest, _) = file_digest(shared, name, &file, &version, None)
        .map_err(|e| Refusal::new(ErrorCode::Internal, format_args!("cannot read the file: {e}")))?;
    Ok((version.size, digest))
}

/// The reply code for a file the store could not open or list.
pub(crate) fn open_error_code(e: &OpenError) -> ErrorCode {
    match e {
        OpenError::NotFound => ErrorCode::NotFound,
        OpenError::NotFile => ErrorCode::NotFile,
        OpenError::Denied => ErrorCode::Denied,
        OpenError::Io(_) => ErrorCode::Internal,
    }
}

/// The offset to resume from: the client's, if its prefix digest matches ours, else 0.
fn matching_offset(resume: Option<(u64, Digest)>, prefix_digest: impl FnOnce(u64) -> Option<Digest>) -> u64 {
    match resume {
        Some((off, want)) if off > 0 && prefix_digest(off) == Some(want) => off,
        _ => 0,
    }
}
