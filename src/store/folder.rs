//! The folders on the way to an upload: opened one component at a time without following a
//! symlink, made where missing, and the unnamed file an upload is written into.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::name::Name;

use super::error::PutError;
use super::root::Root;
use super::staging::{Staging, Unstaged};

/// The mode of a folder an upload makes on the way to its file (masked by the umask); `mkdir`
/// gives it the sender's afterwards.
pub const FOLDER_MODE: u32 = 0o755;

/// What [`Root::existing_folder`] finds: the deepest folder that exists, the components beneath
/// it still to be made, and the name's last component.
pub(super) type Existing<'r, 'n> = (Folder<'r>, Vec<&'n [u8]>, &'n [u8]);

/// A folder beneath the root, or the root itself (borrowed, not opened again).
pub(super) enum Folder<'r> {
    Root(BorrowedFd<'r>),
    Open(OwnedFd),
}

impl AsFd for Folder<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Folder::Root(fd) => *fd,
            Folder::Open(fd) => fd.as_fd(),
        }
    }
}

/// How every folder on the way to an upload is opened: never through a symlink.
pub(super) const FOLDER_FLAGS: OFlags =
    OFlags::DIRECTORY.union(OFlags::NOFOLLOW).union(OFlags::RDONLY).union(OFlags::CLOEXEC);

/// Makes the folders `missing` one inside the other beneath `folder`, each opened without
/// following a symlink (another upload may make one meanwhile: that is fine; a symlink is not).
pub(super) fn make_folders<'r>(mut folder: Folder<'r>, missing: &[&[u8]], name: &Name) -> Result<Folder<'r>, PutError> {
    let above = name.depth() - missing.len();
    for (i, part) in missing.iter().enumerate() {
        match rustix::fs::mkdirat(&folder, *part, Mode::from_raw_mode(FOLDER_MODE)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        folder = match rustix::fs::openat(&folder, *part, FOLDER_FLAGS, Mode::empty()) {
            Ok(next) => Folder::Open(next),
            Err(Errno::LOOP | Errno::NOTDIR) => {
                let parts: Vec<&[u8]> = name.components().take(above + i + 1).collect();
                return Err(PutError::NotFolder(shown(&parts)));
            }
            Err(e) => return Err(e.into()),
        };
    }
    Ok(folder)
}

/// Components of a name joined again, shown to people (escaped).
fn shown(parts: &[&[u8]]) -> String {
    crate::escape::escape_bytes(&parts.join(&b'/'))
}

/// An unnamed file (`O_TMPFILE`) in `folder` with permissions `mode`, for writing.
pub(super) fn unnamed_in(folder: &Folder, mode: u32) -> Result<File, PutError> {
    match rustix::fs::openat(folder, ".", OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC, Mode::from_raw_mode(mode))
    {
        Ok(fd) => Ok(File::from(fd)),
        Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL) => Err(PutError::Unsupported),
        Err(e) => Err(e.into()),
    }
}

impl Root {
    /// The deepest folder on the way to `name` that exists, opened without following a symlink
    /// (the root itself is not opened again), the components beneath it still to be made, and
    /// the last component of `name`.
    pub(super) fn existing_folder<'n>(&self, name: Unstaged<'n>) -> Result<Existing<'_, 'n>, PutError> {
        let name = name.name();
        let mut folder = Folder::Root(self.dir.as_fd());
        let (Some(folders), file) = name.split() else {
            return Ok((folder, Vec::new(), name.as_bytes()));
        };
        let parts: Vec<&[u8]> = folders.split(|&b| b == b'/').collect();
        for (i, part) in parts.iter().enumerate() {
            folder = match rustix::fs::openat(&folder, *part, FOLDER_FLAGS, Mode::empty()) {
                Ok(next) => Folder::Open(next),
                Err(Errno::NOENT) => return Ok((folder, parts[i..].to_vec(), file)),
                Err(Errno::LOOP | Errno::NOTDIR) => return Err(PutError::NotFolder(shown(&parts[..=i]))),
                Err(e) => return Err(e.into()),
            };
        }
        Ok((folder, Vec::new(), file))
    }
}

/// Whether `folder` is on the staging folder's file system (a partial can only be renamed there).
pub(super) fn same_fs(folder: &Folder, staging: &Staging) -> bool {
    rustix::fs::fstat(folder).is_ok_and(|st| st.st_dev == staging.dev)
}
