//! Delta downloads end to end: edited, grown, shrunk and shifted files rebuilt from the older
//! copy with only the change on the wire (`get` and `get -r`), hostile servers whose records or
//! digests are wrong (nothing saved, the older copy kept), hostile clients whose signatures are
//! huge, inconsistent or cut short (refused, the server serving on), and peers that do not speak
//! `delta`.

use std::fs;
use std::net::SocketAddr;
use std::thread::JoinHandle;

use ft::client::tree::TreeOptions;
use ft::client::{Client, ClientError, Downloaded, OutDir};
use ft::delta::{Shape, Signature};
use ft::digest::Digest;
use ft::name::Name;

use crate::util::{Dirs, TestServer, WAIT, pattern};

fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
}

fn delta_client(server: &TestServer) -> Client {
    let mut client = server.client();
    client.set_delta(true);
    client
}

/// Puts `bytes` on the server as `f.bin` and fetches it into `out` as a delta against what is
/// there; checks the result and returns what the download did.
fn sync(dirs: &Dirs, server: &TestServer, out: &OutDir, bytes: &[u8]) -> Downloaded {
    dirs.put("f.bin", bytes);
    let done = delta_client(server).download(&name("f.bin"), out, true).unwrap();
    assert!(fs::read(out.path().join("f.bin")).unwrap() == bytes, "the rebuilt file differs");
    assert!(!out.path().join("f.bin.part").exists());
    done
}

#[test]
fn edited_grown_shrunk_and_shifted_files_cost_only_what_changed() {
    let dirs = Dirs::new();
    let server = TestServer::start(dirs.config());
    let out_dir = tempfile::tempdir().unwrap();
    let out = OutDir::create(out_dir.path()).unwrap();
    let mut now = pattern(1 << 20);
    // The first fetch has nothing to rebuild from: whole.
    let first = sync(&dirs, &server, &out, &now);
    assert_eq!((first.reused, first.moved()), (0, 1 << 20));
    assert_eq!(server.stat("delta_gets"), 0);
    // 1 MiB: blocks of 1 KiB. An edit in place costs the blocks it touches.
    now[500_000..500_100].fill(7);
    let edited = sync(&dirs, &server, &out, &now);
    assert!(edited.moved() <= 2048, "edit: {edited:?}");
    // Grown at the end, and by a byte at the start (every block shifted by one).
    now.extend_from_slice(&pattern(5000));
    let grown = sync(&dirs, &server, &out, &now);
    assert!(grown.moved() <= 5000 + 1024, "grown: {grown:?}");
    now.insert(0, 42);
    let shifted = sync(&dirs, &server, &out, &now);
    assert!(shifted.moved() <= 1024, "shifted: {shifted:?}");
    // Shrunk: bytes cut from the middle, and the end cut off.
    now.drain(300_000..300_333);
    now.truncate(900_000);
    let shrunk = sync(&dirs, &server, &out, &now);
    assert!(shrunk.moved() <= 3 * 1024, "shrunk: {shrunk:?}");
    assert_eq!(server.stat("delta_gets"), 4);
    let saved = edited.reused + grown.reused + shifted.reused + shrunk.reused;
    assert_eq!(server.stat("delta_bytes_saved"), saved);
    // Asked whole (-W), the same file comes whole.
    now[0] ^= 1;
    dirs.put("f.bin", &now);
    let mut whole = server.client();
    whole.set_delta(false);
    let done = whole.download(&name("f.bin"), &out, true).unwrap();
    assert_eq!((done.reused, done.moved()), (0, now.len() as u64));
    assert_eq!(server.stat("delta_gets"), 4);
}

#[test]
fn a_tree_synced_again_moves_only_the_changed_blocks() {
    let dirs = Dirs::new();
    let mut big = pattern(2 << 20);
    dirs.put("t/big.bin", &big);
    for i in 0..20 {
        dirs.put(&format!("t/small{i}"), format!("small {i}").as_bytes());
    }
    let server = TestServer::start(dirs.config());
    let out_dir = tempfile::tempdir().unwrap();
    let out = OutDir::create(out_dir.path()).unwrap();
    let options = TreeOptions { resume: true, ..TreeOptions::default() };
    let first = delta_client(&server).fetch_tree(&[Some(name("t"))], &out, options, |_| {}).unwrap();
    assert_eq!(first.fetched, 21);
    big[1_000_000..1_000_010].fill(0);
    dirs.put("t/big.bin", &big);
    let again = delta_client(&server).fetch_tree(&[Some(name("t"))], &out, options, |_| {}).unwrap();
    assert_eq!(again.fetched, 1, "{again:?}");
    // Blocks of 2 KiB for 2 MiB: the edit costs one or two.
    assert!(again.bytes <= 4096, "{again:?}");
    assert!(fs::read(out_dir.path().join("t/big.bin")).unwrap() == big);
    assert_eq!(server.stat("delta_gets"), 1);
}

