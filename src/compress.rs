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
//!
//! Compressing pays only while the link is slower than the compressor: on a fast link (a LAN of
//! several Gbit/s, or loopback with `--compress`) it would make the sender what the transfer
//! waits for. [`Pace`] judges that per record from what the sender sees: how long compressing
//! took, and how long each write waited for the socket. Records go as they are while the link
//! takes bytes faster than they can be compressed, and compressed again when it does not.

use std::io;
use std::time::Duration;

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

/// Compresses records, one frame each, where that pays. One serves a connection's replies (or
/// uploads) one after another: its context is made once (making one costs more than
/// compressing a small file), and what it learnt of the link ([`Pace`]) holds across files.
pub struct Packer {
    zstd: zstd::bulk::Compressor<'static>,
    out: Vec<u8>,
    /// Records in a row that did not shrink.
    misses: u32,
    /// Records passed over since the packer gave up.
    skipped: u32,
    /// Whether compressing pays on this connection.
    pub pace: Pace,
}

impl Packer {
    pub fn new() -> io::Result<Packer> {
        let zstd = zstd::bulk::Compressor::new(LEVEL)?;
        Ok(Packer { zstd, out: Vec::new(), misses: 0, skipped: 0, pace: Pace::default() })
    }

    /// The frame [`Packer::pack`] made last.
    pub fn packed(&self) -> &[u8] {
        &self.out
    }

    /// Begins a file: whether its records shrink is learnt afresh.
    pub fn begin_file(&mut self) {
        (self.misses, self.skipped) = (0, 0);
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
                self.out.truncate(n);
                Some(&self.out)
            }
            _ => {
                self.misses += 1;
                None
            }
        }
    }
}

/// A connection's decompressor, with its buffers for a compressed record and what it gives,
/// kept between replies (making a context costs more than decompressing a small file).
pub struct Unpacking {
    pub unpacker: Unpacker,
    pub packed: Vec<u8>,
    pub raw: Vec<u8>,
}

