//! Uploads (`put`) on the wire: off by default, who may upload, size and digest checks, names,
//! and nothing written through a symlink or left half-written.

use ft::client::LocalFile;
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
    assert_eq!(w.line(), "ERR exists it exists (ftclient put --force replaces it, where the server allows)");
    assert!(w.line().starts_with("ERR bad-request the bytes received have digest "));
    assert_eq!(w.line(), "ERR denied out is not a folder (or is a symlink)");
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
    assert!(w.line().starts_with("ERR exists it exists"));
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

/// The `put` line for `len` bytes with `digest` sent from offset `from`, `new` or `replace`.
fn put_from(name: &str, len: usize, digest: Digest, from: usize, replace: bool) -> String {
    let mode = if replace { "replace" } else { "new" };
    format!("put {len} {digest} 1000000000 7 {from} {mode} {name}\n")
}

/// Sends `name`'s `put` and the first `sent` bytes of `data`, then hangs up.
fn interrupted(server: &TestServer, name: &str, data: &[u8], sent: usize) {
    let mut w = server.connect();
    w.send(put_line(name, data)).send(&data[..sent]);
    w.stream.flush().unwrap();
    w.stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(w.closed());
    server.wait_connections(0);
}

#[test]
fn an_interrupted_upload_resumes_from_the_bytes_the_server_proves() {
    let dirs = Dirs::new();
    let server = taking_uploads(&dirs, |c| c);
    let data = pattern(3 << 20);
    let half = data.len() / 2;
    interrupted(&server, "big.bin", &data, half);
    // On the wire: the server names what it holds and its digest; the rest follows.
    let mut w = server.connect();
    w.send(format!("partial {} 1000000000 7 new big.bin\n", data.len()));
    assert_eq!(w.line(), format!("OK {half} xxh3={}", Digest::of(&data[..half])));
    w.send(put_from("big.bin", data.len(), Digest::of(&data), half, false)).send(&data[half..]);
    assert_eq!(w.line(), format!("OK {} xxh3={}", data.len(), Digest::of(&data)));
    assert!(fs::read(dirs.root.path().join("big.bin")).unwrap() == data);
    assert!(staged(dirs.root.path()).is_empty(), "{:?}", staged(dirs.root.path()));
    assert_eq!(server.stat("bytes_received"), (data.len() - half) as u64, "the prefix was not sent again");
    drop(w);
    // The client: resumes what it can prove, starts over what it cannot.
    let local = tempfile::tempdir().unwrap();
    let (good, bad) = (pattern(2 << 20), pattern((2 << 20) + 1));
    // Keyed by name, size and modification time: the local files have the time `put_line` sends.
    let when = std::time::UNIX_EPOCH + std::time::Duration::new(1_000_000_000, 7);
    for (n, bytes) in [("good.bin", &good), ("bad.bin", &bad)] {
        fs::write(local.path().join(n), bytes).unwrap();
        fs::File::options().write(true).open(local.path().join(n)).unwrap().set_modified(when).unwrap();
    }
    interrupted(&server, "good.bin", &good, 700_000);
    // Someone who knows bad.bin's size and digest plants other bytes under its name.
    let mut w = server.connect();
    w.send(put_line("bad.bin", &bad)).send(vec![0u8; 900_000]);
    w.stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(w.closed());
    server.wait_connections(0);
    let files = [
        (LocalFile::Path(local.path().join("good.bin")), name("good.bin")),
        (LocalFile::Path(local.path().join("bad.bin")), name("bad.bin")),
    ];
    let mut results = Vec::new();
    server.client().put_all(&files, ft::client::PutOptions::default(), |_, r| results.push(r.unwrap())).unwrap();
    assert_eq!(results.iter().map(|r| r.resumed_from).collect::<Vec<_>>(), [700_000, 0]);
    assert!(fs::read(dirs.root.path().join("good.bin")).unwrap() == good);
    assert!(fs::read(dirs.root.path().join("bad.bin")).unwrap() == bad);
    // At once, while the server may still be writing what the cut-off upload sent: the bytes
    // are waited for, then resumed.
    fs::write(local.path().join("now.bin"), &good).unwrap();
    fs::File::options().write(true).open(local.path().join("now.bin")).unwrap().set_modified(when).unwrap();
    // Once the server holds its staging file locked (as long as the connection lasts), the
    // sender goes and the next client asks at once.
    let before = staged(dirs.root.path());
    let mut w = server.connect();
    w.send(put_line("now.bin", &good)).send(&good[..200_000]);
    let locked = || {
        staged(dirs.root.path()).iter().filter(|f| !before.contains(f)).any(|f| {
            let file = fs::File::open(dirs.root.path().join(".ft-partial").join(f));
            file.is_ok_and(|file| rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockShared).is_err())
        })
    };
    let deadline = std::time::Instant::now() + crate::util::WAIT;
    while !locked() {
        assert!(std::time::Instant::now() < deadline, "the server never began the upload");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    w.stream.shutdown(std::net::Shutdown::Write).unwrap();
    let files = [(LocalFile::Path(local.path().join("now.bin")), name("now.bin"))];
    server
        .client()
        .put_all(&files, ft::client::PutOptions::default(), |_, r| assert_eq!(r.unwrap().resumed_from, 200_000))
        .unwrap();
    assert!(fs::read(dirs.root.path().join("now.bin")).unwrap() == good);
    drop(w);
    server.wait_connections(0);
    // --no-resume sends it whole.
    interrupted(&server, "again.bin", &good, 700_000);
    let files = [(LocalFile::Path(local.path().join("good.bin")), name("again.bin"))];
    let options = ft::client::PutOptions { resume: false, ..Default::default() };
    server.client().put_all(&files, options, |_, r| assert_eq!(r.unwrap().resumed_from, 0)).unwrap();
    assert!(fs::read(dirs.root.path().join("again.bin")).unwrap() == good);
}

