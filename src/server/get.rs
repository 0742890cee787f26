//! Answering a `get` or `resume`, apart from any transport: which bytes go out (from the cache's
//! memory or from a file on disk), from which offset, under which digest, and whether the file is
//! admitted to the cache once sent. The connection writes the [`Answer`]; a later listener (HTTP,
//! say) could write the same answer its own way.
//!
//! The order of events on a miss: reserve room in the cache before reading, read the whole file,
//! answer from memory, and only after the reply has gone out write the mirror file and publish
//! the entry ([`Answer::admit`]), so a client never waits for the cache's disk write.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use tracing::debug;

use super::cache::{Body, Reservation, settled};
use super::memo::{Hashed, mark_every};
use super::shared::Shared;
use crate::digest::{Digest, hash_file, hash_file_marked, prefix_from};
use crate::name::Name;
use crate::store::{FileVersion, OpenError};
use crate::wire::{ErrorCode, GetHeader};

/// What to send for one `get`: the status line's fields and where the body's bytes are.
pub(crate) struct Answer<'a> {
    pub(crate) header: GetHeader,
    pub(crate) body: Source,
    /// A file read for admission, to publish in the cache once the reply has gone out.
    admission: Option<Admission<'a>>,
}

/// Where a body's bytes come from.
pub(crate) enum Source {
    /// Bytes in memory (a cache hit, or a file just read for admission), from `from` on.
    Memory { bytes: Body, from: usize },
    /// `len` bytes of an open file from offset `from`: streamed, `sendfile` where the transport
    /// can take it. The file may turn out shorter than announced (truncated meanwhile).
    File { file: File, from: u64, len: u64 },
}

struct Admission<'a> {
    reservation: Reservation<'a>,
    bytes: Body,
    digest: Digest,
    version: FileVersion,
    file: File,
    at: Instant,
}

/// Why a `get` gets an `ERR` line instead of a body.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl std::fmt::Display) -> Refusal {
        Refusal { code, message: message.to_string() }
    }
}

impl Answer<'_> {
    /// Publishes a file read for admission in the cache (mirror file first), if it did not change
    /// while it was read. Call once the reply has been sent.
    pub(crate) fn admit(self) {
        if let Some(a) = self.admission
            && unchanged(&a.file, &a.version)
        {
            a.reservation.commit(a.bytes, a.digest, a.version, a.at);
        }
    }
}

/// Answers `get NAME` (`resume` = `None`) or `resume OFFSET PREFIX NAME` (the offset and the
/// digest of the client's first `OFFSET` bytes): from the cache if it holds a fresh copy, else
/// from disk, read whole for admission when the cache has room, else streamed.
pub(crate) fn answer<'a>(
    shared: &'a Shared,
    name: &Name,
    resume: Option<(u64, Digest)>,
    peer: &dyn std::fmt::Display,
) -> Result<Answer<'a>, Refusal> {
    let now = Instant::now();
    let fresh = |cached: &FileVersion| shared.root.version(name) == Some(*cached);
    if let Some(hit) = shared.cache.lookup(name, now, fresh) {
        debug!(%peer, %name, size = hit.body.len(), "hit");
        let offset = matching_offset(resume, |off| hit.body.get(..off as usize).map(Digest::of));
        return Ok(from_memory(hit.body, hit.digest, hit.mode, offset, None));
    }
    let (mut file, version) = shared.root.open_file(name).map_err(|e| Refusal::new(open_error_code(&e), e))?;
    let Some(mut reservation) = shared.cache.reserve(name, &version, now) else {
        debug!(%peer, %name, size = version.size, "miss, streamed");
        return streamed(shared, name, file, &version, resume);
    };
    // Read whole before answering, so a read error is still an ERR line, not a cut reply.
    let (bytes, digest) = read_whole(&mut file, &version)?;
    let bytes = reservation.hold(bytes);
    let offset = matching_offset(resume, |off| bytes.get(..off as usize).map(Digest::of));
    debug!(%peer, %name, size = version.size, "miss, admitted");
    let admission = Admission { reservation, bytes: bytes.clone(), digest, version, file, at: now };
    Ok(from_memory(bytes, digest, version.mode, offset, Some(admission)))
}

