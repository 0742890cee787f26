//! The server's memo of digests of files it streams from disk without caching, each valid for
//! one file version, so a file is hashed once per version rather than once per download.

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::digest::Digest;
use crate::name::Name;
use crate::store::FileVersion;

/// Most digests remembered; past this the memo starts over (it is only a shortcut).
const MEMO_ENTRIES: usize = 16 << 10;

/// Digests of files streamed from disk, each valid for one file version.
#[derive(Default)]
pub(crate) struct DigestMemo {
    /// Name -> the version the digest was computed from, and the digest.
    map: Mutex<HashMap<Name, (FileVersion, Digest)>>,
}

impl DigestMemo {
    pub(crate) fn get(&self, name: &Name, version: &FileVersion) -> Option<Digest> {
        match self.map.lock().get(name) {
            Some((v, d)) if v == version => Some(*d),
            _ => None,
        }
    }

    pub(crate) fn put(&self, name: &Name, version: FileVersion, digest: Digest) {
        let mut map = self.map.lock();
        if map.len() >= MEMO_ENTRIES && !map.contains_key(name) {
            map.clear();
        }
        map.insert(name.clone(), (version, digest));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memo_is_per_version() {
        let memo = DigestMemo::default();
        let name = Name::parse("a").unwrap();
        let v1 = FileVersion { size: 1, mtime_sec: 1, ctime_sec: 1, ino: 1, dev: 1, ..FileVersion::default() };
        memo.put(&name, v1, Digest(7));
        assert_eq!(memo.get(&name, &v1), Some(Digest(7)));
        assert_eq!(memo.get(&name, &FileVersion { ino: 2, ..v1 }), None);
        assert_eq!(memo.get(&name, &FileVersion { ctime_nsec: 1, ..v1 }), None, "rewritten, mtime restored");
    }
}