fn name(s: &str) -> ft::name::Name {
    ft::name::Name::parse(s).unwrap()
}

#[test]
fn a_file_is_replaced_only_when_the_server_allows_and_the_client_asks_and_its_cache_entry_goes() {
    let dirs = Dirs::new();
    dirs.put("doc.txt", b"old text");
    crate::util::settle(&dirs.root.path().join("doc.txt"));
    let (new, digest) = (b"new text!", Digest::of(b"new text!"));
    // Not allowed: asked or not, the old file stays.
    let server = taking_uploads(&dirs, |c| c);
    let mut w = server.connect();
    w.send(put_from("doc.txt", new.len(), digest, 0, true)).send(new);
    assert_eq!(
        w.line(),
        "ERR exists it exists and differs, and this server does not replace files (ftserver --allow-overwrite)"
    );
    drop(server);
    // Allowed: replaced only when asked; a cached copy is not served again.
    let server = taking_uploads(&dirs, |c| Config { allow_overwrite: true, ..c });
    let mut w = server.connect();
    assert_eq!(w.get("doc.txt"), b"old text");
    assert_eq!(w.get("doc.txt"), b"old text");
    assert_eq!(server.server.cache_stats().entries, 1);
    w.send(put_from("doc.txt", new.len(), digest, 0, false)).send(new);
    assert!(w.line().starts_with("ERR exists it exists (ftclient put --force"));
    w.send(put_from("doc.txt", new.len(), digest, 0, true)).send(new);
    assert_eq!(w.line(), format!("OK {} xxh3={digest}", new.len()));
    assert_eq!(server.server.cache_stats().entries, 0, "the entry went at once");
    assert_eq!(w.get("doc.txt"), new);
    // A resumable file too, through its staging file.
    let big = pattern(2 << 20);
    w.send(put_from("doc.txt", big.len(), Digest::of(&big), 0, true)).send(&big);
    assert_eq!(w.line(), format!("OK {} xxh3={}", big.len(), Digest::of(&big)));
    assert!(w.get("doc.txt") == big);
    assert_eq!(tree(dirs.root.path()), ["doc.txt"]);
    assert!(staged(dirs.root.path()).is_empty());
}

#[test]
fn uploads_can_be_kept_beneath_one_folder() {
    let dirs = Dirs::new();
    let server = taking_uploads(&dirs, |c| Config { upload_folder: Some(name("inbox")), ..c });
    let mut w = server.connect();
    for n in ["a.txt", "inbox", "inboxes/a.txt", ".ft-partial/x"] {
        w.send(put_line(n, b"x")).send(b"x");
        assert!(w.line().starts_with("ERR denied "), "{n}");
    }
    w.send(put_line("inbox/deep/a.txt", b"x")).send(b"x");
    assert_eq!(w.line(), format!("OK 1 xxh3={}", Digest::of(b"x")));
    assert_eq!(tree(dirs.root.path()), ["inbox", "inbox/deep", "inbox/deep/a.txt"]);
}