/// A server that agrees to `features`, then answers one request (after reading the signature of
/// a `delta`) with `reply`, and reports the request line.
fn fake(features: &'static str, reply: Vec<u8>) -> (SocketAddr, JoinHandle<String>) {
    fake_all(features, vec![reply])
}

/// [`fake`] answering a request with each of `replies` in turn; reports the request lines.
fn fake_all(features: &'static str, replies: Vec<Vec<u8>>) -> (SocketAddr, JoinHandle<String>) {
    crate::util::fake_speaker(features, replies, |line, reader| {
        let mut words = line.split(' ');
        if words.next() == Some("delta") {
            let size: u64 = words.next().unwrap().parse().unwrap();
            let block: u64 = words.next().unwrap().parse().unwrap();
            let shape = Shape::checked(size, block).unwrap();
            Signature::read(shape, reader).unwrap();
        }
    })
}

/// A delta reply for a file of `size` bytes: its records, then the trailer `digest`.
fn reply(size: u64, records: &[u8], digest: Digest) -> Vec<u8> {
    let mut out = format!("OK delta size={size} mode=644 mtime=1000 mtime_ns=0\n").into_bytes();
    out.extend_from_slice(records);
    out.extend_from_slice(format!("OK xxh3={digest}\n").as_bytes());
    out
}

/// A folder holding an older `f.bin` of 200,000 bytes (blocks of 512).
fn with_older() -> (tempfile::TempDir, OutDir, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let older = pattern(200_000);
    fs::write(dir.path().join("f.bin"), &older).unwrap();
    let out = OutDir::create(dir.path()).unwrap();
    (dir, out, older)
}

fn delta_from_fake(addr: SocketAddr, out: &OutDir) -> Result<Downloaded, ClientError> {
    let mut client = Client::connect(&addr.to_string(), WAIT).unwrap();
    client.set_delta(true);
    client.download(&name("f.bin"), out, true)
}

#[test]
fn records_that_point_outside_the_older_copy_or_overrun_the_size_are_refused() {
    const DELTA: &str = "trailer,list-end,list-meta,put,delta";
    let cases: [(&str, Vec<u8>); 4] = [
        ("a block past the end", reply(1024, b"c\x80\x10\x01e\x80\x08", Digest(0))),
        ("a run of blocks past the end", reply(200_000, b"c\x00\xff\xff\x01e\xc0\x9a\x0c", Digest(0))),
        ("more bytes than announced", reply(10, b"l\x0b01234567890e\x0b", Digest(0))),
        ("an unknown record", reply(10, b"z\x0a", Digest(0))),
    ];
    for (what, bytes) in cases {
        let (dir, out, older) = with_older();
        let (addr, server) = fake(DELTA, bytes);
        let err = delta_from_fake(addr, &out).unwrap_err();
        assert!(matches!(err, ClientError::Protocol(_)), "{what}: {err}");
        assert!(err.to_string().contains("delta"), "{what}: {err}");
        assert!(server.join().unwrap().starts_with("delta 200000 512 f.bin"));
        assert!(fs::read(dir.path().join("f.bin")).unwrap() == older, "{what}: the older copy is kept");
        assert!(!dir.path().join("f.bin.part").exists(), "{what}: nothing is left to resume");
    }
}

