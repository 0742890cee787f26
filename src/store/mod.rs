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
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use cap_std::fs::{Dir, MetadataExt as _, OpenOptions, OpenOptionsExt as _};
use rustix::fs::{AtFlags, FileType, OFlags};
use rustix::io::Errno;

use crate::name::Name;

mod held;
mod put;
pub use held::{Caps, Full};
pub(crate) use put::link_unnamed;
pub use put::{
    Cleaned, Expected, FOLDER_MODE, PARTIAL_TTL, Partial, PutError, RESUMABLE_FROM, STAGING, Stored, Upload,
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

/// What an entry beneath the root is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File,
    Folder,
    /// A symlink, as itself (a walk that does not follow links): the text it holds.
    Symlink(Vec<u8>),
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl Kind {
    fn of(file_type: cap_std::fs::FileType) -> Kind {
        use cap_std::fs::FileTypeExt as _;
        if file_type.is_file() {
            Kind::File
        } else if file_type.is_dir() {
            Kind::Folder
        } else if file_type.is_symlink() {
            Kind::Symlink(Vec::new())
        } else if file_type.is_fifo() {
            Kind::Fifo
        } else if file_type.is_socket() {
            Kind::Socket
        } else if file_type.is_char_device() {
            Kind::CharDevice
        } else {
            Kind::BlockDevice
        }
    }
}

/// One entry found beneath the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub name: Name,
    pub kind: Kind,
    /// 0 but for a file.
    pub size: u64,
    /// Modification time, seconds since the Unix epoch, and nanoseconds.
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// Permission bits (`0o7777`).
    pub mode: u32,
}

impl FileEntry {
    fn of(name: Name, meta: Option<&cap_std::fs::Metadata>, kind: Kind) -> FileEntry {
        match meta {
            Some(m) => FileEntry {
                name,
                size: if kind == Kind::File { m.len() } else { 0 },
                mtime: m.mtime(),
                mtime_nsec: u32::try_from(m.mtime_nsec()).unwrap_or(0),
                mode: m.mode() & 0o7777,
                kind,
            },
            None => FileEntry { name, size: 0, mtime: 0, mtime_nsec: 0, mode: 0, kind },
        }
    }

    pub fn is_folder(&self) -> bool {
        self.kind == Kind::Folder
    }
}

/// What a [`Root::walk_tree`] finds at one name.
#[derive(Debug)]
pub enum Found {
    Entry(FileEntry),
    /// Something that could not be read: a folder (so what it holds is not known) or an entry. The
    /// name is the nearest one that can be named.
    Unreadable {
        name: Name,
        error: WalkProblem,
    },
}

/// Why an entry found by a walk could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WalkProblem {
    #[error("cannot read the folder: {0}")]
    Folder(OpenError),
    #[error("cannot read it: {0}")]
    Entry(OpenError),
    #[error("nested more than {MAX_DEPTH} folders deep")]
    TooDeep,
    #[error("it holds an entry whose name cannot be served ({0})")]
    BadName(crate::name::NameError),
}

