//! One client connection: the command loop, its timeouts, and writing the replies through its
//! [`Transport`] (what a `get` answers is decided in `get.rs`; the reply text in the wire module).
//!
//! The first byte says what the peer speaks: a TLS handshake (0x16), completed within the request
//! timeout, or plain text, which only a peer on this machine is served unless the server allows
//! it from anywhere.
//!
//! The loop waits up to the idle timeout for a request to begin; once its first byte is in, the
//! whole line must arrive within the request timeout (a peer trickling bytes is cut off) and fit
//! the line cap. Replies are buffered and flushed only when no further pipelined request is
//! already buffered, so a burst of requests leaves in few writes. Every write is bounded by the
//! socket's send timeout, which the kernel applies between two writes that make progress: a slow
//! but steady reader is served, one that stops reading releases the thread.

use std::fs::File;
use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::BorrowedFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::bytes::Bytes;
use super::get::{self, Source};
use super::list;
use super::shared::Shared;
use super::storers::{self, Job, SMALL_UPLOAD, Storers};
use crate::digest::Digest;
use crate::name::Name;
use crate::store::{Expected, PutError};
use crate::transport::{BufStream, Transport};
use crate::wire::{self as protocol, Agreed, ErrorCode, ProtocolError, Request};

/// The first byte of a TLS record carrying a handshake: what a TLS client sends first.
const TLS_HANDSHAKE: u8 = 0x16;

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    #[error("{}", shown_io(.0))]
    Io(#[from] io::Error),
    #[error("request line longer than {0} bytes")]
    LineTooLong(usize),
    #[error("request line not complete within {0:?}")]
    RequestTimeout(Duration),
    #[error("connection closed in the middle of a request")]
    Truncated,
    #[error("{name} shrank while being sent: {sent} of {len} bytes")]
    Shrank { name: Name, sent: u64, len: u64 },
    #[error("the folder changed while it was listed: {sent} of {announced} entries found")]
    ListChanged { announced: u64, sent: u64 },
    #[error("TLS handshake failed: {}", shown_io(.0))]
    Handshake(io::Error),
    #[error("plain text refused from a peer that is not on this machine")]
    PlainRefused,
    #[error("cut off after too many failed auth attempts")]
    CutOff,
}

/// An I/O error as a log line says it: a peer gone part-way over TLS (rustls's words carry a link
/// to its manual) said plainly.
fn shown_io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => "the peer left without ending TLS (no close_notify)".to_string(),
        _ => e.to_string(),
    }
}

impl ConnError {
    /// Errors that are the peer's doing (gone, idle, stalled) rather than the server's.
    pub(crate) fn is_peer(&self) -> bool {
        use io::ErrorKind::*;
        match self {
            ConnError::Io(e) => {
                matches!(
                    e.kind(),
                    BrokenPipe | ConnectionReset | ConnectionAborted | UnexpectedEof | WouldBlock | TimedOut
                )
            }
            ConnError::LineTooLong(_)
            | ConnError::RequestTimeout(_)
            | ConnError::Truncated
            | ConnError::Handshake(_)
            | ConnError::PlainRefused
            | ConnError::CutOff => true,
            ConnError::Shrank { .. } | ConnError::ListChanged { .. } => false,
        }
    }
}

impl From<ProtocolError> for ConnError {
    fn from(e: ProtocolError) -> ConnError {
        match e {
            ProtocolError::LineTooLong(n) => ConnError::LineTooLong(n),
            ProtocolError::Io(e) => ConnError::Io(e),
            _ => ConnError::Truncated,
        }
    }
}

/// One client's connection.
pub(crate) struct Connection<'a> {
    shared: &'a Shared,
    peer: SocketAddr,
    /// The socket under the transport, to set its receive timeout while the stream is borrowed.
    tcp: Arc<TcpStream>,
    /// The transport, buffered both ways.
    stream: BufStream,
    /// Requests answered on this connection, for its closing log line.
    pub(crate) requests: u64,
    /// File bytes sent on this connection.
    pub(crate) bytes: u64,
    /// The protocol version and features agreed by `hello` (the baseline without one).
    agreed: Agreed,
    /// Request lines read, `hello` included: only the first may be a `hello`.
    lines: u64,
    /// The token this connection authenticated with, if any (checked again on each request).
    token: Option<super::auth::TokenEntry>,
    /// Whether that token has the write right.
    may_write: bool,
    /// The interrupted upload a `partial` request found (its name, size and digest), held for
    /// the `put` that follows.
    partial: Option<(Name, u64, (i64, u32), crate::store::Partial)>,
    /// Upload answers written since the buffer was last flushed on their account.
    unflushed_answers: usize,
    /// Why only `health` and `quit` are answered here, if so (anything else is refused and ends
    /// the connection): plain text from another machine, or a proxy speaking for itself.
    health_only: Option<&'static str>,
    /// The address was cut off for failed tokens: its first request is answered so, and the
    /// connection ends.
    cut_off: bool,
    /// Nothing but `health` (and `hello`, `quit`) was asked: a load balancer's check, whose
    /// closing is logged at debug level, not once a second per replica at info.
    pub(crate) only_health: bool,
}

/// Who a connection speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Speaker {
    /// A client: the peer, or the one a trusted proxy's header named.
    Client,
    /// A trusted proxy for itself (a `LOCAL` or `UNKNOWN` header: its health check): it is
    /// answered `health` alone, since no client's rights are its.
    ProxyItself,
}