#[test]
fn a_symlink_planted_in_the_upload_folder_between_two_uploads_is_not_followed() {
    let dirs = Dirs::new();
    let outside = tempfile::tempdir().unwrap();
    let server = taking_uploads(&dirs, |c| Config { upload_folder: Some(name("inbox")), ..c });
    let mut w = server.connect();
    let big = pattern(2 << 20);
    w.send(put_line("inbox/sub/a.txt", b"first")).send(b"first");
    assert!(w.line().starts_with("OK 5 "));
    // Between two uploads, the folder becomes a symlink out of the root, then to a folder inside.
    let sub = dirs.root.path().join("inbox/sub");
    fs::rename(&sub, dirs.root.path().join("moved")).unwrap();
    std::os::unix::fs::symlink(outside.path(), &sub).unwrap();
    for (n, bytes) in [("inbox/sub/b.txt", &b"second"[..]), ("inbox/sub/big.bin", &big[..])] {
        w.send(put_line(n, bytes)).send(bytes);
        assert_eq!(w.line(), "ERR denied inbox/sub is not a folder (or is a symlink)", "{n}");
    }
    fs::remove_file(&sub).unwrap();
    std::os::unix::fs::symlink("../moved", &sub).unwrap();
    w.send(put_line("inbox/sub/c.txt", b"third")).send(b"third");
    assert!(w.line().starts_with("ERR denied "));
    assert!(all(outside.path()).is_empty());
    assert_eq!(all(&dirs.root.path().join("moved")), ["a.txt"]);
}

#[test]
fn a_sender_that_sends_forever_is_cut_off_and_stores_nothing() {
    let dirs = Dirs::new();
    let server = taking_uploads(&dirs, |c| Config { max_upload: 64 << 10, ..c });
    let mut w = server.connect();
    // 64 KiB announced, then bytes without end: the announced length is all that is taken as the
    // body; the rest is a request line that never ends, past the line cap.
    w.send(format!("put {} {} 0 0 0 new endless.bin\n", 64 << 10, Digest::of(b"")));
    w.stream.set_write_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let chunk = vec![b'z'; 64 << 10];
    let mut sent = 0usize;
    let cut = loop {
        match w.stream.write_all(&chunk) {
            Ok(()) => sent += chunk.len(),
            Err(_) => break true,
        }
        if sent > 256 << 20 {
            break false;
        }
    };
    assert!(cut, "still taking bytes after {sent}");
    server.wait_connections(0);
    assert!(tree(dirs.root.path()).is_empty() && staged(dirs.root.path()).is_empty());
}

#[test]
fn two_puts_of_one_name_at_once_never_mix() {
    for (len, replace) in [(100_000, false), (2 << 20, false), (100_000, true), (2 << 20, true)] {
        let dirs = Dirs::new();
        let server = taking_uploads(&dirs, |c| Config { allow_overwrite: true, ..c });
        let (a, b) = (vec![b'a'; len], vec![b'b'; len]);
        let (mut wa, mut wb) = (server.connect(), server.connect());
        // Both begin, both get half-way, then both finish.
        wa.send(put_from("same.bin", len, Digest::of(&a), 0, replace)).send(&a[..len / 2]);
        wb.send(put_from("same.bin", len, Digest::of(&b), 0, replace)).send(&b[..len / 2]);
        wa.send(&a[len / 2..]);
        wb.send(&b[len / 2..]);
        let (ra, rb) = (wa.line(), wb.line());
        let landed = fs::read(dirs.root.path().join("same.bin")).unwrap();
        assert!(landed == a || landed == b, "{len} {replace}: a mix");
        if replace {
            assert!(ra.starts_with("OK ") && rb.starts_with("OK "), "{ra} / {rb}");
        } else {
            let oks = [&ra, &rb].iter().filter(|r| r.starts_with("OK ")).count();
            assert_eq!(oks, 1, "{ra} / {rb}");
            let winner = if ra.starts_with("OK ") { &a } else { &b };
            assert!(landed == *winner);
            assert!([&ra, &rb].iter().any(|r| r.starts_with("ERR exists it exists")), "{ra} / {rb}");
        }
        assert_eq!(tree(dirs.root.path()), ["same.bin"]);
        assert!(staged(dirs.root.path()).is_empty(), "{len} {replace}: {:?}", staged(dirs.root.path()));
    }
}

