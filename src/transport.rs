//! The byte stream a connection runs over, for the server's connections and the client alike.
//!
//! [`Transport`] is one type with a variant per kind of stream (plain TCP, or TLS as a server or a
//! client, as in tiny-http's `Stream` enum), so the connection code reads and writes without
//! knowing which it has. It owns the whole stream: nothing splits one socket into a reading and a
//! writing half (`try_clone`), which a TLS session could not do. What only the socket can do
//! (timeouts, a half-close at shutdown) goes to the TCP socket underneath, shared through an `Arc`
//! so the server's shutdown can reach it from another thread. [`Transport::sendfile_fd`] says
//! whether the kernel may copy a file straight into the stream: true for plain TCP, never for a
//! stream that encrypts in this process.
//!
//! [`BufStream`] buffers both directions over one transport: a read buffer that request and reply
//! lines are parsed from, and a write buffer flushed once per burst of replies or requests.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustls::{ClientConnection, ServerConnection};

/// The crypto TLS uses in this build: `ring`'s (measured faster than aws-lc-rs for AES-GCM on
/// the development machine), TLS 1.3 only.
pub fn tls_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// One connection's byte stream.
pub struct Transport {
    tcp: Arc<TcpStream>,
    kind: Kind,
    /// How reads wait: what is asked of every read of the socket, TLS records included.
    timing: Timing,
    /// `close_notify` was sent (or the stream is plain): a TLS stream that is dropped without
    /// it sends it then, so its peer can tell the end from a cut connection.
    closed: bool,
    /// Where the bytes this transport moves through its socket are counted, if anywhere.
    counted: Option<Arc<AtomicU64>>,
}

impl Drop for Transport {
    fn drop(&mut self) {
        let handshaking = match &self.kind {
            Kind::Plain => false,
            Kind::TlsServer(conn) => conn.is_handshaking(),
            Kind::TlsClient(conn) => conn.is_handshaking(),
        };
        // Not during a handshake: writing then would wait on the peer to go on with it.
        if !self.closed && self.is_tls() && !handshaking {
            // Best effort, and never a long wait on a peer that stopped reading.
            let _ = self.tcp.set_write_timeout(Some(Duration::from_millis(200)));
            let _ = self.close_notify();
        }
    }
}

/// How long reads may wait, applied to each read of the socket itself, so that a peer trickling
/// bytes (a ClientHello a byte at a time, a TLS record split into single bytes) cannot stretch
/// a wait that is meant to end at a time.
#[derive(Debug, Clone, Copy, Default)]
struct Timing {
    /// The longest one read of the socket may wait (the socket's receive timeout).
    timeout: Option<Duration>,
    /// A time by which reading must be done, however the bytes trickle (a request line's).
    deadline: Option<Instant>,
    /// The longest one read of the stream may take to give data, however many socket reads it
    /// takes (for TLS: a record trickled byte by byte gives nothing until it is whole).
    progress: Option<Duration>,
    /// Once the first byte of the socket arrives, the rest must arrive within this: a request
    /// begins with its first byte, also when that byte is only part of a TLS record.
    after_first: Option<Duration>,
    /// When that first byte arrived.
    first_at: Option<Instant>,
    /// The receive timeout set on the socket now (`None`: not known), to skip redundant calls.
    applied: Option<Option<Duration>>,
}

/// The socket as a TLS session reads and writes it: each read waits only as long as the
/// transport's timing allows (see [`Timing`]).
struct Sock<'a> {
    tcp: &'a TcpStream,
    timing: &'a mut Timing,
    /// When the read of the stream under way must be done (a deadline, or the first byte's).
    until: Option<Instant>,
    /// When the first read of the socket for it began, once it has (for the progress limit).
    began: Option<Instant>,
    /// Where the bytes read and written are counted, if anywhere.
    counted: Option<&'a AtomicU64>,
}

