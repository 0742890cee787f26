//! A cached file's bytes: on the heap when small, in a sealed `memfd` otherwise; and the body
//! connections share, charged against the cache's cap for as long as it lives.
//!
//! A hit from the heap is one `write` of the header and the body together; a hit from a memfd
//! goes out by `sendfile`, as a miss does from the page cache, so the kernel takes the pages
//! without copying them through this process. The memfd is anonymous memory (it counts in the
//! server's RSS as shared memory), charged against the cache's cap as heap bytes are, and sealed
//! once filled: nothing can write, grow or shrink it afterwards, so a reply never meets bytes
//! other than the ones hashed.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use rustix::fs::{MemfdFlags, SealFlags};

use crate::digest::{Digest, Hasher, hash_file};

/// Files of at least this many bytes are held in a memfd: below it, one `write` of header and
/// body beats a `write` and a `sendfile`. Measured with 64 connections asking for one cached file
/// over and over (three rounds of 3 s each, requests/s): 4 KiB from the heap 51,000 to 58,000,
/// from a memfd 36,000 to 41,000; 16 KiB 41,000 to 51,000 against 33,000 to 39,000; at 64 KiB,
/// where the heap path needs two writes too, 23,000 to 26,000 either way.
pub const SEALED_FROM: u64 = 64 << 10;

/// Bytes copied per step into a memfd.
const CHUNK: usize = 256 << 10;

/// The bytes of one cached file.
pub enum Bytes {
    Heap(Vec<u8>),
    /// A memfd holding exactly `len` bytes, sealed against any change.
    Sealed {
        file: Memfd,
        len: u64,
    },
}

