//! Downloads: one file into a stream, or many into an [`OutDir`], pipelined, verified, resumed
//! from a `.part`, small files saved by writer threads while the next replies arrive.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc;

use super::conn::Client;
use super::delta::{self, Older, SMALL_SIGNATURE};
use super::outdir::OutDir;
use super::part::Partial;
use super::result::{ClientError, Downloaded};
use super::saver::{Received, SMALL_FILE, Saved, Saver, WRITERS, Whole};
use super::window::{MAX_REQUEST_BYTES, Window};
use crate::digest::{Digest, Hasher, feed_file};
use crate::name::Name;
use crate::wire::{self as protocol, DeltaHeader, Feature, GetHeader, ProtocolError, Request};

/// The folder downloads are saved in when given no `-o`.
pub const DEFAULT_OUTPUT: &str = "client_downloads";

pub use super::window::WINDOW;

/// A download whose request is on its way: what its reply needs.
struct InFlight {
    name: Name,
    /// An existing `.part` being resumed; its bytes are already in `hasher`.
    part: Option<Partial>,
    hasher: Hasher,
    /// The reply comes as records (`delta`), rebuilt from this older copy if any.
    records: Option<Option<Older>>,
}

/// Which ways of asking the server allows and the client wants.
#[derive(Debug, Clone, Copy, Default)]
struct Ways {
    /// `delta` against an older copy.
    delta: bool,
    /// All of a file as records, compressed where that pays.
    compress: bool,
}

/// A request to send: its line, the bytes that follow it (a delta's signature), and what its
/// reply needs.
struct Prepared(Request, Vec<u8>, InFlight);

impl InFlight {
    /// The request for `name`: `delta` if allowed and an older copy (or, with `resume`, a
    /// `.part`) is there (its signature computed now), else `resume` if asked and a `.part`
    /// exists (its digest computed now),
    /// else all of it as records if compression is on, else `get`.
    fn prepare(name: &Name, dir: &OutDir, resume: bool, ways: Ways) -> Result<Prepared, ClientError> {
        if dir.is_kept(name) {
            return Err(ClientError::Kept { path: dir.path().join(name.as_path()) });
        }
        let records =
            |older| InFlight { name: name.clone(), part: None, hasher: Hasher::default(), records: Some(older) };
        if ways.delta
            && let Some((request, signature, older)) = delta::prepare(name, dir, resume)
        {
            return Ok(Prepared(request, signature, records(Some(older))));
        }
        let local = |source| ClientError::Local { path: dir.part_path(name), source };
        let mut hasher = Hasher::default();
        let part = if resume { dir.reopen(name).map_err(local)? } else { None };
        let request = match &part {
            Some(partial) if !partial.is_empty() => {
                feed_file(partial.file(), 0, partial.len(), &mut hasher).map_err(local)?;
                Request::Resume { offset: partial.len(), prefix: hasher.digest(), name: name.clone() }
            }
            _ if ways.compress => return Ok(Prepared(delta::whole(name), Vec::new(), records(None))),
            _ => Request::Get(name.clone()),
        };
        Ok(Prepared(request, Vec::new(), InFlight { name: name.clone(), part, hasher, records: None }))
    }
}

/// Where [`Client::pipeline`] takes the names to download from.
trait NameSource {
    /// The next name; with `wait`, blocks until there is one or there will be none.
    fn next_name(&mut self, wait: bool) -> Next;
    /// How many names are left (taking them).
    fn rest(&mut self) -> usize;
}

enum Next {
    Ready(Name),
    /// None now; more may come.
    Later,
    End,
}

/// Names given all at once, and how many were taken.
struct Slice<'a>(&'a [Name], usize);

impl NameSource for Slice<'_> {
    fn next_name(&mut self, _wait: bool) -> Next {
        match self.0.get(self.1) {
            Some(name) => {
                self.1 += 1;
                Next::Ready(name.clone())
            }
            None => Next::End,
        }
    }

    fn rest(&mut self) -> usize {
        let left = self.0.len() - self.1;
        self.1 = self.0.len();
        left
    }
}

/// Names arriving on a channel.
struct Stream(mpsc::Receiver<Name>);