/// Most times a file is read whole before the server gives up on getting the same bytes twice.
const READ_ATTEMPTS: usize = 3;

/// Reads all `version.size` bytes of `file` and their digest, then reads the file once more and
/// requires the same digest: a `write()` that began before the file was opened changes no
/// timestamp while it runs, so only a second read can show that the first one saw half-written
/// bytes. Such a body is neither sent nor cached; after [`READ_ATTEMPTS`] tries the request is
/// refused (the client may retry).
fn read_whole(file: &mut File, version: &FileVersion) -> Result<(Vec<u8>, Digest), Refusal> {
    for _ in 0..READ_ATTEMPTS {
        let mut bytes = Vec::with_capacity(usize::try_from(version.size).unwrap_or(0));
        file.seek(SeekFrom::Start(0))
            .map_err(|e| Refusal::new(ErrorCode::Internal, format_args!("read failed: {e}")))?;
        if let Err(e) = file.take(version.size).read_to_end(&mut bytes) {
            return Err(Refusal::new(ErrorCode::Internal, format_args!("read failed: {e}")));
        }
        if bytes.len() as u64 != version.size {
            return Err(Refusal::new(ErrorCode::Internal, "file shrank while being read; try again"));
        }
        let digest = Digest::of(&bytes);
        if hash_file(file, version.size, None).is_ok_and(|(again, _)| again == digest) {
            return Ok((bytes, digest));
        }
    }
    Err(Refusal::new(ErrorCode::Internal, "the file is being written; try again"))
}

fn from_memory(bytes: Body, digest: Digest, mode: u32, offset: u64, admission: Option<Admission<'_>>) -> Answer<'_> {
    let size = bytes.len() as u64;
    let header = GetHeader { len: size - offset, offset, size, digest, mode: Some(mode) };
    Answer { header, body: Source::Memory { bytes, from: offset as usize }, admission }
}

/// A file too big for the cache (or refused by it), sent from disk. Its digest comes from the
/// memo, or is computed (once per file version) before the header.
fn streamed<'a>(
    shared: &'a Shared,
    name: &Name,
    file: File,
    version: &FileVersion,
    resume: Option<(u64, Digest)>,
) -> Result<Answer<'a>, Refusal> {
    let (digest, prefix) = file_digest(shared, name, &file, version, resume.map(|(off, _)| off))
        .map_err(|e| Refusal::new(ErrorCode::Internal, format_args!("cannot read the file: {e}")))?;
    let offset = matching_offset(resume, |_| prefix);
    let len = version.size - offset;
    let header = GetHeader { len, offset, size: version.size, digest, mode: Some(version.mode) };
    Ok(Answer { header, body: Source::File { file, from: offset, len }, admission: None })
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
    let hashed = match memo.get(name, version) {
        Some(hashed) => hashed,
        None => {
            let hashed_since = SystemTime::now();
            let (digest, marks) = hash_file_marked(file, version.size, mark_every(version.size))?;
            shared.bytes_hashed.fetch_add(version.size, Ordering::Relaxed);
            if !unchanged(file, version) {
                return Err(io::Error::other("it changed while being hashed; try again"));
            }
            shared.digests_computed.fetch_add(1, Ordering::Relaxed);
            let hashed = Arc::new(Hashed::new(digest, marks));
            // Remembered only for a file that had settled before it was hashed, as the cache
            // admits only such files: one being written is hashed afresh each time instead.
            if settled(version, hashed_since) {
                memo.put(name, *version, hashed.clone());
            }
            hashed
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
    Ok((hashed.digest, prefix))
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

/// Whether an open file still has the version it had when opened.
fn unchanged(file: &File, version: &FileVersion) -> bool {
    FileVersion::of_file(file).is_ok_and(|v| v == *version)
}
