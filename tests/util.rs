//! Test helpers: an in-process server on 127.0.0.1:0, a raw-wire connection, the real binaries,
//! and files with settled modification times. Everything is bounded in time and cleans up on drop.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use ft::client::trust::{TlsMode, TlsOptions, Trust};
use ft::digest::Digest;
use ft::server::tls::Identity;
use ft::server::{Config, Server, Shutdown};
use ft::wire::GetHeader;
use tempfile::TempDir;

/// How long any single network wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// Writes a file under `dir` (creating folders) with an mtime an hour ago, so the cache, which
/// refuses files modified in the last moments, will admit it.
pub fn put(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, bytes).unwrap();
    backdate(&path);
    path
}

/// Sets a file's mtime an hour into the past, then waits until its change time (which that
/// sets to now, and which nothing can set back) is older than the cache's settle time, so the
/// cache will admit it. The wait is bounded by that time: it is the property under test.
pub fn settle(path: &Path) {
    backdate(path);
    wait_settled();
}

/// Sets a file's mtime an hour into the past and notes when its change time was set.
fn backdate(path: &Path) {
    let f = fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(3600)).unwrap();
    *LAST_CHANGE.lock().unwrap() = Some(Instant::now());
}

/// When a file was last written through [`put`] or [`settle`], by any test.
static LAST_CHANGE: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);

/// Waits until every file put so far is older than the cache's settle time (at most that long).
/// Servers wait for it at start, so files put before a test starts its server are cacheable.
pub fn wait_settled() {
    let last = *LAST_CHANGE.lock().unwrap();
    if let Some(last) = last {
        let ready = last + ft::server::cache::SETTLE_TIME + Duration::from_millis(2);
        if let Some(left) = ready.checked_duration_since(Instant::now()) {
            thread::sleep(left);
        }
    }
}

/// Bytes that are different at every offset and cover all 256 values.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u64).wrapping_mul(2654435761).rotate_right(7) as u8 ^ i as u8).collect()
}

/// A temporary served folder, cache folder, and folder for the server's TLS identity.
pub struct Dirs {
    pub root: TempDir,
    pub cache: TempDir,
    pub keys: TempDir,
}

impl Dirs {
    pub fn new() -> Dirs {
        let dir = || tempfile::tempdir().unwrap();
        Dirs { root: dir(), cache: dir(), keys: dir() }
    }

    pub fn config(&self) -> Config {
        Config {
            cache_dir: Some(self.cache.path().to_path_buf()),
            identity: Identity::File(self.keys.path().join("identity.pem")),
            ..Config::new(self.root.path())
        }
    }

    pub fn put(&self, name: &str, bytes: &[u8]) -> PathBuf {
        put(self.root.path(), name, bytes)
    }

    /// Bytes held in the cache folder, and how many files.
    pub fn cache_usage(&self) -> (u64, usize) {
        let files: Vec<_> = fs::read_dir(self.cache.path()).unwrap().map(|e| e.unwrap()).collect();
        (files.iter().map(|e| e.metadata().unwrap().len()).sum(), files.len())
    }
}

/// A server running in this process on 127.0.0.1:0; stopped on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    pub server: Arc<Server>,
    shutdown: Shutdown,
    /// The thread running `Server::run`; yields whether every connection drained in time.
    thread: Option<JoinHandle<bool>>,
}

impl TestServer {
    pub fn start(config: Config) -> TestServer {
        TestServer::start_on(config, "127.0.0.1:0")
    }

    /// [`TestServer::start`] listening on `bind` (`address:port`).
    pub fn start_on(config: Config, bind: &str) -> TestServer {
        wait_settled();
        let server = Arc::new(Server::new(config).unwrap());
        let listener = TcpListener::bind(bind).unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let (s, stop) = (server.clone(), shutdown.clone());
        let thread = thread::spawn(move || s.run(listener, &stop).unwrap());
        TestServer { addr, server, shutdown, thread: Some(thread) }
    }

    pub fn connect(&self) -> Wire {
        Wire::connect(self.addr)
    }

