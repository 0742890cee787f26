//! The served folder: stat, open and list files strictly beneath the root (and, later, write
//! beneath it). It knows names and file versions, nothing of the wire: the server turns what it
//! finds into replies.
//!
//! Every access goes through a `cap_std::fs::Dir` opened once on the root, which resolves each
//! path beneath it (with `openat2(RESOLVE_BENEATH)` where the kernel has it, component by component
//! where it does not). A symlink that leads outside the root is refused by the same open that would
//! follow it, so there is no check-then-open race. Files are opened non-blocking and checked to be
//! regular, so a fifo or device in the tree cannot stall a connection's thread.

use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use cap_std::fs::{Dir, MetadataExt as _, OpenOptions, OpenOptionsExt as _};
use rustix::fs::{AtFlags, FileType, OFlags};
use rustix::io::Errno;

use crate::name::Name;

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

/// One file found by [`Root::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub name: Name,
    pub size: u64,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
}

/// A folder being listed and the folders above it, as (device, inode): a linked list shared
/// between siblings.
struct Ancestors {
    id: (u64, u64),
    up: Option<Rc<Ancestors>>,
}

impl Ancestors {
    fn contains(&self, id: (u64, u64)) -> bool {
        let mut at = Some(self);
        while let Some(folder) = at {
            if folder.id == id {
                return true;
            }
            at = folder.up.as_deref();
        }
        false
    }
}

/// The folder whose files are served.
pub struct Root {
    dir: Dir,
    path: PathBuf,
}

impl Root {
    pub fn open(path: &Path) -> io::Result<Root> {
        let dir = Dir::open_ambient_dir(path, cap_std::ambient_authority())?;
        Ok(Root { dir, path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current version of a regular file (symlinks inside the root are followed).
    pub fn stat(&self, name: &Name) -> Result<FileVersion, OpenError> {
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
        let st = rustix::fs::statat(&self.dir, name.as_str(), AtFlags::empty()).ok()?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return None;
        }
        Some(FileVersion::of_stat(&st))
    }

    /// Opens a regular file for reading and returns it with the version it had when opened.
    pub fn open_file(&self, name: &Name) -> Result<(std::fs::File, FileVersion), OpenError> {
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

    /// Every file `get` would serve, under `folder` or the whole root, sorted by name.
    ///
    /// Sub-folders are walked, symlinked ones inside the root too, as `get` serves files through
    /// them (a symlink back to a folder above it is a loop and is not followed); anything `get`
    /// would refuse (a symlink leading outside the root, a fifo) is left out.
    pub fn list(&self, folder: Option<&Name>) -> Result<Vec<FileEntry>, OpenError> {
        let mut entries = Vec::new();
        let top = match folder {
            Some(folder) => self.dir.metadata(folder.as_path())?,
            None => self.dir.dir_metadata()?,
        };
        if !top.is_dir() {
            return Err(OpenError::NotFile);
        }
        // Each folder to walk, with the folders above it (device and inode): a symlink leading
        // back to one of them is a loop and is not followed.
        let mut pending: Vec<(Option<Name>, Rc<Ancestors>)> =
            vec![(folder.cloned(), Rc::new(Ancestors { id: (top.dev(), top.ino()), up: None }))];
        while let Some((prefix, above)) = pending.pop() {
            let read = match &prefix {
                None => self.dir.entries(),
                Some(p) => self.dir.read_dir(p.as_path()),
            };
            let read = match read {
                Ok(read) => read,
                // The folder asked for must be readable; a sub-folder that is not is skipped.
                Err(e) if prefix.as_ref() == folder => return Err(e.into()),
                Err(_) => continue,
            };
            for entry in read.flatten() {
                let file_name = entry.file_name();
                let Some(file_name) = file_name.to_str() else { continue };
                let name = match &prefix {
                    None => Name::parse(file_name),
                    Some(p) => p.join(file_name),
                };
                let (Ok(name), Ok(kind)) = (name, entry.file_type()) else { continue };
                if !(kind.is_dir() || kind.is_file() || kind.is_symlink()) {
                    continue;
                }
                // stat through the root: follows symlinks only while they stay inside, so a
                // symlinked folder inside the root is listed as `get` serves it.
                let Ok(meta) = self.dir.metadata(name.as_path()) else { continue };
                if meta.is_dir() {
                    let id = (meta.dev(), meta.ino());
                    if !above.contains(id) {
                        pending.push((Some(name), Rc::new(Ancestors { id, up: Some(above.clone()) })));
                    }
                } else if meta.is_file() {
                    entries.push(FileEntry { name, size: meta.len(), mtime: meta.mtime() });
                }
            }
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
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
