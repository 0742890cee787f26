//! The client: one connection, the requests over it, and saving downloads safely.
//!
//! A [`Client`] speaks the protocol over one connection (a [`Transport`], read and written by one
//! owner, never split) and never trusts it: status lines and list entries are parsed strictly, a body is read to exactly its announced size through a
//! fixed buffer (a body that ends early is an error, bytes beyond it are never written), and
//! every body is hashed as it streams in and checked against the digest the server announced
//! (in the header, or in a trailer after the body when the server had not hashed the file yet).
//!
//! Downloads go through an [`OutDir`]. A large file streams into `<name>.part`, renamed to `<name>`
//! only once complete and verified; a failed transfer leaves no file under the final name and never
//! destroys an existing copy, an interrupted one keeps its `.part` so `resume` can continue it, and
//! one that fails verification deletes it. A small file is read whole, verified in memory, and
//! handed to writer threads (`saver.rs`) that save it in one step, so the receive loop never waits
//! on the file system for it. Errors and results are in `result.rs`.
//!
//! [`Client::download_all`] pipelines: it keeps a window of requests in flight on the connection,
//! so many small files cost one round trip in all rather than one each.

pub mod bench;
mod outdir;
mod result;
mod saver;
pub mod tree;
pub mod trust;
mod upload;

pub use outdir::{Local, OutDir, PART_SUFFIX, Partial};
pub use result::{ClientError, Downloaded, KeyMismatch, Uploaded};
pub use saver::WRITERS;
pub use upload::{LocalFile, LocalFolder, LocalTree, Put, PutOptions, Remote, Skipped, local_tree};