    /// Starts a graceful shutdown that first says draining for `delay` ([`Shutdown::drain_then_stop`]).
    pub fn drain(&self, delay: Duration) {
        self.shutdown.drain_then_stop(delay).unwrap();
    }

    /// Triggers shutdown; the handle yields whether every connection finished within the grace.
    pub fn stop_in_background(&mut self) -> JoinHandle<bool> {
        self.shutdown.trigger();
        self.thread.take().unwrap()
    }

    /// A client of this server, over the transport the run asks for: plain text on loopback, or
    /// TLS (trusting this server by its fingerprint) when `FT_TEST_TLS=1`, so the client tests run
    /// over both (`.ci/run` runs them again that way).
    pub fn client(&self) -> ft::client::Client {
        if std::env::var_os("FT_TEST_TLS").is_some_and(|v| v == "1") {
            return self.tls_client();
        }
        ft::client::Client::connect(&self.addr.to_string(), WAIT).unwrap()
    }

    /// A client speaking TLS to this server, trusting it by its fingerprint.
    pub fn tls_client(&self) -> ft::client::Client {
        ft::client::Client::connect_with(&self.addr.to_string(), WAIT, &self.pinned()).unwrap()
    }

    /// TLS options that trust this server by its fingerprint, for this run only.
    pub fn pinned(&self) -> TlsOptions {
        let trust = Trust { pinned: Some(self.server.fingerprint()), ..Trust::default() };
        TlsOptions { mode: TlsMode::Always, trust }
    }

    /// Asserts the server gets down to at most `n` open connections within [`WAIT`].
    pub fn wait_connections(&self, n: u64) {
        assert!(self.server.wait_connections(n, WAIT), "still {} connections open", self.stat("connections_now"));
    }