impl NameSource for Stream {
    fn next_name(&mut self, wait: bool) -> Next {
        if wait {
            return self.0.recv().map_or(Next::End, Next::Ready);
        }
        match self.0.try_recv() {
            Ok(name) => Next::Ready(name),
            Err(mpsc::TryRecvError::Empty) => Next::Later,
            Err(mpsc::TryRecvError::Disconnected) => Next::End,
        }
    }

    fn rest(&mut self) -> usize {
        self.0.iter().count()
    }
}

impl Client {
    /// Downloads `name` into `out` and verifies it, returning its size. Stops at the first local
    /// write error (the connection is then unusable): meant for streams such as stdout, where
    /// bytes already written cannot be taken back, so a failed check is reported after them.
    pub fn get(&mut self, name: &Name, out: &mut impl Write) -> Result<u64, ClientError> {
        // Before the reply to `hello`, asked as records on the bet that the server speaks them
        // (one that does not answers `unknown-command`, and the file is asked for plainly).
        let bet = self.agreed.is_none();
        if self.compress && (bet || self.ways().compress) {
            self.send(&delta::whole(name))?;
            self.flush()?;
            match self.read_reply(DeltaHeader::parse)?.into_result() {
                Ok(header) => {
                    if let Some(progress) = &self.progress {
                        progress.begin(name, header.size);
                    }
                    return match self.rebuild(None, &header, Some(out)) {
                        Ok(_) => Ok(header.size),
                        Err(ClientError::Local { source, .. }) => Err(ClientError::Local { path: "-".into(), source }),
                        Err(e) => Err(e),
                    };
                }
                // The bet lost: asked plainly below.
                Err(reply) if bet && reply.kind() == Some(crate::wire::ErrorCode::UnknownCommand) => {}
                Err(reply) => return Err(ClientError::Server(reply)),
            }
        }
        self.send(&Request::Get(name.clone()))?;
        self.flush()?;
        self.receive_to(name, out).map(|header| header.size)
    }

    /// Reads the reply to a `get` of `name` sent earlier: the body goes to `out`, hashed and
    /// checked against the announced digest. An `ERR` reply, or bytes that fail the check, leave
    /// the connection in step for the next reply; a failing `out` does not (the rest of the body
    /// is left unread).
    pub(crate) fn receive_to(&mut self, name: &Name, out: &mut impl Write) -> Result<GetHeader, ClientError> {
        let header = self.read_get_header()?;
        if let Some(progress) = &self.progress {
            progress.begin(name, header.len);
        }
        let mut hasher = Hasher::default();
        if let Err(source) = self.copy_body(header.len, out, &mut hasher, false)? {
            return Err(ClientError::Local { path: "-".into(), source });
        }
        let digest = self.digest_after(&header)?;
        verify(digest, &hasher)?;
        Ok(GetHeader { digest: Some(digest), ..header })
    }

    /// The digest a body is checked against: the header's, or else the one in the trailer that
    /// follows the body (read here, so the connection stays in step). A trailer that says `ERR`
    /// (`changed`: the file changed while it was sent) means the body is not to be kept.
    pub(super) fn digest_after(&mut self, header: &GetHeader) -> Result<Digest, ClientError> {
        if let Some(digest) = header.digest {
            return Ok(digest);
        }
        self.read_reply(protocol::parse_trailer)?.into_result().map_err(ClientError::Server)
    }

    /// Reads the status line of a `get` or `resume` reply.
    pub(super) fn read_get_header(&mut self) -> Result<GetHeader, ClientError> {
        if self.broken {
            return Err(ClientError::Broken);
        }
        let header = self.read_reply(GetHeader::parse)?.into_result().map_err(ClientError::Server)?;
        // Only a client that asked for trailers may be sent a header without a digest.
        if header.digest.is_none() && !self.agreed.as_ref().is_some_and(|a| a.has(Feature::Trailer)) {
            let what = format!("no xxh3 digest in the header of a {}-byte body, and no trailer agreed", header.len);
            return Err(self.lost(ProtocolError::Malformed(what)));
        }
        Ok(header)
    }

    /// The ways of asking this server allows that this client wants (reading the reply to
    /// `hello` if not read yet).
    fn ways(&mut self) -> Ways {
        let (delta, compress) = (self.delta, self.compress);
        match self.agreed() {
            Ok(agreed) if agreed.has(Feature::Delta) => Ways { delta, compress: compress && agreed.has(Feature::Zstd) },
            _ => Ways::default(),
        }
    }

