//! The client: one connection, the requests over it, and saving downloads safely.
//!
//! A [`Client`] speaks the protocol over one TCP connection and never trusts it: status lines
//! and list entries are parsed strictly, a body is read to exactly its announced size through a
//! fixed buffer, and a body that ends early is an error. Downloads go through an [`OutDir`],
//! which writes `<name>.part` beneath the output folder (never outside it, whatever the name)
//! and renames it to `<name>` only once every byte has arrived, so a failed transfer leaves no
//! truncated file under the final name and never destroys an existing copy.

use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use cap_std::fs::{Dir, OpenOptions};

use crate::name::Name;
use crate::protocol::{self, ErrorReply, ListEntry, MAX_REPLY_LINE, ProtocolError, Request};

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("network error: {0}")]
    Network(#[from] io::Error),
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("{0}")]
    Server(ErrorReply),
    #[error("connection closed after {received} of {expected} bytes")]
    ShortBody { expected: u64, received: u64 },
    #[error("cannot write {}: {source}", path.display())]
    Local { path: PathBuf, source: io::Error },
    #[error("the connection is out of step after an earlier error")]
    Broken,
}

/// A connection to an ft server.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
    line: Vec<u8>,
    /// Set once the stream may be out of step (a reply was not read to its end).
    broken: bool,
}

impl Client {
    /// Connects to `addr` (`host:port`), trying each resolved address within `timeout`; reads
    /// and writes then time out after `timeout` too.
    pub fn connect(addr: &str, timeout: Duration) -> Result<Client, ClientError> {
        let fail = |source| ClientError::Connect { addr: addr.to_string(), source };
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address found");
        for candidate in addr.to_socket_addrs().map_err(fail)? {
            match TcpStream::connect_timeout(&candidate, timeout) {
                Ok(stream) => return Client::from_stream(stream, timeout).map_err(fail),
                Err(e) => last = e,
            }
        }
        Err(fail(last))
    }

