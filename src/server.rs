//! The server: configuration, the accept loop, and the per-connection command loop.
//!
//! [`Server::run`] takes an already-bound listener (the binary binds; tests bind `127.0.0.1:0`)
//! and spawns one named `std::thread` per accepted connection. A connection reads requests with
//! the bounded line reader, answers each in order, and flushes its buffered replies only when no
//! further pipelined request is already buffered, so a burst of requests leaves in few writes. A
//! connection's error ends that connection alone and is logged once with its peer address.

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tracing::{debug, info, warn};

use crate::cache::{Cache, CacheStats};
use crate::mirror::Mirror;
use crate::name::Name;
use crate::protocol::{self, ErrorCode, MAX_REQUEST_LINE, ProtocolError, Request};
use crate::root::Root;

/// Everything the server needs besides its listener.
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
    /// How long a connection may sit between requests before it is closed.
    pub idle_timeout: Duration,
    /// How long one write to a peer may block before the connection is closed.
    pub send_timeout: Duration,
}

impl Config {
    /// Defaults for everything but the root: the values `ftserver` uses without flags.
    pub fn new(root: impl Into<PathBuf>) -> Config {
        Config {
            root: root.into(),
            cache_dir: None,
            cache_size: 64 << 20,
            cache_ttl: Duration::from_secs(3600),
            idle_timeout: Duration::from_secs(300),
            send_timeout: Duration::from_secs(60),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot open the served folder {}: {source}", path.display())]
    Root { path: PathBuf, source: io::Error },
    #[error("cannot open the cache folder {}: {source}", path.display())]
    CacheDir { path: PathBuf, source: io::Error },
}

/// A figure reported by `stats`.
pub type Stat = (&'static str, u64);

/// The server's state shared by all connection threads.
pub struct Server {
    shared: Arc<Shared>,
    config: Config,
    /// Entries restored from the mirror folder at start-up.
    warmed: usize,
}

struct Shared {
    root: Root,
    cache: Cache,
    started: Instant,
    connections_now: AtomicU64,
    connections_total: AtomicU64,
    requests: AtomicU64,
    bytes_sent: AtomicU64,
}

impl Server {
    /// Opens the root and the cache folder and warms the cache from it.
    pub fn new(config: Config) -> Result<Server, ServerError> {
        let root =
            Root::open(&config.root).map_err(|source| ServerError::Root { path: config.root.clone(), source })?;
        let mirror = match &config.cache_dir {
            None => None,
            Some(dir) => Some(Mirror::open(dir).map_err(|source| ServerError::CacheDir { path: dir.clone(), source })?),
        };
        let cache = Cache::new(config.cache_size, config.cache_ttl, mirror);
        let warmed = cache.warm(&root, Instant::now());
        let shared = Arc::new(Shared {
            root,
            cache,
            started: Instant::now(),
            connections_now: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
        });
        Ok(Server { shared, config, warmed })
    }

    /// How many cache entries were restored from the mirror folder at start-up.
    pub fn warmed(&self) -> usize {
        self.warmed
    }

    pub fn cache_stats(&self) -> CacheStats {
        self.shared.cache.stats()
    }

    /// Every figure `stats` reports, in order.
    pub fn stats(&self) -> Vec<Stat> {
        self.shared.stats()
    }

    /// Accepts connections until `shutdown` is triggered, one thread per connection.
    pub fn run(&self, listener: TcpListener, shutdown: &Shutdown) -> io::Result<()> {
        shutdown.arm(listener.local_addr()?);
        let (stop_janitor, janitor_stop) = mpsc::channel::<()>();
        let shared = self.shared.clone();
        let every = (self.config.cache_ttl / 2).clamp(Duration::from_millis(100), Duration::from_secs(60));
        thread::Builder::new().name("cache-janitor".into()).spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = janitor_stop.recv_timeout(every) {
                shared.cache.sweep(Instant::now());
            }
        })?;
        let mut backoff = Duration::from_millis(5);
        while !shutdown.is_triggered() {
            match listener.accept() {
                Ok((stream, peer)) => {
                    backoff = Duration::from_millis(5);
                    if shutdown.is_triggered() {
                        break;
                    }
                    self.spawn_connection(stream, peer);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Typically out of file descriptors: wait for connections to close.
                    warn!("accept failed: {e}; retrying in {backoff:?}");
                    thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
        drop(stop_janitor);
        info!("stopped accepting connections");
        Ok(())
    }

    fn spawn_connection(&self, stream: TcpStream, peer: SocketAddr) {
        let shared = self.shared.clone();
        let (idle, send) = (self.config.idle_timeout, self.config.send_timeout);
        let spawned = thread::Builder::new().name(format!("conn {peer}")).stack_size(256 << 10).spawn(move || {
            shared.connections_total.fetch_add(1, Ordering::Relaxed);
            shared.connections_now.fetch_add(1, Ordering::Relaxed);
            debug!(%peer, "connected");
            match Connection::new(&shared, stream, idle, send).and_then(|mut c| c.serve()) {
                Ok(()) => debug!(%peer, "closed"),
                Err(e) if e.is_disconnect() => debug!(%peer, "peer went away: {e}"),
                Err(e) => warn!(%peer, "connection ended: {e}"),
            }
            shared.connections_now.fetch_sub(1, Ordering::Relaxed);
        });
        if let Err(e) = spawned {
            warn!(%peer, "cannot start a thread for the connection: {e}");
        }
    }
}

impl Shared {
    fn stats(&self) -> Vec<Stat> {
        let c = self.cache.stats();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("uptime_secs", self.started.elapsed().as_secs()),
            ("connections_now", get(&self.connections_now)),
            ("connections_total", get(&self.connections_total)),
            ("requests", get(&self.requests)),
            ("bytes_sent", get(&self.bytes_sent)),
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

/// Stops a running [`Server::run`]: sets a flag and wakes the blocked `accept` by connecting.
#[derive(Clone, Default)]
pub struct Shutdown(Arc<ShutdownState>);

#[derive(Default)]
struct ShutdownState {
    triggered: AtomicBool,
    /// Where the listener is, to wake its `accept`.
    addr: Mutex<Option<SocketAddr>>,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    pub fn trigger(&self) {
        self.0.triggered.store(true, Ordering::SeqCst);
        if let Some(addr) = *self.0.addr.lock() {
            let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
        }
    }

    pub fn is_triggered(&self) -> bool {
        self.0.triggered.load(Ordering::SeqCst)
    }

    fn arm(&self, mut addr: SocketAddr) {
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() { Ipv4Addr::LOCALHOST.into() } else { Ipv6Addr::LOCALHOST.into() });
        }
        *self.0.addr.lock() = Some(addr);
    }
}

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("request line longer than {0} bytes")]
    LineTooLong(usize),
    #[error("connection closed in the middle of a request")]
    Truncated,
    #[error("{name} shrank while being sent: {sent} of {size} bytes")]
    Shrank { name: Name, sent: u64, size: u64 },
}

impl ConnError {
    fn is_disconnect(&self) -> bool {
        use io::ErrorKind::*;
        matches!(self, ConnError::Io(e) if matches!(e.kind(), BrokenPipe | ConnectionReset | ConnectionAborted | UnexpectedEof))
    }
}

impl From<ProtocolError> for ConnError {
    fn from(e: ProtocolError) -> ConnError {
        match e {
            ProtocolError::LineTooLong(n) => ConnError::LineTooLong(n),
            ProtocolError::Io(e) => ConnError::Io(e),
            _ => ConnError::Truncated,
        }
    }
}

/// One client's connection: its buffered halves and the shared state.
struct Connection<'a> {
    shared: &'a Shared,
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
}

impl<'a> Connection<'a> {
    fn new(shared: &'a Shared, stream: TcpStream, idle: Duration, send: Duration) -> Result<Self, ConnError> {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(idle))?;
        stream.set_write_timeout(Some(send))?;
        let reader = BufReader::with_capacity(8 << 10, stream.try_clone()?);
        let writer = BufWriter::with_capacity(64 << 10, stream);
        Ok(Connection { shared, reader, writer })
    }

