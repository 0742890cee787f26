//! The byte-capped file cache shared by all connections, and its mirror in `server_cache/`.
//!
//! One `parking_lot::Mutex<HashMap>` holds the entries; the lock is only ever held to look up,
//! insert or remove map entries and adjust the byte count, never across file or socket I/O. A
//! hit hands out a [`Body`] (an `Arc`) so the send happens after the guard is dropped.
//!
//! Rules, in the order the server meets them:
//! - **Lookup** ([`Cache::lookup`]): an entry older than the TTL is dropped; otherwise the
//!   caller's freshness check (a `stat` of the source, done outside the lock) must confirm the
//!   file's size, mtime and inode are unchanged, or the entry is dropped and the request is a miss.
//! - **Admission** ([`Cache::reserve`] then [`Reservation::commit`]): a miss reserves the file's
//!   room before reading it, so concurrent misses never hold more than the cap in memory. When
//!   the cache is full it takes no more files (the design's rule: no eviction of live entries);
//!   expired entries are swept to make room first. A file modified within the last
//!   [`SETTLE_TIME`] is not admitted: a second write in the same timestamp tick would leave its
//!   mtime unchanged and the stale copy undetectable (git's "racily clean" problem).
//! - **Charge**: an entry costs its size, plus [`ENTRY_COST`] for its bookkeeping in memory,
//!   plus its mirror header. The charge is taken when room is reserved and released only when
//!   the last holder of the bytes lets go (the entry, and every connection still sending them),
//!   so bytes of a dropped entry that are still being sent keep counting. Mirror files are
//!   deleted before that, so memory and `server_cache/` each stay within the cap.
//! - **Expiry** is found oldest first, so a full cache of many entries costs a miss no more than
//!   an empty one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use super::bytes::{Body, Bytes, Held};
use super::mirror::{self, Mirror};
use crate::digest::Digest;
use crate::mtime::Mtime;
use crate::name::Name;
use crate::store::{FileVersion, Root};

/// What a hit hands out: the bytes and their digest.
#[derive(Clone)]
pub struct Cached {
    pub body: Body,
    pub digest: Digest,
    /// The file's permission bits, for the reply.
    pub mode: u32,
    /// The file's modification time (seconds, nanoseconds), for the reply.
    pub mtime: Mtime,
}

/// What each entry is charged for its bookkeeping in memory (the maps, its name, the shared
/// bytes' header), so that a cache of many tiny files stays within its cap as one of a few big
/// ones does. Measured at about 500 bytes an entry with 100,000 entries; a map's table doubles
/// as it grows, hence twice that.
pub const ENTRY_COST: u64 = 1024;

/// How long after its last modification a file must stay unchanged before it is admitted.
pub const SETTLE_TIME: Duration = Duration::from_millis(50);

/// The cache.
pub struct Cache {
    /// Most bytes the entries may be charged, in memory and on disk alike.
    cap: u64,
    /// Age after which an entry is dropped.
    ttl: Duration,
    /// The `server_cache/` folder, when the cache is mirrored on disk.
    mirror: Option<Mirror>,
    /// Entries and reservations; held only for map operations.
    inner: Mutex<Inner>,
    /// Bytes charged to reservations and to live [`Held`] bytes; never above `cap`.
    charged: Arc<AtomicU64>,
    /// Event counters, readable without the lock.
    counters: Counters,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Name, Entry>,
    /// The same entries oldest first (by admission time, then order of insertion), so the
    /// expired ones are found without going through all the others.
    by_age: BTreeMap<(Instant, u64), Name>,
    /// The order of the next insertion.
    next: u64,
    /// Names being read from disk for admission: no second reader reserves them.
    pending: HashSet<Name>,
}

impl Inner {
    /// Adds an entry; returns the one it replaced, if any (for its mirror file to be removed).
    fn insert(&mut self, name: Name, mut entry: Entry) -> Option<Entry> {
        entry.order = self.next;
        self.next += 1;
        self.by_age.insert((entry.admitted, entry.order), name.clone());
        let old = self.entries.insert(name, entry)?;
        self.by_age.remove(&(old.admitted, old.order));
        Some(old)
    }

    fn remove(&mut self, name: &Name) -> Option<Entry> {
        let entry = self.entries.remove(name)?;
        self.by_age.remove(&(entry.admitted, entry.order));
        Some(entry)
    }

