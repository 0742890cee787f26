//! Answering a `get` or `resume`, apart from any transport: which bytes go out (from the cache's
//! memory or from a file on disk), from which offset, under which digest, and whether the file is
//! admitted to the cache once sent. The connection writes the [`Answer`]; a later listener (HTTP,
//! say) could write the same answer its own way.
//!
//! The order of events on a miss: reserve room in the cache before reading, read the whole file,
//! answer from memory, and only after the reply has gone out write the mirror file and publish
//! the entry ([`Answer::admit`]), so a client never waits for the cache's disk write.
//!
//! A file too big for the cache is streamed from disk. If its digest is remembered (or the
//! client did not agree to trailers) the header carries it and the body goes out by `sendfile`.
//! Otherwise the body goes out at once (by `sendfile` still) and the file is hashed a little
//! behind it ([`Hashing`]), the digest following the body in a trailer: the first byte never
//! waits for a whole file to be hashed, and the trailer says `ERR changed` instead if the file's
//! version changed meanwhile.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tracing::debug;

use super::bytes::Bytes;
use super::cache::{Body, Reservation, settled};
use super::memo::{Hashed, mark_every};
use super::shared::Shared;
use crate::digest::{Digest, Hasher, hash_file, hash_file_marked, prefix_from, state_at};
use crate::name::Name;
use crate::store::{FileVersion, OpenError};
use crate::wire::{ErrorCode, GetHeader};

/// What to send for one `get`: the status line's fields and where the body's bytes are.
pub(crate) struct Answer<'a> {
    pub(crate) header: GetHeader,
    pub(crate) body: Source<'a>,
    /// A file read for admission, to publish in the cache once the reply has gone out.
    admission: Option<Admission<'a>>,
}

/// Where a body's bytes come from.
pub(crate) enum Source<'a> {
    /// Bytes in memory (a cache hit, or a file just read for admission), from `from` on.
    Memory { bytes: Body, from: u64 },
    /// `len` bytes of an open file from offset `from`: streamed, `sendfile` where the transport
    /// can take it. The file may turn out shorter than announced (truncated meanwhile).
    File { file: File, from: u64, len: u64 },
    /// A file range sent while being hashed, its digest in a trailer (see [`Hashing`]).
    Hashing(Hashing<'a>),
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
    trailer: bool,
    peer: &dyn std::fmt::Display,
) -> Result<Answer<'a>, Refusal> {
    let now = Instant::now();
    let fresh = |cached: &FileVersion| shared.root.version(name) == Some(*cached);
    if let Some(hit) = shared.cache.lookup(name, now, fresh) {
        debug!(%peer, %name, size = hit.body.len(), "hit");
        let offset = matching_offset(resume, |off| hit.body.bytes().prefix_digest(off));
        return Ok(from_memory(hit.body, hit.digest, (hit.mode, hit.mtime), offset, None));
    }
    let (file, version) = shared.root.open_file(name).map_err(|e| Refusal::new(open_error_code(&e), e))?;
    let Some(mut reservation) = shared.cache.reserve(name, &version, now) else {
        debug!(%peer, %name, size = version.size, "miss, streamed");
        return streamed(shared, name, file, &version, resume, trailer);
    };
    // Read whole before answering, so a read error is still an ERR line, not a cut reply.
    let (bytes, digest) = read_whole(&file, &version)?;
    let bytes = reservation.hold(bytes);
    let offset = matching_offset(resume, |off| bytes.bytes().prefix_digest(off));
    debug!(%peer, %name, size = version.size, "miss, admitted");
    let admission = Admission { reservation, bytes: bytes.clone(), digest, version, file, at: now };
    Ok(from_memory(bytes, digest, (version.mode, version.mtime()), offset, Some(admission)))
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

fn from_memory(
    bytes: Body,
    digest: Digest,
    (mode, mtime): (u32, (i64, u32)),
    offset: u64,
    admission: Option<Admission<'_>>,
) -> Answer<'_> {
    let size = bytes.len();
    let header =
        GetHeader { len: size - offset, offset, size, digest: Some(digest), mode: Some(mode), mtime: Some(mtime) };
    Answer { header, body: Source::Memory { bytes, from: offset }, admission }
}

