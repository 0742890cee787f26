//! One connection to a server as the client holds it: the stream, the agreement `hello` reached,
//! and the requests and replies every verb is made of. A reply not read to its end leaves the
//! connection out of step, and it carries no more requests ([`Client::is_usable`]).

use std::io::{self, BufRead, Write};
use std::net::TcpStream;
use std::sync::Arc;

use super::result::ClientError;
use crate::digest::Hasher;
use crate::name::Name;
use crate::transport::{BufStream, Transport};
use crate::wire::{
    self as protocol, Agreed, ErrorCode, Feature, Form, Hello, MAX_REPLY_LINE, PROTOCOL_VERSION, ProtocolError, Reply,
    Request, Rights, Secret, Status,
};

/// A connection to an ft server.
pub struct Client {
    /// The connection, buffered both ways (64 KiB for replies and bodies, 8 KiB for requests).
    pub(super) stream: BufStream,
    pub(super) line: Vec<u8>,
    /// Set once the stream may be out of step (a reply was not read to its end).
    pub(super) broken: bool,
    /// Where download progress is reported, if anywhere.
    pub(super) progress: Option<Arc<dyn Progress>>,
    /// What the server agreed to in reply to the `hello` sent on connecting; `None` until that
    /// reply has been read (it is read before the first reply that needs it).
    pub(super) agreed: Option<Agreed>,
    /// Whether a download of a file with an older copy in the output folder is asked for as a
    /// delta against it (where the server speaks `delta`).
    pub(super) delta: bool,
    /// Whether a download is asked for as records, compressed where the server finds it pays
    /// (where the server speaks `delta` and `zstd`).
    pub(super) compress: bool,
    /// The round trip to the server, as TCP's connect took it (zero where unknown).
    pub(super) rtt: std::time::Duration,
    /// What compresses this connection's uploads, once one has been.
    pub(super) packer: Option<crate::compress::Packer>,
    /// What decompresses its replies, once one has come compressed.
    pub(super) unpacker: Option<Box<crate::compress::Unpacking>>,
}

/// The features this client asks for in its `hello`: a digest after the body (`trailer`),
/// listings that end with a status line instead of starting with a count (`list-end`), and
/// listings with folders, modes and exact times (`list-meta`), and uploads (`put`).
pub const CLIENT_FEATURES: &[&str] = &[
    Feature::Trailer.as_str(),
    Feature::ListEnd.as_str(),
    Feature::ListMeta.as_str(),
    Feature::Put.as_str(),
    Feature::Delta.as_str(),
    Feature::Patch.as_str(),
    Feature::Zstd.as_str(),
];

impl Client {
    pub(super) fn over(transport: Transport) -> io::Result<Client> {
        let mut client = Client {
            stream: BufStream::new(transport, 64 << 10, 8 << 10),
            line: Vec::new(),
            broken: false,
            progress: None,
            agreed: None,
            delta: false,
            compress: false,
            rtt: std::time::Duration::ZERO,
            packer: None,
            unpacker: None,
        };
        // Its reply is read before the first request's, so agreeing costs no round trip of its
        // own.
        let features = CLIENT_FEATURES.iter().map(|f| f.to_string()).collect();
        writeln!(client.stream, "{}", Request::Hello(Hello { version: PROTOCOL_VERSION, features }))?;
        // On its way now: its reply is then there by the time a request needs it, even one that
        // waits for it (a name whose forms differ, a choice of how to ask for a file).
        client.stream.flush()?;
        Ok(client)
    }

    /// Asks for later downloads of files that have an older copy in the output folder as deltas
    /// against that copy (where the server speaks `delta`), or, with `false`, always whole.
    pub fn set_delta(&mut self, delta: bool) {
        self.delta = delta;
    }

    /// Asks for later downloads compressed, where the server finds it pays (and speaks `zstd`).
    pub fn set_compress(&mut self, compress: bool) {
        self.compress = compress;
    }