    fn from_stream(stream: TcpStream, timeout: Duration) -> io::Result<Client> {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Client {
            reader: BufReader::with_capacity(64 << 10, stream.try_clone()?),
            writer: BufWriter::new(stream),
            line: Vec::new(),
            broken: false,
        })
    }

    /// Whether the connection can still carry requests.
    pub fn is_usable(&self) -> bool {
        !self.broken
    }

    /// The files the server offers, under `folder` or all of them.
    pub fn list(&mut self, folder: Option<&Name>) -> Result<Vec<ListEntry>, ClientError> {
        let count = self.call(&Request::List(folder.cloned()))?;
        let mut entries = Vec::new();
        for _ in 0..count {
            entries.push(ListEntry::parse(self.read_line()?)?);
        }
        Ok(entries)
    }

    /// The server's counters, in the order it sent them.
    pub fn stats(&mut self) -> Result<Vec<(String, u64)>, ClientError> {
        let count = self.call(&Request::Stats)?;
        let mut stats = Vec::new();
        for _ in 0..count {
            stats.push(protocol::parse_stat(self.read_line()?)?);
        }
        Ok(stats)
    }

    /// Downloads `name` into `out`, returning its size. Stops at the first local write error
    /// (the connection is then unusable): meant for streams such as stdout.
    pub fn get(&mut self, name: &Name, out: &mut impl Write) -> Result<u64, ClientError> {
        let size = self.call(&Request::Get(name.clone()))?;
        match self.copy_body(size, out, false)? {
            Ok(()) => Ok(size),
            Err(source) => Err(ClientError::Local { path: "-".into(), source }),
        }
    }

    /// Downloads `name` to `<dir>/<name>` by way of `<dir>/<name>.part`; returns its size.
    /// A local error (disk full, a folder in the way) leaves the connection usable.
    pub fn download(&mut self, name: &Name, dir: &OutDir) -> Result<u64, ClientError> {
        let size = self.call(&Request::Get(name.clone()))?;
        let part = dir.path().join(name.part_path());
        let local = |source| ClientError::Local { path: part.clone(), source };
        let mut file = match dir.create_part(name) {
            Ok(file) => BufWriter::with_capacity(64 << 10, file),
            Err(e) => {
                self.copy_body(size, &mut io::sink(), true)?.ok();
                return Err(local(e));
            }
        };
        self.copy_body(size, &mut file, true)?.map_err(local)?;
        file.into_inner().map_err(|e| local(e.into_error()))?;
        dir.finish(name).map_err(|source| ClientError::Local { path: dir.path().join(name.as_path()), source })?;
        Ok(size)
    }

    /// Says goodbye and closes the connection.
    pub fn quit(mut self) -> Result<(), ClientError> {
        self.call(&Request::Quit)?;
        Ok(())
    }

    /// Sends a request and reads its status line; returns the count or size an `OK` carries.
    fn call(&mut self, request: &Request) -> Result<u64, ClientError> {
        if self.broken {
            return Err(ClientError::Broken);
        }
        self.broken = true;
        writeln!(self.writer, "{request}")?;
        self.writer.flush()?;
        let fields = match protocol::read_status(&mut self.reader, &mut self.line)? {
            Ok(fields) => fields,
            Err(reply) => {
                self.broken = false;
                return Err(ClientError::Server(reply));
            }
        };
        let count = if *request == Request::Quit { 0 } else { protocol::parse_count(&fields)? };
        self.broken = false;
        Ok(count)
    }

    fn read_line(&mut self) -> Result<&[u8], ClientError> {
        if !protocol::read_line(&mut self.reader, &mut self.line, MAX_REPLY_LINE)? {
            self.broken = true;
            return Err(ProtocolError::Closed.into());
        }
        Ok(&self.line)
    }

    /// Moves exactly `size` body bytes from the connection into `out`. The outer error is the
    /// connection's; the inner one is `out`'s. With `drain`, a failing `out` does not stop the
    /// reading, so the connection stays in step.
    fn copy_body(&mut self, size: u64, out: &mut impl Write, drain: bool) -> Result<io::Result<()>, ClientError> {
        self.broken = true;
        let mut left = size;
        let mut local = Ok(());
        while left > 0 {
            let chunk = match self.reader.fill_buf() {
                Ok([]) => return Err(ClientError::ShortBody { expected: size, received: size - left }),
                Ok(chunk) => chunk,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            let n = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            if local.is_ok() {
                local = out.write_all(&chunk[..n]);
                if local.is_err() && !drain {
                    return Ok(local);
                }
            }
            self.reader.consume(n);
            left -= n as u64;
        }
        self.broken = false;
        Ok(local.and_then(|()| out.flush()))
    }
}

/// The local folder downloads are saved in; every path written is a checked [`Name`] beneath it.
pub struct OutDir {
    dir: Dir,
    path: PathBuf,
}

impl OutDir {
    /// Opens `path`, creating it (and its parents) if missing.
    pub fn create(path: &Path) -> io::Result<OutDir> {
        std::fs::create_dir_all(path)?;
        let dir = Dir::open_ambient_dir(path, cap_std::ambient_authority())?;
        Ok(OutDir { dir, path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates (or truncates) `<name>.part`, with its sub-folders.
    fn create_part(&self, name: &Name) -> io::Result<std::fs::File> {
        if let Some(parent) = name.parent() {
            self.dir.create_dir_all(parent)?;
        }
        let options = OpenOptions::new().write(true).create(true).truncate(true).clone();
        Ok(self.dir.open_with(name.part_path(), &options)?.into_std())
    }

    /// Renames the complete `<name>.part` to `<name>`, replacing an older copy in one step.
    fn finish(&self, name: &Name) -> io::Result<()> {
        self.dir.rename(name.part_path(), &self.dir, name.as_path())
    }
}