    /// Removes and returns every entry older than `ttl`, oldest first.
    fn take_expired(&mut self, now: Instant, ttl: Duration) -> Vec<Entry> {
        let mut gone = Vec::new();
        while let Some(oldest) = self.by_age.first_entry() {
            if now.saturating_duration_since(oldest.key().0) <= ttl {
                break;
            }
            let name = oldest.remove();
            gone.extend(self.entries.remove(&name));
        }
        gone
    }
}

struct Entry {
    body: Body,
    digest: Digest,
    version: FileVersion,
    admitted: Instant,
    /// Its place in [`Inner::by_age`] with `admitted`.
    order: u64,
    /// Its file in the mirror folder.
    file: Option<String>,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    admitted: AtomicU64,
    refused: AtomicU64,
    expired: AtomicU64,
    invalidated: AtomicU64,
}

/// A snapshot of the cache's size and counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub entries: u64,
    /// Bytes charged against the cap (file bytes plus mirror headers).
    pub bytes: u64,
    pub cap: u64,
    pub hits: u64,
    pub misses: u64,
    pub admitted: u64,
    /// Misses that were not admitted: no room, too big, or modified too recently.
    pub refused: u64,
    pub expired: u64,
    /// Entries dropped because their source changed or vanished.
    pub invalidated: u64,
}

impl Cache {
    /// A cache of at most `cap` bytes whose entries live `ttl`, mirrored in `mirror` if given.
    pub fn new(cap: u64, ttl: Duration, mirror: Option<Mirror>) -> Cache {
        Cache {
            cap,
            ttl,
            mirror,
            inner: Mutex::new(Inner::default()),
            charged: Arc::default(),
            counters: Counters::default(),
        }
    }