    /// Asks for the TCP congestion control `name` on this connection (Linux's `TCP_CONGESTION`;
    /// this side sends the uploads). Where the system does not allow it (see
    /// `/proc/sys/net/ipv4/tcp_allowed_congestion_control`) the connection keeps the system's
    /// default, and the error says why.
    pub fn set_congestion(&mut self, name: &str) -> io::Result<()> {
        rustix::net::sockopt::set_tcp_congestion(self.stream.get_ref().tcp(), name).map_err(io::Error::from)
    }

    /// The connection's TCP congestion control, as the system reports it.
    pub fn congestion(&self) -> Option<String> {
        rustix::net::sockopt::tcp_congestion(self.stream.get_ref().tcp()).ok()
    }

    /// Whether the server is on this machine (its address a loopback one).
    pub fn is_local(&self) -> bool {
        self.stream.get_ref().tcp_handle().peer_addr().is_ok_and(|a| a.ip().is_loopback())
    }

    /// Reports the progress of later downloads to `progress`.
    pub fn set_progress(&mut self, progress: Arc<dyn Progress>) {
        self.stream.get_mut().count_into(progress.wire());
        self.progress = Some(progress);
    }

    /// Stops reporting progress.
    pub fn clear_progress(&mut self) {
        self.stream.get_mut().count_into(None);
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
    pub(super) fn read_agreement(&mut self) -> Result<(), ClientError> {
        if self.agreed.is_some() {
            return Ok(());
        }
        let reply = self.reading(|c| Ok(protocol::read_status(&mut c.stream, &mut c.line)?.parsed(Agreed::parse)?))?;
        let agreed = match reply {
            Reply::Answer(agreed) if agreed.version <= PROTOCOL_VERSION => agreed,
            Reply::Answer(agreed) => {
                return Err(self.lost(ProtocolError::Malformed(format!("agreed to version {}", agreed.version))));
            }
            Reply::Refused(reply) if reply.kind() == Some(ErrorCode::UnknownCommand) => Agreed::baseline(),
            // The connection is turned away: nothing more will come on it.
            Reply::Refused(reply) => return Err(self.lost(ClientError::Server(reply))),
        };
        self.agreed = Some(agreed);
        Ok(())
    }

    /// Reads one reply's status line, after the reply to `hello` if that is still to come.
    pub(super) fn read_status(&mut self) -> Result<Status, ClientError> {
        self.read_agreement()?;
        Ok(protocol::read_status(&mut self.stream, &mut self.line)?)
    }

    /// Reads one reply's status line and parses its `OK` fields with `parse`: the answer, or the
    /// server's refusal of this request; the connection stays in step either way. Anything else
    /// (the stream lost, fields that do not parse) leaves it out of step.
    pub(super) fn read_reply<T>(
        &mut self,
        parse: impl FnOnce(&str) -> Result<T, ProtocolError>,
    ) -> Result<Reply<T>, ClientError> {
        self.reading(|c| Ok(c.read_status()?.parsed(parse)?))
    }

    /// Runs `read`, which takes (part of) a reply off the stream, with the connection counted out
    /// of step until it returns `Ok`: a read that fails part-way leaves the mark, so no request is
    /// sent on a stream whose next bytes are not the start of a reply.
    pub(super) fn reading<T>(
        &mut self,
        read: impl FnOnce(&mut Client) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        self.broken = true;
        let done = read(self)?;
        self.broken = false;
        Ok(done)
    }

    /// Marks the connection out of step (the stream failed, or what came is not what the protocol
    /// allows) and returns `e` to fail with.
    pub(super) fn lost(&mut self, e: impl Into<ClientError>) -> ClientError {
        self.broken = true;
        e.into()
    }

    /// [`Client::lost`] if `result` failed.
    pub(super) fn or_lost<T, E: Into<ClientError>>(&mut self, result: Result<T, E>) -> Result<T, ClientError> {
        result.map_err(|e| self.lost(e))
    }

    /// Queues a request without waiting for its reply (pipelining); it leaves at the next
    /// [`Client::flush`], or sooner once the write buffer fills.
    pub(crate) fn send(&mut self, request: &Request) -> Result<(), ClientError> {
        if self.broken {
            return Err(ClientError::Broken);
        }
        self.write_request(request).map(drop)
    }

    /// Writes a request with its names in the agreed form. Until the reply to `hello` has been
    /// read, a request that reads the same in both forms goes at once (pipelined behind the
    /// `hello`); any other waits for that reply first, which says which form the server reads.
    /// A request the server's version cannot carry is refused here, before anything is sent.
    /// Writes the bytes that follow a request's line (a delta's signature).
    pub(super) fn write_after(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        let written = self.stream.write_all(bytes);
        self.or_lost(written)
    }

    pub(super) fn write_request(&mut self, request: &Request) -> Result<usize, ClientError> {
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
        let written = writeln!(self.stream, "{line}");
        self.or_lost(written).map(|()| line.len() + 1)
    }

    /// Sends every queued request.
    pub(crate) fn flush(&mut self) -> Result<(), ClientError> {
        let flushed = self.stream.flush();
        self.or_lost(flushed)
    }

    /// Says goodbye and closes the connection.
    pub fn quit(mut self) -> Result<(), ClientError> {
        self.call(&Request::Quit)?;
        Ok(())
    }

    /// Sends a request and reads its status line; `Ok(fields)` after `OK`.
    pub(super) fn call(&mut self, request: &Request) -> Result<String, ClientError> {
        if self.broken {
            return Err(ClientError::Broken);
        }
        self.write_request(request)?;
        let status = self.reading(|c| {
            c.stream.flush()?;
            c.read_status()
        })?;
        status.into_result().map_err(ClientError::Server)
    }

    pub(super) fn call_count(&mut self, request: &Request) -> Result<u64, ClientError> {
        let fields = self.call(request)?;
        let count = protocol::parse_count(&fields);
        self.or_lost(count)
    }

    pub(super) fn read_line(&mut self) -> Result<&[u8], ClientError> {
        match protocol::read_line(&mut self.stream, &mut self.line, MAX_REPLY_LINE) {
            Ok(true) => {}
            Ok(false) => return Err(self.lost(ProtocolError::Closed)),
            Err(e) => return Err(self.lost(e)),
        }
        Ok(&self.line)
    }

    /// Moves exactly `len` body bytes from the connection into `out`, hashing them. The outer
    /// error is the connection's; the inner one is `out`'s. With `drain`, a failing `out` does not
    /// stop the reading, so the connection stays in step.
    pub(super) fn copy_body(
        &mut self,
        len: u64,
        out: &mut impl Write,
        hasher: &mut Hasher,
        drain: bool,
    ) -> Result<io::Result<()>, ClientError> {
        // Out of step until the last byte is read; a failing `out` without `drain` leaves the
        // rest unread, and the mark with it.
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

    /// Presents a token (`auth`), returning the rights the server grants (`read`, `read,write`).
    /// Never sends it in plain text to a server that is not on this machine: that is refused here,
    /// before a byte of it leaves.
    pub fn authenticate(&mut self, token: &Secret) -> Result<Rights, ClientError> {
        let transport = self.stream.get_ref();
        let peer = transport.tcp().peer_addr()?;
        if !transport.is_tls() && !peer.ip().to_canonical().is_loopback() {
            return Err(ClientError::TokenInPlainText { addr: peer.to_string() });
        }
        let fields = self.call(&Request::Auth(token.clone()))?;
        Ok(Rights::parse(&fields)?)
    }
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
    /// Where the connection counts the bytes it moves through its socket (requests, replies and
    /// bodies as they crossed the wire: after delta and compression, TLS included), if wanted.
    fn wire(&self) -> Option<Arc<std::sync::atomic::AtomicU64>> {
        None
    }
}