use std::collections::VecDeque;
use std::io::{self, BufRead, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use saver::{Saved, Saver, Whole};
use trust::{Decision, TlsMode, TlsOptions, Trust, Verifier};

use crate::digest::{Digest, Hasher, feed_file};
use crate::name::Name;
use crate::transport::{BufStream, Transport};
use crate::wire::escape;
use crate::wire::{
    self as protocol, Agreed, EntryKind, ErrorCode, Form, GetHeader, Hello, ListEntry, MAX_REPLY_LINE, MetaEntry,
    PROTOCOL_VERSION, ProtocolError, Request, Secret, Status,
};

/// The server `ftclient` talks to when given no `--host`.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// How long `ftclient` waits to connect, or for the server, when given no `--timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The folder downloads are saved in when given no `-o`.
pub const DEFAULT_OUTPUT: &str = "client_downloads";

/// Most entries [`Client::list`] keeps in memory; [`Client::list_each`] has no limit.
pub const MAX_LIST_KEPT: usize = 1_000_000;

/// Most lines a `stats` reply may announce (the server sends a few dozen).
pub const MAX_STATS: u64 = 1024;

/// Most `get` requests one connection keeps in flight: enough to hide the round trip behind small
/// files, few enough (a few KiB of requests) never to fill a socket buffer while the server is
/// itself blocked sending, which would deadlock.
pub const WINDOW: usize = 128;

/// Files up to this size are read whole into memory, verified, and saved in one step.
pub const SMALL_FILE: u64 = 256 << 10;

/// A download whose request is on its way: what its reply needs.
struct InFlight {
    name: Name,
    /// An existing `.part` being resumed; its bytes are already in `hasher`.
    part: Option<Partial>,
    hasher: Hasher,
}

impl InFlight {
    /// The request for `name`: `resume` if asked and a `.part` exists (its digest computed now),
    /// else `get`.
    fn prepare(name: &Name, dir: &OutDir, resume: bool) -> Result<(Request, InFlight), ClientError> {
        if dir.is_kept(name) {
            return Err(ClientError::Kept { path: dir.path().join(name.as_path()) });
        }
        let local = |source| ClientError::Local { path: dir.part_path(name), source };
        let mut hasher = Hasher::default();
        let part = if resume { dir.reopen(name).map_err(local)? } else { None };
        let request = match &part {
            Some(partial) if !partial.is_empty() => {
                feed_file(partial.file(), 0, partial.len(), &mut hasher).map_err(local)?;
                Request::Resume { offset: partial.len(), prefix: hasher.digest(), name: name.clone() }
            }
            _ => Request::Get(name.clone()),
        };
        Ok((request, InFlight { name: name.clone(), part, hasher }))
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

/// What [`Client::receive`] made of a reply.
enum Received {
    /// Streamed to disk and saved.
    Saved(Downloaded),
    /// A small file, whole and verified in memory, still to be saved.
    Whole(Whole),
}

/// Cuts a [`Client`]'s connection from another thread; see [`Client::interrupter`].
#[derive(Clone)]
pub struct Interrupter(Arc<TcpStream>);

impl Interrupter {
    pub fn interrupt(&self) {
        let _ = self.0.shutdown(std::net::Shutdown::Both);
    }
}

/// Told how downloads advance, to draw progress (see `ftclient`'s progress bar).
pub trait Progress: Send + Sync {
    /// A reply for `name` arrived announcing `len` body bytes (only those still to come).
    fn begin(&self, name: &Name, len: u64);
    /// `bytes` more body bytes arrived.
    fn advance(&self, bytes: u64);
}

/// A connection to an ft server.
pub struct Client {
    /// The connection, buffered both ways (64 KiB for replies and bodies, 8 KiB for requests).
    stream: BufStream,
    line: Vec<u8>,
    /// Set once the stream may be out of step (a reply was not read to its end).
    broken: bool,
    /// Where download progress is reported, if anywhere.
    progress: Option<Arc<dyn Progress>>,
    /// What the server agreed to in reply to the `hello` sent on connecting; `None` until that
    /// reply has been read (it is read before the first reply that needs it).
    agreed: Option<Agreed>,
}

/// The features this client asks for in its `hello`: a digest after the body (`trailer`),
/// listings that end with a status line instead of starting with a count (`list-end`), and
/// listings with folders, modes and exact times (`list-meta`), and uploads (`put`).
pub const CLIENT_FEATURES: &[&str] =
    &[protocol::FEATURE_TRAILER, protocol::FEATURE_LIST_END, protocol::FEATURE_LIST_META, protocol::FEATURE_PUT];

impl Client {
    /// Connects to `addr` (`host:port`) with the default [`TlsOptions`]: TLS to a server that is
    /// not on this machine, trusted through the default known-hosts file.
    pub fn connect(addr: &str, timeout: Duration) -> Result<Client, ClientError> {
        Client::connect_with(addr, timeout, &TlsOptions::default())
    }

    /// Connects to `addr` (`host:port`), trying each resolved address within `timeout`, and speaks
    /// TLS as `tls` says (the handshake too must finish within `timeout`); reads and writes then
    /// time out after `timeout` without progress. A TLS failure never falls back to plain text.
    pub fn connect_with(addr: &str, timeout: Duration, tls: &TlsOptions) -> Result<Client, ClientError> {
        let fail = |source| ClientError::Connect { addr: addr.to_string(), source };
        let stream = connect_any(addr.to_socket_addrs().map_err(fail)?, timeout).map_err(fail)?;
        stream.set_nodelay(true).map_err(fail)?;
        stream.set_write_timeout(Some(timeout)).map_err(fail)?;
        let use_tls = match tls.mode {
            TlsMode::Always => true,
            TlsMode::Never => false,
            TlsMode::Auto => !stream.peer_addr().map_err(fail)?.ip().to_canonical().is_loopback(),
        };
        let mut transport =
            if use_tls { tls_handshake(addr, stream, timeout, &tls.trust)? } else { Transport::plain(stream) };
        // Each read gets data within the timeout, or fails: also when a server trickles its TLS
        // records a byte at a time (each byte would restart a socket's own timeout).
        transport.set_read_timeout(Some(timeout));
        transport.set_progress(Some(timeout));
        Client::over(transport).map_err(fail)
    }

    fn over(transport: Transport) -> io::Result<Client> {
        let mut client = Client {
            stream: BufStream::new(transport, 64 << 10, 8 << 10),
            line: Vec::new(),
            broken: false,
            progress: None,
            agreed: None,
        };
        // Pipelined: it leaves with the first request, and its reply is read before that
        // request's, so agreeing costs no round trip of its own.
        let features = CLIENT_FEATURES.iter().map(|f| f.to_string()).collect();
        writeln!(client.stream, "{}", Request::Hello(Hello { version: PROTOCOL_VERSION, features }))?;
        Ok(client)
    }

    /// Reports the progress of later downloads to `progress`.
    pub fn set_progress(&mut self, progress: Arc<dyn Progress>) {
        self.progress = Some(progress);
    }

    /// Stops reporting progress.
    pub fn clear_progress(&mut self) {
        self.progress = None;
    }

    /// A handle that can cut this connection from another thread (a Ctrl-C handler): whatever the
    /// client is waiting for then fails at once, as if the connection had been lost, and a
    /// partial download keeps its `.part`.
    pub fn interrupter(&self) -> Interrupter {
        Interrupter(self.stream.get_ref().tcp_handle())
    }

    /// Whether the connection can still carry requests.
    pub fn is_usable(&self) -> bool {
        !self.broken
    }

    /// Presents a token (`auth`), returning the rights the server grants (`read`, `read,write`).
    /// Never sends it in plain text to a server that is not on this machine: that is refused here,
    /// before a byte of it leaves.
    pub fn authenticate(&mut self, token: &Secret) -> Result<String, ClientError> {
        let transport = self.stream.get_ref();
        let peer = transport.tcp().peer_addr()?;
        if !transport.is_tls() && !peer.ip().to_canonical().is_loopback() {
            return Err(ClientError::TokenInPlainText { addr: peer.to_string() });
        }
        let fields = self.call(&Request::Auth(token.clone()))?;
        let rights = fields.split(' ').find_map(|f| f.strip_prefix("rights=")).unwrap_or("read");
        Ok(escape(rights))
    }

    /// What the server agreed to (protocol version, features) in reply to the `hello` this
    /// client sends on connecting. A server that predates `hello` gives the baseline (version 1,
    /// no features).
    pub fn agreed(&mut self) -> Result<&Agreed, ClientError> {
        if self.agreed.is_none() {
            self.flush()?;
            self.read_agreement()?;
        }
        Ok(self.agreed.get_or_insert_with(Agreed::baseline))
    }

    /// Reads the reply to the `hello` sent on connecting, if not read yet. An `ERR` other than
    /// `unknown-command` (a server turning the connection away: `busy`) is that connection's
    /// answer to everything, so it is returned as the error of the request waiting for a reply.
    fn read_agreement(&mut self) -> Result<(), ClientError> {
        if self.agreed.is_some() {
            return Ok(());
        }
        self.broken = true;
        let status = protocol::read_status(&mut self.stream, &mut self.line)?;
        let agreed = match status {
            Status::Ok(fields) => match Agreed::parse(&fields)? {
                agreed if agreed.version <= PROTOCOL_VERSION => agreed,
                agreed => {
                    return Err(ProtocolError::Malformed(format!("agreed to version {}", agreed.version)).into());
                }
            },
            Status::Err(reply) if reply.kind() == Some(ErrorCode::UnknownCommand) => Agreed::baseline(),
            Status::Err(reply) => return Err(ClientError::Server(reply)),
        };
        self.agreed = Some(agreed);
        self.broken = false;
        Ok(())
    }

    /// Reads one reply's status line, after the reply to `hello` if that is still to come.
    fn read_status(&mut self) -> Result<Status, ClientError> {
        self.read_agreement()?;
        Ok(protocol::read_status(&mut self.stream, &mut self.line)?)
    }

    /// The files the server offers, under `folder` or all of them, sorted by name.
    /// At most [`MAX_LIST_KEPT`] of them: a listing longer than that is an error here (see
    /// [`Client::list_each`] to go through one of any length).
    pub fn list(&mut self, folder: Option<&Name>) -> Result<Vec<ListEntry>, ClientError> {
        let mut entries = Vec::new();
        self.list_each(folder, |entry| {
            if entries.len() >= MAX_LIST_KEPT {
                return Err(io::Error::other(format!("listing longer than {MAX_LIST_KEPT} entries")));
            }
            entries.push(entry);
            Ok(())
        })?;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// The files the server offers, handed to `each` one by one as they arrive, so a listing of
    /// any length takes the memory of one entry. Returns how many there were. An error from
    /// `each` stops the listing (the connection is then out of step). The order is the server's
    /// (a server that streams its listing sends it unsorted).
    pub fn list_each(
        &mut self,
        folder: Option<&Name>,
        mut each: impl FnMut(ListEntry) -> io::Result<()>,
    ) -> Result<u64, ClientError> {
        let mut files = 0;
        self.list_all_each(folder, |entry| {
            if !entry.is_file() {
                return Ok(());
            }
            files += 1;
            each(ListEntry { size: entry.size, mtime: entry.mtime, name: entry.name })
        })?;
        Ok(files)
    }

    /// [`Client::list_each`], telling `unreadable` of each entry the server could not read (a
    /// server that walks says so and goes on; an older one ends such a listing with an error).
    pub fn list_each_reporting(
        &mut self,
        folder: Option<&Name>,
        mut each: impl FnMut(ListEntry) -> io::Result<()>,
        mut unreadable: impl FnMut(&Name, &str),
    ) -> Result<u64, ClientError> {
        if !self.walks()? {
            return self.list_each(folder, each);
        }
        let mut files = 0;
        self.walk_each(folder, true, |entry| match entry.kind {
            EntryKind::File => {
                files += 1;
                each(ListEntry { size: entry.size, mtime: entry.mtime, name: entry.name })
            }
            EntryKind::Unreadable { message, .. } => {
                unreadable(&entry.name, &message);
                Ok(())
            }
            _ => Ok(()),
        })?;
        Ok(files)
    }

    /// Whether the server sends folders, modes and exact times in its listings (`list-meta`).
    pub fn lists_folders(&mut self) -> Result<bool, ClientError> {
        Ok(self.agreed()?.has(protocol::FEATURE_LIST_META))
    }

    /// [`Client::list_each`] with folders too (each before what it holds) and every entry's mode
    /// and exact modification time, from a server that agreed to `list-meta`; from one that did
    /// not, files only, with mode 0 and whole seconds. Returns how many entries there were.
    pub fn list_all_each(
        &mut self,
        folder: Option<&Name>,
        each: impl FnMut(MetaEntry) -> io::Result<()>,
    ) -> Result<u64, ClientError> {
        self.entries_each(&Request::List(folder.cloned()), each)
    }

    /// Whether the server can `walk` a tree, saying what every entry is (protocol version 2).
    pub fn walks(&mut self) -> Result<bool, ClientError> {
        Ok(self.agreed()?.version >= 2)
    }

    /// Every entry beneath `folder` (or the whole server) as `walk` lists it, handed to `each` as
    /// it arrives: files, folders (each before what it holds), symlinks (with `follow`, followed
    /// inside the server's root and listed as what they lead to), fifos, sockets, devices, and
    /// what the server could not read ([`EntryKind::Unreadable`]). Returns how many there were.
    /// Needs protocol version 2 ([`Client::walks`]).
    pub fn walk_each(
        &mut self,
        folder: Option<&Name>,
        follow: bool,
        each: impl FnMut(MetaEntry) -> io::Result<()>,
    ) -> Result<u64, ClientError> {
        self.entries_each(&Request::Walk { follow, folder: folder.cloned() }, each)
    }

    /// What is at `name` on the server, not following a symlink at its end (`stat`, protocol
    /// version 2); `ERR not-found` if nothing.
    pub fn stat(&mut self, name: &Name) -> Result<MetaEntry, ClientError> {
        let fields = self.call(&Request::Stat(name.clone()))?;
        let entry = MetaEntry::parse(fields.as_bytes(), Form::Escaped)?;
        if entry.name != *name {
            return Err(ProtocolError::Malformed(format!("stat {name} answered for {}", entry.name)).into());
        }
        Ok(entry)
    }

    /// The reply to a `list` or a `walk`, entry by entry.
    fn entries_each(
        &mut self,
        request: &Request,
        mut each: impl FnMut(MetaEntry) -> io::Result<()>,
    ) -> Result<u64, ClientError> {
        let fields = self.call(request)?;
        let walk = matches!(request, Request::Walk { .. });
        let meta = walk || self.agreed.as_ref().is_some_and(|a| a.has(protocol::FEATURE_LIST_META));
        let ended = walk || self.agreed.as_ref().is_some_and(|a| a.has(protocol::FEATURE_LIST_END));
        let form = self.agreed.as_ref().map_or(Form::Plain, Agreed::form);
        // With list-end the count comes last; without, first.
        let count = if ended {
            if !fields.is_empty() {
                self.broken = true;
                return Err(ProtocolError::Malformed(format!("unexpected list header 'OK {}'", escape(&fields))).into());
            }
            u64::MAX
        } else {
            protocol::parse_count(&fields).inspect_err(|_| self.broken = true)?
        };
        let mut done = 0u64;
        while done < count {
            let line = match self.read_line() {
                Ok(line) => line,
                Err(ClientError::Protocol(ProtocolError::Closed)) => {
                    let of = if ended { String::new() } else { format!(" of {count}") };
                    let what = format!("connection closed after {done}{of} listed entries");
                    return Err(ProtocolError::Malformed(what).into());
                }
                Err(e) => return Err(e),
            };
            // An entry starts with its size (a digit) or `type=`; the end, with OK or ERR.
            let is_status = line == b"OK" || line.starts_with(b"OK ") || line.starts_with(b"ERR ");
            if ended && is_status {
                return match protocol::parse_status(line) {
                    Ok(Status::Ok(fields)) => match protocol::parse_count(&fields) {
                        Ok(sent) if sent == done => Ok(done),
                        _ => {
                            self.broken = true;
                            let what = format!("listing ended with 'OK {}' after {done} entries", escape(&fields));
                            Err(ProtocolError::Malformed(what).into())
                        }
                    },
                    Ok(Status::Err(reply)) => Err(ClientError::Server(reply)),
                    Err(e) => {
                        self.broken = true;
                        Err(e.into())
                    }
                };
            }
            let entry = if meta {
                MetaEntry::parse(line, form)
            } else {
                ListEntry::parse(line, form).map(|e| MetaEntry {
                    kind: EntryKind::File,
                    size: e.size,
                    mtime: e.mtime,
                    mtime_nsec: 0,
                    mode: 0,
                    name: e.name,
                })
            };
            let entry = entry.inspect_err(|_| self.broken = true)?;
            done += 1;
            if let Err(e) = each(entry) {
                self.broken = true;
                return Err(ClientError::Local { path: "-".into(), source: e });
            }
        }
        Ok(count)
    }

    /// The digest of each of `names` as the server has it (`sum`), pipelined: handed to `each`
    /// in order. Stops at an error that leaves the connection out of step.
    pub fn sum_all(
        &mut self,
        names: &[Name],
        mut each: impl FnMut(&Name, Result<(u64, Digest), ClientError>),
    ) -> Result<(), ClientError> {
        for batch in names.chunks(WINDOW) {
            for name in batch {
                self.send(&Request::Sum(name.clone()))?;
            }
            self.flush()?;
            for name in batch {
                let result = self.read_size_and_digest()?;
                each(name, result);
            }
        }
        Ok(())
    }

    /// Reads a reply of the form `OK <size> xxh3=<digest>` (to `sum` and to `put`): the outer
    /// error leaves the connection out of step, the inner one is the server's `ERR` for this
    /// request alone.
    fn read_size_and_digest(&mut self) -> Result<Result<(u64, Digest), ClientError>, ClientError> {
        self.broken = true;
        let status = self.read_status()?;
        self.broken = false;
        match status {
            Status::Ok(fields) => match (protocol::parse_count(&fields), protocol::parse_trailer(&fields)) {
                (Ok(size), Ok(digest)) => Ok(Ok((size, digest))),
                (Err(e), _) | (_, Err(e)) => {
                    self.broken = true;
                    Err(e.into())
                }
            },
            Status::Err(reply) => Ok(Err(ClientError::Server(reply))),
        }
    }

    /// The server's counters, in the order it sent them (at most [`MAX_STATS`]).
    pub fn stats(&mut self) -> Result<Vec<(String, u64)>, ClientError> {
        let count = self.call_count(&Request::Stats)?;
        if count > MAX_STATS {
            self.broken = true;
            return Err(ProtocolError::Malformed(format!("{count} stats lines announced; at most {MAX_STATS}")).into());
        }
        let mut stats = Vec::new();
        for _ in 0..count {
            stats.push(protocol::parse_stat(self.read_line()?)?);
        }
        Ok(stats)
    }

    /// Downloads `name` into `out` and verifies it, returning its size. Stops at the first local
    /// write error (the connection is then unusable): meant for streams such as stdout, where
    /// bytes already written cannot be taken back, so a failed check is reported after them.
    pub fn get(&mut self, name: &Name, out: &mut impl Write) -> Result<u64, ClientError> {
        self.send(&Request::Get(name.clone()))?;
        self.flush()?;
        self.receive_to(name, out).map(|header| header.size)
    }

    /// Queues a request without waiting for its reply (pipelining); it leaves at the next
    /// [`Client::flush`], or sooner once the write buffer fills.
    pub(crate) fn send(&mut self, request: &Request) -> Result<(), ClientError> {
        if self.broken {
            return Err(ClientError::Broken);
        }
        self.write_request(request)
    }

    /// Writes a request with its names in the agreed form. Until the reply to `hello` has been
    /// read, a request that reads the same in both forms goes at once (pipelined behind the
    /// `hello`); any other waits for that reply first, which says which form the server reads.
    /// A request the server's version cannot carry is refused here, before anything is sent.
    fn write_request(&mut self, request: &Request) -> Result<(), ClientError> {
        let line = match &self.agreed {
            Some(agreed) => request.to_line(agreed.form()),
            None => match (request.to_line(Form::Plain), request.to_line(Form::Escaped)) {
                (Ok(plain), Ok(escaped)) if plain == escaped => Ok(plain),
                _ => {
                    self.flush()?;
                    self.read_agreement()?;
                    let form = self.agreed.as_ref().map_or(Form::Plain, Agreed::form);
                    request.to_line(form)
                }
            },
        };
        let line = line.map_err(ClientError::Unsayable)?;
        writeln!(self.stream, "{line}").inspect_err(|_| self.broken = true)?;
        Ok(())
    }

    /// Sends every queued request.
    pub(crate) fn flush(&mut self) -> Result<(), ClientError> {
        self.stream.flush().inspect_err(|_| self.broken = true)?;
        Ok(())
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
    fn digest_after(&mut self, header: &GetHeader) -> Result<Digest, ClientError> {
        if let Some(digest) = header.digest {
            return Ok(digest);
        }
        self.broken = true;
        let status = protocol::read_status(&mut self.stream, &mut self.line)?;
        self.broken = false;
        match status {
            Status::Ok(fields) => {
                protocol::parse_trailer(&fields).inspect_err(|_| self.broken = true).map_err(Into::into)
            }
            Status::Err(reply) => Err(ClientError::Server(reply)),
        }
    }

    /// Reads the status line of a `get` or `resume` reply.
    fn read_get_header(&mut self) -> Result<GetHeader, ClientError> {
        if self.broken {
            return Err(ClientError::Broken);
        }
        self.broken = true;
        let status = self.read_status()?;
        self.broken = false;
        let fields = status.into_result().map_err(ClientError::Server)?;
        let header = GetHeader::parse(&fields).inspect_err(|_| self.broken = true)?;
        // Only a client that asked for trailers may be sent a header without a digest.
        if header.digest.is_none() && !self.agreed.as_ref().is_some_and(|a| a.has(protocol::FEATURE_TRAILER)) {
            self.broken = true;
            return Err(ProtocolError::Malformed(format!("no xxh3 digest in 'OK {}'", escape(&fields))).into());
        }
        Ok(header)
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

    /// [`Client::download`] for many names over this connection, keeping up to [`WINDOW`] requests
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
        loop {
            // Refill once half the window is free, so requests leave in batches, not one by one.
            if in_flight.len() <= WINDOW / 2 {
                while !ended && in_flight.len() < WINDOW {
                    // Wait for a name when few are in flight: sending them one or two at a time
                    // would cost a round trip each (names may come from a listing still going).
                    let name = match names.next_name(in_flight.len() < WINDOW / 8) {
                        Next::Ready(name) => name,
                        Next::Later => break,
                        Next::End => {
                            ended = true;
                            break;
                        }
                    };
                    match InFlight::prepare(&name, dir, resume) {
                        Ok((request, flight)) => match self.write_request(&request) {
                            Ok(()) => in_flight.push_back(flight),
                            Err(e) if !self.broken => report(&name, Err(e)),
                            Err(e) => {
                                report(&name, Err(e));
                                return names.rest() + in_flight.len();
                            }
                        },
                        Err(e) => report(&name, Err(e)),
                    }
                }
                if let Err(e) = self.stream.flush() {
                    self.broken = true;
                    let left = names.rest() + in_flight.len();
                    if let Some(flight) = in_flight.front() {
                        report(&flight.name, Err(e.into()));
                    }
                    return left;
                }
            }
            let Some(flight) = in_flight.pop_front() else {
                if ended {
                    return 0;
                }
                continue;
            };
            let name = flight.name.clone();
            match self.receive(flight, dir) {
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
        let InFlight { name, part, mut hasher } = flight;
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

    /// Says goodbye and closes the connection.
    pub fn quit(mut self) -> Result<(), ClientError> {
        self.call(&Request::Quit)?;
        Ok(())
    }

    /// Sends a request and reads its status line; `Ok(fields)` after `OK`.
    fn call(&mut self, request: &Request) -> Result<String, ClientError> {
        if self.broken {
            return Err(ClientError::Broken);
        }
        self.write_request(request)?;
        self.broken = true;
        self.stream.flush()?;
        let status = self.read_status()?;
        self.broken = false;
        status.into_result().map_err(ClientError::Server)
    }

    fn call_count(&mut self, request: &Request) -> Result<u64, ClientError> {
        let fields = self.call(request)?;
        protocol::parse_count(&fields).inspect_err(|_| self.broken = true).map_err(Into::into)
    }

    fn read_line(&mut self) -> Result<&[u8], ClientError> {
        if !protocol::read_line(&mut self.stream, &mut self.line, MAX_REPLY_LINE)? {
            self.broken = true;
            return Err(ProtocolError::Closed.into());
        }
        Ok(&self.line)
    }

    /// Moves exactly `len` body bytes from the connection into `out`, hashing them. The outer
    /// error is the connection's; the inner one is `out`'s. With `drain`, a failing `out` does not
    /// stop the reading, so the connection stays in step.
    fn copy_body(
        &mut self,
        len: u64,
        out: &mut impl Write,
        hasher: &mut Hasher,
        drain: bool,
    ) -> Result<io::Result<()>, ClientError> {
        self.broken = true;
        let mut left = len;
        let mut local = Ok(());
        while left > 0 {
            let chunk = match self.stream.fill_buf() {
                Ok([]) => return Err(ClientError::ShortBody { expected: len, received: len - left }),
                Ok(chunk) => chunk,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Cut (over TLS: closed without ending TLS): lost part-way, as said plainly.
                Err(e) if matches!(e.kind(), io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset) => {
                    return Err(ClientError::ShortBody { expected: len, received: len - left });
                }
                Err(e) => return Err(e.into()),
            };
            let n = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            hasher.update(&chunk[..n]);
            if let Some(progress) = &self.progress {
                progress.advance(n as u64);
            }
            if local.is_ok() {
                local = out.write_all(&chunk[..n]);
                if local.is_err() && !drain {
                    return Ok(local);
                }
            }
            self.stream.consume(n);
            left -= n as u64;
        }
        self.broken = false;
        Ok(local.and_then(|()| out.flush()))
    }
}

/// Sets TLS up over `stream` to the server `addr` names, as `trust` says, and records a newly
/// trusted server once the handshake (which proves it holds the key) has completed. What
/// [`Client::connect_with`] does for TLS; public for speaking the protocol by hand over it.
pub fn tls_handshake(
    addr: &str,
    stream: TcpStream,
    timeout: Duration,
    trust: &Trust,
) -> Result<Transport, ClientError> {
    // Known however the address was written (`::1`, `[0::1]`, a host name in capitals).
    let host_port = trust::host_key(addr).unwrap_or_else(|| addr.to_ascii_lowercase());
    let host = match host_port.rsplit_once(':') {
        Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
        None => host_port.as_str(),
    };
    let tls_failed = |e: io::Error| ClientError::Tls { addr: addr.to_string(), source: e };
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| tls_failed(io::Error::new(io::ErrorKind::InvalidInput, "not a host name or address")))?;
    let provider = crate::transport::tls_provider();
    let known_hosts = trust.known_hosts_path();
    let local = |source| ClientError::Local { path: known_hosts.clone(), source };
    let verifier = Arc::new(Verifier::new(&host_port, trust, provider.clone()).map_err(local)?);
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_failed(io::Error::other(e)))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let session = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| tls_failed(io::Error::other(e)))?;
    let mut transport = Transport::tls_client(stream, session);
    let handshake = transport.handshake(std::time::Instant::now() + timeout);
    match (handshake, verifier.decision()) {
        (Ok(()), Some(Decision::Record(fingerprint))) => {
            trust::record(&known_hosts, &host_port, &fingerprint).map_err(local)?;
            Ok(transport)
        }
        (Ok(()), _) => Ok(transport),
        (Err(_), Some(Decision::Changed { expected, actual, line })) => {
            Err(ClientError::HostKeyChanged(Box::new(KeyMismatch {
                host: host_port,
                expected,
                actual,
                known_hosts,
                line,
            })))
        }
        (Err(_), Some(Decision::NotPinned { expected, actual })) => {
            let known_hosts = PathBuf::new();
            Err(ClientError::NotPinned(Box::new(KeyMismatch {
                host: host_port,
                expected,
                actual,
                known_hosts,
                line: 0,
            })))
        }
        (Err(_), Some(Decision::Unknown(fingerprint))) => {
            Err(ClientError::UnknownHost { host: host_port, fingerprint: Box::new(fingerprint), known_hosts })
        }
        (Err(e), _) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
            Err(ClientError::Timeout)
        }
        (Err(e), _) if answered_in_plain_text(&e) => Err(tls_failed(io::Error::other(
            "the server answered in plain text, not TLS: it may be turning connections away (too busy, or too \
             many failed attempts from this address), or it does not speak TLS",
        ))),
        (Err(e), _) => Err(tls_failed(e)),
    }
}

/// Whether a handshake failed because what came back was not TLS at all (an `ERR` line, say).
fn answered_in_plain_text(e: &io::Error) -> bool {
    let tls = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
    matches!(tls, Some(rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)))
}

/// Connects to the first of `candidates` that accepts (a host name may resolve to an IPv6 address
/// nothing listens on before the IPv4 one that works), each tried for up to `timeout`.
fn connect_any(candidates: impl IntoIterator<Item = SocketAddr>, timeout: Duration) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address found");
    for candidate in candidates {
        match TcpStream::connect_timeout(&candidate, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn verify(expected: Digest, hasher: &Hasher) -> Result<(), ClientError> {
    let actual = hasher.digest();
    if actual != expected {
        return Err(ClientError::Integrity { expected, actual });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn connecting_tries_every_address_in_turn() {
        let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let open = TcpListener::bind("127.0.0.1:0").unwrap();
        let good = open.local_addr().unwrap();
        let stream = connect_any([closed, good], Duration::from_secs(5)).unwrap();
        assert_eq!(stream.peer_addr().unwrap(), good);
        let refused = connect_any([closed], Duration::from_secs(5)).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(connect_any([], Duration::from_secs(5)).unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