    /// The cached bytes of `name` if present, younger than the TTL, and still `is_fresh`.
    pub fn lookup(&self, name: &Name, now: Instant, is_fresh: impl FnOnce(&FileVersion) -> bool) -> Option<Cached> {
        let found = {
            let mut inner = self.inner.lock();
            match inner.entries.get(name) {
                None => None,
                Some(e) if now.saturating_duration_since(e.admitted) > self.ttl => {
                    let gone = inner.remove(name);
                    drop(inner);
                    self.counters.expired.fetch_add(1, Ordering::Relaxed);
                    self.retire(gone);
                    None
                }
                Some(e) => Some((
                    Cached { body: e.body.clone(), digest: e.digest, mode: e.version.mode, mtime: e.version.mtime() },
                    e.version,
                )),
            }
        };
        match found {
            Some((hit, version)) if is_fresh(&version) => {
                self.counters.hits.fetch_add(1, Ordering::Relaxed);
                Some(hit)
            }
            Some((stale, _)) => {
                self.invalidate(name, &stale.body);
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
            None => {
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Reserves room to admit `name` at `version`, or says no: already cached or being read,
    /// too recently modified, or no room even after sweeping expired entries.
    pub fn reserve(&self, name: &Name, version: &FileVersion, now: Instant) -> Option<Reservation<'_>> {
        let charge = version.size.saturating_add(self.overhead(name));
        if charge > self.cap || !settled(version, SystemTime::now()) {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let mut swept = false;
        loop {
            let mut inner = self.inner.lock();
            if inner.entries.contains_key(name) || inner.pending.contains(name) {
                return None;
            }
            if self.try_charge(charge) {
                inner.pending.insert(name.clone());
                return Some(Reservation { cache: self, name: name.clone(), charge, owes: true });
            }
            let gone = if swept { Vec::new() } else { self.take_expired(&mut inner, now) };
            drop(inner);
            if gone.is_empty() {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            self.retire(gone);
            swept = true;
        }
    }

    /// Drops every entry older than the TTL and deletes its mirror file.
    pub fn sweep(&self, now: Instant) {
        let gone = self.take_expired(&mut self.inner.lock(), now);
        self.retire(gone);
    }

    /// Loads entries left in the mirror folder by an earlier run, keeping those whose source is
    /// unchanged, that are younger than the TTL, and that fit; deletes the others. Returns how many
    /// were loaded.
    pub fn warm(&self, root: &Root, now: Instant) -> usize {
        let Some(mirror) = &self.mirror else { return 0 };
        let mut stored = match mirror.scan() {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(dir = %mirror.path().display(), "cannot read the cache folder: {e}");
                return 0;
            }
        };
        stored.sort_by_key(|s| std::cmp::Reverse(s.admitted));
        let wall = SystemTime::now();
        let mut loaded = 0;
        for s in stored {
            let age = wall.duration_since(s.admitted).unwrap_or_default();
            let charge = s.version.size.saturating_add(self.overhead(&s.name));
            let duplicate = self.inner.lock().entries.contains_key(&s.name);
            let keep = age <= self.ttl
                && !duplicate
                && root.stat(&s.name).is_ok_and(|v| v == s.version)
                && self.try_charge(charge);
            let body = if keep { mirror.load(&s).map(|bytes| self.hold(bytes, charge)).ok() } else { None };
            let Some(body) = body else {
                if keep {
                    self.charged.fetch_sub(charge, Ordering::SeqCst);
                }
                mirror.remove(&s.file);
                continue;
            };
            let admitted = now.checked_sub(age).unwrap_or(now);
            let entry = Entry { body, digest: s.digest, version: s.version, admitted, order: 0, file: Some(s.file) };
            let replaced = self.inner.lock().insert(s.name, entry);
            self.retire(replaced);
            loaded += 1;
        }
        loaded
    }

    pub fn stats(&self) -> CacheStats {
        let entries = self.inner.lock().entries.len() as u64;
        let bytes = self.charged.load(Ordering::SeqCst);
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheStats {
            entries,
            bytes,
            cap: self.cap,
            hits: get(&c.hits),
            misses: get(&c.misses),
            admitted: get(&c.admitted),
            refused: get(&c.refused),
            expired: get(&c.expired),
            invalidated: get(&c.invalidated),
        }
    }

    /// Takes `charge` bytes of the cap if that many are free.
    fn try_charge(&self, charge: u64) -> bool {
        self.charged
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(charge).filter(|&total| total <= self.cap)
            })
            .is_ok()
    }

    /// Wraps bytes whose `charge` was already taken.
    fn hold(&self, bytes: Bytes, charge: u64) -> Body {
        Arc::new(Held::new(bytes, charge, self.charged.clone()))
    }

    /// What an entry for `name` costs besides the file's bytes: its bookkeeping in memory, and
    /// its header in the mirror folder.
    fn overhead(&self, name: &Name) -> u64 {
        ENTRY_COST + if self.mirror.is_some() { mirror::overhead(name) } else { 0 }
    }

    /// Removes `name`'s entry, whatever it holds (an upload replaced the file): counted as
    /// invalidated. A read of the old file under way may still admit it; its version (inode,
    /// times) then no longer matches the file, so the next lookup drops it.
    pub fn forget(&self, name: &Name) {
        let gone = self.inner.lock().remove(name);
        if gone.is_some() {
            self.counters.invalidated.fetch_add(1, Ordering::Relaxed);
        }
        self.retire(gone);
    }

    /// Removes `name` if it still holds `stale` (another thread may have replaced it).
    fn invalidate(&self, name: &Name, stale: &Body) {
        let gone = {
            let mut inner = self.inner.lock();
            match inner.entries.get(name) {
                Some(e) if Arc::ptr_eq(&e.body, stale) => inner.remove(name),
                _ => None,
            }
        };
        if gone.is_some() {
            self.counters.invalidated.fetch_add(1, Ordering::Relaxed);
        }
        self.retire(gone);
    }

    fn take_expired(&self, inner: &mut Inner, now: Instant) -> Vec<Entry> {
        let old = inner.take_expired(now, self.ttl);
        self.counters.expired.fetch_add(old.len() as u64, Ordering::Relaxed);
        old
    }

    /// Deletes removed entries' mirror files (outside the lock), then drops them: their charge
    /// comes back when the last connection sending their bytes is done.
    fn retire(&self, gone: impl IntoIterator<Item = Entry>) {
        for entry in gone {
            if let (Some(mirror), Some(file)) = (&self.mirror, &entry.file) {
                mirror.remove(file);
            }
        }
    }
}

/// Room held for one file while it is read. The charge passes to the bytes ([`Reservation::hold`]);
/// dropping the reservation releases the name, and the charge if the bytes never took it.
pub struct Reservation<'a> {
    cache: &'a Cache,
    name: Name,
    charge: u64,
    /// Whether the charge is still the reservation's (not yet passed to a [`Held`]).
    owes: bool,
}

impl Reservation<'_> {
    /// The file's bytes, now carrying the reserved charge (at most once; later calls charge 0).
    pub fn hold(&mut self, bytes: Bytes) -> Body {
        let charge = if std::mem::take(&mut self.owes) { self.charge } else { 0 };
        self.cache.hold(bytes, charge)
    }

