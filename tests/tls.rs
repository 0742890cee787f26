//! TLS: the server's identity, the client's trust in it (known hosts, pinning, a changed key),
//! plain text refused off loopback, and hostile handshakes.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ft::client::trust::{TlsMode, TlsOptions, Trust};
use ft::client::{Client, ClientError, OutDir};
use ft::digest::Digest;
use ft::name::Name;
use ft::server::Config;
use ft::server::auth::{self, Rights};
use ft::wire::Secret;

use crate::util::{Dirs, TestServer, WAIT, Wire, in_private_net, pattern};

fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
}

fn started(dirs: &Dirs) -> TestServer {
    TestServer::start(Config { cache_size: 1 << 20, ..dirs.config() })
}

#[test]
fn list_and_get_go_over_tls_from_memory_and_from_disk() {
    let dirs = Dirs::new();
    let small = pattern(100_000);
    let big = pattern(6 << 20);
    dirs.put("small.bin", &small);
    dirs.put("docs/big.bin", &big);
    let server = started(&dirs);
    let mut client = server.tls_client();
    let listed: Vec<String> = client.list(None).unwrap().into_iter().map(|e| e.name.to_string()).collect();
    assert_eq!(listed, ["docs/big.bin", "small.bin"]);
    let out = tempfile::tempdir().unwrap();
    let dir = OutDir::create(out.path()).unwrap();
    // Twice each: the first big one streamed with a trailer, then with the digest remembered;
    // the small one read from disk, then a cache hit.
    for _ in 0..2 {
        for (n, data) in [("small.bin", &small), ("docs/big.bin", &big)] {
            let done = client.download(&name(n), &dir, false).unwrap();
            assert_eq!(done.digest, Digest::of(data));
            assert!(fs::read(out.path().join(n)).unwrap() == *data, "{n}");
            fs::remove_file(out.path().join(n)).unwrap();
        }
    }
    let mut buf = Vec::new();
    assert_eq!(client.get(&name("docs/big.bin"), &mut buf).unwrap(), big.len() as u64);
    assert!(buf == big);
    client.quit().unwrap();
    assert_eq!(server.stat("cache_hits"), 1);
}

#[test]
fn an_unknown_server_is_refused_unless_accepted_and_then_remembered() {
    let dirs = Dirs::new();
    dirs.put("a.txt", b"a");
    let server = started(&dirs);
    let keys = tempfile::tempdir().unwrap();
    let known_hosts = keys.path().join("known_hosts");
    let options = |accept_new| TlsOptions {
        mode: TlsMode::Always,
        trust: Trust { known_hosts: Some(known_hosts.clone()), accept_new, ..Trust::default() },
    };
    let addr = server.addr.to_string();
    match Client::connect_with(&addr, WAIT, &options(false)) {
        Err(ClientError::UnknownHost { fingerprint, .. }) => assert_eq!(*fingerprint, server.server.fingerprint()),
        other => panic!("{:?}", other.map(|_| ())),
    }
    assert!(!known_hosts.exists(), "nothing recorded for a refused server");
    let mut client = Client::connect_with(&addr, WAIT, &options(true)).unwrap();
    assert_eq!(client.list(None).unwrap().len(), 1);
    let recorded = fs::read_to_string(&known_hosts).unwrap();
    assert_eq!(recorded, format!("{addr} {}\n", server.server.fingerprint()));
    // Known now: trusted without --accept-new, and recorded once.
    let mut client = Client::connect_with(&addr, WAIT, &options(false)).unwrap();
    assert_eq!(client.list(None).unwrap().len(), 1);
    Client::connect_with(&addr, WAIT, &options(true)).unwrap();
    assert_eq!(fs::read_to_string(&known_hosts).unwrap(), recorded);
}

