//! The server's memo of digests of files it streams from disk without caching, each valid for
//! one file version, so a file is hashed once per version rather than once per download.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::digest::{Digest, Hasher};
use crate::name::Name;
use crate::store::FileVersion;

/// Most digests remembered; past this the memo starts over (it is only a shortcut).
const MEMO_ENTRIES: usize = 16 << 10;

/// What hashing one version of a file found: its digest, and running states at marks through
/// it, from which the digest of any prefix (a `resume` check) is computed cheaply. A download
/// cut off part-way leaves the marks it passed and no digest, so resuming it is as cheap.
pub(crate) struct Hashed {
    /// The whole file's digest; `None` if only the marks up to some point are known.
    pub(crate) digest: Option<Digest>,
    pub(crate) marks: Vec<(u64, Hasher)>,
    /// The last few prefix digests asked for, by length: the same check again costs nothing.
    pub(crate) prefixes: Mutex<Vec<(u64, Digest)>>,
}

/// Prefix digests each [`Hashed`] remembers.
const PREFIXES: usize = 16;

impl Hashed {
    pub(crate) fn new(digest: Option<Digest>, marks: Vec<(u64, Hasher)>) -> Hashed {
        Hashed { digest, marks, prefixes: Mutex::new(Vec::new()) }
    }

    pub(crate) fn prefix(&self, len: u64) -> Option<Digest> {
        self.prefixes.lock().iter().find(|(at, _)| *at == len).map(|(_, d)| *d)
    }

    pub(crate) fn remember_prefix(&self, len: u64, digest: Digest) {
        let mut prefixes = self.prefixes.lock();
        if prefixes.len() >= PREFIXES {
            prefixes.remove(0);
        }
        prefixes.push((len, digest));
    }
}

/// Digests of files streamed from disk, each valid for one file version.
#[derive(Default)]
pub(crate) struct DigestMemo {
    /// Name -> the version it was computed from, and what hashing it found.
    map: Mutex<HashMap<Name, (FileVersion, Arc<Hashed>)>>,
}

impl DigestMemo {
    pub(crate) fn get(&self, name: &Name, version: &FileVersion) -> Option<Arc<Hashed>> {
        match self.map.lock().get(name) {
            Some((v, hashed)) if v == version => Some(hashed.clone()),
            _ => None,
        }
    }

    /// Drops what is known of `name` (an upload replaced it).
    pub(crate) fn forget(&self, name: &Name) {
        self.map.lock().remove(name);
    }

    pub(crate) fn put(&self, name: &Name, version: FileVersion, hashed: Arc<Hashed>) {
        let mut map = self.map.lock();
        // What a cut-off download learnt never replaces more of the same version.
        if let Some((v, known)) = map.get(name)
            && *v == version
            && (known.digest.is_some() || known.marks.len() > hashed.marks.len())
            && hashed.digest.is_none()
        {
            return;
        }
        if map.len() >= MEMO_ENTRIES && !map.contains_key(name) {
            map.clear();
        }
        map.insert(name.clone(), (version, hashed));
    }
}

/// Where a file of `size` bytes keeps its marks: every 16 MiB, or every 64th of the file if
/// that is more, so a prefix check reads at most that much and a file keeps at most 64 states.
pub(crate) fn mark_every(size: u64) -> u64 {
    (16u64 << 20).max(size.div_ceil(64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memo_is_per_version() {
        let memo = DigestMemo::default();
        let name = Name::parse("a").unwrap();
        let v1 = FileVersion { size: 1, mtime_sec: 1, ctime_sec: 1, ino: 1, dev: 1, ..FileVersion::default() };
        memo.put(&name, v1, Arc::new(Hashed::new(Some(Digest(7)), Vec::new())));
        assert_eq!(memo.get(&name, &v1).map(|h| h.digest), Some(Some(Digest(7))));
        memo.put(&name, v1, Arc::new(Hashed::new(None, Vec::new())));
        assert_eq!(memo.get(&name, &v1).map(|h| h.digest), Some(Some(Digest(7))), "a partial never replaces it");
        assert!(memo.get(&name, &FileVersion { ino: 2, ..v1 }).is_none());
        assert!(memo.get(&name, &FileVersion { ctime_nsec: 1, ..v1 }).is_none(), "rewritten, mtime restored");
        assert_eq!(mark_every(1 << 30), 16 << 20);
        assert_eq!(mark_every(64 << 30), 1 << 30);
    }
}
