//! Walking the served folder: every file `get` would serve, or every entry and what it is, as
//! the folder is read, in bounded memory.

use std::io;
use std::os::unix::ffi::OsStrExt;

use cap_std::fs::MetadataExt as _;
use rustix::io::Errno;

use crate::name::Name;

use super::entry::{FileEntry, Found, Kind, WalkError, WalkProblem};
use super::error::OpenError;
use super::root::Root;
use super::staging::{STAGING, is_reserved};

use super::entry::MAX_DEPTH;

impl Root {
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
    /// would refuse (a symlink leading outside the root, a fifo) is left out. A folder that cannot
    /// be read stops the walk (a folder this process may not read too): the caller learns that the
    /// listing is incomplete rather than getting a shorter one. [`Root::walk_tree`] says what
    /// each entry is instead, and goes on past what it cannot read.
    pub fn walk<E>(
        &self,
        folder: Option<&Name>,
        each: impl FnMut(FileEntry) -> Result<(), E>,
    ) -> Result<u64, WalkError<E>> {
        self.walk_served(folder, false, each)
    }

    /// [`Root::walk`], folders included: each folder beneath `folder` is handed on (before what
    /// it holds) as well as each file, with their modes and exact modification times.
    pub fn walk_all<E>(
        &self,
        folder: Option<&Name>,
        each: impl FnMut(FileEntry) -> Result<(), E>,
    ) -> Result<u64, WalkError<E>> {
        self.walk_served(folder, true, each)
    }

    /// [`Root::walk`] (`folders`: [`Root::walk_all`]): what `get` serves, each entry as found.
    fn walk_served<E>(
        &self,
        folder: Option<&Name>,
        folders: bool,
        mut each: impl FnMut(FileEntry) -> Result<(), E>,
    ) -> Result<u64, WalkError<E>> {
        let how = Walk { follow: true, stat_files: true, folders, report: false };
        self.walk_with(folder, how, |found| match found {
            Found::Entry(entry) => each(entry),
            Found::Unreadable { .. } => Ok(()),
        })
    }

    /// The text a symlink holds, read beneath the root (a symlinked folder on the way is followed
    /// only while it stays inside).
    pub(super) fn read_link(&self, name: &Name) -> io::Result<Vec<u8>> {
        use std::os::unix::ffi::OsStringExt;
        Ok(self.dir.read_link_contents(name.as_path())?.into_os_string().into_vec())
    }

    /// `name` as the symlink it is, with its target; or, if that cannot be read, unreadable.
    fn symlink_found(&self, name: Name, meta: Option<&cap_std::fs::Metadata>) -> Found {
        match self.read_link(&name) {
            Ok(target) => Found::Entry(FileEntry::of(name, meta, Kind::Symlink(target))),
            Err(e) => Found::Unreadable { name, error: WalkProblem::Entry(e.into()) },
        }
    }

    /// Every entry beneath `folder` (or the whole root), each handed to `each` as it is found
    /// (a folder before what it holds) with what it is: files, folders, symlinks, fifos, sockets,
    /// devices, and, as [`Found::Unreadable`], whatever could not be read, after which the walk
    /// goes on. With `follow`, symlinks are followed while they stay inside the root (as `get`
    /// follows them) and each is listed as what it leads to, or, if it leads out, to nothing, or
    /// back to a folder above it, as itself; without, each symlink is listed as itself, with its
    /// target, and never followed. Memory stays bounded as for [`Root::walk`]. Returns how
    /// many entries were handed on.
    pub fn walk_tree<E>(
        &self,
        folder: Option<&Name>,
        follow: bool,
        each: impl FnMut(Found) -> Result<(), E>,
    ) -> Result<u64, WalkError<E>> {
        self.walk_with(folder, Walk { follow, stat_files: true, folders: true, report: true }, each)
    }

    /// How many files [`Root::walk`] would find, found more cheaply: a plain file's entry in its
    /// folder says it is one, so only symlinks are looked up.
    pub fn count(&self, folder: Option<&Name>) -> Result<u64, WalkError<std::convert::Infallible>> {
        self.walk_with(folder, Walk { follow: true, stat_files: false, folders: false, report: false }, |_| Ok(()))
    }

