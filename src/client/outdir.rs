//! The local folder downloads are saved in, and the ways a file is saved there.
//!
//! Every path written is a checked [`Name`] resolved beneath the output folder one component at a
//! time without following any symlink (folders opened with `O_NOFOLLOW`, files created with it),
//! so nothing planted in the folder can redirect a write. A file only ever appears under its final
//! name complete and verified: streamed downloads go through `<name>.part` and a rename; small
//! files already verified in memory are written unnamed and linked in ([`OutDir::save_whole`]).

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cap_fs_ext::{DirExt, FollowSymlinks, OpenOptionsFollowExt};
use cap_std::fs::{Dir, File, OpenOptions};
use parking_lot::Mutex;
use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use crate::name::Name;

/// The local folder downloads are saved in. Every path written is a checked [`Name`] resolved
/// beneath it one component at a time, refusing to follow any symlink found there.
pub struct OutDir {
    dir: Arc<Dir>,
    path: PathBuf,
    /// Sub-folders already opened, by their path beneath `dir`, so many files in one folder do
    /// not reopen it component by component each time.
    folders: Mutex<HashMap<String, Arc<Dir>>>,
    /// Never replace a file that is already there (`--no-clobber`).
    keep_existing: bool,
}

impl OutDir {
    /// Opens `path`, creating it (and its parents) if missing.
    pub fn create(path: &Path) -> io::Result<OutDir> {
        std::fs::create_dir_all(path)?;
        let dir = Arc::new(Dir::open_ambient_dir(path, cap_std::ambient_authority())?);
        Ok(OutDir { dir, path: path.to_path_buf(), folders: Mutex::default(), keep_existing: false })
    }

    /// Keeps files already in the folder: a download of an existing name is skipped, and one that
    /// appears meanwhile is not replaced.
    pub fn keep_existing(mut self, keep: bool) -> OutDir {
        self.keep_existing = keep;
        self
    }

    /// Whether `name` should be left alone: keeping existing files, and something is there
    /// (a symlink counts; it is not followed).
    pub fn is_kept(&self, name: &Name) -> bool {
        self.keep_existing && self.parent(name, false).is_ok_and(|(dir, file)| dir.symlink_metadata(file).is_ok())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The folder holding `name` (created if `create`) and the name's last component.
    fn parent<'n>(&self, name: &'n Name, create: bool) -> io::Result<(Arc<Dir>, &'n str)> {
        let Some((folders, file)) = name.as_str().rsplit_once('/') else {
            return Ok((self.dir.clone(), name.as_str()));
        };
        if let Some(dir) = self.folders.lock().get(folders) {
            return Ok((dir.clone(), file));
        }
        let mut dir = self.dir.try_clone()?;
        for part in folders.split('/') {
            dir = match dir.open_dir_nofollow(part) {
                Ok(next) => next,
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    match dir.create_dir(part) {
                        // Another writer thread may have just made it.
                        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                        _ => dir.open_dir_nofollow(part)?,
                    }
                }
                Err(e) => return Err(not_a_symlink(e, part)),
            };
        }
        let dir = Arc::new(dir);
        self.folders.lock().insert(folders.to_string(), dir.clone());
        Ok((dir, file))
    }

    /// Creates (or truncates) `<name>.part`, and its folders, without following symlinks.
    pub(crate) fn create_part(&self, name: &Name) -> io::Result<std::fs::File> {
        let (dir, file) = self.parent(name, true)?;
        let part = format!("{file}.part");
        let options = OpenOptions::new().write(true).create(true).truncate(true).follow(FollowSymlinks::No).clone();
        let opened: File = dir.open_with(&part, &options).map_err(|e| not_a_symlink(e, &part))?;
        Ok(opened.into_std())
    }

    /// An existing `<name>.part` and its length, opened without following symlinks.
    pub(crate) fn existing_part(&self, name: &Name) -> io::Result<Option<(std::fs::File, u64)>> {
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
    pub(crate) fn remove_part(&self, name: &Name) {
        if let Ok((dir, file)) = self.parent(name, false) {
            let _ = dir.remove_file(format!("{file}.part"));
        }
    }

    /// Saves a whole, already verified file as `<name>` in one step. The bytes go to an unnamed
    /// file (`O_TMPFILE`) that is linked in under the final name once written: no `.part` entry to
    /// create and rename away, and unnamed files can be created in parallel, where named ones in
    /// one folder queue on its lock. If `<name>` already exists (link never replaces), or the file
    /// system has no unnamed files, it goes through `<name>.part` and a rename instead.
    pub fn save_whole(&self, name: &Name, bytes: &[u8]) -> io::Result<()> {
        let (dir, file) = self.parent(name, true)?;
        match link_unnamed(&dir, file, bytes) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && self.keep_existing => return Err(e),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists || unnamed_unsupported(&e) => {}
            Err(e) => return Err(e),
        }
        let mut part = self.create_part(name)?;
        part.write_all(bytes)?;
        drop(part);
        self.finish(name)
    }

    /// Renames the complete `<name>.part` to `<name>`, replacing an older copy in one step (a
    /// symlink at `<name>` is replaced, not followed); when keeping existing files, an existing
    /// `<name>` is an `AlreadyExists` error instead (renameat2 with RENAME_NOREPLACE).
    pub(crate) fn finish(&self, name: &Name) -> io::Result<()> {
        let (dir, file) = self.parent(name, false)?;
        if !self.keep_existing {
            return dir.rename(format!("{file}.part"), &dir, file);
        }
        rustix::fs::renameat_with(&*dir, format!("{file}.part"), &*dir, file, RenameFlags::NOREPLACE)?;
        Ok(())
    }
}