#[test]
fn a_wrong_rebuild_is_caught_by_the_digest_and_never_saved() {
    let (dir, out, older) = with_older();
    // Blocks 0 and 1 of the older copy, then "new": the digest said is that of something else.
    // The rebuild is refused and the file asked for whole; which fails its check too here.
    let wrong = reply(1027, b"c\x00\x02l\x03newe\x83\x08", Digest::of(b"else"));
    let whole = |body: &[u8], digest: Digest| [format!("OK {} xxh3={digest}\n", body.len()).as_bytes(), body].concat();
    let (addr, server) = fake_all("trailer,delta", vec![wrong.clone(), whole(b"bad", Digest::of(b"good"))]);
    let err = delta_from_fake(addr, &out).unwrap_err();
    assert!(matches!(err, ClientError::Integrity { .. }), "{err}");
    assert_eq!(server.join().unwrap(), "delta 200000 512 f.bin\nget f.bin\n");
    assert!(fs::read(dir.path().join("f.bin")).unwrap() == older);
    assert!(!dir.path().join("f.bin.part").exists());
    // A whole file that passes is saved.
    let (addr, server) = fake_all("trailer,delta", vec![wrong, whole(b"good", Digest::of(b"good"))]);
    let done = delta_from_fake(addr, &out).unwrap();
    assert_eq!((done.size, done.reused), (4, 0));
    server.join().unwrap();
    assert_eq!(fs::read(dir.path().join("f.bin")).unwrap(), b"good");
    fs::write(dir.path().join("f.bin"), &older).unwrap();
    // The same records under the right digest make the file.
    let expected = [&older[..1024], b"new"].concat();
    let (addr, server) = fake("trailer,delta", reply(1027, b"c\x00\x02l\x03newe\x83\x08", Digest::of(&expected)));
    let done = delta_from_fake(addr, &out).unwrap();
    assert_eq!((done.size, done.reused, done.moved()), (1027, 1024, 3));
    server.join().unwrap();
    assert!(fs::read(dir.path().join("f.bin")).unwrap() == expected);
    // A server that says the file changed while it was sent: nothing saved, the copy kept.
    fs::write(dir.path().join("f.bin"), &older).unwrap();
    let mut changed = b"OK delta size=3 mode=644 mtime=1 mtime_ns=0\n".to_vec();
    changed.extend_from_slice(b"l\x03abce\x03ERR changed it changed while it was being sent\n");
    let (addr, server) = fake("trailer,delta", changed);
    let err = delta_from_fake(addr, &out).unwrap_err();
    assert!(matches!(err, ClientError::Server(_)), "{err}");
    server.join().unwrap();
    assert!(fs::read(dir.path().join("f.bin")).unwrap() == older);
    assert!(!dir.path().join("f.bin.part").exists());
}

#[test]
fn a_server_that_does_not_speak_delta_is_asked_for_the_whole_file() {
    let (dir, out, _) = with_older();
    let body = b"whole";
    let mut whole = format!("OK 5 xxh3={}\n", Digest::of(body)).into_bytes();
    whole.extend_from_slice(body);
    let (addr, server) = fake("trailer,list-end", whole);
    let done = delta_from_fake(addr, &out).unwrap();
    assert_eq!((done.size, done.reused), (5, 0));
    assert!(server.join().unwrap().starts_with("get f.bin"));
    assert_eq!(fs::read(dir.path().join("f.bin")).unwrap(), body);
}

#[test]
fn hostile_signatures_are_refused_and_the_server_serves_on() {
    let dirs = Dirs::new();
    dirs.put("a.bin", &pattern(10_000));
    let server = TestServer::start(dirs.config());
    // A block size out of range, and more blocks than any signature may hold: the signature's
    // length cannot be trusted, so the connection closes after the error.
    for line in ["delta 10000 100 a.bin\n", "delta 18446744073709551615 512 a.bin\n", "delta 10000 512\n"] {
        let mut wire = server.connect();
        let reply = wire.send(line).line();
        assert!(reply.starts_with("ERR bad-request"), "{line}: {reply}");
        assert!(reply.contains("the connection closes"), "{reply}");
        assert!(wire.closed(), "{line}");
    }
    // A missing file: refused once the signature is read, in step for the next request.
    let sig = Signature::compute(Shape::checked(1024, 512).unwrap(), &mut &pattern(1024)[..]).unwrap();
    let mut wire = server.connect();
    wire.send("delta 1024 512 missing.bin\n").send(sig.to_bytes());
    assert!(wire.line().starts_with("ERR not-found"));
    assert_eq!(wire.get("a.bin"), pattern(10_000));
    // A signature cut short by a peer that leaves: its connection ends, the others go on.
    let mut cut = server.connect();
    cut.send("delta 1024 512 a.bin\n").send(&sig.to_bytes()[..13]);
    drop(cut);
    assert_eq!(server.connect().get("a.bin"), pattern(10_000));
    // Every checksum the same: answered all the same, and the file rebuilt from bytes alone.
    let mut wire = server.connect();
    wire.send("delta 102400 512 a.bin\n").send(vec![0u8; 200 * 8]);
    let mtime = crate::util::mtime_fields(&dirs.root.path().join("a.bin"));
    assert_eq!(wire.line(), format!("OK delta size=10000 mode=644{mtime}"));
    let mut rebuilt = Vec::new();
    loop {
        let tag = wire.bytes(1)[0];
        if tag == b'e' {
            break;
        }
        assert_eq!(tag, b'l');
        let len = leb128(&mut wire);
        rebuilt.extend(wire.bytes(len as usize));
    }
    assert_eq!(leb128(&mut wire), 10_000);
    assert!(rebuilt == pattern(10_000));
    assert_eq!(wire.line(), format!("OK xxh3={}", Digest::of(&pattern(10_000))));
}