/// What a request is told that needs a token first.
const NEEDS_TOKEN: &str = "this server needs a token (ftclient: FT_TOKEN or --token-file; on the wire: auth TOKEN)";

/// Upload answers held back at most before they are sent while requests keep coming.
const FLUSH_ANSWERS: usize = 32;

/// A `put` request's fields but its name.
struct Put {
    size: u64,
    /// `None`: it follows the bytes ([`protocol::PutTrailer`]).
    digest: Option<Digest>,
    mtime: (i64, u32),
    from: u64,
    replace: bool,
    perm: u32,
}

/// Reads the line after a `put -`'s bytes: the file's digest, or the sender giving up on it.
fn read_put_trailer(stream: &mut BufStream) -> Result<Digest, PutError> {
    let mut line = Vec::with_capacity(64);
    match protocol::read_line(stream, &mut line, 128) {
        Ok(true) => {}
        Ok(false) => return Err(PutError::Short { expected: 1, received: 0 }),
        Err(ProtocolError::Io(e)) => return Err(PutError::Body(e)),
        Err(_) => return Err(PutError::BadTrailer),
    }
    match protocol::PutTrailer::parse(&line) {
        Some(protocol::PutTrailer::Digest(digest)) => Ok(digest),
        Some(protocol::PutTrailer::Abort) => Err(PutError::Aborted),
        None => Err(PutError::BadTrailer),
    }
}

/// The connection's end when the line after a `put -`'s bytes cannot be read.
fn put_trailer_error(e: PutError) -> ConnError {
    match e {
        PutError::Body(e) => ConnError::Io(e),
        PutError::Short { .. } => ConnError::Truncated,
        _ => ConnError::Io(io::Error::new(io::ErrorKind::InvalidData, "the line after a put's bytes is not a digest")),
    }
}

/// Reads and drops the line after the bytes of a `put -` that was not stored: a digest or an
/// abort leaves the connection in step; anything else ends it.
fn skip_put_trailer(stream: &mut BufStream) -> Result<(), ConnError> {
    match read_put_trailer(stream) {
        Ok(_) | Err(PutError::Aborted) => Ok(()),
        Err(e) => Err(put_trailer_error(e)),
    }
}

/// A body of `left` bytes read from a stream shared with the reader of the line after it.
struct Limited<'c, 's> {
    stream: &'c std::cell::RefCell<&'s mut BufStream>,
    left: u64,
}

impl Read for Limited<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let most = usize::try_from(self.left).unwrap_or(usize::MAX).min(buf.len());
        let n = self.stream.borrow_mut().read(&mut buf[..most])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// A refused upload's body up to this size is read and dropped, and the connection goes on;
/// past it the connection ends rather than take bytes it will not keep.
const SKIP_REFUSED_UP_TO: u64 = 1 << 20;

/// What an upload is told when its name is taken (the sender knows the name).
fn exists_message(asked_to_replace: bool) -> &'static str {
    if asked_to_replace {
        "it exists and differs, and this server does not replace files (ftserver --allow-overwrite)"
    } else {
        "it exists (ftclient put --force replaces it, where the server allows)"
    }
}

impl<'a> Connection<'a> {
    /// Waits (up to the idle timeout) for the peer's first byte, then sets the connection up; `None`
    /// if the peer closed without sending anything. The read and write buffers (72 KiB) are only
    /// allocated once there is something to read, so an idle connection costs little more than
    /// its thread's stack: 10,000 of them fit in about 100 MiB.
    ///
    /// The first byte also says what the peer speaks: 0x16 begins a TLS handshake (which must
    /// complete within the request timeout); anything else is plain text, served only to a peer
    /// on this machine unless the server allows plain text from anywhere.
    pub(crate) fn open(
        shared: &'a Shared,
        transport: Transport,
        peer: SocketAddr,
        speaker: Speaker,
    ) -> Result<Option<Self>, ConnError> {
        let idle = shared.config.idle_timeout;
        let tcp = transport.tcp_handle();
        tcp.set_read_timeout(Some(idle))?;
        let mut first = [0u8; 1];
        if tcp.peek(&mut first)? == 0 {
            return Ok(None);
        }
        tcp.set_nodelay(true)?;
        tcp.set_write_timeout(Some(shared.config.send_timeout))?;
        let mut health_only = match speaker {
            Speaker::ProxyItself => Some("a proxy's own connection (PROXY LOCAL or UNKNOWN) is answered health only"),
            Speaker::Client => None,
        };
        let transport = if first[0] == TLS_HANDSHAKE {
            let session = rustls::ServerConnection::new(shared.tls.config.clone()).map_err(io::Error::other)?;
            let mut tls = Transport::tls_server(tcp.clone(), session);
            tls.handshake(Instant::now() + shared.config.request_timeout).map_err(ConnError::Handshake)?;
            tls
        } else {
            // Plain text from another machine is refused, but for `health` (a load balancer's
            // check, which carries nothing): see `serve_with`.
            if !(peer.ip().to_canonical().is_loopback() || shared.config.allow_plaintext) {
                health_only.get_or_insert(
                    "plain text is served only to this machine: connect with TLS (ftclient does, to any other host)",
                );
            }
            transport
        };
        let mut transport = transport;
        transport.set_read_timeout(Some(idle));
        let stream = BufStream::new(transport, 8 << 10, 64 << 10);
        Ok(Some(Connection {
            shared,
            peer,
            tcp,
            stream,
            requests: 0,
            bytes: 0,
            agreed: Agreed::baseline(),
            lines: 0,
            token: None,
            may_write: false,
            partial: None,
            unflushed_answers: 0,
            health_only,
            only_health: true,
            cut_off: shared.auth.is_some()
                && shared.auth_failures.is_cut_off(super::shared::addr_key(peer.ip()), Instant::now()),
        }))
    }