    /// Answers requests until the peer quits or closes.
    fn serve(&mut self) -> Result<(), ConnError> {
        let mut line = Vec::with_capacity(256);
        loop {
            if self.reader.buffer().is_empty() {
                self.writer.flush()?;
            }
            match protocol::read_line(&mut self.reader, &mut line, MAX_REQUEST_LINE) {
                Ok(true) => {}
                Ok(false) => break,
                Err(ProtocolError::LineTooLong(cap)) => {
                    // Out of step with the peer: say why, then close.
                    protocol::write_err(
                        &mut self.writer,
                        ErrorCode::TooLong,
                        &format!("request longer than {cap} bytes"),
                    )?;
                    self.writer.flush()?;
                    return Err(ConnError::LineTooLong(cap));
                }
                Err(e) => return Err(e.into()),
            }
            self.shared.requests.fetch_add(1, Ordering::Relaxed);
            match Request::parse(&line) {
                Ok(Request::Quit) => {
                    self.writer.write_all(b"OK bye\n")?;
                    break;
                }
                Ok(Request::Get(name)) => self.get(&name)?,
                Ok(Request::List(folder)) => self.list(folder.as_ref())?,
                Ok(Request::Stats) => self.stats()?,
                Err(e) => protocol::write_err(&mut self.writer, e.code(), &e)?,
            }
        }
        self.writer.flush()?;
        Ok(())
    }

