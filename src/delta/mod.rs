//! Delta transfer: sending only the bytes the receiving side lacks, by rsync's method.
//!
//! The side that holds an older copy (the receiver) cuts it into blocks of one size and sends a
//! [`Signature`]: per block a rolling checksum (32 bits, [`rolling`]) and a strong one (XXH3-64 of
//! its bytes, folded to 32 bits).
//! The side with the new file (the sender) slides a window of that size over it one byte at a
//! time ([`matcher`]); where the window's rolling checksum and then its strong one match a block, it
//! says "copy your block k" and jumps a block ahead, and every byte no block covers goes as it
//! is. The receiver rebuilds the file from its own blocks and those bytes, and checks the result
//! against the whole file's XXH3-128 digest before anything replaces the older copy.
//!
//! Why this and not content-defined chunking: a block found at any byte offset, so an edit in
//! place costs exactly the bytes edited (rounded to blocks), and inserted or deleted bytes cost
//! one block around them; the signature travels from the receiver to the sender, the direction
//! that is idle during a download; and nothing is kept per file version on either side. The
//! sender's scan costs one XXH3-64 pass where the files agree (a block that follows the last
//! match is tried first) and one rolling step and table probe per byte where they do not.
//!
//! Hostile peers: a signature is at most [`MAX_BLOCKS`] entries of a block size between
//! [`MIN_BLOCK`] and [`MAX_BLOCK`], and its length follows from the size it claims, so it is read
//! in bounded memory; the table it builds bounds the probes per byte ([`matcher::Index`]), so a
//! signature made of colliding checksums costs the sender no more than any other. Instructions
//! that point outside the receiver's blocks or build more bytes than announced are refused by the
//! receiver; anything else wrong is caught by the digest. This module imports nothing of ours.

pub mod matcher;
pub mod rolling;

use std::io::{self, Read};

use twox_hash::XxHash3_64;

/// Smallest block a signature may use.
pub const MIN_BLOCK: u32 = 512;
/// Largest block a signature may use.
pub const MAX_BLOCK: u32 = 4 << 20;
/// Most blocks one signature may describe (8 bytes each on the wire: 2 MiB).
pub const MAX_BLOCKS: u64 = 1 << 18;
/// Copies from this size on get their signature computed on several threads.
pub const PARALLEL_FROM: u64 = 8 << 20;
/// Copies from this size on get blocks of twice the square root (see [`Shape::for_size`]).
pub const WIDER_FROM: u64 = 8 << 20;

/// Bytes of one signature entry on the wire: the rolling checksum, then the strong checksum,
/// each 32 bits, little-endian. 64 bits in all, as rsync's sums are for files of this size: a
/// block matched by mistake (once in billions of files) makes a rebuild the whole-file digest
/// refuses, and the client then fetches that file whole.
pub const ENTRY_LEN: usize = 8;

/// The checksums of one block of the receiver's copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSum {
    pub weak: u32,
    pub strong: u32,
}

impl BlockSum {
    /// The sums of `bytes`.
    pub fn of(bytes: &[u8]) -> BlockSum {
        BlockSum { weak: rolling::Rolling::new(bytes).weak(), strong: strong(bytes) }
    }

    pub fn to_bytes(self) -> [u8; ENTRY_LEN] {
        let mut out = [0u8; ENTRY_LEN];
        out[..4].copy_from_slice(&self.weak.to_le_bytes());
        out[4..].copy_from_slice(&self.strong.to_le_bytes());
        out
    }

    pub fn from_bytes(b: &[u8; ENTRY_LEN]) -> BlockSum {
        let weak = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let strong = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        BlockSum { weak, strong }
    }
}

/// The strong checksum of a block: its XXH3-64, folded to 32 bits.
pub fn strong(bytes: &[u8]) -> u32 {
    let h = XxHash3_64::oneshot(bytes);
    (h ^ (h >> 32)) as u32
}

/// Why a signature's shape is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error("block size {0} is outside {MIN_BLOCK}..={MAX_BLOCK}")]
    Block(u64),
    #[error("{0} blocks is more than {MAX_BLOCKS}")]
    TooMany(u64),
}

