//! One client connection: the command loop, its timeouts, and the replies.
//!
//! The loop waits up to the idle timeout for a request to begin; once its first byte is in, the
//! whole line must arrive within the request timeout (a peer trickling bytes is cut off) and fit
//! the line cap. Replies are buffered and flushed only when no further pipelined request is
//! already buffered, so a burst of requests leaves in few writes. Every write is bounded by the
//! socket's send timeout, which the kernel applies between two writes that make progress: a slow
//! but steady reader is served, one that stops reading releases the thread.

use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::debug;

use super::shared::Shared;
use crate::digest::{Digest, hash_file};
use crate::name::Name;
use crate::store::{FileEntry, FileVersion, OpenError};
use crate::wire::{self as protocol, ErrorCode, GetHeader, ListEntry, ProtocolError, Request};

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("request line longer than {0} bytes")]
    LineTooLong(usize),
    #[error("request line not complete within {0:?}")]
    RequestTimeout(Duration),
    #[error("connection closed in the middle of a request")]
    Truncated,
    #[error("{name} shrank while being sent: {sent} of {len} bytes")]
    Shrank { name: Name, sent: u64, len: u64 },
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
            ConnError::LineTooLong(_) | ConnError::RequestTimeout(_) | ConnError::Truncated => true,
            ConnError::Shrank { .. } => false,
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

/// A shared socket usable as both halves: `&TcpStream` reads and writes, so no `dup` is needed.
pub(crate) struct Sock(pub Arc<TcpStream>);

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        (&*self.0).write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One client's connection.
pub(crate) struct Connection<'a> {
    shared: &'a Shared,
    peer: SocketAddr,
    stream: Arc<TcpStream>,
    reader: BufReader<Sock>,
    writer: BufWriter<Sock>,
    /// The receive timeout currently set on the socket, to skip redundant system calls.
    read_timeout: Option<Duration>,
    /// Requests answered on this connection, for its closing log line.
    pub(crate) requests: u64,
    /// File bytes sent on this connection.
    pub(crate) bytes: u64,
}

