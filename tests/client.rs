//! Library-client tests: `Client` and `OutDir` against the in-process server and fake servers.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::thread;
use std::time::Duration;

use ft::client::{Client, ClientError, OutDir};
use ft::digest::Digest;
use ft::name::Name;

use crate::util::{Dirs, TestServer, WAIT, fake_server, next_request, pattern};

fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
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
    // A large file streams to its .part, which keeps what arrived for a later resume; a small one
    // is held in memory until verified, so nothing of it reaches the disk.
    let big = ft::client::SMALL_FILE + 1;
    for (size, part_left) in [(big, Some(10)), (100, None)] {
        let mut reply = format!("OK {size} xxh3={}\n", Digest(7)).into_bytes();
        reply.extend_from_slice(&[b'z'; 10]);
        let (addr, fake) = fake_server(reply);
        let out = tempfile::tempdir().unwrap();
        fs::write(out.path().join("f.txt"), b"previous good copy").unwrap();
        let dir = OutDir::create(out.path()).unwrap();
        let mut client = connect(addr);
        match client.download(&name("f.txt"), &dir, false) {
            Err(ClientError::ShortBody { expected, received: 10 }) if expected == size => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(fake.join().unwrap(), "get f.txt\n");
        assert!(!client.is_usable());
        assert_eq!(fs::read(out.path().join("f.txt")).unwrap(), b"previous good copy");
        let part = fs::read(out.path().join("f.txt.part")).ok().map(|p| p.len());
        assert_eq!(part, part_left, "size {size}");
    }
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

#[test]
fn many_files_are_pipelined_saved_in_order_and_errors_stay_per_file() {
    let dirs = Dirs::new();
    let mut names = Vec::new();
    for i in 0..600 {
        // Mostly small files, some streamed ones, some missing.
        let n = format!("d{}/f{i:04}.bin", i % 3);
        match i % 50 {
            7 => {}
            13 => drop(dirs.put(&n, &pattern(ft::client::SMALL_FILE as usize + 1000 + i))),
            _ => drop(dirs.put(&n, &pattern(100 + i))),
        }
        names.push(name(&n));
    }
    let server = TestServer::start(dirs.config());
    let out = tempfile::tempdir().unwrap();
    // Some files already exist locally: they are replaced whole.
    crate::util::put(out.path(), "d1/f0001.bin", b"old");
    let dir = OutDir::create(out.path()).unwrap();
    let mut client = server.client();
    let mut results = Vec::new();
    let left = client.download_all(&names, &dir, false, |n, r| results.push((n.clone(), r)));
    assert_eq!(left, 0);
    assert_eq!(results.len(), names.len());
    for (n, r) in &results {
        let i: usize = n.to_str().unwrap()[4..8].parse().unwrap();
        match (i % 50, r) {
            (7, Err(ClientError::Server(reply))) => assert_eq!(reply.code, "not-found"),
            (13, Ok(done)) => {
                assert_eq!(done.size as usize, ft::client::SMALL_FILE as usize + 1000 + i);
                assert!(fs::read(out.path().join(n.as_path())).unwrap() == pattern(done.size as usize));
            }
            (_, Ok(_)) => assert!(fs::read(out.path().join(n.as_path())).unwrap() == pattern(100 + i), "{n}"),
            (_, other) => panic!("{n}: {other:?}"),
        }
    }
    let leftovers: Vec<_> = walk(out.path()).into_iter().filter(|p| p.ends_with(".part")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(client.is_usable());
    assert_eq!(server.stat("connections_total"), 1);
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path.to_string_lossy().into_owned());
        }
    }
    found
}