#[test]
fn a_get_during_an_upload_sees_the_old_file_or_none_never_a_mix() {
    let dirs = Dirs::new();
    let old = pattern(300_000);
    dirs.put("doc.bin", &old);
    let server = taking_uploads(&dirs, |c| Config { allow_overwrite: true, ..c });
    for len in [100_000, 2 << 20] {
        let new = vec![b'n'; len];
        let before = fs::read(dirs.root.path().join("doc.bin")).unwrap();
        let mut up = server.connect();
        up.send(put_from("doc.bin", len, Digest::of(&new), 0, true)).send(&new[..len / 2]);
        let mut reader = server.connect();
        assert!(reader.get("doc.bin") == before, "{len}: the old file while the new one arrives");
        up.send(&new[len / 2..]);
        assert!(up.line().starts_with("OK "));
        assert!(reader.get("doc.bin") == new, "{len}: the new file once it is named");
    }
    // A new name is not there until it is whole.
    let data = pattern(2 << 20);
    let mut up = server.connect();
    up.send(put_line("later.bin", &data)).send(&data[..1 << 20]);
    let mut reader = server.connect();
    assert!(reader.send("get later.bin\n").line().starts_with("ERR not-found"));
    up.send(&data[1 << 20..]);
    assert!(up.line().starts_with("OK "));
    assert!(reader.get("later.bin") == data);
}

/// Unmounts (and removes) a tmpfs mounted for a test, even if it fails.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_disk_that_fills_up_mid_upload_leaves_nothing_and_the_server_goes_on() {
    let dirs = Dirs::new();
    let mount = dirs.root.path().join("small");
    fs::create_dir(&mount).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
        .arg(&mount)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    }
    let _unmount = Mounted(mount.clone());
    let config = Config { allow_upload: true, root: mount.clone(), ..dirs.config() };
    let server = TestServer::start(config);
    // Each fits in the free space when announced; together they do not.
    let (a, b) = (pattern(2 << 20), vec![7u8; 2 << 20]);
    let (mut wa, mut wb) = (server.connect(), server.connect());
    wa.send(put_line("a.bin", &a)).send(&a[..1 << 20]);
    wb.send(put_line("b.bin", &b)).send(&b[..1 << 20]);
    wa.send(&a[1 << 20..]);
    wb.send(&b[1 << 20..]);
    let replies = [wa.line(), wb.line()];
    // Which one the disk fills under, or both (each may be part-way when it does), is the
    // scheduler's choice; that nothing partial is left is not.
    let full = replies.iter().filter(|r| r.starts_with("ERR no-space")).count();
    assert!(full >= 1 && replies.iter().all(|r| r.starts_with("ERR no-space") || r.starts_with("OK ")), "{replies:?}");
    let landed = tree(&mount);
    assert_eq!(landed.len(), 2 - full, "{landed:?} {replies:?}");
    for name in &landed {
        let kept = fs::read(mount.join(name)).unwrap();
        assert!(kept == a || kept == b, "{name} is whole");
    }
    assert!(staged(&mount).is_empty(), "a failed write keeps nothing: {:?}", staged(&mount));
    // A new upload that does not fit is refused before its body; one that fits is taken.
    let mut w = server.connect();
    w.send(format!("partial {} 0 0 new c.bin\n", 4 << 20));
    assert!(w.line().starts_with("ERR no-space "));
    w.send(put_line("d.txt", b"still here")).send(b"still here");
    assert!(w.line().starts_with("OK 10 "));
    assert_eq!(w.get("d.txt"), b"still here");
    drop(server);
}

#[test]
fn many_small_puts_pipelined_are_answered_in_order_and_a_later_request_sees_them() {
    let dirs = Dirs::new();
    let server = taking_uploads(&dirs, |c| Config { allow_overwrite: true, ..c });
    let mut w = server.connect();
    // 300 small files, then the first again (replaced, so it must come after the first store),
    // then a get of it, all in one go.
    let mut sent = Vec::new();
    for i in 0..300 {
        let body = format!("file {i}\n").repeat(i % 50 + 1);
        sent.extend_from_slice(put_line(&format!("many/f{i}"), body.as_bytes()).as_bytes());
        sent.extend_from_slice(body.as_bytes());
    }
    let again = b"replaced";
    sent.extend_from_slice(put_from("many/f0", again.len(), Digest::of(again), 0, true).as_bytes());
    sent.extend_from_slice(again);
    w.send(&sent);
    for i in 0..300 {
        let body = format!("file {i}\n").repeat(i % 50 + 1);
        assert_eq!(w.line(), format!("OK {} xxh3={}", body.len(), Digest::of(body.as_bytes())), "f{i}");
    }
    assert_eq!(w.line(), format!("OK {} xxh3={}", again.len(), Digest::of(again)));
    assert_eq!(w.get("many/f0"), again);
    assert_eq!(fs::read(dirs.root.path().join("many/f299")).unwrap(), "file 299\n".repeat(50).as_bytes());
    assert_eq!(server.stat("uploads"), 301);
}

