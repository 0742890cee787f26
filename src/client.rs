//! The client: one connection, the requests over it, and saving downloads safely.
//!
//! A [`Client`] speaks the protocol over one TCP connection and never trusts it: status lines
//! and list entries are parsed strictly, a body is read to exactly its announced size through a
//! fixed buffer (a body that ends early is an error, bytes beyond it are never written), and
//! every body is hashed as it streams in and checked against the digest the server announced.
//!
//! Downloads go through an [`OutDir`]: every path is a checked [`Name`] opened beneath the output
//! folder without following any symlink, bytes go to `<name>.part`, and the `.part` is renamed to
//! `<name>` only once complete and verified. A failed transfer leaves no file under the final name
//! and never destroys an existing copy; an interrupted one keeps its `.part` so `resume` can
//! continue it, and one that fails verification deletes it.

use std::io::{self, BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use cap_fs_ext::{DirExt, FollowSymlinks, OpenOptionsFollowExt};
use cap_std::fs::{Dir, File, OpenOptions};

use crate::digest::{Digest, Hasher, feed_file};
use crate::name::Name;
use crate::protocol::{self, ErrorReply, GetHeader, ListEntry, MAX_REPLY_LINE, ProtocolError, Request};

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
    #[error("integrity check failed: the server announced xxh3 {expected}, the bytes received hash to {actual}")]
    Integrity { expected: Digest, actual: Digest },
    #[error("cannot write {}: {source}", path.display())]
    Local { path: PathBuf, source: io::Error },
    #[error("the connection is out of step after an earlier error")]
    Broken,
}

