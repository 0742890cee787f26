//! Behind a load balancer: the PROXY protocol (v1 and v2) from trusted proxies only, the real
//! client's address used for limits and logs, and the bytes behind the header kept.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;

use ft::server::Config;

use crate::util::{Dirs, RealServer, TestServer};

fn behind_proxy(dirs: &Dirs, tweak: impl FnOnce(Config) -> Config) -> TestServer {
    TestServer::start(tweak(Config {
        proxy_protocol: true,
        trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()],
        allow_plaintext: true,
        allow_anonymous: true,
        ..dirs.config()
    }))
}

fn v1(client: &str) -> String {
    format!("PROXY TCP4 {client} 198.51.100.1 40000 9000\r\n")
}

/// A version 2 header for a TCP over IPv4 client.
fn v2(client: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend([0x21, 0x11, 0, 12]);
    h.extend(client);
    h.extend([198, 51, 100, 1]);
    h.extend(port.to_be_bytes());
    h.extend(9000u16.to_be_bytes());
    h
}

#[test]
fn a_header_from_a_trusted_proxy_names_the_client_and_what_follows_it_is_kept() {
    let dirs = Dirs::new();
    dirs.put("a.txt", b"hello");
    let server = behind_proxy(&dirs, |c| c);
    // The header and the first request in one write; both versions.
    let mut w = server.connect();
    w.send(format!("{}get a.txt\n", v1("203.0.113.7")));
    assert!(w.line().starts_with("OK 5 "));
    let mut w = server.connect();
    let mut first = v2([203, 0, 113, 8], 41000);
    first.extend(b"get a.txt\n");
    w.send(first);
    assert!(w.line().starts_with("OK 5 "));
    // A header in pieces is waited for.
    let mut w = server.connect();
    let header = v1("203.0.113.9");
    w.send(&header[..10]).send(&header[10..]).send("get a.txt\n");
    assert!(w.line().starts_with("OK 5 "));
    // A proxy's own connection (v2 LOCAL, v1 UNKNOWN) is answered health, and nothing else: no
    // client's rights are the proxy's (not even this machine's, which the proxy is).
    let mut local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    local.extend([0x20, 0x00, 0, 0]);
    for header in [local, b"PROXY UNKNOWN\r\n".to_vec()] {
        let mut w = server.connect();
        w.send(&header).send("health\n");
        assert_eq!(w.line(), "OK ready");
        w.send("get a.txt\n");
        assert_eq!(w.line(), "ERR denied a proxy's own connection (PROXY LOCAL or UNKNOWN) is answered health only");
        assert!(w.closed());
        let mut w = server.connect();
        w.send(&header).send("put 2 - 1 0 0 new b.txt\nhi");
        assert!(w.line().starts_with("ERR denied a proxy's own"), "no upload as this machine");
    }
    assert!(!dirs.root.path().join("b.txt").exists());
}

