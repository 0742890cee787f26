//! Compression on the wire: text shrinks, noise and already-compressed formats go as they are,
//! small files and streams to stdout too, compression and delta together, frames that lie about
//! their size are refused, and a server without `zstd` is asked plainly.

use std::fs;
use std::thread;

use ft::client::tree::TreeOptions;
use ft::client::{Client, ClientError, OutDir};
use ft::digest::Digest;
use ft::name::Name;

use crate::util::{Dirs, TestServer, WAIT};

fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
}

/// Lines like a web server's log: they compress several times over.
pub(crate) fn log_text(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 100);
    let mut i = 0u64;
    while out.len() < len {
        i += 1;
        let line = format!(
            "2026-11-{:02}T10:{:02}:00Z web{:02} GET /api/v1/items/{} 200 {}ms\n",
            i % 30,
            i % 60,
            i % 7,
            i % 500,
            i % 900
        );
        out.extend_from_slice(line.as_bytes());
    }
    out.truncate(len);
    out
}

/// Bytes no compressor can shrink.
pub(crate) fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn compressing(server: &TestServer) -> Client {
    let mut client = server.client();
    client.set_compress(true);
    client
}

#[test]
fn text_shrinks_and_noise_and_packed_formats_go_as_they_are() {
    let dirs = Dirs::new();
    let text = log_text(3 << 20);
    dirs.put("log.txt", &text);
    dirs.put("noise.bin", &noise(2 << 20));
    dirs.put("text.gz", &text[..1 << 20]);
    dirs.put("small.txt", &text[..10_000]);
    let server = TestServer::start(dirs.config());
    let out_dir = tempfile::tempdir().unwrap();
    let out = OutDir::create(out_dir.path()).unwrap();
    let mut client = compressing(&server);
    let log = client.download(&name("log.txt"), &out, true).unwrap();
    assert!(log.moved() < text.len() as u64 / 4, "{log:?}");
    assert_eq!(log.moved() + log.compression_saved, text.len() as u64);
    assert!(fs::read(out_dir.path().join("log.txt")).unwrap() == text);
    let noise = client.download(&name("noise.bin"), &out, true).unwrap();
    assert_eq!((noise.compression_saved, noise.moved()), (0, 2 << 20), "noise does not shrink");
    let gz = client.download(&name("text.gz"), &out, true).unwrap();
    assert_eq!(gz.compression_saved, 0, "a .gz is never tried, whatever it holds");
    // A small file comes back in memory and is saved by a writer, compressed all the same.
    let small = client.download(&name("small.txt"), &out, true).unwrap();
    assert!(small.compression_saved > 5000, "{small:?}");
    assert!(fs::read(out_dir.path().join("small.txt")).unwrap() == text[..10_000]);
    assert_eq!(server.stat("compressed_bytes_saved"), log.compression_saved + small.compression_saved);
    assert_eq!(server.stat("delta_gets"), 0, "no signature, no delta");
    // To a stream, the same.
    let mut piped = Vec::new();
    assert_eq!(compressing(&server).get(&name("log.txt"), &mut piped).unwrap(), text.len() as u64);
    assert!(piped == text);
    // Not asked for: nothing compressed.
    let before = server.stat("compressed_bytes_saved");
    let plain = server.client().download(&name("log.txt"), &out, true).unwrap();
    assert_eq!(plain.compression_saved, 0);
    assert_eq!(server.stat("compressed_bytes_saved"), before);
}