    fn get(&mut self, name: &Name) -> Result<(), ConnError> {
        let (shared, now) = (self.shared, Instant::now());
        let fresh = |cached: &_| shared.root.stat(name).is_ok_and(|current| current == *cached);
        if let Some(body) = shared.cache.lookup(name, now, fresh) {
            debug!(%name, size = body.len(), "hit");
            return self.send_bytes(&body);
        }
        let (mut file, version) = match shared.root.open_file(name) {
            Ok(opened) => opened,
            Err(e) => return Ok(protocol::write_err(&mut self.writer, e.code(), &e)?),
        };
        let Some(reservation) = shared.cache.reserve(name, &version, now) else {
            debug!(%name, size = version.size, "miss, streamed");
            return self.stream_file(name, &mut file, version.size);
        };
        // Read whole before answering, so a read error is still an ERR line, not a cut reply.
        let mut body = Vec::with_capacity(usize::try_from(version.size).unwrap_or(0));
        let read = (&mut file).take(version.size).read_to_end(&mut body);
        if let Err(e) = read {
            return Ok(protocol::write_err(&mut self.writer, ErrorCode::Internal, &format!("read failed: {e}"))?);
        }
        if body.len() as u64 != version.size {
            return Ok(protocol::write_err(&mut self.writer, ErrorCode::Internal, &"file shrank while being read")?);
        }
        let body = Arc::new(body);
        debug!(%name, size = version.size, "miss, admitted");
        self.send_bytes(&body)?;
        // Publish only if the file did not change while it was read.
        if file.metadata().is_ok_and(|m| crate::root::FileVersion::of_std(&m) == version) {
            reservation.commit(body, version, now);
        }
        Ok(())
    }

    fn send_bytes(&mut self, body: &[u8]) -> Result<(), ConnError> {
        protocol::write_ok_count(&mut self.writer, body.len() as u64)?;
        self.writer.write_all(body)?;
        self.shared.bytes_sent.fetch_add(body.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Sends exactly `size` bytes of `file` through the write buffer; a file that turns out
    /// shorter ends the connection, since the peer was promised `size` bytes.
    fn stream_file(&mut self, name: &Name, file: &mut std::fs::File, size: u64) -> Result<(), ConnError> {
        protocol::write_ok_count(&mut self.writer, size)?;
        let sent = io::copy(&mut file.take(size), &mut self.writer)?;
        self.shared.bytes_sent.fetch_add(sent, Ordering::Relaxed);
        if sent != size {
            return Err(ConnError::Shrank { name: name.clone(), sent, size });
        }
        Ok(())
    }

    fn list(&mut self, folder: Option<&Name>) -> Result<(), ConnError> {
        match self.shared.root.list(folder) {
            Ok(entries) => {
                protocol::write_ok_count(&mut self.writer, entries.len() as u64)?;
                for entry in &entries {
                    entry.write(&mut self.writer)?;
                }
            }
            Err(e) => protocol::write_err(&mut self.writer, e.code(), &e)?,
        }
        Ok(())
    }

    fn stats(&mut self) -> Result<(), ConnError> {
        let stats = self.shared.stats();
        protocol::write_ok_count(&mut self.writer, stats.len() as u64)?;
        for (key, value) in stats {
            protocol::write_stat(&mut self.writer, key, value)?;
        }
        Ok(())
    }
}
