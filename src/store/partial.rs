//! Interrupted uploads: turning uploads on (the staging folder opened, what earlier runs left
//! cleaned up), finding the one a sender continues, holding it locked, and letting it go.

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags};
use rustix::io::Errno;

use crate::digest::{Digest, Hasher};
use crate::mtime::Mtime;
use crate::name::Name;

use super::error::PutError;
use super::folder::{FOLDER_FLAGS, Folder};
use super::held::{Caps, Held};
use super::root::Root;
use super::staging::{RESUMABLE_FROM, STAGING, Staging, Unstaged, partial_key};
use crate::files::FileVersion;

/// How long an upload waits for an interrupted upload of the same file that another connection
/// still holds, before it starts over in a file of its own.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// How long an interrupted upload is kept for resuming (counted from its last write); older ones
/// are removed when the server starts.
pub const PARTIAL_TTL: Duration = Duration::from_secs(24 * 3600);

/// What [`Root::enable_uploads`] found in the staging folder.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Cleaned {
    /// Leftovers removed: staged names, and interrupted uploads older than [`PARTIAL_TTL`].
    pub removed: usize,
    /// Interrupted uploads kept for resuming.
    pub kept: usize,
    /// Their bytes.
    pub kept_bytes: u64,
}

/// An interrupted upload of one file (one name, size and modification time), held by one caller: no other
/// upload writes it meanwhile (an exclusive lock, released when this is dropped).
pub struct Partial {
    pub(super) file: File,
    pub(super) key: String,
    pub(super) held: u64,
    /// The file's length, which may exceed what is held (bytes past the upload's size).
    pub(super) on_disk: u64,
    pub(super) hasher: Hasher,
    /// The staging folder's bookkeeping, told when this is let go.
    book: Arc<Held>,
    /// The file left the staging folder (named, or removed): forgotten when this is dropped;
    /// else it stays, with the digest of what is held noted.
    pub(super) gone: bool,
}

impl Drop for Partial {
    fn drop(&mut self) {
        if self.gone {
            self.book.gone(&self.key);
            return;
        }
        let noted =
            rustix::fs::fstat(&self.file).ok().map(|st| (FileVersion::of_stat(&st), self.held, self.hasher.clone()));
        self.book.released(&self.key, noted);
    }
}

impl Partial {
    /// How many bytes of the file are held.
    pub fn held(&self) -> u64 {
        self.held
    }

    /// The digest of the bytes held.
    pub fn digest(&self) -> Digest {
        self.hasher.digest()
    }
}

