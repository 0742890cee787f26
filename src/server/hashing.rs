//! Sending a file while hashing it: the body of a `get` whose digest is not known yet goes out at
//! once (by `sendfile` where the transport can take it) and the file is hashed a little behind
//! it, on a helper thread for long bodies; the digest follows the body in a trailer, or `ERR
//! changed` if the file's version moved meanwhile. What is learnt (the digest, running states
//! every few MiB for later resumes) goes to the digest memo.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use super::cache::settled;
use super::memo::{Hashed, mark_every};
use super::refusal::Refusal;
use super::shared::Shared;
use crate::digest::{Digest, Hasher};
use crate::name::Name;
use crate::store::FileVersion;
use crate::wire::ErrorCode;

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

impl<'a> Hashing<'a> {
    /// Sends `len` bytes of `file` from `from` (where `start` is the running digest of the bytes
    /// before it, and `marks` those of earlier downloads up to there) while hashing the rest.
    pub(crate) fn new(
        shared: &'a Shared,
        name: &Name,
        file: File,
        version: &FileVersion,
        (from, start): (u64, Hasher),
        marks: Vec<(u64, Hasher)>,
    ) -> Hashing<'a> {
        let len = version.size - from;
        Hashing {
            shared,
            name: name.clone(),
            file,
            from,
            len,
            progress: HashProgress {
                state: start,
                hashed: from,
                marks,
                every: mark_every(version.size),
                size: version.size,
            },
            version: *version,
            settled: settled(version, SystemTime::now()),
        }
    }
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

/// Whether an open file still has the version it had when opened.
pub(crate) fn unchanged(file: &File, version: &FileVersion) -> bool {
    FileVersion::of_file(file).is_ok_and(|v| v == *version)
}

/// Whether the open `file` still holds the bytes of `version`: its version is the same, or else
/// it was only unlinked since (renamed over by a new version, or deleted), which moves its change
/// time and nothing else: the bytes read through this descriptor are still the opened version's.
pub(crate) fn bytes_unchanged(file: &File, version: &FileVersion) -> bool {
    match FileVersion::of_file_linked(file) {
        Ok((now, _)) if now == *version => true,
        Ok((now, 0)) => FileVersion { ctime_sec: version.ctime_sec, ctime_nsec: version.ctime_nsec, ..now } == *version,
        _ => false,
    }
}
