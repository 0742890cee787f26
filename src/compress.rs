//! Compression on the wire: zstd, one independent frame per record of at most [`RECORD`] bytes,
//! kept only where it saves something.
//!
//! Level 1, zstd's fastest regular level. Measured on this project's 2-core machine on the
//! benchmark's 64 MiB of log-like text: level 1 made 17.39 MB in 1 MiB frames (17.37 MB as one
//! frame) in 0.27 s, level 3 18.08 MB in 0.48 s, level 6 17.93 MB in 2.0 s, gzip -6 18.61 MB in
//! 2.95 s; level 1 decompresses at 1 GB/s. At 250 MB/s of input on one core it keeps ahead of a
//! 1 Gbit/s link, so it is never what a transfer waits for but on loopback (where it is off by
//! default), and on that text it compresses no worse than the slower levels.
//!
//! What is not worth compressing costs little: names with the extension of a format that is
//! already compressed are never tried ([`is_packed_name`]); a record that does not shrink by a
//! sixteenth is sent as it is, and after [`GIVE_UP_AFTER`] such records in a row only every
//! [`RETRY_EVERY`]th is tried again, so a random file costs a few trial compressions per 16 MiB.
//! Each frame is independent and decompressed into a buffer of exactly its announced size, so a
//! peer's frame can neither grow past it nor make the receiver hold more than one record.

use std::io;

/// The compression level (see the module doc for why).
pub const LEVEL: i32 = 1;

/// Most bytes one record carries, before compression.
pub const RECORD: usize = 1 << 20;

/// Records in a row that did not shrink before the packer stops trying.
pub const GIVE_UP_AFTER: u32 = 4;

/// Once given up, one record in this many is tried again (the data may change its nature).
pub const RETRY_EVERY: u32 = 16;

/// Whether a file's name says it is already compressed (by its extension, any case).
pub fn is_packed_name(name: &[u8]) -> bool {
    const PACKED: &[&str] = &[
        "7z", "aac", "apk", "avif", "br", "bz2", "deb", "docx", "flac", "gif", "gz", "heic", "jar", "jpeg", "jpg",
        "lz", "lz4", "lzma", "m4a", "mkv", "mov", "mp3", "mp4", "ogg", "opus", "png", "pptx", "rar", "rpm", "tbz",
        "tgz", "txz", "webm", "webp", "whl", "woff", "woff2", "xlsx", "xz", "zip", "zst",
    ];
    let Some(dot) = name.iter().rposition(|&b| b == b'.') else { return false };
    let ext = &name[dot + 1..];
    PACKED.iter().any(|p| p.as_bytes().eq_ignore_ascii_case(ext))
}

/// Compresses records, one frame each, where that pays.
pub struct Packer {
    zstd: zstd::bulk::Compressor<'static>,
    out: Vec<u8>,
    /// Records in a row that did not shrink.
    misses: u32,
    /// Records passed over since the packer gave up.
    skipped: u32,
}

impl Packer {
    pub fn new() -> io::Result<Packer> {
        Ok(Packer { zstd: zstd::bulk::Compressor::new(LEVEL)?, out: Vec::new(), misses: 0, skipped: 0 })
    }

    /// `raw` compressed, if that saves at least a sixteenth of it; `None` to send it as it is.
    pub fn pack(&mut self, raw: &[u8]) -> Option<&[u8]> {
        if self.misses >= GIVE_UP_AFTER {
            self.skipped += 1;
            if !self.skipped.is_multiple_of(RETRY_EVERY) {
                return None;
            }
        }
        let most = raw.len() - raw.len() / 16;
        self.out.clear();
        self.out.reserve(most);
        // A frame that would not fit in `most` bytes fails: not worth it.
        match self.zstd.compress_to_buffer(raw, &mut self.out) {
            Ok(n) if n > 0 && n <= most => {
                self.misses = 0;
                self.skipped = 0;
                Some(&self.out[..n])
            }
            _ => {
                self.misses += 1;
                None
            }
        }
    }
}

/// Decompresses records.
pub struct Unpacker {
    zstd: zstd::bulk::Decompressor<'static>,
}

impl Unpacker {
    pub fn new() -> io::Result<Unpacker> {
        Ok(Unpacker { zstd: zstd::bulk::Decompressor::new()? })
    }

    /// Decompresses one frame that must give exactly `len` bytes into `out` (emptied first).
    pub fn unpack(&mut self, packed: &[u8], len: usize, out: &mut Vec<u8>) -> io::Result<()> {
        out.clear();
        out.reserve_exact(len);
        let n = self.zstd.decompress_to_buffer(packed, out).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidData, format!("a compressed record does not decompress: {e}"))
        })?;
        if n != len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a compressed record gave {n} bytes where it announced {len}"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_shrinks_and_round_trips_and_noise_is_sent_as_it_is() {
        let mut packer = Packer::new().unwrap();
        let mut unpacker = Unpacker::new().unwrap();
        let text = b"2026-11-01T00:00:00.000Z web01 GET /api/v1/items/1 200 12ms\n".repeat(1000);
        let packed = packer.pack(&text).unwrap().to_vec();
        assert!(packed.len() < text.len() / 10, "{}", packed.len());
        let mut out = Vec::new();
        unpacker.unpack(&packed, text.len(), &mut out).unwrap();
        assert_eq!(out, text);
        // Announced bigger or smaller than it is: refused, and never grown past the announcement.
        assert!(unpacker.unpack(&packed, text.len() + 1, &mut out).is_err());
        assert!(unpacker.unpack(&packed, text.len() - 1, &mut out).is_err());
        assert!(out.capacity() < text.len() + 64);
        assert!(unpacker.unpack(b"not zstd at all", 10, &mut out).is_err());
        let mut x = 1u64;
        let noise: Vec<u8> = (0..100_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(packer.pack(&noise).is_none());
    }

    #[test]
    fn a_packer_gives_up_on_noise_and_tries_again_now_and_then() {
        let mut packer = Packer::new().unwrap();
        let mut x = 7u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        let text = vec![b'a'; 4096];
        for _ in 0..GIVE_UP_AFTER {
            assert!(packer.pack(&noise).is_none());
        }
        // Given up: text is passed over until the next try.
        let tried = (0..RETRY_EVERY).filter(|_| packer.pack(&text).is_some()).count();
        assert_eq!(tried, 1);
        assert!(packer.pack(&text).is_some(), "and once one shrinks, every record is tried");
    }

    #[test]
    fn compressed_formats_are_known_by_name() {
        for name in ["a.zst", "b.tar.gz", "IMG_1.JPG", "clip.mp4", "x.webp"] {
            assert!(is_packed_name(name.as_bytes()), "{name}");
        }
        for name in ["log.txt", "a.tar", "noext", "gz", ".bashrc", "data.json"] {
            assert!(!is_packed_name(name.as_bytes()), "{name}");
        }
    }
}
