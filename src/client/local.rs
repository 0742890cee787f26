//! The local side of an upload: the files `put` sends and the folders `put -r` walks for them.
//!
//! A file found by walking a folder is opened, when it is sent, beneath that folder one component
//! at a time without following a symlink ([`LocalFile::Beneath`]): an entry swapped for a symlink
//! after the walk (to a secret of the uploader's, say) is refused, never sent.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{Mode, OFlags};

use super::result::ClientError;
use super::saver::SMALL_FILE;
use crate::digest::Digest;
use crate::files::FileVersion;
use crate::mtime::Mtime;
use crate::name::Name;
use crate::wire::EntryKind;

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
    pub(super) fn stamp(&self) -> Option<(u64, Mtime)> {
        let st = match self {
            LocalFile::Path(path) => rustix::fs::stat(path).ok()?,
            LocalFile::Beneath { top, rel, .. } => {
                rustix::fs::statat(&**top, rel, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).ok()?
            }
        };
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
            return None;
        }
        let mtime = Mtime::of_stat(&st);
        Some((st.st_size.max(0) as u64, mtime))
    }

    /// Opens it for reading (non-blocking, so a fifo swapped in cannot stall), and checks it is a
    /// regular file.
    pub(super) fn open(&self) -> io::Result<File> {
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
pub(super) struct Outgoing {
    pub(super) file: File,
    pub(super) size: u64,
    pub(super) mtime: Mtime,
    /// Permission bits.
    pub(super) perm: u32,
    /// What identifies this version of the file (size, modification and change times), to see
    /// whether it changed while it was sent.
    pub(super) version: FileVersion,
    /// A small file: read once, whole, with its digest.
    pub(super) whole: Option<(Vec<u8>, Digest)>,
}

impl Outgoing {
    /// Opens `local`; a small file is read once, into memory, and hashed.
    pub(super) fn read(local: &LocalFile) -> Result<Outgoing, ClientError> {
        let local_error = |source| ClientError::Unreadable { path: local.path().to_path_buf(), source };
        let file = local.open().map_err(local_error)?;
        let meta = file.metadata().map_err(local_error)?;
        let size = meta.len();
        let mtime = Mtime::of(&meta);
        let perm = meta.mode() & 0o7777;
        let version = FileVersion::of_metadata(&meta);
        if size <= SMALL_FILE {
            let mut bytes = vec![0u8; size as usize];
            file.read_exact_at(&mut bytes, 0).map_err(local_error)?;
            let digest = Digest::of(&bytes);
            return Ok(Outgoing { file, size, mtime, perm, version, whole: Some((bytes, digest)) });
        }
        Ok(Outgoing { file, size, mtime, perm, version, whole: None })
    }

    /// Whether the file is still the version that was opened.
    pub(super) fn unchanged(&self) -> bool {
        self.file.metadata().is_ok_and(|meta| FileVersion::of_metadata(&meta) == self.version)
    }

    /// Its digest: a small file's is known; a big one is read for it.
    pub(super) fn digest(&self) -> io::Result<Digest> {
        match &self.whole {
            Some((_, digest)) => Ok(*digest),
            None => crate::digest::hash_file(&self.file, self.size, None).map(|(digest, _)| digest),
        }
    }
}

/// A local folder `put -r` found: its name on the server, mode and modification time.
#[derive(Debug, Clone)]
pub struct LocalFolder {
    pub name: Name,
    pub perm: u32,
    pub mtime: Mtime,
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
    let folder_of =
        |meta: &std::fs::Metadata, name: Name| LocalFolder { name, perm: meta.mode() & 0o7777, mtime: Mtime::of(meta) };
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
