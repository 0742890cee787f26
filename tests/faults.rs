//! Faults: peers that vanish, stall, trickle or flood; files that change under the server; resume
//! from good and bad `.part` files; and a fake server that lies.

use std::fs;
use std::io::{BufReader, Read, Write};
use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

use ft::client::{Client, ClientError, OutDir};
use ft::digest::Digest;
use ft::name::Name;
use ft::server::Config;

use crate::util::{Dirs, TestServer, WAIT, Wire, next_request, pattern, reset, settle};

fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
}

/// A server whose cache is too small for the big test files, so they are streamed from disk.
fn streaming(dirs: &Dirs, tweak: impl FnOnce(Config) -> Config) -> TestServer {
    TestServer::start(tweak(Config { cache_size: 1 << 20, ..dirs.config() }))
}

#[test]
fn clients_that_vanish_mid_transfer_release_their_threads() {
    let dirs = Dirs::new();
    dirs.put("big.bin", &pattern(16 << 20));
    dirs.put("cached.bin", &pattern(200_000));
    let server = streaming(&dirs, |c| c);
    for (i, file) in ["big.bin", "cached.bin", "big.bin", "cached.bin"].iter().enumerate() {
        let mut w = server.connect();
        w.send(format!("get {file}\n"));
        assert!(w.line().starts_with("OK "));
        w.bytes(1000 * (i + 1));
        reset(w.stream);
    }
    server.wait_connections(0);
    assert_eq!(server.connect().get("cached.bin"), pattern(200_000), "still serving");
}

#[test]
fn a_reader_that_stops_reading_is_cut_off_by_the_send_timeout() {
    let dirs = Dirs::new();
    dirs.put("big.bin", &pattern(32 << 20));
    let server = streaming(&dirs, |c| Config { send_timeout: Duration::from_millis(300), ..c });
    let mut stalled = server.connect();
    stalled.sync().send("get big.bin\n");
    // The stalled peer stays connected but never reads: its thread must still be released.
    server.wait_connections(0);
    assert!(server.connect().get("big.bin") == pattern(32 << 20));
    drop(stalled);
}

#[test]
fn a_slow_but_steady_reader_is_served_to_the_end() {
    let dirs = Dirs::new();
    let data = pattern(4 << 20);
    dirs.put("big.bin", &data);
    let server = streaming(&dirs, |c| Config { send_timeout: Duration::from_millis(500), ..c });
    let mut w = server.connect();
    w.send("get big.bin\n");
    assert!(w.line().starts_with("OK 4194304 "));
    // Pacing, not synchronisation: 20 reads 100 ms apart take 4x the send timeout in total,
    // but every write the server makes progresses well within it.
    let mut got = Vec::new();
    while got.len() < data.len() {
        thread::sleep(Duration::from_millis(100));
        let want = (data.len() - got.len()).min(data.len() / 20 + 1);
        got.extend(w.bytes(want));
    }
    assert!(got == data);
}

#[test]
fn a_slowloris_trickling_one_byte_at_a_time_is_cut_off_by_the_line_deadline() {
    let dirs = Dirs::new();
    dirs.put("x", b"x");
    let server = TestServer::start(Config { request_timeout: Duration::from_millis(600), ..dirs.config() });
    let mut w = server.connect();
    w.stream.set_nodelay(true).unwrap();
    let mut cut = false;
    let line = b"get xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
    let mut sent = 0;
    // Pacing: a byte every 100 ms never lets a per-read timeout of 600 ms fire; only a total
    // deadline on the line does. Trickling stops as soon as the server has said something.
    for b in line.iter() {
        if w.stream.write_all(&[*b]).is_err() {
            cut = true;
            break;
        }
        sent += 1;
        thread::sleep(Duration::from_millis(100));
        if has_spoken(&w.stream) {
            break;
        }
    }
    let reply = w.line();
    assert!(reply.starts_with("ERR timeout "), "{reply} (cut while writing: {cut})");
    // Counted, not timed: the line was cut off before its end (75 bytes would take 7.5 s).
    assert!(sent < line.len(), "the whole line went through ({sent} bytes)");
    server.wait_connections(0);
}

