//! The server: the accept loop, connection limits and graceful shutdown, over the pieces in this
//! folder, in three rooms.
//!
//! - The core, which no speaker's syntax reaches: `session.rs` (one client's standing: its token
//!   and rights, and the short verbs), `get.rs` (what a download answers: header and body, from
//!   the cache or the disk), `hashing.rs` (a body hashed while it streams), `send.rs` (a body
//!   sent into any [`Sink`], then settled: cache admission, trailer digest), `upload.rs` (whether
//!   an upload may happen, `partial`, storing, `mkdir`), `storers.rs` (small uploads stored on
//!   helper threads), `refusal.rs` (why a request is refused).
//! - The speakers: `ft/` (ft's text protocol over TLS or plain TCP: the command loop, uploads off
//!   the wire, listings as walked), `proxy.rs` (the PROXY protocol header in front of it).
//! - What they share: `config.rs` (what the server is told, and every default), `start.rs` (why it
//!   could not start), `shutdown.rs` (stopping it, draining first), `shared.rs` (the state
//!   connections share, and `stats`), `cache.rs`, `bytes.rs` and `mirror.rs` (the byte-capped
//!   cache, its bytes in memory, and its files), `memo.rs` (digests of files streamed from disk),
//!   `limits.rs` (how many connections, threads and files the system allows), `tls.rs` (the TLS
//!   identity), `auth.rs` (tokens and the limiter of failed ones).
//!
//! [`Server::run`] takes an already-bound listener (the binary binds; tests bind `127.0.0.1:0`)
//! and spawns one named `std::thread` with a small stack per accepted connection, which it wraps
//! in a [`Transport`]. Past `max_conns` a new connection gets `ERR busy` and is closed without
//! a thread. A connection's error ends that connection alone and is logged once with its peer.
//! Accept errors (such as running out of file descriptors) back off instead of spinning.
//!
//! Shutdown: [`Shutdown::trigger`] stops the accept loop; `run` then half-closes every connection's
//! receiving side, so idle ones end at once and busy ones end after the reply in flight, and waits
//! up to `grace` for them before returning.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tracing::{debug, info, warn};

pub mod auth;
pub mod bytes;
pub mod cache;
mod config;
mod delta;
mod ft;
mod get;
mod hashing;
mod limits;
mod memo;
pub mod mirror;
pub mod proxy;
mod refusal;
mod send;
mod session;
mod shared;
mod shutdown;
mod start;
mod storers;
pub mod tls;
mod upload;

pub use config::{Config, DEFAULT_BIND, DEFAULT_CACHE_DIR, DEFAULT_ROOT};
pub use delta::{DeltaAnswer, DeltaSent};
pub use ft::SORTED_UP_TO as LIST_SORTED_UP_TO;
pub use get::{Answer, Part};
pub use limits::raise_fd_limit;
pub use refusal::Refusal;
pub use send::{Ending, Sent, Sink};
pub use session::{AuthFailed, Session};
pub use shared::Stat;
pub use shutdown::Shutdown;
pub use start::ServerError;
pub use upload::{Offer, PutFailed};

use cache::{Cache, CacheStats};
use ft::Connection;
use memo::DigestMemo;
use mirror::Mirror;
use shared::{Shared, addr_key};
use start::inside;

use crate::store::Root;
use crate::transport::Transport;
use crate::wire::{self, ErrorCode};

/// Connections the kernel may queue before the accept loop takes them.
const LISTEN_BACKLOG: i32 = 4096;

/// Sweeps expired cache entries every half TTL (between 100 ms and a minute) until the returned
/// sender is dropped or the server is gone.
fn spawn_janitor(shared: &Arc<Shared>) -> io::Result<mpsc::Sender<()>> {
    let (stop, stopped) = mpsc::channel::<()>();
    let every = (shared.config.cache_ttl / 2).clamp(Duration::from_millis(100), Duration::from_secs(60));
    let shared = Arc::downgrade(shared);
    thread::Builder::new().name("cache-janitor".into()).stack_size(128 << 10).spawn(move || {
        while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
            match shared.upgrade() {
                Some(shared) => shared.cache.sweep(Instant::now()),
                None => break,
            }
        }
    })?;
    Ok(stop)
}

