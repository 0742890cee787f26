//! The served folder: stat, open and list files strictly beneath the root, and write one
//! beneath it (`put.rs`). It knows names and file versions, nothing of the wire: the server turns what it
//! finds into replies.
//!
//! Every access goes through a `cap_std::fs::Dir` opened once on the root, which resolves each
//! path beneath it (with `openat2(RESOLVE_BENEATH)` where the kernel has it, component by component
//! where it does not). A symlink that leads outside the root is refused by the same open that would
//! follow it, so there is no check-then-open race. Files are opened non-blocking and checked to be
//! regular, so a fifo or device in the tree cannot stall a connection's thread.

use std::io;
use std::path::{Path, PathBuf};

use cap_std::fs::{Dir, MetadataExt as _, OpenOptions, OpenOptionsExt as _};
use rustix::fs::{AtFlags, FileType, OFlags};
use rustix::io::Errno;

use crate::name::Name;

mod put;
pub(crate) use put::link_unnamed;
pub use put::{
    Cleaned, Expected, FOLDER_MODE, PARTIAL_TTL, Partial, PutError, RESUMABLE_FROM, STAGING, Stored, UPLOAD_MODE,
};

/// What identifies one version of a file's contents: a change to any field means new contents.
///
/// The change time is part of it because the modification time is not enough: `touch -d`,
/// `cp -p`, `tar x` and rsync all set a file's mtime back to an old value after rewriting it,
/// but no unprivileged call can set the ctime, which every write and every `utimes` moves on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FileVersion {
    pub size: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: i64,
    pub ctime_sec: i64,
    pub ctime_nsec: i64,
    pub ino: u64,
    pub dev: u64,
    /// Permission bits (`0o7777`): sent to clients so a saved copy is never more permissive.
    pub mode: u32,
}

impl FileVersion {
    /// The version of an open file (one `fstat`).
    pub(crate) fn of_file(file: &std::fs::File) -> io::Result<FileVersion> {
        Ok(FileVersion::of_stat(&rustix::fs::fstat(file)?))
    }

    /// [`FileVersion::of_file`], and how many names the file still has (0 once it was renamed
    /// over or deleted).
    pub(crate) fn of_file_linked(file: &std::fs::File) -> io::Result<(FileVersion, u64)> {
        let st = rustix::fs::fstat(file)?;
        Ok((FileVersion::of_stat(&st), st.st_nlink as u64))
    }

    fn of_stat(st: &rustix::fs::Stat) -> FileVersion {
        FileVersion {
            size: st.st_size as u64,
            mtime_sec: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec as i64,
            ctime_sec: st.st_ctime,
            ctime_nsec: st.st_ctime_nsec as i64,
            ino: st.st_ino,
            dev: st.st_dev,
            mode: st.st_mode & 0o7777,
        }
    }

    fn of_cap(m: &cap_std::fs::Metadata) -> FileVersion {
        FileVersion {
            size: m.len(),
            mtime_sec: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            ctime_sec: m.ctime(),
            ctime_nsec: m.ctime_nsec(),
            ino: m.ino(),
            dev: m.dev(),
            mode: m.mode() & 0o7777,
        }
    }

    /// The modification time: seconds and nanoseconds.
    pub fn mtime(&self) -> (i64, u32) {
        (self.mtime_sec, u32::try_from(self.mtime_nsec).unwrap_or(0))
    }

    /// The later of the modification and change times: when the contents last changed, as far
    /// as anyone could make them seem otherwise.
    pub fn changed(&self) -> (i64, i64) {
        (self.mtime_sec, self.mtime_nsec).max((self.ctime_sec, self.ctime_nsec))
    }
}

/// Why a name could not be served.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("no such file")]
    NotFound,
    #[error("not a regular file")]
    NotFile,
    #[error("access denied")]
    Denied,
    #[error("i/o error: {0}")]
    Io(io::Error),
}

impl From<io::Error> for OpenError {
    fn from(e: io::Error) -> OpenError {
        match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => OpenError::NotFound,
            // cap-std reports an escape from the root as PermissionDenied; ELOOP is a symlink loop.
            io::ErrorKind::PermissionDenied => OpenError::Denied,
            _ if e.raw_os_error() == Some(Errno::LOOP.raw_os_error()) => OpenError::Denied,
            _ => OpenError::Io(e),
        }
    }
}

/// One file (or, from [`Root::walk_all`], folder) found beneath the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub name: Name,
    /// 0 for a folder.
    pub size: u64,
    /// Modification time, seconds since the Unix epoch, and nanoseconds.
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    pub folder: bool,
}

impl FileEntry {
    fn of(name: Name, meta: Option<&cap_std::fs::Metadata>, folder: bool) -> FileEntry {
        match meta {
            Some(m) => FileEntry {
                name,
                size: if folder { 0 } else { m.len() },
                mtime: m.mtime(),
                mtime_nsec: u32::try_from(m.mtime_nsec()).unwrap_or(0),
                mode: m.mode() & 0o7777,
                folder,
            },
            None => FileEntry { name, size: 0, mtime: 0, mtime_nsec: 0, mode: 0, folder },
        }
    }
}

