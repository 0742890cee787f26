//! The local folder downloads are saved in, and the ways a file is saved there.
//!
//! Every path written is a checked [`Name`] resolved beneath the output folder one component at a
//! time without following any symlink (folders opened with `O_NOFOLLOW`, files created with it),
//! so nothing planted in the folder can redirect a write. A file only ever appears under its final
//! name complete and verified: streamed downloads go through a [`Partial`] (`<name>.part`, then
//! a rename on commit); small files already verified in memory are written unnamed and linked in
//! ([`OutDir::save_whole`]).

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cap_fs_ext::{DirExt, FollowSymlinks, OpenOptionsFollowExt};
use cap_std::fs::{Dir, File, OpenOptions, OpenOptionsExt as _};
use parking_lot::Mutex;
use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use crate::name::Name;

use super::part::{PART_SUFFIX, Partial, part_of, same_file, shown};
use crate::files::{current_umask, set_mtime};
use crate::mtime::Mtime;

/// The `.part` files a folder held when read.
type PartNames = Arc<HashSet<OsString>>;

/// The local folder downloads are saved in. Every path written is a checked [`Name`] resolved
/// beneath it one component at a time, refusing to follow any symlink found there.
pub struct OutDir {
    dir: Arc<Dir>,
    path: PathBuf,
    /// Sub-folders already opened, by their path beneath `dir`, so many files in one folder do
    /// not reopen it component by component each time.
    folders: Mutex<HashMap<Vec<u8>, Arc<Dir>>>,
    /// Never replace a file that is already there (`--no-clobber`).
    keep_existing: bool,
    /// The process's umask, read once: saved files are masked by it as any new file is.
    umask: u32,
    /// The `.part` files each folder held when it was first asked about (by its path beneath
    /// `dir`; `None` if it could not be read): resuming is the default, and one read of a folder
    /// beats one failed open per file when a thousand small files land in it and none has a
    /// `.part`.
    parts_seen: Mutex<HashMap<Vec<u8>, Option<PartNames>>>,
}

impl OutDir {
    /// Opens `path`, creating it (and its parents) if missing.
    pub fn create(path: &Path) -> io::Result<OutDir> {
        std::fs::create_dir_all(path)?;
        let dir = Arc::new(Dir::open_ambient_dir(path, cap_std::ambient_authority())?);
        let umask = current_umask();
        Ok(OutDir {
            dir,
            path: path.to_path_buf(),
            folders: Mutex::default(),
            keep_existing: false,
            umask,
            parts_seen: Mutex::default(),
        })
    }