#[test]
fn a_flood_past_max_conns_is_refused_quickly_and_honest_clients_are_still_served() {
    let dirs = Dirs::new();
    dirs.put("x", b"x");
    let server = TestServer::start(Config { max_conns: 8, ..dirs.config() });
    let mut held: Vec<Wire> = (0..8).map(|_| server.connect()).collect();
    for w in &mut held {
        w.sync();
    }
    let started = Instant::now();
    for _ in 0..200 {
        let mut w = server.connect();
        assert!(w.line().starts_with("ERR busy "));
        assert!(w.closed());
    }
    assert!(started.elapsed() < Duration::from_secs(5), "refusals took {:?}", started.elapsed());
    assert_eq!(server.stat("connections_refused"), 200);
    assert_eq!(held[3].get("x"), b"x", "held connections are unaffected");
    drop(held.pop());
    server.wait_connections(7);
    assert_eq!(server.connect().get("x"), b"x", "an honest client gets the freed slot");
}

#[test]
fn a_file_truncated_while_streamed_is_cut_short_never_padded() {
    let dirs = Dirs::new();
    let path = dirs.put("big.bin", &pattern(24 << 20));
    let server = streaming(&dirs, |c| c);
    let mut client = server.client();
    let out = tempfile::tempdir().unwrap();
    // Read the header and a little, truncate, then let the client read on.
    let mut w = server.connect();
    w.send("get big.bin\n");
    assert!(w.line().starts_with("OK 25165824 "));
    w.bytes(1000);
    fs::File::options().write(true).open(&path).unwrap().set_len(1 << 20).unwrap();
    let mut rest = Vec::new();
    w.stream.set_read_timeout(Some(WAIT)).unwrap();
    let _ = BufReader::new(&w.stream).read_to_end(&mut rest);
    assert!((rest.len() as u64) < (24 << 20) - 1000, "the server sent {} bytes past the truncation", rest.len());
    // The library client sees a short body and keeps no final file.
    let dir = OutDir::create(out.path()).unwrap();
    match client.download(&name("big.bin"), &dir, false) {
        Ok(done) => assert_eq!(done.size, 1 << 20, "a fresh request sees the new size"),
        Err(e) => panic!("{e}"),
    }
    server.wait_connections(1);
}

#[test]
fn resume_continues_a_good_part_and_sends_only_the_rest() {
    let dirs = Dirs::new();
    let data = pattern(3 << 20);
    dirs.put("f.bin", &data);
    for (cache_size, what) in [(64 << 20, "cached"), (1 << 20, "streamed")] {
        let server = TestServer::start(Config { cache_size, ..dirs.config() });
        let out = tempfile::tempdir().unwrap();
        fs::write(out.path().join("f.bin.part"), &data[..1_000_000]).unwrap();
        let dir = OutDir::create(out.path()).unwrap();
        let mut client = server.client();
        let done = client.download(&name("f.bin"), &dir, true).unwrap();
        assert_eq!((done.resumed_from, done.started_over), (1_000_000, false), "{what}");
        assert!(fs::read(out.path().join("f.bin")).unwrap() == data, "{what}");
        assert!(!out.path().join("f.bin.part").exists());
        // Asked on the same connection, so the server has counted the body before answering.
        let sent = client.stats().unwrap().into_iter().find(|(k, _)| k == "bytes_sent").unwrap().1;
        assert_eq!(sent, data.len() as u64 - 1_000_000, "{what}: only the rest was sent");
    }
}

#[test]
fn a_corrupt_or_outdated_part_is_never_spliced_in() {
    let dirs = Dirs::new();
    let v1 = pattern(2 << 20);
    let mut v2 = v1.clone();
    v2[10] ^= 0xff; // a new version that differs early
    let mut grown = v1.clone();
    grown.extend_from_slice(b"appended"); // a new version that only grew
    let mut corrupt = v1[..500_000].to_vec();
    corrupt[400_000] ^= 1;
    let cases: [(&str, &[u8], &[u8], bool); 4] = [
        ("corrupt part", &v1, &corrupt, true),
        ("older version", &v2, &v1[..500_000], true),
        ("grown file", &grown, &v1[..500_000], false),
        ("part longer than the file", &v1[..1000], &v1[..5000], true),
    ];
    for (what, server_file, part, starts_over) in cases {
        dirs.put("f.bin", server_file);
        let server = streaming(&dirs, |c| c);
        let out = tempfile::tempdir().unwrap();
        fs::write(out.path().join("f.bin.part"), part).unwrap();
        let dir = OutDir::create(out.path()).unwrap();
        let done = server.client().download(&name("f.bin"), &dir, true).unwrap();
        assert_eq!(done.started_over, starts_over, "{what}");
        assert!(fs::read(out.path().join("f.bin")).unwrap() == server_file, "{what}");
    }
}

