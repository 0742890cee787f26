//! A download being saved: bytes appended to `<name>.part`, put in place under `<name>` in one
//! step once complete and verified, deleted if they fail, kept for a later resume otherwise.

use std::ffi::{OsStr, OsString};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use cap_std::fs::Dir;
use rustix::fs::{AtFlags, Mode, RenameFlags};
use rustix::io::Errno;

use crate::files::set_mtime;
use crate::mtime::Mtime;

/// What an incomplete download's file name ends with: `<name>.part`.
pub const PART_SUFFIX: &str = ".part";

/// One file being saved: bytes are appended to `<name>.part`; [`Partial::commit`] puts the complete,
/// verified file in place under `<name>`, [`Partial::abort`] deletes the `.part`, and dropping the
/// handle without either keeps the `.part` for a later resume. The `.part` is this download's
/// alone while the handle lives (an exclusive `flock`): a second download of the same name into
/// the same folder fails at once with a clear error instead of writing into it.
pub struct Partial {
    /// The folder holding the file.
    dir: Arc<Dir>,
    /// The name's last component: the file is `<file>.part` until committed, then `<file>`.
    file: OsString,
    out: BufWriter<std::fs::File>,
    /// Bytes in the `.part` (those written and those buffered).
    len: u64,
    /// Commit must not replace an existing `<file>` (`--no-clobber`).
    keep_existing: bool,
    /// The permissions the file gets when it is put in place.
    mode: u32,
    /// The modification time it gets then (the server's), if known.
    mtime: Option<Mtime>,
}

/// Write buffer for a file streamed to its `.part`.
const PART_BUFFER: usize = 64 << 10;

impl Partial {
    pub(super) fn new(
        dir: Arc<Dir>,
        file: &OsStr,
        out: std::fs::File,
        len: u64,
        keep_existing: bool,
        mode: u32,
    ) -> Partial {
        let out = BufWriter::with_capacity(PART_BUFFER, out);
        Partial { dir, file: file.to_os_string(), out, len, keep_existing, mode, mtime: None }
    }

    /// The modification time the file gets when committed (the server's copy's).
    pub fn set_mtime(&mut self, mtime: Option<Mtime>) {
        self.mtime = mtime;
    }

    /// The permissions the file gets when committed (from [`OutDir::mode_for`](super::OutDir::mode_for)).
    pub fn set_mode(&mut self, mode: u32) {
        self.mode = mode & 0o777;
    }

    /// Bytes in the `.part` so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `.part` itself, to read back (for hashing what an earlier run saved).
    pub fn file(&self) -> &std::fs::File {
        self.out.get_ref()
    }

    /// Empties the `.part`, to start the file over.
    pub fn restart(&mut self) -> io::Result<()> {
        self.out.flush()?;
        let file = self.out.get_mut();
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        self.len = 0;
        Ok(())
    }

    /// Fails with `StorageFull` if the file system holding the `.part` has fewer than `more` bytes
    /// free for this user (what `df` shows as available).
    pub fn check_room(&self, more: u64) -> io::Result<()> {
        let fs = rustix::fs::fstatvfs(self.out.get_ref())?;
        let free = fs.f_bavail.saturating_mul(fs.f_frsize);
        if more > free {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!("not enough space: {more} more bytes to save, {free} free here"),
            ));
        }
        Ok(())
    }

    /// Appends bytes to the `.part`.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Writes out what is buffered, then renames `<name>.part` to `<name>`, replacing an older
    /// copy in one step (a symlink at `<name>` is replaced, not followed); when keeping existing
    /// files, an existing `<name>` is an `AlreadyExists` error instead (renameat2 with
    /// RENAME_NOREPLACE), and the `.part` stays.
    pub fn commit(mut self) -> io::Result<()> {
        self.out.flush()?;
        let part = part_of(&self.file);
        // What goes into place is exactly what was written here: the same file, of that length.
        let file = self.out.get_ref();
        if !same_file(&self.dir, &part, file)? || file.metadata()?.len() != self.len {
            return Err(io::Error::other(format!(
                "{} was changed by someone else; not putting it in place",
                shown(&part)
            )));
        }
        rustix::fs::fchmod(file, Mode::from_raw_mode(self.mode))?;
        set_mtime(file, self.mtime)?;
        let renamed = if self.keep_existing {
            rustix::fs::renameat_with(&*self.dir, &part, &*self.dir, &self.file, RenameFlags::NOREPLACE)
        } else {
            rustix::fs::renameat(&*self.dir, &part, &*self.dir, &self.file)
        };
        match renamed {
            Ok(()) => Ok(()),
            // A folder holds the name: the file is complete and verified, so nothing of it is
            // kept as if it could be resumed; the error says what is in the way.
            Err(Errno::ISDIR | Errno::NOTEMPTY | Errno::EXIST)
                if self.dir.symlink_metadata(&self.file).is_ok_and(|m| m.is_dir()) =>
            {
                let _ = self.dir.remove_file(&part);
                Err(io::Error::new(
                    io::ErrorKind::IsADirectory,
                    format!("a folder {} is in the way; the file was not saved", shown(&self.file)),
                ))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes the `.part` (its bytes failed verification).
    pub fn abort(self) {
        let _ = self.dir.remove_file(part_of(&self.file));
    }
}

impl Write for Partial {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Whether `name` in `dir` (not following a symlink) is `file` itself.
pub(super) fn same_file(dir: &Dir, name: &OsStr, file: &std::fs::File) -> io::Result<bool> {
    let ours = rustix::fs::fstat(file)?;
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(there) => Ok((there.st_dev, there.st_ino) == (ours.st_dev, ours.st_ino)),
        Err(Errno::NOENT) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// A local file name, for people (escaped).
pub(super) fn shown(name: &OsStr) -> String {
    crate::escape::escape_bytes(name.as_bytes())
}

/// `<file>.part`.
pub(super) fn part_of(file: &OsStr) -> OsString {
    let mut part = file.to_os_string();
    part.push(PART_SUFFIX);
    part
}
