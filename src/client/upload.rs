//! Uploads: `put` of files (pipelined over one connection, each hashed and verified by the
//! server, interrupted ones resumed) as a sync: what the server has unchanged is skipped, what
//! changed is replaced where the server allows it; and the walk of local folders that `put -r`
//! sends, with their folders (empty ones too) and modes.
//!
//! A file found by walking a folder is opened, when it is sent, beneath that folder one component
//! at a time without following a symlink ([`LocalFile::Beneath`]): an entry swapped for a symlink
//! after the walk (to a secret of the uploader's, say) is refused, never sent.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{Mode, OFlags};

use super::{Client, ClientError, SMALL_FILE, Uploaded, WINDOW};
use crate::digest::{Digest, Hasher};
use crate::name::Name;
use crate::wire::{self as protocol, EntryKind, MetaEntry, ProtocolError, PutTrailer, Reply, Request, Summed};

/// Files of this size and more are resumable: the server says first whether it takes them and
/// how much of an interrupted upload it holds (the server's `RESUMABLE_FROM`).
pub use crate::wire::RESUMABLE_FROM;

/// How `put` goes about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutOptions {
    /// Send every file, even one the server has unchanged, replacing what it has (where the
    /// server allows it).
    pub force: bool,
    /// Continue an interrupted upload the server holds, once its bytes are proved to be this
    /// file's first bytes.
    pub resume: bool,
    /// Decide "unchanged" by size and digest (one read of the local file, the server's digest
    /// without its bytes) instead of size and modification time.
    pub checksum: bool,
}

impl Default for PutOptions {
    fn default() -> PutOptions {
        PutOptions { force: false, resume: true, checksum: false }
    }
}

/// What became of one file given to [`Client::put_sync`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// Stored (new, or replacing the server's copy).
    Sent(Uploaded),
    /// The server has it unchanged: not sent.
    Unchanged,
}

/// A local file to send.
#[derive(Debug, Clone)]
pub enum LocalFile {
    /// A file named on the command line: opened as the path says (symlinks followed, as scp does).
    Path(PathBuf),
    /// A file found by walking a folder: opened beneath that folder (`top`), one component of
    /// `rel` at a time, never through a symlink. `path` is what messages call it.
    Beneath { top: Arc<OwnedFd>, rel: PathBuf, path: PathBuf },
}

impl LocalFile {
    /// What messages call it.
    pub fn path(&self) -> &Path {
        match self {
            LocalFile::Path(path) | LocalFile::Beneath { path, .. } => path,
        }
    }

    /// Its size and modification time, looked up without opening it (for deciding whether to
    /// send it; what is sent is checked again when it is opened). `None` if it cannot be, or if
    /// it is no longer a regular file.
    fn stamp(&self) -> Option<(u64, (i64, u32))> {
        let st = match self {
            LocalFile::Path(path) => rustix::fs::stat(path).ok()?,
            LocalFile::Beneath { top, rel, .. } => {
                rustix::fs::statat(&**top, rel, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).ok()?
            }
        };
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
            return None;
        }
        let mtime = (st.st_mtime, u32::try_from(st.st_mtime_nsec).unwrap_or(0));
        Some((st.st_size.max(0) as u64, mtime))
    }

    /// Opens it for reading (non-blocking, so a fifo swapped in cannot stall), and checks it is a
    /// regular file.
    fn open(&self) -> io::Result<File> {
        let file = match self {
            LocalFile::Path(path) => {
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::File::options().read(true).custom_flags(libc_nonblock()).open(path)?
            }
            LocalFile::Beneath { top, rel, .. } => open_beneath(top, rel)?,
        };
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
        }
        Ok(file)
    }
}

/// `O_NONBLOCK`, as `OpenOptionsExt::custom_flags` takes it.
fn libc_nonblock() -> i32 {
    OFlags::NONBLOCK.bits() as i32
}

