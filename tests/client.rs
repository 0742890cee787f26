//! Library-client tests: `Client` and `OutDir` against the in-process server and fake servers.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use ft::client::{Client, ClientError, OutDir};
use ft::digest::Digest;
use ft::name::Name;

use crate::util::{Dirs, TestServer, WAIT, pattern};

fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
}

/// A one-connection fake server: reads one request line, answers `reply` verbatim, closes.
fn fake_server(reply: Vec<u8>) -> (SocketAddr, JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut request = String::new();
        BufReader::new(&stream).read_line(&mut request).unwrap();
        (&stream).write_all(&reply).unwrap();
        request
    });
    (addr, handle)
}

fn connect(addr: SocketAddr) -> Client {
    Client::connect(&addr.to_string(), Duration::from_secs(10)).unwrap()
}

#[test]
fn downloads_nested_and_unicode_names_into_the_output_folder() {
    let dirs = Dirs::new();
    dirs.put("docs/ünï côdé.txt", b"accents");
    dirs.put("top.bin", &pattern(200_000));
    let server = TestServer::start(dirs.config());
    let out = tempfile::tempdir().unwrap();
    let dir = OutDir::create(&out.path().join("new/folder")).unwrap();
    let mut client = server.client();
    let listed: Vec<String> = client.list(None).unwrap().into_iter().map(|e| e.name.to_string()).collect();
    assert_eq!(listed, ["docs/ünï côdé.txt", "top.bin"]);
    for n in &listed {
        client.download(&name(n), &dir, false).unwrap();
    }
    assert_eq!(fs::read(out.path().join("new/folder/docs/ünï côdé.txt")).unwrap(), b"accents");
    assert!(fs::read(out.path().join("new/folder/top.bin")).unwrap() == pattern(200_000));
    let mut buf = Vec::new();
    assert_eq!(client.get(&name("top.bin"), &mut buf).unwrap(), 200_000);
    assert!(buf == pattern(200_000));
    client.quit().unwrap();
}

#[test]
fn a_server_error_touches_no_file_and_keeps_the_connection() {
    let dirs = Dirs::new();
    dirs.put("there", b"yes");
    let server = TestServer::start(dirs.config());
    let out = tempfile::tempdir().unwrap();
    let dir = OutDir::create(out.path()).unwrap();
    let mut client = server.client();
    match client.download(&name("missing"), &dir, false) {
        Err(ClientError::Server(reply)) => assert_eq!(reply.code, "not-found"),
        other => panic!("{other:?}"),
    }
    assert_eq!(fs::read_dir(out.path()).unwrap().count(), 0);
    assert_eq!(client.download(&name("there"), &dir, false).unwrap().size, 3);
}

#[test]
fn a_local_write_error_is_reported_and_the_connection_stays_in_step() {
    let dirs = Dirs::new();
    dirs.put("x", &pattern(100_000));
    dirs.put("y", b"why");
    let server = TestServer::start(dirs.config());
    let out = tempfile::tempdir().unwrap();
    fs::create_dir(out.path().join("x")).unwrap(); // a folder where the file should go
    let dir = OutDir::create(out.path()).unwrap();
    let mut client = server.client();
    match client.download(&name("x"), &dir, false) {
        Err(ClientError::Local { path, .. }) => assert!(path.ends_with("x"), "{path:?}"),
        other => panic!("{other:?}"),
    }
    assert!(client.is_usable());
    assert_eq!(client.download(&name("y"), &dir, false).unwrap().size, 3);
    assert_eq!(fs::read(out.path().join("y")).unwrap(), b"why");
}

#[test]
fn a_server_that_closes_mid_body_leaves_no_final_file_and_the_old_copy_intact() {
    let mut reply = format!("OK 100 xxh3={}\n", Digest::of(&[b'z'; 100])).into_bytes();
    reply.extend_from_slice(&[b'z'; 10]);
    let (addr, fake) = fake_server(reply);
    let out = tempfile::tempdir().unwrap();
    fs::write(out.path().join("f.txt"), b"previous good copy").unwrap();
    let dir = OutDir::create(out.path()).unwrap();
    let mut client = connect(addr);
    match client.download(&name("f.txt"), &dir, false) {
        Err(ClientError::ShortBody { expected: 100, received: 10 }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.join().unwrap(), "get f.txt\n");
    assert!(!client.is_usable());
    assert_eq!(fs::read(out.path().join("f.txt")).unwrap(), b"previous good copy");
    assert_eq!(fs::read(out.path().join("f.txt.part")).unwrap().len(), 10, "partial bytes stay in .part");
}

#[test]
fn malformed_replies_are_errors_not_files() {
    for reply in [&b"OK -5\n"[..], b"OK 99999999999999999999\n", b"OK 0x10\n", b"HTTP/1.1 200 OK\r\n", b"OK", b""] {
        let (addr, fake) = fake_server(reply.to_vec());
        let out = tempfile::tempdir().unwrap();
        let dir = OutDir::create(out.path()).unwrap();
        let result = connect(addr).download(&name("f"), &dir, false);
        assert!(matches!(result, Err(ClientError::Protocol(_))), "{:?} -> {result:?}", String::from_utf8_lossy(reply));
        fake.join().unwrap();
        assert_eq!(fs::read_dir(out.path()).unwrap().count(), 0);
    }
}

#[test]
fn bytes_beyond_the_announced_size_are_not_written() {
    let (addr, fake) = fake_server(format!("OK 3 xxh3={}\nabcEXTRA", Digest::of(b"abc")).into_bytes());
    let out = tempfile::tempdir().unwrap();
    let dir = OutDir::create(out.path()).unwrap();
    connect(addr).download(&name("f"), &dir, false).unwrap();
    fake.join().unwrap();
    assert_eq!(fs::read(out.path().join("f")).unwrap(), b"abc");
}

#[test]
fn a_symlink_planted_in_the_output_folder_cannot_lead_a_download_outside() {
    let dirs = Dirs::new();
    dirs.put("docs/a.txt", b"payload");
    let server = TestServer::start(dirs.config());
    let out = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), out.path().join("docs")).unwrap();
    let dir = OutDir::create(out.path()).unwrap();
    let mut client = server.client();
    assert!(matches!(client.download(&name("docs/a.txt"), &dir, false), Err(ClientError::Local { .. })));
    assert_eq!(fs::read_dir(elsewhere.path()).unwrap().count(), 0, "nothing written outside");
    assert!(client.is_usable());
}