impl WalkProblem {
    /// The kind of failure, as an [`OpenError`] says it.
    pub fn open_error(&self) -> OpenError {
        match self {
            WalkProblem::Folder(e) | WalkProblem::Entry(e) => match e {
                OpenError::NotFound => OpenError::NotFound,
                OpenError::NotFile => OpenError::NotFile,
                OpenError::Denied => OpenError::Denied,
                OpenError::Io(e) => OpenError::Io(io::Error::new(e.kind(), e.to_string())),
            },
            WalkProblem::TooDeep | WalkProblem::BadName(_) => OpenError::Io(io::Error::other("cannot be listed")),
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
    /// The process's umask when the root was opened: uploads are masked by it.
    umask: u32,
    /// Bytes of interrupted uploads read to hash them (what a `partial` costs when its digest
    /// was not remembered), for `stats`.
    hashed: std::sync::atomic::AtomicU64,
}

/// The process's umask. Read from `/proc/self/status` where the kernel shows it: the only other
/// way is to set it and set it back, and in between another thread's new file (or folder) would
/// be created with no mask at all.
pub fn current_umask() -> u32 {
    let shown = std::fs::read_to_string("/proc/self/status").ok().and_then(|status| {
        let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
        u32::from_str_radix(line.trim(), 8).ok()
    });
    let umask = shown.unwrap_or_else(|| {
        let umask = rustix::process::umask(rustix::fs::Mode::empty());
        rustix::process::umask(umask);
        umask.bits()
    });
    umask & 0o777
}

/// Whether `name` lies in the uploads' staging folder, which is neither listed nor served.
pub fn is_reserved(name: &Name) -> bool {
    name.components().next() == Some(STAGING.as_bytes())
}

impl Root {
    pub fn open(path: &Path) -> io::Result<Root> {
        let dir = Dir::open_ambient_dir(path, cap_std::ambient_authority())?;
        Ok(Root { dir, path: path.to_path_buf(), staging: None, umask: current_umask(), hashed: Default::default() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the folder `(dev, ino)` is the uploads' staging folder, however it was reached.
    fn is_staging(&self, dev: u64, ino: u64) -> bool {
        self.staging.as_ref().is_some_and(|s| (s.dev(), s.ino) == (dev, ino))
    }

    /// Whether the file `(dev, ino)` is an interrupted upload in the staging folder, however it
    /// was reached (such a file is neither served nor listed).
    fn is_staged(&self, dev: u64, ino: u64) -> bool {
        self.staging.as_ref().is_some_and(|s| s.held.holds(dev, ino))
    }

    /// Interrupted uploads held, and the bytes they are counted as (`None`: uploads are off).
    pub fn staging_usage(&self) -> Option<(usize, u64)> {
        self.staging.as_ref().map(|s| s.held.usage())
    }

    /// Whether an upload of `name` (`len` bytes, modified at `mtime`) from `owner` would find room
    /// for its staging file (see [`Caps`]): always for one too small to be resumable, or whose
    /// interrupted upload is held already.
    pub fn staging_room(&self, name: &Name, len: u64, mtime: (i64, u32), owner: &str) -> Result<(), Full> {
        match &self.staging {
            Some(staging) if len >= RESUMABLE_FROM => {
                staging.held.room(&put::partial_key(name, len, mtime), len, owner)
            }
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
        if is_reserved(name) {
            return Err(OpenError::NotFound);
        }
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
        if is_reserved(name) {
            return None;
        }
        let st = rustix::fs::statat(&self.dir, name.as_path(), AtFlags::empty()).ok()?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return None;
        }
        Some(FileVersion::of_stat(&st))
    }

    /// What is at `name`, not following a symlink at its end (symlinks on the way are followed
    /// while they stay inside the root): what `stat` answers.
    pub fn lookup(&self, name: &Name) -> Result<FileEntry, OpenError> {
        if is_reserved(name) {
            return Err(OpenError::NotFound);
        }
        let meta = self.dir.symlink_metadata(name.as_path())?;
        let kind = match Kind::of(meta.file_type()) {
            Kind::Symlink(_) => Kind::Symlink(self.read_link(name)?),
            Kind::Folder if self.is_staging(meta.dev(), meta.ino()) => return Err(OpenError::NotFound),
            Kind::File if self.is_staged(meta.dev(), meta.ino()) => return Err(OpenError::NotFound),
            kind => kind,
        };
        Ok(FileEntry::of(name.clone(), Some(&meta), kind))
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
        // Reached through a symlink into the staging folder: someone's interrupted upload.
        if self.is_staged(st.st_dev, st.st_ino) {
            return Err(OpenError::NotFound);
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
    fn read_link(&self, name: &Name) -> io::Result<Vec<u8>> {
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