    /// The permissions a saved file gets: the server's (`None` if it did not say: `0666`), less
    /// setuid, setgid and sticky, masked by the umask. Never more permissive than the server's
    /// copy, and an executable stays executable.
    pub fn mode_for(&self, server: Option<u32>) -> u32 {
        server.map_or(0o666, |m| m & 0o777) & !self.umask
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
    fn parent<'n>(&self, name: &'n Name, create: bool) -> io::Result<(Arc<Dir>, &'n OsStr)> {
        let file = name.file_name();
        let Some(folders) = name.parent_bytes() else {
            return Ok((self.dir.clone(), file));
        };
        if let Some(dir) = self.folders.lock().get(folders) {
            return Ok((dir.clone(), file));
        }
        let mut dir = self.dir.try_clone()?;
        for part in folders.split(|&b| b == b'/').map(OsStr::from_bytes) {
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
        self.folders.lock().insert(folders.to_vec(), dir.clone());
        Ok((dir, file))
    }

    /// Where `<name>` is saved while incomplete: `<dir>/<name>.part`.
    pub fn part_path(&self, name: &Name) -> PathBuf {
        self.path.join(part_of(name.as_path().as_os_str()))
    }

    /// Begins saving `<name>`: creates `<name>.part` (and its folders) without following symlinks,
    /// takes it for this download alone (see [`Partial`]), and empties it.
    pub fn begin(&self, name: &Name) -> io::Result<Partial> {
        let (dir, file) = self.parent(name, true)?;
        let part = part_of(file);
        // Not truncated on open: another download may own it; emptied once it is ours.
        // Readable by its owner only while incomplete; its final mode is set on commit.
        let options =
            OpenOptions::new().read(true).write(true).create(true).mode(0o600).follow(FollowSymlinks::No).clone();
        let opened = take_part(&dir, &part, &options)?.ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        opened.set_len(0)?;
        // The folder now holds a .part it may not have held when it was read: read it again.
        self.parts_seen.lock().remove(name.parent_bytes().unwrap_or_default());
        Ok(Partial::new(dir, file, opened, 0, self.keep_existing, self.mode_for(None)))
    }

    /// Takes up an existing `<name>.part` (opened without following symlinks), to append to
    /// its end; `None` if there is none.
    pub fn reopen(&self, name: &Name) -> io::Result<Option<Partial>> {
        let (dir, file) = match self.parent(name, false) {
            Ok(found) => found,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let part = part_of(file);
        let folder = name.parent_bytes().unwrap_or_default();
        if !self.may_hold(folder, &dir, &part) {
            return Ok(None);
        }
        let options = OpenOptions::new().read(true).write(true).follow(FollowSymlinks::No).clone();
        match take_part(&dir, &part, &options)? {
            Some(mut opened) => {
                let len = opened.seek(SeekFrom::End(0))?;
                Ok(Some(Partial::new(dir, file, opened, len, self.keep_existing, self.mode_for(None))))
            }
            None => Ok(None),
        }
    }

    /// Whether `folder` (opened as `dir`) may hold `part`: it did when first read, or it could
    /// not be read.
    fn may_hold(&self, folder: &[u8], dir: &Dir, part: &OsStr) -> bool {
        let seen = self.parts_seen.lock().get(folder).cloned();
        let seen = match seen {
            Some(seen) => seen,
            None => {
                let scanned = dir.entries().ok().map(|entries| {
                    let names = entries.flatten().map(|e| e.file_name());
                    let parts = names.filter(|n| n.as_bytes().ends_with(PART_SUFFIX.as_bytes()));
                    Arc::new(parts.collect::<HashSet<OsString>>())
                });
                self.parts_seen.lock().insert(folder.to_vec(), scanned.clone());
                scanned
            }
        };
        seen.is_none_or(|parts| parts.contains(part))
    }

    /// Saves a whole, already verified file as `<name>` in one step. The bytes go to an unnamed
    /// file (`O_TMPFILE`) that is linked in under the final name once written: no `.part` entry to
    /// create and rename away, and unnamed files can be created in parallel, where named ones in
    /// one folder queue on its lock. If `<name>` already exists (link never replaces), or the file
    /// system has no unnamed files, it goes through `<name>.part` and a rename instead.
    pub fn save_whole(&self, name: &Name, bytes: &[u8]) -> io::Result<()> {
        self.save_whole_with_mode(name, bytes, None, None)
    }

    /// [`OutDir::save_whole`], with the server's permission bits (see [`OutDir::mode_for`]) and
    /// modification time.
    pub fn save_whole_with_mode(
        &self,
        name: &Name,
        bytes: &[u8],
        server_mode: Option<u32>,
        mtime: Option<Mtime>,
    ) -> io::Result<()> {
        let mode = self.mode_for(server_mode);
        let (dir, file) = self.parent(name, true)?;
        match link_unnamed(&dir, file, bytes, mode, mtime) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && self.keep_existing => return Err(e),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists || unnamed_unsupported(&e) => {}
            Err(e) => return Err(e),
        }
        let mut partial = self.begin(name)?;
        partial.set_mode(mode);
        partial.set_mtime(mtime);
        partial.append(bytes)?;
        partial.commit()
    }
}

impl OutDir {
    /// Makes sure `<dir>/<name>` is a folder, creating it and its parents without following any
    /// symlink; a symlink or a file in the way is an error. Returns whether it was made now.
    pub fn ensure_folder(&self, name: &Name) -> io::Result<bool> {
        let (dir, last) = self.parent(name, true)?;
        let made = match dir.create_dir(last) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(e),
        };
        dir.open_dir_nofollow(last).map_err(|e| not_a_symlink(e, last))?;
        Ok(made)
    }