/// The size of the copy a signature describes and the block size it was cut into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub size: u64,
    pub block: u32,
}

impl Shape {
    /// The shape the receiver of a `size`-byte copy uses: about the square root of the size
    /// (rsync's rule: the signature and the slack around each change grow alike), twice that
    /// from [`WIDER_FROM`] (the signature crosses a fresh connection whose first round trips
    /// carry little: at 64 MiB, 32 KiB of it instead of 64 KiB saved two round trips over a 40
    /// ms link), a power of two (edits in place come in pages and sectors), at least
    /// [`MIN_BLOCK`] and large enough to stay within [`MAX_BLOCKS`]. `None` for a copy too big
    /// for any signature.
    pub fn for_size(size: u64) -> Option<Shape> {
        let root = (size as f64).sqrt() as u64;
        let root = if size >= WIDER_FROM { 2 * root } else { root };
        let block = root.next_power_of_two().max(u64::from(MIN_BLOCK)).max(size.div_ceil(MAX_BLOCKS));
        let block = u32::try_from(block.next_power_of_two()).ok().filter(|&b| b <= MAX_BLOCK)?;
        Some(Shape { size, block })
    }

    /// A shape read from a peer, checked.
    pub fn checked(size: u64, block: u64) -> Result<Shape, ShapeError> {
        let block32 = u32::try_from(block).ok().filter(|b| (MIN_BLOCK..=MAX_BLOCK).contains(b));
        let block = block32.ok_or(ShapeError::Block(block))?;
        let count = size.div_ceil(u64::from(block));
        if count > MAX_BLOCKS {
            return Err(ShapeError::TooMany(count));
        }
        Ok(Shape { size, block })
    }

    /// How many blocks (the last may be short).
    pub fn count(&self) -> u64 {
        self.size.div_ceil(u64::from(self.block))
    }

    /// The length of block `k`.
    pub fn len_of(&self, k: u64) -> u64 {
        let b = u64::from(self.block);
        self.size.saturating_sub(k * b).min(b)
    }

    /// Bytes of the signature on the wire.
    pub fn wire_len(&self) -> u64 {
        self.count() * ENTRY_LEN as u64
    }
}

/// A receiver's description of its copy: its shape and the sums of each block in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub shape: Shape,
    pub sums: Vec<BlockSum>,
}

impl Signature {
    /// The signature of the `shape.size` bytes `from` gives; an error if it ends sooner.
    pub fn compute(shape: Shape, from: &mut impl Read) -> io::Result<Signature> {
        let count = shape.count();
        let mut sums = Vec::with_capacity(count as usize);
        let mut block = vec![0u8; shape.block as usize];
        for k in 0..count {
            let len = shape.len_of(k) as usize;
            from.read_exact(&mut block[..len])?;
            sums.push(BlockSum::of(&block[..len]));
        }
        Ok(Signature { shape, sums })
    }

