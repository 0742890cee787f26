//! Uploads: `put` of files (pipelined over one connection, each hashed and verified by the
//! server, interrupted ones resumed), and the walk of local folders that `put -r` sends.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::{Client, ClientError, SMALL_FILE, Uploaded, WINDOW};
use crate::digest::{Digest, Hasher};
use crate::name::Name;
use crate::wire::{self as protocol, ProtocolError, PutTrailer, Request};

/// Files of this size and more are resumable: the server says first whether it takes them and
/// how much of an interrupted upload it holds (the server's `RESUMABLE_FROM`).
pub const RESUMABLE_FROM: u64 = crate::store::RESUMABLE_FROM;

/// How `put` goes about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutOptions {
    /// Replace a file the server has (where the server allows it).
    pub force: bool,
    /// Continue an interrupted upload the server holds, once its bytes are proved to be this
    /// file's first bytes.
    pub resume: bool,
}

impl Default for PutOptions {
    fn default() -> PutOptions {
        PutOptions { force: false, resume: true }
    }
}

/// A local file read for sending.
struct Outgoing {
    file: File,
    size: u64,
    mtime: (i64, u32),
    /// Permission bits.
    perm: u32,
    /// What identifies this version of the file (size, modification and change times), to see
    /// whether it changed while it was sent.
    version: (u64, i64, i64, i64, i64),
    /// A small file: read once, whole, with its digest.
    whole: Option<(Vec<u8>, Digest)>,
}

