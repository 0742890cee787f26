//! The sender's side: finding the receiver's blocks in the new file ([`scan`]), through an
//! [`Index`] of its signature, and saying the file as [`Op`]s: copy these blocks of yours, take
//! these bytes.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::{self, Read};

use super::rolling::Rolling;
use super::{BlockSum, Shape, Signature, strong};

/// Most slots probed for one checksum, when a block is put in the table and when it is looked
/// for: a signature whose checksums all collide costs the sender no more per byte than this.
const PROBES: usize = 8;

/// Most blocks said in one [`Op::Copy`]: a file that agrees for gigabytes is said as it is
/// scanned, not at its end.
pub const COPY_RUN: u64 = 1024;

/// Longest run of bytes said in one [`Op::Literal`].
pub const MAX_LITERAL: usize = 256 << 10;

/// The receiver's blocks, found by rolling checksum.
pub struct Index {
    shape: Shape,
    sums: Vec<BlockSum>,
    /// Open addressing: block number + 1 per slot, 0 when empty.
    table: Vec<u32>,
    /// Bits set by the checksums the table holds, about 16 per block: most windows match
    /// nothing, and one bit of a small array (which stays in the cache) says so for all but one
    /// in about 16 of them without touching the table.
    filter: Vec<u64>,
    filter_bits: u32,
    bits: u32,
    /// Mixed into the slot of a checksum, unknown to the peer, so it cannot choose checksums that
    /// crowd one corner of the table.
    seed: u32,
    /// The last block, when it is shorter than the rest (it can only match at the file's end).
    tail: Option<u64>,
}

impl Index {
    pub fn new(signature: Signature) -> Index {
        let Signature { shape, sums } = signature;
        let slots = (sums.len() * 2).next_power_of_two().max(16);
        let bits = slots.trailing_zeros();
        let seed = RandomState::new().hash_one(0x5eed_u64) as u32;
        let tail = sums.len().checked_sub(1).map(|k| k as u64).filter(|&k| shape.len_of(k) < u64::from(shape.block));
        let filter_bits = (sums.len() * 16).next_power_of_two().clamp(1 << 12, 1 << 22).trailing_zeros();
        let filter = vec![0; (1usize << filter_bits) / 64];
        let mut index = Index { shape, sums, table: vec![0; slots], filter, filter_bits, bits, seed, tail };
        let full = index.sums.len() - usize::from(index.tail.is_some());
        'blocks: for k in 0..full {
            let sum = index.sums[k];
            for slot in index.probe(sum.weak) {
                match index.table[slot] {
                    0 => {
                        index.table[slot] = k as u32 + 1;
                        let bit = index.filter_bit(sum.weak);
                        index.filter[bit / 64] |= 1 << (bit % 64);
                        continue 'blocks;
                    }
                    // The same block again (a run of zeros): one copy serves.
                    j if index.sums[j as usize - 1] == sum => continue 'blocks,
                    _ => {}
                }
            }
            // Crowded out: this block will not be found, which costs bytes, never correctness.
        }
        index
    }

    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// A checksum's bit in the filter (from other bits of it than its slot).
    #[inline]
    fn filter_bit(&self, weak: u32) -> usize {
        ((weak ^ self.seed.rotate_left(16)).wrapping_mul(0x85EB_CA6B) >> (32 - self.filter_bits)) as usize
    }

    /// The first slot a checksum is probed at.
    fn bucket(&self, weak: u32) -> usize {
        ((weak ^ self.seed).wrapping_mul(0x9E37_79B1) >> (32 - self.bits)) as usize
    }

    fn probe(&self, weak: u32) -> impl Iterator<Item = usize> + use<> {
        let mask = (1usize << self.bits) - 1;
        let start = self.bucket(weak);
        (0..PROBES).map(move |i| (start + i) & mask)
    }

    fn is_full(&self, k: u64) -> bool {
        (k as usize) < self.sums.len() && Some(k) != self.tail
    }

    /// The full block whose sums are the window's, if any: `prefer` first (the block after the
    /// last match, so runs stay runs). `strong` is the window's strong checksum, computed at most
    /// once, when a rolling checksum matches.
    #[inline]
    fn find(&self, weak: u32, window: &[u8], strong_sum: &mut Option<u32>, prefer: Option<u64>) -> Option<u64> {
        let mut strong_of = |w: &[u8]| *strong_sum.get_or_insert_with(|| strong(w));
        if let Some(k) = prefer.filter(|&k| self.is_full(k))
            && self.sums[k as usize].weak == weak
            && self.sums[k as usize].strong == strong_of(window)
        {
            return Some(k);
        }
        let bit = self.filter_bit(weak);
        if self.filter[bit / 64] & (1 << (bit % 64)) == 0 {
            return None;
        }
        for slot in self.probe(weak) {
            let j = self.table[slot];
            if j == 0 {
                return None;
            }
            let sum = self.sums[j as usize - 1];
            if sum.weak == weak && sum.strong == strong_of(window) {
                return Some(u64::from(j) - 1);
            }
        }
        None
    }
}

