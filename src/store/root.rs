//! The served folder, opened once: looking files up and opening them strictly beneath it, never
//! an interrupted upload.

use std::io;
use std::path::{Path, PathBuf};

use cap_std::fs::{Dir, MetadataExt as _, OpenOptions, OpenOptionsExt as _};
use rustix::fs::{AtFlags, FileType, OFlags};

use crate::mtime::Mtime;
use crate::name::Name;

use super::entry::{FileEntry, Kind};
use super::error::OpenError;
use super::held::Full;
use super::staging::{RESUMABLE_FROM, Staging, Unstaged, partial_key};
use crate::files::FileVersion;

/// The folder whose files are served.
pub struct Root {
    pub(super) dir: Dir,
    path: PathBuf,
    /// The folder [`STAGING`] beneath the root, once uploads are on ([`Root::enable_uploads`]).
    pub(super) staging: Option<Staging>,
    /// The process's umask when the root was opened: uploads are masked by it.
    pub(super) umask: u32,
    /// Bytes of interrupted uploads read to hash them (what a `partial` costs when its digest
    /// was not remembered), for `stats`.
    pub(super) hashed: std::sync::atomic::AtomicU64,
}

impl Root {
    pub fn open(path: &Path) -> io::Result<Root> {
        let dir = Dir::open_ambient_dir(path, cap_std::ambient_authority())?;
        Ok(Root {
            dir,
            path: path.to_path_buf(),
            staging: None,
            umask: crate::files::current_umask(),
            hashed: Default::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the folder `(dev, ino)` is the uploads' staging folder, however it was reached.
    pub(super) fn is_staging(&self, dev: u64, ino: u64) -> bool {
        self.staging.as_ref().is_some_and(|s| (s.dev(), s.ino) == (dev, ino))
    }

    /// Whether the file `(dev, ino)` is an interrupted upload in the staging folder, however it
    /// was reached (such a file is neither served nor listed).
    pub(super) fn is_staged(&self, dev: u64, ino: u64) -> bool {
        self.staging.as_ref().is_some_and(|s| s.held.holds(dev, ino))
    }

    /// Interrupted uploads held, and the bytes they are counted as (`None`: uploads are off).
    pub fn staging_usage(&self) -> Option<(usize, u64)> {
        self.staging.as_ref().map(|s| s.held.usage())
    }

    /// Whether an upload of `name` (`len` bytes, modified at `mtime`) from `owner` would find room
    /// for its staging file (see [`Caps`](super::Caps)): always for one too small to be resumable, or whose
    /// interrupted upload is held already.
    pub fn staging_room(&self, name: &Name, len: u64, mtime: Mtime, owner: &str) -> Result<(), Full> {
        match &self.staging {
            Some(staging) if len >= RESUMABLE_FROM => match Unstaged::new(name) {
                Some(name) => staging.held.room(&partial_key(name, len, mtime), len, owner),
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// Bytes of interrupted uploads read to hash them.
    pub fn bytes_hashed(&self) -> u64 {
        self.hashed.load(std::sync::atomic::Ordering::Relaxed)
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
        let Some(name) = Unstaged::new(name) else { return Err(OpenError::NotFound) };
        let meta = self.dir.metadata(name.as_path())?;
        if !meta.is_file() {
            return Err(OpenError::NotFile);
        }
        if self.is_staged(meta.dev(), meta.ino()) {
            return Err(OpenError::NotFound);
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
        let name = Unstaged::new(name)?;
        let st = rustix::fs::statat(&self.dir, name.as_path(), AtFlags::empty()).ok()?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return None;
        }
        Some(FileVersion::of_stat(&st))
    }

    /// What is at `name`, not following a symlink at its end (symlinks on the way are followed
    /// while they stay inside the root): what `stat` answers.
    pub fn lookup(&self, name: &Name) -> Result<FileEntry, OpenError> {
        let Some(name) = Unstaged::new(name) else { return Err(OpenError::NotFound) };
        let meta = self.dir.symlink_metadata(name.as_path())?;
        let kind = match Kind::of(meta.file_type()) {
            Kind::Symlink(_) => Kind::Symlink(self.read_link(&name)?),
            Kind::Folder if self.is_staging(meta.dev(), meta.ino()) => return Err(OpenError::NotFound),
            Kind::File if self.is_staged(meta.dev(), meta.ino()) => return Err(OpenError::NotFound),
            kind => kind,
        };
        Ok(FileEntry::of(name.name().clone(), Some(&meta), kind))
    }

    /// Opens a regular file for reading and returns it with the version it had when opened.
    pub fn open_file(&self, name: &Name) -> Result<(std::fs::File, FileVersion), OpenError> {
        let Some(name) = Unstaged::new(name) else { return Err(OpenError::NotFound) };
        let mut options = OpenOptions::new();
        // Non-blocking so a fifo cannot stall the open; it changes nothing for regular files.
        options.read(true).custom_flags((OFlags::NONBLOCK | OFlags::NOCTTY).bits() as i32);
        let file = self.dir.open_with(name.as_path(), &options)?.into_std();
        let st = rustix::fs::fstat(&file).map_err(io::Error::from)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(OpenError::NotFile);
        }
        // Reached through a symlink into the staging folder: someone's interrupted upload.
        if self.is_staged(st.st_dev, st.st_ino) {
            return Err(OpenError::NotFound);
        }
        Ok((file, FileVersion::of_stat(&st)))
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