    /// Answers requests until the peer quits or closes, or a limit is hit.
    pub(crate) fn serve(&mut self) -> Result<(), ConnError> {
        let shared = self.shared;
        std::thread::scope(|scope| self.serve_with(&mut Storers::new(scope, shared)))
    }

    /// [`Connection::serve`], small uploads stored by `storers`.
    fn serve_with(&mut self, storers: &mut Storers<'_, '_>) -> Result<(), ConnError> {
        let config = &self.shared.config;
        let mut line = Vec::with_capacity(256);
        loop {
            if self.stream.buffer().is_empty() {
                // Nothing more to read for now: every upload handed over is answered first.
                self.answer_stored(storers, true)?;
                self.stream.flush()?;
                self.unflushed_answers = 0;
                let transport = self.stream.get_mut();
                transport.set_read_timeout(Some(config.idle_timeout));
                transport.set_progress(None);
                // The request begins with its first byte, even one that is only part of a TLS
                // record: from then on the request timeout runs.
                transport.watch_first_byte(Some(config.request_timeout));
                let waited = self.stream.fill_buf().map(|b| b.is_empty());
                if let Err(e) = &waited
                    && matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
                    && self.stream.get_ref().first_byte_at().is_some()
                {
                    return Err(self.last_word(ErrorCode::Timeout, ConnError::RequestTimeout(config.request_timeout)));
                }
                if waited? {
                    break;
                }
            }
            // A request has begun: all of it must arrive by the deadline, however it trickles
            // (every read of the socket, inside TLS records too, waits at most until then).
            let began = self.stream.get_ref().first_byte_at().unwrap_or_else(Instant::now);
            let transport = self.stream.get_mut();
            transport.watch_first_byte(None);
            transport.set_deadline(Some(began + config.request_timeout));
            let read = protocol::read_line(&mut self.stream, &mut line, config.max_line);
            // A body that follows must keep up, one read at a time (see `put`).
            let transport = self.stream.get_mut();
            transport.set_deadline(None);
            transport.set_read_timeout(Some(config.request_timeout));
            transport.set_progress(Some(config.request_timeout));
            match read {
                Ok(true) => {}
                Ok(false) => break,
                Err(ProtocolError::LineTooLong(cap)) => {
                    // Out of step with the peer: say why, then close without reading more.
                    return Err(self.last_word(ErrorCode::TooLong, ConnError::LineTooLong(cap)));
                }
                Err(ProtocolError::Io(e))
                    if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
                {
                    return Err(self.last_word(ErrorCode::Timeout, ConnError::RequestTimeout(config.request_timeout)));
                }
                Err(e) => return Err(e.into()),
            }
            let (started, bytes_before) = (Instant::now(), self.bytes);
            let request = Request::parse(&line, self.agreed.form());
            // `hello` is the connection's set-up, not a request for anything: not counted.
            self.lines += 1;
            let first = self.lines == 1;
            if !matches!(request, Ok(Request::Hello(_))) || !first {
                self.shared.requests.fetch_add(1, Ordering::Relaxed);
                self.requests += 1;
            }
            match &request {
                Ok(request) => debug!(peer = %self.peer, request = %request.for_log(), "request"),
                Err(e) => debug!(peer = %self.peer, "bad request: {}", protocol::escape(&e.to_string())),
            }
            if !matches!(request, Ok(Request::Health | Request::Quit | Request::Hello(_))) {
                self.only_health = false;
            }
            // Replies go out in request order: uploads handed over are answered before anything
            // but another upload.
            if !matches!(request, Ok(Request::Put { .. })) {
                self.answer_stored(storers, true)?;
            }
            if let Some(why) = self.health_only
                && !matches!(request, Ok(Request::Health | Request::Quit))
            {
                self.err(ErrorCode::Denied, &why)?;
                self.stream.flush()?;
                return Err(ConnError::PlainRefused);
            }
            if self.cut_off && !matches!(request, Ok(Request::Health | Request::Quit)) {
                self.err(ErrorCode::Unauthorized, &super::auth::Refused::CutOff)?;
                self.stream.flush()?;
                return Err(ConnError::CutOff);
            }
            // A token is checked again on every request: one revoked (or whose rights changed)
            // since it was presented stops working at once.
            if self.token.is_some() && !matches!(request, Ok(Request::Quit | Request::Health)) {
                self.recheck_token();
            }
            // With an auth file, only setting up, leaving and the health check are answered before
            // a valid token (a put is refused with its body skipped, as any refused upload's).
            let open = matches!(
                request,
                Ok(Request::Hello(_) | Request::Auth(_) | Request::Health | Request::Quit | Request::Put { .. })
                    | Err(_)
            );
            if self.shared.auth.is_some() && self.token.is_none() && !open {
                self.err(ErrorCode::Unauthorized, &NEEDS_TOKEN)?;
                continue;
            }
            match request {
                Ok(Request::Quit) => {
                    protocol::write_bye(&mut self.stream)?;
                    break;
                }
                Ok(Request::Hello(hello)) if first => {
                    let agreed = hello.agree(protocol::PROTOCOL_VERSION, protocol::SERVER_FEATURES);
                    debug!(peer = %self.peer, version = agreed.version, features = ?agreed.features, "hello");
                    agreed.write(&mut self.stream)?;
                    self.agreed = agreed;
                }
                Ok(Request::Hello(_)) => self.err(ErrorCode::BadRequest, &"hello must be the first request")?,
                Ok(Request::Get(name)) => self.get(&name, None)?,
                Ok(Request::Resume { offset, prefix, name }) => self.get(&name, Some((offset, prefix)))?,
                Ok(Request::List(folder)) => self.list(folder.as_ref())?,
                Ok(Request::Walk { follow, folder }) => {
                    list::write_walk(&self.shared.root, folder.as_ref(), follow, &mut self.stream)?
                }
                Ok(Request::Stat(name)) => self.stat(&name)?,
                Ok(Request::Mkdir { perm, mtime, name }) => self.mkdir(perm, mtime, &name)?,
                Ok(Request::Stats) => self.stats()?,
                Ok(Request::Health) => {
                    if self.shared.shutdown.get().is_some_and(|s| s.is_draining()) {
                        // And closed, so a check that waits for more of a reply it does not
                        // expect (HAProxy's tcp-check expect) fails now, not at its timeout.
                        self.err(ErrorCode::Draining, &"shutting down: no new clients")?;
                        break;
                    } else {
                        protocol::write_ok_fields(&mut self.stream, "ready")?;
                    }
                }
                Ok(Request::Sum(name)) => match get::sum(self.shared, &name) {
                    Ok((size, digest)) => {
                        protocol::write_ok_fields(&mut self.stream, &format!("{size} xxh3={digest}"))?
                    }
                    Err(refusal) => self.err(refusal.code, &refusal.message)?,
                },
                Ok(Request::Auth(token)) => {
                    if !self.auth(&token)? {
                        return Err(ConnError::CutOff);
                    }
                }
                Ok(Request::Put { size, digest, mtime, from, replace, perm, name }) => {
                    if !self.put(Put { size, digest, mtime, from, replace, perm }, name, storers)? {
                        return self.linger();
                    }
                }
                Ok(Request::Partial { size, mtime, replace, name }) => self.partial(size, mtime, replace, &name)?,
                Err(e) if e.ends_connection() => {
                    protocol::write_err(&mut self.stream, e.code(), &e)?;
                    return self.linger();
                }
                Err(e) => protocol::write_err(&mut self.stream, e.code(), &e)?,
            }
            let micros = started.elapsed().as_micros() as u64;
            debug!(peer = %self.peer, bytes = self.bytes - bytes_before, micros, "answered");
        }
        self.stream.flush()?;
        self.stream.get_mut().close_notify()?;
        Ok(())
    }