fn leb128(wire: &mut crate::util::Wire) -> u64 {
    let mut v = 0u64;
    for i in 0..10 {
        let b = wire.bytes(1)[0];
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            break;
        }
    }
    v
}

#[test]
fn a_delta_needs_a_token_where_the_server_does() {
    let dirs = Dirs::new();
    dirs.put("a.bin", &pattern(2000));
    let path = dirs.keys.path().join("tokens");
    ft::server::auth::add(&path, "reader", ft::server::auth::Rights { read: true, write: false }).unwrap();
    let server = TestServer::start(ft::server::Config { auth_file: Some(path), ..dirs.config() });
    let sig = Signature::compute(Shape::checked(1024, 512).unwrap(), &mut &pattern(1024)[..]).unwrap();
    let mut wire = server.connect();
    wire.send("delta 1024 512 a.bin\n").send(sig.to_bytes());
    assert!(wire.line().starts_with("ERR unauthorized"));
    wire.send("health\n");
    assert_eq!(wire.line(), "OK ready");
}

#[test]
fn large_signatures_wait_their_turn_and_a_tree_of_them_syncs() {
    // Files of 64 MiB: blocks of 16 KiB, signatures of 32 KiB, each sent only once the requests
    // before it are answered (none blocks the other side), small files pipelined between them.
    let dirs = Dirs::new();
    let mut files: Vec<Vec<u8>> = (0..2).map(|i| [vec![i as u8], pattern((64 << 20) - 1)].concat()).collect();
    for (i, bytes) in files.iter().enumerate() {
        dirs.put(&format!("t/big{i}"), bytes);
        dirs.put(&format!("t/small{i}"), b"small");
    }
    let server = TestServer::start(dirs.config());
    let out_dir = tempfile::tempdir().unwrap();
    let out = OutDir::create(out_dir.path()).unwrap();
    let options = TreeOptions { resume: true, ..TreeOptions::default() };
    delta_client(&server).fetch_tree(&[Some(name("t"))], &out, options, |_| {}).unwrap();
    for (i, bytes) in files.iter_mut().enumerate() {
        bytes[5 << 20] ^= 0xff;
        dirs.put(&format!("t/big{i}"), bytes);
        dirs.put(&format!("t/small{i}"), b"SMALL");
    }
    let again = delta_client(&server).fetch_tree(&[Some(name("t"))], &out, options, |_| {}).unwrap();
    assert_eq!((again.fetched, again.failed), (4, 0), "{again:?}");
    assert!(again.bytes <= 2 * 16384 + 10, "{again:?}");
    for (i, bytes) in files.iter().enumerate() {
        assert!(&fs::read(out_dir.path().join(format!("t/big{i}"))).unwrap() == bytes);
    }
    assert_eq!(server.stat("delta_gets"), 2);
}