/// What a download did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Downloaded {
    /// The file's size.
    pub size: u64,
    /// Bytes kept from an earlier `.part` (0 for a fresh download).
    pub resumed_from: u64,
    /// A `.part` was found but did not match the server's file, so it was discarded.
    pub started_over: bool,
    pub digest: Digest,
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
    /// and writes then time out after `timeout` without progress.
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
        let count = self.call_count(&Request::List(folder.cloned()))?;
        let mut entries = Vec::new();
        for _ in 0..count {
            entries.push(ListEntry::parse(self.read_line()?)?);
        }
        Ok(entries)
    }

    /// The server's counters, in the order it sent them.
    pub fn stats(&mut self) -> Result<Vec<(String, u64)>, ClientError> {
        let count = self.call_count(&Request::Stats)?;
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
        let header = self.call_get(&Request::Get(name.clone()))?;
        let mut hasher = Hasher::default();
        if let Err(source) = self.copy_body(header.len, out, &mut hasher, false)? {
            return Err(ClientError::Local { path: "-".into(), source });
        }
        verify(&header, &hasher)?;
        Ok(header.size)
    }

    /// Downloads `name` to `<dir>/<name>` by way of `<dir>/<name>.part` and verifies it. With
    /// `resume`, an existing `.part` is continued if the server confirms its bytes match the
    /// file's first bytes; otherwise it is started over. A local error (disk full, a folder in the
    /// way) leaves the connection usable.
    pub fn download(&mut self, name: &Name, dir: &OutDir, resume: bool) -> Result<Downloaded, ClientError> {
        let local = |source| ClientError::Local { path: dir.path().join(name.part_path()), source };
        let mut hasher = Hasher::default();
        let existing = if resume { dir.existing_part(name).map_err(local)? } else { None };
        let request = match &existing {
            Some((file, len)) if *len > 0 => {
                feed_file(file, 0, *len, &mut hasher).map_err(local)?;
                Request::Resume { offset: *len, prefix: hasher.digest(), name: name.clone() }
            }
            _ => Request::Get(name.clone()),
        };
        let header = self.call_get(&request)?;
        let found = existing.as_ref().map_or(0, |(_, len)| *len);
        if header.offset != 0 && header.offset != found {
            self.broken = true;
            return Err(
                ProtocolError::Malformed(format!("resume from {} when {found} was asked", header.offset)).into()
            );
        }
        let opened = match existing {
            // Append after the prefix the server confirmed.
            Some((mut file, _)) if header.offset > 0 => file.seek(SeekFrom::Start(header.offset)).map(|_| file),
            // Fresh, or a .part the server did not confirm: start over.
            _ => {
                hasher = Hasher::default();
                dir.create_part(name)
            }
        };
        let mut file = match opened {
            Ok(file) => BufWriter::with_capacity(64 << 10, file),
            Err(e) => {
                self.copy_body(header.len, &mut io::sink(), &mut hasher, true)?.ok();
                return Err(local(e));
            }
        };
        self.copy_body(header.len, &mut file, &mut hasher, true)?.map_err(local)?;
        drop(file.into_inner().map_err(|e| local(e.into_error()))?);
        if let Err(e) = verify(&header, &hasher) {
            dir.remove_part(name);
            return Err(e);
        }
        dir.finish(name).map_err(|source| ClientError::Local { path: dir.path().join(name.as_path()), source })?;
        let started_over = found > 0 && header.offset == 0;
        Ok(Downloaded { size: header.size, resumed_from: header.offset, started_over, digest: header.digest })
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
        self.broken = true;
        writeln!(self.writer, "{request}")?;
        self.writer.flush()?;
        let status = protocol::read_status(&mut self.reader, &mut self.line)?;
        self.broken = false;
        status.map_err(ClientError::Server)
    }

    fn call_count(&mut self, request: &Request) -> Result<u64, ClientError> {
        let fields = self.call(request)?;
        protocol::parse_count(&fields).inspect_err(|_| self.broken = true).map_err(Into::into)
    }

    fn call_get(&mut self, request: &Request) -> Result<GetHeader, ClientError> {
        let fields = self.call(request)?;
        GetHeader::parse(&fields).inspect_err(|_| self.broken = true).map_err(Into::into)
    }

    fn read_line(&mut self) -> Result<&[u8], ClientError> {
        if !protocol::read_line(&mut self.reader, &mut self.line, MAX_REPLY_LINE)? {
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
            let chunk = match self.reader.fill_buf() {
                Ok([]) => return Err(ClientError::ShortBody { expected: len, received: len - left }),
                Ok(chunk) => chunk,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            let n = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            hasher.update(&chunk[..n]);
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

fn verify(header: &GetHeader, hasher: &Hasher) -> Result<(), ClientError> {
    let actual = hasher.digest();
    if actual != header.digest {
        return Err(ClientError::Integrity { expected: header.digest, actual });
    }
    Ok(())
}

/// The local folder downloads are saved in. Every path written is a checked [`Name`] resolved
/// beneath it one component at a time, refusing to follow any symlink found there.
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

    /// The folder holding `name` (created if `create`) and the name's last component.
    fn parent<'n>(&self, name: &'n Name, create: bool) -> io::Result<(Dir, &'n str)> {
        let (folders, file) = name.as_str().rsplit_once('/').unwrap_or(("", name.as_str()));
        let mut dir = self.dir.try_clone()?;
        for part in folders.split('/').filter(|p| !p.is_empty()) {
            dir = match dir.open_dir_nofollow(part) {
                Ok(next) => next,
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    dir.create_dir(part)?;
                    dir.open_dir_nofollow(part)?
                }
                Err(e) => return Err(not_a_symlink(e, part)),
            };
        }
        Ok((dir, file))
    }

    /// Creates (or truncates) `<name>.part`, and its folders, without following symlinks.
    fn create_part(&self, name: &Name) -> io::Result<std::fs::File> {
        let (dir, file) = self.parent(name, true)?;
        let part = format!("{file}.part");
        let options = OpenOptions::new().write(true).create(true).truncate(true).follow(FollowSymlinks::No).clone();
        let opened: File = dir.open_with(&part, &options).map_err(|e| not_a_symlink(e, &part))?;
        Ok(opened.into_std())
    }

    /// An existing `<name>.part` and its length, opened without following symlinks.
    fn existing_part(&self, name: &Name) -> io::Result<Option<(std::fs::File, u64)>> {
        let (dir, file) = match self.parent(name, false) {
            Ok(found) => found,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let part = format!("{file}.part");
        let options = OpenOptions::new().read(true).write(true).follow(FollowSymlinks::No).clone();
        match dir.open_with(&part, &options) {
            Ok(opened) => {
                let len = opened.metadata()?.len();
                Ok(Some((opened.into_std(), len)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(not_a_symlink(e, &part)),
        }
    }

    /// Deletes `<name>.part` (after a failed check), if it is there.
    fn remove_part(&self, name: &Name) {
        if let Ok((dir, file)) = self.parent(name, false) {
            let _ = dir.remove_file(format!("{file}.part"));
        }
    }

    /// Renames the complete `<name>.part` to `<name>`, replacing an older copy in one step (a
    /// symlink at `<name>` is replaced, not followed).
    fn finish(&self, name: &Name) -> io::Result<()> {
        let (dir, file) = self.parent(name, false)?;
        dir.rename(format!("{file}.part"), &dir, file)
    }
}

/// Names the symlink when an open refused to follow one.
fn not_a_symlink(e: io::Error, what: &str) -> io::Error {
    if e.raw_os_error() == Some(libc::ELOOP) || e.raw_os_error() == Some(libc::ENOTDIR) {
        return io::Error::new(e.kind(), format!("'{what}' is a symlink or not a folder; not following it"));
    }
    e
}
