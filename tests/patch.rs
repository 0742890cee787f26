//! Delta and compressed uploads (`signature` and `patch`) end to end: edited, grown, shrunk and
//! shifted files sent as what the server's copy lacks, big compressible files sent compressed
//! and noise as it is; hostile clients whose records point outside the copy, overrun the size
//! or lie in their digest (refused, nothing stored, the server serving on); a refused patch's
//! records skipped so the connection goes on; a server's copy that changed after its signature
//! (the file sent again whole); a hostile server's huge signature; and servers without `patch`.

use std::fs;
use std::io::{BufRead, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::thread::JoinHandle;

use ft::client::{Client, ClientError, LocalFile, Put, PutOptions, Uploaded};
use ft::delta::{Shape, Signature};
use ft::digest::Digest;
use ft::name::Name;
use ft::server::Config;
use ft::wire::Record;

use crate::compress::{log_text, noise};
use crate::util::{Dirs, TestServer, WAIT, pattern};

fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
}

fn uploads(dirs: &Dirs) -> TestServer {
    TestServer::start(Config { allow_upload: true, allow_overwrite: true, ..dirs.config() })
}

/// Writes `bytes` to `local/n` and puts it as `n` (a sync: the server's copy, if any, is the
/// basis), with delta and compression as given; returns what the upload did.
fn put(server: &TestServer, local: &Path, n: &str, bytes: &[u8], delta: bool, compress: bool) -> Uploaded {
    fs::write(local.join(n), bytes).unwrap();
    let mut client = server.client();
    client.set_delta(delta);
    client.set_compress(compress);
    let files = [(LocalFile::Path(local.join(n)), name(n))];
    let mut done = None;
    client
        .put_sync(&files, None, PutOptions::default(), |_, r| match r.unwrap() {
            Put::Sent(sent) => done = Some(sent),
            Put::Unchanged => panic!("{n}: unchanged"),
        })
        .unwrap();
    done.unwrap()
}

#[test]
fn edited_grown_shrunk_and_shifted_uploads_cost_only_what_changed() {
    let dirs = Dirs::new();
    let server = uploads(&dirs);
    let local = tempfile::tempdir().unwrap();
    let stored = || fs::read(dirs.root.path().join("f.bin")).unwrap();
    let mut now = pattern(1 << 20);
    let first = put(&server, local.path(), "f.bin", &now, true, false);
    assert_eq!((first.reused, first.moved()), (0, 1 << 20), "nothing to patch against: whole");
    // 1 MiB on the server: blocks of 1 KiB.
    now[500_000..500_100].fill(7);
    let edited = put(&server, local.path(), "f.bin", &now, true, false);
    assert!(stored() == now);
    assert!(edited.moved() <= 2048, "edit: {edited:?}");
    now.extend_from_slice(&pattern(5000));
    let grown = put(&server, local.path(), "f.bin", &now, true, false);
    assert!(stored() == now);
    assert!(grown.moved() <= 5000 + 1024, "grown: {grown:?}");
    now.insert(0, 42);
    let shifted = put(&server, local.path(), "f.bin", &now, true, false);
    assert!(stored() == now);
    assert!(shifted.moved() <= 2048, "shifted: {shifted:?}");
    now.drain(300_000..300_333);
    now.truncate(900_000);
    let shrunk = put(&server, local.path(), "f.bin", &now, true, false);
    assert!(stored() == now);
    assert!(shrunk.moved() <= 3 * 1024, "shrunk: {shrunk:?}");
    assert_eq!(server.stat("delta_puts"), 4);
    let saved = edited.reused + grown.reused + shifted.reused + shrunk.reused;
    assert_eq!(server.stat("delta_bytes_saved"), saved);
    assert_eq!(shrunk.digest, Digest::of(&stored()));
    // With delta off (-W), the same change goes whole.
    now[0] ^= 1;
    let whole = put(&server, local.path(), "f.bin", &now, false, false);
    assert_eq!((whole.reused, whole.moved()), (0, now.len() as u64));
    assert!(stored() == now);
    assert_eq!(server.stat("delta_puts"), 4);
}