/// A one-connection fake server answering each request line with the next canned reply.
fn liar(replies: Vec<Vec<u8>>) -> (String, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handle = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut reader = BufReader::new(&stream);
        for reply in replies {
            if next_request(&mut reader).is_empty() {
                return;
            }
            if (&stream).write_all(&reply).is_err() {
                return;
            }
        }
    });
    (addr, handle)
}

#[test]
fn a_lying_server_cannot_get_a_wrong_or_misplaced_file_saved() {
    let out = tempfile::tempdir().unwrap();
    let dir = OutDir::create(out.path()).unwrap();
    let wrong = format!("OK 5 xxh3={}\nhello", Digest::of(b"HELLO"));
    let huge = format!("OK 18446744073709551615 xxh3={}\nshort", Digest(1));
    let sneaky_list = b"OK 1\n5 0 ../../etc/cron.d/evil\n".to_vec();
    let odd_offset = format!("OK 3 offset=2 size=5 xxh3={}\nllo", Digest::of(b"hello"));
    let (addr, fake) = liar(vec![wrong.into_bytes(), sneaky_list]);
    let mut client = Client::connect(&addr, WAIT).unwrap();
    assert!(matches!(client.download(&name("f"), &dir, false), Err(ClientError::Integrity { .. })));
    assert!(matches!(client.list(None), Err(ClientError::Protocol(_))));
    fake.join().unwrap();

    // A size no disk holds is refused before a byte is written (it used to fill the .part until
    // the connection ended), and leaves no .part.
    let (addr, fake) = liar(vec![huge.into_bytes()]);
    let mut client = Client::connect(&addr, WAIT).unwrap();
    match client.download(&name("huge"), &dir, false) {
        Err(ClientError::Local { source, .. }) => assert_eq!(source.kind(), std::io::ErrorKind::StorageFull),
        other => panic!("expected not enough space, got {other:?}"),
    }
    fake.join().unwrap();
    // A body shorter than announced: an interrupted download, its .part kept for resume.
    let short = format!("OK 1000000 xxh3={}\nshort", Digest(1));
    let (addr, fake) = liar(vec![short.into_bytes()]);
    let mut client = Client::connect(&addr, WAIT).unwrap();
    assert!(matches!(client.download(&name("g"), &dir, false), Err(ClientError::ShortBody { .. })));
    fake.join().unwrap();

    // An offset the client never asked for.
    let (addr, fake) = liar(vec![odd_offset.into_bytes()]);
    let mut client = Client::connect(&addr, WAIT).unwrap();
    assert!(matches!(client.download(&name("h"), &dir, false), Err(ClientError::Protocol(_))));
    fake.join().unwrap();

    let mut left: Vec<String> =
        fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    left.sort();
    assert_eq!(left, ["g.part"], "only the interrupted download's .part remains, for resume");
}

#[test]
fn shutdown_lets_transfers_in_flight_finish_and_closes_idle_connections() {
    let dirs = Dirs::new();
    let data = pattern(8 << 20);
    dirs.put("big.bin", &data);
    let mut server = streaming(&dirs, |c| c);
    let mut idle = server.connect();
    idle.sync();
    let mut busy = server.connect();
    busy.send("get big.bin\n");
    assert!(busy.line().starts_with("OK "));
    let stopping = server.stop_in_background();
    // The idle connection is closed at once; the busy one still receives the whole file.
    assert!(idle.closed());
    assert!(busy.bytes(data.len()) == data);
    assert!(busy.closed());
    assert!(stopping.join().unwrap(), "every connection finished within the grace period");
}

#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let dirs = Dirs::new();
    let server = TestServer::start(Config { idle_timeout: Duration::from_millis(300), ..dirs.config() });
    let mut idle = server.connect();
    idle.sync();
    let started = Instant::now();
    assert!(idle.closed(), "the server closes a connection that sends nothing");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(250) && waited < Duration::from_secs(5), "closed after {waited:?}");
    server.wait_connections(0);
}