#[test]
fn a_long_compressed_transfer_arrives_whole_whatever_its_pace() {
    // Every MiB half noise, half text: each record shrinks by about half. Past the first 8 MiB
    // on the wire the server may send records as they are (loopback takes bytes faster than it
    // compresses them), and back: the file arrives whole, and the counts add up.
    let mut bytes = Vec::new();
    for _ in 0..24 {
        bytes.extend_from_slice(&noise(512 << 10));
        bytes.extend_from_slice(&log_text(512 << 10));
    }
    let dirs = Dirs::new();
    dirs.put("mixed.bin", &bytes);
    let server = TestServer::start(dirs.config());
    let out_dir = tempfile::tempdir().unwrap();
    let out = OutDir::create(out_dir.path()).unwrap();
    let done = compressing(&server).download(&name("mixed.bin"), &out, true).unwrap();
    assert!(fs::read(out_dir.path().join("mixed.bin")).unwrap() == bytes);
    assert_eq!(done.moved() + done.compression_saved, bytes.len() as u64);
    assert!(done.compression_saved >= 4 << 20, "the first 8 MiB on the wire go compressed: {done:?}");
    assert_eq!(server.stat("compressed_bytes_saved"), done.compression_saved);
}

#[test]
fn a_tree_of_text_comes_compressed_and_a_changed_file_as_a_compressed_delta() {
    let dirs = Dirs::new();
    let mut big = log_text(2 << 20);
    dirs.put("t/big.log", &big);
    for i in 0..50 {
        dirs.put(&format!("t/s/{i}.txt"), &log_text(3000 + i));
    }
    let server = TestServer::start(dirs.config());
    let out_dir = tempfile::tempdir().unwrap();
    let out = OutDir::create(out_dir.path()).unwrap();
    let options = TreeOptions { resume: true, ..TreeOptions::default() };
    let mut client = compressing(&server);
    client.set_delta(true);
    let first = client.fetch_tree(&[Some(name("t"))], &out, options, |_| {}).unwrap();
    assert_eq!((first.fetched, first.failed), (51, 0));
    assert!(first.compression_saved > first.bytes * 2, "{first:?}");
    // 100 KiB of new lines in the middle: a delta whose new bytes are compressed too.
    let middle = log_text(100 << 10).into_iter().rev().collect::<Vec<_>>();
    big.splice(1 << 20..1 << 20, middle);
    dirs.put("t/big.log", &big);
    let mut client = compressing(&server);
    client.set_delta(true);
    let again = client.fetch_tree(&[Some(name("t"))], &out, options, |_| {}).unwrap();
    assert_eq!(again.fetched, 1, "{again:?}");
    assert!(again.reused > 2_000_000, "{again:?}");
    assert!(again.compression_saved > 0 && again.bytes < 100 << 10, "{again:?}");
    assert!(fs::read(out_dir.path().join("t/big.log")).unwrap() == big);
    assert_eq!(server.stat("delta_gets"), 1);
}

/// A server that agrees to `features`, answers the request after `hello` with `reply`, and
/// reports that request's line.
fn fake(features: &'static str, reply: Vec<u8>) -> (std::net::SocketAddr, thread::JoinHandle<String>) {
    crate::util::fake_speaker(features, vec![reply], |_, _| {})
}

fn fetch_from(addr: std::net::SocketAddr, out: &OutDir) -> Result<ft::client::Downloaded, ClientError> {
    let mut client = Client::connect(&addr.to_string(), WAIT).unwrap();
    client.set_compress(true);
    client.download(&name("f.txt"), out, true)
}

