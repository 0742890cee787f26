//! The rolling checksum: a polynomial hash of a window's bytes (each byte first mapped through a
//! fixed table of random 64-bit values), modulo 2^64, which moves one byte along in two
//! multiplications. rsync's Adler-style sum is cheaper still but clusters on text and on runs of
//! one byte, which costs a strong checksum per false match; this one spreads such windows out.

/// A fixed table of 64-bit values, one per byte value (splitmix64 of the byte: the same on every
/// build and both sides, since the checksum travels).
const TABLE: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut z = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        table[i] = z ^ (z >> 31);
        i += 1;
    }
    table
};

/// Lanes of [`Rolling::new`].
const LANES: usize = 8;

/// The multiplier (odd, so every power of it is too).
const M: u64 = 0x0000_0100_0000_01B3;

/// The checksum of a window, and what it needs to move along.
#[derive(Debug, Clone, Copy)]
pub struct Rolling {
    h: u64,
    /// M to the power of the window's length less one: the weight of the byte leaving.
    top: u64,
}

impl Rolling {
    /// The checksum of `window`: the same sum computed in [`LANES`] interleaved lanes (each a
    /// chain of multiplications by M^LANES), which runs several times as fast as one chain of
    /// dependent multiplications.
    pub fn new(window: &[u8]) -> Rolling {
        let (head, body) = window.split_at(window.len() % LANES);
        let mut h = 0u64;
        for &b in head {
            h = h.wrapping_mul(M).wrapping_add(TABLE[b as usize]);
        }
        let stride = pow(M, LANES as u64);
        let mut lanes = [0u64; LANES];
        for group in body.chunks_exact(LANES) {
            for (lane, &b) in lanes.iter_mut().zip(group) {
                *lane = lane.wrapping_mul(stride).wrapping_add(TABLE[b as usize]);
            }
        }
        // Lane k holds the bytes at k, k + LANES, ...: weighted by M^(LANES - 1 - k) on top.
        let mut body_sum = 0u64;
        for lane in lanes {
            body_sum = body_sum.wrapping_mul(M).wrapping_add(lane);
        }
        let h = h.wrapping_mul(pow(M, body.len() as u64)).wrapping_add(body_sum);
        Rolling { h, top: pow(M, (window.len() as u64).saturating_sub(1)) }
    }

    /// Moves the window one byte along: `out` leaves at its start, `into` joins at its end.
    #[inline]
    pub fn roll(&mut self, out: u8, into: u8) {
        let h = self.h.wrapping_sub(TABLE[out as usize].wrapping_mul(self.top));
        self.h = h.wrapping_mul(M).wrapping_add(TABLE[into as usize]);
    }

    /// The 32 bits that travel: the high half folded onto the low (the high bits of a product
    /// mix the most).
    #[inline]
    pub fn weak(&self) -> u32 {
        ((self.h >> 32) ^ (self.h >> 7)) as u32
    }
}

/// `base` to the power `exp`, modulo 2^64.
fn pow(mut base: u64, mut exp: u64) -> u64 {
    let mut out = 1u64;
    while exp > 0 {
        if exp & 1 == 1 {
            out = out.wrapping_mul(base);
        }
        base = base.wrapping_mul(base);
        exp >>= 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sum as its definition says, one byte at a time.
    fn plain(window: &[u8]) -> u64 {
        window.iter().fold(0u64, |h, &b| h.wrapping_mul(M).wrapping_add(TABLE[b as usize]))
    }

    #[test]
    fn lanes_sum_what_one_chain_does() {
        let data: Vec<u8> = (0..100u32).map(|i| (i * 37 % 256) as u8).collect();
        for n in 0..data.len() {
            assert_eq!(Rolling::new(&data[..n]).h, plain(&data[..n]), "{n} bytes");
        }
    }

    #[test]
    fn rolling_along_equals_hashing_afresh() {
        let data: Vec<u8> = (0..3000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        for w in [1usize, 2, 7, 64, 1000] {
            let mut r = Rolling::new(&data[..w]);
            for start in 1..data.len() - w {
                r.roll(data[start - 1], data[start + w - 1]);
                assert_eq!(r.weak(), Rolling::new(&data[start..start + w]).weak(), "w {w} at {start}");
            }
        }
    }

    #[test]
    fn runs_of_one_byte_and_shifted_text_do_not_collide() {
        let mut seen = std::collections::HashSet::new();
        for b in 0..=255u8 {
            assert!(seen.insert(Rolling::new(&[b; 512]).weak()));
        }
        let line = b"2026-11-01T00:00:00.000Z web01 GET /api/v1/items/1 200 12ms\n";
        let text = line.repeat(40);
        let weaks: std::collections::HashSet<u32> =
            (0..line.len()).map(|s| Rolling::new(&text[s..s + 1024]).weak()).collect();
        assert_eq!(weaks.len(), line.len(), "every shift within a line hashes apart");
    }
}