impl Sock<'_> {
    fn count(&self, n: usize) {
        if let Some(counted) = self.counted {
            counted.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

impl Sock<'_> {
    /// How long the next read of the socket may wait: the socket's timeout, less whatever the
    /// deadline and the progress limit leave. The first read of a stream's read waits the
    /// progress limit whole, so a plain stream (one socket read each) sets no new timeout per
    /// read when the limit equals the timeout.
    fn wait(&mut self) -> io::Result<Option<Duration>> {
        let mut wait = self.timing.timeout;
        let mut bound = |left: Option<Duration>| -> io::Result<()> {
            if let Some(left) = left {
                if left.is_zero() {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "not done in time"));
                }
                wait = Some(wait.map_or(left, |w| w.min(left)));
            }
            Ok(())
        };
        if let Some(progress) = self.timing.progress {
            match self.began {
                None => {
                    self.began = Some(Instant::now());
                    bound(Some(progress))?;
                }
                Some(began) => bound(Some(progress.saturating_sub(began.elapsed())))?,
            }
        }
        if let Some(until) = self.until {
            bound(Some(until.saturating_duration_since(Instant::now())))?;
        }
        Ok(wait)
    }
}

impl Read for Sock<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let wait = self.wait()?;
        if self.timing.applied != Some(wait) {
            self.tcp.set_read_timeout(wait)?;
            self.timing.applied = Some(wait);
        }
        let mut tcp = self.tcp;
        let n = tcp.read(buf)?;
        self.count(n);
        if n > 0
            && self.timing.first_at.is_none()
            && let Some(within) = self.timing.after_first
        {
            let now = Instant::now();
            self.timing.first_at = Some(now);
            self.until = Some(self.until.map_or(now + within, |u| u.min(now + within)));
        }
        Ok(n)
    }
}

impl Write for Sock<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut tcp = self.tcp;
        let n = tcp.write(buf)?;
        self.count(n);
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let mut tcp = self.tcp;
        let n = tcp.write_vectored(bufs)?;
        self.count(n);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Kind {
    /// Bytes go to the socket as they are.
    Plain,
    /// TLS, this side the server.
    TlsServer(Box<ServerConnection>),
    /// TLS, this side the client.
    TlsClient(Box<ClientConnection>),
}

/// Runs `$body` with `$stream` bound to a stream over the transport's socket: a `rustls::Stream`
/// over its TLS session, or the [`Sock`] itself for a plain transport; each read of the socket
/// waits as [`Timing`] says, the stream's data due by its deadline.
macro_rules! with_stream {
    ($self:ident, $stream:ident => $body:expr) => {{
        let until = $self.timing.deadline;
        let counted = $self.counted.as_deref();
        let mut sock = Sock { tcp: &$self.tcp, timing: &mut $self.timing, until, began: None, counted };
        match &mut $self.kind {
            Kind::Plain => {
                let $stream = &mut sock;
                $body
            }
            Kind::TlsServer(conn) => {
                let mut $stream = rustls::Stream::new(conn.as_mut(), &mut sock);
                $body
            }
            Kind::TlsClient(conn) => {
                let mut $stream = rustls::Stream::new(conn.as_mut(), &mut sock);
                $body
            }
        }
    }};
}

impl Transport {
    /// A plain TCP stream.
    pub fn plain(tcp: impl Into<Arc<TcpStream>>) -> Transport {
        Transport { tcp: tcp.into(), kind: Kind::Plain, timing: Timing::default(), closed: false, counted: None }
    }

    /// A TLS session over `tcp`, this side the server; the handshake happens on first use, or
    /// within a deadline by [`Transport::handshake`].
    pub fn tls_server(tcp: impl Into<Arc<TcpStream>>, conn: ServerConnection) -> Transport {
        Transport {
            tcp: tcp.into(),
            kind: Kind::TlsServer(Box::new(conn)),
            timing: Timing::default(),
            closed: false,
            counted: None,
        }
    }

    /// A TLS session over `tcp`, this side the client.
    pub fn tls_client(tcp: impl Into<Arc<TcpStream>>, conn: ClientConnection) -> Transport {
        Transport {
            tcp: tcp.into(),
            kind: Kind::TlsClient(Box::new(conn)),
            timing: Timing::default(),
            closed: false,
            counted: None,
        }
    }

    /// Counts every byte this transport reads from or writes to its socket (TLS records whole)
    /// into `counted` from now on (`None`: stops counting): what crossed the wire.
    pub fn count_into(&mut self, counted: Option<Arc<AtomicU64>>) {
        self.counted = counted;
    }