/// The server.
pub struct Server {
    shared: Arc<Shared>,
    /// Entries restored from the mirror folder at start-up.
    warmed: usize,
    /// Dropping it stops the cache janitor thread.
    _janitor: mpsc::Sender<()>,
}

impl Server {
    /// Opens the root and the cache folder and warms the cache from it.
    pub fn new(mut config: Config) -> Result<Server, ServerError> {
        // Never more connections than the system can give threads and descriptors to: past
        // that, std's thread start-up would abort the process (see limits.rs).
        let system = limits::connection_capacity();
        if let Some((cap, why)) = &system
            && config.max_conns > *cap
        {
            warn!(requested = config.max_conns, allowed = cap, "max-conns lowered to what the system allows ({why})");
            config.max_conns = *cap;
        }
        // Every thread a connection can start comes out of one budget: the system's (or less,
        // if asked), and never less than the connections themselves need.
        let system_threads = system.map_or(usize::MAX, |(cap, _)| cap);
        let threads = match config.max_threads {
            0 => system_threads,
            asked => asked.min(system_threads),
        };
        if config.proxy_protocol && config.trusted_proxies.is_empty() {
            return Err(ServerError::NoTrustedProxy);
        }
        let mut root =
            Root::open(&config.root).map_err(|source| ServerError::Root { path: config.root.clone(), source })?;
        if config.allow_upload {
            let caps = crate::store::Caps { bytes: config.max_staging, files: config.max_staging_files };
            let cleaned = root.enable_uploads(caps).map_err(|source| ServerError::Staging { source })?;
            if cleaned.removed + cleaned.kept > 0 {
                info!(
                    removed = cleaned.removed,
                    kept = cleaned.kept,
                    kept_bytes = cleaned.kept_bytes,
                    "{} beneath the root: removed what earlier runs left, kept recent interrupted uploads",
                    crate::store::STAGING
                );
            }
        }
        if let Some(dir) = &config.cache_dir
            && inside(dir, &config.root)
        {
            return Err(ServerError::CacheInRoot { cache: dir.clone(), root: config.root.clone() });
        }
        let identity_files = match &config.identity {
            tls::Identity::File(path) => vec![path],
            tls::Identity::Pem { cert, key } => vec![cert, key],
        };
        if let Some(file) = identity_files.into_iter().find(|file| inside(file, &config.root)) {
            return Err(ServerError::IdentityInRoot { identity: file.clone(), root: config.root.clone() });
        }
        let mirror = match &config.cache_dir {
            None => None,
            Some(dir) => Some(Mirror::open(dir).map_err(|source| ServerError::CacheDir { path: dir.clone(), source })?),
        };
        let auth = config.auth_file.as_deref().map(auth::AuthFile::open).transpose()?;
        // Last of the checks, so a start that fails for another reason writes no identity file.
        let tls = tls::ServerTls::load(&config.identity)?;
        let cache = Cache::new(config.cache_size, config.cache_ttl, mirror);
        let warmed = cache.warm(&root, Instant::now());
        let shared = Arc::new(Shared {
            config,
            shutdown: std::sync::OnceLock::new(),
            tls,
            auth,
            auth_failures: auth::Limiter::default(),
            auth_failed: AtomicU64::new(0),
            uploads: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            delta_gets: AtomicU64::new(0),
            delta_puts: AtomicU64::new(0),
            delta_bytes_saved: AtomicU64::new(0),
            bytes_compressed_saved: AtomicU64::new(0),
            root,
            cache,
            digests: DigestMemo::default(),
            live: Mutex::new(HashMap::new()),
            ended: Condvar::new(),
            started: Instant::now(),
            connections_now: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            connections_refused_addr: AtomicU64::new(0),
            per_addr: Mutex::new(HashMap::new()),
            requests: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            digests_computed: AtomicU64::new(0),
            bytes_hashed: AtomicU64::new(0),
            hash_helpers: AtomicU64::new(0),
            threads: limits::Threads::new(threads),
        });
        let _janitor = spawn_janitor(&shared).map_err(|source| ServerError::Thread { source })?;
        Ok(Server { shared, warmed, _janitor })
    }