#[test]
fn a_digest_after_the_bytes_is_checked_and_an_abort_stores_nothing() {
    let dirs = Dirs::new();
    let server = taking_uploads(&dirs, |c| c);
    let mut w = server.connect();
    // Small and big (resumable), each: with its digest after the bytes, and given up on.
    for (n, len) in [("small.bin", 10_000), ("big.bin", 2 << 20)] {
        let data = pattern(len);
        w.send(format!("put {len} - 5 0 0 new {n}\n")).send(&data).send(format!("xxh3={}\n", Digest::of(&data)));
        assert_eq!(w.line(), format!("OK {len} xxh3={}", Digest::of(&data)), "{n}");
        let other = format!("other-{n}");
        w.send(format!("put {len} - 5 0 0 new {other}\n")).send(&data).send("abort\n");
        assert_eq!(w.line(), "ERR changed the sender gave up on the file (it changed or shrank while it was read)");
        w.send(format!("put {len} - 5 0 0 new {other}\n")).send(&data).send(format!("xxh3={}\n", Digest::of(b"x")));
        assert!(w.line().starts_with("ERR bad-request the bytes received have digest "), "{other}");
    }
    assert_eq!(tree(dirs.root.path()), ["big.bin", "small.bin"]);
    assert!(staged(dirs.root.path()).is_empty(), "{:?}", staged(dirs.root.path()));
    // A line after the bytes that is not a digest: out of step, the connection ends.
    w.send("put 2 - 5 0 0 new x\nhi").send("stats\n");
    assert!(w.closed());
    assert!(!dirs.root.path().join("x").exists());
}

/// Changes the file being sent as soon as its first bytes go.
struct Meddler(std::path::PathBuf, std::sync::atomic::AtomicBool);

impl ft::client::Progress for Meddler {
    fn begin(&self, _: &ft::name::Name, _: u64) {}
    fn advance(&self, _: u64) {
        if !self.1.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let file = fs::File::options().write(true).open(&self.0).unwrap();
            std::os::unix::fs::FileExt::write_all_at(&file, b"changed", 1000).unwrap();
        }
    }
}

#[test]
fn a_file_that_changes_while_it_is_put_is_given_up_on_and_stores_nothing() {
    let dirs = Dirs::new();
    let server = taking_uploads(&dirs, |c| c);
    let local = tempfile::tempdir().unwrap();
    let path = local.path().join("moving.bin");
    fs::write(&path, pattern(3 << 20)).unwrap();
    let mut client = server.client();
    client.set_progress(std::sync::Arc::new(Meddler(path.clone(), Default::default())));
    let mut results = Vec::new();
    client
        .put_all(&[(LocalFile::Path(path), name("moving.bin"))], ft::client::PutOptions::default(), |_, r| {
            results.push(r)
        })
        .unwrap();
    let e = results.pop().unwrap().unwrap_err();
    assert!(e.to_string().contains("the sender gave up on the file"), "{e}");
    assert!(tree(dirs.root.path()).is_empty() && staged(dirs.root.path()).is_empty());
}