#[test]
fn repeated_resume_checks_cost_the_server_little() {
    let dirs = Dirs::new();
    let data = pattern(40 << 20);
    dirs.put("big.bin", &data);
    let server = streaming(&dirs, |c| c);
    let mut w = server.connect();
    // The cheapest request there is: claim to hold the whole file already, so nothing is sent.
    let claim = format!("resume {} {} big.bin\n", data.len(), Digest::of(&data));
    w.send(claim.repeat(40));
    for _ in 0..40 {
        assert!(w.line().starts_with(&format!("OK 0 offset={}", data.len())));
    }
    // Hashed once for its digest, plus one stretch between marks for the prefix; not 40 times.
    let hashed = server.stat("bytes_hashed");
    assert!(hashed <= data.len() as u64 + (16 << 20), "{hashed} bytes hashed for 40 checks");
    // Any other offset reads at most one stretch between marks.
    let prefix = 25 << 20;
    w.send(format!("resume {prefix} {} big.bin\n", Digest::of(&data[..prefix])));
    assert!(w.line().starts_with(&format!("OK {} offset={prefix}", data.len() - prefix)));
    w.bytes(data.len() - prefix);
    assert!(server.stat("bytes_hashed") - hashed <= 16 << 20);
}

#[test]
fn the_digest_of_a_file_still_being_written_is_not_remembered() {
    let dirs = Dirs::new();
    dirs.put("settled.bin", &pattern(2 << 20));
    let server = streaming(&dirs, |c| c);
    let mut w = server.connect();
    w.sync();
    // Written just now: its change time is within the settle time for both requests, which come
    // at once (small, and before anything else, so that a loaded machine does not let it settle
    // in between).
    fs::write(dirs.root.path().join("fresh.bin"), pattern(256 << 10)).unwrap();
    w.get("fresh.bin");
    w.get("fresh.bin");
    w.get("settled.bin");
    w.get("settled.bin");
    // settled.bin hashed once and remembered; fresh.bin hashed for each request.
    assert_eq!(server.stat("digests_computed"), 3);
}

/// A raw connection that has agreed to trailers.
fn with_trailers(server: &TestServer) -> Wire {
    let mut w = server.connect();
    w.send("hello 1 trailer\n");
    assert_eq!(w.line(), "OK 1 features=trailer");
    w
}

#[test]
fn the_first_byte_of_an_uncached_file_does_not_wait_for_its_digest() {
    let dirs = Dirs::new();
    let data = pattern(48 << 20);
    dirs.put("big.bin", &data);
    let server = streaming(&dirs, |c| c);
    let mut w = with_trailers(&server);
    w.send("get big.bin\n");
    // The header comes before any hashing: no digest in it, the bytes follow at once.
    let header = w.line();
    assert!(header.starts_with(&format!("OK {} ", data.len())) && !header.contains("xxh3="), "{header}");
    assert_eq!(server.stat("bytes_hashed"), 0, "nothing hashed before the first byte");
    assert!(w.bytes(data.len()) == data);
    assert_eq!(w.line(), format!("OK xxh3={}", Digest::of(&data)), "the digest follows the body");
    // Hashed once, behind the sending, and remembered: the next get names it up front and
    // hashes nothing.
    let hashed = server.stat("bytes_hashed");
    assert_eq!(hashed, data.len() as u64);
    w.send("get big.bin\n");
    let mtime = crate::util::mtime_fields(&dirs.root.path().join("big.bin"));
    assert_eq!(w.line(), format!("OK {} xxh3={} mode=644{mtime}", data.len(), Digest::of(&data)));
    assert!(w.bytes(data.len()) == data);
    assert_eq!(server.stat("bytes_hashed"), hashed);
    // A client that did not agree to trailers is sent the digest in the header, as always.
    assert!(server.connect().get("big.bin") == data);
}

