//! Hostile input on the wire: names that try to leave the root, and malformed, huge or endless
//! request lines. Each is refused with an `ERR` and nothing outside the root ever leaks.

use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

use ft::server::Config;

use crate::util::{Dirs, TestServer, WAIT, put};

const SECRET: &[u8] = b"TOP-SECRET-CONTENT-6c1f";

/// A root with a public file, a secret beside it, and links and a fifo pointing at trouble.
fn hostile_root() -> (Dirs, tempfile::TempDir) {
    let outside = tempfile::tempdir().unwrap();
    put(outside.path(), "secret.txt", SECRET);
    let dirs = Dirs::new();
    dirs.put("public.txt", b"public");
    let root = dirs.root.path();
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), root.join("link-file")).unwrap();
    std::os::unix::fs::symlink(outside.path(), root.join("link-dir")).unwrap();
    std::os::unix::fs::symlink("../../../../../../../../etc/passwd", root.join("link-relative")).unwrap();
    std::os::unix::fs::symlink("public.txt", root.join("inside-link")).unwrap();
    let fifo = CString::new(root.join("fifo").as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo reads a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    (dirs, outside)
}

#[test]
fn the_attack_table_is_refused_and_the_secret_never_appears() {
    let (dirs, _outside) = hostile_root();
    let server = TestServer::start(dirs.config());
    let mut w = server.connect();
    let zero = ft::digest::Digest(0);
    let attacks: &[(&[u8], &str)] = &[
        (b"../secret.txt", "ERR bad-name "),
        (b"a/../../secret.txt", "ERR bad-name "),
        (b"/etc/passwd", "ERR bad-name "),
        (b"..\\secret.txt", "ERR not-found "),
        (b"%2e%2e/secret.txt", "ERR not-found "),
        (b"%2e%2e%2fsecret.txt", "ERR not-found "),
        (b"x\0y", "ERR bad-name "),
        (b"x\x1b[2Jy", "ERR bad-name "),
        (b"\xc0\xae\xc0\xae/secret.txt", "ERR bad-request "),
        ("\u{ff0e}\u{ff0e}/secret.txt".as_bytes(), "ERR not-found "),
        (b"link-file", "ERR denied "),
        (b"link-dir/secret.txt", "ERR denied "),
        (b"link-dir", "ERR denied "),
        (b"link-relative", "ERR denied "),
        (b"fifo", "ERR not-file "),
        (b"public.txt/", "ERR bad-name "),
        (b"./public.txt", "ERR bad-name "),
    ];
    let long = "a/".repeat(700) + "x";
    let mut seen = Vec::new();
    for (name, want) in attacks.iter().copied().chain([(long.as_bytes(), "ERR bad-name ")]) {
        for verb in ["get ".as_bytes().to_vec(), format!("resume 1 {zero} ").into_bytes()] {
            let started = Instant::now();
            w.send([&verb[..], name, b"\n"].concat());
            let reply = w.line();
            assert!(reply.starts_with(want), "{}: {reply}", String::from_utf8_lossy(name));
            assert!(started.elapsed() < Duration::from_secs(5), "a refusal must not block");
            seen.extend_from_slice(reply.as_bytes());
        }
    }
    for folder in ["link-dir", "..", "/tmp"] {
        w.send(format!("list {folder}\n"));
        let reply = w.line();
        assert!(reply.starts_with("ERR "), "list {folder}: {reply}");
        seen.extend_from_slice(reply.as_bytes());
    }
    w.send("list\n");
    assert_eq!(w.line(), "OK 2", "only what get serves is listed");
    let listing = format!("{}\n{}", w.line(), w.line());
    assert!(listing.contains(" inside-link\n") && listing.ends_with(" public.txt"), "{listing}");
    seen.extend_from_slice(listing.as_bytes());
    assert!(!seen.windows(SECRET.len()).any(|win| win == SECRET));

    // Version 2 names are escaped: decoded exactly once, then checked like any name, so nothing
    // an escape spells climbs out either.
    let mut w = server.connect();
    w.send("hello 2\n");
    assert!(w.line().starts_with("OK 2 "));
    let escaped: &[(&str, &str)] = &[
        ("%2e%2e/secret.txt", "ERR bad-name "),
        ("a/%2E%2E/%2e%2e/secret.txt", "ERR bad-name "),
        ("..%2Fsecret.txt", "ERR bad-name "),
        ("%2Fetc%2Fpasswd", "ERR bad-name "),
        ("%252e%252e/secret.txt", "ERR not-found "),
        ("..%5Csecret.txt", "ERR not-found "),
        ("a%00b", "ERR bad-name "),
        ("%C0%AE%C0%AE/secret.txt", "ERR not-found "),
        ("link-dir/secret.txt", "ERR denied "),
        ("public.txt%0A", "ERR not-found "),
        ("%", "ERR bad-name "),
        ("a b", "ERR bad-name "),
    ];
    for (name, want) in escaped {
        w.send(format!("get {name}\n"));
        let reply = w.line();
        assert!(reply.starts_with(want), "{name}: {reply}");
        assert!(!reply.contains(std::str::from_utf8(SECRET).unwrap()));
    }
    assert_eq!(w.get("public.txt"), b"public", "and the connection is still in step");
    assert_eq!(w.get("inside-link"), b"public", "a symlink that stays inside the root is served");
}