#[test]
fn big_text_goes_up_compressed_and_noise_and_packed_files_as_they_are() {
    let dirs = Dirs::new();
    let server = uploads(&dirs);
    let local = tempfile::tempdir().unwrap();
    let text = log_text(3 << 20);
    let done = put(&server, local.path(), "log.txt", &text, true, true);
    assert!(fs::read(dirs.root.path().join("log.txt")).unwrap() == text);
    assert!(done.moved() < text.len() as u64 / 4, "{done:?}");
    assert_eq!(server.stat("compressed_bytes_saved"), done.compression_saved);
    let random = noise(2 << 20);
    let done = put(&server, local.path(), "noise.bin", &random, true, true);
    assert!(fs::read(dirs.root.path().join("noise.bin")).unwrap() == random);
    assert_eq!(done.compression_saved, 0);
    // A name that says it is compressed already is not tried; nor is anything without -z.
    let done = put(&server, local.path(), "text.gz", &text, true, true);
    assert_eq!(done.compression_saved, 0);
    let done = put(&server, local.path(), "plain.txt", &text, true, false);
    assert_eq!((done.compression_saved, done.moved()), (0, text.len() as u64));
    // An edit to a compressible file: only the change, compressed.
    let mut edited = text.clone();
    edited[1_000_000..1_000_050].fill(b'#');
    let done = put(&server, local.path(), "log.txt", &edited, true, true);
    assert!(fs::read(dirs.root.path().join("log.txt")).unwrap() == edited);
    assert!(done.reused > 3_000_000 && done.moved() < 4096, "{done:?}");
}

/// A raw connection that agreed to version 2 with `patch` and `zstd`.
fn patching(server: &TestServer) -> crate::util::Wire {
    let mut w = server.connect();
    w.send("hello 2 put patch zstd\n");
    assert!(w.line().starts_with("OK 2 features="));
    w
}

fn records(records: &[Record], tail: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        r.write(&mut out).unwrap();
    }
    out.extend_from_slice(tail);
    out
}

#[test]
fn hostile_patches_are_refused_and_nothing_is_stored() {
    let dirs = Dirs::new();
    let old = pattern(100_000);
    dirs.put("f.bin", &old);
    let server = uploads(&dirs);
    let mut w = patching(&server);
    w.send("signature f.bin\n");
    assert_eq!(w.line(), "OK signature size=100000 block=512");
    let signature = Signature::read(Shape { size: 100_000, block: 512 }, &mut &w.bytes(196 * 8)[..]).unwrap();
    assert_eq!(signature, Signature::compute(signature.shape, &mut &old[..]).unwrap());
    w.send("signature nope\n");
    assert!(w.line().starts_with("ERR not-found "));
    let line = |size: usize| format!("patch 100000 512 {size} 1000000000 0 replace 644 f.bin\n");
    // A good patch: blocks 0..10 and three bytes.
    let mut new = old[..5120].to_vec();
    new.extend_from_slice(b"new");
    let body = records(&[Record::Copy { block: 0, count: 10 }, Record::Literal { len: 3 }], b"new");
    let ending = |digest: Digest| records(&[Record::End { size: 5123 }], format!("xxh3={digest}\n").as_bytes());
    let good = [body.clone(), ending(Digest::of(&new))].concat();
    // The same records with a digest that is not theirs: refused as changed, in step.
    let lying = [body, ending(Digest::of(b"else"))].concat();
    w.send(line(5123)).send(&lying);
    assert!(w.line().starts_with("ERR changed "), "a wrong digest");
    assert!(fs::read(dirs.root.path().join("f.bin")).unwrap() == old);
    // Against a copy of another size than the server's: refused, the records skipped, in step.
    w.send(line(5123).replace("patch 100000", "patch 99999")).send(&good);
    assert!(w.line().starts_with("ERR changed "), "a stale copy");
    w.send(line(5123)).send(&good);
    assert_eq!(w.line(), format!("OK 5123 xxh3={}", Digest::of(&new)));
    assert!(fs::read(dirs.root.path().join("f.bin")).unwrap() == new);
    dirs.put("f.bin", &old);
    // Records that do not fit close the connection; nothing is stored, others are served.
    let cases: [(&str, Vec<u8>); 4] = [
        ("blocks past the copy", records(&[Record::Copy { block: 190, count: 10 }], b"")),
        ("more bytes than announced", records(&[Record::Literal { len: 6000 }], &[1; 6000])),
        ("a lying frame", records(&[Record::Zstd { len: 5123, packed: 3 }], b"abc")),
        ("an end too soon", records(&[Record::End { size: 1 }], b"")),
    ];
    for (what, bytes) in cases {
        let mut w = patching(&server);
        w.send(line(5123)).send(&bytes);
        let _ = w.stream.shutdown(std::net::Shutdown::Write);
        assert!(w.closed(), "{what}");
        assert!(fs::read(dirs.root.path().join("f.bin")).unwrap() == old, "{what}");
        assert_eq!(patching(&server).get("f.bin").len(), old.len(), "{what}: serving on");
    }
    // A server that takes no uploads refuses, skips the records, and goes on.
    drop(w);
    let server = TestServer::start(dirs.config());
    let mut w = patching(&server);
    w.send(line(5123)).send(&good);
    assert!(w.line().starts_with("ERR "), "no uploads here");
    assert_eq!(w.get("f.bin").len(), old.len(), "in step");
    // Without the feature agreed, patch is unknown, and ends the connection (records follow).
    let mut w = server.connect();
    w.send("hello 2 put\n");
    w.line();
    w.send(line(5123)).send(&good);
    assert!(w.line().starts_with("ERR unknown-command "));
    assert!(w.closed());
}