    /// Gives the regular file at `<dir>/<name>` a modification time, opening it without
    /// following symlinks.
    pub fn set_file_mtime(&self, name: &Name, mtime: Mtime) -> io::Result<()> {
        let (dir, last) = self.parent(name, false)?;
        let options = OpenOptions::new().write(true).follow(FollowSymlinks::No).clone();
        let file = dir.open_with(last, &options)?;
        set_mtime(&file, Some(mtime))
    }

    /// Whether anything is at `<dir>/<name>` (a symlink counts; it is not followed).
    pub fn exists(&self, name: &Name) -> bool {
        self.parent(name, false).is_ok_and(|(dir, last)| dir.symlink_metadata(last).is_ok())
    }

    /// The size and modification time (seconds, nanoseconds) of the regular file at
    /// `<dir>/<name>`, without following symlinks; `None` if there is none (or something else).
    pub fn local_file(&self, name: &Name) -> Option<(u64, Mtime)> {
        let (dir, last) = self.parent(name, false).ok()?;
        let st = rustix::fs::statat(&*dir, last, AtFlags::SYMLINK_NOFOLLOW).ok()?;
        (rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile)
            .then(|| (st.st_size as u64, Mtime::of_stat(&st)))
    }

    /// The size and digest of the regular file at `<dir>/<name>` (opened without following
    /// symlinks); `None` if there is none or it cannot be read.
    pub fn local_digest(&self, name: &Name) -> Option<(u64, crate::digest::Digest)> {
        let (dir, last) = self.parent(name, false).ok()?;
        let options = OpenOptions::new().read(true).follow(FollowSymlinks::No).clone();
        let file = dir.open_with(last, &options).ok()?.into_std();
        let len = file.metadata().ok().filter(|m| m.is_file())?.len();
        let mut hasher = crate::digest::Hasher::default();
        crate::digest::feed_file(&file, 0, len, &mut hasher).ok()?;
        Some((len, hasher.digest()))
    }

    /// The regular file at `<dir>/<name>`, opened to read (never through a symlink), and its
    /// size: the older copy a delta download rebuilds the new one from. `None` if there is none.
    pub fn open_older(&self, name: &Name) -> Option<(std::fs::File, u64)> {
        let (dir, last) = self.parent(name, false).ok()?;
        let options = OpenOptions::new().read(true).follow(FollowSymlinks::No).clone();
        let file = dir.open_with(last, &options).ok()?.into_std();
        let len = file.metadata().ok().filter(|m| m.is_file())?.len();
        Some((file, len))
    }

    /// Gives the folder `<dir>/<name>` the server's permission bits (see [`OutDir::mode_for`])
    /// and modification time, opening it without following symlinks.
    pub fn set_folder(&self, name: &Name, server_mode: u32, mtime: Mtime) -> io::Result<()> {
        let (dir, last) = self.parent(name, false)?;
        // A real descriptor (not O_PATH, which cannot take fchmod), never through a symlink.
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let folder =
            rustix::fs::openat(&*dir, last, flags, Mode::empty()).map_err(|e| not_a_symlink(e.into(), last))?;
        rustix::fs::fchmod(&folder, Mode::from_raw_mode(self.mode_for(Some(server_mode))))?;
        set_mtime(&folder, Some(mtime))
    }

    /// What is at `<dir>/<name>`, not following a symlink: `None` if nothing (or it cannot be
    /// looked up).
    pub fn local_entry(&self, name: &Name) -> Option<Local> {
        let (dir, last) = self.parent(name, false).ok()?;
        let st = rustix::fs::statat(&*dir, last, AtFlags::SYMLINK_NOFOLLOW).ok()?;
        let mtime = Mtime::of_stat(&st);
        Some(match rustix::fs::FileType::from_raw_mode(st.st_mode) {
            rustix::fs::FileType::Symlink => {
                let target = rustix::fs::readlinkat(&*dir, last, Vec::new()).ok()?;
                Local::Symlink { target: target.into_bytes(), mtime }
            }
            rustix::fs::FileType::Fifo => Local::Fifo { mode: st.st_mode & 0o7777, mtime },
            rustix::fs::FileType::Socket => Local::Socket { mode: st.st_mode & 0o7777, mtime },
            rustix::fs::FileType::Directory => Local::Folder,
            rustix::fs::FileType::RegularFile => Local::File,
            _ => Local::Other,
        })
    }