/// Opens `rel` beneath the folder `top` without following a symlink anywhere on the way.
fn open_beneath(top: &OwnedFd, rel: &Path) -> io::Result<File> {
    let parts: Vec<&[u8]> = rel.as_os_str().as_bytes().split(|&b| b == b'/').collect();
    let folder_flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC;
    let symlink = |e: rustix::io::Errno| -> io::Error {
        match e {
            rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => io::Error::new(
                io::ErrorKind::InvalidInput,
                "it is a symlink now (it was not when the folder was read); not followed, not sent",
            ),
            e => e.into(),
        }
    };
    let Some((last, folders)) = parts.split_last() else {
        return Err(io::ErrorKind::NotFound.into());
    };
    let mut here: Option<OwnedFd> = None;
    for part in folders {
        let at = here.as_ref().unwrap_or(top);
        here = Some(rustix::fs::openat(at, OsStr::from_bytes(part), folder_flags, Mode::empty()).map_err(symlink)?);
    }
    let at = here.as_ref().unwrap_or(top);
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    Ok(File::from(rustix::fs::openat(at, OsStr::from_bytes(last), flags, Mode::empty()).map_err(symlink)?))
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
    fn read(local: &LocalFile) -> Result<Outgoing, ClientError> {
        let local_error = |source| ClientError::Unreadable { path: local.path().to_path_buf(), source };
        let file = local.open().map_err(local_error)?;
        let meta = file.metadata().map_err(local_error)?;
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

    /// Its digest: a small file's is known; a big one is read for it.
    fn digest(&self) -> io::Result<Digest> {
        match &self.whole {
            Some((_, digest)) => Ok(*digest),
            None => crate::digest::hash_file(&self.file, self.size, None).map(|(digest, _)| digest),
        }
    }
}

fn version_of(meta: &std::fs::Metadata) -> (u64, i64, i64, i64, i64) {
    (meta.len(), meta.mtime(), meta.mtime_nsec(), meta.ctime(), meta.ctime_nsec())
}

/// What the server has, by name (as `walk` or `stat` says it), for deciding what to send.
pub type Remote = HashMap<Name, MetaEntry>;

impl Client {
    /// Uploads each local file in `files` as its name on the server, as a sync: a file the server
    /// has with the same size and modification time (with `checksum`, the same size and digest)
    /// is not sent ([`Put::Unchanged`]); one it has otherwise is sent to replace it, which the
    /// server does only where it allows replacing (else it refuses, saying why); a new one is
    /// sent as new. What the server has is `remote` if given (a listing of the folder), else
    /// asked name by name (`stat`, pipelined). A server that predates protocol version 2 cannot
    /// say: every file is sent, replacing only with `force`. `each` hears each file's result
    /// (unchanged ones first). Stops at an error that leaves the connection out of step.
    pub fn put_sync(
        &mut self,
        files: &[(LocalFile, Name)],
        remote: Option<&Remote>,
        options: PutOptions,
        mut each: impl FnMut(&Name, Result<Put, ClientError>),
    ) -> Result<(), ClientError> {
        let asked;
        let remote = match remote {
            Some(remote) => Some(remote),
            None if self.walks()? => {
                let names: Vec<&Name> = files.iter().map(|(_, name)| name).collect();
                asked = self.stat_all(&names)?;
                Some(&asked)
            }
            None => None,
        };
        let Some(remote) = remote else {
            let plan: Vec<_> = files.iter().map(|(local, name)| (local, name, options.force)).collect();
            return self.put_list(&plan, options, |name, result| each(name, result.map(Put::Sent)));
        };
        // Same size (and, without checksum, the same time): compared by digest with checksum.
        let looks_same = |local: &LocalFile, name: &Name| -> bool {
            let Some(theirs) = remote.get(name).filter(|e| e.is_file()) else { return false };
            let Some((size, mtime)) = local.stamp() else { return false };
            size == theirs.size && (options.checksum || mtime == theirs.mtime())
        };
        let mut send = Vec::with_capacity(files.len());
        let mut compare = Vec::new();
        for (local, name) in files {
            match (options.force, looks_same(local, name)) {
                (false, true) if options.checksum => compare.push((local, name)),
                (false, true) => each(name, Ok(Put::Unchanged)),
                _ => send.push((local, name, remote.contains_key(name) || options.force)),
            }
        }
        if !compare.is_empty() {
            let names: Vec<Name> = compare.iter().map(|(_, name)| (*name).clone()).collect();
            let mut theirs = HashMap::new();
            self.sum_all(&names, |name, result| {
                if let Ok((_, digest)) = result {
                    theirs.insert(name.clone(), digest);
                }
            })?;
            for (local, name) in compare {
                let ours = Outgoing::read(local).ok().and_then(|o| o.digest().ok());
                match ours.is_some() && ours == theirs.get(name).copied() {
                    true => each(name, Ok(Put::Unchanged)),
                    false => send.push((local, name, true)),
                }
            }
        }
        self.put_list(&send, options, |name, result| each(name, result.map(Put::Sent)))
    }

    /// What the server has at each of `names` (`stat`, pipelined): those it has, by name.
    pub fn stat_all(&mut self, names: &[&Name]) -> Result<Remote, ClientError> {
        let mut found = HashMap::new();
        for batch in names.chunks(WINDOW) {
            for name in batch {
                self.send(&Request::Stat((*name).clone()))?;
            }
            self.flush()?;
            for name in batch {
                let status = self.reading(|c| c.read_status())?;
                if let protocol::Status::Ok(fields) = status {
                    let entry = MetaEntry::parse(fields.as_bytes(), protocol::Form::Escaped)?;
                    if entry.name == **name {
                        found.insert(entry.name.clone(), entry);
                    }
                }
            }
        }
        Ok(found)
    }

    /// Uploads each local file in `files` as its name on the server (`put`), pipelined over this
    /// connection, each with its size, mode and modification time, and the server stores it only
    /// if every byte arrives and matches its digest; replacing what the server has only with
    /// `options.force` (see [`Client::put_sync`] for a sync). `each` hears each result in order.
    pub fn put_all(
        &mut self,
        files: &[(LocalFile, Name)],
        options: PutOptions,
        each: impl FnMut(&Name, Result<Uploaded, ClientError>),
    ) -> Result<(), ClientError> {
        let plan: Vec<_> = files.iter().map(|(local, name)| (local, name, options.force)).collect();
        self.put_list(&plan, options, each)
    }

    /// Sends each `(local, name, replace)`: a small file is read once and its digest sent ahead of
    /// it; a bigger one is hashed as it is sent and its digest follows its bytes (one read of the
    /// file), or if it changed meanwhile an `abort`, which stores nothing. A file of
    /// [`RESUMABLE_FROM`] bytes or more is first announced (`partial`): the server refuses it
    /// there if it would refuse the upload, which costs no bytes, or says how much of an
    /// interrupted upload of it it holds, which is sent on from there if its digest matches this
    /// file's start. A local file that cannot be read is reported without being sent.
    fn put_list(
        &mut self,
        files: &[(&LocalFile, &Name, bool)],
        options: PutOptions,
        mut each: impl FnMut(&Name, Result<Uploaded, ClientError>),
    ) -> Result<(), ClientError> {
        if files.is_empty() {
            return Ok(());
        }
        if !self.agreed()?.has(protocol::FEATURE_PUT) {
            return Err(ProtocolError::Malformed("this server does not know put (it predates uploads)".into()).into());
        }
        let mut pending: VecDeque<(&Name, u64)> = VecDeque::with_capacity(WINDOW);
        for &(local, name, replace) in files {
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
                self.send(&Request::Partial { size, mtime, replace, name: name.clone() })?;
                self.flush()?;
                match self.read_reply(Summed::parse)? {
                    Reply::Refused(refused) => {
                        each(name, Err(ClientError::Server(refused)));
                        continue;
                    }
                    Reply::Answer(Summed { size: held, digest: prefix })
                        if options.resume && held > 0 && held <= size =>
                    {
                        let mut hasher = Hasher::default();
                        crate::digest::feed_file(&outgoing.file, 0, held, &mut hasher)
                            .map_err(|source| ClientError::Unreadable { path: local.path().to_path_buf(), source })?;
                        if hasher.digest() == prefix {
                            start = (held, hasher);
                        }
                    }
                    Reply::Answer(_) => {}
                }
            }
            let from = start.0;
            if let Err(e) = self.send_put(&outgoing, name, start, replace) {
                // A name this server's version cannot carry: said of this file alone.
                if !self.broken {
                    each(name, Err(e));
                    continue;
                }
                return Err(e);
            }
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
            let stored = self.read_reply(Summed::parse)?.into_result().map_err(ClientError::Server);
            each(name, stored.map(|Summed { size, digest }| Uploaded { size, digest, resumed_from: from }));
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
            let written = self.stream.write_all(&bytes[from as usize..]);
            self.or_lost(written)?;
            if let Some(progress) = &self.progress {
                progress.advance(size - from);
            }
            return Ok(());
        }
        // Out of step until every announced byte and the trailer are written.
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

    /// Makes each folder on the server (`mkdir`, pipelined), with its mode and modification time,
    /// deepest first so that making one does not move the time of one above it: what `put -r`
    /// sends once the files are in, so empty folders arrive and every folder keeps its time.
    /// `each` hears each result. A server that predates protocol version 2 makes folders only on
    /// the way to a file: nothing is sent to it.
    pub fn make_folders(
        &mut self,
        folders: &[LocalFolder],
        mut each: impl FnMut(&Name, Result<(), ClientError>),
    ) -> Result<(), ClientError> {
        if !self.walks()? {
            return Ok(());
        }
        let mut order: Vec<&LocalFolder> = folders.iter().collect();
        order.sort_by_key(|f| std::cmp::Reverse(f.name.depth()));
        for batch in order.chunks(WINDOW) {
            for folder in batch {
                let request = Request::Mkdir { perm: folder.perm, mtime: folder.mtime, name: folder.name.clone() };
                self.send(&request)?;
            }
            self.flush()?;
            for folder in batch {
                let status = self.reading(|c| c.read_status())?;
                each(&folder.name, status.into_result().map(drop).map_err(ClientError::Server));
            }
        }
        Ok(())
    }

    /// What the server has beneath `folder` (the folder itself included), by name, for `put -r`
    /// to skip what is already there. A folder the server does not have holds nothing.
    pub fn remote_files(&mut self, folder: Option<&Name>) -> Result<Remote, ClientError> {
        let mut found = HashMap::new();
        let mut keep = |entry: MetaEntry| {
            found.insert(entry.name.clone(), entry);
            Ok(())
        };
        let listed = if self.walks()? {
            self.walk_each(folder, false, &mut keep)
        } else {
            self.list_all_each(folder, &mut keep)
        };
        match listed {
            Ok(_) => Ok(found),
            Err(ClientError::Server(reply))
                if matches!(reply.kind(), Some(protocol::ErrorCode::NotFound | protocol::ErrorCode::NotFile)) =>
            {
                Ok(HashMap::new())
            }
            Err(e) => Err(e),
        }
    }
}

/// A local folder `put -r` found: its name on the server, mode and modification time.
#[derive(Debug, Clone)]
pub struct LocalFolder {
    pub name: Name,
    pub perm: u32,
    pub mtime: (i64, u32),
}

/// What [`local_tree`] found beneath one local folder.
#[derive(Debug)]
pub struct LocalTree {
    /// The folder's name on the server.
    pub top: Name,
    /// Its regular files, each with its name on the server, sorted by name.
    pub files: Vec<(LocalFile, Name)>,
    /// Its folders, the folder itself first.
    pub folders: Vec<LocalFolder>,
}

/// What [`local_tree`] left out.
#[derive(Debug)]
pub enum Skipped {
    /// A symlink, fifo, socket or device: only regular files and folders are sent (what it is).
    NotRegular(PathBuf, &'static str),
    /// A file or folder whose name is not a valid name on the server (too long, say).
    BadName(PathBuf, String),
    /// A folder that could not be read.
    Unreadable(ClientError),
}

/// The regular files and folders beneath the local `folder`, each with its name on the server:
/// `to/`, then the folder's own name, then its path beneath it (as `scp -r` lays it out).
/// Symlinks are not followed; the files are opened later beneath the folder, never through one.
/// What is left out is told to `skipped`. `None` if the folder cannot be opened or named there.
pub fn local_tree(folder: &Path, to: Option<&Name>, mut skipped: impl FnMut(Skipped)) -> Option<LocalTree> {
    let top_name = match folder.file_name() {
        Some(n) => n.to_os_string(),
        // `.` or `..` or `/`: the name of the folder it stands for.
        None => match std::fs::canonicalize(folder).ok().and_then(|p| p.file_name().map(OsStr::to_os_string)) {
            Some(n) => n,
            None => {
                skipped(Skipped::BadName(folder.to_path_buf(), "has no usable name".into()));
                return None;
            }
        },
    };
    let top = match to {
        Some(to) => to.join(top_name.as_bytes()),
        None => Name::from_os(&top_name),
    };
    let top = match top {
        Ok(top) => top,
        Err(e) => {
            skipped(Skipped::BadName(folder.to_path_buf(), e.to_string()));
            return None;
        }
    };
    let unreadable =
        |path: &Path, source| Skipped::Unreadable(ClientError::Unreadable { path: path.to_path_buf(), source });
    let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
    let top_fd = match rustix::fs::open(folder, flags, Mode::empty()) {
        Ok(fd) => Arc::new(fd),
        Err(e) => {
            skipped(unreadable(folder, e.into()));
            return None;
        }
    };
    let folder_of = |meta: &std::fs::Metadata, name: Name| LocalFolder {
        name,
        perm: meta.mode() & 0o7777,
        mtime: (meta.mtime(), u32::try_from(meta.mtime_nsec()).unwrap_or(0)),
    };
    let mut tree = LocalTree { top: top.clone(), files: Vec::new(), folders: Vec::new() };
    if let Ok(meta) = std::fs::metadata(folder) {
        tree.folders.push(folder_of(&meta, top.clone()));
    }
    let mut stack = vec![(folder.to_path_buf(), PathBuf::new(), top.clone())];
    while let Some((dir, rel, name)) = stack.pop() {
        let read = match std::fs::read_dir(&dir) {
            Ok(read) => read,
            Err(source) => {
                skipped(unreadable(&dir, source));
                continue;
            }
        };
        for entry in read {
            let entry = match entry {
                Ok(entry) => entry,
                Err(source) => {
                    skipped(unreadable(&dir, source));
                    break;
                }
            };
            let path = entry.path();
            let child = match name.join(entry.file_name().as_bytes()) {
                Ok(child) => child,
                Err(e) => {
                    skipped(Skipped::BadName(path, e.to_string()));
                    continue;
                }
            };
            let child_rel = rel.join(entry.file_name());
            match entry.metadata() {
                Ok(meta) if meta.is_dir() => {
                    tree.folders.push(folder_of(&meta, child.clone()));
                    stack.push((path, child_rel, child));
                }
                Ok(meta) if meta.is_file() => {
                    let file = LocalFile::Beneath { top: top_fd.clone(), rel: child_rel, path };
                    tree.files.push((file, child));
                }
                Ok(meta) => skipped(Skipped::NotRegular(path, kind_of(&meta.file_type()))),
                Err(source) => skipped(unreadable(&path, source)),
            }
        }
    }
    tree.files.sort_by(|a, b| a.1.cmp(&b.1));
    Some(tree)
}

/// What a local entry that is not a regular file or a folder is, for people.
fn kind_of(kind: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let entry = if kind.is_symlink() {
        EntryKind::Symlink(Vec::new())
    } else if kind.is_fifo() {
        EntryKind::Fifo
    } else if kind.is_socket() {
        EntryKind::Socket
    } else if kind.is_char_device() {
        EntryKind::CharDevice
    } else {
        EntryKind::BlockDevice
    };
    entry.describe()
}