#[test]
fn uploads_keep_their_modes_never_wider_and_put_r_makes_every_folder_with_its_time() {
    let dirs = Dirs::new();
    let server = taking_uploads(&dirs, |c| c);
    let local = tempfile::tempdir().unwrap();
    let proj = local.path().join("proj");
    fs::create_dir_all(proj.join("empty/deeper")).unwrap();
    fs::create_dir_all(proj.join("bin")).unwrap();
    let when = std::time::UNIX_EPOCH + std::time::Duration::new(1_500_000_000, 123_456_789);
    for (n, mode) in [("key", 0o600), ("bin/run.sh", 0o755), ("bin/setuid", 0o4755), ("plain.txt", 0o664)] {
        let path = proj.join(n);
        fs::write(&path, n.as_bytes()).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        fs::File::options().write(true).open(&path).unwrap().set_modified(when).unwrap();
    }
    fs::set_permissions(proj.join("empty/deeper"), fs::Permissions::from_mode(0o750)).unwrap();
    for d in ["empty/deeper", "empty", "bin", ""] {
        fs::File::open(proj.join(d)).unwrap().set_modified(when).unwrap();
    }
    let tree = ft::client::local_tree(&proj, None, |s| panic!("{s:?}")).unwrap();
    let mut client = server.client();
    let mut sent = 0;
    client.put_sync(&tree.files, None, Default::default(), |_, r| sent += usize::from(r.is_ok())).unwrap();
    assert_eq!(sent, 4);
    let mut made = 0;
    client.make_folders(&tree.folders, |n, r| made += usize::from(r.map_err(|e| panic!("{n}: {e}")).is_ok())).unwrap();
    assert_eq!(made, 4, "the folder itself and the three beneath it");
    let served = dirs.root.path().join("proj");
    let umask = !0o022 & 0o777;
    for (n, mode) in [("key", 0o600), ("bin/run.sh", 0o755), ("bin/setuid", 0o755), ("plain.txt", 0o664 & umask)] {
        let meta = fs::metadata(served.join(n)).unwrap();
        assert_eq!(meta.mode() & 0o7777, mode, "{n}: the sender's mode, no setuid, never wider");
        assert_eq!((meta.mtime(), meta.mtime_nsec()), (1_500_000_000, 123_456_789), "{n}");
    }
    let deeper = fs::metadata(served.join("empty/deeper")).unwrap();
    assert!(deeper.is_dir(), "an empty folder arrives");
    assert_eq!(deeper.mode() & 0o777, 0o750);
    for d in ["empty/deeper", "empty", "bin", ""] {
        let meta = fs::metadata(served.join(d)).unwrap();
        assert_eq!((meta.mtime(), meta.mtime_nsec()), (1_500_000_000, 123_456_789), "{d}/: its time");
    }
    // Again: nothing is sent.
    let remote = client.remote_files(Some(&tree.top)).unwrap();
    let mut unchanged = 0;
    client
        .put_sync(&tree.files, Some(&remote), Default::default(), |_, r| {
            unchanged += usize::from(matches!(r, Ok(ft::client::Put::Unchanged)))
        })
        .unwrap();
    assert_eq!(unchanged, 4);
}

#[test]
fn a_file_swapped_for_a_symlink_after_put_r_walked_its_folder_is_not_sent() {
    let dirs = Dirs::new();
    let server = taking_uploads(&dirs, |c| c);
    let local = tempfile::tempdir().unwrap();
    let secret = tempfile::tempdir().unwrap();
    fs::write(secret.path().join("id_secret"), b"PRIVATE KEY").unwrap();
    fs::set_permissions(secret.path().join("id_secret"), fs::Permissions::from_mode(0o600)).unwrap();
    let proj = local.path().join("proj");
    fs::create_dir_all(proj.join("sub")).unwrap();
    fs::write(proj.join("a.txt"), b"a").unwrap();
    fs::write(proj.join("sub/b.txt"), b"b").unwrap();
    let tree = ft::client::local_tree(&proj, None, |s| panic!("{s:?}")).unwrap();
    // After the walk: the file becomes a symlink to the secret, and the folder one to its folder.
    fs::remove_file(proj.join("a.txt")).unwrap();
    std::os::unix::fs::symlink(secret.path().join("id_secret"), proj.join("a.txt")).unwrap();
    fs::rename(proj.join("sub"), local.path().join("moved")).unwrap();
    fs::write(secret.path().join("b.txt"), b"PRIVATE TOO").unwrap();
    std::os::unix::fs::symlink(secret.path(), proj.join("sub")).unwrap();
    let mut results = Vec::new();
    server.client().put_sync(&tree.files, None, Default::default(), |n, r| results.push((n.to_string(), r))).unwrap();
    assert_eq!(results.len(), 2);
    for (n, r) in &results {
        let e = r.as_ref().expect_err(n).to_string();
        assert!(e.contains("it is a symlink now"), "{n}: {e}");
    }
    assert!(all(dirs.root.path()).iter().all(|p| !p.ends_with(".txt")), "{:?}", all(dirs.root.path()));
}