#[test]
fn ftclient_says_what_a_delta_saved_and_w_fetches_whole() {
    let dirs = Dirs::new();
    let mut bytes = pattern(300_000);
    dirs.put("f.bin", &bytes);
    let server = TestServer::start(dirs.config());
    let cwd = tempfile::tempdir().unwrap();
    let port = server.addr.port();
    let get = |extra: &[&str]| {
        let args = [extra, &["get", "--json", "f.bin", "-o", "out"]].concat();
        let (code, out, err) = crate::util::ftclient(cwd.path(), port, &args, b"");
        assert_eq!(code, 0, "{err}");
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        (json["bytes_received"].as_u64().unwrap(), json["bytes_reused"].as_u64().unwrap(), json["files"][0].clone())
    };
    assert_eq!(get(&["--delta"]).0, 300_000, "nothing to rebuild from yet");
    bytes[1000] ^= 1;
    dirs.put("f.bin", &bytes);
    let (received, reused, file) = get(&["--delta"]);
    assert_eq!((received, reused), (1024, 300_000 - 1024));
    assert_eq!(file["reused"], reused);
    assert!(fs::read(cwd.path().join("out/f.bin")).unwrap() == bytes);
    // On loopback a file comes whole unless --delta is given; -W says so everywhere.
    bytes[2000] ^= 1;
    dirs.put("f.bin", &bytes);
    assert_eq!(get(&[]).1, 0);
    bytes[3000] ^= 1;
    dirs.put("f.bin", &bytes);
    assert_eq!(get(&["--delta", "-W"]).1, 0, "the last of the two wins");
    assert!(fs::read(cwd.path().join("out/f.bin")).unwrap() == bytes);
}

#[test]
fn ftclient_v_says_the_bytes_moved_beside_the_size() {
    let dirs = Dirs::new();
    let mut bytes = pattern(300_000);
    dirs.put("d/f.bin", &bytes);
    let server = TestServer::start(dirs.config());
    let cwd = tempfile::tempdir().unwrap();
    let port = server.addr.port();
    let run = |args: &[&str]| {
        let (code, _, err) = crate::util::ftclient(cwd.path(), port, args, b"");
        assert_eq!(code, 0, "{err}");
        err
    };
    let err = run(&["-v", "--delta", "get", "d/f.bin", "-o", "out"]);
    assert!(err.contains("got d/f.bin: 293.0 KiB, moved 293.0 KiB\n"), "{err}");
    bytes[1000] ^= 1;
    dirs.put("d/f.bin", &bytes);
    let err = run(&["-v", "--delta", "get", "d/f.bin", "-o", "out"]);
    assert!(err.contains("got d/f.bin: 293.0 KiB, moved 1 KiB (292.0 KiB from the older copy)\n"), "{err}");
    // get -r says it per file with -v, and its summary says what moved and what was spared.
    bytes[2000] ^= 1;
    dirs.put("d/f.bin", &bytes);
    let err = run(&["-v", "--delta", "get", "-r", "d", "-o", "tree"]);
    assert!(err.contains("got d/f.bin: 293.0 KiB, moved 293.0 KiB\n"), "{err}");
    bytes[3000] ^= 1;
    dirs.put("d/f.bin", &bytes);
    let err = run(&["--delta", "get", "-r", "d", "-o", "tree"]);
    assert!(!err.contains("got d/f.bin"), "only -v says it per file: {err}");
    assert!(err.contains("fetched 1 files (1 KiB moved; 292.0 KiB from the older copy)"), "{err}");
    // Without -v nothing is said per file; -v and -q do not go together.
    let err = run(&["--delta", "get", "d/f.bin", "-o", "out"]);
    assert!(!err.contains("moved"), "{err}");
    let (code, _, err) = crate::util::ftclient(cwd.path(), port, &["-v", "-q", "get", "d/f.bin"], b"");
    assert_eq!(code, 2, "{err}");
}