    /// Sends a final `ERR` (best effort) and returns `why` for the caller to end with.
    fn last_word(&mut self, code: ErrorCode, why: ConnError) -> ConnError {
        let _ = protocol::write_err(&mut self.stream, code, &why).and_then(|()| self.stream.flush());
        why
    }

    /// Answers `auth TOKEN`: `OK rights=...` for a valid token (or for any, on a server without
    /// an auth file), else `ERR unauthorized`, delayed once the address has failed a few times.
    /// Returns false once the address is cut off: the connection is to close.
    fn auth(&mut self, token: &protocol::Secret) -> Result<bool, ConnError> {
        let Some(file) = &self.shared.auth else {
            protocol::write_ok_fields(&mut self.stream, "rights=read")?;
            return Ok(true);
        };
        let key = super::shared::addr_key(self.peer.ip());
        match file.check(token) {
            Ok(entry) => {
                info!(peer = %self.peer, token = %entry.name, "authenticated");
                self.shared.auth_failures.succeeded(key);
                protocol::write_ok_fields(&mut self.stream, &format!("rights={}", entry.rights))?;
                self.may_write = entry.rights.write;
                self.token = Some(entry);
                Ok(true)
            }
            Err(why) => {
                self.shared.auth_failed.fetch_add(1, Ordering::Relaxed);
                let (delay, cut) = self.shared.auth_failures.failed(key, Instant::now(), self.shared.config.auth_delay);
                warn!(peer = %self.peer, "auth failed: {why}");
                self.stream.flush()?;
                std::thread::sleep(delay);
                if cut {
                    self.err(ErrorCode::Unauthorized, &super::auth::Refused::CutOff)?;
                    self.stream.flush()?;
                    return Ok(false);
                }
                self.err(ErrorCode::Unauthorized, &why)?;
                Ok(true)
            }
        }
    }

    /// Whose uploads these are, for the staging folder's share per sender: the token's name, or
    /// without tokens the peer's address.
    fn owner(&self) -> String {
        match &self.token {
            Some(token) => format!("token {}", token.name),
            None => format!("address {}", super::shared::addr_key(self.peer.ip())),
        }
    }