#[test]
fn behind_a_proxy_a_server_without_tokens_starts_only_when_told_anyone_may_read() {
    let dirs = Dirs::new();
    let config =
        Config { proxy_protocol: true, trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()], ..dirs.config() };
    let server = ft::server::Server::new(config).unwrap();
    let refused = server.may_listen_on("127.0.0.1:9000".parse().unwrap()).unwrap_err().to_string();
    assert!(
        refused.contains("behind a proxy (--proxy-protocol), clients reach 127.0.0.1:9000 from other machines"),
        "{refused}"
    );
    assert!(refused.contains("--allow-anonymous"), "{refused}");
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(work.path().join("server_downloads")).unwrap();
    let out = std::process::Command::new(crate::util::bin("ftserver"))
        .args(["--port", "0", "--proxy-protocol", "--trusted-proxy", "127.0.0.1"])
        .current_dir(work.path())
        .env("XDG_CONFIG_HOME", work.path().join(".config"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("behind a proxy"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn limits_count_the_client_behind_the_proxy_not_the_proxy() {
    let dirs = Dirs::new();
    let server = behind_proxy(&dirs, |c| Config { max_conns_per_addr: 1, ..c });
    let mut a = server.connect();
    a.send(v1("203.0.113.7")).sync();
    // Another client through the same proxy is served; the same client again is not.
    let mut b = server.connect();
    b.send(v1("203.0.113.8")).sync();
    let mut c = server.connect();
    c.send(v1("203.0.113.7")).send("stats\n");
    assert_eq!(c.line(), "ERR busy too many connections from your address; try again later");
    assert_eq!(server.stat("connections_refused_per_addr"), 1);
}

#[test]
fn a_header_is_refused_from_anyone_else_and_required_from_the_proxy() {
    let dirs = Dirs::new();
    // Only 10.0.0.0/8 is trusted: a header from loopback is a client claiming an address.
    let server = behind_proxy(&dirs, |c| Config { trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()], ..c });
    let mut w = server.connect();
    w.send(format!("{}stats\n", v1("203.0.113.7")));
    assert_eq!(w.line(), "ERR denied PROXY headers are taken from trusted proxies only");
    assert!(w.closed());
    // Without a header, a peer that is not a proxy is served as itself.
    assert!(server.connect().send("stats\n").line().starts_with("OK "));
    // From a trusted proxy, something that is not a header is refused.
    let server = behind_proxy(&dirs, |c| c);
    let mut w = server.connect();
    w.send("stats\nstats\nstats\n");
    assert!(w.line().starts_with("ERR bad-request a trusted proxy sent no PROXY header"), "refused");
    assert!(w.closed());
}

/// A one-connection TCP forwarder that sends `header` to `target` first, as HAProxy's
/// `send-proxy` does, then carries bytes both ways.
fn forwarder(target: SocketAddr, header: Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let (client, _) = listener.accept().unwrap();
        let mut upstream = TcpStream::connect(target).unwrap();
        upstream.write_all(&header).unwrap();
        let (mut c2, mut u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
        let up = thread::spawn(move || {
            let _ = std::io::copy(&mut c2, &mut u2);
            let _ = u2.shutdown(std::net::Shutdown::Write);
        });
        let (mut client, mut upstream) = (client, upstream);
        let mut buf = [0u8; 64 << 10];
        while let Ok(n) = upstream.read(&mut buf) {
            if n == 0 || client.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = client.shutdown(std::net::Shutdown::Write);
        let _ = up.join();
    });
    addr
}

#[test]
fn tls_through_a_proxy_works_and_the_server_logs_the_client() {
    let work = tempfile::tempdir().unwrap();
    crate::util::put(&work.path().join("server_downloads"), "docs/a.txt", b"through the proxy");
    let mut server = RealServer::start_logging(
        work.path(),
        &["--proxy-protocol", "--trusted-proxy", "127.0.0.1", "--allow-anonymous"],
        "debug",
    );
    let target: SocketAddr = format!("127.0.0.1:{}", server.port).parse().unwrap();
    let via = forwarder(target, v2([203, 0, 113, 50], 50123));
    let fingerprint = server.listening.split("fingerprint=").nth(1).unwrap().split_whitespace().next().unwrap();
    let out = std::process::Command::new(crate::util::bin("ftclient"))
        .args(["--port", &via.port().to_string(), "--tls", "--fingerprint", fingerprint])
        .args(["get", "docs/a.txt", "-o", "-"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"through the proxy");
    let line = server.wait_log("through a trusted proxy");
    assert!(line.contains("client=203.0.113.50:50123"), "{line}");
    let closed = server.wait_log("closed");
    assert!(closed.contains("peer=203.0.113.50:50123"), "{closed}");
}

#[test]
fn health_says_ready_without_a_token_and_draining_while_the_server_still_serves() {
    let dirs = Dirs::new();
    dirs.put("a.txt", b"hello");
    let path = dirs.keys.path().join("tokens");
    ft::server::auth::add(&path, "reader", ft::server::auth::Rights { read: true, write: false }).unwrap();
    let server = behind_proxy(&dirs, |c| Config { auth_file: Some(path), ..c });
    // A load balancer's check: through the proxy as itself (LOCAL), no token, CRLF as HAProxy sends.
    let mut local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    local.extend([0x20, 0x00, 0, 0]);
    let mut w = server.connect();
    w.send(&local).send("health\r\n");
    assert_eq!(w.line(), "OK ready");
    assert!(w.send("list\n").line().starts_with("ERR denied"), "nothing else");
    let mut client = server.connect();
    client.send(v1("203.0.113.5")).send("list\n");
    assert!(client.line().starts_with("ERR unauthorized"), "a client needs a token");
    // Draining: the check fails at once, and clients are still served until the delay is over.
    let mut w = server.connect();
    w.send(&local).send("health\n");
    assert_eq!(w.line(), "OK ready");
    server.drain(std::time::Duration::from_secs(30));
    assert_eq!(w.send("health\n").line(), "ERR draining shutting down: no new clients");
    assert!(w.closed(), "closed at once, so a check waiting for more fails now");
    let mut fresh = server.connect();
    fresh.send(&local).send("health\n");
    assert_eq!(fresh.line(), "ERR draining shutting down: no new clients", "a new connection is still accepted");
}

#[test]
fn failed_tokens_slow_and_cut_off_the_client_behind_the_proxy_not_the_proxy() {
    let dirs = Dirs::new();
    let path = dirs.keys.path().join("tokens");
    let token = ft::server::auth::add(&path, "reader", ft::server::auth::Rights { read: true, write: false }).unwrap();
    let server =
        behind_proxy(&dirs, |c| Config { auth_file: Some(path), auth_delay: std::time::Duration::from_millis(1), ..c });
    // One client guesses until it is cut off...
    let mut guesser = server.connect();
    guesser.send(v1("203.0.113.66"));
    let mut cut = false;
    for _ in 0..ft::server::auth::CUT_AFTER + 1 {
        let reply = guesser.send("auth ft_wrong_token_000000000000000000000000\n").line();
        assert!(reply.starts_with("ERR unauthorized"), "{reply}");
        if reply.contains("too many failed attempts") {
            cut = true;
            break;
        }
    }
    assert!(cut && guesser.closed(), "never cut off");
    // ... and so is its address on a new connection through the proxy,
    let mut again = server.connect();
    again.send(v1("203.0.113.66")).send("stats\n");
    assert!(again.line().starts_with("ERR unauthorized too many failed attempts"));
    // while another client through the same proxy is not.
    let mut other = server.connect();
    other.send(v1("203.0.113.67")).send(format!("auth {}\n", token.expose()));
    assert!(other.line().starts_with("OK rights="));
}