    /// A session for a client at `peer`: what every speaker answers requests through.
    pub fn session(&self, peer: SocketAddr) -> Session<'_> {
        Session::new(&self.shared, peer)
    }

    /// How many cache entries were restored from the mirror folder at start-up.
    pub fn warmed(&self) -> usize {
        self.warmed
    }

    /// The fingerprint clients know this server's TLS identity by.
    pub fn fingerprint(&self) -> crate::fingerprint::Fingerprint {
        self.shared.tls.fingerprint
    }

    /// Refuses to listen on `addr` if other machines can reach it (or reach the server through a
    /// proxy) and the server serves anyone (no auth file), unless that was said to be intended
    /// (`allow_anonymous`).
    pub fn may_listen_on(&self, addr: SocketAddr) -> Result<(), ServerError> {
        // Behind a proxy, clients are other machines whatever address the server binds.
        let proxied = self.shared.config.proxy_protocol;
        let exposed = proxied || !addr.ip().to_canonical().is_loopback();
        if exposed && self.shared.auth.is_none() && !self.shared.config.allow_anonymous {
            return Err(ServerError::Anonymous { addr, proxied });
        }
        Ok(())
    }

    /// The auth file in use and how many tokens it holds, if the server requires a token.
    pub fn auth(&self) -> Option<(&Path, usize)> {
        self.shared.auth.as_ref().map(|a| (a.path(), a.len()))
    }

    /// Whether the TLS identity file was generated at this start.
    pub fn identity_created(&self) -> bool {
        self.shared.tls.created
    }

    /// Most connections served at once: `--max-conns`, or less if the system allows fewer.
    pub fn max_conns(&self) -> usize {
        self.shared.config.max_conns
    }

    /// How many files the root holds (what `list` would show).
    pub fn file_count(&self) -> usize {
        self.shared.root.count(None).map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX))
    }

    pub fn cache_stats(&self) -> CacheStats {
        self.shared.cache.stats()
    }

    /// Every figure `stats` reports, in order.
    pub fn stats(&self) -> Vec<Stat> {
        self.shared.stats()
    }

    /// Waits until at most `n` connections are open, or `timeout` passes; true if it got there.
    pub fn wait_connections(&self, n: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut live = self.shared.live.lock();
        while self.shared.connections_now.load(Ordering::SeqCst) > n {
            if self.shared.ended.wait_until(&mut live, deadline).timed_out() {
                return self.shared.connections_now.load(Ordering::SeqCst) <= n;
            }
        }
        true
    }

    /// Accepts connections until `shutdown` is triggered, then drains them (see the module doc).
    /// Returns `Ok(true)` if every connection finished within the grace period.
    pub fn run(&self, listener: TcpListener, shutdown: &Shutdown) -> io::Result<bool> {
        let local = listener.local_addr()?;
        let _ = closer();
        self.may_listen_on(local).map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e.to_string()))?;
        shutdown.arm(local);
        let _ = self.shared.shutdown.set(shutdown.clone());
        // std listens with a backlog of 128; a burst of connections beyond what the accept loop
        // has taken yet would have its SYNs dropped and retried a second later. Ask for more
        // (the kernel caps it at net.core.somaxconn).
        // Calling listen on a socket that is already listening only updates its backlog.
        if let Err(e) = rustix::net::listen(&listener, LISTEN_BACKLOG) {
            debug!("cannot raise the listen backlog: {e}");
        }
        if let Some(congestion) = &self.shared.config.congestion {
            let system = rustix::net::sockopt::tcp_congestion(&listener).unwrap_or_default();
            match rustix::net::sockopt::set_tcp_congestion(&listener, congestion) {
                Ok(()) => debug!(%congestion, %system, "TCP congestion control"),
                Err(e) => warn!(
                    "cannot set TCP congestion control {congestion:?} ({e}; see \
                     /proc/sys/net/ipv4/tcp_allowed_congestion_control): connections keep the system's, {system}"
                ),
            }
        }
        // Each connection thread holds a clone; all dropped means all connections are done.
        let (alive, all_done) = mpsc::channel::<()>();
        let mut backoff = Duration::from_millis(5);
        let mut next_id = 0u64;
        while !shutdown.is_triggered() {
            match listener.accept() {
                Ok((stream, peer)) => {
                    backoff = Duration::from_millis(5);
                    if shutdown.is_triggered() {
                        break;
                    }
                    next_id += 1;
                    self.admit(stream, peer, next_id, alive.clone());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    warn!("accept failed: {e}; retrying in {backoff:?}");
                    thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
        drop(listener);
        drop(alive);
        let open = self.shared.connections_now.load(Ordering::SeqCst);
        info!(open, "stopped accepting; letting connections finish");
        for stream in self.shared.live.lock().values() {
            let _ = stream.shutdown(std::net::Shutdown::Read);
        }
        let drained =
            matches!(all_done.recv_timeout(self.shared.config.grace), Err(mpsc::RecvTimeoutError::Disconnected));
        if !drained {
            warn!(
                open = self.shared.connections_now.load(Ordering::SeqCst),
                "grace period over with connections still open"
            );
        }
        Ok(drained)
    }

    /// Serves a new connection on its own thread, or refuses it with `ERR busy`.
    fn admit(&self, stream: TcpStream, peer: SocketAddr, id: u64, alive: mpsc::Sender<()>) {
        let shared = &self.shared;
        if shared.connections_now.load(Ordering::SeqCst) >= shared.config.max_conns as u64 {
            shared.connections_refused.fetch_add(1, Ordering::Relaxed);
            debug!(%peer, "refused: too many connections");
            turn_away(&stream, "too many connections; try again later");
            return;
        }
        // The connection's own thread, out of the budget its helpers draw from too.
        let Some(thread) = shared.threads.take() else {
            shared.connections_refused.fetch_add(1, Ordering::Relaxed);
            debug!(%peer, "refused: no thread left in the budget");
            turn_away(&stream, "too many connections and transfers at once; try again later");
            return;
        };
        // Behind a trusted proxy the client's address is known only once its header is read.
        let proxied =
            shared.config.proxy_protocol && shared.config.trusted_proxies.iter().any(|c| c.contains(peer.ip()));
        let limited = if proxied {
            None
        } else {
            match claim_addr(shared, &stream, peer) {
                Some(limited) => limited,
                None => return,
            }
        };
        shared.connections_now.fetch_add(1, Ordering::SeqCst);
        shared.connections_total.fetch_add(1, Ordering::Relaxed);
        let stream = Arc::new(stream);
        shared.live.lock().insert(id, stream.clone());
        // To turn the peer away if no thread can be started for it.
        let refuse = stream.clone();
        let mut guard = Live { shared: shared.clone(), id, addr: limited, _alive: alive };
        let spawned = thread::Builder::new().name(format!("conn {peer}")).stack_size(128 << 10).spawn(move || {
            let _thread = thread;
            // The peer goes on each event, not in a span: tracing-subscriber's span registry
            // holds at most 4,096 threads, and connections may be many more.
            let started = Instant::now();
            let Some((peer, speaker)) = through_proxy(&mut guard, &stream, peer, proxied) else { return };
            debug!(%peer, "connected");
            let opened = Connection::open(&guard.shared, Transport::plain(stream), peer, speaker);
            let (result, requests, bytes, health) = match opened {
                Ok(Some(mut conn)) => {
                    let result = conn.serve();
                    (result, conn.requests, conn.bytes, conn.only_health)
                }
                Ok(None) => (Ok(()), 0, 0, true),
                Err(e) => (Err(e), 0, 0, false),
            };
            let secs = started.elapsed().as_secs_f64();
            match result {
                // A load balancer's health check, every second or so: not worth a line at info.
                Ok(()) if health => debug!(%peer, requests, secs, "closed (health check)"),
                Ok(()) => info!(%peer, requests, bytes, secs, "closed"),
                Err(e) if e.is_peer() => info!(%peer, requests, bytes, secs, "closed: {e}"),
                Err(e) => warn!(%peer, requests, bytes, secs, "ended: {e}"),
            }
            drop(guard);
        });
        if let Err(e) = spawned {
            warn!(%peer, "cannot start a thread for the connection: {e}");
            turn_away(&refuse, "the server cannot take more connections now");
        }
    }
}

/// Answers a connection the server will not serve with `ERR busy` (best effort, never waiting more
/// than a moment on the peer); it closes when the caller drops it.
fn turn_away(stream: &TcpStream, message: &str) {
    turn_away_with(stream, ErrorCode::Busy, message);
}

/// [`turn_away`] with another code.
fn turn_away_with(stream: &TcpStream, code: ErrorCode, message: &str) {
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let _ = wire::write_err(&mut &*stream, code, &message);
    close_softly(stream);
}

/// How long a turned-away socket is held open, reading what the peer still sends.
const TURNED_AWAY_LINGER: Duration = Duration::from_millis(200);

/// Most turned-away sockets held at once; past it, one is closed at once.
const TURNED_AWAY_HELD: usize = 64;

/// Ends a socket that was answered without being read: its last word is followed by a FIN, and
/// the socket is held open a moment by one closer thread, which reads and drops what the peer
/// still sends (a client's `hello` and first request leave at once). Closed with unread bytes,
/// the kernel would answer them with a reset, and the peer would lose the answer with them.
fn close_softly(stream: &TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    if let (Some(closer), Ok(held)) = (closer(), stream.try_clone())
        && held.set_nonblocking(true).is_ok()
    {
        // Full: dropped here, closed at once.
        let _ = closer.try_send(held);
    }
}

/// Where [`close_softly`] hands sockets: the one closer thread of the process, started with the
/// first server that runs (so it is there from the start, not one more thread later).
fn closer() -> &'static Option<mpsc::SyncSender<TcpStream>> {
    static CLOSER: std::sync::OnceLock<Option<mpsc::SyncSender<TcpStream>>> = std::sync::OnceLock::new();
    CLOSER.get_or_init(|| {
        let (tx, rx) = mpsc::sync_channel::<TcpStream>(TURNED_AWAY_HELD);
        thread::Builder::new().name("ft-closer".into()).spawn(move || hold_and_close(rx)).ok().map(|_| tx)
    })
}