    /// Checks that the token this connection presented is still in the auth file with the same
    /// secret, and takes its rights as they are now; else the connection is as if it had
    /// presented none (and the revocation is logged once).
    fn recheck_token(&mut self) {
        let (Some(file), Some(token)) = (&self.shared.auth, &self.token) else { return };
        match file.still_valid(token) {
            Some(rights) => self.may_write = rights.write,
            None => {
                info!(peer = %self.peer, token = %token.name, "token revoked: the connection needs a token again");
                self.token = None;
                self.may_write = false;
            }
        }
    }

    /// Closes after a refusal whose request's body is still arriving: says so, stops sending, and
    /// reads (and drops) what comes for a moment, so the peer reads the refusal rather than a reset
    /// (closing with unread input makes the kernel send RST, which can destroy the reply in flight).
    /// At most [`LINGER_BYTES`] within [`LINGER`].
    fn linger(&mut self) -> Result<(), ConnError> {
        self.stream.flush()?;
        self.stream.get_mut().close_notify()?;
        self.tcp.shutdown(std::net::Shutdown::Write)?;
        let until = Instant::now() + LINGER;
        let mut dropped = 0;
        let mut buf = [0u8; 16 << 10];
        while dropped < LINGER_BYTES {
            if until <= Instant::now() {
                break;
            }
            self.stream.get_mut().set_deadline(Some(until));
            match io::Read::read(&mut self.stream, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => dropped += n,
            }
        }
        Ok(())
    }

    /// Why an upload of `size` bytes as `name` may not happen here, found before any of its bytes
    /// is read: uploads off, no write right, outside the upload folder, too big, no room, or
    /// (when it may not replace) the name taken.
    fn upload_refusal(&self, size: u64, mtime: (i64, u32), name: &Name, replace: bool) -> Option<(ErrorCode, String)> {
        let config = &self.shared.config;
        let loopback = self.peer.ip().to_canonical().is_loopback();
        if self.shared.auth.is_some() && self.token.is_none() {
            return Some((ErrorCode::Unauthorized, NEEDS_TOKEN.into()));
        }
        if !config.allow_upload {
            return Some((ErrorCode::Denied, "this server takes no uploads (ftserver --allow-upload)".into()));
        }
        if self.shared.auth.is_some() && !self.may_write {
            return Some((
                ErrorCode::Unauthorized,
                "this token may not upload (ftserver token add NAME --write)".into(),
            ));
        }
        if self.shared.auth.is_none() && !loopback {
            return Some((
                ErrorCode::Unauthorized,
                "without an auth file, uploads are taken from this machine only".into(),
            ));
        }
        if let Some(folder) = &config.upload_folder
            && !name.is_beneath(folder)
        {
            return Some((ErrorCode::Denied, format!("uploads go beneath {folder}/ on this server")));
        }
        if crate::store::is_reserved(name) {
            return Some((ErrorCode::Denied, format!("{} is where uploads are staged", crate::store::STAGING)));
        }
        if size > config.max_upload {
            return Some((
                ErrorCode::TooBig,
                format!("{size} bytes is more than this server takes ({})", config.max_upload),
            ));
        }
        // A taken name is found before a big body; a small one is read, and the name's
        // `linkat` tells (one lookup fewer per small file).
        if !(replace && config.allow_overwrite) && size > SKIP_REFUSED_UP_TO && self.shared.root.holds(name) {
            return Some((ErrorCode::Exists, exists_message(replace).to_string()));
        }
        if let Err(full) = self.shared.root.staging_room(name, size, mtime, &self.owner()) {
            return Some((ErrorCode::NoSpace, full.to_string()));
        }
        match self.shared.root.free_bytes() {
            Ok(free) if free < size => Some((ErrorCode::NoSpace, format!("{size} bytes to store, {free} free"))),
            Ok(_) => None,
            Err(e) => Some((ErrorCode::Internal, format!("cannot read the free space: {e}"))),
        }
    }

    /// Answers `partial`: how much of an interrupted upload of this very file (name, size and
    /// modification time) is held, and those bytes' digest; it stays held for this connection's
    /// next `put`.
    fn partial(&mut self, size: u64, mtime: (i64, u32), replace: bool, name: &Name) -> Result<(), ConnError> {
        self.partial = None;
        if let Some((code, why)) = self.upload_refusal(size, mtime, name, replace) {
            return self.err(code, &why);
        }
        match self.shared.root.partial(name, size, mtime) {
            Ok(held) => {
                let (len, prefix) = held.as_ref().map_or((0, Digest::of(b"")), |p| (p.held(), p.digest()));
                if len > 0 {
                    info!(peer = %self.peer, %name, held = len, size, "upload to resume");
                }
                self.partial = held.map(|p| (name.clone(), size, mtime, p));
                Ok(protocol::write_ok_fields(&mut self.stream, &format!("{len} xxh3={prefix}"))?)
            }
            Err(e @ (PutError::NotFolder(_) | PutError::Reserved)) => self.err(ErrorCode::Denied, &e),
            Err(e) => self.err(ErrorCode::Internal, &e),
        }
    }