/// A server that agrees to `features` and answers each request with the next of `replies`
/// (reading a patch's records and trailer first); reports the request lines.
fn fake(features: &'static str, replies: Vec<Vec<u8>>) -> (SocketAddr, JoinHandle<String>) {
    crate::util::fake_speaker(features, replies, |line, reader| {
        let words: Vec<&str> = line.trim_end().split(' ').collect();
        if words[0] == "patch" {
            loop {
                match Record::read(&mut *reader).unwrap() {
                    Record::End { .. } => break,
                    Record::Literal { len } | Record::Zstd { packed: len, .. } => {
                        reader.by_ref().take(len).read_to_end(&mut Vec::new()).unwrap();
                    }
                    Record::Copy { .. } => {}
                }
            }
            reader.read_line(&mut String::new()).unwrap();
        } else if words[0] == "put" {
            let size: u64 = words[1].parse().unwrap();
            reader.by_ref().take(size).read_to_end(&mut Vec::new()).unwrap();
            if words[2] == "-" {
                reader.read_line(&mut String::new()).unwrap();
            }
        }
    })
}

fn put_to(addr: SocketAddr, local: &Path, bytes: &[u8]) -> Result<Vec<Result<Put, ClientError>>, ClientError> {
    fs::write(local.join("f.bin"), bytes).unwrap();
    let mut client = Client::connect(&addr.to_string(), WAIT).unwrap();
    client.set_delta(true);
    client.set_compress(true);
    let files = [(LocalFile::Path(local.join("f.bin")), name("f.bin"))];
    let mut remote = ft::client::Remote::new();
    let entry = "type=f size=200000 mtime=1 mode=644\tf.bin";
    let entry = ft::wire::MetaEntry::parse(entry.as_bytes(), ft::wire::Form::Escaped).unwrap();
    remote.insert(name("f.bin"), entry);
    let mut results = Vec::new();
    client.put_sync(&files, Some(&remote), PutOptions::default(), |_, r| results.push(r))?;
    Ok(results)
}