    /// Makes `<dir>/<name>` a symlink holding `target` (its text, never followed here) with
    /// modification time `mtime`, replacing in one step whatever file or symlink is there (a
    /// folder in the way is an error; with `--no-clobber`, anything in the way is kept: an
    /// `AlreadyExists` error). Its folders are made as for a download, never through a symlink.
    pub fn make_symlink(&self, name: &Name, target: &[u8], mtime: Mtime) -> io::Result<()> {
        let (dir, last) = self.parent(name, true)?;
        let temp = temp_name();
        rustix::fs::symlinkat(OsStr::from_bytes(target), &*dir, &temp)?;
        self.put_in_place(&dir, &temp, last, mtime)
    }

    /// Makes `<dir>/<name>` a fifo (or, with `socket`, a socket file) with the server's mode
    /// (see [`OutDir::mode_for`]) and modification time, replacing as [`OutDir::make_symlink`]
    /// does.
    pub fn make_special(&self, name: &Name, socket: bool, server_mode: u32, mtime: Mtime) -> io::Result<()> {
        let (dir, last) = self.parent(name, true)?;
        let temp = temp_name();
        let kind = if socket { rustix::fs::FileType::Socket } else { rustix::fs::FileType::Fifo };
        let mode = Mode::from_raw_mode(self.mode_for(Some(server_mode)));
        rustix::fs::mknodat(&*dir, &temp, kind, mode, 0)?;
        // The umask applied at creation: the mode is set again, as asked.
        let set = rustix::fs::chmodat(&*dir, &temp, mode, AtFlags::empty());
        if let Err(e) = set {
            let _ = rustix::fs::unlinkat(&*dir, &temp, AtFlags::empty());
            return Err(e.into());
        }
        self.put_in_place(&dir, &temp, last, mtime)
    }

    /// Gives the entry `temp` in `dir` its time and renames it to `last` (over a file or a
    /// symlink; not over a folder, nor anything with `--no-clobber`), or removes it.
    fn put_in_place(&self, dir: &Dir, temp: &OsStr, last: &OsStr, mtime: Mtime) -> io::Result<()> {
        let when = mtime.timespec();
        let now = rustix::fs::Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_NOW };
        let times = rustix::fs::Timestamps { last_access: now, last_modification: when };
        let timed = rustix::fs::utimensat(dir, temp, &times, AtFlags::SYMLINK_NOFOLLOW);
        let renamed = timed.and_then(|()| {
            if self.keep_existing {
                rustix::fs::renameat_with(dir, temp, dir, last, RenameFlags::NOREPLACE)
            } else if rustix::fs::statat(dir, last, AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory)
            {
                Err(Errno::ISDIR)
            } else {
                rustix::fs::renameat(dir, temp, dir, last)
            }
        });
        if let Err(e) = renamed {
            let _ = rustix::fs::unlinkat(dir, temp, AtFlags::empty());
            return Err(match e {
                Errno::ISDIR | Errno::NOTEMPTY => {
                    io::Error::new(io::ErrorKind::IsADirectory, format!("a folder {} is in the way", shown(last)))
                }
                e => e.into(),
            });
        }
        Ok(())
    }

    /// Deletes what lies beneath the folder `top` (the whole output folder if `None`) and is not
    /// kept by `keep` (names as the server lists them, relative to the output folder), never
    /// following a symlink: a symlink is removed as itself, a folder not kept is removed with
    /// all it holds, and a folder kept is gone through. A `<name>.part` of a kept `<name>` is kept
    /// (a later `get` resumes it). With `dry_run` nothing is removed. `removed` hears each name
    /// removed (or that would be); returns how many.
    pub fn prune(
        &self,
        top: Option<&Name>,
        keep: &dyn Fn(&[u8]) -> bool,
        dry_run: bool,
        removed: &mut dyn FnMut(&[u8]),
    ) -> io::Result<u64> {
        let start = match top {
            None => self.dir.try_clone()?,
            Some(top) => {
                let (dir, last) = self.parent(top, false)?;
                dir.open_dir_nofollow(last).map_err(|e| not_a_symlink(e, last))?
            }
        };
        let prefix = top.map_or(Vec::new(), |t| [t.as_bytes(), b"/"].concat());
        let mut count = 0;
        prune_folder(&start, &prefix, keep, dry_run, removed, &mut count)?;
        Ok(count)
    }
}