#[test]
fn a_file_changed_while_it_is_sent_never_arrives_verified() {
    let dirs = Dirs::new();
    let data = pattern(24 << 20);
    let path = dirs.put("big.bin", &data);
    let server = streaming(&dirs, |c| c);
    let mut w = with_trailers(&server);
    w.send("get big.bin\n");
    assert!(w.line().starts_with(&format!("OK {} ", data.len())));
    let first = w.bytes(1 << 20);
    assert!(first == data[..1 << 20]);
    // Rewritten in place, same size, while the rest is on its way.
    let mut file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all(&vec![b'B'; data.len()]).unwrap();
    drop(file);
    w.bytes(data.len() - (1 << 20));
    let trailer = w.line();
    assert!(trailer.starts_with("ERR changed it changed while it was being sent"), "{trailer}");
    // The connection goes on, and the new contents come whole.
    settle(&path);
    assert!(w.get("big.bin") == vec![b'B'; data.len()]);

    // Through the client: an error that names the file, and nothing saved or left behind.
    fs::write(&path, &data).unwrap();
    settle(&path);
    let out = tempfile::tempdir().unwrap();
    let dir = OutDir::create(out.path()).unwrap();
    /// Rewrites the file in place, once, when the first body bytes arrive.
    struct Rewrite(std::path::PathBuf, std::sync::atomic::AtomicBool);
    impl ft::client::Progress for Rewrite {
        fn begin(&self, _: &Name, _: u64) {}
        fn advance(&self, _: u64) {
            if !self.1.swap(true, std::sync::atomic::Ordering::Relaxed) {
                let mut file = fs::OpenOptions::new().write(true).open(&self.0).unwrap();
                file.write_all(&vec![b'C'; 24 << 20]).unwrap();
            }
        }
    }
    let mut client = server.client();
    client.set_progress(std::sync::Arc::new(Rewrite(path.clone(), Default::default())));
    match client.download(&name("big.bin"), &dir, false) {
        Err(ClientError::Server(reply)) => assert_eq!(reply.code, "changed"),
        other => panic!("{other:?}"),
    }
    assert!(client.is_usable());
    assert!(!out.path().join("big.bin").exists() && !out.path().join("big.bin.part").exists());
}

#[test]
fn a_file_renamed_over_while_it_is_sent_arrives_whole_as_the_version_opened() {
    let dirs = Dirs::new();
    let data = pattern(24 << 20);
    let path = dirs.put("big.bin", &data);
    let server = streaming(&dirs, |c| c);
    let mut w = with_trailers(&server);
    w.send("get big.bin\n");
    assert!(w.line().starts_with(&format!("OK {} ", data.len())));
    let first = w.bytes(1 << 20);
    // A new version renamed over it (which moves the old file's change time, as an unlink does),
    // and the old one deleted outright, each while the rest is on its way.
    let new = dirs.root.path().join("big.bin.new");
    fs::write(&new, vec![b'N'; data.len()]).unwrap();
    fs::rename(&new, &path).unwrap();
    let rest = w.bytes(data.len() - (1 << 20));
    assert!(first == data[..1 << 20] && rest == data[1 << 20..]);
    assert_eq!(w.line(), format!("OK xxh3={}", ft::digest::Digest::of(&data)));
    settle(&path);
    w.send("get big.bin\n");
    assert!(w.line().starts_with(&format!("OK {} ", data.len())));
    w.bytes(1 << 20);
    fs::remove_file(&path).unwrap();
    w.bytes(data.len() - (1 << 20));
    assert_eq!(w.line(), format!("OK xxh3={}", ft::digest::Digest::of(&vec![b'N'; data.len()])));
}

#[test]
fn resuming_a_cut_off_download_does_not_hash_the_file_from_the_start() {
    let dirs = Dirs::new();
    let data = pattern(128 << 20);
    dirs.put("big.bin", &data);
    let server = streaming(&dirs, |c| c);
    let mut w = with_trailers(&server);
    w.send("get big.bin\n");
    w.line();
    let kept = 100 << 20;
    assert!(w.bytes(kept) == data[..kept]);
    let stream = w.stream.try_clone().unwrap();
    drop(w);
    reset(stream);
    server.wait_connections(0);
    // The server hashes 16 MiB behind what it sends and keeps a mark every 16 MiB: the prefix
    // check starts from the last mark it passed, not from the first byte.
    let before = server.stat("bytes_hashed");
    let mut w = with_trailers(&server);
    w.send(format!("resume {kept} {} big.bin\n", Digest::of(&data[..kept])));
    assert!(w.line().starts_with(&format!("OK {} offset={kept} size={}", data.len() - kept, data.len())));
    let checked = server.stat("bytes_hashed") - before;
    assert!(checked <= (32 << 20) + (256 << 10), "{checked} bytes hashed to check a {kept}-byte prefix");
    assert!(w.bytes(data.len() - kept) == data[kept..]);
    assert_eq!(w.line(), format!("OK xxh3={}", Digest::of(&data)));
}

/// Whether the peer has sent something (or closed) that is waiting to be read, without reading it.
fn has_spoken(stream: &std::net::TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let peeked = stream.peek(&mut [0u8; 1]);
    stream.set_nonblocking(false).unwrap();
    peeked.is_ok()
}