    /// Answers `put`: refused before its body is read ([`Connection::upload_refusal`]); the body
    /// is then read and dropped if it is small (the connection goes on), else the connection ends,
    /// since a body cannot be told from requests. Otherwise the body is read (each read within
    /// the request timeout) and stored by [`crate::store::Root::put`], and any refusal after that
    /// leaves the connection usable. Returns false when the connection is to close.
    fn put(&mut self, put: Put, name: Name, storers: &mut Storers<'_, '_>) -> Result<bool, ConnError> {
        let Put { size, digest, mtime, from, replace, perm } = put;
        let partial = match self.partial.take() {
            Some((n, s, m, p)) if (&n, s, m) == (&name, size, mtime) => Some(p),
            _ => None,
        };
        let body_len = size - from;
        if let Some((code, why)) = self.upload_refusal(size, mtime, &name, replace) {
            self.answer_stored(storers, true)?;
            info!(peer = %self.peer, %name, size, "upload refused: {why}");
            self.err(code, &why)?;
            if body_len > SKIP_REFUSED_UP_TO {
                return Ok(false);
            }
            let skipped = io::copy(&mut io::Read::take(&mut self.stream, body_len), &mut io::sink())?;
            if skipped != body_len {
                return Err(ConnError::Truncated);
            }
            if digest.is_none() {
                skip_put_trailer(&mut self.stream)?;
            }
            return Ok(true);
        }
        let asked_to_replace = replace;
        let replace = replace && self.shared.config.allow_overwrite;
        if size <= SMALL_UPLOAD && from == 0 && partial.is_none() {
            // Whole in memory, then stored on a store thread while the next request is read.
            if storers.holds(&name) {
                self.answer_stored(storers, true)?;
            }
            let mut bytes = Vec::with_capacity(size as usize);
            io::Read::take(&mut self.stream, size).read_to_end(&mut bytes)?;
            if bytes.len() as u64 != size {
                return Err(ConnError::Truncated);
            }
            let digest = match digest {
                Some(digest) => digest,
                None => match read_put_trailer(&mut self.stream) {
                    Ok(digest) => digest,
                    Err(e) => {
                        self.answer_stored(storers, true)?;
                        self.put_answer(&name, size, asked_to_replace, Err(e))?;
                        return Ok(true);
                    }
                },
            };
            let job = Job { name, digest, mtime, perm, replace, asked_to_replace, bytes };
            match storers.submit(job) {
                Ok(()) => {}
                Err(job) => {
                    self.answer_stored(storers, true)?;
                    let stored = storers::store(self.shared, &job);
                    self.put_answer(&job.name, size, asked_to_replace, stored)?;
                }
            }
            // Answers already known go out (a batch at a time, so a client that keeps sending
            // hears of the first while it does); a full hand waits for the oldest.
            self.answer_stored(storers, false)?;
            while storers.full() {
                self.answer_one(storers)?;
            }
            if self.unflushed_answers >= FLUSH_ANSWERS {
                self.stream.flush()?;
                self.unflushed_answers = 0;
            }
            return Ok(true);
        }
        self.answer_stored(storers, true)?;
        let owner = self.owner();
        // The body and the digest after it (if it comes after) are read from the one stream, in
        // turn: shared through a cell, since both readers are handed to `Root::put` at once.
        let stream = std::cell::RefCell::new(&mut self.stream);
        let trailer_read = std::cell::Cell::new(digest.is_some());
        let mut body = Limited { stream: &stream, left: body_len };
        let mut after = || {
            trailer_read.set(true);
            read_put_trailer(&mut stream.borrow_mut())
        };
        let expected = match digest {
            Some(digest) => Expected::Known(digest),
            None => Expected::After(&mut after),
        };
        let up = crate::store::Upload { name: &name, len: size, mtime, perm, replace, owner: &owner };
        let stored = self.shared.root.put(&up, expected, &mut body, from, partial);
        // What a refusal left unread is skipped, to stay in step with the peer.
        let mut skipped = io::copy(&mut body, &mut io::sink()).map(drop).map_err(ConnError::from);
        if skipped.is_ok() && !trailer_read.get() {
            skipped = skip_put_trailer(&mut stream.borrow_mut());
        }
        if stored.is_ok() {
            self.shared.cache.forget(&name);
            self.shared.digests.forget(&name);
        }
        let answered = self.put_answer(&name, size, asked_to_replace, stored);
        skipped?;
        answered?;
        Ok(true)
    }

    /// Writes the answers of the uploads handed to `storers` that are known, in order; with
    /// `wait`, of all of them, waiting for each.
    fn answer_stored(&mut self, storers: &mut Storers<'_, '_>, wait: bool) -> Result<(), ConnError> {
        while !storers.is_empty() {
            match storers.next_answer(wait) {
                Some((waiting, stored)) => {
                    self.put_answer(&waiting.name, waiting.size, waiting.asked_to_replace, stored)?
                }
                None => break,
            }
        }
        Ok(())
    }

    /// Waits for the oldest upload handed to `storers` and writes its answer.
    fn answer_one(&mut self, storers: &mut Storers<'_, '_>) -> Result<(), ConnError> {
        match storers.next_answer(true) {
            Some((waiting, stored)) => self.put_answer(&waiting.name, waiting.size, waiting.asked_to_replace, stored),
            None => Ok(()),
        }
    }