    /// A `stats` figure, read in-process.
    pub fn stat(&self, key: &str) -> u64 {
        self.server.stats().into_iter().find(|(k, _)| *k == key).map(|(_, v)| v).unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

/// A raw connection for speaking bytes and reading exact replies.
pub struct Wire {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Wire {
    pub fn connect(addr: SocketAddr) -> Wire {
        Wire::from_stream(TcpStream::connect_timeout(&addr, WAIT).unwrap())
    }

    pub fn from_stream(stream: TcpStream) -> Wire {
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Wire { stream, reader }
    }

    pub fn send(&mut self, bytes: impl AsRef<[u8]>) -> &mut Wire {
        self.stream.write_all(bytes.as_ref()).unwrap();
        self
    }

    /// One reply line, without its line feed.
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        assert!(line.ends_with('\n'), "connection closed mid-line or before a reply: {line:?}");
        line.pop();
        line
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        self.reader.read_exact(&mut buf).unwrap();
        buf
    }

    /// Sends `get NAME` and returns the body after checking the `OK <size> xxh3=<digest>` header
    /// (or the trailer) and the digest.
    pub fn get(&mut self, name: &str) -> Vec<u8> {
        self.send(format!("get {name}\n"));
        let status = self.line();
        let header =
            GetHeader::parse(status.strip_prefix("OK ").unwrap_or_else(|| panic!("get {name}: {status}"))).unwrap();
        assert_eq!((header.offset, header.len), (0, header.size));
        let body = self.bytes(header.len as usize);
        // Without a digest in the header (a connection that agreed to trailers), it follows.
        let digest = header.digest.unwrap_or_else(|| {
            let trailer = self.line();
            ft::wire::parse_trailer(trailer.strip_prefix("OK ").unwrap_or_else(|| panic!("get {name}: {trailer}")))
                .unwrap()
        });
        assert_eq!(Digest::of(&body), digest, "get {name}: digest");
        body
    }

    /// One `stats` round trip: afterwards the server has certainly accepted and counted this
    /// connection (connecting alone only reaches the kernel's backlog).
    pub fn sync(&mut self) -> &mut Wire {
        self.send("stats\n");
        let n: usize = self.line().strip_prefix("OK ").unwrap().parse().unwrap();
        (0..n).for_each(|_| drop(self.line()));
        self
    }

    /// True once the server has closed the connection: end of stream with nothing more, or a
    /// reset (a server that closes with unread input pending makes the kernel send RST).
    pub fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => rest.is_empty(),
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

/// The path of one of the crate's binaries.
pub fn bin(name: &str) -> PathBuf {
    match name {
        "ftserver" => PathBuf::from(env!("CARGO_BIN_EXE_ftserver")),
        "ftclient" => PathBuf::from(env!("CARGO_BIN_EXE_ftclient")),
        other => panic!("no binary {other}"),
    }
}

/// The real `ftserver` binary on a free port; killed on drop.
pub struct RealServer {
    pub port: u16,
    /// Its `listening on` log line.
    pub listening: String,
    child: Child,
    /// Every line the server logs, as it logs it.
    log: mpsc::Receiver<String>,
}

impl RealServer {
    /// Starts `ftserver --port 0 ARGS...` in `cwd` and waits for its "listening on" line.
    pub fn start(cwd: &Path, args: &[&str]) -> RealServer {
        RealServer::start_limited(cwd, args, None)
    }

    /// [`RealServer::start`] logging at `log_level` (`RUST_LOG`; `info` otherwise).
    pub fn start_logging(cwd: &Path, args: &[&str], log_level: &str) -> RealServer {
        RealServer::start_with(cwd, args, None, log_level)
    }

    /// [`RealServer::start`] with the open-file limit (soft and hard) set to `fd_limit`.
    pub fn start_limited(cwd: &Path, args: &[&str], fd_limit: Option<u64>) -> RealServer {
        RealServer::start_with(cwd, args, fd_limit, "info")
    }

    /// [`RealServer::start`] as a user that file permissions apply to: run as root (as CI runs),
    /// the server becomes `nobody` (65534), for whom `cwd` and what the server writes in it are
    /// made accessible; run as anyone else, it is that user.
    pub fn start_unprivileged(cwd: &Path, args: &[&str]) -> RealServer {
        if !is_root() {
            return RealServer::start(cwd, args);
        }
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(cwd, fs::Permissions::from_mode(0o755)).unwrap();
        for own in ["server_cache", ".config"] {
            let path = cwd.join(own);
            fs::create_dir_all(&path).unwrap();
            std::os::unix::fs::chown(&path, Some(NOBODY), Some(NOBODY)).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
        }
        let mut command = Command::new(bin("ftserver"));
        use std::os::unix::process::CommandExt;
        command.uid(NOBODY).gid(NOBODY);
        RealServer::launch(command, cwd, args, None, "info")
    }

    fn start_with(cwd: &Path, args: &[&str], fd_limit: Option<u64>, log_level: &str) -> RealServer {
        RealServer::launch(Command::new(bin("ftserver")), cwd, args, fd_limit, log_level)
    }

    fn launch(mut command: Command, cwd: &Path, args: &[&str], fd_limit: Option<u64>, log_level: &str) -> RealServer {
        wait_settled();
        // Its TLS identity goes in the test's folder, not the user's configuration.
        command.args(["--port", "0"]).args(args).current_dir(cwd).env("RUST_LOG", log_level);
        command.env("XDG_CONFIG_HOME", cwd.join(".config"));
        if let Some(limit) = fd_limit {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe, so it may run between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    let lim = libc::rlimit { rlim_cur: limit, rlim_max: limit };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, log) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = RealServer { port: 0, listening: String::new(), child, log };
        let line = server.wait_log("listening on ");
        server.listening = line.clone();
        let after = line.split("listening on ").nth(1).unwrap();
        let addr: String = after.chars().take_while(|c| c.is_ascii_hexdigit() || ".:[]".contains(*c)).collect();
        let addr: SocketAddr = addr.parse().unwrap();
        server.port = addr.port();
        server
    }

    /// The next log line, if one comes within [`WAIT`].
    pub fn next_log(&mut self) -> Option<String> {
        self.log.recv_timeout(WAIT).ok()
    }

    /// Every log line the server has written so far and not yet read.
    pub fn logs_so_far(&mut self) -> Vec<String> {
        self.log.try_iter().collect()
    }

    /// Waits for a log line containing `needle` and returns it.
    pub fn wait_log(&mut self, needle: &str) -> String {
        loop {
            match self.log.recv_timeout(WAIT) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("ftserver never logged {needle:?}: {e}"),
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill only sends a signal to our own child process.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    /// Waits (at most [`WAIT`]) for the server to exit; its exit code, or 128 + signal.
    pub fn wait_exit(&mut self) -> i32 {
        use std::os::unix::process::ExitStatusExt;
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
            }
            assert!(std::time::Instant::now() < deadline, "ftserver did not exit");
            // Drain the log meanwhile, blocking briefly: the pipe closing ends the wait early.
            let _ = self.log.recv_timeout(Duration::from_millis(20));
        }
    }
}

impl Drop for RealServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The user id of `nobody`, whom [`RealServer::start_unprivileged`] runs the server as under root.
pub const NOBODY: u32 = 65534;

/// Whether the tests run as root (as CI does): file permissions do not bind root.
pub fn is_root() -> bool {
    // SAFETY: geteuid only reads the process's effective user id.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `ftclient --port PORT ARGS...` in `cwd` and returns (exit code, stdout, stderr).
pub fn ftclient(cwd: &Path, port: u16, args: &[&str], stdin: &[u8]) -> (i32, Vec<u8>, String) {
    let mut child = Command::new(bin("ftclient"))
        .args(["--port", &port.to_string(), "--timeout", "20s"])
        .args(args)
        .current_dir(cwd)
        .env_remove("FT_HOST")
        .env_remove("FT_PORT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Closes a socket with RST instead of FIN, as a crashed or killed peer does.
pub fn reset(stream: TcpStream) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt reads `linger` for the size given; the fd is open.
    unsafe {
        use std::os::fd::AsRawFd;
        let size = std::mem::size_of::<libc::linger>() as libc::socklen_t;
        libc::setsockopt(stream.as_raw_fd(), libc::SOL_SOCKET, libc::SO_LINGER, (&raw const linger).cast(), size);
    }
    drop(stream);
}

/// A one-connection fake server: reads one request line, answers `reply` verbatim, closes.
pub fn fake_server(reply: Vec<u8>) -> (SocketAddr, JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let request = next_request(&mut BufReader::new(&stream));
        (&stream).write_all(&reply).unwrap();
        request
    });
    (addr, handle)
}

/// Runs `f` on a thread in a network namespace of its own, whose loopback interface also has the
/// addresses 10.77.0.1 and 10.77.0.2: a server there bound to 10.77.0.1 sees its peers come from
/// an address that is not loopback. Everything `f` creates (sockets, threads) lives in that
/// namespace, which is gone once they are. Making one needs root (CI runs as root): for another
/// user this says so on stderr and returns `None` without running `f`.
pub fn in_private_net<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    // SAFETY: geteuid only reads the process's effective user id.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: a private network namespace needs root");
        return None;
    }
    thread::spawn(move || {
        // SAFETY: unshare only changes this thread's network namespace.
        let unshared = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(unshared, 0, "unshare(CLONE_NEWNET) failed (needs root): {}", std::io::Error::last_os_error());
        for args in [
            &["link", "set", "lo", "up"][..],
            &["addr", "add", "10.77.0.1/32", "dev", "lo"],
            &["addr", "add", "10.77.0.2/32", "dev", "lo"],
        ] {
            let status = Command::new("ip").args(args).status().expect("the ip command (iproute2)");
            assert!(status.success(), "ip {args:?}");
        }
        f()
    })
    .join()
    .map(Some)
    .unwrap()
}

/// A file's modification time as a `get` header gives it: ` mtime=<seconds> mtime_ns=<ns>`.
pub fn mtime_fields(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(path).unwrap();
    format!(" mtime={} mtime_ns={}", meta.mtime(), meta.mtime_nsec())
}

/// A fake server's read of the next request line ("" once the client has closed). A `hello`
/// (which a client sends first, pipelined with its first request) is answered granting no
/// features, so replies canned in the baseline format stay valid, and the line after it is
/// returned.
pub fn next_request(reader: &mut BufReader<&TcpStream>) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    if line.starts_with("hello ") {
        let mut stream: &TcpStream = reader.get_ref();
        stream.write_all(b"OK 1 features=\n").unwrap();
        line.clear();
        reader.read_line(&mut line).unwrap();
    }
    line
}