impl Root {
    /// Makes (if need be) and opens the staging folder [`STAGING`], never through a symlink, and
    /// removes what earlier runs left there but the recent interrupted uploads.
    pub fn enable_uploads(&mut self, caps: Caps) -> io::Result<Cleaned> {
        match rustix::fs::mkdirat(&self.dir, STAGING, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        let dir = rustix::fs::openat(&self.dir, STAGING, FOLDER_FLAGS, Mode::empty()).map_err(|e| match e {
            Errno::LOOP | Errno::NOTDIR => io::Error::other(format!("{STAGING} beneath the root is not a folder")),
            e => e.into(),
        })?;
        let st = rustix::fs::fstat(&dir)?;
        let (dev, ino) = (st.st_dev, st.st_ino);
        let held = Arc::new(Held::new(caps));
        let mut cleaned = Cleaned::default();
        let now = SystemTime::now();
        for entry in rustix::fs::Dir::read_from(&dir)? {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let Ok(st) = rustix::fs::statat(&dir, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW) else { continue };
            if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory {
                continue;
            }
            let written = SystemTime::UNIX_EPOCH + Duration::from_secs(st.st_mtime.max(0) as u64);
            let recent = now.duration_since(written).is_ok_and(|age| age < PARTIAL_TTL);
            if name.ends_with(b".part") && recent {
                cleaned.kept += 1;
                cleaned.kept_bytes += st.st_size.max(0) as u64;
                if let Ok(key) = std::str::from_utf8(name) {
                    held.found(key, (st.st_dev, st.st_ino), st.st_size.max(0) as u64, written);
                }
            } else if rustix::fs::unlinkat(&dir, entry.file_name(), AtFlags::empty()).is_ok() {
                cleaned.removed += 1;
            }
        }
        self.staging = Some(Staging { dir, dev, ino, held });
        Ok(cleaned)
    }

    /// The interrupted upload of `name` (`len` bytes, modified at `mtime`) held beneath the root, locked
    /// for the caller, with how much of it there is and their digest; `None` if uploads of this
    /// size are not resumable here, or another upload holds it now (this one then starts over
    /// in a file of its own), or there is none.
    pub fn partial(&self, name: &Name, len: u64, mtime: Mtime) -> Result<Option<Partial>, PutError> {
        let name = Unstaged::new(name).ok_or(PutError::Reserved)?;
        let (existing, _, _) = self.existing_folder(name)?;
        self.open_partial(&existing, name, len, mtime, false)
    }

    pub(super) fn open_partial(
        &self,
        folder: &Folder,
        name: Unstaged<'_>,
        len: u64,
        mtime: Mtime,
        create: bool,
    ) -> Result<Option<Partial>, PutError> {
        let Some(staging) = &self.staging else { return Ok(None) };
        if len < RESUMABLE_FROM || rustix::fs::fstat(folder)?.st_dev != staging.dev {
            return Ok(None);
        }
        // The file as its sender has it: the same name, size and modification time. Whether the
        // bytes held are its first is for the sender to check by their digest.
        let key = partial_key(name, len, mtime);
        let flags = OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let flags = if create { flags | OFlags::CREATE } else { flags };
        // Held by another upload: most often the connection of the very upload being resumed,
        // still writing what the kernel had received when its sender stopped. It is waited for
        // a moment; past that, this upload starts over in a file of its own.
        let until = std::time::Instant::now() + LOCK_WAIT;
        let (file, st) = loop {
            let file = match rustix::fs::openat(&staging.dir, key.as_str(), flags, Mode::from_raw_mode(0o600)) {
                Ok(fd) => File::from(fd),
                Err(Errno::NOENT) if !create => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(Errno::WOULDBLOCK) if std::time::Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                Err(Errno::WOULDBLOCK) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
            // Locked; but the upload that held it may have finished meanwhile, giving the file
            // its final name and taking it out of the staging folder: then this is no longer the
            // staging file, and must not be written. Only the file the staging name still holds is.
            let st = rustix::fs::fstat(&file)?;
            match staging.still_names(&key, &st) {
                Ok(true) => break (file, st),
                Ok(false) if std::time::Instant::now() < until => continue,
                Ok(false) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        };
        staging.held.opened(&key, (st.st_dev, st.st_ino));
        let on_disk = st.st_size.max(0) as u64;
        let held = on_disk.min(len);
        // Locked: nothing else changes it meanwhile. What the last upload to write it hashed is
        // remembered while the file is unchanged: asking again costs no read.
        let hasher = match staging.held.hashed(&key, &FileVersion::of_stat(&st)) {
            Some((noted, hasher)) if noted == held => hasher,
            _ => {
                let mut hasher = Hasher::default();
                crate::digest::feed_file(&file, 0, held, &mut hasher)?;
                self.hashed.fetch_add(held, Ordering::Relaxed);
                hasher
            }
        };
        Ok(Some(Partial { file, key, held, on_disk, hasher, book: staging.held.clone(), gone: false }))
    }

    /// Removes an interrupted upload of the file just stored another way (its staging file was
    /// held when this upload began), unless an upload holds it still.
    pub(super) fn forget_partial(&self, name: Unstaged<'_>, len: u64, mtime: Mtime) {
        let Some(staging) = &self.staging else { return };
        if len < RESUMABLE_FROM {
            return;
        }
        let key = partial_key(name, len, mtime);
        let flags = OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let Ok(fd) = rustix::fs::openat(&staging.dir, key.as_str(), flags, Mode::empty()) else { return };
        let locked = rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive).is_ok();
        // Locked, and still the file under that name (not one an upload made after it went).
        if locked && rustix::fs::fstat(&fd).is_ok_and(|st| staging.still_names(&key, &st).unwrap_or(false)) {
            let _ = rustix::fs::unlinkat(&staging.dir, key.as_str(), AtFlags::empty());
        }
    }
}