    /// Downloads `name` to `<dir>/<name>` by way of `<dir>/<name>.part` and verifies it. With
    /// `resume`, an existing `.part` is continued if the server confirms its bytes match the
    /// file's first bytes; otherwise it is started over. A local error (disk full, a folder in the
    /// way) leaves the connection usable.
    pub fn download(&mut self, name: &Name, dir: &OutDir, resume: bool) -> Result<Downloaded, ClientError> {
        let mut result = Err(ClientError::Broken);
        self.download_all(std::slice::from_ref(name), dir, resume, |_, done| result = done);
        result
    }

    /// [`Client::download`] for many names over this connection, keeping enough requests (from
    /// [`WINDOW`] to [`super::MAX_WINDOW`], as the path needs: see `window.rs`)
    /// in flight so small files do not each wait a round trip, and saving small files on
    /// [`WRITERS`] threads while the next replies arrive. Reports each result (in order for files
    /// saved here, as they finish for files saved by the writers). Stops at the first error that
    /// leaves the connection out of step, and returns how many names were then never answered.
    pub fn download_all(
        &mut self,
        names: &[Name],
        dir: &OutDir,
        resume: bool,
        mut report: impl FnMut(&Name, Result<Downloaded, ClientError>),
    ) -> usize {
        if self.broken {
            return names.len();
        }
        let writers = if names.len() > 1 { WRITERS } else { 0 };
        self.download_from(&mut Slice(names, 0), writers, dir, resume, &mut report)
    }

    /// [`Client::download_all`] for names that arrive on `names` while the downloads go on (from
    /// a listing on another connection, say), until it closes. Returns how many names were never
    /// answered.
    pub fn download_stream(
        &mut self,
        names: mpsc::Receiver<Name>,
        dir: &OutDir,
        resume: bool,
        mut report: impl FnMut(&Name, Result<Downloaded, ClientError>),
    ) -> usize {
        if self.broken {
            return names.iter().count();
        }
        self.download_from(&mut Stream(names), WRITERS, dir, resume, &mut report)
    }

    fn download_from(
        &mut self,
        names: &mut impl NameSource,
        writers: usize,
        dir: &OutDir,
        resume: bool,
        mut report: &mut impl FnMut(&Name, Result<Downloaded, ClientError>),
    ) -> usize {
        let (saved_tx, saved) = mpsc::channel();
        std::thread::scope(|scope| {
            let mut saver = Saver::start(scope, dir, writers, saved_tx);
            let left = self.pipeline(names, dir, resume, &mut report, &mut saver, &saved);
            for (name, result) in saver.finish() {
                report(&name, result);
            }
            for (name, result) in saved.iter().flatten() {
                report(&name, result);
            }
            left
        })
    }