#[test]
fn a_server_with_another_key_is_refused_loudly_and_nothing_is_saved() {
    // The real server, whose key the client knows, and an impostor with a key of its own.
    let dirs = Dirs::new();
    dirs.put("a.txt", b"real");
    let real = started(&dirs);
    let other = Dirs::new();
    other.put("a.txt", b"fake");
    let impostor = started(&other);
    assert_ne!(real.server.fingerprint(), impostor.server.fingerprint());
    let keys = tempfile::tempdir().unwrap();
    let known_hosts = keys.path().join("known_hosts");
    // The impostor answers at the address recorded for the real server.
    let addr = impostor.addr.to_string();
    fs::write(&known_hosts, format!("# ft\n{addr} {}\n", real.server.fingerprint())).unwrap();
    let out = tempfile::tempdir().unwrap();
    let options = |pinned, accept_new| TlsOptions {
        mode: TlsMode::Always,
        trust: Trust { known_hosts: Some(known_hosts.clone()), accept_new, pinned, ..Trust::default() },
    };
    // --accept-new never accepts a changed key.
    match Client::connect_with(&addr, WAIT, &options(None, true)) {
        Err(ClientError::HostKeyChanged(m)) => {
            assert_eq!((m.expected, m.actual, m.line), (real.server.fingerprint(), impostor.server.fingerprint(), 2));
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    // Nor does pinning the impostor's own key get past the line on record.
    match Client::connect_with(&addr, WAIT, &options(Some(impostor.server.fingerprint()), false)) {
        Err(ClientError::HostKeyChanged(_)) => {}
        other => panic!("{:?}", other.map(|_| ())),
    }
    // With no line on record, a pinned fingerprint lets no other key through.
    fs::write(&known_hosts, "").unwrap();
    match Client::connect_with(&addr, WAIT, &options(Some(real.server.fingerprint()), false)) {
        Err(ClientError::NotPinned(m)) => assert_eq!(m.actual, impostor.server.fingerprint()),
        other => panic!("{:?}", other.map(|_| ())),
    }
    assert_eq!(fs::read_dir(out.path()).unwrap().count(), 0, "nothing saved");
    assert_eq!(fs::read_to_string(&known_hosts).unwrap(), "", "nothing recorded");
    assert_eq!(impostor.stat("requests"), 0, "not a request reached the impostor");
}

#[test]
fn garbage_or_a_stalled_handshake_ends_that_connection_only() {
    let dirs = Dirs::new();
    dirs.put("a.txt", b"a");
    let server = TestServer::start(Config { request_timeout: Duration::from_millis(500), ..dirs.config() });
    // A record header that says handshake, then nonsense.
    let mut garbage = TcpStream::connect(server.addr).unwrap();
    garbage.set_read_timeout(Some(WAIT)).unwrap();
    garbage.write_all(b"\x16\x03\x01\x00\x05hello, not TLS at all\n").unwrap();
    let mut answer = Vec::new();
    let _ = garbage.read_to_end(&mut answer);
    assert!(!answer.windows(2).any(|w| w == b"OK"), "no reply in plain text: {answer:?}");
    // A handshake begun and never finished is cut off at the request timeout.
    let started = Instant::now();
    let mut stalled = TcpStream::connect(server.addr).unwrap();
    stalled.set_read_timeout(Some(WAIT)).unwrap();
    stalled.write_all(b"\x16\x03\x01").unwrap();
    let _ = stalled.read_to_end(&mut Vec::new());
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(400) && took < Duration::from_secs(5), "cut after {took:?}");
    // Everyone else is served, in plain text and in TLS.
    assert_eq!(server.connect().get("a.txt"), b"a");
    let mut buf = Vec::new();
    server.tls_client().get(&name("a.txt"), &mut buf).unwrap();
    assert_eq!(buf, b"a");
}

#[test]
fn off_loopback_only_tls_is_spoken_unless_plain_text_is_asked_for_on_both_sides() {
    in_private_net(|| {
        let dirs = Dirs::new();
        dirs.put("a.txt", b"secret");
        let config = Config { allow_anonymous: true, ..dirs.config() };
        let server = TestServer::start_on(config.clone(), "10.77.0.1:0");
        let addr = server.addr.to_string();
        // A plain-text client is told why it is refused.
        let mut plain = Wire::connect(server.addr);
        plain.send("get a.txt\n");
        let refusal = plain.line();
        assert!(refusal.starts_with("ERR denied plain text is served only to this machine"), "{refusal}");
        assert!(plain.closed());
        // But for a load balancer's check, which carries nothing.
        let mut check = Wire::connect(server.addr);
        assert_eq!(check.send("health\r\n").line(), "OK ready");
        assert!(check.send("list\n").line().starts_with("ERR denied plain text"));
        assert!(check.closed());
        // ftclient's default speaks TLS to a host that is not loopback; asked for plain text, it
        // is refused, and it never falls back.
        let mut client =
            Client::connect_with(&addr, WAIT, &TlsOptions { trust: server.pinned().trust, ..TlsOptions::default() })
                .unwrap();
        let mut buf = Vec::new();
        client.get(&name("a.txt"), &mut buf).unwrap();
        assert_eq!(buf, b"secret");
        let plaintext = TlsOptions { mode: TlsMode::Never, ..TlsOptions::default() };
        let mut client = Client::connect_with(&addr, WAIT, &plaintext).unwrap();
        match client.get(&name("a.txt"), &mut Vec::new()) {
            Err(ClientError::Server(reply)) => assert_eq!(reply.code, "denied"),
            other => panic!("{other:?}"),
        }
        // A server that allows plain text from anywhere serves it.
        let open = TestServer::start_on(Config { allow_plaintext: true, ..config }, "10.77.0.1:0");
        assert_eq!(Wire::connect(open.addr).get("a.txt"), b"secret");
    });
}

/// A server requiring tokens from an auth file in `dirs.keys`, with `tokens` added to it
/// (name, write right); returns it with the tokens' secrets.
fn with_tokens(
    dirs: &Dirs,
    tokens: &[(&str, bool)],
    tweak: impl FnOnce(Config) -> Config,
) -> (TestServer, Vec<Secret>) {
    let path = dirs.keys.path().join("tokens");
    let secrets = tokens
        .iter()
        .map(|(name, write)| auth::add(&path, name, Rights { read: true, write: *write }).unwrap())
        .collect();
    let server = TestServer::start(tweak(Config { auth_file: Some(path), ..dirs.config() }));
    (server, secrets)
}

#[test]
fn with_an_auth_file_nothing_is_answered_before_a_valid_token() {
    let dirs = Dirs::new();
    dirs.put("a.txt", b"a");
    let (server, secrets) = with_tokens(&dirs, &[("alice", false), ("bob", true)], |c| c);
    let mut w = server.connect();
    w.send("hello 1\nlist\nget a.txt\nstats\n");
    assert_eq!(w.line(), "OK 1 features=");
    let needs =
        "ERR unauthorized this server needs a token (ftclient: FT_TOKEN or --token-file; on the wire: auth TOKEN)";
    for _ in 0..3 {
        assert_eq!(w.line(), needs);
    }
    // A put before a token is refused with its body skipped, never read as requests: a body of
    // auth lines costs no failed attempt.
    let body = format!("auth ft_00000000_{}\n", "A".repeat(43)).repeat(11);
    w.send(format!(
        "put {} - 1 0 0 new up.txt\n{body}xxh3={}\nstats\n",
        body.len(),
        ft::digest::Digest::of(body.as_bytes())
    ));
    assert_eq!(w.line(), needs);
    assert_eq!(w.line(), needs, "the next request is the next line after the body");
    assert_eq!(server.stat("auth_failed"), 0);
    // A wrong secret for a real token is named; garbage is not a token.
    let wrong = format!("{}{}", &secrets[0].expose()[..12], "A".repeat(43));
    w.send(format!("auth {wrong}\nauth hunter2\n"));
    assert_eq!(w.line(), "ERR unauthorized wrong secret for token \"alice\"");
    assert_eq!(w.line(), "ERR unauthorized that is not an ft token");
    w.send(format!("auth {}\n", secrets[0].expose()));
    assert_eq!(w.line(), "OK rights=read");
    assert_eq!(w.get("a.txt"), b"a");
    w.send("quit\n");
    assert_eq!(w.line(), "OK bye");
    // The client presents its token the same way, over TLS too; rights as granted.
    let mut client = server.tls_client();
    assert_eq!(client.authenticate(&secrets[1]).unwrap(), "read,write");
    assert_eq!(client.list(None).unwrap().len(), 1);
    let mut client = server.client();
    match client.list(None) {
        Err(ClientError::Server(reply)) => assert_eq!(reply.code, "unauthorized"),
        other => panic!("{other:?}"),
    }
    // Revoked while the server runs: refused from then on, on a connection that already
    // presented it too, from its next request.
    let mut session = server.connect();
    session.send(format!("auth {}\n", secrets[0].expose()));
    assert_eq!(session.line(), "OK rights=read");
    assert_eq!(session.get("a.txt"), b"a");
    auth::revoke(&dirs.keys.path().join("tokens"), "alice").unwrap();
    session.send("get a.txt\n");
    assert_eq!(session.line(), needs);
    let mut client = server.client();
    assert!(matches!(client.authenticate(&secrets[0]), Err(ClientError::Server(r)) if r.code == "unauthorized"));
    assert_eq!(server.stat("auth_failed"), 3);
}

#[test]
fn guessing_tokens_from_one_address_is_slowed_then_cut_off() {
    let dirs = Dirs::new();
    dirs.put("a.txt", b"a");
    let base = Duration::from_millis(20);
    let (server, secrets) = with_tokens(&dirs, &[("alice", false)], |c| Config { auth_delay: base, ..c });
    let guess = format!("auth ft_00000000_{}\n", "A".repeat(43));
    let mut w = server.connect();
    let mut took = Vec::new();
    for _ in 0..auth::CUT_AFTER - 1 {
        let started = Instant::now();
        w.send(&guess);
        assert_eq!(w.line(), "ERR unauthorized unknown token");
        took.push(started.elapsed());
    }
    let first_three: Duration = took[..3].iter().sum();
    assert!(first_three < base * 8, "the first few are not slowed: {took:?}");
    assert!(took[3] >= base && took[4] >= base * 2 && took[8] >= base * 32, "then slower each time: {took:?}");
    // The next failure cuts the address off: this connection, and the next ones, even with a
    // good token.
    w.send(&guess);
    assert_eq!(w.line(), "ERR unauthorized too many failed attempts from your address; try again later");
    assert!(w.closed());
    let mut again = server.connect();
    again.send("hello 2\n");
    assert_eq!(again.line(), "ERR unauthorized too many failed attempts from your address; try again later");
    assert!(again.closed());
    // A TLS client is told so inside TLS, plainly, even with a good token.
    let mut client = Client::connect_with(&server.addr.to_string(), WAIT, &server.pinned()).unwrap();
    match client.authenticate(&secrets[0]) {
        Err(ClientError::Server(reply)) => {
            assert_eq!(reply.kind(), Some(ft::wire::ErrorCode::Unauthorized));
            assert!(reply.message.contains("too many failed attempts"), "{reply}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(server.stat("auth_failed"), u64::from(auth::CUT_AFTER));
}

#[test]
fn an_auth_file_someone_else_could_replace_grants_nothing_at_start_or_on_reread() {
    use std::os::unix::fs::PermissionsExt;
    let dirs = Dirs::new();
    dirs.put("a.txt", b"a");
    let folder = dirs.keys.path().join("auth");
    let path = folder.join("tokens");
    let alice = auth::add(&path, "alice", Rights::READ).unwrap();
    let server = TestServer::start(Config { auth_file: Some(path.clone()), ..dirs.config() });
    assert_eq!(server.client().authenticate(&alice).unwrap(), "read");
    // The folder becomes writable by anyone, and someone puts their own file in its place.
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::rename(&path, folder.join("old")).unwrap();
    let mallory = auth::add(&path, "mallory", Rights { read: true, write: true }).unwrap();
    let mut client = server.client();
    assert!(matches!(client.authenticate(&mallory), Err(ClientError::Server(r)) if r.code == "unauthorized"));
    // And a server does not start on it.
    let refused = match ft::server::Server::new(Config { auth_file: Some(path.clone()), ..dirs.config() }) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("started on an auth file anyone could replace"),
    };
    assert!(refused.contains("may be written by others (mode 0777)") && refused.contains("StrictModes"), "{refused}");
}

#[test]
fn a_known_server_is_known_however_its_address_is_typed_and_an_impostor_is_refused() {
    let dirs = Dirs::new();
    dirs.put("a.txt", b"a");
    let server = TestServer::start_on(dirs.config(), "[::1]:0");
    let port = server.addr.port().to_string();
    let known = tempfile::tempdir().unwrap();
    let client = |host: &str, extra: &[&str]| {
        let out = std::process::Command::new(crate::util::bin("ftclient"))
            .args(["--host", host, "--port", &port, "--tls"])
            .args(extra)
            .args(["get", "a.txt", "-o", "-"])
            .env("FT_KNOWN_HOSTS", known.path().join("known_hosts"))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    assert_eq!(client("::1", &["--accept-new"]).0, Some(0));
    for same in ["[::1]", "0:0:0:0:0:0:0:1", "[0::1]", "[0:0::1]"] {
        let (code, err) = client(same, &[]);
        assert_eq!(code, Some(0), "{same}: known, not a new server: {err}");
    }
    // Another key on that address, reached by another spelling of it: refused, and not recorded.
    drop(server);
    let other = Dirs::new();
    other.put("a.txt", b"impostor");
    let _impostor = TestServer::start_on(other.config(), &format!("[::1]:{port}"));
    let (code, err) = client("[0::1]", &["--accept-new"]);
    assert_eq!(code, Some(7), "{err}");
    assert!(err.contains("REMOTE HOST IDENTIFICATION HAS CHANGED"), "{err}");
    let lines = std::fs::read_to_string(known.path().join("known_hosts")).unwrap();
    assert_eq!(lines.lines().count(), 1, "{lines}");
    assert!(lines.starts_with(&format!("[::1]:{port} ")), "{lines}");
}

#[test]
fn a_client_cut_off_for_failed_tokens_is_told_so_and_exits_8_even_with_a_good_token() {
    let dirs = Dirs::new();
    dirs.put("a.txt", b"a");
    let (server, secrets) =
        with_tokens(&dirs, &[("alice", false)], |c| Config { auth_delay: Duration::from_millis(1), ..c });
    let mut w = server.connect();
    for _ in 0..auth::CUT_AFTER {
        w.send(format!("auth ft_00000000_{}\n", "A".repeat(43)));
        assert!(w.line().starts_with("ERR unauthorized"));
    }
    let fingerprint = server.server.fingerprint().to_string();
    for transport in [&["--plaintext"][..], &["--tls", "--fingerprint", &fingerprint]] {
        let out = std::process::Command::new(crate::util::bin("ftclient"))
            .args(["--port", &server.addr.port().to_string()])
            .args(transport)
            .args(["list"])
            .env("FT_TOKEN", secrets[0].expose())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(8), "{transport:?}: {err}");
        assert!(err.contains("too many failed attempts from your address"), "{transport:?}: {err}");
    }
}

#[test]
fn a_token_is_never_sent_in_plain_text_off_the_machine() {
    in_private_net(|| {
        let dirs = Dirs::new();
        dirs.put("a.txt", b"a");
        let (server, secrets) = with_tokens(&dirs, &[("alice", false)], |c| Config { allow_plaintext: true, ..c });
        let server = {
            // The same files and tokens, listening where peers are not loopback.
            let config =
                Config { allow_plaintext: true, auth_file: Some(dirs.keys.path().join("tokens")), ..dirs.config() };
            drop(server);
            TestServer::start_on(config, "10.77.0.1:0")
        };
        let addr = server.addr.to_string();
        let plaintext = TlsOptions { mode: TlsMode::Never, ..TlsOptions::default() };
        let mut client = Client::connect_with(&addr, WAIT, &plaintext).unwrap();
        assert!(matches!(client.authenticate(&secrets[0]), Err(ClientError::TokenInPlainText { .. })));
        drop(client);
        // Over TLS it goes, and works.
        let mut client = Client::connect_with(&addr, WAIT, &server.pinned()).unwrap();
        assert_eq!(client.authenticate(&secrets[0]).unwrap(), "read");
        let mut buf = Vec::new();
        client.get(&name("a.txt"), &mut buf).unwrap();
        assert_eq!(buf, b"a");
        assert_eq!(server.stat("auth_failed"), 0);
        assert_eq!(server.stat("requests"), 2, "one auth and one get: the refused token never left");
    });
}

#[test]
fn the_raw_protocol_reads_the_same_over_tls() {
    let dirs = Dirs::new();
    dirs.put("a.txt", b"hello");
    dirs.put("sub/b.bin", &[0u8, 1, 2, 255]);
    let server = started(&dirs);
    let tcp = TcpStream::connect(server.addr).unwrap();
    let transport = ft::client::tls_handshake(&server.addr.to_string(), tcp, WAIT, &server.pinned().trust).unwrap();
    transport.tcp().set_read_timeout(Some(WAIT)).unwrap();
    let mut s = ft::transport::BufStream::new(transport, 4096, 4096);
    // Pipelined, in one write: every reply exactly as in plain text, in order.
    let digest = Digest::of(b"hello");
    s.write_all(format!("hello 1\nlist sub\nget a.txt\nresume 2 {} a.txt\nnope\nquit\n", Digest::of(b"he")).as_bytes())
        .unwrap();
    s.flush().unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let text = String::from_utf8_lossy(&all);
    let mtime = fs::metadata(dirs.root.path().join("sub/b.bin")).unwrap().modified().unwrap();
    let mtime = mtime.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let a = crate::util::mtime_fields(&dirs.root.path().join("a.txt"));
    let want = format!(
        "OK 1 features=\nOK 1\n4 {mtime} sub/b.bin\nOK 5 xxh3={digest} mode=644{a}\nhello\
         OK 3 offset=2 size=5 xxh3={digest} mode=644{a}\nllo\
         ERR unknown-command unknown command 'nope' (try list, walk, get NAME, resume, sum NAME, stat NAME, put, partial, mkdir, stats, health, auth, quit)\nOK bye\n"
    );
    assert_eq!(text, want);
}

#[test]
fn a_key_is_proven_by_the_handshake_not_just_shown() {
    // A server that shows the real server's certificate but holds another key: it cannot sign
    // the handshake with the real key, so a client that trusts that certificate still refuses.
    let dirs = Dirs::new();
    dirs.put("a.txt", b"a");
    let real = started(&dirs);
    let identity = fs::read(dirs.keys.path().join("identity.pem")).unwrap();
    use rustls::pki_types::pem::PemObject;
    let real_cert: Vec<_> =
        rustls::pki_types::CertificateDer::pem_slice_iter(&identity).map(|c| c.unwrap().into_owned()).collect();
    let other_key = rcgen::KeyPair::generate().unwrap();
    let other_key = rustls::pki_types::PrivateKeyDer::from_pem_slice(other_key.serialize_pem().as_bytes()).unwrap();
    let provider = ft::transport::tls_provider();
    let signer = provider.key_provider.load_private_key(other_key).unwrap();
    #[derive(Debug)]
    struct Impostor(Arc<rustls::sign::CertifiedKey>);
    impl rustls::server::ResolvesServerCert for Impostor {
        fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
            Some(self.0.clone())
        }
    }
    let resolver = Impostor(Arc::new(rustls::sign::CertifiedKey::new(real_cert, signer)));
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let impostor = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        let mut conn = rustls::ServerConnection::new(Arc::new(config)).unwrap();
        let mut tcp = &tcp;
        while conn.is_handshaking() {
            if conn.complete_io(&mut tcp).is_err() {
                return false;
            }
        }
        true
    });
    // Pinned to the real server's key, whose certificate the impostor shows.
    let pinned = TlsOptions {
        mode: TlsMode::Always,
        trust: Trust { pinned: Some(real.server.fingerprint()), ..Trust::default() },
    };
    match Client::connect_with(&addr.to_string(), WAIT, &pinned) {
        Err(ClientError::Tls { source, .. }) => assert!(source.to_string().contains("ignature"), "{source}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    assert!(!impostor.join().unwrap(), "the handshake never completed");
}

#[test]
fn a_server_off_loopback_that_answers_in_plain_text_is_never_spoken_to_in_plain_text() {
    in_private_net(|| {
        // Something at 10.77.0.1 that speaks only plain text (an old ft server, or an attacker
        // hoping for a downgrade): it records what it is sent.
        let listener = std::net::TcpListener::bind("10.77.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = std::thread::spawn(move || {
            let (mut tcp, _) = listener.accept().unwrap();
            tcp.set_read_timeout(Some(WAIT)).unwrap();
            tcp.write_all(b"OK 1 features=\n").unwrap();
            let mut got = Vec::new();
            let _ = tcp.read_to_end(&mut got);
            got
        });
        let err = Client::connect_with(&addr.to_string(), WAIT, &TlsOptions::default()).map(|_| ()).unwrap_err();
        assert!(matches!(err, ClientError::Tls { .. }), "{err:?}");
        assert!(err.to_string().contains("answered in plain text"), "{err}");
        let got = fake.join().unwrap();
        assert_eq!(got.first(), Some(&0x16), "only a TLS handshake was sent: {got:?}");
        assert!(!String::from_utf8_lossy(&got).contains("hello 1"), "no plain-text request");
    });
}
