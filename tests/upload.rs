//! Uploads (`put`) on the wire: off by default, who may upload, size and digest checks, names,
//! and nothing written through a symlink or left half-written.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use ft::digest::Digest;
use ft::server::Config;
use ft::server::auth::{self, Rights};

use crate::util::{Dirs, TestServer, pattern};

/// The request line for storing `bytes` as `name`, with a fixed old modification time.
fn put_line(name: &str, bytes: &[u8]) -> String {
    format!("put {} {} 1000000000 7 {name}\n", bytes.len(), Digest::of(bytes))
}

fn taking_uploads(dirs: &Dirs, tweak: impl FnOnce(Config) -> Config) -> TestServer {
    TestServer::start(tweak(Config { allow_upload: true, ..dirs.config() }))
}

/// Everything beneath `dir`, as sorted relative paths.
fn tree(dir: &std::path::Path) -> Vec<String> {
    let mut all = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            all.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    all.sort();
    all
}

#[test]
fn a_put_lands_whole_pipelined_and_is_served_back() {
    let dirs = Dirs::new();
    let server = taking_uploads(&dirs, |c| c);
    let data = pattern(3 << 20);
    let mut w = server.connect();
    w.send("hello 1 put\n");
    assert_eq!(w.line(), "OK 1 features=put");
    w.send(put_line("up/new.bin", &data)).send(&data).send(put_line("small.sh", b"#!/bin/sh\n")).send(b"#!/bin/sh\n");
    assert_eq!(w.line(), format!("OK {} xxh3={}", data.len(), Digest::of(&data)));
    assert_eq!(w.line(), format!("OK 10 xxh3={}", Digest::of(b"#!/bin/sh\n")));
    let path = dirs.root.path().join("up/new.bin");
    assert!(fs::read(&path).unwrap() == data);
    let meta = fs::metadata(dirs.root.path().join("small.sh")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o644, "never executable");
    assert_eq!((meta.mtime(), meta.mtime_nsec()), (1_000_000_000, 7));
    assert!(w.get("up/new.bin") == data);
    assert_eq!((server.stat("uploads"), server.stat("bytes_received")), (2, data.len() as u64 + 10));
}

#[test]
fn a_refusal_after_the_body_keeps_the_connection_in_step_and_stores_nothing() {
    let dirs = Dirs::new();
    dirs.put("taken.txt", b"mine");
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), dirs.root.path().join("out")).unwrap();
    let server = taking_uploads(&dirs, |c| c);
    let mut w = server.connect();
    // A name that is taken; a body that does not match its digest; a folder that is a symlink.
    w.send(put_line("taken.txt", b"theirs")).send(b"theirs");
    w.send(format!("put 5 {} 0 0 lie.txt\n", Digest::of(b"other"))).send(b"bytes");
    w.send(put_line("out/evil.txt", b"evil")).send(b"evil");
    assert_eq!(w.line(), "ERR exists taken.txt already exists");
    assert!(w.line().starts_with("ERR bad-request lie.txt: the bytes received have digest "));
    assert_eq!(w.line(), "ERR denied out/evil.txt: out is not a folder (or is a symlink)");
    assert_eq!(w.get("taken.txt"), b"mine");
    assert_eq!(tree(dirs.root.path()), ["out", "taken.txt"]);
    assert!(tree(outside.path()).is_empty());
    assert_eq!(server.stat("uploads"), 0);
}

#[test]
fn a_refusal_before_the_body_is_read_closes_the_connection_after_saying_why() {
    let dirs = Dirs::new();
    let cases: [(&str, bool, u64, String, &str); 4] = [
        ("uploads off", false, 1 << 20, put_line("a.txt", b"hello"), "ERR denied this server takes no uploads"),
        ("too big", true, 4, put_line("a.txt", b"hello"), "ERR too-big 5 bytes is more than this server takes (4)"),
        ("unreadable put line", true, 1 << 20, "put five bytes a.txt\n".into(), "ERR bad-request usage: put SIZE"),
        ("a name that climbs out", true, 1 << 20, put_line("../a.txt", b"hello"), "ERR bad-name "),
    ];
    for (what, allow_upload, max_upload, line, reply) in cases {
        let server = TestServer::start(Config { allow_upload, max_upload, ..dirs.config() });
        let mut w = server.connect();
        // The body follows at once, as a pipelining client sends it: it is never taken for requests.
        w.send(line).send("hello\nstats\n");
        let got = w.line();
        assert!(got.starts_with(reply), "{what}: {got}");
        assert!(w.closed(), "{what}");
        assert!(tree(dirs.root.path()).is_empty(), "{what}");
    }
}

#[test]
fn with_an_auth_file_only_a_token_with_the_write_right_uploads() {
    let dirs = Dirs::new();
    let path = dirs.keys.path().join("tokens");
    let reader = auth::add(&path, "reader", Rights { read: true, write: false }).unwrap();
    let writer = auth::add(&path, "writer", Rights { read: true, write: true }).unwrap();
    let server = taking_uploads(&dirs, |c| Config { auth_file: Some(path), ..c });
    let mut w = server.connect();
    w.send(format!("auth {}\n", reader.expose())).send(put_line("a.txt", b"hello")).send(b"hello");
    assert_eq!(w.line(), "OK rights=read");
    assert_eq!(w.line(), "ERR unauthorized this token may not upload (ftserver token add NAME --write)");
    assert!(w.closed());
    let mut w = server.connect();
    w.send(format!("auth {}\n", writer.expose())).send(put_line("a.txt", b"hello")).send(b"hello");
    assert_eq!(w.line(), "OK rights=read,write");
    assert_eq!(w.line(), format!("OK 5 xxh3={}", Digest::of(b"hello")));
    assert_eq!(fs::read(dirs.root.path().join("a.txt")).unwrap(), b"hello");
}

#[test]
fn a_sender_that_stops_half_way_leaves_nothing() {
    let dirs = Dirs::new();
    let server = taking_uploads(&dirs, |c| c);
    let data = pattern(1 << 20);
    let mut w = server.connect();
    w.send(put_line("half.bin", &data)).send(&data[..data.len() / 2]);
    w.stream.flush().unwrap();
    w.stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(w.closed());
    server.wait_connections(0);
    assert!(tree(dirs.root.path()).is_empty(), "{:?}", tree(dirs.root.path()));
}

#[test]
fn without_an_auth_file_a_peer_off_loopback_cannot_upload() {
    crate::util::in_private_net(|| {
        let dirs = Dirs::new();
        let config = Config { allow_upload: true, allow_anonymous: true, allow_plaintext: true, ..dirs.config() };
        let server = TestServer::start_on(config, "10.77.0.1:0");
        let mut w = crate::util::Wire::connect(server.addr);
        w.send(put_line("a.txt", b"hello")).send(b"hello");
        assert_eq!(w.line(), "ERR unauthorized without an auth file, uploads are taken from this machine only");
        assert!(w.closed());
        assert!(tree(dirs.root.path()).is_empty());
    });
}