    /// The request/reply loop of [`Client::download_all`]. `saver` takes each small file;
    /// `saved` brings results back from the writers.
    fn pipeline(
        &mut self,
        names: &mut impl NameSource,
        dir: &OutDir,
        resume: bool,
        report: &mut impl FnMut(&Name, Result<Downloaded, ClientError>),
        saver: &mut Saver<'_>,
        saved: &mpsc::Receiver<Vec<Saved>>,
    ) -> usize {
        let mut in_flight = VecDeque::new();
        let mut ended = false;
        // What the server speaks: known once the reply to `hello` is read, which is waited for
        // only when it matters (compression is on, or a file has an older copy to rebuild from).
        let mut ways: Option<Ways> = None;
        // A request with a large signature, waiting for the requests before it to be answered.
        let mut held: Option<Prepared> = None;
        let mut whole_again: VecDeque<Name> = VecDeque::new();
        let mut window = Window::new(self.rtt);
        // Bytes of the requests in flight, oldest first, and whether each was asked as records
        // before the reply to `hello` said the server speaks them (a bet).
        let mut request_bytes: VecDeque<(usize, bool)> = VecDeque::new();
        let mut requested = 0usize;
        loop {
            // Refill once half the window is free, so requests leave in batches, not one by one.
            if in_flight.len() <= window.size() / 2 {
                while in_flight.len() < window.size() && requested < MAX_REQUEST_BYTES {
                    let mut bet = false;
                    let prepared = match held.take() {
                        Some(prepared) => prepared,
                        // A delta whose rebuild failed its check: asked again, whole.
                        None if let Some(name) = whole_again.pop_front() => {
                            let ways = Ways { delta: false, ..ways.unwrap_or_default() };
                            match InFlight::prepare(&name, dir, resume, ways) {
                                Ok(prepared) => prepared,
                                Err(e) => {
                                    report(&name, Err(e));
                                    continue;
                                }
                            }
                        }
                        None if ended => break,
                        None => {
                            // Wait for a name when few are in flight: sending them one or two at
                            // a time would cost a round trip each (names may come from a listing
                            // still going).
                            let name = match names.next_name(in_flight.len() < window.size() / 8) {
                                Next::Ready(name) => name,
                                Next::Later => break,
                                Next::End => {
                                    ended = true;
                                    break;
                                }
                            };
                            let ways = match ways {
                                Some(ways) => ways,
                                None if !(self.compress || (self.delta && delta::has_older(&name, dir, resume))) => {
                                    Ways::default()
                                }
                                // Before the reply to `hello`, a file with nothing to rebuild
                                // from is asked for as records at once, on the bet that the
                                // server speaks them as this build does, which saves waiting a
                                // round trip for that reply; one that does not answers
                                // `unknown-command`, and the file is asked for again plainly. A
                                // signature waits for the reply: an older server would read its
                                // bytes as requests.
                                None if self.agreed.is_none() && !delta::has_older(&name, dir, resume) => {
                                    bet = true;
                                    Ways { delta: self.delta, compress: self.compress }
                                }
                                None => *ways.insert(self.ways()),
                            };
                            match InFlight::prepare(&name, dir, resume, ways) {
                                Ok(prepared) => prepared,
                                Err(e) => {
                                    report(&name, Err(e));
                                    continue;
                                }
                            }
                        }
                    };
                    if prepared.1.len() > SMALL_SIGNATURE && !in_flight.is_empty() {
                        held = Some(prepared);
                        break;
                    }
                    let Prepared(request, after, flight) = prepared;
                    let written = self.write_request(&request);
                    match written.and_then(|line| self.write_after(&after).map(|()| line + after.len())) {
                        Ok(bytes) => {
                            in_flight.push_back(flight);
                            request_bytes.push_back((bytes, bet));
                            requested += bytes;
                        }
                        Err(e) if !self.broken => report(&flight.name, Err(e)),
                        Err(e) => {
                            report(&flight.name, Err(e));
                            return names.rest() + in_flight.len();
                        }
                    }
                }
                window.sent(std::time::Instant::now());
                if let Err(e) = self.stream.flush() {
                    let e = self.lost(e);
                    let left = names.rest() + in_flight.len() + usize::from(held.is_some());
                    if let Some(flight) = in_flight.front() {
                        report(&flight.name, Err(e));
                    }
                    return left;
                }
            }
            let Some(flight) = in_flight.pop_front() else {
                if ended && held.is_none() && whole_again.is_empty() {
                    return 0;
                }
                continue;
            };
            let name = flight.name.clone();
            let delta = matches!(flight.records, Some(Some(_)));
            let (bytes, bet) = request_bytes.pop_front().unwrap_or_default();
            requested -= bytes;
            let received = self.receive(flight, dir);
            let moved = match &received {
                Ok(Received::Saved(done)) => done.moved(),
                Ok(Received::Whole(whole)) => whole.done.moved(),
                Err(_) => 0,
            };
            window.answered(moved, std::time::Instant::now());
            match received {
                // Blocks matched by mistake (the signature's sums are 64 bits a block): the
                // rebuild was refused and nothing saved; the file whole is certain.
                Err(ClientError::Integrity { .. }) if delta => whole_again.push_back(name),
                // The bet lost: a server that does not speak records.
                Err(ClientError::Server(reply))
                    if bet && reply.kind() == Some(crate::wire::ErrorCode::UnknownCommand) =>
                {
                    whole_again.push_back(name)
                }
                Ok(Received::Saved(done)) => report(&name, Ok(done)),
                Ok(Received::Whole(whole)) => {
                    for (name, result) in saver.push(whole) {
                        report(&name, result);
                    }
                    // Nothing more to read without waiting: a good moment to give the writers work.
                    if self.stream.buffer().is_empty() {
                        for (name, result) in saver.hand_off() {
                            report(&name, result);
                        }
                    }
                }
                Err(e) => {
                    let out_of_step = self.broken;
                    report(&name, Err(e));
                    if out_of_step {
                        return names.rest() + in_flight.len();
                    }
                }
            }
            while let Ok(results) = saved.try_recv() {
                for (name, result) in results {
                    report(&name, result);
                }
            }
        }
    }