    /// Writes the answer to an upload of `name` (`size` bytes) that was read and stored, or
    /// refused: the connection goes on, unless its body was cut short.
    fn put_answer(
        &mut self,
        name: &Name,
        size: u64,
        asked_to_replace: bool,
        stored: Result<crate::store::Stored, PutError>,
    ) -> Result<(), ConnError> {
        let (code, why) = match stored {
            Ok(stored) => {
                self.shared.uploads.fetch_add(1, Ordering::Relaxed);
                self.shared.bytes_received.fetch_add(size - stored.from, Ordering::Relaxed);
                let token = self.token.as_ref().map_or("-", |t| t.name.as_str());
                info!(peer = %self.peer, token = %token, %name, size, from = stored.from, "uploaded");
                self.unflushed_answers += 1;
                return Ok(protocol::write_ok_fields(&mut self.stream, &format!("{size} xxh3={}", stored.digest))?);
            }
            Err(PutError::Short { .. }) => return Err(ConnError::Truncated),
            Err(PutError::Body(e)) => return Err(e.into()),
            Err(e @ PutError::BadTrailer) => return Err(put_trailer_error(e)),
            Err(e @ PutError::Aborted) => (ErrorCode::Changed, e.to_string()),
            Err(PutError::Exists) => (ErrorCode::Exists, exists_message(asked_to_replace).to_string()),
            Err(e @ PutError::Mismatch { .. }) => (ErrorCode::BadRequest, e.to_string()),
            Err(e @ (PutError::NotFolder(_) | PutError::Reserved)) => (ErrorCode::Denied, e.to_string()),
            Err(e @ PutError::NoPartial(_)) => (ErrorCode::Changed, e.to_string()),
            Err(PutError::Io(e)) if e.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()) => {
                (ErrorCode::NoSpace, "the disk filled up".to_string())
            }
            Err(e @ PutError::StagingFull(_)) => (ErrorCode::NoSpace, e.to_string()),
            Err(PutError::Io(e)) if matches!(e.raw_os_error(), Some(n) if n == rustix::io::Errno::ISDIR.raw_os_error() || n == rustix::io::Errno::NOTEMPTY.raw_os_error()) => {
                (ErrorCode::Denied, "a folder holds that name on the server".to_string())
            }
            Err(e) => (ErrorCode::Internal, e.to_string()),
        };
        info!(peer = %self.peer, %name, size, "upload refused: {why}");
        self.err(code, &why)
    }

    fn err(&mut self, code: ErrorCode, message: &dyn std::fmt::Display) -> Result<(), ConnError> {
        Ok(protocol::write_err(&mut self.stream, code, message)?)
    }

    /// Serves `get` (no `resume`) or `resume` (the offset and the digest of the client's prefix):
    /// the answer comes from [`get::answer`]; this writes it through the transport.
    fn get(&mut self, name: &Name, resume: Option<(u64, Digest)>) -> Result<(), ConnError> {
        let trailer = self.agreed.has(protocol::FEATURE_TRAILER);
        let mut answer = match get::answer(self.shared, name, resume, trailer, &self.peer) {
            Ok(answer) => answer,
            Err(refusal) => return self.err(refusal.code, &refusal.message),
        };
        answer.header.write(&mut self.stream)?;
        let len = answer.header.len;
        // Body bytes that went out, counted as they go: a transfer cut part-way still counts
        // what it sent.
        let went = std::cell::Cell::new(0u64);
        let count = |n: usize| went.set(went.get() + n as u64);
        let sent = match &mut answer.body {
            Source::Hashing(hashing) => {
                self.flush_header(len)?;
                match self.stream.get_ref().sendfile_fd() {
                    Some(socket) => {
                        hashing.send(|file, at, most, _| send_file_once(socket, file, at, most).inspect(|&n| count(n)))
                    }
                    None => {
                        let out = self.stream.get_mut();
                        hashing.send(|file, at, most, buf| {
                            let n = file.read_at(&mut buf[..most], at)?;
                            out.write_all(&buf[..n])?;
                            count(n);
                            Ok(n)
                        })
                    }
                }
            }
            Source::Memory { bytes, from } => match bytes.bytes() {
                // One write with the header (both fit the buffer, or go out together).
                Bytes::Heap(heap) => self.stream.write_all(&heap[*from as usize..]).map(|()| {
                    count(len as usize);
                    len
                }),
                Bytes::Sealed { file, .. } => self.send_range(file, *from, len, &went),
            },
            Source::File { file, from, len } => self.send_range(file, *from, *len, &went),
        };
        let counted = went.get();
        self.shared.bytes_sent.fetch_add(counted, Ordering::Relaxed);
        self.bytes += counted;
        match sent? {
            sent if sent == len => match answer.body {
                Source::Hashing(hashing) => match hashing.finish() {
                    Ok(digest) => Ok(protocol::write_trailer(&mut self.stream, digest)?),
                    Err(refusal) => self.err(refusal.code, &refusal.message),
                },
                _ => {
                    answer.admit();
                    Ok(())
                }
            },
            // The peer was promised `len` bytes: the connection cannot go on.
            sent => Err(ConnError::Shrank { name: name.clone(), sent, len }),
        }
    }

    /// Sends a reply's header ahead of a body of `len` bytes that goes out by `sendfile` (or,
    /// over TLS, through the transport): held back to leave with the body's first bytes, unless
    /// there is no body.
    fn flush_header(&mut self, len: u64) -> io::Result<()> {
        if len > 0 { self.stream.flush_before_file() } else { self.stream.flush() }
    }

    /// Sends the buffered header, then `len` bytes of `file` from `from`: by `sendfile` where the
    /// transport can take it, else through it. Returns how many bytes of the file went (fewer if
    /// it ended early).
    fn send_range(&mut self, file: &File, from: u64, len: u64, went: &std::cell::Cell<u64>) -> io::Result<u64> {
        self.flush_header(len)?;
        match self.stream.get_ref().sendfile_fd() {
            Some(socket) => send_file(socket, file, from, len, went),
            None => copy_file(file, from, len, self.stream.get_mut(), went),
        }
    }

    /// Answers `stat NAME`: `OK ` and the entry as `walk` writes it, or `ERR`.
    fn stat(&mut self, name: &Name) -> Result<(), ConnError> {
        match self.shared.root.lookup(name) {
            Ok(entry) => {
                self.stream.write_all(b"OK ")?;
                Ok(list::meta_entry(entry).write(&mut self.stream, protocol::Form::Escaped)?)
            }
            Err(e) => self.err(get::open_error_code(&e), &e),
        }
    }

    /// Answers `mkdir PERM MTIME MTIME_NS NAME`: refused as an upload of no bytes would be, else
    /// the folder is made (or found) and given the sender's mode and time.
    fn mkdir(&mut self, perm: u32, mtime: (i64, u32), name: &Name) -> Result<(), ConnError> {
        if let Some((code, why)) = self.upload_refusal(0, mtime, name, true) {
            return self.err(code, &why);
        }
        match self.shared.root.make_folder(name, perm, mtime) {
            Ok(()) => Ok(protocol::write_ok(&mut self.stream)?),
            Err(e @ (PutError::NotFolder(_) | PutError::Reserved)) => self.err(ErrorCode::Denied, &e),
            Err(PutError::Io(e)) if e.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()) => {
                self.err(ErrorCode::NoSpace, &"the disk is full")
            }
            Err(e) => self.err(ErrorCode::Internal, &e),
        }
    }

    fn list(&mut self, folder: Option<&Name>) -> Result<(), ConnError> {
        let form = self.agreed.form();
        let format = if self.agreed.has(protocol::FEATURE_LIST_META) {
            list::Format::Meta(form)
        } else {
            list::Format::Plain(form)
        };
        if self.agreed.has(protocol::FEATURE_LIST_END) {
            list::write_ended(&self.shared.root, folder, format, &mut self.stream)
        } else {
            list::write_counted(&self.shared.root, folder, format, &mut self.stream)
        }
    }

    fn stats(&mut self) -> Result<(), ConnError> {
        let stats = self.shared.stats();
        protocol::write_ok_count(&mut self.stream, stats.len() as u64)?;
        for (key, value) in stats {
            protocol::write_stat(&mut self.stream, key, value)?;
        }
        Ok(())
    }
}

