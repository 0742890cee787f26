//! What the uploads' staging folder holds, kept in memory: each interrupted upload's file (by its
//! staging key), its inode, the bytes it may grow to, whose it is, when it was last written, and
//! how far it has been hashed.
//!
//! Three things follow from it:
//! - **Caps.** Staging files are counted and their bytes reserved (the whole upload's size, when
//!   it starts) against caps in all and per owner (a token's name, or without tokens the peer's
//!   address), so abandoned uploads cannot fill the disk or use every inode; a new one past a cap
//!   first reclaims the least recently written that no upload holds now, and is refused if that
//!   is not enough.
//! - **What is reserved, by identity.** A staging file is never served or listed, whatever path
//!   reaches it (a symlink `self -> .` planted in the root, say): the store asks [`Held::holds`]
//!   of every file it opens, by device and inode.
//! - **Hashing once.** When an upload stops, the running digest of what it wrote is kept with
//!   the file's size and times, so asking what is held (`partial`) costs no read of the file
//!   while it is unchanged.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use parking_lot::Mutex;

use crate::digest::Hasher;
use crate::files::FileVersion;

/// How much the staging folder may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Bytes of interrupted uploads (each counted at its whole size once it starts).
    pub bytes: u64,
    /// Interrupted uploads.
    pub files: usize,
}

impl Caps {
    /// One owner (a token, or an address without tokens) may hold at most half of either.
    fn per_owner(&self) -> (u64, usize) {
        (self.bytes / 2, (self.files / 2).max(1))
    }
}

struct Entry {
    /// Device and inode of the file.
    id: (u64, u64),
    /// What it is counted as: the whole upload's size.
    reserved: u64,
    /// Whose it is (`None`: left by an earlier run).
    owner: Option<String>,
    /// When it was last written (or found).
    last: SystemTime,
    /// An upload holds it now (it may not be reclaimed).
    in_use: bool,
    /// The digest of its first bytes, as the last upload to write it left it.
    hashed: Option<(FileVersion, u64, Hasher)>,
}

/// The staging folder's interrupted uploads.
pub struct Held {
    caps: Caps,
    table: Mutex<HashMap<String, Entry>>,
    /// Device and inode of every staging file, for [`Held::holds`].
    ids: Mutex<HashSet<(u64, u64)>>,
}

/// Why a new interrupted upload may not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Full {
    #[error(
        "the server holds {files} interrupted uploads of {bytes} bytes, its most (reclaiming the oldest did not make room)"
    )]
    All { files: usize, bytes: u64 },
    #[error("this sender's interrupted uploads hold {files} files of {bytes} bytes, the most one sender may")]
    Owner { files: usize, bytes: u64 },
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held").field("caps", &self.caps).field("usage", &self.usage()).finish()
    }
}

impl Held {
    pub fn new(caps: Caps) -> Held {
        Held { caps, table: Mutex::default(), ids: Mutex::default() }
    }

    /// Notes a staging file found at start-up (left by an earlier run).
    pub(super) fn found(&self, key: &str, id: (u64, u64), size: u64, written: SystemTime) {
        let entry = Entry { id, reserved: size, owner: None, last: written, in_use: false, hashed: None };
        self.table.lock().insert(key.to_string(), entry);
        self.ids.lock().insert(id);
    }

    /// Whether the file `(dev, ino)` is a staging file.
    pub fn holds(&self, dev: u64, ino: u64) -> bool {
        self.ids.lock().contains(&(dev, ino))
    }

    /// How many interrupted uploads are held, and the bytes they are counted as.
    pub fn usage(&self) -> (usize, u64) {
        let table = self.table.lock();
        (table.len(), table.values().map(|e| e.reserved).sum())
    }

    /// Whether the interrupted upload `key` of `len` bytes from `owner` could start (it is held
    /// already, or reclaiming the least recently written files no upload holds makes room):
    /// checked before its body.
    pub fn room(&self, key: &str, len: u64, owner: &str) -> Result<(), Full> {
        let table = self.table.lock();
        if table.contains_key(key) {
            return Ok(());
        }
        self.plan(&table, len, owner).map(drop)
    }

    /// Counts a new staging file `key` of an upload of `len` bytes from `owner`, in use, after
    /// reclaiming what [`Held::room`] would: the keys to unlink are returned (already forgotten).
    pub(super) fn start(&self, key: &str, len: u64, owner: &str) -> Result<Vec<String>, Full> {
        let mut table = self.table.lock();
        if let Some(entry) = table.get_mut(key) {
            entry.in_use = true;
            return Ok(Vec::new());
        }
        let victims = self.plan(&table, len, owner)?;
        let mut ids = self.ids.lock();
        for victim in &victims {
            if let Some(gone) = table.remove(victim) {
                ids.remove(&gone.id);
            }
        }
        let entry = Entry {
            id: (0, 0),
            reserved: len,
            owner: Some(owner.to_string()),
            last: SystemTime::now(),
            in_use: true,
            hashed: None,
        };
        table.insert(key.to_string(), entry);
        Ok(victims)
    }

    /// The staging file `key` was created (or opened) as `(dev, ino)`.
    pub(super) fn opened(&self, key: &str, id: (u64, u64)) {
        if let Some(entry) = self.table.lock().get_mut(key) {
            if entry.id != id {
                self.ids.lock().remove(&entry.id);
            }
            entry.id = id;
            entry.in_use = true;
        }
        self.ids.lock().insert(id);
    }