/// A TCP forwarder to `target` for up to `conns` connections, one at a time: the first is cut
/// once `cut_after` bytes have passed (both ways together), as a crashed server or a broken
/// network would cut it; the others carry everything.
pub fn cutting_forwarder(target: SocketAddr, cut_after: usize, conns: usize) -> SocketAddr {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for n in 0..conns {
            let Ok((client, _)) = listener.accept() else { return };
            let upstream = TcpStream::connect(target).unwrap();
            let limit = if n == 0 { cut_after } else { usize::MAX };
            let carried = Arc::new(AtomicUsize::new(0));
            // Copies one way until the end, an error or the limit, then cuts both sockets.
            let pipe = move |mut from: TcpStream, mut to: TcpStream, carried: Arc<AtomicUsize>| {
                let mut buf = [0u8; 16 << 10];
                while let Ok(got) = from.read(&mut buf) {
                    let before = carried.fetch_add(got, Ordering::SeqCst);
                    let got = got.min(limit.saturating_sub(before));
                    if got == 0 || to.write_all(&buf[..got]).is_err() {
                        break;
                    }
                }
                let _ = from.shutdown(std::net::Shutdown::Both);
                let _ = to.shutdown(std::net::Shutdown::Both);
            };
            let (c2, u2, k2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap(), carried.clone());
            let up = thread::spawn(move || pipe(c2, u2, k2));
            pipe(upstream, client, carried);
            let _ = up.join();
        }
    });
    addr
}

