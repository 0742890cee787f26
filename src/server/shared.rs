//! The state every connection thread shares: configuration, the served folder, the cache, the
//! digest memo, the table of open connections (for shutdown) and the counters `stats` reports.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, TcpStream};
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
    /// The shutdown of the running server, for `health` to see draining.
    pub(crate) shutdown: std::sync::OnceLock<super::shutdown::Shutdown>,
    /// The TLS identity and configuration every TLS connection is served with.
    pub(crate) tls: super::tls::ServerTls,
    /// The tokens accepted, if the server requires one.
    pub(crate) auth: Option<super::auth::AuthFile>,
    /// Failed `auth` attempts per address.
    pub(crate) auth_failures: super::auth::Limiter,
    /// Failed `auth` attempts, for `stats`.
    pub(crate) auth_failed: AtomicU64,
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
    /// Connections turned away because their address already had its share.
    pub(crate) connections_refused_addr: AtomicU64,
    /// Open connections per peer address (see [`addr_key`]), for the per-address limit.
    pub(crate) per_addr: Mutex<HashMap<IpAddr, usize>>,
    pub(crate) requests: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) digests_computed: AtomicU64,
    /// File bytes read from disk to compute digests (whole files, resume prefixes).
    pub(crate) bytes_hashed: AtomicU64,
    /// Helper threads hashing a body while it is sent (see `hashing.rs`), at most a few.
    pub(crate) hash_helpers: AtomicU64,
    /// The threads connections may run, their own and their helpers'.
    pub(crate) threads: super::limits::Threads,
    /// Files stored by `put`, and their bytes.
    pub(crate) uploads: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    /// Downloads said as a delta against the client's older copy, and the bytes of them the
    /// client had (copied from its own blocks instead of sent).
    pub(crate) delta_gets: AtomicU64,
    pub(crate) delta_puts: AtomicU64,
    pub(crate) delta_bytes_saved: AtomicU64,
    /// Bytes compression spared the wire.
    pub(crate) bytes_compressed_saved: AtomicU64,
}

impl Shared {
    pub(crate) fn stats(&self) -> Vec<Stat> {
        let c = self.cache.stats();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let staging = self.root.staging_usage().unwrap_or_default();
        vec![
            ("uptime_secs", self.started.elapsed().as_secs()),
            ("connections_now", get(&self.connections_now)),
            ("connections_total", get(&self.connections_total)),
            ("connections_refused", get(&self.connections_refused)),
            ("connections_refused_per_addr", get(&self.connections_refused_addr)),
            ("threads", self.threads.used() as u64),
            ("threads_cap", self.threads.cap() as u64),
            ("auth_failed", get(&self.auth_failed)),
            ("requests", get(&self.requests)),
            ("bytes_sent", get(&self.bytes_sent)),
            ("digests_computed", get(&self.digests_computed)),
            ("bytes_hashed", get(&self.bytes_hashed) + self.root.bytes_hashed()),
            ("uploads", get(&self.uploads)),
            ("bytes_received", get(&self.bytes_received)),
            ("delta_gets", get(&self.delta_gets)),
            ("delta_puts", get(&self.delta_puts)),
            ("delta_bytes_saved", get(&self.delta_bytes_saved)),
            ("compressed_bytes_saved", get(&self.bytes_compressed_saved)),
            ("staging_files", staging.0 as u64),
            ("staging_bytes", staging.1),
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

/// What a peer is counted as for the per-address limit: its IPv4 address, or the /64 prefix of
/// its IPv6 address (one host commonly holds a whole /64; an IPv4-mapped address counts as IPv4).
pub(crate) fn addr_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_peers_count_by_their_64_and_mapped_ones_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(addr_key(a), addr_key(b));
        assert_ne!(addr_key(a), addr_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(addr_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }
}