#[test]
fn frames_that_lie_about_their_size_are_refused_and_nothing_is_saved() {
    let text = b"hello hello hello hello hello hello hello hello".repeat(100);
    let frame = zstd::bulk::compress(&text, 1).unwrap();
    let n = text.len() as u64;
    let reply = |said: u64, trailer: Digest| {
        let mut r = format!("OK delta size={said} mode=644 mtime=1 mtime_ns=0\n").into_bytes();
        r.push(b'z');
        r.extend(leb(said));
        r.extend(leb(frame.len() as u64));
        r.extend_from_slice(&frame);
        r.push(b'e');
        r.extend(leb(said));
        r.extend(format!("OK xxh3={trailer}\n").into_bytes());
        r
    };
    for (what, said) in [("says fewer bytes than it holds", n - 1), ("says more", n + 1)] {
        let dir = tempfile::tempdir().unwrap();
        let out = OutDir::create(dir.path()).unwrap();
        let (addr, server) = fake("trailer,delta,zstd", reply(said, Digest::of(&text)));
        let err = fetch_from(addr, &out).unwrap_err();
        assert!(matches!(err, ClientError::Protocol(_)), "{what}: {err}");
        assert!(err.to_string().contains("compressed record"), "{what}: {err}");
        assert!(server.join().unwrap().starts_with("delta 0 512 f.txt"), "{what}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0, "{what}: nothing is left");
    }
    // The honest frame is taken.
    let dir = tempfile::tempdir().unwrap();
    let out = OutDir::create(dir.path()).unwrap();
    let (addr, server) = fake("trailer,delta,zstd", reply(n, Digest::of(&text)));
    let done = fetch_from(addr, &out).unwrap();
    assert_eq!(done.compression_saved, n - frame.len() as u64);
    server.join().unwrap();
    assert!(fs::read(dir.path().join("f.txt")).unwrap() == text);
}

/// `v` in LEB128.
fn leb(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

#[test]
fn a_server_without_zstd_is_asked_plainly_once_it_has_said_so() {
    // Before the reply to hello the first file is asked for as records, on the bet that the
    // server speaks them: one that speaks delta without zstd answers them uncompressed. Once its
    // reply is read, files are asked for plainly.
    let body = b"plain";
    let records = [b"OK delta size=5 mode=644 mtime=1 mtime_ns=0\nl".to_vec(), leb(5), body.to_vec()];
    let mut first = records.concat();
    first.push(b'e');
    first.extend(leb(5));
    first.extend(format!("OK xxh3={}\n", Digest::of(body)).into_bytes());
    let mut second = format!("OK 5 xxh3={}\n", Digest::of(body)).into_bytes();
    second.extend_from_slice(body);
    let dir = tempfile::tempdir().unwrap();
    let out = OutDir::create(dir.path()).unwrap();
    let (addr, server) = crate::util::fake_speaker("trailer,delta", vec![first, second], |_, _| {});
    let mut client = Client::connect(&addr.to_string(), WAIT).unwrap();
    client.set_compress(true);
    client.download(&name("f.txt"), &out, true).unwrap();
    client.download(&name("g.txt"), &out, true).unwrap();
    drop(client);
    assert_eq!(server.join().unwrap(), "delta 0 512 f.txt\nget g.txt\n");
    assert!(fs::read(dir.path().join("f.txt")).unwrap() == body && fs::read(dir.path().join("g.txt")).unwrap() == body);
}

#[test]
fn a_server_without_records_answers_the_bet_unknown_command_and_is_asked_plainly() {
    let body = b"plain";
    let mut whole = format!("OK 5 xxh3={}\n", Digest::of(body)).into_bytes();
    whole.extend_from_slice(body);
    let unknown = b"ERR unknown-command delta\n".to_vec();
    let dir = tempfile::tempdir().unwrap();
    let out = OutDir::create(dir.path()).unwrap();
    let (addr, server) = crate::util::fake_speaker("trailer", vec![unknown, whole], |_, _| {});
    let mut client = Client::connect(&addr.to_string(), WAIT).unwrap();
    client.set_compress(true);
    let done = client.download(&name("f.txt"), &out, true).unwrap();
    assert_eq!(done.size, 5);
    drop(client);
    assert_eq!(server.join().unwrap(), "delta 0 512 f.txt\nget f.txt\n");
    assert!(fs::read(dir.path().join("f.txt")).unwrap() == body);
    // To a stream, the same.
    let mut whole = format!("OK 5 xxh3={}\n", Digest::of(body)).into_bytes();
    whole.extend_from_slice(body);
    let unknown = b"ERR unknown-command delta\n".to_vec();
    let (addr, server) = crate::util::fake_speaker("trailer", vec![unknown, whole], |_, _| {});
    let mut client = Client::connect(&addr.to_string(), WAIT).unwrap();
    client.set_compress(true);
    let mut piped = Vec::new();
    assert_eq!(client.get(&name("f.txt"), &mut piped).unwrap(), 5);
    drop(client);
    assert_eq!(server.join().unwrap(), "delta 0 512 f.txt\nget f.txt\n");
    assert_eq!(piped, body);
}