impl<'a> Connection<'a> {
    /// Waits (up to the idle timeout) for the peer's first byte, then sets the connection up; `None`
    /// if the peer closed without sending anything. The read and write buffers (72 KiB) are only
    /// allocated once there is something to read, so an idle connection costs little more than
    /// its thread's stack: 10,000 of them fit in about 100 MiB.
    pub(crate) fn open(
        shared: &'a Shared,
        stream: Arc<TcpStream>,
        peer: SocketAddr,
    ) -> Result<Option<Self>, ConnError> {
        let idle = shared.config.idle_timeout;
        stream.set_read_timeout(Some(idle))?;
        if stream.peek(&mut [0u8; 1])? == 0 {
            return Ok(None);
        }
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(shared.config.send_timeout))?;
        let reader = BufReader::with_capacity(8 << 10, Sock(stream.clone()));
        let writer = BufWriter::with_capacity(64 << 10, Sock(stream.clone()));
        let read_timeout = Some(idle);
        Ok(Some(Connection { shared, peer, stream, reader, writer, read_timeout, requests: 0, bytes: 0 }))
    }

    /// Answers requests until the peer quits or closes, or a limit is hit.
    pub(crate) fn serve(&mut self) -> Result<(), ConnError> {
        let config = &self.shared.config;
        let mut line = Vec::with_capacity(256);
        loop {
            if self.reader.buffer().is_empty() {
                self.writer.flush()?;
                set_timeout(&self.stream, &mut self.read_timeout, config.idle_timeout)?;
                if self.reader.fill_buf()?.is_empty() {
                    break;
                }
            }
            // A request has begun: all of it must arrive by the deadline.
            let deadline = Instant::now() + config.request_timeout;
            let (stream, current) = (&self.stream, &mut self.read_timeout);
            let read = protocol::read_line_with(&mut self.reader, &mut line, config.max_line, || {
                match deadline.checked_duration_since(Instant::now()).filter(|left| !left.is_zero()) {
                    Some(left) => set_timeout(stream, current, left),
                    None => Err(io::ErrorKind::TimedOut.into()),
                }
            });
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
            self.shared.requests.fetch_add(1, Ordering::Relaxed);
            self.requests += 1;
            let (started, bytes_before) = (Instant::now(), self.bytes);
            let request = Request::parse(&line);
            match &request {
                Ok(request) => debug!(peer = %self.peer, %request, "request"),
                Err(e) => debug!(peer = %self.peer, "bad request: {e}"),
            }
            match request {
                Ok(Request::Quit) => {
                    self.writer.write_all(b"OK bye\n")?;
                    break;
                }
                Ok(Request::Get(name)) => self.get(&name, None)?,
                Ok(Request::Resume { offset, prefix, name }) => self.get(&name, Some((offset, prefix)))?,
                Ok(Request::List(folder)) => self.list(folder.as_ref())?,
                Ok(Request::Stats) => self.stats()?,
                Err(e) => protocol::write_err(&mut self.writer, e.code(), &e)?,
            }
            let micros = started.elapsed().as_micros() as u64;
            debug!(peer = %self.peer, bytes = self.bytes - bytes_before, micros, "answered");
        }
        self.writer.flush()?;
        Ok(())
    }

    /// Sends a final `ERR` (best effort) and returns `why` for the caller to end with.
    fn last_word(&mut self, code: ErrorCode, why: ConnError) -> ConnError {
        let _ = protocol::write_err(&mut self.writer, code, &why).and_then(|()| self.writer.flush());
        why
    }

    fn err(&mut self, code: ErrorCode, message: &dyn std::fmt::Display) -> Result<(), ConnError> {
        Ok(protocol::write_err(&mut self.writer, code, message)?)
    }

    /// Serves `get` (no `resume`) or `resume` (the offset and the digest of the client's prefix).
    fn get(&mut self, name: &Name, resume: Option<(u64, Digest)>) -> Result<(), ConnError> {
        let (shared, now) = (self.shared, Instant::now());
        let fresh = |cached: &FileVersion| shared.root.version(name) == Some(*cached);
        if let Some(hit) = shared.cache.lookup(name, now, fresh) {
            debug!(peer = %self.peer, %name, size = hit.body.len(), "hit");
            let offset = matching_offset(resume, |off| hit.body.get(..off as usize).map(Digest::of));
            return self.send_body(&hit.body, hit.digest, offset);
        }
        let (mut file, version) = match shared.root.open_file(name) {
            Ok(opened) => opened,
            Err(e) => return self.err(open_error_code(&e), &e),
        };
        let Some(mut reservation) = shared.cache.reserve(name, &version, now) else {
            debug!(peer = %self.peer, %name, size = version.size, "miss, streamed");
            return self.stream_file(name, &file, &version, resume);
        };
        // Read whole before answering, so a read error is still an ERR line, not a cut reply.
        let mut body = Vec::with_capacity(usize::try_from(version.size).unwrap_or(0));
        if let Err(e) = (&mut file).take(version.size).read_to_end(&mut body) {
            return self.err(ErrorCode::Internal, &format_args!("read failed: {e}"));
        }
        if body.len() as u64 != version.size {
            return self.err(ErrorCode::Internal, &"file shrank while being read; try again");
        }
        let body = reservation.hold(body);
        let digest = Digest::of(&body);
        let offset = matching_offset(resume, |off| body.get(..off as usize).map(Digest::of));
        debug!(peer = %self.peer, %name, size = version.size, "miss, admitted");
        self.send_body(&body, digest, offset)?;
        if unchanged(&file, &version) {
            reservation.commit(body, digest, version, now);
        }
        Ok(())
    }

    fn send_body(&mut self, body: &[u8], digest: Digest, offset: u64) -> Result<(), ConnError> {
        let size = body.len() as u64;
        GetHeader { len: size - offset, offset, size, digest }.write(&mut self.writer)?;
        self.writer.write_all(&body[offset as usize..])?;
        self.shared.bytes_sent.fetch_add(size - offset, Ordering::Relaxed);
        self.bytes += size - offset;
        Ok(())
    }

    /// Sends a file from disk with `sendfile`. Its digest comes from the memo, or is
    /// computed (once per file version) before the header. A file that turns out shorter than
    /// announced ends the connection: the peer was promised that many bytes.
    fn stream_file(
        &mut self,
        name: &Name,
        file: &std::fs::File,
        version: &FileVersion,
        resume: Option<(u64, Digest)>,
    ) -> Result<(), ConnError> {
        let (digest, prefix) = match self.file_digest(name, file, version, resume.map(|(off, _)| off)) {
            Ok(digests) => digests,
            Err(e) => return self.err(ErrorCode::Internal, &format_args!("cannot read the file: {e}")),
        };
        let offset = matching_offset(resume, |_| prefix);
        let len = version.size - offset;
        GetHeader { len, offset, size: version.size, digest }.write(&mut self.writer)?;
        self.writer.flush()?;
        let sent = send_file(&self.stream, file, offset, len);
        self.shared.bytes_sent.fetch_add(*sent.as_ref().unwrap_or(&0), Ordering::Relaxed);
        self.bytes += *sent.as_ref().unwrap_or(&0);
        match sent? {
            sent if sent == len => Ok(()),
            sent => Err(ConnError::Shrank { name: name.clone(), sent, len }),
        }
    }

    /// The file's digest (remembered per version) and, if asked, the digest of its first bytes.
    fn file_digest(
        &self,
        name: &Name,
        file: &std::fs::File,
        version: &FileVersion,
        prefix: Option<u64>,
    ) -> io::Result<(Digest, Option<Digest>)> {
        let memo = &self.shared.digests;
        if let Some(digest) = memo.get(name, version) {
            let prefix = match prefix {
                Some(p) if p <= version.size => Some(hash_file(file, p, None)?.0),
                _ => None,
            };
            return Ok((digest, prefix));
        }
        let digests = hash_file(file, version.size, prefix)?;
        if !unchanged(file, version) {
            return Err(io::Error::other("it changed while being hashed; try again"));
        }
        self.shared.digests_computed.fetch_add(1, Ordering::Relaxed);
        memo.put(name, *version, digests.0);
        Ok(digests)
    }

    fn list(&mut self, folder: Option<&Name>) -> Result<(), ConnError> {
        match self.shared.root.list(folder) {
            Ok(entries) => {
                protocol::write_ok_count(&mut self.writer, entries.len() as u64)?;
                for FileEntry { name, size, mtime } in entries {
                    ListEntry { size, mtime, name }.write(&mut self.writer)?;
                }
                Ok(())
            }
            Err(e) => self.err(open_error_code(&e), &e),
        }
    }

    fn stats(&mut self) -> Result<(), ConnError> {
        let stats = self.shared.stats();
        protocol::write_ok_count(&mut self.writer, stats.len() as u64)?;
        for (key, value) in stats {
            protocol::write_stat(&mut self.writer, key, value)?;
        }
        Ok(())
    }
}

