//! One ft connection: its set-up (TLS or plain text), the command loop and its timeouts, and each
//! verb said in ft's text over a [`Session`]. What a request means is the session's; the reply
//! text is the wire module's; this reads lines and writes the answers through the transport.
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

use std::io::{self, BufRead, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::debug;

use super::error::ConnError;
use super::list;
use super::sink::StreamSink;
use crate::name::Name;
use crate::server::auth::Refused;
use crate::server::get::Part;
use crate::server::refusal::Refusal;
use crate::server::send::Ending;
use crate::server::session::Session;
use crate::server::shared::Shared;
use crate::server::storers::Storers;
use crate::server::upload::Offer;
use crate::transport::{BufStream, Transport};
use crate::wire::{self as protocol, Agreed, ErrorCode, Feature, ProtocolError, Ready, Request};

/// The first byte of a TLS record carrying a handshake: what a TLS client sends first.
const TLS_HANDSHAKE: u8 = 0x16;

/// Upload answers held back at most before they are sent while requests keep coming.
pub(super) const FLUSH_ANSWERS: usize = 32;

/// How long, and how many bytes, [`Connection::linger`] reads before closing.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 4 << 20;

/// One client's connection.
pub(crate) struct Connection<'a> {
    pub(super) session: Session<'a>,
    /// The socket under the transport, to set its receive timeout while the stream is borrowed.
    tcp: Arc<TcpStream>,
    /// The transport, buffered both ways.
    pub(super) stream: BufStream,
    /// Requests answered on this connection, for its closing log line.
    pub(crate) requests: u64,
    /// File bytes sent on this connection.
    pub(crate) bytes: u64,
    /// The protocol version and features agreed by `hello` (the baseline without one).
    pub(super) agreed: Agreed,
    /// Request lines read, `hello` included: only the first may be a `hello`.
    lines: u64,
    /// Upload answers written since the buffer was last flushed on their account.
    pub(super) unflushed_answers: usize,
    /// Why only `health` and `quit` are answered here, if so (anything else is refused and ends
    /// the connection): plain text from another machine, or a proxy speaking for itself.
    health_only: Option<&'static str>,
    /// The address was cut off for failed tokens: its first request is answered so, and the
    /// connection ends.
    cut_off: bool,
    /// Nothing but `health` (and `hello`, `quit`) was asked: a load balancer's check, whose
    /// closing is logged at debug level, not once a second per replica at info.
    pub(crate) only_health: bool,
    /// What compresses this connection's replies, once one has been.
    pub(super) packer: Option<crate::compress::Packer>,
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
        if let Some(congestion) = &shared.config.congestion {
            // Checked at start (see `Server::run`): here it cannot fail but for a module unloaded
            // since, which leaves the system's default.
            let _ = rustix::net::sockopt::set_tcp_congestion(&*tcp, congestion);
        }
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
        let session = Session::new(shared, peer);
        let cut_off = session.is_cut_off();
        Ok(Some(Connection {
            session,
            tcp,
            stream,
            requests: 0,
            bytes: 0,
            agreed: Agreed::baseline(),
            lines: 0,
            unflushed_answers: 0,
            health_only,
            only_health: true,
            cut_off,
            packer: None,
        }))
    }

    pub(super) fn shared(&self) -> &'a Shared {
        self.session.shared
    }

    pub(super) fn peer(&self) -> SocketAddr {
        self.session.peer()
    }

    /// Answers requests until the peer quits or closes, or a limit is hit.
    pub(crate) fn serve(&mut self) -> Result<(), ConnError> {
        let shared = self.shared();
        std::thread::scope(|scope| self.serve_with(&mut Storers::new(scope, shared)))
    }

    /// Waits for the next request line into `line`: false when the peer closed between requests.
    fn next_line(&mut self, line: &mut Vec<u8>, storers: &mut Storers<'_, '_>) -> Result<bool, ConnError> {
        let config = &self.shared().config;
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
                return Ok(false);
            }
        }
        // A request has begun: all of it must arrive by the deadline, however it trickles
        // (every read of the socket, inside TLS records too, waits at most until then).
        let began = self.stream.get_ref().first_byte_at().unwrap_or_else(Instant::now);
        let transport = self.stream.get_mut();
        transport.watch_first_byte(None);
        transport.set_deadline(Some(began + config.request_timeout));
        let read = protocol::read_line(&mut self.stream, line, config.max_line);
        // A body that follows must keep up, one read at a time (see `put`).
        let transport = self.stream.get_mut();
        transport.set_deadline(None);
        transport.set_read_timeout(Some(config.request_timeout));
        transport.set_progress(Some(config.request_timeout));
        match read {
            Ok(read) => Ok(read),
            // Out of step with the peer: say why, then close without reading more.
            Err(ProtocolError::LineTooLong(cap)) => {
                Err(self.last_word(ErrorCode::TooLong, ConnError::LineTooLong(cap)))
            }
            Err(ProtocolError::Io(e)) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                Err(self.last_word(ErrorCode::Timeout, ConnError::RequestTimeout(config.request_timeout)))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// [`Connection::serve`], small uploads stored by `storers`.
    fn serve_with(&mut self, storers: &mut Storers<'_, '_>) -> Result<(), ConnError> {
        let mut line = Vec::with_capacity(256);
        while self.next_line(&mut line, storers)? {
            let (started, bytes_before) = (Instant::now(), self.bytes);
            let request = Request::parse(&line, self.agreed.form());
            // `hello` is the connection's set-up, not a request for anything: not counted.
            self.lines += 1;
            let first = self.lines == 1;
            if !matches!(request, Ok(Request::Hello(_))) || !first {
                self.session.count_request();
                self.requests += 1;
            }
            let peer = self.peer();
            match &request {
                Ok(request) => debug!(%peer, request = %request.for_log(), "request"),
                Err(e) => debug!(%peer, "bad request: {}", protocol::escape(&e.to_string())),
            }
            if !matches!(request, Ok(Request::Health | Request::Quit | Request::Hello(_))) {
                self.only_health = false;
            }
            // Replies go out in request order: uploads handed over are answered before anything
            // but another upload.
            if !matches!(request, Ok(Request::Put { .. })) {
                self.answer_stored(storers, true)?;
            }
            let request = match self.admit(request)? {
                Admitted::Go(request) => request,
                Admitted::Refused => continue,
            };
            match request {
                Ok(Request::Quit) => {
                    protocol::write_bye(&mut self.stream)?;
                    break;
                }
                Ok(Request::Hello(hello)) if first => {
                    let agreed = hello.agree(protocol::PROTOCOL_VERSION, protocol::SERVER_FEATURES);
                    debug!(%peer, version = agreed.version, features = ?agreed.features, "hello");
                    agreed.write(&mut self.stream)?;
                    self.agreed = agreed;
                }
                Ok(Request::Hello(_)) => self.err(ErrorCode::BadRequest, &"hello must be the first request")?,
                Ok(Request::Get(name)) => self.get(&name, Part::Whole)?,
                Ok(Request::Resume { offset, prefix, name }) => self.get(&name, Part::Resume { offset, prefix })?,
                Ok(Request::Delta { shape, name }) => self.delta(shape, &name)?,
                Ok(Request::List(folder)) => self.list(folder.as_ref())?,
                Ok(Request::Walk { follow, folder }) => {
                    list::write_walk(&self.shared().root, folder.as_ref(), follow, &mut self.stream)?
                }
                Ok(Request::Stat(name)) => match self.session.stat(&name) {
                    Ok(entry) => entry.write_reply(&mut self.stream)?,
                    Err(refusal) => self.refuse(&refusal)?,
                },
                Ok(Request::Mkdir { perm, mtime, name }) => match self.session.mkdir(perm, mtime, &name) {
                    Ok(()) => protocol::write_ok(&mut self.stream)?,
                    Err(refusal) => self.refuse(&refusal)?,
                },
                Ok(Request::Stats) => self.stats()?,
                Ok(Request::Health) => match self.session.health() {
                    Ok(()) => Ready.write(&mut self.stream)?,
                    Err(refusal) => {
                        // And closed, so a check that waits for more of a reply it does not
                        // expect (HAProxy's tcp-check expect) fails now, not at its timeout.
                        self.refuse(&refusal)?;
                        break;
                    }
                },
                Ok(Request::Sum(name)) => match self.session.sum(&name) {
                    Ok(sum) => sum.write(&mut self.stream)?,
                    Err(refusal) => self.refuse(&refusal)?,
                },
                Ok(Request::Auth(token)) => {
                    if !self.auth(&token)? {
                        return Err(ConnError::CutOff);
                    }
                }
                Ok(Request::Put { size, digest, mtime, from, replace, perm, name }) => {
                    let offer = Offer { size, mtime, perm, replace };
                    if !self.put(offer, digest, from, name, storers)? {
                        return self.linger();
                    }
                }
                Ok(Request::Signature(name)) if self.agreed.has(Feature::Patch) => self.signature(&name)?,
                Ok(Request::Patch { base, size, mtime, replace, perm, name }) if self.agreed.has(Feature::Patch) => {
                    let offer = Offer { size, mtime, perm, replace };
                    if !self.patch(base, offer, name)? {
                        return self.linger();
                    }
                }
                Ok(Request::Signature(_) | Request::Patch { .. }) => {
                    // Records of unknown length follow a patch: the connection cannot go on.
                    let closes = matches!(request, Ok(Request::Patch { .. }));
                    self.err(ErrorCode::UnknownCommand, &"signature and patch need feature patch (hello)")?;
                    if closes {
                        return self.linger();
                    }
                }
                Ok(Request::Partial { size, mtime, replace, name }) => {
                    let offer = Offer { size, mtime, perm: 0, replace };
                    match self.session.partial(&offer, &name) {
                        Ok(held) => held.write(&mut self.stream)?,
                        Err(refusal) => self.refuse(&refusal)?,
                    }
                }
                Err(e) if e.ends_connection() => {
                    protocol::write_err(&mut self.stream, e.code(), &e)?;
                    return self.linger();
                }
                Err(e) => protocol::write_err(&mut self.stream, e.code(), &e)?,
            }
            let micros = started.elapsed().as_micros() as u64;
            debug!(%peer, bytes = self.bytes - bytes_before, micros, "answered");
        }
        self.stream.flush()?;
        self.stream.get_mut().close_notify()?;
        Ok(())
    }

    /// Whether a request may be answered on this connection as it stands: a health-only or
    /// cut-off connection ends at anything else; a token presented is checked again (one revoked
    /// since stops working at once); without a valid token only setting up, leaving, `auth` and
    /// the health check are answered (a put is refused with its body skipped, as any refused
    /// upload's; a delta after its signature is read).
    fn admit(
        &mut self,
        request: Result<Request, protocol::RequestError>,
    ) -> Result<Admitted<Result<Request, protocol::RequestError>>, ConnError> {
        let gate = matches!(request, Ok(Request::Health | Request::Quit));
        if let Some(why) = self.health_only
            && !gate
        {
            self.err(ErrorCode::Denied, &why)?;
            self.stream.flush()?;
            return Err(ConnError::PlainRefused);
        }
        if self.cut_off && !gate {
            self.err(ErrorCode::Unauthorized, &Refused::CutOff)?;
            self.stream.flush()?;
            return Err(ConnError::CutOff);
        }
        if !gate {
            self.session.recheck();
        }
        let open = matches!(
            request,
            Ok(Request::Hello(_)
                | Request::Auth(_)
                | Request::Health
                | Request::Quit
                | Request::Put { .. }
                | Request::Patch { .. }
                | Request::Delta { .. })
                | Err(_)
        );
        if !open && let Some(refusal) = self.session.needs_token() {
            self.refuse(&refusal)?;
            return Ok(Admitted::Refused);
        }
        Ok(Admitted::Go(request))
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
        match self.session.authenticate(token) {
            Ok(rights) => {
                rights.write(&mut self.stream)?;
                Ok(true)
            }
            Err(failed) => {
                self.stream.flush()?;
                std::thread::sleep(failed.delay);
                self.err(ErrorCode::Unauthorized, &failed.why)?;
                if failed.cut_off {
                    self.stream.flush()?;
                }
                Ok(!failed.cut_off)
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

    pub(super) fn err(&mut self, code: ErrorCode, message: &dyn std::fmt::Display) -> Result<(), ConnError> {
        Ok(protocol::write_err(&mut self.stream, code, message)?)
    }

    pub(super) fn refuse(&mut self, refusal: &Refusal) -> Result<(), ConnError> {
        self.err(refusal.code, &refusal.message)
    }

    /// Serves `get` or `resume`: the session answers; this writes the header, then the body into
    /// the transport (by `sendfile` where it can), then the trailer if the digest comes after.
    fn get(&mut self, name: &Name, part: Part) -> Result<(), ConnError> {
        let trailer = self.agreed.has(Feature::Trailer);
        let answer = match self.session.get(name, part, trailer) {
            Ok(answer) => answer,
            Err(refusal) => return self.refuse(&refusal),
        };
        answer.header().write(&mut self.stream)?;
        let len = answer.header().len;
        let sent = answer.send(&mut StreamSink(&mut self.stream));
        self.bytes += sent.went;
        match sent.end? {
            Ending::Done => Ok(()),
            Ending::Trailer(Ok(digest)) => Ok(protocol::write_trailer(&mut self.stream, digest)?),
            Ending::Trailer(Err(refusal)) => self.refuse(&refusal),
            // The peer was promised `len` bytes: the connection cannot go on.
            Ending::Shrank { sent } => Err(ConnError::Shrank { name: name.clone(), sent, len }),
        }
    }

    fn list(&mut self, folder: Option<&Name>) -> Result<(), ConnError> {
        let form = self.agreed.form();
        let format =
            if self.agreed.has(Feature::ListMeta) { list::Format::Meta(form) } else { list::Format::Plain(form) };
        let root = &self.shared().root;
        if self.agreed.has(Feature::ListEnd) {
            list::write_ended(root, folder, format, &mut self.stream)
        } else {
            list::write_counted(root, folder, format, &mut self.stream)
        }
    }

    fn stats(&mut self) -> Result<(), ConnError> {
        let stats = self.session.stats();
        protocol::write_ok_count(&mut self.stream, stats.len() as u64)?;
        for (key, value) in stats {
            protocol::write_stat(&mut self.stream, key, value)?;
        }
        Ok(())
    }
}

/// Whether a request goes on to be answered, or was refused already.
enum Admitted<R> {
    Go(R),
    Refused,
}