/// A file too big for the cache (or refused by it), sent from disk. Its digest comes from the
/// memo; or else, with `trailer`, after the body ([`Hashing`]); or else it is computed (once per
/// file version) before the header.
fn streamed<'a>(
    shared: &'a Shared,
    name: &Name,
    file: File,
    version: &FileVersion,
    resume: Option<(u64, Digest)>,
    trailer: bool,
) -> Result<Answer<'a>, Refusal> {
    let cannot_read = |e: io::Error| Refusal::new(ErrorCode::Internal, format_args!("cannot read the file: {e}"));
    let known = shared.digests.get(name, version);
    if trailer && known.as_ref().is_none_or(|k| k.digest.is_none()) {
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
        let hashing = Hashing {
            shared,
            name: name.clone(),
            file,
            from: offset,
            len,
            progress: HashProgress {
                state: start,
                hashed: offset,
                marks,
                every: mark_every(version.size),
                size: version.size,
            },
            version: *version,
            settled: settled(version, SystemTime::now()),
        };
        return Ok(Answer { header, body: Source::Hashing(hashing), admission: None });
    }
    let (digest, prefix) =
        file_digest(shared, name, &file, version, resume.map(|(off, _)| off)).map_err(cannot_read)?;
    let offset = matching_offset(resume, |_| prefix);
    let len = version.size - offset;
    let header = GetHeader {
        len,
        offset,
        size: version.size,
        digest: Some(digest),
        mode: Some(version.mode),
        mtime: Some(version.mtime()),
    };
    Ok(Answer { header, body: Source::File { file, from: offset, len }, admission: None })
}

/// How far behind the sending the hashing of a [`Hashing`] body runs: far enough that a writer
/// still busy in the file has moved on between the two reads, near enough that the trailer
/// follows the last byte closely (the rest is hashed after it, at memory speed when the file is
/// in the page cache).
const HASH_LAG: u64 = 16 << 20;

/// Bytes sent, and hashed, per step of a [`Hashing`] body.
pub(crate) const SEND_CHUNK: usize = 256 << 10;

/// Bodies from this long on are hashed on a helper thread while they are sent.
const HELPER_FROM: u64 = 64 << 20;

/// Most helper threads hashing at once; past this, bodies are hashed on their connection's thread.
pub(crate) const MAX_HELPERS: u64 = 8;

/// Furthest the sending may run ahead of a helper's hashing: the trailer then follows the last
/// byte within the time it takes to hash this much (a few tenths of a second at worst).
const MAX_AHEAD: u64 = 256 << 20;

/// Where the hashing of a file stands.
struct HashProgress {
    /// The running digest of the file's first `hashed` bytes.
    state: Hasher,
    hashed: u64,
    /// Running states at every `every` bytes of the file, for later prefix checks.
    marks: Vec<(u64, Hasher)>,
    every: u64,
    /// The file's size: no mark at its end.
    size: u64,
}

impl HashProgress {
    /// Hashes `file` on to `to`, keeping a mark at every multiple of `every`.
    fn hash_to(&mut self, file: &File, to: u64, buf: &mut [u8]) -> io::Result<()> {
        while self.hashed < to {
            let next_mark = (self.hashed / self.every + 1).saturating_mul(self.every);
            let want = (to.min(next_mark) - self.hashed).min(buf.len() as u64) as usize;
            let n = match file.read_at(&mut buf[..want], self.hashed) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while being hashed")),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.state.update(&buf[..n]);
            self.hashed += n as u64;
            if self.hashed == next_mark && self.hashed < self.size {
                self.marks.push((self.hashed, self.state.clone()));
            }
        }
        Ok(())
    }
}

/// A file range being sent while the file is hashed: its digest (of the whole file) goes out
/// after it, so the first byte never waits for the hashing.
///
/// The digest is not of the bytes as they were sent but of a second read of the file, made
/// [`HASH_LAG`] behind the sending: a `write()` that began before the file was opened changes no
/// timestamp while it runs, so only two reads can show that one of them saw half-written bytes,
/// and then the client's check of what it received against the trailer fails. A change that
/// moves the file's version is caught here, and the trailer says `ERR changed` instead. The
/// sending itself stays free to use `sendfile`.
pub(crate) struct Hashing<'a> {
    shared: &'a Shared,
    name: Name,
    file: File,
    from: u64,
    len: u64,
    /// How far hashing has got.
    progress: HashProgress,
    version: FileVersion,
    /// Whether the file had settled when this began, so what is learnt may be remembered.
    settled: bool,
}