/// The closer thread: holds each socket until its peer closes, or for [`TURNED_AWAY_LINGER`].
fn hold_and_close(incoming: mpsc::Receiver<TcpStream>) {
    use std::io::Read;
    let mut held: Vec<(TcpStream, Instant)> = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if held.is_empty() {
            match incoming.recv() {
                Ok(stream) => held.push((stream, Instant::now() + TURNED_AWAY_LINGER)),
                Err(_) => return,
            }
        }
        while let Ok(stream) = incoming.try_recv() {
            held.push((stream, Instant::now() + TURNED_AWAY_LINGER));
        }
        let now = Instant::now();
        held.retain(|(stream, until)| {
            if now >= *until {
                return false;
            }
            // A few reads a pass: a peer that keeps sending is cut off at the deadline.
            for _ in 0..4 {
                match (&*stream).read(&mut buf) {
                    Ok(0) => return false,
                    Ok(_) => {}
                    Err(e) => return e.kind() == io::ErrorKind::WouldBlock,
                }
            }
            true
        });
        thread::sleep(Duration::from_millis(5));
    }
}

/// Checks a peer's address against the per-address limit, and counts it; `None` if it was turned
/// away, else the address it counts against (if the limit applies). (An address cut off for
/// failed tokens is told so in its own protocol, TLS included, once it speaks: see `ft/conn.rs`.)
fn claim_addr(shared: &Shared, stream: &TcpStream, peer: SocketAddr) -> Option<Option<IpAddr>> {
    let key = addr_key(peer.ip());
    let limited = shared.config.max_conns_per_addr > 0 && (shared.config.limit_loopback || !key.is_loopback());
    if limited {
        let mut per_addr = shared.per_addr.lock();
        let open = per_addr.entry(key).or_insert(0);
        if *open >= shared.config.max_conns_per_addr {
            drop(per_addr);
            shared.connections_refused_addr.fetch_add(1, Ordering::Relaxed);
            debug!(%peer, "refused: too many connections from its address");
            turn_away(stream, "too many connections from your address; try again later");
            return None;
        }
        *open += 1;
    }
    Some(limited.then_some(key))
}

