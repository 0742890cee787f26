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
use std::time::Instant;

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
}

enum Kind {
    /// Bytes go to the socket as they are.
    Plain,
    /// TLS, this side the server.
    TlsServer(Box<ServerConnection>),
    /// TLS, this side the client.
    TlsClient(Box<ClientConnection>),
}

/// Runs `$body` with `$stream` bound to a `rustls::Stream` over the transport's TLS session and
/// socket, or evaluates `$plain` for a plain transport.
macro_rules! with_stream {
    ($self:ident, $stream:ident => $body:expr, plain => $plain:expr) => {{
        let mut sock: &TcpStream = &$self.tcp;
        match &mut $self.kind {
            Kind::Plain => $plain,
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
        Transport { tcp: tcp.into(), kind: Kind::Plain }
    }

    /// A TLS session over `tcp`, this side the server; the handshake happens on first use, or
    /// within a deadline by [`Transport::handshake`].
    pub fn tls_server(tcp: impl Into<Arc<TcpStream>>, conn: ServerConnection) -> Transport {
        Transport { tcp: tcp.into(), kind: Kind::TlsServer(Box::new(conn)) }
    }

    /// A TLS session over `tcp`, this side the client.
    pub fn tls_client(tcp: impl Into<Arc<TcpStream>>, conn: ClientConnection) -> Transport {
        Transport { tcp: tcp.into(), kind: Kind::TlsClient(Box::new(conn)) }
    }

    /// Completes a TLS handshake by `deadline` (each read of the socket waits at most until
    /// then; a peer that stalls or trickles is cut off); nothing to do for plain TCP. Restores
    /// no timeout: the caller sets the ones it wants afterwards.
    pub fn handshake(&mut self, deadline: Instant) -> io::Result<()> {
        let mut sock: &TcpStream = &self.tcp;
        loop {
            let handshaking = match &self.kind {
                Kind::Plain => false,
                Kind::TlsServer(conn) => conn.is_handshaking(),
                Kind::TlsClient(conn) => conn.is_handshaking(),
            };
            if !handshaking {
                return Ok(());
            }
            let left = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero());
            let left =
                left.ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake not complete in time"))?;
            self.tcp.set_read_timeout(Some(left))?;
            let done = match &mut self.kind {
                Kind::Plain => return Ok(()),
                Kind::TlsServer(conn) => conn.complete_io(&mut sock),
                Kind::TlsClient(conn) => conn.complete_io(&mut sock),
            };
            if let (0, 0) = done? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Tells a TLS peer the stream ends here (its `close_notify`), so it can tell the end from a
    /// cut connection; nothing to do for plain TCP.
    pub fn close_notify(&mut self) -> io::Result<()> {
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
        with_stream!(self, stream => stream.read(buf), plain => (&*self.tcp).read(buf))
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        with_stream!(self, stream => stream.write(buf), plain => (&*self.tcp).write(buf))
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        with_stream!(self, stream => stream.write_vectored(bufs), plain => (&*self.tcp).write_vectored(bufs))
    }

    fn flush(&mut self) -> io::Result<()> {
        with_stream!(self, stream => stream.flush(), plain => Ok(()))
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