    /// An upload that held `key` let it go: what it wrote is noted (`hashed`: the digest of the
    /// first bytes, with the file's version then).
    pub(super) fn released(&self, key: &str, hashed: Option<(FileVersion, u64, Hasher)>) {
        if let Some(entry) = self.table.lock().get_mut(key) {
            entry.in_use = false;
            entry.last = SystemTime::now();
            entry.hashed = hashed;
        }
    }

    /// The digest of the first `len` bytes of `key`, if it was noted with the version the file has.
    pub(super) fn hashed(&self, key: &str, version: &FileVersion) -> Option<(u64, Hasher)> {
        let table = self.table.lock();
        let (noted, len, hasher) = table.get(key)?.hashed.as_ref()?;
        (noted == version).then(|| (*len, hasher.clone()))
    }

    /// The staging file `key` is gone (named, or removed).
    pub(super) fn gone(&self, key: &str) {
        if let Some(entry) = self.table.lock().remove(key) {
            self.ids.lock().remove(&entry.id);
        }
    }

    /// The keys to reclaim so that an upload of `len` bytes from `owner` fits, least recently
    /// written first; or why it cannot.
    fn plan(&self, table: &HashMap<String, Entry>, len: u64, owner: &str) -> Result<Vec<String>, Full> {
        let (owner_bytes_cap, owner_files_cap) = self.caps.per_owner();
        let mine = table.values().filter(|e| e.owner.as_deref() == Some(owner));
        let (mut my_files, mut my_bytes) = mine.fold((0, 0u64), |(n, b), e| (n + 1, b + e.reserved));
        let mut files = table.len();
        let mut bytes: u64 = table.values().map(|e| e.reserved).sum();
        let mut free: Vec<(&String, &Entry)> = table.iter().filter(|(_, e)| !e.in_use).collect();
        free.sort_by_key(|(_, e)| e.last);
        let mut victims = Vec::new();
        let owner_over = |my_files: usize, my_bytes: u64| {
            my_files + 1 > owner_files_cap || my_bytes.saturating_add(len) > owner_bytes_cap
        };
        let over = |files: usize, bytes: u64, my_files: usize, my_bytes: u64| {
            files + 1 > self.caps.files || bytes.saturating_add(len) > self.caps.bytes || owner_over(my_files, my_bytes)
        };
        // The owner's own oldest go first when the owner is over its share; then anyone's.
        let mut order: Vec<(&String, &Entry)> =
            free.iter().filter(|(_, e)| e.owner.as_deref() == Some(owner)).copied().collect();
        order.extend(free.iter().filter(|(_, e)| e.owner.as_deref() != Some(owner)).copied());
        for (key, entry) in order {
            if !over(files, bytes, my_files, my_bytes) {
                break;
            }
            let owners = entry.owner.as_deref() == Some(owner);
            // Someone else's file makes no room in this owner's share.
            if !owners && owner_over(my_files, my_bytes) {
                continue;
            }
            victims.push(key.clone());
            files -= 1;
            bytes -= entry.reserved;
            if owners {
                my_files -= 1;
                my_bytes -= entry.reserved;
            }
        }
        if owner_over(my_files, my_bytes) {
            return Err(Full::Owner { files: my_files, bytes: my_bytes });
        }
        if over(files, bytes, my_files, my_bytes) {
            return Err(Full::All { files, bytes });
        }
        Ok(victims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_uploads_reclaim_the_oldest_free_files_and_are_refused_past_the_caps() {
        let held = Held::new(Caps { bytes: 100, files: 4 });
        assert_eq!(held.start("a", 30, "alice"), Ok(vec![]));
        held.opened("a", (1, 1));
        assert_eq!(held.start("b", 20, "alice"), Ok(vec![]));
        assert!(held.holds(1, 1) && !held.holds(1, 2));
        // Alice's share is half: 50 bytes, 2 files; both of hers are in use.
        assert!(matches!(held.room("x", 10, "alice"), Err(Full::Owner { files: 2, bytes: 50 })));
        assert_eq!(held.room("a", 10, "alice"), Ok(()), "held already: no more room needed");
        // Bob has room, up to the whole cap.
        assert_eq!(held.start("c", 40, "bob"), Ok(vec![]));
        assert!(matches!(held.room("y", 20, "carol"), Err(Full::All { .. })), "all in use, 90 of 100 bytes");
        // Once alice's first upload stops, a new one of hers reclaims it (the oldest free).
        held.released("a", None);
        assert_eq!(held.start("d", 25, "alice"), Ok(vec!["a".to_string()]));
        assert!(!held.holds(1, 1), "a reclaimed file is no longer reserved");
        assert_eq!(held.usage(), (3, 85));
        held.gone("b");
        assert_eq!(held.usage(), (2, 65));
    }

    #[test]
    fn a_noted_digest_holds_only_while_the_file_is_unchanged() {
        let held = Held::new(Caps { bytes: 1 << 30, files: 10 });
        held.start("k", 1 << 20, "-").unwrap();
        let stamp =
            FileVersion { size: 5, mtime_sec: 1, mtime_nsec: 2, ctime_sec: 3, ctime_nsec: 4, ..Default::default() };
        let mut hasher = Hasher::default();
        hasher.update(b"hello");
        held.released("k", Some((stamp, 5, hasher.clone())));
        assert_eq!(held.hashed("k", &stamp).map(|(n, h)| (n, h.digest())), Some((5, hasher.digest())));
        assert!(held.hashed("k", &FileVersion { size: 6, ..stamp }).is_none());
        assert!(held.hashed("k", &FileVersion { ctime_nsec: 5, ..stamp }).is_none());
    }
}
