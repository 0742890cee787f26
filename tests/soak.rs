//! Soak: the real server under honest, slow, vanishing and flooding clients at once while its files
//! keep changing. Runs `FT_SOAK_SECS` seconds (30 by default) and reports transfers, mismatches,
//! peak server RSS and threads, and the threads and descriptors left afterwards.
//!
//! It is left out of a plain `cargo test` (it would double the everyday loop); `.ci/run` runs it,
//! and `cargo test --test integration soak -- --ignored` runs it here.
//! `FT_SOAK_SECS=300 cargo test --release --test integration soak -- --ignored --nocapture` runs
//! it for five minutes.
//! The sleeps here pace the load (a slow reader, a changer); nothing waits on one for a result.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ft::client::{Client, ClientError, OutDir};
use ft::digest::Digest;
use ft::name::Name;

use crate::util::{RealServer, Wire, reset};

const FILES: usize = 24;
const MAX_CONNS: usize = 200;

/// The bytes of version `v` of file `i`: small, medium and large files, different per version.
fn contents(i: usize, v: u64) -> Vec<u8> {
    let len = match i % 8 {
        0 => 24 << 20,
        1 | 2 => (1 << 20) + i * 4099,
        _ => 100 + i * 2311,
    };
    let seed = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ v.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn file_name(i: usize) -> String {
    format!("f{i:02}.bin")
}

/// A small deterministic random source per thread.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[derive(Default)]
struct Tally {
    transfers: AtomicU64,
    bytes: AtomicU64,
    mismatches: AtomicU64,
    integrity_errors: AtomicU64,
    other_errors: AtomicU64,
    refused: AtomicU64,
    slow_cut: AtomicU64,
    vanished: AtomicU64,
}

struct Proc {
    pid: u32,
}

impl Proc {
    fn status(&self, key: &str) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
    fn rss_kib(&self) -> u64 {
        self.status("VmRSS:")
    }
    fn threads(&self) -> u64 {
        self.status("Threads:")
    }
    /// Open descriptors, other than the memfds that hold cached files (counted by [`Proc::memfds`]).
    fn fds(&self) -> u64 {
        self.fd_targets().iter().filter(|t| !t.starts_with("/memfd:ft-cache")).count() as u64
    }
    fn memfds(&self) -> u64 {
        self.fd_targets().iter().filter(|t| t.starts_with("/memfd:ft-cache")).count() as u64
    }
    fn fd_targets(&self) -> Vec<String> {
        let Ok(dir) = fs::read_dir(format!("/proc/{}/fd", self.pid)) else { return Vec::new() };
        dir.filter_map(|e| fs::read_link(e.ok()?.path()).ok()).map(|t| t.to_string_lossy().into_owned()).collect()
    }
}

#[test]
#[ignore = "30 s of load: CI runs it; locally `cargo test --test integration soak -- --ignored`"]
fn soak() {
    let secs: u64 = std::env::var("FT_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("server_downloads");
    fs::create_dir_all(&root).unwrap();
    let versions: Arc<Mutex<HashMap<String, HashSet<Digest>>>> = Arc::default();
    for i in 0..FILES {
        let bytes = contents(i, 0);
        versions.lock().unwrap().entry(file_name(i)).or_default().insert(Digest::of(&bytes));
        fs::write(root.join(file_name(i)), bytes).unwrap();
    }
    let mut server = RealServer::start(
        work.path(),
        &[
            "--cache-size",
            "32MiB",
            "--max-conns",
            &MAX_CONNS.to_string(),
            "--send-timeout",
            "2s",
            "--request-timeout",
            "2s",
            "--idle-timeout",
            "10s",
        ],
    );
    let proc = Proc { pid: server.pid() };
    let (base_threads, base_fds) = (proc.threads(), proc.fds());
    let addr: SocketAddr = format!("127.0.0.1:{}", server.port).parse().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut handles = Vec::new();

    for t in 0..12 {
        let (stop, tally, versions) = (stop.clone(), tally.clone(), versions.clone());
        let out = work.path().join(format!("out{t}"));
        handles.push(thread::spawn(move || downloader(addr, &out, t, &stop, &tally, &versions)));
    }
    {
        let (stop, versions, root, scratch) = (stop.clone(), versions.clone(), root.clone(), work.path().join("new"));
        handles.push(thread::spawn(move || changer(&root, &scratch, &stop, &versions)));
    }
    for t in 0..2 {
        let (stop, tally) = (stop.clone(), tally.clone());
        handles.push(thread::spawn(move || slow_reader(addr, t, &stop, &tally)));
    }
    for t in 0..2 {
        let (stop, tally) = (stop.clone(), tally.clone());
        handles.push(thread::spawn(move || vanisher(addr, t, &stop, &tally)));
    }
    {
        let (stop, tally) = (stop.clone(), tally.clone());
        handles.push(thread::spawn(move || flooder(addr, &stop, &tally)));
    }

    let (mut peak_rss, mut peak_threads) = (0, 0);
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        peak_rss = peak_rss.max(proc.rss_kib());
        peak_threads = peak_threads.max(proc.threads());
        thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::SeqCst);
    for h in handles {
        h.join().unwrap();
    }

    // Back to baseline: poll with stats round trips (each one a real request) until the server's
    // connection threads have all ended, for at most 20 s.
    let settle_by = Instant::now() + Duration::from_secs(20);
    let (mut threads_after, mut fds_after);
    loop {
        Wire::connect(addr).sync();
        (threads_after, fds_after) = (proc.threads(), proc.fds());
        if (threads_after, fds_after) == (base_threads, base_fds) || Instant::now() > settle_by {
            break;
        }
        thread::yield_now();
    }
    let t = |a: &AtomicU64| a.load(Ordering::SeqCst);
    let report = format!(
        "soak {secs}s: transfers {} ({} MiB), mismatches {}, integrity errors {}, other errors {}, \
         refused (busy) {}, slow readers cut {}, vanished {}, peak server RSS {} MiB, peak threads {}, \
         threads after {} (baseline {}), fds after {} (baseline {})",
        t(&tally.transfers),
        t(&tally.bytes) >> 20,
        t(&tally.mismatches),
        t(&tally.integrity_errors),
        t(&tally.other_errors),
        t(&tally.refused),
        t(&tally.slow_cut),
        t(&tally.vanished),
        peak_rss / 1024,
        peak_threads,
        threads_after,
        base_threads,
        fds_after,
        base_fds
    );
    eprintln!("{report}");
    assert!(t(&tally.transfers) > 0, "{report}");
    assert_eq!(t(&tally.mismatches), 0, "{report}");
    assert_eq!(t(&tally.integrity_errors), 0, "{report}");
    assert_eq!(t(&tally.other_errors), 0, "{report}");
    assert!(t(&tally.refused) > 0, "the flood never hit the limit: {report}");
    assert_eq!((threads_after, fds_after), (base_threads, base_fds), "{report}");
    // Each memfd left is a cache entry's (a file of 64 KiB or more): none outlives its entry.
    let stats = ft::client::Client::connect(&addr.to_string(), Duration::from_secs(10)).unwrap().stats().unwrap();
    let entries = stats.iter().find(|(k, _)| k == "cache_entries").map_or(0, |(_, v)| *v);
    assert!(proc.memfds() <= entries, "{} memfds for {entries} cache entries", proc.memfds());
    // Cache cap (32 MiB) + about 100 KiB of buffers and stack per connection + the process itself.
    assert!(peak_rss / 1024 < 32 + MAX_CONNS as u64 / 10 + 64, "{report}");
    // A connection stops counting just before its thread exits, so a few finishing threads may
    // overlap new ones.
    assert!(peak_threads <= base_threads + MAX_CONNS as u64 + 16, "{report}");
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(), 0);
}