impl Outgoing {
    /// Opens `local`; a small file is read once, into memory, and hashed.
    fn read(local: &Path) -> Result<Outgoing, ClientError> {
        let local_error = |source| ClientError::Unreadable { path: local.to_path_buf(), source };
        let file = File::open(local).map_err(local_error)?;
        let meta = file.metadata().map_err(local_error)?;
        if !meta.is_file() {
            return Err(local_error(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file")));
        }
        let size = meta.len();
        let mtime = (meta.mtime(), u32::try_from(meta.mtime_nsec()).unwrap_or(0));
        let perm = meta.mode() & 0o7777;
        let version = version_of(&meta);
        if size <= SMALL_FILE {
            let mut bytes = vec![0u8; size as usize];
            file.read_exact_at(&mut bytes, 0).map_err(local_error)?;
            let digest = Digest::of(&bytes);
            return Ok(Outgoing { file, size, mtime, perm, version, whole: Some((bytes, digest)) });
        }
        Ok(Outgoing { file, size, mtime, perm, version, whole: None })
    }

    /// Whether the file is still the version that was opened.
    fn unchanged(&self) -> bool {
        self.file.metadata().is_ok_and(|meta| version_of(&meta) == self.version)
    }
}

fn version_of(meta: &std::fs::Metadata) -> (u64, i64, i64, i64, i64) {
    (meta.len(), meta.mtime(), meta.mtime_nsec(), meta.ctime(), meta.ctime_nsec())
}

impl Client {
    /// Uploads each local file in `files` as its name on the server (`put`), pipelined over this
    /// connection, each with its size and modification time, and the server stores it only if
    /// every byte arrives and matches its digest. A small file is read once and its digest sent
    /// ahead of it; a bigger one is hashed as it is sent and its digest follows its bytes (one
    /// read of the file), or if it changed meanwhile an `abort`, which stores nothing. A file of
    /// [`RESUMABLE_FROM`] bytes or more is first announced (`partial`): the server refuses it
    /// there if it would refuse the upload, which costs no bytes, or says how much of an
    /// interrupted upload of it it holds, which is sent on from there if its digest matches this
    /// file's start. `each` hears each result in order: a local file that cannot be read is
    /// reported without being sent. Stops at an error that leaves the connection out of step.
    pub fn put_all(
        &mut self,
        files: &[(PathBuf, Name)],
        options: PutOptions,
        mut each: impl FnMut(&Name, Result<Uploaded, ClientError>),
    ) -> Result<(), ClientError> {
        if !self.agreed()?.has(protocol::FEATURE_PUT) {
            return Err(ProtocolError::Malformed("this server does not know put (it predates uploads)".into()).into());
        }
        let mut pending: VecDeque<(&Name, u64)> = VecDeque::with_capacity(WINDOW);
        for (local, name) in files {
            let outgoing = match Outgoing::read(local) {
                Ok(outgoing) => outgoing,
                Err(e) => {
                    self.replies(&mut pending, 0, &mut each)?;
                    each(name, Err(e));
                    continue;
                }
            };
            let mut start = (0, Hasher::default());
            if outgoing.size >= RESUMABLE_FROM {
                self.replies(&mut pending, 0, &mut each)?;
                let (size, mtime) = (outgoing.size, outgoing.mtime);
                self.send(&Request::Partial { size, mtime, replace: options.force, name: name.clone() })?;
                self.flush()?;
                match self.read_size_and_digest()? {
                    Err(refused) => {
                        each(name, Err(refused));
                        continue;
                    }
                    Ok((held, prefix)) if options.resume && held > 0 && held <= size => {
                        let mut hasher = Hasher::default();
                        crate::digest::feed_file(&outgoing.file, 0, held, &mut hasher)
                            .map_err(|source| ClientError::Unreadable { path: local.clone(), source })?;
                        if hasher.digest() == prefix {
                            start = (held, hasher);
                        }
                    }
                    Ok(_) => {}
                }
            }
            let from = start.0;
            self.send_put(&outgoing, name, start, options.force)?;
            pending.push_back((name, from));
            // A full window: the older half is answered while the server stores the newer.
            if pending.len() >= WINDOW {
                self.replies(&mut pending, WINDOW / 2, &mut each)?;
            }
        }
        self.replies(&mut pending, 0, &mut each)
    }

    /// Reads the replies to the `put`s sent, oldest first, until at most `left` are unanswered.
    fn replies(
        &mut self,
        pending: &mut VecDeque<(&Name, u64)>,
        left: usize,
        each: &mut impl FnMut(&Name, Result<Uploaded, ClientError>),
    ) -> Result<(), ClientError> {
        if pending.len() <= left {
            return Ok(());
        }
        self.flush()?;
        while pending.len() > left {
            let Some((name, from)) = pending.pop_front() else { break };
            let result = self.read_size_and_digest()?;
            each(name, result.map(|(size, digest)| Uploaded { size, digest, resumed_from: from }));
        }
        Ok(())
    }

    /// Sends one `put` of `outgoing` as `name`: its line, then exactly its bytes from `from` on,
    /// `hasher` having hashed those before. A small file's digest goes ahead of it; a bigger
    /// one's follows its bytes, hashed as they are sent: `abort` instead if the file changed or
    /// shrank meanwhile (a shrunk file's missing bytes are sent as zeros first, so the connection
    /// stays in step).
    fn send_put(
        &mut self,
        outgoing: &Outgoing,
        name: &Name,
        (from, mut hasher): (u64, Hasher),
        replace: bool,
    ) -> Result<(), ClientError> {
        let Outgoing { ref file, size, mtime, perm, ref whole, .. } = *outgoing;
        let digest = whole.as_ref().map(|(_, digest)| *digest);
        self.send(&Request::Put { size, digest, mtime, from, replace, perm, name: name.clone() })?;
        if let Some(progress) = &self.progress {
            progress.begin(name, size - from);
        }
        if let Some((bytes, _)) = whole {
            self.stream.write_all(&bytes[from as usize..]).inspect_err(|_| self.broken = true)?;
            if let Some(progress) = &self.progress {
                progress.advance(size - from);
            }
            return Ok(());
        }
        self.broken = true;
        let mut buf = vec![0u8; usize::try_from(size - from).unwrap_or(usize::MAX).clamp(1, 64 << 10)];
        let mut sent = from;
        while sent < size {
            let want = (size - sent).min(buf.len() as u64) as usize;
            let n = match file.read_at(&mut buf[..want], sent) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            hasher.update(&buf[..n]);
            self.stream.write_all(&buf[..n])?;
            sent += n as u64;
            if let Some(progress) = &self.progress {
                progress.advance(n as u64);
            }
        }
        let whole = sent == size && outgoing.unchanged();
        // The file shrank or could not be read part-way: the rest is padded, and given up on.
        buf.fill(0);
        while sent < size {
            let n = (size - sent).min(buf.len() as u64) as usize;
            self.stream.write_all(&buf[..n])?;
            sent += n as u64;
        }
        let trailer = if whole { PutTrailer::Digest(hasher.digest()) } else { PutTrailer::Abort };
        self.stream.write_all(format!("{trailer}\n").as_bytes())?;
        self.broken = false;
        Ok(())
    }

    /// What the server has beneath `folder`, by name: each file's size and modification time
    /// (seconds, nanoseconds), for `put -r` to skip what is already there. A folder the server
    /// does not have holds nothing.
    pub fn remote_files(&mut self, folder: Option<&Name>) -> Result<HashMap<Name, (u64, i64, u32)>, ClientError> {
        let mut files = HashMap::new();
        let listed = self.list_all_each(folder, |entry| {
            if entry.is_file() {
                files.insert(entry.name, (entry.size, entry.mtime, entry.mtime_nsec));
            }
            Ok(())
        });
        match listed {
            Ok(_) => Ok(files),
            Err(ClientError::Server(reply))
                if matches!(reply.kind(), Some(protocol::ErrorCode::NotFound | protocol::ErrorCode::NotFile)) =>
            {
                Ok(HashMap::new())
            }
            Err(e) => Err(e),
        }
    }
}

/// What [`local_tree`] left out.
#[derive(Debug)]
pub enum Skipped {
    /// A symlink, fifo, socket or device: only regular files and folders are sent (symlinks are
    /// not followed, as `rsync` without `-l` does).
    NotRegular(PathBuf),
    /// A file or folder whose name is not a valid name on the server (not UTF-8, a control
    /// character...).
    BadName(PathBuf, String),
    /// A folder that could not be read.
    Unreadable(ClientError),
}

/// The regular files beneath the local `folder`, each with its name on the server: `to/`, then
/// the folder's own name, then its path beneath it (as `scp -r` lays it out), sorted by name.
/// Symlinks are not followed. What is left out is told to `skipped`. Returns the folder's name
/// on the server with the files, or `None` if it cannot be named there.
pub fn local_tree(
    folder: &Path,
    to: Option<&Name>,
    mut skipped: impl FnMut(Skipped),
) -> Option<(Name, Vec<(PathBuf, Name)>)> {
    let top = match folder.file_name().and_then(|n| n.to_str()) {
        Some(n) => n.to_string(),
        // `.` or `..` or `/`: the name of the folder it stands for.
        None => match std::fs::canonicalize(folder).ok().and_then(|p| p.file_name()?.to_str().map(String::from)) {
            Some(n) => n,
            None => {
                skipped(Skipped::BadName(folder.to_path_buf(), "has no usable name".into()));
                return None;
            }
        },
    };
    let top = match to {
        Some(to) => to.join(&top),
        None => Name::parse(&top),
    };
    let top = match top {
        Ok(top) => top,
        Err(e) => {
            skipped(Skipped::BadName(folder.to_path_buf(), e.to_string()));
            return None;
        }
    };
    let mut files = Vec::new();
    let mut stack = vec![(folder.to_path_buf(), top.clone())];
    while let Some((dir, name)) = stack.pop() {
        let read = match std::fs::read_dir(&dir) {
            Ok(read) => read,
            Err(source) => {
                skipped(Skipped::Unreadable(ClientError::Unreadable { path: dir, source }));
                continue;
            }
        };
        for entry in read {
            let entry = match entry {
                Ok(entry) => entry,
                Err(source) => {
                    skipped(Skipped::Unreadable(ClientError::Unreadable { path: dir.clone(), source }));
                    break;
                }
            };
            let path = entry.path();
            let child = match entry.file_name().to_str().map(|n| name.join(n)) {
                Some(Ok(child)) => child,
                Some(Err(e)) => {
                    skipped(Skipped::BadName(path, e.to_string()));
                    continue;
                }
                None => {
                    skipped(Skipped::BadName(path, "not UTF-8".into()));
                    continue;
                }
            };
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => stack.push((path, child)),
                Ok(kind) if kind.is_file() => files.push((path, child)),
                Ok(_) => skipped(Skipped::NotRegular(path)),
                Err(source) => skipped(Skipped::Unreadable(ClientError::Unreadable { path, source })),
            }
        }
    }
    files.sort_by(|a, b| a.1.cmp(&b.1));
    Some((top, files))
}