impl Unpacking {
    pub fn new() -> io::Result<Unpacking> {
        Ok(Unpacking { unpacker: Unpacker::new()?, packed: Vec::new(), raw: Vec::new() })
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

/// Wire bytes written before [`Pace`] judges by writes' waits: until then the socket's send
/// buffer (which grows to 4 MiB on Linux) may still be filling, and a write waits for nothing.
pub const PACE_FROM: u64 = 8 << 20;

/// Compressed records judged together, at first: waits come in lumps (a writer is woken once a
/// third of the send buffer is free), so one record's says little.
pub const JUDGED: u32 = 8;

/// Judged together at most: each probe that finds compressing pays doubles the records until
/// the next, so a link about as fast as the compressor costs few records sent as they are.
pub const JUDGED_AT_MOST: u32 = 256;

/// Records sent as they are, judged together, to measure how fast the link takes bytes.
pub const PROBE: u32 = 4;

/// Wire bytes compressed records must make before they are judged: fewer may not have left the
/// connection's write buffer at all (data that shrinks a thousandfold makes a KiB a record), and
/// their writes would wait for nothing, however slow the link.
pub const JUDGED_WIRE: u64 = 1 << 20;

/// Whether compressing pays on this connection: compressing a byte must take less than the
/// link takes to carry one, or the link waits on the compressor. While records go compressed
/// and the link is slower, writes wait for it; when over [`JUDGED`] records (and a MiB on the
/// wire) they took under an eighth of the time compressing took (little more than the copy into
/// the socket), the link may be the faster, and
/// [`PROBE`] records go as they are: their writes' waits are the link's time for their bytes,
/// and records go compressed again if that is more than compressing them takes.
#[derive(Debug, Default, Clone)]
pub struct Pace {
    /// Wire bytes written so far.
    written: u64,
    /// Nanoseconds compressing takes per byte of input (a moving average).
    pack_ns: Option<f64>,
    /// Records go as they are.
    raw: bool,
    /// Compressed records judged together now (0: [`JUDGED`]).
    judged: u32,
    /// The records gathered for the next judgment: how many, their wire bytes, the time
    /// compressing them took, and the time their writes waited.
    records: u32,
    wire: u64,
    pack: Duration,
    wait: Duration,
}

impl Pace {
    /// Whether the next record should be compressed.
    pub fn compress_next(&self) -> bool {
        self.written < PACE_FROM || !self.raw
    }

    /// A record of `raw` bytes went compressed, as `wire` bytes: compressing took `pack`, and
    /// writing it waited `wait`.
    pub fn packed(&mut self, raw: u64, wire: u64, pack: Duration, wait: Duration) {
        self.written += wire;
        let ns = pack.as_nanos() as f64 / raw.max(1) as f64;
        self.pack_ns = Some(self.pack_ns.map_or(ns, |a| a + (ns - a) / 4.0));
        if self.written < PACE_FROM || self.raw {
            return;
        }
        self.gather(wire, pack, wait);
        if self.records >= self.judged.max(JUDGED) && self.wire >= JUDGED_WIRE {
            self.raw = self.wait < self.pack / 8;
            self.begin_judging();
        }
    }

    /// A record of `raw` bytes went as it is, and writing it waited `wait`.
    pub fn sent(&mut self, raw: u64, wait: Duration) {
        self.written += raw;
        // While compressing, a record sent as it is did not shrink: it says nothing of the link.
        if self.written < PACE_FROM || !self.raw {
            return;
        }
        self.gather(raw, Duration::ZERO, wait);
        if self.records >= PROBE {
            let link_ns = self.wait.as_nanos() as f64 / self.wire.max(1) as f64;
            if self.pack_ns.is_some_and(|pack| pack < link_ns) {
                self.raw = false;
                self.judged = (self.judged.max(JUDGED) * 2).min(JUDGED_AT_MOST);
            }
            self.begin_judging();
        }
    }

    fn gather(&mut self, wire: u64, pack: Duration, wait: Duration) {
        self.records += 1;
        self.wire += wire;
        self.pack += pack;
        self.wait += wait;
    }

    fn begin_judging(&mut self) {
        (self.records, self.wire, self.pack, self.wait) = (0, 0, Duration::ZERO, Duration::ZERO);
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

    /// Sends `n` records of a MiB through `pace`: compressing one takes 2 ms and makes a quarter
    /// MiB; `wait(k, compressed)` says how long the write of the `k`th waits. Returns how many
    /// went as they are.
    fn run(pace: &mut Pace, n: u32, wait: impl Fn(u32, bool) -> Duration) -> u32 {
        let mib = 1u64 << 20;
        let mut raw = 0;
        for k in 0..n {
            if pace.compress_next() {
                pace.packed(mib, mib / 4, Duration::from_millis(2), wait(k, true));
            } else {
                raw += 1;
                pace.sent(mib, wait(k, false));
            }
        }
        raw
    }

    #[test]
    fn records_go_as_they_are_while_the_link_is_faster_than_compressing() {
        let us = Duration::from_micros;
        // Loopback, or 10 Gbit/s: writes never wait on compressed records, and a MiB as it is
        // takes 0.3 ms. Once 8 MiB are on the wire (the 32nd record) and 8 records judged, all
        // go as they are.
        let mut fast = Pace::default();
        assert_eq!(run(&mut fast, 64, |_, c| if c { us(0) } else { us(300) }), 64 - 31 - 8);
        // 100 Mbit/s: writes wait in lumps (0.1 s every fifth record, 20 us otherwise). Never.
        let mut slow = Pace::default();
        let lumps = |k: u32, c: bool| if k % 5 == 4 || !c { us(110_000) } else { us(20) };
        assert_eq!(run(&mut slow, 512, lumps), 0);
        // 1 Gbit/s: a quarter MiB takes the link 2.2 ms, about what compressing takes, and writes
        // wait little (0.2 ms): probes find a MiB as it is takes 8.4 ms, each comes twice as late
        // as the one before, and few records go as they are.
        let mut gigabit = Pace::default();
        assert_eq!(run(&mut gigabit, 512, |_, c| if c { us(200) } else { us(8_400) }), 5 * PROBE);
        assert!(gigabit.compress_next());
        // 2.5 Gbit/s: compressing is the slower, yet sending as they are is slower still (3.4 ms
        // a MiB): each probe finds that, and the next comes twice as late.
        let mut between = Pace::default();
        let raw = run(
            &mut between,
            31 + 8 + 4 + 16 + 4 + 32 + 4 + 64 + 4 + 128 + 4,
            |_, c| if c { us(0) } else { us(3_400) },
        );
        assert_eq!(raw, 5 * 4);
        assert!(between.compress_next());
        // Data that shrinks a thousandfold over a slow link: its compressed records sit in the
        // write buffer and most writes wait for nothing (one in 64 flushes it, and waits), yet
        // none goes as it is: judged by a MiB of them at a time, the waits say the link is slower.
        let mut zeros = Pace::default();
        let mib = 1u64 << 20;
        for k in 0..12_000u32 {
            assert!(zeros.compress_next(), "record {k}");
            let wait = if k % 64 == 63 { us(5_000) } else { us(0) };
            zeros.packed(mib, 1024, Duration::from_micros(100), wait);
        }
        // A link that slows down while records go as they are: compressed again.
        assert!(run(&mut fast, 8, |_, _| us(80_000)) <= PROBE);
        assert!(fast.compress_next());
    }
}