/// A forwarder to `target` for one connection that keeps what the client sent.
pub fn recording_forwarder(target: SocketAddr) -> (SocketAddr, JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = thread::spawn(move || {
        let (client, _) = listener.accept().unwrap();
        let upstream = TcpStream::connect(target).unwrap();
        let (mut from_server, mut to_client) = (upstream.try_clone().unwrap(), client.try_clone().unwrap());
        let back = thread::spawn(move || {
            let _ = std::io::copy(&mut from_server, &mut to_client);
            let _ = to_client.shutdown(std::net::Shutdown::Both);
        });
        let (mut from_client, mut to_server) = (client, upstream);
        let mut sent = Vec::new();
        let mut buf = [0u8; 16 << 10];
        while let Ok(n @ 1..) = from_client.read(&mut buf) {
            sent.extend_from_slice(&buf[..n]);
            if to_server.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to_server.shutdown(std::net::Shutdown::Write);
        let _ = back.join();
        sent
    });
    (addr, handle)
}

/// A server that agrees to `features` in reply to `hello`, then answers each request with the
/// next of `replies`, once `body` has read what follows the request's line (a signature, a
/// patch's records); serves one connection until the client is done and reports the request
/// lines.
pub fn fake_speaker(
    features: &'static str,
    replies: Vec<Vec<u8>>,
    body: impl Fn(&str, &mut BufReader<&TcpStream>) + Send + 'static,
) -> (SocketAddr, JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut reader = BufReader::new(&stream);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with("hello "), "{line}");
        (&stream).write_all(format!("OK 2 features={features}\n").as_bytes()).unwrap();
        let mut lines = String::new();
        for reply in replies {
            line.clear();
            if reader.read_line(&mut line).unwrap() == 0 {
                break;
            }
            body(&line, &mut reader);
            (&stream).write_all(&reply).unwrap();
            lines.push_str(&line);
        }
        let _ = reader.read_to_end(&mut Vec::new());
        lines
    });
    (addr, handle)
}
