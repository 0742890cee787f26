//! What the server is told: [`Config`], and every default `ftserver` shows in its help, kept here
//! once so the binary and the library cannot disagree.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use super::tls::{Identity, default_identity_path};
use crate::wire::MAX_REQUEST_LINE;

/// The folder served when none is given.
pub const DEFAULT_ROOT: &str = "server_downloads";
/// The cache's mirror folder when none is given.
pub const DEFAULT_CACHE_DIR: &str = "server_cache";
/// The address listened on when none is given: loopback only, so a first run exposes nothing.
pub const DEFAULT_BIND: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Everything the server needs besides its listener. [`Config::new`] gives `ftserver`'s defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// The folder whose files are served.
    pub root: PathBuf,
    /// The cache's mirror folder; `None` keeps the cache in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Most bytes the cache holds (memory and mirror folder alike).
    pub cache_size: u64,
    /// Age after which a cache entry is dropped.
    pub cache_ttl: Duration,
    /// Longest request line, in bytes; a longer one gets `ERR too-long` and the connection closes.
    pub max_line: usize,
    /// Most connections served at once; more get `ERR busy`.
    pub max_conns: usize,
    /// Most threads connections may run at once, their own and their helpers' (store threads,
    /// hashing): a connection past it gets `ERR busy`, a helper past it is not started. 0: what
    /// the system allows.
    pub max_threads: usize,
    /// Most connections served at once from one peer address (an IPv6 peer counts by its /64,
    /// which one host may hold whole); more get `ERR busy`. 0: no limit but `max_conns`.
    pub max_conns_per_addr: usize,
    /// Whether `max_conns_per_addr` also applies to loopback peers (the machine itself). Off by
    /// default: local tools and load tests legitimately open many connections.
    pub limit_loopback: bool,
    /// How long a connection may sit between requests.
    pub idle_timeout: Duration,
    /// How long one request line may take to arrive once it has begun.
    pub request_timeout: Duration,
    /// How long one write to a peer may make no progress.
    pub send_timeout: Duration,
    /// How long shutdown waits for connections in flight.
    pub grace: Duration,
    /// The TLS identity: an identity file (made on first start) or a certificate and key.
    pub identity: Identity,
    /// Whether plain text is served to peers that are not on loopback. Off by default: off the
    /// machine, only TLS is spoken.
    pub allow_plaintext: bool,
    /// The auth file: with one, nothing but `hello`, `auth` and `quit` is answered before a valid
    /// token. `None`: anyone who can connect may read.
    pub auth_file: Option<PathBuf>,
    /// Whether listening where other machines can connect without an auth file is intended.
    pub allow_anonymous: bool,
    /// The first delay added to failed `auth` attempts once an address has failed a few times
    /// (it doubles with each further failure, up to a few seconds).
    pub auth_delay: Duration,
    /// Whether `put` is answered (off by default). With an auth file, it needs a token with the
    /// write right; without one, it is taken from loopback peers only.
    pub allow_upload: bool,
    /// With `allow_upload`, the one folder beneath the root uploads may go to (and beneath it);
    /// `None` for anywhere beneath the root.
    pub upload_folder: Option<crate::name::Name>,
    /// Whether an upload may replace an existing file (when its sender asks to).
    pub allow_overwrite: bool,
    /// Whether connections from `trusted_proxies` begin with a PROXY protocol header (v1 or v2)
    /// naming the real client, which is then used for logs, limits and failed-token slowing.
    pub proxy_protocol: bool,
    /// The load balancers allowed (and, with `proxy_protocol`, required) to send that header.
    pub trusted_proxies: Vec<super::proxy::Cidr>,
    /// Largest `put` taken, checked against the announced size before a byte of it is read.
    pub max_upload: u64,
    /// Most bytes interrupted uploads may hold in the staging folder (each counted at its whole
    /// size once its first byte is in); one sender (token, or address without tokens) at most half.
    pub max_staging: u64,
    /// Most interrupted uploads the staging folder may hold; one sender at most half.
    pub max_staging_files: usize,
    /// The TCP congestion control each connection's socket uses (`TCP_CONGESTION`, Linux), the
    /// server being the sender of downloads; `None` leaves the system's default.
    pub congestion: Option<String>,
}

impl Config {
    pub fn new(root: impl Into<PathBuf>) -> Config {
        Config {
            root: root.into(),
            cache_dir: None,
            cache_size: 64 << 20,
            cache_ttl: Duration::from_secs(3600),
            max_line: MAX_REQUEST_LINE,
            max_conns: 1024,
            max_threads: 0,
            max_conns_per_addr: 64,
            limit_loopback: false,
            idle_timeout: Duration::from_secs(300),
            request_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(60),
            grace: Duration::from_secs(10),
            identity: Identity::File(default_identity_path()),
            allow_plaintext: false,
            auth_file: None,
            allow_anonymous: false,
            auth_delay: Duration::from_millis(250),
            allow_upload: false,
            upload_folder: None,
            proxy_protocol: false,
            trusted_proxies: Vec::new(),
            allow_overwrite: false,
            max_upload: 4 << 30,
            max_staging: 16 << 30,
            max_staging_files: 1000,
            congestion: None,
        }
    }
}