/// Counts what the connection says crossed its socket, as ftclient's progress bar shows it.
struct Wire(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl ft::client::Progress for Wire {
    fn begin(&self, _: &Name, _: u64) {}
    fn advance(&self, _: u64) {}
    fn wire(&self) -> Option<std::sync::Arc<std::sync::atomic::AtomicU64>> {
        Some(self.0.clone())
    }
}

#[test]
fn progress_counts_the_bytes_on_the_wire_not_the_file() {
    let dirs = Dirs::new();
    let mut bytes = pattern(1 << 20);
    let out_dir = tempfile::tempdir().unwrap();
    let out = OutDir::create(out_dir.path()).unwrap();
    let server = TestServer::start(dirs.config());
    let counted = |bytes: &[u8]| {
        dirs.put("f.bin", bytes);
        let wire = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut client = delta_client(&server);
        client.set_progress(std::sync::Arc::new(Wire(wire.clone())));
        client.download(&name("f.bin"), &out, true).unwrap();
        wire.load(std::sync::atomic::Ordering::Relaxed)
    };
    let whole = counted(&bytes);
    assert!((1 << 20..(1 << 20) + 4096).contains(&whole), "a whole file and a little talk: {whole}");
    bytes[5000] ^= 1;
    // The signature goes out and one block comes back, with their lines: not the megabyte.
    let delta = counted(&bytes);
    let block = u64::from(Shape::for_size(1 << 20).unwrap().block);
    let signature = (1 << 20) / block * 8;
    assert!((signature + block..signature + block + 4096).contains(&delta), "{delta}, blocks of {block}");
}

#[test]
fn a_part_left_by_a_cut_off_download_is_the_older_copy() {
    let dirs = Dirs::new();
    let server = TestServer::start(dirs.config());
    let out_dir = tempfile::tempdir().unwrap();
    let out = OutDir::create(out_dir.path()).unwrap();
    let part = out_dir.path().join("f.bin.part");
    // Cut off after 600,000 bytes, the file unchanged since: all but the rest is reused.
    let now = pattern(1 << 20);
    fs::write(&part, &now[..600_000]).unwrap();
    let done = sync(&dirs, &server, &out, &now);
    assert_eq!(done.resumed_from, 0);
    assert!(done.reused >= 600_000 - 1024 && done.moved() <= (1 << 20) - 600_000 + 1024, "{done:?}");
    assert_eq!(server.stat("delta_gets"), 1);
    // Cut off, then the file changed on the server (an edit inside what the .part holds, and
    // a byte inserted at the start): a resume would have started over; the .part's blocks are
    // found where they moved to.
    fs::remove_file(out_dir.path().join("f.bin")).unwrap();
    fs::write(&part, &now[..600_000]).unwrap();
    let mut changed = now.clone();
    changed[300_000..300_010].fill(9);
    changed.insert(0, 1);
    let done = sync(&dirs, &server, &out, &changed);
    assert!(done.reused >= 600_000 - 3 * 1024, "{done:?}");
    assert!(done.moved() <= (1 << 20) - 600_000 + 3 * 1024, "{done:?}");
    // Without resume a .part is not used; without delta it is resumed as before.
    fs::remove_file(out_dir.path().join("f.bin")).unwrap();
    fs::write(&part, &changed[..600_000]).unwrap();
    let done = delta_client(&server).download(&name("f.bin"), &out, false).unwrap();
    assert_eq!((done.reused, done.resumed_from), (0, 0));
    fs::remove_file(out_dir.path().join("f.bin")).unwrap();
    fs::write(&part, &changed[..600_000]).unwrap();
    let done = server.client().download(&name("f.bin"), &out, true).unwrap();
    assert_eq!((done.reused, done.resumed_from), (0, 600_000));
    assert!(fs::read(out_dir.path().join("f.bin")).unwrap() == changed);
}

#[test]
fn a_wrong_rebuild_from_a_part_saves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = OutDir::create(dir.path()).unwrap();
    fs::write(dir.path().join("f.bin.part"), pattern(200_000)).unwrap();
    // Blocks 0 and 1 of the .part, then "new", under a digest of something else: refused, and
    // the file asked for whole, which fails its check too here.
    let wrong = reply(1027, b"c\x00\x02l\x03newe\x83\x08", Digest::of(b"else"));
    let whole = [b"OK 3 xxh3=".as_slice(), Digest::of(b"good").to_string().as_bytes(), b"\nbad"].concat();
    let (addr, server) = fake_all("trailer,delta", vec![wrong, whole]);
    let err = delta_from_fake(addr, &out).unwrap_err();
    assert!(matches!(err, ClientError::Integrity { .. }), "{err}");
    assert_eq!(server.join().unwrap(), "delta 200000 512 f.bin\nget f.bin\n");
    assert!(!dir.path().join("f.bin").exists(), "a wrong rebuild is never saved");
    assert!(!dir.path().join("f.bin.part").exists(), "nor kept to resume");
}