    /// The signature of the first `shape.size` bytes of `file`, read by offset (its position is
    /// left alone); a big one on several threads, since the receiver's first request waits on it.
    pub fn of_file(shape: Shape, file: &std::fs::File) -> io::Result<Signature> {
        use std::os::unix::fs::FileExt;
        let count = shape.count();
        let threads = match shape.size {
            0..PARALLEL_FROM => 1,
            _ => std::thread::available_parallelism().map_or(1, |n| n.get()).min(4) as u64,
        };
        let per = count.div_ceil(threads.max(1)).max(1);
        let part = |first: u64| -> io::Result<Vec<BlockSum>> {
            let last = (first + per).min(count);
            let b = u64::from(shape.block);
            let mut sums = Vec::with_capacity((last - first) as usize);
            // A few blocks per read.
            let mut buf = vec![0u8; (b * 32).min(shape.size.max(1)) as usize];
            let mut k = first;
            while k < last {
                let n = (last - k).min(32);
                let len = ((k + n) * b).min(shape.size) - k * b;
                let chunk = &mut buf[..len as usize];
                file.read_exact_at(chunk, k * b)?;
                sums.extend(chunk.chunks(b as usize).map(BlockSum::of));
                k += n;
            }
            Ok(sums)
        };
        let parts: Vec<io::Result<Vec<BlockSum>>> = std::thread::scope(|scope| {
            let handles: Vec<_> =
                (0..count).step_by(per as usize).map(|first| scope.spawn(move || part(first))).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(io::Error::other("a signature thread failed"))))
                .collect()
        });
        let mut sums = Vec::with_capacity(count as usize);
        for part in parts {
            sums.extend(part?);
        }
        Ok(Signature { shape, sums })
    }

    /// The signature on the wire: each entry, in order.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.sums.iter().flat_map(|s| s.to_bytes()).collect()
    }

    /// Reads the `shape.count()` entries of a signature (bounded by the checked shape).
    pub fn read(shape: Shape, from: &mut impl Read) -> io::Result<Signature> {
        let count = shape.count();
        let mut sums = Vec::with_capacity(count as usize);
        let mut entry = [0u8; ENTRY_LEN];
        for _ in 0..count {
            from.read_exact(&mut entry)?;
            sums.push(BlockSum::from_bytes(&entry));
        }
        Ok(Signature { shape, sums })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sizes_grow_with_the_root_of_the_size_and_stay_bounded() {
        assert_eq!(Shape::for_size(0).unwrap().block, MIN_BLOCK);
        assert_eq!(Shape::for_size(1 << 20).unwrap().block, 1024);
        assert_eq!(Shape::for_size(64 << 20).unwrap().block, 16384);
        assert_eq!(Shape::for_size(100 << 20).unwrap().block, 32768);
        let tib = Shape::for_size(1 << 40).unwrap();
        assert!(tib.count() <= MAX_BLOCKS, "{tib:?}");
        assert_eq!(Shape::for_size(u64::MAX), None);
        for size in [1u64, 511, 512, 513, 1 << 20, (1 << 20) + 1, 12345678901] {
            let s = Shape::for_size(size).unwrap();
            assert_eq!(Shape::checked(size, u64::from(s.block)), Ok(s));
            let total: u64 = (0..s.count()).map(|k| s.len_of(k)).sum();
            assert_eq!(total, size);
        }
    }

    #[test]
    fn shapes_from_a_peer_are_checked() {
        assert_eq!(Shape::checked(10, 0), Err(ShapeError::Block(0)));
        assert_eq!(Shape::checked(10, 511), Err(ShapeError::Block(511)));
        assert_eq!(Shape::checked(10, u64::MAX), Err(ShapeError::Block(u64::MAX)));
        assert_eq!(Shape::checked(u64::MAX, 512), Err(ShapeError::TooMany(u64::MAX.div_ceil(512))));
        assert_eq!(Shape::checked(512 * MAX_BLOCKS, 512).map(|s| s.count()), Ok(MAX_BLOCKS));
        assert!(Shape::checked(512 * MAX_BLOCKS + 1, 512).is_err());
    }

    #[test]
    fn a_signature_round_trips_and_a_short_one_is_an_error() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 256) as u8).collect();
        let shape = Shape::checked(5000, 1024).unwrap();
        let sig = Signature::compute(shape, &mut &data[..]).unwrap();
        assert_eq!(sig.sums.len(), 5);
        assert_eq!(sig.sums[4], BlockSum::of(&data[4096..]));
        let wire = sig.to_bytes();
        assert_eq!(wire.len() as u64, shape.wire_len());
        assert_eq!(Signature::read(shape, &mut &wire[..]).unwrap(), sig);
        assert!(Signature::read(shape, &mut &wire[..wire.len() - 1]).is_err());
        assert!(Signature::compute(shape, &mut &data[..4999]).is_err());
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, &data).unwrap();
        assert_eq!(Signature::of_file(shape, &file).unwrap(), sig);
        let big: Vec<u8> = (0..(PARALLEL_FROM as usize + 12345)).map(|i| (i * 31 % 253) as u8).collect();
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, &big).unwrap();
        let shape = Shape::for_size(big.len() as u64).unwrap();
        assert_eq!(Signature::of_file(shape, &file).unwrap(), Signature::compute(shape, &mut &big[..]).unwrap());
        let shorter = Shape { size: big.len() as u64 + 1, ..shape };
        assert!(Signature::of_file(shorter, &file).is_err(), "a file shorter than its shape");
    }
}