/// Names the symlink when an open refused to follow one.
fn not_a_symlink(e: io::Error, what: &str) -> io::Error {
    if matches!(Errno::from_io_error(&e), Some(Errno::LOOP | Errno::NOTDIR)) {
        return io::Error::new(e.kind(), format!("'{what}' is a symlink or not a folder; not following it"));
    }
    e
}

/// Writes `bytes` to an unnamed file in `dir` and links it as `file` (which must not exist; a
/// symlink there is not followed either: linkat fails with EEXIST).
fn link_unnamed(dir: &Dir, file: &str, bytes: &[u8]) -> io::Result<()> {
    let flags = OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC;
    let tmp = std::fs::File::from(rustix::fs::openat(dir, ".", flags, Mode::from_raw_mode(0o666))?);
    (&tmp).write_all(bytes)?;
    // Linking the fd itself (AT_EMPTY_PATH) is cheapest but needs CAP_DAC_READ_SEARCH; the
    // /proc/self/fd path works for anyone. Remember which one this process may use.
    if EMPTY_PATH_WORKS.load(Ordering::Relaxed) {
        match rustix::fs::linkat(&tmp, "", dir, file, AtFlags::EMPTY_PATH) {
            Ok(()) => return Ok(()),
            Err(Errno::NOENT | Errno::PERM | Errno::INVAL) => EMPTY_PATH_WORKS.store(false, Ordering::Relaxed),
            Err(e) => return Err(e.into()),
        }
    }
    let proc_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&tmp));
    rustix::fs::linkat(rustix::fs::CWD, proc_path, dir, file, AtFlags::SYMLINK_FOLLOW)?;
    Ok(())
}

/// Whether `linkat(fd, "", ..., AT_EMPTY_PATH)` is allowed here (until it is found not to be).
static EMPTY_PATH_WORKS: AtomicBool = AtomicBool::new(true);

/// Whether an `O_TMPFILE` open failed because the file system (or /proc) cannot do it.
fn unnamed_unsupported(e: &io::Error) -> bool {
    matches!(Errno::from_io_error(e), Some(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL | Errno::NOENT | Errno::XDEV))
}