fn prune_folder(
    dir: &Dir,
    prefix: &[u8],
    keep: &dyn Fn(&[u8]) -> bool,
    dry_run: bool,
    removed: &mut dyn FnMut(&[u8]),
    count: &mut u64,
) -> io::Result<()> {
    for entry in dir.entries()? {
        let entry = entry?;
        let file_name = entry.file_name();
        let name = [prefix, file_name.as_bytes()].concat();
        let kind = entry.file_type()?;
        let kept = keep(&name) || name.strip_suffix(PART_SUFFIX.as_bytes()).is_some_and(keep) && kind.is_file();
        if kind.is_dir() && kept {
            let sub = dir.open_dir_nofollow(&file_name)?;
            prune_folder(&sub, &[&name[..], b"/"].concat(), keep, dry_run, removed, count)?;
            continue;
        }
        if kept {
            continue;
        }
        removed(&name);
        *count += 1;
        if dry_run {
            continue;
        }
        if kind.is_dir() {
            remove_tree(dir, &file_name)?;
        } else {
            dir.remove_file(&file_name)?;
        }
    }
    Ok(())
}

/// Removes the folder `name` in `dir` and all it holds, opening each folder without following
/// symlinks (a symlink inside is removed as itself, never followed).
fn remove_tree(dir: &Dir, name: &OsStr) -> io::Result<()> {
    let sub = dir.open_dir_nofollow(name)?;
    for entry in sub.entries()? {
        let entry = entry?;
        let file_name = entry.file_name();
        if entry.file_type()?.is_dir() {
            remove_tree(&sub, &file_name)?;
        } else {
            sub.remove_file(&file_name)?;
        }
    }
    dir.remove_dir(name)
}