/// Sends `len` bytes of `file` from `offset` with `sendfile`: the kernel moves them from the page
/// cache to the socket with no copy through this process. Returns how many were sent, fewer if
/// the file ended early. The socket's send timeout bounds each call, as it does a `write`.
fn send_file(
    socket: BorrowedFd<'_>,
    file: &File,
    offset: u64,
    len: u64,
    went: &std::cell::Cell<u64>,
) -> io::Result<u64> {
    let mut at = offset;
    let mut sent = 0u64;
    while sent < len {
        let chunk = usize::try_from(len - sent).unwrap_or(usize::MAX).min(1 << 30);
        match rustix::fs::sendfile(socket, file, Some(&mut at), chunk) {
            Ok(0) => break,
            Ok(n) => {
                sent += n as u64;
                went.set(went.get() + n as u64);
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(sent)
}

/// One `sendfile` of up to `most` bytes of `file` from `offset`: how many went (0 at the file's
/// end).
fn send_file_once(socket: BorrowedFd<'_>, file: &File, offset: u64, most: usize) -> io::Result<usize> {
    let mut at = offset;
    Ok(rustix::fs::sendfile(socket, file, Some(&mut at), most)?)
}

/// [`send_file`] for a transport the kernel cannot write file bytes into (one that encrypts):
/// positioned reads into a buffer, written through the transport. Returns how many were sent.
fn copy_file(file: &File, offset: u64, len: u64, out: &mut impl Write, went: &std::cell::Cell<u64>) -> io::Result<u64> {
    let mut buf = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX).clamp(1, 256 << 10)];
    let mut sent = 0u64;
    while sent < len {
        let want = usize::try_from(len - sent).unwrap_or(usize::MAX).min(buf.len());
        let n = match file.read_at(&mut buf[..want], offset + sent) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.write_all(&buf[..n])?;
        sent += n as u64;
        went.set(went.get() + n as u64);
    }
    out.flush()?;
    Ok(sent)
}

/// How long, and how many bytes, [`Connection::linger`] reads before closing.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 4 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copying_a_file_sends_the_range_and_stops_where_it_ends() {
        let data: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&data).unwrap();
        let mut out = Vec::new();
        let went = std::cell::Cell::new(0);
        assert_eq!(copy_file(&file, 5, 600_000, &mut out, &went).unwrap(), 600_000);
        assert_eq!(went.get(), 600_000);
        assert_eq!(out, &data[5..600_005]);
        out.clear();
        assert_eq!(copy_file(&file, 699_990, 100, &mut out, &went).unwrap(), 10, "the file ends early");
        assert_eq!(out, &data[699_990..]);
    }
}