    /// The longest one read of the socket may wait (its receive timeout; `None`: forever).
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.timing.timeout = timeout;
    }

    /// A time by which reading must be done (`None`: none), however the peer trickles its bytes:
    /// every read of the socket waits at most until then, and fails with `TimedOut` after it.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.timing.deadline = deadline;
    }

    /// The longest one read of this stream may take to give data (`None`: as the socket's
    /// timeout alone says), however many reads of the socket it takes: what a reply or a body
    /// must keep up with. Over TLS a record trickled a byte at a time gives no data until it is
    /// whole, so only this bounds it.
    pub fn set_progress(&mut self, progress: Option<Duration>) {
        self.timing.progress = progress;
    }

    /// Watches for the first byte of the socket (`Some(within)`): once it arrives, the rest of
    /// the read under way must arrive `within` of it, and [`Transport::first_byte_at`] says when
    /// it came. `None` stops watching.
    pub fn watch_first_byte(&mut self, within: Option<Duration>) {
        self.timing.after_first = within;
        self.timing.first_at = None;
    }

    /// When the first byte watched for arrived, if it has.
    pub fn first_byte_at(&self) -> Option<Instant> {
        self.timing.first_at
    }

    /// Completes a TLS handshake by `deadline` (each read of the socket waits at most until
    /// then, whatever it gets: a peer that stalls or trickles is cut off at the deadline);
    /// nothing to do for plain TCP.
    pub fn handshake(&mut self, deadline: Instant) -> io::Result<()> {
        let mut sock = Sock {
            tcp: &self.tcp,
            timing: &mut self.timing,
            until: Some(deadline),
            began: None,
            counted: self.counted.as_deref(),
        };
        loop {
            let handshaking = match &self.kind {
                Kind::Plain => false,
                Kind::TlsServer(conn) => conn.is_handshaking(),
                Kind::TlsClient(conn) => conn.is_handshaking(),
            };
            if !handshaking {
                return Ok(());
            }
            let done = match &mut self.kind {
                Kind::Plain => return Ok(()),
                Kind::TlsServer(conn) => conn.complete_io(&mut sock),
                Kind::TlsClient(conn) => conn.complete_io(&mut sock),
            };
            match done {
                Ok((0, 0)) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake not complete in time"));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Tells a TLS peer the stream ends here (its `close_notify`), so it can tell the end from a
    /// cut connection; nothing to do for plain TCP.
    pub fn close_notify(&mut self) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        match &mut self.kind {
            Kind::Plain => return Ok(()),
            Kind::TlsServer(conn) => conn.send_close_notify(),
            Kind::TlsClient(conn) => conn.send_close_notify(),
        }
        self.flush()
    }

    /// Whether bytes are encrypted on this transport.
    pub fn is_tls(&self) -> bool {
        !matches!(self.kind, Kind::Plain)
    }

    /// The TCP socket underneath, for timeouts, addresses and `peek`.
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// A handle on the socket that outlives this borrow, to half-close it from another thread.
    pub fn tcp_handle(&self) -> Arc<TcpStream> {
        self.tcp.clone()
    }

    /// The descriptor to `sendfile` into, if the kernel may write file bytes straight to this
    /// stream (plain TCP); `None` when bytes must pass through this process (TLS).
    pub fn sendfile_fd(&self) -> Option<BorrowedFd<'_>> {
        match self.kind {
            Kind::Plain => Some(self.tcp.as_fd()),
            Kind::TlsServer(_) | Kind::TlsClient(_) => None,
        }
    }

    /// Which kind of stream this is, for logs.
    pub fn kind(&self) -> &'static str {
        match self.kind {
            Kind::Plain => "tcp",
            Kind::TlsServer(_) | Kind::TlsClient(_) => "tls",
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        with_stream!(self, stream => stream.read(buf))
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        with_stream!(self, stream => stream.write(buf))
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        with_stream!(self, stream => stream.write_vectored(bufs))
    }

    fn flush(&mut self) -> io::Result<()> {
        with_stream!(self, stream => stream.flush())
    }
}

/// A [`Transport`] buffered in both directions: [`BufRead`] for lines and bodies, [`Write`] that
/// collects small writes until [`Write::flush`] (or until the buffer is full; a write at least as
/// large as the buffer goes straight through, after what was buffered).
pub struct BufStream {
    reader: BufReader<Transport>,
    out: Vec<u8>,
    out_cap: usize,
}

impl BufStream {
    /// Buffers `transport` with `read_cap` bytes for reading and `write_cap` for writing. The
    /// buffers are allocated here, so a caller that wants an idle connection to cost nothing
    /// creates this once the first byte has arrived.
    pub fn new(transport: Transport, read_cap: usize, write_cap: usize) -> BufStream {
        BufStream {
            reader: BufReader::with_capacity(read_cap, transport),
            out: Vec::with_capacity(write_cap),
            out_cap: write_cap,
        }
    }