#[test]
fn ten_thousand_bad_lines_get_one_err_each_in_order() {
    let dirs = Dirs::new();
    dirs.put("ok", b"fine");
    let server = TestServer::start(dirs.config());
    let mut w = server.connect();
    let kinds: [(&[u8], &str); 4] = [
        (b"bogus\n", "ERR unknown-command "),
        (b"get\n", "ERR bad-request "),
        (b"get ../x\n", "ERR bad-name "),
        (b"\xff\xfe\n", "ERR bad-request "),
    ];
    let burst: Vec<u8> = (0..10_000).flat_map(|i| kinds[i % 4].0.iter().copied()).collect();
    let writer = {
        let mut stream = w.stream.try_clone().unwrap();
        std::thread::spawn(move || stream.write_all(&burst).unwrap())
    };
    for i in 0..10_000 {
        let reply = w.line();
        assert!(reply.starts_with(kinds[i % 4].1), "line {i}: {reply}");
    }
    writer.join().unwrap();
    assert_eq!(w.get("ok"), b"fine");
}

#[test]
fn a_gigabyte_line_without_newline_is_cut_off_at_the_cap() {
    let dirs = Dirs::new();
    let server = TestServer::start(Config { max_line: 1000, ..dirs.config() });
    let mut w = server.connect();
    let chunk = vec![b'a'; 1 << 20];
    let mut written = 0u64;
    let started = Instant::now();
    while written < 1 << 30 {
        match w.stream.write(&chunk) {
            Ok(n) => written += n as u64,
            Err(_) => break,
        }
        assert!(started.elapsed() < WAIT, "the server never stopped reading");
    }
    assert!(written < 1 << 30, "the server read the whole gigabyte");
    assert!(w.line().starts_with("ERR too-long "));
    assert!(w.closed());
    server.wait_connections(0);
}

#[test]
fn a_line_just_under_the_cap_is_served_and_one_over_is_not() {
    let dirs = Dirs::new();
    dirs.put("ok", b"fine");
    let server = TestServer::start(Config { max_line: 64, ..dirs.config() });
    let mut w = server.connect();
    let name = "x".repeat(60);
    w.send(format!("get {name}\n"));
    assert!(w.line().starts_with("ERR not-found"), "64 bytes is within the cap");
    assert_eq!(w.get("ok"), b"fine");
    w.send(format!("get {name}y\n"));
    assert!(w.line().starts_with("ERR too-long"));
    assert!(w.closed());
}