    /// The one walker behind the others (see [`Walk`]). Counts what it hands on.
    fn walk_with<E>(
        &self,
        folder: Option<&Name>,
        how: Walk,
        mut each: impl FnMut(Found) -> Result<(), E>,
    ) -> Result<u64, WalkError<E>> {
        let top = match folder {
            Some(folder) if is_reserved(folder) => Err(io::ErrorKind::NotFound.into()),
            Some(folder) if how.follow => self.dir.metadata(folder.as_path()),
            Some(folder) => self.dir.symlink_metadata(folder.as_path()),
            None => self.dir.dir_metadata(),
        };
        let top = top.map_err(|e| WalkError::Open(e.into()))?;
        if !top.is_dir() {
            return Err(WalkError::Open(OpenError::NotFile));
        }
        if self.is_staging(top.dev(), top.ino()) {
            return Err(WalkError::Open(OpenError::NotFound));
        }
        let read = match folder {
            None => self.dir.entries(),
            Some(p) => self.dir.read_dir(p.as_path()),
        };
        // The folders being read, outermost first: each with its name, its (device, inode) so a
        // symlink back to one of them is seen as a loop, and where its reading stands.
        let mut open = vec![(folder.cloned(), (top.dev(), top.ino()), read.map_err(|e| WalkError::Open(e.into()))?)];
        let mut count = 0u64;
        let mut hand = |found: Found, count: &mut u64| {
            *count += 1;
            each(found).map_err(WalkError::Stopped)
        };
        while let Some((prefix, _, read)) = open.last_mut() {
            let Some(entry) = read.next() else {
                open.pop();
                continue;
            };
            let here = || prefix.as_ref().map_or(".".into(), Name::to_string);
            let entry = match entry {
                Ok(entry) => entry,
                Err(source) if how.report => {
                    // The rest of this folder is unknown: said of the folder, then it is left.
                    let name = prefix.clone();
                    open.pop();
                    if let Some(name) = name {
                        let error = WalkProblem::Folder(source.into());
                        hand(Found::Unreadable { name, error }, &mut count)?;
                        continue;
                    }
                    return Err(WalkError::Read { folder: ".".into(), source });
                }
                Err(source) => return Err(WalkError::Read { folder: here(), source }),
            };
            let file_name = entry.file_name();
            let file_name = file_name.as_bytes();
            if prefix.is_none() && file_name == STAGING.as_bytes() {
                continue;
            }
            let name = match prefix {
                None => Name::from_bytes(file_name),
                Some(p) => p.join(file_name),
            };
            let name = match name {
                Ok(name) => name,
                Err(e) if how.report => {
                    // Said of the folder that holds it: nothing beneath it may be taken as gone.
                    let Some(name) = prefix.clone() else {
                        return Err(WalkError::Open(OpenError::Io(io::Error::other(e))));
                    };
                    hand(Found::Unreadable { name, error: WalkProblem::BadName(e) }, &mut count)?;
                    continue;
                }
                Err(_) => continue,
            };
            let kind = match entry.file_type() {
                Ok(kind) => kind,
                Err(e) if how.report => {
                    hand(Found::Unreadable { name, error: WalkProblem::Entry(e.into()) }, &mut count)?;
                    continue;
                }
                Err(_) => continue,
            };
            if kind.is_file() && !how.stat_files {
                hand(Found::Entry(FileEntry::of(name, None, Kind::File)), &mut count)?;
                continue;
            }
            let meta = if kind.is_symlink() && how.follow {
                // stat through the root: follows symlinks only while they stay inside, so a
                // symlinked folder inside the root is listed as `get` serves it.
                match self.dir.metadata(name.as_path()) {
                    Ok(meta) => Ok(meta),
                    Err(e) if !how.report => Err(e),
                    // Out of the root, or to nothing: listed as the symlink it is, not followed.
                    Err(e) if unfollowable(&e) => entry.metadata(),
                    Err(e) => {
                        hand(Found::Unreadable { name, error: WalkProblem::Entry(e.into()) }, &mut count)?;
                        continue;
                    }
                }
            } else {
                // Looked up in its folder, without resolving the path again.
                entry.metadata()
            };
            let meta = match meta {
                Ok(meta) => meta,
                Err(e) if how.report => {
                    hand(Found::Unreadable { name, error: WalkProblem::Entry(e.into()) }, &mut count)?;
                    continue;
                }
                Err(_) => continue,
            };
            let kind = Kind::of(meta.file_type());
            match kind {
                Kind::File if self.is_staged(meta.dev(), meta.ino()) => {}
                Kind::File => hand(Found::Entry(FileEntry::of(name, Some(&meta), kind)), &mut count)?,
                Kind::Folder => {
                    let id = (meta.dev(), meta.ino());
                    if self.is_staging(id.0, id.1) {
                        continue;
                    }
                    if open.iter().any(|(_, above, _)| *above == id) {
                        // A symlink back to a folder above it: listed as the symlink it is (the
                        // walk must end), not followed.
                        if how.report {
                            let link = entry.metadata().ok();
                            hand(self.symlink_found(name, link.as_ref()), &mut count)?;
                        }
                        continue;
                    }
                    if open.len() >= MAX_DEPTH {
                        if how.report {
                            hand(Found::Unreadable { name, error: WalkProblem::TooDeep }, &mut count)?;
                        }
                        continue;
                    }
                    if how.folders {
                        hand(Found::Entry(FileEntry::of(name.clone(), Some(&meta), kind)), &mut count)?;
                    }
                    match self.dir.read_dir(name.as_path()) {
                        Ok(read) => open.push((Some(name), id, read)),
                        Err(e) if how.report => {
                            let error = WalkProblem::Folder(e.into());
                            hand(Found::Unreadable { name, error }, &mut count)?;
                        }
                        // Gone meanwhile: skipped, as a file that vanished is.
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(source) => return Err(WalkError::Read { folder: name.to_string(), source }),
                    }
                }
                Kind::Symlink(_) if how.report => hand(self.symlink_found(name, Some(&meta)), &mut count)?,
                _ if how.report => hand(Found::Entry(FileEntry::of(name, Some(&meta), kind)), &mut count)?,
                _ => {}
            }
        }
        Ok(count)
    }
}

/// Whether following a symlink failed because of where it leads (out of the root, to nothing, a
/// loop of links), rather than a failure to read.
fn unfollowable(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(e.kind(), NotFound | NotADirectory | PermissionDenied)
        || e.raw_os_error() == Some(Errno::LOOP.raw_os_error())
}

/// How [`Root::walk_with`] walks.
#[derive(Clone, Copy)]
struct Walk {
    /// Follow symlinks while they stay inside the root.
    follow: bool,
    /// Look up each file's metadata (else only its name is handed on).
    stat_files: bool,
    /// Hand on folders too.
    folders: bool,
    /// Hand on every entry, whatever it is, and what could not be read ([`Found::Unreadable`]),
    /// and go on; else only files (and folders), and a folder that cannot be read ends the walk.
    report: bool,
}