    pub fn get_ref(&self) -> &Transport {
        self.reader.get_ref()
    }

    /// The transport, to write past the buffer (after a flush) or to `sendfile` into.
    pub fn get_mut(&mut self) -> &mut Transport {
        self.reader.get_mut()
    }

    /// Bytes read from the peer and not consumed yet: a pipelined request already here.
    pub fn buffer(&self) -> &[u8] {
        self.reader.buffer()
    }

    /// Writes out what is buffered ahead of `sendfile` into [`Transport::sendfile_fd`]: on plain
    /// TCP with `MSG_MORE`, so a short header is held back to leave in one segment with the first
    /// file bytes, as nginx's `tcp_nopush` does, rather than as a packet of its own that wakes the
    /// peer for nothing. Only when file bytes follow at once: a held header goes out with them.
    /// Elsewhere the same as [`Write::flush`].
    pub fn flush_before_file(&mut self) -> io::Result<()> {
        if self.get_ref().sendfile_fd().is_none() {
            return self.flush();
        }
        let flags = rustix::net::SendFlags::MORE | rustix::net::SendFlags::NOSIGNAL;
        let mut at = 0;
        let result = loop {
            if at == self.out.len() {
                break Ok(());
            }
            match rustix::net::send(self.get_ref().tcp(), &self.out[at..], flags) {
                Ok(n) => at += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => break Err(e.into()),
            }
        };
        self.out.clear();
        result
    }

    /// Writes out what is buffered, without flushing the transport itself.
    fn drain(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            let result = self.reader.get_mut().write_all(&self.out);
            self.out.clear();
            result?;
        }
        Ok(())
    }
}

impl Read for BufStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
    }
}

impl BufRead for BufStream {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.reader.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        self.reader.consume(amount);
    }
}

impl Write for BufStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.out.len() + buf.len() > self.out_cap {
            self.drain()?;
        }
        if buf.len() >= self.out_cap {
            return self.reader.get_mut().write(buf);
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.drain()?;
        self.reader.get_mut().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A connected pair of plain transports on loopback.
    fn pair() -> (Transport, Transport) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (Transport::plain(client), Transport::plain(server))
    }

    #[test]
    fn a_header_held_for_a_file_leaves_with_it_and_nothing_is_lost() {
        let (a, mut b) = pair();
        let mut a = BufStream::new(a, 1024, 1024);
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"body bytes").unwrap();
        a.write_all(b"OK 10\n").unwrap();
        a.flush_before_file().unwrap();
        assert!(a.out.is_empty());
        let socket = a.get_ref().sendfile_fd().unwrap();
        assert_eq!(rustix::fs::sendfile(socket, &file, Some(&mut 0), 10).unwrap(), 10);
        a.write_all(b"OK xxh3=0\n").unwrap();
        a.flush().unwrap();
        let mut got = vec![0u8; 26];
        b.read_exact(&mut got).unwrap();
        assert_eq!(got, b"OK 10\nbody bytesOK xxh3=0\n");
    }

    #[test]
    fn one_buffered_stream_reads_and_writes_in_order() {
        let (a, b) = pair();
        assert_eq!(a.kind(), "tcp");
        assert!(a.sendfile_fd().is_some(), "plain TCP can take sendfile");
        let mut a = BufStream::new(a, 16, 8);
        let mut b = BufStream::new(b, 16, 8);
        // Small writes stay buffered until the flush; a large one goes through after them.
        a.write_all(b"one\n").unwrap();
        a.write_all(b"two\n").unwrap();
        a.write_all(&[b'x'; 40]).unwrap();
        a.write_all(b"\nthree\n").unwrap();
        a.flush().unwrap();
        let mut text = String::new();
        for _ in 0..4 {
            b.read_line(&mut text).unwrap();
        }
        assert_eq!(text, format!("one\ntwo\n{}\nthree\n", "x".repeat(40)));
        // And back the other way on the same streams.
        b.write_all(b"reply\n").unwrap();
        b.flush().unwrap();
        let mut line = String::new();
        a.read_line(&mut line).unwrap();
        assert_eq!(line, "reply\n");
        assert!(a.buffer().is_empty());
    }
}
