//! How many connections this machine lets the server hold, so it refuses the excess with
//! `ERR busy` instead of dying for lack of a resource.
//!
//! Each connection is a thread and a descriptor. A thread takes about four memory mappings (its
//! stack, the stack's guard page, and the alternate signal stack std sets up for stack-overflow
//! reports, with its guard), and when `vm.max_map_count` (65,530 by default) runs out, std's
//! thread start-up aborts the whole process: at about 16,400 connections every connection was
//! lost. Threads also count against `kernel.threads-max`, `kernel.pid_max` and `RLIMIT_NPROC`.
//! [`connection_capacity`] reads them all at start-up and keeps a margin for everything else the
//! process maps and runs. (Descriptors are not counted here: running out of them fails an
//! `accept`, which the accept loop survives by backing off; see `Server::run`.)

use std::fs;
use std::io;

/// Mappings each connection thread takes (measured: 4).
const MAPS_PER_THREAD: u64 = 4;
/// Mappings kept for everything else: the binary and libraries, malloc arenas, cached files of
/// 128 KiB or more (each its own mapping), the hashing buffers.
const MAPS_RESERVE: u64 = 4096;
/// Threads and processes kept for everything else (the cache janitor, the hashing helpers of
/// `hashing.rs`, at most `MAX_HELPERS` of them, ...).
const OTHER_RESERVE: u64 = 256;

/// The most connections the system allows, and the limit that decides it (for the log line);
/// `None` if nothing could be read (then only `--max-conns` applies).
pub fn connection_capacity() -> Option<(usize, String)> {
    let mut best: Option<(u64, String)> = None;
    let mut consider = |cap: u64, why: String| {
        if best.as_ref().is_none_or(|(b, _)| cap < *b) {
            best = Some((cap, why));
        }
    };
    if let (Some(max), Some(used)) = (read_number("/proc/sys/vm/max_map_count"), maps_in_use()) {
        let cap = max.saturating_sub(used + MAPS_RESERVE) / MAPS_PER_THREAD;
        consider(cap, format!("vm.max_map_count {max}, {MAPS_PER_THREAD} mappings per connection thread"));
    }
    for (file, what) in
        [("/proc/sys/kernel/threads-max", "kernel.threads-max"), ("/proc/sys/kernel/pid_max", "kernel.pid_max")]
    {
        if let Some(max) = read_number(file) {
            consider(max.saturating_sub(OTHER_RESERVE), format!("{what} {max}"));
        }
    }
    use rustix::process::{Resource, getrlimit};
    if let Some(max) = getrlimit(Resource::Nproc).current {
        consider(max.saturating_sub(OTHER_RESERVE), format!("the process limit (ulimit -u) {max}"));
    }
    best.map(|(cap, why)| (usize::try_from(cap).unwrap_or(usize::MAX), why))
}

/// The threads connections may run at once: their own, their store threads, the hashing helpers.
/// Each is taken before it is started and given back when it ends, so the process never asks
/// for a thread past what the system allows (std's thread start-up aborts the process then):
/// a connection past the budget is answered `ERR busy`; a helper past it is not started, and its
/// work is done on the connection's own thread.
#[derive(Debug, Clone)]
pub(crate) struct Threads(std::sync::Arc<Budget>);

#[derive(Debug)]
struct Budget {
    cap: usize,
    used: std::sync::atomic::AtomicUsize,
}

impl Threads {
    pub(crate) fn new(cap: usize) -> Threads {
        Threads(std::sync::Arc::new(Budget { cap, used: Default::default() }))
    }

    /// Takes one thread from the budget; `None` if none is left. The thread is given back when
    /// the [`Thread`] is dropped (move it into the thread it stands for).
    pub(crate) fn take(&self) -> Option<Thread> {
        use std::sync::atomic::Ordering;
        let taken =
            self.0.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.0.cap).then_some(n + 1));
        taken.ok().map(|_| Thread(self.0.clone()))
    }

    /// Threads taken now.
    pub(crate) fn used(&self) -> usize {
        self.0.used.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn cap(&self) -> usize {
        self.0.cap
    }
}

/// One thread of the budget, given back when dropped.
#[derive(Debug)]
pub(crate) struct Thread(std::sync::Arc<Budget>);

impl Drop for Thread {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

fn read_number(path: &str) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// How many mappings this process has now.
fn maps_in_use() -> Option<u64> {
    let maps = fs::read("/proc/self/maps").ok()?;
    Some(maps.iter().filter(|&&b| b == b'\n').count() as u64)
}

/// Raises the soft limit on open files to the hard limit (each connection holds one), and
/// returns the new soft limit.
pub fn raise_fd_limit() -> io::Result<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let lim = getrlimit(Resource::Nofile);
    // `None` is "unlimited".
    if lim.current.is_some() && lim.current != lim.maximum {
        setrlimit(Resource::Nofile, Rlimit { current: lim.maximum, maximum: lim.maximum })?;
    }
    Ok(lim.maximum.unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_capacity_is_read_and_below_each_limit() {
        let (cap, why) = connection_capacity().expect("Linux has /proc");
        assert!(cap > 0 && !why.is_empty());
        let max_maps = read_number("/proc/sys/vm/max_map_count").unwrap();
        assert!((cap as u64) < max_maps / MAPS_PER_THREAD, "{cap} ({why})");
    }
}