/// Downloads random files over one connection at a time, checking each saved file is a version
/// that was really written.
fn downloader(
    addr: SocketAddr,
    out: &Path,
    seed: u64,
    stop: &AtomicBool,
    tally: &Tally,
    versions: &Mutex<HashMap<String, HashSet<Digest>>>,
) {
    let dir = OutDir::create(out).unwrap();
    let mut rng = Rng(seed * 7919 + 17);
    while !stop.load(Ordering::SeqCst) {
        let mut client = match Client::connect(&addr.to_string(), Duration::from_secs(10)) {
            Ok(c) => c,
            Err(_) => {
                tally.other_errors.fetch_add(1, Ordering::SeqCst);
                continue;
            }
        };
        for _ in 0..10 {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let file = file_name(rng.below(FILES));
            match client.download(&Name::parse(&file).unwrap(), &dir, false) {
                Ok(done) => {
                    let saved = fs::read(out.join(&file)).unwrap();
                    let known = versions.lock().unwrap()[&file].contains(&Digest::of(&saved));
                    if known && Digest::of(&saved) == done.digest {
                        tally.transfers.fetch_add(1, Ordering::SeqCst);
                        tally.bytes.fetch_add(saved.len() as u64, Ordering::SeqCst);
                    } else {
                        tally.mismatches.fetch_add(1, Ordering::SeqCst);
                    }
                }
                Err(ClientError::Server(reply)) if reply.code == "busy" => {
                    tally.refused.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                Err(ClientError::Integrity { .. }) => {
                    tally.integrity_errors.fetch_add(1, Ordering::SeqCst);
                }
                Err(e) => {
                    eprintln!("soak downloader: {file}: {e}");
                    tally.other_errors.fetch_add(1, Ordering::SeqCst);
                    break;
                }
            }
        }
    }
}

/// Replaces a random file with a new version every 100 ms, atomically (write, then rename).
fn changer(root: &Path, scratch: &PathBuf, stop: &AtomicBool, versions: &Mutex<HashMap<String, HashSet<Digest>>>) {
    fs::create_dir_all(scratch).unwrap();
    let mut rng = Rng(99);
    let mut version = 1;
    while !stop.load(Ordering::SeqCst) {
        let i = 1 + rng.below(FILES - 1);
        let bytes = contents(i, version);
        versions.lock().unwrap().entry(file_name(i)).or_default().insert(Digest::of(&bytes));
        let tmp = scratch.join(file_name(i));
        fs::write(&tmp, bytes).unwrap();
        fs::rename(&tmp, root.join(file_name(i))).unwrap();
        version += 1;
        thread::sleep(Duration::from_millis(100));
    }
}

/// Reads a large file slowly; every other time stops reading altogether until the server gives up.
fn slow_reader(addr: SocketAddr, seed: u64, stop: &AtomicBool, tally: &Tally) {
    let mut round = seed;
    while !stop.load(Ordering::SeqCst) {
        round += 1;
        let Ok(mut w) = TcpStream::connect(addr) else { continue };
        let _ = w.set_read_timeout(Some(Duration::from_secs(10)));
        if std::io::Write::write_all(&mut w, b"get f00.bin\n").is_err() {
            continue;
        }
        let mut buf = vec![0u8; 16 << 10];
        if round.is_multiple_of(2) {
            for _ in 0..20 {
                if stop.load(Ordering::SeqCst) || w.read(&mut buf).unwrap_or(0) == 0 {
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
        } else {
            // Stall past the server's 2 s send timeout, then find the connection cut.
            let _ = w.read(&mut buf);
            thread::sleep(Duration::from_millis(3500));
            let mut drained = 0usize;
            while let Ok(n) = w.read(&mut buf) {
                if n == 0 {
                    tally.slow_cut.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                drained += n;
                if drained > 64 << 20 {
                    break;
                }
            }
        }
    }
}

/// Starts downloads and resets the connection part-way through.
fn vanisher(addr: SocketAddr, seed: u64, stop: &AtomicBool, tally: &Tally) {
    let mut rng = Rng(seed * 31 + 5);
    while !stop.load(Ordering::SeqCst) {
        let Ok(mut w) = TcpStream::connect(addr) else { continue };
        let request = format!("get {}\n", file_name(rng.below(FILES)));
        if std::io::Write::write_all(&mut w, request.as_bytes()).is_err() {
            continue;
        }
        let mut buf = vec![0u8; 1 + rng.below(200_000)];
        let _ = w.read(&mut buf);
        reset(w);
        tally.vanished.fetch_add(1, Ordering::SeqCst);
        thread::sleep(Duration::from_millis(20));
    }
}

/// Every second, opens more connections than the server allows, asks each to quit, and counts
/// the ones refused with `ERR busy`.
fn flooder(addr: SocketAddr, stop: &AtomicBool, tally: &Tally) {
    while !stop.load(Ordering::SeqCst) {
        let flood: Vec<TcpStream> = (0..MAX_CONNS + 50).filter_map(|_| TcpStream::connect(addr).ok()).collect();
        for mut s in flood {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = std::io::Write::write_all(&mut s, b"quit\n");
            let mut line = [0u8; 8];
            if s.read(&mut line).is_ok_and(|n| line[..n].starts_with(b"ERR busy")) {
                tally.refused.fetch_add(1, Ordering::SeqCst);
            }
        }
        thread::sleep(Duration::from_secs(1));
    }
}
