//! The core without a socket: a second speaker, a few lines long, answers downloads (whole and by
//! range) through a [`Session`] of the same server an ft connection is served by, and from the
//! same cache. What a `get` means is the core's; the speaker only parses and says.

use ft::digest::Digest;
use ft::name::Name;
use ft::server::{Config, Ending, Part, Session};

use crate::util::{Dirs, TestServer, pattern, settle};

/// A toy speaker: `GET NAME` or `GET NAME FROM LEN` is answered `206 FROM+LEN/SIZE DIGEST`, a line
/// feed and the body, or `4xx CODE MESSAGE` (its own words, not ft's).
fn toy(session: &Session<'_>, request: &str, out: &mut Vec<u8>) {
    let words: Vec<&str> = request.split(' ').collect();
    let (name, part) = match words[..] {
        ["GET", name] => (name, Part::Whole),
        ["GET", name, from, len] => (name, Part::Range { from: from.parse().unwrap(), len: len.parse().unwrap() }),
        _ => panic!("the toy speaks GET only"),
    };
    let answer = match session.get(&Name::parse(name).unwrap(), part, false) {
        Ok(answer) => answer,
        Err(refusal) => {
            out.extend_from_slice(format!("4xx {} {}\n", refusal.code, refusal.message).as_bytes());
            return;
        }
    };
    let header = *answer.header();
    let digest = header.digest.map_or("after".to_string(), |d| d.to_string());
    out.extend_from_slice(format!("206 {}+{}/{} {digest}\n", header.offset, header.len, header.size).as_bytes());
    let sent = answer.send(out);
    assert_eq!(sent.went, header.len);
    assert!(matches!(sent.end.unwrap(), Ending::Done), "a body sent whole, its digest in the header");
}

/// Splits a toy reply into its status line and body.
fn reply(out: &[u8]) -> (&str, &[u8]) {
    let end = out.iter().position(|&b| b == b'\n').unwrap();
    (std::str::from_utf8(&out[..end]).unwrap(), &out[end + 1..])
}

#[test]
fn a_second_speaker_answers_ranges_with_digests_from_the_same_cache() {
    let dirs = Dirs::new();
    let bytes = pattern(300_000);
    settle(&dirs.put("data.bin", &bytes));
    let digest = Digest::of(&bytes);
    let ts = TestServer::start(Config { cache_size: 1 << 20, ..dirs.config() });
    let session = ts.server.session("127.0.0.1:1".parse().unwrap());
    assert!(session.needs_token().is_none(), "a server without tokens serves anyone on loopback");

    // The whole file: a miss, read from disk, sent, and admitted to the cache.
    let mut out = Vec::new();
    toy(&session, "GET data.bin", &mut out);
    let (status, body) = reply(&out);
    assert_eq!(status, format!("206 0+300000/300000 {digest}"));
    assert_eq!(body, &bytes[..]);
    let stats = ts.server.cache_stats();
    assert_eq!((stats.misses, stats.admitted, stats.hits), (1, 1, 0), "{stats:?}");

    // A range of it: a hit, the digest still the whole file's, so the asker can check the rest.
    let mut out = Vec::new();
    toy(&session, "GET data.bin 1000 5000", &mut out);
    let (status, body) = reply(&out);
    assert_eq!(status, format!("206 1000+5000/300000 {digest}"));
    assert_eq!(body, &bytes[1000..6000]);
    assert_eq!(ts.server.cache_stats().hits, 1);

    // A range running past the end is cut at the end; one starting past it is refused.
    let mut out = Vec::new();
    toy(&session, "GET data.bin 299990 100", &mut out);
    let (status, body) = reply(&out);
    assert_eq!(status, format!("206 299990+10/300000 {digest}"));
    assert_eq!(body, &bytes[299_990..]);
    let mut out = Vec::new();
    toy(&session, "GET data.bin 300001 1", &mut out);
    assert!(reply(&out).0.starts_with("4xx bad-request the range starts at 300001"), "{:?}", reply(&out).0);
    let mut out = Vec::new();
    toy(&session, "GET missing.bin", &mut out);
    assert!(reply(&out).0.starts_with("4xx not-found"), "{:?}", reply(&out).0);

    // ft's own speaker, over a socket, is served from the entry the toy's miss put there.
    let before = ts.server.cache_stats();
    assert_eq!(ts.connect().get("data.bin"), bytes);
    let after = ts.server.cache_stats();
    assert_eq!((after.hits, after.misses), (before.hits + 1, before.misses), "nobody read the file from disk again");
}

#[test]
fn a_second_speaker_streams_a_range_of_a_file_the_cache_cannot_hold() {
    let dirs = Dirs::new();
    let bytes = pattern(200_000);
    settle(&dirs.put("big.bin", &bytes));
    let ts = TestServer::start(Config { cache_size: 64 << 10, ..dirs.config() });
    let session = ts.server.session("127.0.0.1:1".parse().unwrap());
    let mut out = Vec::new();
    toy(&session, "GET big.bin 150000 60000", &mut out);
    let (status, body) = reply(&out);
    assert!(status.starts_with("206 150000+50000/200000 "), "{status}");
    assert_eq!(body, &bytes[150_000..]);
    let stats = ts.server.cache_stats();
    assert_eq!((stats.entries, stats.hits), (0, 0), "streamed, not cached: {stats:?}");
}