/// Why [`Root::walk`] stopped before the end.
#[derive(Debug, thiserror::Error)]
pub enum WalkError<E> {
    /// The folder asked for cannot be listed (missing, not a folder, refused).
    #[error(transparent)]
    Open(OpenError),
    /// A folder beneath it could not be read to its end: the listing is incomplete.
    #[error("cannot read {folder}: {source}")]
    Read { folder: String, source: io::Error },
    /// The caller's `each` returned an error.
    #[error("listing stopped")]
    Stopped(E),
}

/// Deepest folder nesting a walk follows: a [`Name`] of at most `MAX_NAME_LEN` bytes has at most
/// half as many components, so nothing servable lies deeper. Each level holds one open folder.
const MAX_DEPTH: usize = crate::name::MAX_NAME_LEN / 2;

/// The folder whose files are served.
pub struct Root {
    dir: Dir,
    path: PathBuf,
    /// The folder [`STAGING`] beneath the root, once uploads are on ([`Root::enable_uploads`]).
    staging: Option<put::Staging>,
}

/// Whether `name` lies in the uploads' staging folder, which is neither listed nor served.
pub fn is_reserved(name: &Name) -> bool {
    let s = name.as_str();
    s.strip_prefix(STAGING).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

impl Root {
    pub fn open(path: &Path) -> io::Result<Root> {
        let dir = Dir::open_ambient_dir(path, cap_std::ambient_authority())?;
        Ok(Root { dir, path: path.to_path_buf(), staging: None })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes an unprivileged writer may still store beneath the root.
    pub fn free_bytes(&self) -> io::Result<u64> {
        let st = rustix::fs::fstatvfs(&self.dir)?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }

    /// Whether anything (a file, a folder, a symlink, even a dangling one) holds `name`, looked up
    /// beneath the root: what an upload that may not replace checks before taking the bytes.
    pub fn holds(&self, name: &Name) -> bool {
        self.dir.symlink_metadata(name.as_path()).is_ok()
    }

    /// The current version of a regular file (symlinks inside the root are followed).
    pub fn stat(&self, name: &Name) -> Result<FileVersion, OpenError> {
        if is_reserved(name) {
            return Err(OpenError::NotFound);
        }
        let meta = self.dir.metadata(name.as_path())?;
        if !meta.is_file() {
            return Err(OpenError::NotFile);
        }
        Ok(FileVersion::of_cap(&meta))
    }

    /// The current version of a regular file, in one `fstatat` relative to the root: the cache's
    /// freshness check, made on every hit. Unlike [`Root::stat`] it follows the path as the kernel
    /// does, even through a symlink leading out of the root; that is safe here because its answer
    /// is only compared with the version of a file that was opened beneath the root, and a match
    /// means the very same inode, unchanged. It reveals nothing of a file outside. `None` when the
    /// file is gone or not a regular file.
    pub fn version(&self, name: &Name) -> Option<FileVersion> {
        if is_reserved(name) {
            return None;
        }
        let st = rustix::fs::statat(&self.dir, name.as_str(), AtFlags::empty()).ok()?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return None;
        }
        Some(FileVersion::of_stat(&st))
    }

    /// Opens a regular file for reading and returns it with the version it had when opened.
    pub fn open_file(&self, name: &Name) -> Result<(std::fs::File, FileVersion), OpenError> {
        if is_reserved(name) {
            return Err(OpenError::NotFound);
        }
        let mut options = OpenOptions::new();
        // Non-blocking so a fifo cannot stall the open; it changes nothing for regular files.
        options.read(true).custom_flags((OFlags::NONBLOCK | OFlags::NOCTTY).bits() as i32);
        let file = self.dir.open_with(name.as_path(), &options)?.into_std();
        let st = rustix::fs::fstat(&file).map_err(io::Error::from)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(OpenError::NotFile);
        }
        Ok((file, FileVersion::of_stat(&st)))
    }

    /// Every file `get` would serve, under `folder` or the whole root, sorted by name: [`Root::walk`]
    /// collected (for tests and small folders; a server streams instead).
    pub fn list(&self, folder: Option<&Name>) -> Result<Vec<FileEntry>, WalkError<std::convert::Infallible>> {
        let mut entries = Vec::new();
        self.walk(folder, |entry| {
            entries.push(entry);
            Ok(())
        })?;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// Hands every file `get` would serve, under `folder` or the whole root, to `each` as it is
    /// found, in the order the file system yields them (not sorted), and returns how many there
    /// were. Memory stays bounded whatever the folder holds: one open folder per level of nesting
    /// being walked, nothing per file.
    ///
    /// Sub-folders are walked, symlinked ones inside the root too, as `get` serves files through
    /// them (a symlink back to a folder above it is a loop and is not followed); anything `get`
    /// would refuse (a symlink leading outside the root, a fifo) is left out, as is a sub-folder
    /// this process may not read. Any other error reading a folder stops the walk: the caller
    /// learns that the listing is incomplete rather than getting a shorter one.
    pub fn walk<E>(
        &self,
        folder: Option<&Name>,
        mut each: impl FnMut(FileEntry) -> Result<(), E>,
    ) -> Result<u64, WalkError<E>> {
        self.walk_with(folder, true, false, |name, meta, folder| each(FileEntry::of(name, meta, folder)))
    }

    /// [`Root::walk`], folders included: each folder beneath `folder` is handed on (before what
    /// it holds) as well as each file, with their modes and exact modification times.
    pub fn walk_all<E>(
        &self,
        folder: Option<&Name>,
        mut each: impl FnMut(FileEntry) -> Result<(), E>,
    ) -> Result<u64, WalkError<E>> {
        self.walk_with(folder, true, true, |name, meta, folder| each(FileEntry::of(name, meta, folder)))
    }

    /// How many files [`Root::walk`] would find, found more cheaply: a plain file's entry in its
    /// folder says it is one, so only symlinks are looked up.
    pub fn count(&self, folder: Option<&Name>) -> Result<u64, WalkError<std::convert::Infallible>> {
        self.walk_with(folder, false, false, |_, _, _| Ok(()))
    }

    /// [`Root::walk`], handing each file's name and, if `stat_files`, its metadata (and, with
    /// `folders`, each folder's too), and whether it is a folder. Counts what it hands on.
    fn walk_with<E>(
        &self,
        folder: Option<&Name>,
        stat_files: bool,
        folders: bool,
        mut each: impl FnMut(Name, Option<&cap_std::fs::Metadata>, bool) -> Result<(), E>,
    ) -> Result<u64, WalkError<E>> {
        let top = match folder {
            Some(folder) if is_reserved(folder) => Err(io::ErrorKind::NotFound.into()),
            Some(folder) => self.dir.metadata(folder.as_path()),
            None => self.dir.dir_metadata(),
        };
        let top = top.map_err(|e| WalkError::Open(e.into()))?;
        if !top.is_dir() {
            return Err(WalkError::Open(OpenError::NotFile));
        }
        let read = match folder {
            None => self.dir.entries(),
            Some(p) => self.dir.read_dir(p.as_path()),
        };
        // The folders being read, outermost first: each with its name, its (device, inode) so a
        // symlink back to one of them is seen as a loop, and where its reading stands.
        let mut open = vec![(folder.cloned(), (top.dev(), top.ino()), read.map_err(|e| WalkError::Open(e.into()))?)];
        let mut count = 0u64;
        while let Some((prefix, _, read)) = open.last_mut() {
            let Some(entry) = read.next() else {
                open.pop();
                continue;
            };
            let failed =
                |source| WalkError::Read { folder: prefix.as_ref().map_or(".".into(), Name::to_string), source };
            let entry = entry.map_err(failed)?;
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else { continue };
            if prefix.is_none() && file_name == STAGING {
                continue;
            }
            let name = match prefix {
                None => Name::parse(file_name),
                Some(p) => p.join(file_name),
            };
            let (Ok(name), Ok(kind)) = (name, entry.file_type()) else { continue };
            let meta = if kind.is_symlink() {
                // stat through the root: follows symlinks only while they stay inside, so a
                // symlinked folder inside the root is listed as `get` serves it.
                self.dir.metadata(name.as_path())
            } else if kind.is_file() && !stat_files {
                count += 1;
                each(name, None, false).map_err(WalkError::Stopped)?;
                continue;
            } else if kind.is_file() || kind.is_dir() {
                // Not a symlink: looked up in its folder, without resolving the path again.
                entry.metadata()
            } else {
                continue;
            };
            let Ok(meta) = meta else { continue };
            if meta.is_file() {
                count += 1;
                each(name, Some(&meta), false).map_err(WalkError::Stopped)?;
            } else if meta.is_dir() {
                let id = (meta.dev(), meta.ino());
                if open.len() >= MAX_DEPTH || open.iter().any(|(_, above, _)| *above == id) {
                    continue;
                }
                if folders {
                    count += 1;
                    each(name.clone(), Some(&meta), true).map_err(WalkError::Stopped)?;
                }
                match self.dir.read_dir(name.as_path()) {
                    Ok(read) => open.push((Some(name), id, read)),
                    // Gone meanwhile, or not ours to read: skipped, as a file that vanished is.
                    Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied) => {}
                    Err(source) => return Err(WalkError::Read { folder: name.to_string(), source }),
                }
            }
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_agrees_with_the_opened_file_and_sees_changes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/f"), b"one").unwrap();
        let root = Root::open(dir.path()).unwrap();
        let name = Name::parse("sub/f").unwrap();
        let (_, opened) = root.open_file(&name).unwrap();
        assert_eq!(root.version(&name), Some(opened));
        assert_eq!(root.stat(&name).unwrap(), opened);
        std::fs::write(dir.path().join("sub/f"), b"three").unwrap();
        assert_eq!(root.version(&name).map(|v| v.size), Some(5));
        assert_eq!(root.version(&Name::parse("sub").unwrap()), None, "a folder");
        assert_eq!(root.version(&Name::parse("nope").unwrap()), None);
    }
}