#[test]
fn abandoned_uploads_create_nothing_before_their_body_and_are_capped_oldest_reclaimed_first() {
    let dirs = Dirs::new();
    let server = taking_uploads(&dirs, |c| Config { max_staging: 64 << 20, max_staging_files: 4, ..c });
    let staging = dirs.root.path().join(".ft-partial");
    let staged = || fs::read_dir(&staging).unwrap().count();
    let big = pattern(2 << 20);
    // Put lines whose body never comes: nothing is created, not an inode.
    for i in 0..50 {
        let mut w = server.connect();
        w.send(put_line(&format!("nobody-{i}.bin"), &big));
        w.stream.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(w.closed());
    }
    server.wait_connections(0);
    assert_eq!(staged(), 0, "no staging file for an upload that sent no byte");
    // Forty uploads cut off part-way from one address: it holds at most half the files (2), its
    // oldest reclaimed first; the server says how much it holds.
    for i in 0..40 {
        interrupted(&server, &format!("cut-{i}.bin"), &big, 100_000 + i);
    }
    assert_eq!(staged(), 2);
    assert_eq!((server.stat("staging_files"), server.stat("staging_bytes")), (2, 2 * big.len() as u64));
    let mut w = server.connect();
    w.send(format!("partial {} 1000000000 7 new cut-39.bin\n", big.len()));
    assert!(w.line().starts_with("OK 100039 "), "the newest is kept");
    w.send(format!("partial {} 1000000000 7 new cut-0.bin\n", big.len()));
    assert!(w.line().starts_with("OK 0 "), "the oldest was reclaimed");
    drop(w);
    server.wait_connections(0);
    // While uploads hold their staging files, a new one past the cap is refused before its body.
    let mut holders = Vec::new();
    for i in 0..2 {
        let mut h = server.connect();
        h.send(format!("partial {} 1000000000 7 new cut-{}.bin\n", big.len(), 38 + i));
        assert!(h.line().starts_with("OK "));
        holders.push(h);
    }
    let mut w = server.connect();
    w.send(put_line("one-more.bin", &big));
    let refused = w.line();
    assert!(refused.starts_with("ERR no-space this sender's interrupted uploads hold 2 files"), "{refused}");
    drop(holders);
}

#[test]
fn asking_what_is_held_again_and_again_reads_the_held_bytes_at_most_once() {
    let dirs = Dirs::new();
    let server = taking_uploads(&dirs, |c| c);
    let big = pattern(8 << 20);
    interrupted(&server, "big.bin", &big, 6 << 20);
    let before = server.stat("bytes_hashed");
    let mut w = server.connect();
    for _ in 0..20 {
        w.send(format!("partial {} 1000000000 7 new big.bin\n", big.len()));
        assert_eq!(w.line(), format!("OK {} xxh3={}", 6 << 20, Digest::of(&big[..6 << 20])));
    }
    assert_eq!(server.stat("bytes_hashed") - before, 0, "remembered from the upload that wrote them");
}

#[test]
fn an_interrupted_upload_is_never_served_whatever_path_leads_to_it() {
    let dirs = Dirs::new();
    dirs.put("public.txt", b"public");
    std::os::unix::fs::symlink(".", dirs.root.path().join("self")).unwrap();
    let server = taking_uploads(&dirs, |c| c);
    let secret = pattern(2 << 20);
    interrupted(&server, "private.bin", &secret, 1 << 20);
    let key = fs::read_dir(dirs.root.path().join(".ft-partial")).unwrap().next().unwrap().unwrap().file_name();
    let key = key.to_str().unwrap().to_string();
    std::os::unix::fs::symlink(format!(".ft-partial/{key}"), dirs.root.path().join("peek")).unwrap();
    let mut w = server.connect();
    for name in [format!("self/.ft-partial/{key}"), "peek".to_string(), format!("self/self/.ft-partial/{key}")] {
        w.send(format!("get {name}\n"));
        assert!(w.line().starts_with("ERR not-found "), "{name}");
        w.send(format!("sum {name}\n"));
        assert!(w.line().starts_with("ERR not-found "), "{name}");
    }
    w.send("list self/.ft-partial\n");
    assert!(w.line().starts_with("ERR not-found "));
    let mut w = server.connect();
    w.send("hello 2\n");
    assert!(w.line().starts_with("OK 2 "));
    w.send("walk follow self/.ft-partial\nstat peek\n");
    assert!(w.line().starts_with("ERR not-found "));
    assert!(w.line().starts_with("OK type=l "), "the link itself may be seen, not what it leads to");
    w.send("walk follow\n");
    assert_eq!(w.line(), "OK");
    let mut listing = Vec::new();
    loop {
        let line = w.line();
        if line.starts_with("OK ") || line.starts_with("ERR ") {
            break;
        }
        listing.push(line);
    }
    assert!(
        listing.iter().all(|l| !l.contains(&key) && !l.ends_with("\tpeek") || l.starts_with("type=l")),
        "{listing:?}"
    );
    assert!(listing.iter().any(|l| l.ends_with("\tpublic.txt")), "{listing:?}");
}