#[test]
fn requests_go_out_before_replies_come_back() {
    // A server that answers nothing until it has read ten requests: a client that waited for
    // each reply before sending the next request would hang here.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut reader = BufReader::new(&stream);
        let mut asked = Vec::new();
        for _ in 0..10 {
            let line = next_request(&mut reader);
            asked.push(line.trim_end().strip_prefix("get ").unwrap().to_string());
        }
        for n in &asked {
            let body = n.as_bytes();
            (&stream).write_all(format!("OK {} xxh3={}\n", body.len(), Digest::of(body)).as_bytes()).unwrap();
            (&stream).write_all(body).unwrap();
        }
    });
    let names: Vec<Name> = (0..10).map(|i| name(&format!("file{i}"))).collect();
    let out = tempfile::tempdir().unwrap();
    let dir = OutDir::create(out.path()).unwrap();
    let mut ok = 0;
    let left = connect(addr).download_all(&names, &dir, false, |_, r| ok += usize::from(r.is_ok()));
    fake.join().unwrap();
    assert_eq!((left, ok), (0, 10));
    assert_eq!(fs::read(out.path().join("file7")).unwrap(), b"file7");
}

#[test]
fn bench_counts_verified_replies_and_errors() {
    let dirs = Dirs::new();
    dirs.put("a.bin", &pattern(10_000));
    dirs.put("b.bin", &pattern(20_000));
    let server = TestServer::start(dirs.config());
    let config = ft::client::bench::BenchConfig {
        addr: server.addr.to_string(),
        names: vec![name("a.bin"), name("b.bin"), name("missing")],
        conns: 3,
        duration: Duration::from_millis(300),
        pipeline: 4,
        timeout: WAIT,
        tls: Default::default(),
        token: None,
    };
    let report = ft::client::bench::run(&config).unwrap();
    assert!(report.requests >= 30, "{report:?}");
    assert_eq!(report.latencies_us.len() as u64, report.requests);
    assert!(report.latencies_us.windows(2).all(|w| w[0] <= w[1]));
    // Every third request asks for the missing file.
    let ok = report.requests - report.errors;
    assert!(report.errors >= report.requests / 3 - 3 && report.errors <= report.requests / 3 + 3, "{report:?}");
    assert!(report.bytes >= ok * 10_000 && report.bytes <= ok * 20_000);
    assert!(report.latency(0.5) <= report.latency(1.0));
}

#[test]
fn a_symlink_planted_at_the_final_name_is_replaced_not_followed() {
    let dirs = Dirs::new();
    dirs.put("small.txt", b"new small");
    dirs.put("large.bin", &pattern(ft::client::SMALL_FILE as usize + 1));
    let server = TestServer::start(dirs.config());
    let out = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    for target in ["small.txt", "large.bin"] {
        fs::write(elsewhere.path().join(target), b"precious").unwrap();
        std::os::unix::fs::symlink(elsewhere.path().join(target), out.path().join(target)).unwrap();
    }
    std::os::unix::fs::symlink(elsewhere.path().join("x"), out.path().join("large.bin.part")).unwrap();
    let dir = OutDir::create(out.path()).unwrap();
    let mut client = server.client();
    client.download(&name("small.txt"), &dir, false).unwrap();
    assert_eq!(fs::read(out.path().join("small.txt")).unwrap(), b"new small");
    assert!(!fs::symlink_metadata(out.path().join("small.txt")).unwrap().is_symlink());
    // A planted .part symlink makes the large download fail rather than write through it.
    assert!(matches!(client.download(&name("large.bin"), &dir, false), Err(ClientError::Local { .. })));
    assert_eq!(fs::read(elsewhere.path().join("small.txt")).unwrap(), b"precious");
    assert_eq!(fs::read(elsewhere.path().join("large.bin")).unwrap(), b"precious");
    assert!(!elsewhere.path().join("x").exists());
}

#[test]
fn keeping_existing_files_holds_even_if_one_appears_mid_download() {
    let out = tempfile::tempdir().unwrap();
    let dir = OutDir::create(out.path()).unwrap().keep_existing(true);
    let n = name("sub/f");
    dir.save_whole(&n, b"first").unwrap();
    assert!(dir.is_kept(&n));
    // Both ways of saving refuse to replace what appeared after the check.
    assert_eq!(dir.save_whole(&n, b"second").unwrap_err().kind(), std::io::ErrorKind::AlreadyExists);
    assert_eq!(fs::read(out.path().join("sub/f")).unwrap(), b"first");
    let replacing = OutDir::create(out.path()).unwrap();
    replacing.save_whole(&n, b"third").unwrap();
    assert_eq!(fs::read(out.path().join("sub/f")).unwrap(), b"third");
}