#[test]
fn a_copy_that_changed_after_its_signature_gets_the_file_whole() {
    let local = tempfile::tempdir().unwrap();
    let bytes = pattern(200_000);
    let digest = Digest::of(&bytes);
    let shape = Shape::for_size(200_000).unwrap();
    let signature = Signature::compute(shape, &mut &bytes[..]).unwrap();
    let sig_reply = [format!("OK signature size=200000 block={}\n", shape.block).into_bytes(), signature.to_bytes()];
    let replies = vec![
        sig_reply.concat(),
        b"ERR changed the rebuilt file does not match\n".to_vec(),
        format!("OK 200000 xxh3={digest}\n").into_bytes(),
    ];
    let (addr, server) = fake("put,patch,zstd", replies);
    let results = put_to(addr, local.path(), &bytes).unwrap();
    assert!(matches!(results[..], [Ok(Put::Sent(Uploaded { reused: 0, .. }))]), "{results:?}");
    let lines = server.join().unwrap();
    let verbs: Vec<&str> = lines.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(verbs, ["signature", "patch", "put"], "{lines}");
}

#[test]
fn a_huge_signature_from_a_server_is_refused_before_it_is_read() {
    let local = tempfile::tempdir().unwrap();
    let (addr, _server) = fake("put,patch", vec![b"OK signature size=1000000000000000 block=512\n".to_vec()]);
    let err = put_to(addr, local.path(), &pattern(200_000)).unwrap_err();
    assert!(matches!(err, ClientError::Protocol(_)), "{err}");
    assert!(err.to_string().contains("blocks"), "{err}");
}

#[test]
fn a_server_without_patch_gets_a_plain_put() {
    let local = tempfile::tempdir().unwrap();
    let bytes = pattern(200_000);
    let (addr, server) = fake("put,delta,zstd", vec![format!("OK 200000 xxh3={}\n", Digest::of(&bytes)).into_bytes()]);
    let results = put_to(addr, local.path(), &bytes).unwrap();
    assert!(matches!(results[..], [Ok(Put::Sent(_))]), "{results:?}");
    assert!(server.join().unwrap().starts_with("put 200000 "));
}

#[test]
fn a_sync_of_many_changed_files_asks_for_their_signatures_ahead() {
    let dirs = Dirs::new();
    let server = uploads(&dirs);
    let local = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let mut contents = Vec::new();
    for i in 0..30 {
        let n = format!("f{i:02}.bin");
        let bytes = pattern(256 << 10 | i);
        put(&server, local.path(), &n, &bytes, true, false);
        files.push((LocalFile::Path(local.path().join(&n)), name(&n)));
        contents.push(bytes);
    }
    for (i, bytes) in contents.iter_mut().enumerate() {
        bytes[i * 1000] ^= 0xff;
        fs::write(local.path().join(format!("f{i:02}.bin")), &bytes).unwrap();
    }
    let (addr, recorded) = crate::util::recording_forwarder(server.addr);
    let mut client = Client::connect(&addr.to_string(), WAIT).unwrap();
    client.set_delta(true);
    let mut sent = Vec::new();
    client
        .put_sync(&files, None, PutOptions { force: true, ..PutOptions::default() }, |n, r| match r.unwrap() {
            Put::Sent(done) => sent.push((n.clone(), done)),
            Put::Unchanged => panic!("{n}: unchanged"),
        })
        .unwrap();
    drop(client);
    assert_eq!(sent.len(), 30);
    for (i, (n, done)) in sent.iter().enumerate() {
        assert_eq!(n, &files[i].1, "answered in order");
        assert!(done.moved() <= 1024 && done.reused > 0, "{n}: {done:?}");
        assert!(fs::read(dirs.root.path().join(n.as_path())).unwrap() == contents[i], "{n}");
    }
    // Several signatures went before the first patch: not one round trip per file.
    let recorded = recorded.join().unwrap();
    let lines: Vec<&[u8]> = recorded.split(|&b| b == b'\n').collect();
    let first_patch = lines.iter().position(|l| l.starts_with(b"patch ")).unwrap();
    let signatures = |lines: &[&[u8]]| lines.iter().filter(|l| l.starts_with(b"signature ")).count();
    assert!(
        signatures(&lines[..first_patch]) >= 8,
        "{} signatures before the first patch",
        signatures(&lines[..first_patch])
    );
    assert_eq!(signatures(&lines), 30);
}
