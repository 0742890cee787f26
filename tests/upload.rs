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
    format!("put {} {} 1000000000 7 0 new {name}\n", bytes.len(), Digest::of(bytes))
}

fn taking_uploads(dirs: &Dirs, tweak: impl FnOnce(Config) -> Config) -> TestServer {
    TestServer::start(tweak(Config { allow_upload: true, ..dirs.config() }))
}

/// Everything beneath `dir` but the uploads' staging folder, as sorted relative paths.
fn tree(dir: &std::path::Path) -> Vec<String> {
    all(dir).into_iter().filter(|p| !p.starts_with(".ft-partial")).collect()
}

/// What the staging folder beneath `root` holds.
fn staged(root: &std::path::Path) -> Vec<String> {
    let dir = root.join(".ft-partial");
    if dir.exists() { all(&dir) } else { Vec::new() }
}

/// Everything beneath `dir`, as sorted relative paths.
fn all(dir: &std::path::Path) -> Vec<String> {
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
    w.send(format!("put 5 {} 0 0 0 new lie.txt\n", Digest::of(b"other"))).send(b"bytes");
    w.send(put_line("out/evil.txt", b"evil")).send(b"evil");
    assert_eq!(w.line(), "ERR exists taken.txt exists (ftclient put --force replaces it, where the server allows)");
    assert!(w.line().starts_with("ERR bad-request lie.txt: the bytes received have digest "));
    assert_eq!(w.line(), "ERR denied out/evil.txt: out is not a folder (or is a symlink)");
    assert_eq!(w.get("taken.txt"), b"mine");
    assert_eq!(tree(dirs.root.path()), ["out", "taken.txt"]);
    assert!(tree(outside.path()).is_empty());
    assert_eq!(server.stat("uploads"), 0);
}

#[test]
fn a_refusal_before_a_big_body_is_read_closes_the_connection_after_saying_why() {
    let dirs = Dirs::new();
    let big = format!("put {} {} 0 0 0 new a.bin\n", 2 << 20, Digest::of(b""));
    let cases: [(&str, bool, u64, String, &str); 4] = [
        ("uploads off", false, 4 << 20, big.clone(), "ERR denied this server takes no uploads"),
        ("too big", true, 1 << 20, big, "ERR too-big 2097152 bytes is more than this server takes (1048576)"),
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
fn a_refused_small_body_is_skipped_and_the_connection_goes_on() {
    let dirs = Dirs::new();
    dirs.put("taken.txt", b"mine");
    let server = taking_uploads(&dirs, |c| Config { max_upload: 4, ..c });
    let mut w = server.connect();
    // Too big for this server, and a taken name: both refused before their bodies, which are
    // skipped (a body that looks like requests included).
    w.send(put_line("a.txt", b"stats\n")).send(b"stats\n");
    w.send(put_line("taken.txt", b"xy")).send(b"xy");
    w.send(put_line("b.txt", b"ok")).send(b"ok");
    assert_eq!(w.line(), "ERR too-big 6 bytes is more than this server takes (4)");
    assert!(w.line().starts_with("ERR exists taken.txt exists"));
    assert_eq!(w.line(), format!("OK 2 xxh3={}", Digest::of(b"ok")));
    assert_eq!(tree(dirs.root.path()), ["b.txt", "taken.txt"]);
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
    assert_eq!(w.send("get a.txt\n").line(), "ERR not-found no such file");
    let mut w = server.connect();
    w.send(format!("auth {}\n", writer.expose())).send(put_line("a.txt", b"hello")).send(b"hello");
    assert_eq!(w.line(), "OK rights=read,write");
    assert_eq!(w.line(), format!("OK 5 xxh3={}", Digest::of(b"hello")));
    assert_eq!(fs::read(dirs.root.path().join("a.txt")).unwrap(), b"hello");
}

#[test]
fn a_sender_that_stops_half_way_leaves_nothing_under_the_name() {
    let dirs = Dirs::new();
    let server = taking_uploads(&dirs, |c| c);
    // Small: nothing at all is left. Resumable: only its bytes in the staging folder, unlisted.
    for (name, len) in [("small.bin", 100_000), ("half.bin", 1 << 20)] {
        let data = pattern(len);
        let mut w = server.connect();
        w.send(put_line(name, &data)).send(&data[..data.len() / 2]);
        w.stream.flush().unwrap();
        w.stream.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(w.closed());
        server.wait_connections(0);
    }
    assert!(tree(dirs.root.path()).is_empty(), "{:?}", tree(dirs.root.path()));
    let left = staged(dirs.root.path());
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(fs::metadata(dirs.root.path().join(".ft-partial").join(&left[0])).unwrap().len(), 1 << 19);
    let mut w = server.connect();
    assert_eq!(w.send("list\n").line(), "OK 0");
    assert!(w.send("get .ft-partial/x\n").line().starts_with("ERR not-found"));
}

#[test]
fn without_an_auth_file_a_peer_off_loopback_cannot_upload() {
    crate::util::in_private_net(|| {
        let dirs = Dirs::new();
        let config = Config { allow_upload: true, allow_anonymous: true, allow_plaintext: true, ..dirs.config() };
        let server = TestServer::start_on(config, "10.77.0.1:0");
        let mut w = crate::util::Wire::connect(server.addr);
        w.send(put_line("a.txt", b"hello")).send(b"hello").send("quit\n");
        assert_eq!(w.line(), "ERR unauthorized without an auth file, uploads are taken from this machine only");
        assert_eq!(w.line(), "OK bye");
        assert!(tree(dirs.root.path()).is_empty());
    });
}