/// Sends `len` bytes of `file` from `offset` with `sendfile`: the kernel moves them from the page
/// cache to the socket with no copy through this process. Returns how many were sent, fewer if
/// the file ended early. The socket's send timeout bounds each call, as it does a `write`.
fn send_file(stream: &TcpStream, file: &std::fs::File, offset: u64, len: u64) -> io::Result<u64> {
    let mut at = offset;
    let mut sent = 0u64;
    while sent < len {
        let chunk = usize::try_from(len - sent).unwrap_or(usize::MAX).min(1 << 30);
        match rustix::fs::sendfile(stream, file, Some(&mut at), chunk) {
            Ok(0) => break,
            Ok(n) => sent += n as u64,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(sent)
}

/// Sets the socket's receive timeout unless it already has that value.
fn set_timeout(stream: &TcpStream, current: &mut Option<Duration>, want: Duration) -> io::Result<()> {
    if *current != Some(want) {
        stream.set_read_timeout(Some(want))?;
        *current = Some(want);
    }
    Ok(())
}

/// The offset to resume from: the client's, if its prefix digest matches ours, else 0.
fn matching_offset(resume: Option<(u64, Digest)>, prefix_digest: impl FnOnce(u64) -> Option<Digest>) -> u64 {
    match resume {
        Some((off, want)) if off > 0 && prefix_digest(off) == Some(want) => off,
        _ => 0,
    }
}

/// The reply code for a file the store could not open or list.
fn open_error_code(e: &OpenError) -> ErrorCode {
    match e {
        OpenError::NotFound => ErrorCode::NotFound,
        OpenError::NotFile => ErrorCode::NotFile,
        OpenError::Denied => ErrorCode::Denied,
        OpenError::Io(_) => ErrorCode::Internal,
    }
}

/// Whether an open file still has the version it had when opened.
fn unchanged(file: &std::fs::File, version: &FileVersion) -> bool {
    file.metadata().is_ok_and(|m| FileVersion::of_std(&m) == *version)
}