#[test]
fn every_thread_a_connection_starts_comes_out_of_one_budget_and_past_it_busy() {
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(work.path().join("server_downloads")).unwrap();
    let cap = 12;
    let server = crate::util::RealServer::start(
        work.path(),
        &["--allow-upload", "--max-conns", "100", "--max-threads", &cap.to_string()],
    );
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", server.port).parse().unwrap();
    let (mut open, mut stored, mut busy) = (Vec::new(), 0, 0);
    for i in 0..20 {
        let mut w = crate::util::Wire::connect(addr);
        // Each upload starts its connection's two store threads. A connection turned away is
        // answered ERR busy at once and closed: the put may then meet a closed socket, and the
        // answer a reset.
        let _ = w.stream.write_all(format!("{}x", put_line(&format!("f{i}.txt"), b"x")).as_bytes());
        let mut reply = String::new();
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(&w.stream), &mut reply);
        if reply.starts_with("OK 1 ") {
            stored += 1;
            open.push(w);
        } else {
            assert!(reply.is_empty() || reply.starts_with("ERR busy "), "{reply}");
            busy += 1;
        }
    }
    let status = fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let threads: usize = status.lines().find_map(|l| l.strip_prefix("Threads:")).unwrap().trim().parse().unwrap();
    // The budget, and the few the server runs for itself (accept loop, cache janitor, signals).
    assert!(threads <= cap + 4, "{threads} threads for a budget of {cap}");
    assert!(stored >= 3 && busy >= 10, "{stored} stored, {busy} busy");
    for i in 0..stored {
        assert_eq!(fs::read(work.path().join(format!("server_downloads/f{i}.txt"))).unwrap(), b"x");
    }
    // Those served still are; once they go, others are served again.
    assert!(open[0].send("stats\n").line().starts_with("OK "));
    drop(open);
    let until = std::time::Instant::now() + crate::util::WAIT;
    let served = std::iter::repeat(()).take_while(|()| std::time::Instant::now() < until).any(|()| {
        let mut w = crate::util::Wire::connect(addr);
        let _ = w.stream.write_all(b"health\n");
        let mut reply = String::new();
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(&w.stream), &mut reply);
        reply == "OK ready\n"
    });
    assert!(served, "served again once the others closed");
}

#[test]
fn big_new_files_are_asked_about_ahead_and_a_held_one_still_resumes() {
    let dirs = Dirs::new();
    let server = taking_uploads(&dirs, |c| c);
    let local = tempfile::tempdir().unwrap();
    let when = std::time::UNIX_EPOCH + std::time::Duration::new(1_000_000_000, 7);
    let mut files = Vec::new();
    let mut contents = Vec::new();
    for i in 0..6 {
        let n = format!("f{i}.bin");
        let bytes = pattern((2 << 20) + i);
        fs::write(local.path().join(&n), &bytes).unwrap();
        fs::File::options().write(true).open(local.path().join(&n)).unwrap().set_modified(when).unwrap();
        files.push((LocalFile::Path(local.path().join(&n)), name(&n)));
        contents.push(bytes);
    }
    // The server holds 700,000 bytes of an interrupted upload of f3.bin.
    interrupted(&server, "f3.bin", &contents[3], 700_000);
    server.wait_connections(0);
    let (addr, recorded) = crate::util::recording_forwarder(server.addr);
    // Delta on: asking ahead happens on loopback too (elsewhere a round trip is reason enough).
    let mut client = ft::client::Client::connect(&addr.to_string(), crate::util::WAIT).unwrap();
    client.set_delta(true);
    let mut results = Vec::new();
    client.put_all(&files, ft::client::PutOptions::default(), |_, r| results.push(r.unwrap())).unwrap();
    drop(client);
    assert_eq!(results.iter().map(|r| r.resumed_from).collect::<Vec<_>>(), [0, 0, 0, 700_000, 0, 0]);
    for (i, bytes) in contents.iter().enumerate() {
        assert!(fs::read(dirs.root.path().join(format!("f{i}.bin"))).unwrap() == *bytes, "f{i}.bin");
    }
    assert_eq!(server.stat("bytes_received"), (6 * (2 << 20) + 15 - 700_000) as u64);
    // Every file's partial went before the first put (the others' ahead of f0.bin's, asked at its
    // turn); f3.bin's was asked again at its turn, as the server holds one interrupted upload at
    // a time.
    let recorded = recorded.join().unwrap();
    let lines: Vec<&[u8]> = recorded.split(|&b| b == b'\n').collect();
    let first_put = lines.iter().position(|l| l.starts_with(b"put ")).unwrap();
    let partials = |lines: &[&[u8]]| lines.iter().filter(|l| l.starts_with(b"partial ")).count();
    assert_eq!(partials(&lines[..first_put]), 6);
    assert_eq!(partials(&lines), 7);
}