/// Opens `part` in `dir` with `options` and takes an exclusive lock on it, so that one download at
/// a time owns a `.part` (two downloads of one file into one folder would otherwise write into the
/// same file, and one would rename the other's bytes into place). The lock is `flock`, held by the
/// open file and released when it closes, also when its process is killed. `None` if there is no
/// such file (and `options` do not create it); an error of kind `ResourceBusy` if another
/// download holds it. After locking, the name must still lead to the file that was locked: an
/// owner may have renamed it into place meanwhile, and then the name is opened anew.
fn take_part(dir: &Dir, part: &OsStr, options: &OpenOptions) -> io::Result<Option<std::fs::File>> {
    for _ in 0..8 {
        let opened: File = match dir.open_with(part, options) {
            Ok(opened) => opened,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(not_a_symlink(e, part)),
        };
        let opened = opened.into_std();
        match rustix::fs::flock(&opened, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => {
                return Err(io::Error::new(
                    io::ErrorKind::ResourceBusy,
                    format!("{} is being written by another download; not touching it", shown(part)),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        if same_file(dir, part, &opened)? {
            return Ok(Some(opened));
        }
    }
    Err(io::Error::new(io::ErrorKind::ResourceBusy, format!("{} keeps being replaced; not touching it", shown(part))))
}

/// Names the symlink when an open refused to follow one.
fn not_a_symlink(e: io::Error, what: &OsStr) -> io::Error {
    if matches!(Errno::from_io_error(&e), Some(Errno::LOOP | Errno::NOTDIR)) {
        return io::Error::new(e.kind(), format!("'{}' is a symlink or not a folder; not following it", shown(what)));
    }
    e
}

/// A name of the output folder's own, unique in this process, for making an entry before it is
/// renamed into place (short, so it fits beside any name).
fn temp_name() -> OsString {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    OsString::from(format!(".ft-tmp.{}.{n}", std::process::id()))
}

/// What a local name holds, as [`OutDir::local_entry`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Local {
    File,
    Folder,
    Symlink { target: Vec<u8>, mtime: Mtime },
    Fifo { mode: u32, mtime: Mtime },
    Socket { mode: u32, mtime: Mtime },
    Other,
}

/// Writes `bytes` to an unnamed file in `dir` and links it as `file` (which must not exist; a
/// symlink there is not followed either: linkat fails with EEXIST).
fn link_unnamed(dir: &Dir, file: &OsStr, bytes: &[u8], mode: u32, mtime: Option<Mtime>) -> io::Result<()> {
    let flags = OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC;
    // Created with its final mode at once (the umask is already applied to `mode`, so applying
    // it again changes nothing): an unnamed file cannot be opened by anyone else before it is
    // linked, so no narrower mode is needed meanwhile, and no chmod call per small file.
    let tmp = std::fs::File::from(rustix::fs::openat(dir, ".", flags, Mode::from_raw_mode(mode))?);
    (&tmp).write_all(bytes)?;
    set_mtime(&tmp, mtime)?;
    crate::files::link_unnamed(&tmp, dir, file)
}

/// Whether an `O_TMPFILE` open failed because the file system (or /proc) cannot do it.
fn unnamed_unsupported(e: &io::Error) -> bool {
    matches!(Errno::from_io_error(e), Some(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL | Errno::NOENT | Errno::XDEV))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_file_appears_under_its_name_only_on_commit() {
        let root = tempfile::tempdir().unwrap();
        let dir = OutDir::create(root.path()).unwrap();
        let name = Name::parse("a/b").unwrap();
        assert_eq!(dir.part_path(&name), root.path().join("a/b.part"));
        assert!(dir.reopen(&name).unwrap().is_none());

        let mut partial = dir.begin(&name).unwrap();
        partial.append(b"hello ").unwrap();
        drop(partial);
        assert!(dir.reopen(&Name::parse("a/other").unwrap()).unwrap().is_none(), "folder read, no such .part");
        assert!(!root.path().join("a/b").exists(), "not committed: kept as .part only");

        let mut partial = dir.reopen(&name).unwrap().unwrap();
        assert_eq!(partial.len(), 6);
        partial.append(b"world").unwrap();
        partial.commit().unwrap();
        assert_eq!(std::fs::read(root.path().join("a/b")).unwrap(), b"hello world");
        assert!(!root.path().join("a/b.part").exists());

        let mut partial = dir.begin(&name).unwrap();
        partial.append(b"bad bytes").unwrap();
        partial.restart().unwrap();
        assert!(partial.is_empty());
        partial.append(b"x").unwrap();
        partial.abort();
        assert!(!root.path().join("a/b.part").exists(), "abort deletes the .part");
        assert_eq!(std::fs::read(root.path().join("a/b")).unwrap(), b"hello world", "the old copy stays");
    }

    #[test]
    fn a_part_belongs_to_one_download_at_a_time() {
        let root = tempfile::tempdir().unwrap();
        let dir = OutDir::create(root.path()).unwrap();
        let other = OutDir::create(root.path()).unwrap();
        let name = Name::parse("f").unwrap();
        let mut first = dir.begin(&name).unwrap();
        first.append(b"mine").unwrap();
        first.flush().unwrap();
        for taken in [other.begin(&name).err(), other.reopen(&name).err()] {
            assert_eq!(taken.map(|e| e.kind()), Some(io::ErrorKind::ResourceBusy));
        }
        assert_eq!(std::fs::read(root.path().join("f.part")).unwrap(), b"mine", "not truncated by the loser");
        drop(first);
        let mut second = other.reopen(&name).unwrap().unwrap();
        assert_eq!(second.len(), 4);
        second.append(b"!").unwrap();
        // Someone else writes into the .part behind its owner's back: it is not put in place.
        std::fs::write(root.path().join("f.part"), b"not what was verified").unwrap();
        assert!(second.commit().is_err());
        assert!(!root.path().join("f").exists());
    }
}
