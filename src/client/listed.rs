//! The names a `get -r --delete` listing found, held compactly, to tell what the server has.

/// The names a listing held, for `delete`: each as a 128-bit hash of the name (16 bytes, however
/// long the name is, where a set of names costs some 80 bytes each), in one vector that is sorted
/// once the listings have ended; a million names hold 16 MiB. Two names with one hash (odds of
/// about 10^-27 for a million names) could only keep a local file that might have been removed,
/// never remove one that the server has.
#[derive(Default)]
pub(super) struct Listed {
    hashes: Vec<u128>,
}

impl Listed {
    pub(super) fn add(&mut self, name: &[u8]) {
        self.hashes.push(crate::digest::Digest::of(name).0);
    }

    pub(super) fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether a name was added twice since the first `from` (sorting those).
    pub(super) fn names_one_twice(&mut self, from: usize) -> bool {
        let since = &mut self.hashes[from..];
        since.sort_unstable();
        since.windows(2).any(|pair| pair[0] == pair[1])
    }

    /// Sorts all, dropping repeats (two folders named may overlap), for [`Listed::contains`].
    pub(super) fn seal(&mut self) {
        self.hashes.sort_unstable();
        self.hashes.dedup();
        self.hashes.shrink_to_fit();
    }

    /// Whether `name` was added (once sealed).
    pub(super) fn contains(&self, name: &[u8]) -> bool {
        self.hashes.binary_search(&crate::digest::Digest::of(name).0).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::Listed;

    #[test]
    fn listed_names_are_found_once_sealed_and_a_repeat_within_one_listing_is_seen() {
        let mut listed = Listed::default();
        listed.add(b"a");
        let first = listed.len();
        for name in [&b"a/x"[..], b"a/y", "a/ü z".as_bytes(), b"a/\xff\n"] {
            listed.add(name);
        }
        assert!(!listed.names_one_twice(first));
        // A second listing may repeat the first (a folder within one named before)...
        let second = listed.len();
        listed.add(b"a/x");
        assert!(!listed.names_one_twice(second));
        // ...but not itself.
        listed.add(b"a/x");
        assert!(listed.names_one_twice(second));
        listed.seal();
        assert_eq!(listed.len(), 5);
        for name in [&b"a"[..], b"a/x", b"a/y", "a/ü z".as_bytes(), b"a/\xff\n"] {
            assert!(listed.contains(name), "{name:?}");
        }
        for name in [&b""[..], b"b", b"a/", b"a/x.part", b"A/X", b"a/\xff"] {
            assert!(!listed.contains(name), "{name:?}");
        }
    }
}