/// A memfd, counted (in `MEMFDS`) against `memfd_budget` for as long as it is open.
pub struct Memfd(File, &'static AtomicUsize);

impl std::ops::Deref for Memfd {
    type Target = File;
    fn deref(&self) -> &File {
        &self.0
    }
}

impl Drop for Memfd {
    fn drop(&mut self) {
        self.1.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Memfds open now.
static MEMFDS: AtomicUsize = AtomicUsize::new(0);

/// Most memfds open at once: a quarter of the open-file limit (as raised at start-up), so that
/// cached files never take the descriptors connections need. Past it, files are held on the heap,
/// as are files whose memfd cannot be made.
fn memfd_budget() -> usize {
    static BUDGET: OnceLock<usize> = OnceLock::new();
    *BUDGET.get_or_init(|| {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(1 << 20);
        usize::try_from(limit / 4).unwrap_or(usize::MAX)
    })
}

/// A new memfd that can be sealed, counted against the budget; `None` past the budget or if the
/// system will not make one.
fn new_memfd() -> Option<Memfd> {
    new_memfd_in(&MEMFDS, memfd_budget())
}

fn new_memfd_in(count: &'static AtomicUsize, budget: usize) -> Option<Memfd> {
    count.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < budget).then_some(n + 1)).ok()?;
    match rustix::fs::memfd_create("ft-cache", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING) {
        Ok(fd) => Some(Memfd(File::from(fd), count)),
        Err(_) => {
            count.fetch_sub(1, Ordering::SeqCst);
            None
        }
    }
}

impl Bytes {
    /// Copies `len` bytes of `from` starting at `offset` (positioned reads: `from`'s own offset
    /// is left alone) and hashes them. A file that ends early is an `UnexpectedEof` error.
    pub fn read(from: &File, offset: u64, len: u64) -> io::Result<(Bytes, Digest)> {
        let memfd = if len < SEALED_FROM { None } else { new_memfd() };
        let Some(file) = memfd else {
            let mut heap = vec![0u8; usize::try_from(len).map_err(io::Error::other)?];
            from.read_exact_at(&mut heap, offset)?;
            let digest = Digest::of(&heap);
            return Ok((Bytes::Heap(heap), digest));
        };
        let mut buf = vec![0u8; CHUNK];
        let mut hasher = Hasher::default();
        let mut done = 0u64;
        while done < len {
            let want = (len - done).min(CHUNK as u64) as usize;
            let n = from.read_at(&mut buf[..want], offset + done)?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while being read"));
            }
            hasher.update(&buf[..n]);
            (&*file).write_all(&buf[..n])?;
            done += n as u64;
        }
        rustix::fs::fcntl_add_seals(&*file, SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE | SealFlags::SEAL)?;
        Ok((Bytes::Sealed { file, len }, hasher.digest()))
    }

    pub fn len(&self) -> u64 {
        match self {
            Bytes::Heap(heap) => heap.len() as u64,
            Bytes::Sealed { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The digest of the first `len` bytes; `None` past the end (or if the memfd cannot be read).
    pub fn prefix_digest(&self, len: u64) -> Option<Digest> {
        match self {
            Bytes::Heap(heap) => heap.get(..usize::try_from(len).ok()?).map(Digest::of),
            Bytes::Sealed { file, len: size } if len <= *size => hash_file(file, len, None).ok().map(|(d, _)| d),
            Bytes::Sealed { .. } => None,
        }
    }

    /// A copy of all the bytes.
    pub fn to_vec(&self) -> io::Result<Vec<u8>> {
        match self {
            Bytes::Heap(heap) => Ok(heap.clone()),
            Bytes::Sealed { file, len } => {
                let mut copy = vec![0u8; usize::try_from(*len).map_err(io::Error::other)?];
                file.read_exact_at(&mut copy, 0)?;
                Ok(copy)
            }
        }
    }

    /// Writes all the bytes to `out` (at its offset).
    pub fn write_to(&self, out: &mut File) -> io::Result<()> {
        match self {
            Bytes::Heap(heap) => out.write_all(heap),
            Bytes::Sealed { file, len } => {
                let mut at = 0u64;
                while at < *len {
                    let most = usize::try_from(*len - at).unwrap_or(usize::MAX).min(1 << 30);
                    match rustix::fs::sendfile(&*out, &**file, Some(&mut at), most) {
                        Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "memfd ended early")),
                        Ok(_) => {}
                        Err(rustix::io::Errno::INTR) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(())
            }
        }
    }
}

/// A cached file's bytes, shared by every connection sending them.
pub type Body = Arc<Held>;

/// Bytes that count against the cache's cap for as long as they live.
pub struct Held {
    /// The file's bytes (on the heap, or in a sealed memfd: see `bytes.rs`).
    bytes: Bytes,
    charge: u64,
    /// The cache's byte count, given `charge` back on drop.
    account: Arc<AtomicU64>,
}

impl Held {
    /// `bytes`, charged `charge` against `account` until dropped.
    pub(super) fn new(bytes: Bytes, charge: u64, account: Arc<AtomicU64>) -> Held {
        Held { bytes, charge, account }
    }

    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn len(&self) -> u64 {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// What the bytes are charged against the cache's cap.
    pub(super) fn charge(&self) -> u64 {
        self.charge
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.account.fetch_sub(self.charge, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(bytes: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    #[test]
    fn small_files_stay_on_the_heap_and_big_ones_go_to_a_sealed_memfd() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 13 % 251) as u8).collect();
        let source = file_with(&data);
        let (small, digest) = Bytes::read(&source, 5, SEALED_FROM - 1).unwrap();
        assert!(matches!(small, Bytes::Heap(_)));
        assert_eq!(digest, Digest::of(&data[5..5 + SEALED_FROM as usize - 1]));
        let (big, digest) = Bytes::read(&source, 7, data.len() as u64 - 7).unwrap();
        assert_eq!(digest, Digest::of(&data[7..]));
        let Bytes::Sealed { file, len } = &big else { panic!("not sealed") };
        assert_eq!(*len, data.len() as u64 - 7);
        // Sealed: it can be neither written, nor grown, nor shrunk.
        assert!(file.write_at(b"x", 0).is_err());
        assert!(file.set_len(*len + 1).is_err() && file.set_len(1).is_err());
        assert_eq!(big.prefix_digest(1000), Some(Digest::of(&data[7..1007])));
        assert_eq!(big.prefix_digest(*len + 1), None);
        assert_eq!(small.prefix_digest(10), Some(Digest::of(&data[5..15])));
        let mut copy = tempfile::tempfile().unwrap();
        big.write_to(&mut copy).unwrap();
        let mut back = vec![0u8; *len as usize];
        copy.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(back, data[7..]);
        assert_eq!(big.to_vec().unwrap(), data[7..]);
        assert_eq!(small.to_vec().unwrap(), data[5..5 + SEALED_FROM as usize - 1]);
    }

    #[test]
    fn memfds_are_counted_while_open_and_none_are_made_past_the_budget() {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let first = new_memfd_in(&COUNT, 2).unwrap();
        let second = new_memfd_in(&COUNT, 2).unwrap();
        assert!(new_memfd_in(&COUNT, 2).is_none(), "past the budget");
        assert_eq!(COUNT.load(Ordering::SeqCst), 2);
        drop(first);
        assert!(new_memfd_in(&COUNT, 2).is_some(), "room again once one is closed");
        drop(second);
        assert_eq!(COUNT.load(Ordering::SeqCst), 0);
        assert!(memfd_budget() >= 1, "a quarter of the open-file limit");
    }

    #[test]
    fn a_file_that_ends_early_is_an_error() {
        let source = file_with(&[1u8; 1000]);
        for len in [1001, SEALED_FROM + 1] {
            let e = Bytes::read(&source, 0, len).err().unwrap();
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{len}");
        }
    }
}