#[test]
fn hello_agrees_with_a_server_and_falls_back_with_one_that_predates_it() {
    let dirs = Dirs::new();
    dirs.put("a.txt", b"a");
    let server = TestServer::start(dirs.config());
    let mut client = server.client();
    let agreed = client.agreed().unwrap().clone();
    assert_eq!(agreed.version, ft::wire::PROTOCOL_VERSION);
    // What this client asks for, all of which the server grants (it grants put too, when asked).
    assert_eq!(agreed.features, ft::client::CLIENT_FEATURES);
    let out = tempfile::tempdir().unwrap();
    let dir = OutDir::create(out.path()).unwrap();
    client.download(&Name::parse("a.txt").unwrap(), &dir, false).unwrap();
    assert_eq!(server.stat("requests"), 1, "hello is not counted as a request");

    // A server from before hello answers it as an unknown command; the client carries on at v1,
    // with the next reply on the connection in step.
    let reply = format!("ERR unknown-command unknown command 'hello'\nOK 1 xxh3={}\na", Digest::of(b"a"));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut reader = BufReader::new(&stream);
        let mut asked = [String::new(), String::new()];
        reader.read_line(&mut asked[0]).unwrap();
        reader.read_line(&mut asked[1]).unwrap();
        (&stream).write_all(reply.as_bytes()).unwrap();
        asked
    });
    let mut client = Client::connect(&addr.to_string(), WAIT).unwrap();
    client.download(&Name::parse("a.txt").unwrap(), &dir, false).unwrap();
    assert_eq!(client.agreed().unwrap(), &ft::wire::Agreed::baseline());
    assert!(client.is_usable());
    let features = ft::client::CLIENT_FEATURES.join(" ");
    let hello = format!("hello {} {features}\n", ft::wire::PROTOCOL_VERSION);
    assert_eq!(fake.join().unwrap(), [hello, "get a.txt\n".to_string()]);

    // One that claims a version this client never offered is refused.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let _fake = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.write_all(b"OK 3 features=\n").unwrap();
        let _ = stream.read(&mut [0u8; 1]);
    });
    let mut client = Client::connect(&addr.to_string(), WAIT).unwrap();
    assert!(matches!(client.agreed(), Err(ClientError::Protocol(_))));
}

/// A one-connection fake server that grants `features` to the client's hello, then answers its
/// next request with `reply`, and closes.
fn fake_with_features(features: &'static str, reply: &'static [u8]) -> (SocketAddr, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut reader = BufReader::new(&stream);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with("hello "), "{line:?}");
        (&stream).write_all(format!("OK 1 features={features}\n").as_bytes()).unwrap();
        line.clear();
        reader.read_line(&mut line).unwrap();
        (&stream).write_all(reply).unwrap();
    });
    (addr, fake)
}

#[test]
fn a_streamed_listing_is_complete_only_when_its_end_says_so() {
    let list = |reply: &'static [u8]| {
        let (addr, _fake) = fake_with_features("list-end", reply);
        let mut client = Client::connect(&addr.to_string(), WAIT).unwrap();
        let mut seen = Vec::new();
        let result = client.list_each(None, |e| {
            seen.push(e.name.to_string());
            Ok(())
        });
        (result, seen, client.is_usable())
    };
    let (result, seen, usable) = list(b"OK\n5 0 b\n3 0 a\nOK 2\n");
    assert_eq!((result.unwrap(), seen, usable), (2, vec!["b".to_string(), "a".to_string()], true));
    // The server could not read everything: the entries so far, then the error, in step.
    let (result, seen, usable) = list(b"OK\n5 0 a\nERR internal listing incomplete: cannot read x\n");
    assert!(matches!(result, Err(ClientError::Server(ref r)) if r.code == "internal"), "{result:?}");
    assert_eq!((seen.len(), usable), (1, true));
    // An end that miscounts, or a connection that closes before the end, is not a listing.
    for reply in [&b"OK\n5 0 a\nOK 2\n"[..], b"OK\n5 0 a\n"] {
        let (result, _, usable) = list(reply);
        assert!(matches!(result, Err(ClientError::Protocol(_))), "{result:?}");
        assert!(!usable);
    }
}