/// The address a connection is from: for one from a trusted proxy, the client its PROXY header
/// names (then checked and counted as [`claim_addr`] does at accept for others), or the proxy
/// itself for a header that names no client (`LOCAL`, `UNKNOWN`: a health check); for any other
/// with PROXY protocol on, its own, after making sure it does not send a header itself. `None`
/// if the connection was refused.
fn through_proxy(
    guard: &mut Live,
    stream: &TcpStream,
    peer: SocketAddr,
    proxied: bool,
) -> Option<(SocketAddr, ft::Speaker)> {
    let shared = &guard.shared;
    if proxied {
        let client = match proxy::read_header(stream, shared.config.request_timeout) {
            Ok(Some(client)) => client,
            Ok(None) => {
                guard.addr = claim_addr(shared, stream, peer)?;
                debug!(proxy = %peer, "the proxy speaking for itself: health only");
                return Some((peer, ft::Speaker::ProxyItself));
            }
            Err(e) => {
                warn!(%peer, "refused: {e}");
                turn_away_with(stream, ErrorCode::BadRequest, &e.to_string());
                return None;
            }
        };
        guard.addr = claim_addr(shared, stream, client)?;
        debug!(%client, proxy = %peer, "through a trusted proxy");
        return Some((client, ft::Speaker::Client));
    }
    if shared.config.proxy_protocol {
        let mut start = [0u8; 16];
        let _ = stream.set_read_timeout(Some(shared.config.idle_timeout));
        if stream.peek(&mut start).is_ok_and(|n| proxy::looks_like_header(&start[..n])) {
            warn!(%peer, "refused: a PROXY header from an address that is not a trusted proxy");
            turn_away_with(stream, ErrorCode::Denied, "PROXY headers are taken from trusted proxies only");
            return None;
        }
    }
    Some((peer, ft::Speaker::Client))
}

/// Counts a connection as open until dropped (also when its thread could not start).
struct Live {
    shared: Arc<Shared>,
    id: u64,
    /// The address it counts against, if the per-address limit applies to it.
    addr: Option<IpAddr>,
    _alive: mpsc::Sender<()>,
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(addr) = self.addr {
            let mut per_addr = self.shared.per_addr.lock();
            if let Some(open) = per_addr.get_mut(&addr) {
                *open -= 1;
                if *open == 0 {
                    per_addr.remove(&addr);
                }
            }
        }
        let mut live = self.shared.live.lock();
        live.remove(&self.id);
        self.shared.connections_now.fetch_sub(1, Ordering::SeqCst);
        self.shared.ended.notify_all();
    }
}