    /// Admits the file's bytes: writes the mirror file, then publishes the entry.
    pub fn commit(self, body: Body, digest: Digest, version: FileVersion, now: Instant) {
        let cache = self.cache;
        if body.len() != version.size || body.charge() != self.charge {
            return;
        }
        let file = match &cache.mirror {
            None => None,
            Some(mirror) => match mirror.write(&self.name, &version, digest, SystemTime::now(), body.bytes()) {
                Ok(file) => Some(file),
                Err(e) => {
                    tracing::warn!(dir = %mirror.path().display(), name = %self.name, "not cached: cannot write cache file: {e}");
                    return;
                }
            },
        };
        let entry = Entry { body, digest, version, admitted: now, order: 0, file };
        let replaced = cache.inner.lock().insert(self.name.clone(), entry);
        cache.retire(replaced);
        cache.counters.admitted.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.cache.inner.lock().pending.remove(&self.name);
        if self.owes {
            self.cache.charged.fetch_sub(self.charge, Ordering::SeqCst);
        }
    }
}

/// Whether a file's last change (the later of mtime and ctime) is far enough in the past that a
/// later write would change its version (and that a write in progress is unlikely).
pub(crate) fn settled(v: &FileVersion, now: SystemTime) -> bool {
    let (secs, nanos) = v.changed();
    let changed = match u64::try_from(secs) {
        Ok(secs) => UNIX_EPOCH + Duration::new(secs, nanos.clamp(0, 999_999_999) as u32),
        Err(_) => UNIX_EPOCH,
    };
    now.duration_since(changed).is_ok_and(|age| age >= SETTLE_TIME)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each entry's bookkeeping.
    const E: u64 = ENTRY_COST;

    fn name(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    fn old_version(size: u64) -> FileVersion {
        FileVersion { size, mtime_sec: 1_000_000, ctime_sec: 1_000_000, ino: 1, dev: 1, ..FileVersion::default() }
    }

    fn admit(cache: &Cache, n: &str, size: u64, now: Instant) -> bool {
        let v = old_version(size);
        match cache.reserve(&name(n), &v, now) {
            Some(mut r) => {
                let body = vec![b'x'; size as usize];
                let digest = Digest::of(&body);
                let body = r.hold(Bytes::Heap(body));
                r.commit(body, digest, v, now);
                true
            }
            None => false,
        }
    }

    #[test]
    fn hit_after_admission_and_miss_before() {
        let cache = Cache::new(100 + E, Duration::from_secs(60), None);
        let t0 = Instant::now();
        assert!(cache.lookup(&name("a"), t0, |_| true).is_none());
        assert!(admit(&cache, "a", 10, t0));
        let hit = cache.lookup(&name("a"), t0, |_| true).unwrap();
        let Bytes::Heap(bytes) = hit.body.bytes() else { panic!("a small file is held on the heap") };
        assert_eq!((&bytes[..], hit.digest), (&[b'x'; 10][..], Digest::of(&[b'x'; 10])));
        let s = cache.stats();
        assert_eq!((s.hits, s.misses, s.admitted, s.entries, s.bytes), (1, 1, 1, 1, 10 + E));
    }

    #[test]
    fn full_cache_takes_no_more_and_never_exceeds_the_cap() {
        let cache = Cache::new(25 + 3 * E, Duration::from_secs(60), None);
        let t0 = Instant::now();
        assert!(admit(&cache, "a", 10, t0));
        assert!(admit(&cache, "b", 10, t0));
        assert!(!admit(&cache, "c", 10, t0), "no eviction of live entries");
        assert!(admit(&cache, "d", 5, t0));
        assert!(!admit(&cache, "big", 26, t0));
        let s = cache.stats();
        assert_eq!((s.entries, s.bytes, s.refused), (3, 25 + 3 * E, 2));
        assert!(cache.lookup(&name("a"), t0, |_| true).is_some(), "old entries stay");
    }

    #[test]
    fn expired_entries_are_dropped_and_free_their_room() {
        let cache = Cache::new(20 + E, Duration::from_secs(10), None);
        let t0 = Instant::now();
        assert!(admit(&cache, "a", 20, t0));
        assert!(!admit(&cache, "b", 20, t0 + Duration::from_secs(5)));
        assert!(admit(&cache, "b", 20, t0 + Duration::from_secs(11)), "sweep makes room");
        assert!(cache.lookup(&name("b"), t0 + Duration::from_secs(22), |_| true).is_none());
        let s = cache.stats();
        assert_eq!((s.expired, s.entries, s.bytes), (2, 0, 0));
    }

    #[test]
    fn a_stale_entry_is_invalidated_and_its_room_freed() {
        let cache = Cache::new(20 + E, Duration::from_secs(60), None);
        let t0 = Instant::now();
        assert!(admit(&cache, "a", 20, t0));
        assert!(cache.lookup(&name("a"), t0, |_| false).is_none());
        let s = cache.stats();
        assert_eq!((s.invalidated, s.entries, s.bytes, s.misses), (1, 0, 0, 1));
        assert!(admit(&cache, "a", 20, t0));
    }

    #[test]
    fn a_reservation_holds_room_and_blocks_a_second_reader_until_dropped() {
        let cache = Cache::new(20 + E, Duration::from_secs(60), None);
        let t0 = Instant::now();
        let v = old_version(15);
        let r = cache.reserve(&name("a"), &v, t0).unwrap();
        assert!(cache.reserve(&name("a"), &v, t0).is_none());
        assert!(!admit(&cache, "b", 10, t0), "room is held");
        drop(r);
        assert_eq!(cache.stats().bytes, 0);
        assert!(admit(&cache, "b", 10, t0));
    }

    #[test]
    fn bytes_still_being_sent_keep_their_charge_after_the_entry_goes() {
        let cache = Cache::new(20 + E, Duration::from_secs(60), None);
        let t0 = Instant::now();
        assert!(admit(&cache, "a", 20, t0));
        let in_flight = cache.lookup(&name("a"), t0, |_| true).unwrap();
        assert!(cache.lookup(&name("a"), t0, |_| false).is_none(), "invalidated");
        assert_eq!(cache.stats().entries, 0);
        assert!(!admit(&cache, "b", 20, t0), "the old bytes are still in memory");
        drop(in_flight);
        assert_eq!(cache.stats().bytes, 0);
        assert!(admit(&cache, "b", 20, t0));
    }

    #[test]
    fn recently_modified_files_are_not_admitted() {
        let now = SystemTime::now();
        let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap();
        let fresh = secs(now);
        let v = FileVersion {
            size: 1,
            mtime_sec: fresh.as_secs() as i64,
            mtime_nsec: fresh.subsec_nanos() as i64,
            ctime_sec: fresh.as_secs() as i64,
            ctime_nsec: fresh.subsec_nanos() as i64,
            ino: 1,
            dev: 1,
            mode: 0o644,
        };
        assert!(!settled(&v, now));
        assert!(settled(&v, now + SETTLE_TIME));
        assert!(!settled(&FileVersion { mtime_sec: i64::MAX, ..v }, now), "future mtime");
        // touch -d: an old mtime on a file just rewritten; its ctime says it is new.
        assert!(!settled(&FileVersion { mtime_sec: 1_700_000_000, mtime_nsec: 0, ..v }, now), "old mtime, new ctime");
        let cache = Cache::new(20 + E, Duration::from_secs(60), None);
        assert!(cache.reserve(&name("a"), &v, Instant::now()).is_none());
    }

    #[test]
    fn mirror_charges_headers_and_holds_one_file_per_entry() {
        let tmp = tempfile::tempdir().unwrap();
        let cap = 2 * (10 + E + mirror::overhead(&name("a")));
        let cache = Cache::new(cap, Duration::from_secs(60), Some(Mirror::open(tmp.path()).unwrap()));
        let t0 = Instant::now();
        assert!(admit(&cache, "a", 10, t0));
        assert!(admit(&cache, "b", 10, t0));
        assert!(!admit(&cache, "c", 1, t0));
        let on_disk: u64 = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
        assert_eq!(on_disk, cap - 2 * E);
        cache.lookup(&name("a"), t0, |_| false);
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn entries_expire_by_their_own_age_whatever_order_they_came_in() {
        let cache = Cache::new(1 << 20, Duration::from_secs(10), None);
        let t0 = Instant::now() + Duration::from_secs(100);
        // Admitted late but older (as a warm start loads them), and early but younger.
        assert!(admit(&cache, "young", 1, t0 + Duration::from_secs(5)));
        assert!(admit(&cache, "old", 1, t0));
        assert!(admit(&cache, "middle", 1, t0 + Duration::from_secs(2)));
        cache.sweep(t0 + Duration::from_secs(13));
        let s = cache.stats();
        assert_eq!((s.expired, s.entries), (2, 1));
        assert!(cache.lookup(&name("young"), t0 + Duration::from_secs(13), |_| true).is_some());
        // A stale entry leaves both maps: the sweep does not find it again.
        assert!(cache.lookup(&name("young"), t0 + Duration::from_secs(13), |_| false).is_none());
        cache.sweep(t0 + Duration::from_secs(60));
        let s = cache.stats();
        assert_eq!((s.expired, s.invalidated, s.entries, s.bytes), (2, 1, 0, 0));
        assert!(cache.inner.lock().by_age.is_empty());
    }
}