    /// Reads the reply to one `get` or `resume`: a small whole file comes back in memory,
    /// verified, for [`Whole::save`]; anything else is streamed to its `.part` and saved here.
    /// Leaves `broken` set if the reply was not consumed to its end.
    fn receive(&mut self, flight: InFlight, dir: &OutDir) -> Result<Received, ClientError> {
        let InFlight { name, part, mut hasher, records } = flight;
        if let Some(older) = records {
            return self.receive_records(name, older, dir);
        }
        let local = |source| ClientError::Local { path: dir.part_path(&name), source };
        let header = self.read_get_header()?;
        // Until the body has been read to its end, the connection is out of step.
        self.broken = true;
        let found = part.as_ref().map_or(0, Partial::len);
        if header.offset != 0 && header.offset != found {
            return Err(
                ProtocolError::Malformed(format!("resume from {} when {found} was asked", header.offset)).into()
            );
        }
        if let Some(progress) = &self.progress {
            progress.begin(&name, header.len);
        }
        let mut done = Downloaded {
            size: header.size,
            resumed_from: header.offset,
            started_over: found > 0 && header.offset == 0,
            digest: header.digest.unwrap_or(Digest(0)),
            reused: 0,
            compression_saved: 0,
        };
        if part.is_none() && header.len <= SMALL_FILE {
            let mut bytes = Vec::with_capacity(header.len as usize);
            let written = self.copy_body(header.len, &mut bytes, &mut hasher, true)?;
            done.digest = self.digest_after(&header)?;
            written.map_err(local)?;
            verify(done.digest, &hasher)?;
            return Ok(Received::Whole(Whole { name, bytes, done, mode: header.mode, mtime: header.mtime }));
        }
        let opened = match part {
            // Append after the prefix the server confirmed (where a reopened .part stands).
            Some(partial) if header.offset > 0 => Ok(partial),
            // A .part the server did not confirm: start over.
            Some(mut partial) => {
                hasher = Hasher::default();
                partial.restart().map(|()| partial)
            }
            None => dir.begin(&name),
        };
        let mut partial = match opened {
            Ok(partial) => partial,
            Err(e) => {
                self.copy_body(header.len, &mut io::sink(), &mut hasher, true)?.ok();
                self.digest_after(&header)?;
                return Err(local(e));
            }
        };
        partial.set_mode(dir.mode_for(header.mode));
        partial.set_mtime(header.mtime);
        // A body the disk cannot hold is not read at all (an announced size may be anything up to
        // 2^64 - 1): the connection is left out of step and given up instead.
        if let Err(e) = partial.check_room(header.len) {
            if partial.is_empty() {
                partial.abort();
            }
            return Err(local(e));
        }
        let written = self.copy_body(header.len, &mut partial, &mut hasher, true)?;
        done.digest = match self.digest_after(&header) {
            Ok(digest) => digest,
            // The server could not vouch for what it sent: nothing of it is kept.
            Err(e @ ClientError::Server(_)) => {
                partial.abort();
                return Err(e);
            }
            // Lost before the trailer: the .part stays, unverified; resuming checks its prefix.
            Err(e) => return Err(e),
        };
        written.map_err(local)?;
        if let Err(e) = verify(done.digest, &hasher) {
            partial.abort();
            return Err(e);
        }
        let path = dir.path().join(name.as_path());
        match partial.commit() {
            Ok(()) => Ok(Received::Saved(done)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(ClientError::Kept { path }),
            Err(source) => Err(ClientError::Local { path, source }),
        }
    }
}

fn verify(expected: Digest, hasher: &Hasher) -> Result<(), ClientError> {
    let actual = hasher.digest();
    if actual != expected {
        return Err(ClientError::Integrity { expected, actual });
    }
    Ok(())
}
