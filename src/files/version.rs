//! What identifies one version of a file's contents: the one type both sides use to see that a
//! file changed (the server's cache and digest memo, interrupted uploads, the auth file; the
//! client's uploads).

use std::io;

use crate::mtime::Mtime;
use cap_std::fs::MetadataExt as _;

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

    /// The version a file's metadata describes.
    pub fn of_metadata(meta: &std::fs::Metadata) -> FileVersion {
        use std::os::unix::fs::MetadataExt;
        FileVersion {
            size: meta.len(),
            mtime_sec: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            ctime_sec: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
            ino: meta.ino(),
            dev: meta.dev(),
            mode: meta.mode() & 0o7777,
        }
    }

    pub(crate) fn of_stat(st: &rustix::fs::Stat) -> FileVersion {
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

    pub(crate) fn of_cap(m: &cap_std::fs::Metadata) -> FileVersion {
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
    pub fn mtime(&self) -> Mtime {
        Mtime::of_raw(self.mtime_sec, self.mtime_nsec)
    }

    /// The later of the modification and change times: when the contents last changed, as far
    /// as anyone could make them seem otherwise.
    pub fn changed(&self) -> (i64, i64) {
        (self.mtime_sec, self.mtime_nsec).max((self.ctime_sec, self.ctime_nsec))
    }
}
