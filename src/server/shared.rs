//! The state every connection thread shares: configuration, the served folder, the cache, the
//! digest memo, the table of open connections (for shutdown) and the counters `stats` reports.

use std::collections::HashMap;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use super::cache::Cache;
use super::config::Config;
use super::memo::DigestMemo;
use crate::store::Root;

/// A figure reported by `stats`.
pub type Stat = (&'static str, u64);

/// State shared by every connection thread.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) root: Root,
    pub(crate) cache: Cache,
    /// Digests of files streamed from disk, per file version.
    pub(crate) digests: DigestMemo,
    /// Open connections by id, to half-close them at shutdown.
    pub(crate) live: Mutex<HashMap<u64, Arc<TcpStream>>>,
    /// Signalled whenever a connection ends (see [`Server::wait_connections`]).
    pub(crate) ended: Condvar,
    pub(crate) started: Instant,
    pub(crate) connections_now: AtomicU64,
    pub(crate) connections_total: AtomicU64,
    pub(crate) connections_refused: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) digests_computed: AtomicU64,
}

impl Shared {
    pub(crate) fn stats(&self) -> Vec<Stat> {
        let c = self.cache.stats();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("uptime_secs", self.started.elapsed().as_secs()),
            ("connections_now", get(&self.connections_now)),
            ("connections_total", get(&self.connections_total)),
            ("connections_refused", get(&self.connections_refused)),
            ("requests", get(&self.requests)),
            ("bytes_sent", get(&self.bytes_sent)),
            ("digests_computed", get(&self.digests_computed)),
            ("cache_entries", c.entries),
            ("cache_bytes", c.bytes),
            ("cache_cap", c.cap),
            ("cache_hits", c.hits),
            ("cache_misses", c.misses),
            ("cache_admitted", c.admitted),
            ("cache_refused", c.refused),
            ("cache_expired", c.expired),
            ("cache_invalidated", c.invalidated),
        ]
    }
}