#[test]
fn two_downloads_of_one_file_into_one_folder_never_mix_their_bytes() {
    // The first download's server sends half the body, then waits until told to go on.
    let data = pattern(ft::client::SMALL_FILE as usize * 4);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (go_on, wait) = std::sync::mpsc::channel::<()>();
    let (half_sent, is_half_sent) = std::sync::mpsc::channel::<()>();
    let body = data.clone();
    let slow = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        next_request(&mut BufReader::new(&stream));
        let header = format!("OK {} xxh3={}\n", body.len(), Digest::of(&body));
        (&stream).write_all(header.as_bytes()).unwrap();
        (&stream).write_all(&body[..body.len() / 2]).unwrap();
        half_sent.send(()).unwrap();
        wait.recv_timeout(WAIT).unwrap();
        (&stream).write_all(&body[body.len() / 2..]).unwrap();
    });
    let out = tempfile::tempdir().unwrap();
    let first = {
        let dir = OutDir::create(out.path()).unwrap();
        thread::spawn(move || Client::connect(&addr.to_string(), WAIT).unwrap().download(&name("f.bin"), &dir, false))
    };
    is_half_sent.recv_timeout(WAIT).unwrap();
    // Wait (bounded) until the first download has written into its .part.
    let part = out.path().join("f.bin.part");
    let deadline = std::time::Instant::now() + WAIT;
    while fs::metadata(&part).map_or(0, |m| m.len()) == 0 && std::time::Instant::now() < deadline {
        thread::yield_now();
    }

    // The second download of the same name, same folder, from a real server with other bytes.
    let dirs = Dirs::new();
    dirs.put("f.bin", &pattern(1000 + ft::client::SMALL_FILE as usize));
    let server = TestServer::start(dirs.config());
    let dir = OutDir::create(out.path()).unwrap();
    for resume in [false, true] {
        match server.client().download(&name("f.bin"), &dir, resume) {
            Err(ClientError::Local { path, source }) => {
                assert_eq!(path, part);
                assert_eq!(source.kind(), std::io::ErrorKind::ResourceBusy, "{source}");
                assert!(source.to_string().contains("another download"), "{source}");
            }
            other => panic!("resume {resume}: the second download must fail clearly, got {other:?}"),
        }
    }
    assert!(!out.path().join("f.bin").exists());

    go_on.send(()).unwrap();
    let done = first.join().unwrap().unwrap();
    slow.join().unwrap();
    assert_eq!(done.size, data.len() as u64);
    assert!(fs::read(out.path().join("f.bin")).unwrap() == data, "exactly the verified bytes");
    assert!(!part.exists());
    // Once the first is done, the name is free again.
    server.client().download(&name("f.bin"), &dir, false).unwrap();
}

#[test]
fn a_saved_file_keeps_the_servers_modification_time() {
    use std::os::unix::fs::MetadataExt;
    let dirs = Dirs::new();
    let when = std::time::UNIX_EPOCH + Duration::new(1_000_000_000, 123_456_789); // 2001
    for (n, len) in [("small.txt", 10), ("big.bin", 3 * ft::client::SMALL_FILE as usize)] {
        let path = dirs.put(n, &pattern(len));
        fs::File::options().write(true).open(&path).unwrap().set_modified(when).unwrap();
    }
    crate::util::wait_settled();
    let server = TestServer::start(dirs.config());
    let out = tempfile::tempdir().unwrap();
    let dir = OutDir::create(out.path()).unwrap();
    let names = [name("small.txt"), name("big.bin")];
    let mut failed = 0;
    server.client().download_all(&names, &dir, false, |_, r| failed += usize::from(r.is_err()));
    assert_eq!(failed, 0);
    for n in ["small.txt", "big.bin"] {
        let meta = fs::metadata(out.path().join(n)).unwrap();
        assert_eq!((meta.mtime(), meta.mtime_nsec()), (1_000_000_000, 123_456_789), "{n}");
    }
}