/// One step of rebuilding the new file.
#[derive(Debug, PartialEq, Eq)]
pub enum Op<'a> {
    /// The receiver's blocks `block .. block + count`, in order.
    Copy { block: u64, count: u64 },
    /// These bytes, as they are.
    Literal(&'a [u8]),
}

/// What a scan found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scanned {
    /// Bytes read from the new file.
    pub total: u64,
    /// Bytes said as copies of the receiver's blocks.
    pub copied: u64,
}

/// Says the bytes `from` gives (the new file) as [`Op`]s against the receiver's blocks in
/// `index`, in order, through `emit`. Reads the file once, in order, in a buffer of a few MiB.
pub fn scan(
    index: &Index,
    from: &mut impl Read,
    mut emit: impl FnMut(Op<'_>) -> io::Result<()>,
) -> io::Result<Scanned> {
    if index.sums.is_empty() {
        return all_literal(from, emit);
    }
    let b = index.shape.block as usize;
    let cap = (4usize << 20).max(4 * b);
    let mut s = State { buf: Vec::with_capacity(cap), p: 0, lit: 0, copy: None, scanned: Scanned::default() };
    let mut eof = false;
    let mut roll: Option<Rolling> = None;
    let mut expected = Some(0u64);
    loop {
        if s.buf.len() - s.p <= b && !eof {
            s.flush_literal(&mut emit)?;
            s.buf.drain(..s.p);
            s.lit = 0;
            s.p = 0;
            eof = fill(&mut s.buf, cap, from, &mut s.scanned.total)?;
        }
        if s.buf.len() - s.p < b {
            break;
        }
        let window = &s.buf[s.p..s.p + b];
        let mut strong_sum = None;
        if roll.is_none() {
            // Just after a match (or at the start): the next block is the likeliest, and one
            // strong checksum tells without rolling anything.
            if let Some(k) = expected.filter(|&k| index.is_full(k)) {
                let sum = strong(window);
                if sum == index.sums[k as usize].strong {
                    s.matched(k, b, &mut emit)?;
                    expected = Some(k + 1);
                    continue;
                }
                strong_sum = Some(sum);
            }
        }
        let r = roll.get_or_insert_with(|| Rolling::new(window));
        if let Some(k) = index.find(r.weak(), window, &mut strong_sum, expected) {
            s.matched(k, b, &mut emit)?;
            expected = Some(k + 1);
            roll = None;
            continue;
        }
        if s.p + b == s.buf.len() {
            // The window reaches the end of the file: nothing left to roll in.
            break;
        }
        r.roll(s.buf[s.p], s.buf[s.p + b]);
        s.p += 1;
        if s.p - s.lit >= MAX_LITERAL {
            s.flush_literal(&mut emit)?;
        }
    }
    // What is left is shorter than a block, or the last window: the receiver's short last block
    // may be its end.
    if let Some(k) = index.tail {
        let t = index.shape.len_of(k) as usize;
        let end = s.buf.len();
        if end - s.p >= t && index.sums[k as usize] == super::BlockSum::of(&s.buf[end - t..]) {
            s.p = end - t;
            s.matched(k, t, &mut emit)?;
        }
    }
    s.p = s.buf.len();
    s.flush_literal(&mut emit)?;
    s.flush_copy(&mut emit)?;
    Ok(s.scanned)
}

/// With no blocks to find, every byte goes as it is: read and said a buffer at a time.
fn all_literal(from: &mut impl Read, mut emit: impl FnMut(Op<'_>) -> io::Result<()>) -> io::Result<Scanned> {
    let mut buf = Vec::with_capacity(MAX_LITERAL);
    let mut scanned = Scanned::default();
    loop {
        buf.clear();
        let eof = fill(&mut buf, MAX_LITERAL, from, &mut scanned.total)?;
        if !buf.is_empty() {
            emit(Op::Literal(&buf))?;
        }
        if eof {
            return Ok(scanned);
        }
    }
}

/// Reads into `buf` up to `cap` bytes; true at the end of the input. The buffer grows as bytes
/// come (doubling, from 16 KiB), so a small file costs no more than its size in zeroed room.
fn fill(buf: &mut Vec<u8>, cap: usize, from: &mut impl Read, total: &mut u64) -> io::Result<bool> {
    let mut at = buf.len();
    let result = loop {
        if at >= cap {
            break Ok(false);
        }
        if at == buf.len() {
            let grow = buf.len().max(16 << 10).min(cap - at);
            buf.resize(at + grow, 0);
        }
        match from.read(&mut buf[at..]) {
            Ok(0) => break Ok(true),
            Ok(n) => {
                at += n;
                *total += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    buf.truncate(at);
    result
}

struct State {
    buf: Vec<u8>,
    /// Where the window starts in `buf`.
    p: usize,
    /// Where the bytes not yet said start in `buf` (at or before `p`).
    lit: usize,
    /// A run of copies not yet said.
    copy: Option<(u64, u64)>,
    scanned: Scanned,
}

impl State {
    fn flush_copy(&mut self, emit: &mut impl FnMut(Op<'_>) -> io::Result<()>) -> io::Result<()> {
        match self.copy.take() {
            Some((block, count)) => emit(Op::Copy { block, count }),
            None => Ok(()),
        }
    }

    fn flush_literal(&mut self, emit: &mut impl FnMut(Op<'_>) -> io::Result<()>) -> io::Result<()> {
        if self.p > self.lit {
            self.flush_copy(emit)?;
            emit(Op::Literal(&self.buf[self.lit..self.p]))?;
            self.lit = self.p;
        }
        Ok(())
    }

    /// Block `k` (of `len` bytes) is at the window: what precedes it goes as bytes, and the
    /// window jumps past it.
    fn matched(&mut self, k: u64, len: usize, emit: &mut impl FnMut(Op<'_>) -> io::Result<()>) -> io::Result<()> {
        self.flush_literal(emit)?;
        self.copy = match self.copy {
            // A long run is said in parts, so the receiver copies while the scan goes on.
            Some((start, count)) if start + count == k && count < COPY_RUN => Some((start, count + 1)),
            _ => {
                self.flush_copy(emit)?;
                Some((k, 1))
            }
        };
        self.p += len;
        self.lit = self.p;
        self.scanned.copied += len as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An op as kept by a test: a copy's blocks, or a literal's bytes.
    type Kept = (Option<(u64, u64)>, Vec<u8>);

    /// Rebuilds a file from `old` and the ops, as a receiver does.
    fn rebuild(old: &[u8], shape: Shape, ops: &[Kept]) -> Vec<u8> {
        let mut out = Vec::new();
        for (copy, bytes) in ops {
            match copy {
                Some((block, count)) => {
                    for k in *block..block + count {
                        let at = (k * u64::from(shape.block)) as usize;
                        out.extend_from_slice(&old[at..at + shape.len_of(k) as usize]);
                    }
                }
                None => out.extend_from_slice(bytes),
            }
        }
        out
    }

    fn delta(old: &[u8], new: &[u8], block: u32) -> (Vec<u8>, Scanned, usize) {
        let shape = Shape::checked(old.len() as u64, u64::from(block)).unwrap();
        let index = Index::new(Signature::compute(shape, &mut &old[..]).unwrap());
        let mut ops = Vec::new();
        let scanned = scan(&index, &mut &new[..], |op| {
            ops.push(match op {
                Op::Copy { block, count } => (Some((block, count)), Vec::new()),
                Op::Literal(bytes) => (None, bytes.to_vec()),
            });
            Ok(())
        })
        .unwrap();
        (rebuild(old, shape, &ops), scanned, ops.len())
    }

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn an_edit_in_place_costs_its_blocks_and_a_run_of_copies_is_one_op() {
        let old = noise(1 << 20, 1);
        let mut new = old.clone();
        new[300_000..300_100].copy_from_slice(&noise(100, 2));
        let (built, scanned, ops) = delta(&old, &new, 4096);
        assert!(built == new);
        assert_eq!(scanned.total, new.len() as u64);
        assert_eq!(scanned.copied, (1 << 20) - 4096, "one block around the edit goes as bytes");
        assert_eq!(ops, 3, "copies, the edited block, copies (256 and 767 blocks)");
        let (built, scanned, ops) = delta(&old, &old, 4096);
        assert!(built == old);
        assert_eq!((scanned.copied, ops), (1 << 20, 1));
    }

    #[test]
    fn inserted_and_deleted_bytes_are_found_at_any_offset() {
        let old = noise(200_000, 3);
        let mut grown = vec![7u8];
        grown.extend_from_slice(&old);
        let (built, scanned, _) = delta(&old, &grown, 1024);
        assert!(built == grown);
        assert!(scanned.copied >= 200_000 - 1024, "{scanned:?}");
        let shrunk = [&old[..50_000], &old[50_003..]].concat();
        let (built, scanned, _) = delta(&old, &shrunk, 1024);
        assert!(built == shrunk);
        assert!(scanned.copied >= 200_000 - 3 * 1024, "{scanned:?}");
        let appended = [&old[..], b"more"].concat();
        let (built, scanned, _) = delta(&old, &appended, 1024);
        assert!(built == appended);
        assert!(scanned.copied >= 199_000, "{scanned:?}");
    }

    #[test]
    fn nothing_in_common_and_empty_sides_still_rebuild() {
        let old = noise(50_000, 4);
        let new = noise(70_000, 5);
        let (built, scanned, _) = delta(&old, &new, 512);
        assert!(built == new);
        assert_eq!(scanned.copied, 0);
        assert!(delta(&[], &new, 512).0 == new);
        assert_eq!(delta(&old, &[], 512).0, Vec::<u8>::new());
        // A file of one byte value: every block the same, found through one table slot.
        let zeros = vec![0u8; 100_000];
        let (built, scanned, ops) = delta(&zeros, &zeros, 1024);
        assert!(built == zeros);
        assert_eq!(scanned.copied, 100_000);
        assert!(ops <= 3, "{ops} ops");
    }

    #[test]
    fn a_signature_of_colliding_checksums_is_probed_a_bounded_number_of_times() {
        // Every block claims the same rolling checksum with a different strong one: the table
        // keeps PROBES of them, and the scan still finishes and rebuilds.
        let shape = Shape::checked(512 * 10_000, 512).unwrap();
        let sums = (0..10_000u64).map(|i| BlockSum { weak: 42, strong: i as u32 }).collect();
        let index = Index::new(Signature { shape, sums });
        assert_eq!(index.table.iter().filter(|&&j| j != 0).count(), PROBES);
        let new = noise(300_000, 6);
        let mut out = Vec::new();
        scan(&index, &mut &new[..], |op| {
            if let Op::Literal(b) = op {
                out.extend_from_slice(b)
            }
            Ok(())
        })
        .unwrap();
        assert!(out == new);
    }

    proptest::proptest! {
        #[test]
        fn any_old_any_new_rebuilds_the_new(
            old in proptest::collection::vec(0u8..4, 0..6000),
            edits in proptest::collection::vec((0usize..6000, 0usize..300, proptest::collection::vec(0u8..4, 0..300)), 0..5),
            block in 9u32..12,
        ) {
            // Few byte values, so blocks repeat and checksums meet often.
            let mut new = old.clone();
            for (at, cut, with) in edits {
                let at = at.min(new.len());
                let cut = cut.min(new.len() - at);
                new.splice(at..at + cut, with);
            }
            let (built, scanned, _) = delta(&old, &new, 1 << block);
            proptest::prop_assert_eq!(&built, &new);
            proptest::prop_assert_eq!(scanned.total, new.len() as u64);
        }
    }
}