/// Sends bytes `from..end` of `file` a chunk at a time with `send_at` (see [`Hashing::send`]),
/// calling `after(sent up to, buf)` after each chunk. Returns how far it got, and the first error
/// (the sending's or `after`'s); a file that ends early ends it without one.
fn send_chunks(
    file: &File,
    from: u64,
    end: u64,
    buf: &mut [u8],
    send_at: &mut impl FnMut(&File, u64, usize, &mut [u8]) -> io::Result<usize>,
    mut after: impl FnMut(u64, &mut [u8]) -> io::Result<()>,
) -> (u64, io::Result<()>) {
    let mut at = from;
    while at < end {
        let want = usize::try_from(end - at).unwrap_or(usize::MAX).min(buf.len());
        match send_at(file, at, want, buf) {
            Ok(0) => break,
            Ok(n) => at += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return (at, Err(e)),
        }
        if let Err(e) = after(at, buf) {
            return (at, Err(e));
        }
    }
    (at, Ok(()))
}

impl Hashing<'_> {
    /// Sends the range with `send_at(file, offset, at_most, scratch)`, which sends up to
    /// `at_most` bytes of `file` from `offset` (through `scratch` if it needs a buffer) and says
    /// how many went (0: the file ended). Hashes the file behind; returns how many bytes went out
    /// (fewer than the range if the file ended early). If the sending fails, the marks passed
    /// are kept for a resume.
    ///
    /// A long range is hashed on a helper thread, so reading the disk, sending and hashing
    /// overlap and the first download of a big file takes about as long as the slowest of them,
    /// not their sum; a short one (or one whose helper cannot start) is hashed on this thread.
    pub(crate) fn send(
        &mut self,
        mut send_at: impl FnMut(&File, u64, usize, &mut [u8]) -> io::Result<usize>,
    ) -> io::Result<u64> {
        // Only a few helpers at a time: hashing is CPU work, and each is a thread beyond the one
        // per connection that the connection limit was sized for (limits.rs keeps room for them).
        // The helper's thread comes out of the server's thread budget too.
        let helpers = &self.shared.hash_helpers;
        let helper = self.len >= HELPER_FROM
            && helpers
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < MAX_HELPERS).then_some(n + 1))
                .is_ok();
        let budget = if helper { self.shared.threads.take() } else { None };
        if helper && budget.is_none() {
            helpers.fetch_sub(1, Ordering::AcqRel);
        }
        let sent = match budget {
            Some(thread) => {
                let sent = self.send_with_helper(&mut send_at);
                drop(thread);
                helpers.fetch_sub(1, Ordering::AcqRel);
                sent
            }
            None => None,
        };
        let sent = match sent {
            Some(sent) => sent,
            None => self.send_inline(&mut send_at),
        };
        let hashed = self.progress.hashed.saturating_sub(self.from);
        self.shared.bytes_hashed.fetch_add(hashed, Ordering::Relaxed);
        if sent.is_err() {
            self.remember_marks();
        }
        sent
    }

    fn send_inline(
        &mut self,
        send_at: &mut impl FnMut(&File, u64, usize, &mut [u8]) -> io::Result<usize>,
    ) -> io::Result<u64> {
        let end = self.from + self.len;
        let mut buf = vec![0u8; usize::try_from(self.len).unwrap_or(SEND_CHUNK).clamp(1, SEND_CHUNK)];
        let (file, progress) = (&self.file, &mut self.progress);
        let (at, outcome) = send_chunks(file, self.from, end, &mut buf, send_at, |at, buf| {
            if at.saturating_sub(progress.hashed) >= HASH_LAG + buf.len() as u64 {
                progress.hash_to(file, at - HASH_LAG, buf)?;
            }
            Ok(())
        });
        outcome?;
        self.progress.hash_to(&self.file, at, &mut buf)?;
        Ok(at - self.from)
    }

    /// [`Hashing::send_inline`] with the hashing on a helper thread; `None` if it cannot start.
    fn send_with_helper(
        &mut self,
        send_at: &mut impl FnMut(&File, u64, usize, &mut [u8]) -> io::Result<usize>,
    ) -> Option<io::Result<u64>> {
        let (from, end) = (self.from, self.from + self.len);
        // How far the sending has got, and whether it has stopped (then hash up to it).
        let sent = AtomicU64::new(from);
        let stopped = AtomicBool::new(false);
        // How far the hashing has got: the sending waits rather than run more than MAX_AHEAD
        // ahead of it, so the trailer never waits long behind the last byte.
        let hashed = AtomicU64::new(self.progress.hashed);
        let sender = std::thread::current();
        let (file, progress) = (&self.file, &mut self.progress);
        std::thread::scope(|scope| {
            let helper =
                std::thread::Builder::new().name("hash".into()).stack_size(64 << 10).spawn_scoped(scope, || {
                    let mut buf = vec![0u8; SEND_CHUNK];
                    loop {
                        let done = stopped.load(Ordering::Acquire);
                        let upto = sent.load(Ordering::Acquire);
                        let limit = if done { upto } else { upto.saturating_sub(HASH_LAG) };
                        if progress.hashed < limit {
                            progress.hash_to(file, limit.min(progress.hashed + (4 << 20)), &mut buf)?;
                            hashed.store(progress.hashed, Ordering::Release);
                            sender.unpark();
                        } else if done {
                            return Ok(());
                        } else {
                            std::thread::park_timeout(Duration::from_millis(20));
                        }
                    }
                });
            let helper = helper.ok()?;
            let mut buf = vec![0u8; SEND_CHUNK];
            let (at, outcome) = send_chunks(file, from, end, &mut buf, send_at, |at, _| {
                sent.store(at, Ordering::Release);
                helper.thread().unpark();
                while at.saturating_sub(hashed.load(Ordering::Acquire)) > MAX_AHEAD && !helper.is_finished() {
                    std::thread::park_timeout(Duration::from_millis(20));
                }
                Ok(())
            });
            sent.store(at, Ordering::Release);
            stopped.store(true, Ordering::Release);
            helper.thread().unpark();
            let hashed = helper.join().unwrap_or_else(|_| Err(io::Error::other("the hashing thread panicked")));
            Some(outcome.and(hashed).map(|()| at - from))
        })
    }

    /// The digest for the trailer, once the whole range has gone out: given only if the file kept
    /// its version throughout, and then remembered for later downloads (if the file had
    /// settled). Else the body is not to be trusted: `ERR changed`.
    pub(crate) fn finish(self) -> Result<Digest, Refusal> {
        if !bytes_unchanged(&self.file, &self.version) {
            return Err(Refusal::new(ErrorCode::Changed, "it changed while it was being sent; try again"));
        }
        let digest = self.progress.state.digest();
        self.shared.digests_computed.fetch_add(1, Ordering::Relaxed);
        if self.settled {
            let hashed = Arc::new(Hashed::new(Some(digest), self.progress.marks));
            self.shared.digests.put(&self.name, self.version, hashed);
        }
        Ok(digest)
    }

    /// Keeps the marks a cut-off download passed, so resuming it costs one stretch between marks
    /// rather than a hash from the first byte.
    fn remember_marks(&mut self) {
        if self.settled && !self.progress.marks.is_empty() && unchanged(&self.file, &self.version) {
            let hashed = Arc::new(Hashed::new(None, std::mem::take(&mut self.progress.marks)));
            self.shared.digests.put(&self.name, self.version, hashed);
        }
    }
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

/// Whether an open file still has the version it had when opened.
fn unchanged(file: &File, version: &FileVersion) -> bool {
    FileVersion::of_file(file).is_ok_and(|v| v == *version)
}

/// Whether the open `file` still holds the bytes of `version`: its version is the same, or else
/// it was only unlinked since (renamed over by a new version, or deleted), which moves its change
/// time and nothing else: the bytes read through this descriptor are still the opened version's.
fn bytes_unchanged(file: &File, version: &FileVersion) -> bool {
    match FileVersion::of_file_linked(file) {
        Ok((now, _)) if now == *version => true,
        Ok((now, 0)) => FileVersion { ctime_sec: version.ctime_sec, ctime_nsec: version.ctime_nsec, ..now } == *version,
        _ => false,
    }
}
