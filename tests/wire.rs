//! Raw-wire tests: exact bytes against an in-process server.

use std::fs;
use std::io::Write;
use std::thread;
use std::time::Duration;

use ft::server::Config;

use crate::util::{Dirs, TestServer, Wire, pattern};

/// A file's permission bits, as the server reports them in `mode=`.
fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn started(dirs: &Dirs) -> TestServer {
    TestServer::start(dirs.config())
}

#[test]
fn list_reports_every_file_with_size_sorted_and_recursive() {
    let dirs = Dirs::new();
    dirs.put("b.txt", b"bb");
    dirs.put("a.txt", b"a");
    dirs.put("docs/deep/x y.bin", &[0; 7]);
    dirs.put("ünï/日本.txt", b"1234");
    let server = started(&dirs);
    let mut w = server.connect();
    w.send("list\n");
    assert_eq!(w.line(), "OK 4");
    let lines: Vec<String> = (0..4).map(|_| w.line()).collect();
    let shown: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            let mut p = l.splitn(3, ' ');
            let size = p.next().unwrap().to_string();
            p.next().unwrap().parse::<i64>().unwrap();
            (size, p.next().unwrap().to_string())
        })
        .collect();
    let want = [("1", "a.txt"), ("2", "b.txt"), ("7", "docs/deep/x y.bin"), ("4", "ünï/日本.txt")];
    assert_eq!(shown, want.map(|(s, n)| (s.to_string(), n.to_string())));

    w.send("LIST docs\n");
    assert_eq!(w.line(), "OK 1");
    assert!(w.line().ends_with(" docs/deep/x y.bin"));
    w.send("list nothere\n");
    assert!(w.line().starts_with("ERR not-found "));
    w.send("list a.txt\n");
    assert!(w.line().starts_with("ERR not-file "));
}

#[test]
fn get_serves_text_binary_empty_nested_unicode_and_spaced_names_exactly() {
    let dirs = Dirs::new();
    let binary: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).chain(*b"\n\r\n\nOK 5\n").collect();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("file1.txt", b"hello\nworld\n".to_vec()),
        ("binary.bin", binary),
        ("empty", Vec::new()),
        ("a/b/c/nested.txt", b"deep".to_vec()),
        ("ünïcödé 名前.txt", "ünï".as_bytes().to_vec()),
        ("with  two spaces ", b"sp".to_vec()),
    ];
    for (name, bytes) in &files {
        dirs.put(name, bytes);
    }
    let server = started(&dirs);
    let mut w = server.connect();
    for _round in 0..2 {
        for (name, bytes) in &files {
            assert_eq!(&w.get(name), bytes, "{name}");
        }
    }
    // The second round came from the cache, and the connection is still in step.
    assert_eq!(server.stat("cache_hits"), files.len() as u64);
    w.send("quit\n");
    assert_eq!(w.line(), "OK bye");
    assert!(w.closed());
}

#[test]
fn a_50_mib_file_arrives_intact_cached_and_streamed() {
    let dirs = Dirs::new();
    let big = pattern(50 << 20);
    dirs.put("big.bin", &big);
    // Default cache (64 MiB): admitted. Small cache: streamed from disk every time.
    for cache_size in [64 << 20, 1 << 20] {
        let server = TestServer::start(Config { cache_size, ..dirs.config() });
        let mut w = server.connect();
        assert!(w.get("big.bin") == big);
        assert!(w.get("big.bin") == big);
        let hits = server.stat("cache_hits");
        assert_eq!(hits, if cache_size == 64 << 20 { 1 } else { 0 });
    }
}

#[test]
fn pipelined_requests_in_one_write_are_answered_in_order() {
    let dirs = Dirs::new();
    for i in 0..10 {
        dirs.put(&format!("f{i}"), format!("content {i}\n").as_bytes());
    }
    let server = started(&dirs);
    let mut w = server.connect();
    let mut burst = String::new();
    for round in 0..50 {
        for i in 0..10 {
            burst.push_str(&format!("get f{i}\n"));
        }
        burst.push_str(if round % 2 == 0 { "nope\n" } else { "get missing\r\n" });
    }
    burst.push_str("quit\n");
    w.send(&burst);
    for round in 0..50 {
        for i in 0..10 {
            let body = format!("content {i}\n");
            let mode = mode_of(&dirs.root.path().join(format!("f{i}")));
            let digest = ft::digest::Digest::of(body.as_bytes());
            let mtime = crate::util::mtime_fields(&dirs.root.path().join(format!("f{i}")));
            assert_eq!(w.line(), format!("OK {} xxh3={digest} mode={mode:o}{mtime}", body.len()));
            assert_eq!(w.bytes(body.len()), body.as_bytes());
        }
        let err = w.line();
        let want = if round % 2 == 0 { "ERR unknown-command " } else { "ERR not-found " };
        assert!(err.starts_with(want), "{err}");
    }
    assert_eq!(w.line(), "OK bye");
    assert!(w.closed());
}

#[test]
fn a_request_written_one_byte_at_a_time_is_served() {
    let dirs = Dirs::new();
    let slow = dirs.put("slow.txt", b"patience");
    let server = started(&dirs);
    let mut w = server.connect();
    w.stream.set_nodelay(true).unwrap();
    for b in b"get slow.txt\r\n" {
        w.stream.write_all(&[*b]).unwrap();
    }
    let header = format!(
        "OK 8 xxh3={} mode={:o}{}",
        ft::digest::Digest::of(b"patience"),
        mode_of(&slow),
        crate::util::mtime_fields(&slow)
    );
    assert_eq!(w.line(), header);
    assert_eq!(w.bytes(8), b"patience");
}

#[test]
fn errors_are_one_err_line_each_and_keep_the_connection_usable() {
    let dirs = Dirs::new();
    dirs.put("ok.txt", b"fine");
    fs::create_dir(dirs.root.path().join("folder")).unwrap();
    let server = started(&dirs);
    let mut w = server.connect();
    let cases: &[(&[u8], &str)] = &[
        (b"fetch ok.txt\n", "ERR unknown-command "),
        (b"get\n", "ERR bad-request "),
        (b"get \n", "ERR bad-request "),
        (b"\n", "ERR bad-request "),
        (b"quit now\n", "ERR bad-request "),
        (b"get \xff\xfe\n", "ERR bad-request "),
        (b"get missing.txt\n", "ERR not-found "),
        (b"get folder\n", "ERR not-file "),
        (b"get ../ok.txt\n", "ERR bad-name "),
        (b"get /etc/passwd\n", "ERR bad-name "),
        (b"get a//b\n", "ERR bad-name "),
    ];
    for (request, want) in cases {
        w.send(request);
        let reply = w.line();
        assert!(reply.starts_with(want), "{:?} -> {reply}", String::from_utf8_lossy(request));
        assert_eq!(w.get("ok.txt"), b"fine");
    }
}

#[test]
fn an_over_long_line_gets_err_and_the_connection_is_closed() {
    let dirs = Dirs::new();
    let server = started(&dirs);
    let mut w = server.connect();
    let long = vec![b'a'; 64 << 10];
    // The server may close before it has read all of this; a failed write is fine.
    let _ = w.stream.write_all(&long);
    assert!(w.line().starts_with("ERR too-long "));
    assert!(w.closed());
    // Others are still served.
    server.connect().send("list\n").line();
}

#[test]
fn thirty_two_concurrent_clients_receive_identical_copies() {
    let dirs = Dirs::new();
    let data = pattern(3 << 20);
    dirs.put("shared.bin", &data);
    dirs.put("streamed.bin", &pattern(2 << 20));
    // Room for one of the two, so some clients hit the cache and some stream from disk.
    let server = TestServer::start(Config { cache_size: 4 << 20, ..dirs.config() });
    let handles: Vec<_> = (0..32)
        .map(|i| {
            let addr = server.addr;
            thread::spawn(move || {
                let mut w = Wire::connect(addr);
                let a = w.get("shared.bin");
                let b = w.get("streamed.bin");
                (i, a, b)
            })
        })
        .collect();
    let streamed = pattern(2 << 20);
    for h in handles {
        let (i, a, b) = h.join().unwrap();
        assert!(a == data, "client {i} got a different shared.bin");
        assert!(b == streamed, "client {i} got a different streamed.bin");
    }
    assert_eq!(server.stat("requests"), 64);
}

#[test]
fn a_hit_is_counted_and_a_miss_is_counted() {
    let dirs = Dirs::new();
    dirs.put("x", b"x");
    let server = started(&dirs);
    let mut w = server.connect();
    w.get("x");
    assert_eq!((server.stat("cache_hits"), server.stat("cache_misses")), (0, 1));
    w.get("x");
    assert_eq!((server.stat("cache_hits"), server.stat("cache_misses")), (1, 1));
    // The same figures over the wire.
    w.send("stats\n");
    let n: usize = w.line().strip_prefix("OK ").unwrap().parse().unwrap();
    let stats: Vec<String> = (0..n).map(|_| w.line()).collect();
    assert!(stats.contains(&"cache_hits 1".to_string()), "{stats:?}");
    assert!(stats.contains(&"cache_misses 1".to_string()));
    assert!(stats.contains(&"cache_entries 1".to_string()));
}

#[test]
fn the_cache_never_holds_more_than_its_cap_in_memory_or_on_disk() {
    let dirs = Dirs::new();
    let cap: u64 = 100_000;
    for i in 0..10 {
        dirs.put(&format!("f{i}"), &pattern(30_000 + i));
    }
    let server = TestServer::start(Config { cache_size: cap, ..dirs.config() });
    let mut w = server.connect();
    for round in 0..3 {
        for i in 0..10 {
            assert!(w.get(&format!("f{i}")) == pattern(30_000 + i), "round {round} f{i}");
            let stats = server.server.cache_stats();
            assert!(stats.bytes <= cap, "memory charge {} > cap", stats.bytes);
            let (on_disk, _) = dirs.cache_usage();
            assert!(on_disk <= cap, "cache folder holds {on_disk} > {cap}");
        }
    }
    let stats = server.server.cache_stats();
    // Full after three files; the mission's rule: a full cache takes no more.
    assert_eq!((stats.entries, stats.admitted), (3, 3));
    assert_eq!(dirs.cache_usage().1, 3);
    assert_eq!(stats.hits, 6);
}

#[test]
fn a_file_changed_replaced_or_deleted_after_caching_is_never_served_stale() {
    let dirs = Dirs::new();
    let path = dirs.put("doc.txt", b"version one");
    let server = started(&dirs);
    let mut w = server.connect();
    assert_eq!(w.get("doc.txt"), b"version one");
    assert_eq!(w.get("doc.txt"), b"version one");
    assert_eq!(server.stat("cache_hits"), 1);

    // Rewritten in place, same size: only the mtime tells.
    fs::write(&path, b"version two").unwrap();
    assert_eq!(w.get("doc.txt"), b"version two");
    assert_eq!(server.stat("cache_invalidated"), 1);

    // Replaced by rename with a file of the same size and an older mtime: the inode tells.
    let cached_again = {
        crate::util::settle(&path);
        w.get("doc.txt");
        w.get("doc.txt");
        server.stat("cache_hits")
    };
    assert_eq!(cached_again, 2);
    let tmp = dirs.put("doc.new", b"version 3!!");
    fs::rename(tmp, &path).unwrap();
    assert_eq!(w.get("doc.txt"), b"version 3!!");

    fs::remove_file(&path).unwrap();
    w.send("get doc.txt\n");
    assert!(w.line().starts_with("ERR not-found"));
    assert_eq!(server.server.cache_stats().entries, 0);
    assert_eq!(dirs.cache_usage().1, 0, "the mirror file went with the entry");
}

#[test]
fn entries_older_than_the_ttl_are_dropped() {
    let dirs = Dirs::new();
    dirs.put("x", b"x");
    // A zero TTL: every entry is already too old at its next lookup.
    let server = TestServer::start(Config { cache_ttl: Duration::ZERO, ..dirs.config() });
    let mut w = server.connect();
    w.get("x");
    w.get("x");
    w.sync();
    let stats = server.server.cache_stats();
    assert_eq!((stats.hits, stats.misses, stats.expired, stats.admitted), (0, 2, 1, 2));
    assert!(dirs.cache_usage().1 <= 1);
}

#[test]
fn a_restart_starts_warm_from_the_cache_folder_and_skips_changed_sources() {
    let dirs = Dirs::new();
    dirs.put("keep.txt", b"unchanged");
    let changed = dirs.put("change.txt", b"before");
    {
        let server = started(&dirs);
        let mut w = server.connect();
        w.get("keep.txt");
        w.get("change.txt");
        w.sync(); // admission follows the send; a later reply on this connection orders after it
        assert_eq!(server.server.cache_stats().entries, 2);
    }
    fs::write(&changed, b"after!").unwrap();
    // A crash leftover: a half-written temporary file.
    fs::write(dirs.cache.path().join("0-0.ftc.tmp"), b"ftcache1 half").unwrap();

    let server = started(&dirs);
    assert_eq!(server.server.warmed(), 1);
    assert_eq!(dirs.cache_usage().1, 1, "the stale entry and the leftover are gone");
    let mut w = server.connect();
    assert_eq!(w.get("keep.txt"), b"unchanged");
    assert_eq!(server.stat("cache_hits"), 1, "first request after restart is a hit");
    assert_eq!(w.get("change.txt"), b"after!");
}

#[test]
fn a_long_listing_is_streamed_with_list_end_and_still_counted_first_without_it() {
    // More files than the server holds to sort, so both forms walk the folder as they send.
    let dirs = Dirs::new();
    let files = ft::server::LIST_SORTED_UP_TO + 300;
    for i in 0..files {
        let sub = if i % 3 == 0 { "sub/" } else { "" };
        fs::create_dir_all(dirs.root.path().join("sub")).unwrap();
        fs::write(dirs.root.path().join(format!("{sub}f{i:05}")), i.to_string()).unwrap();
    }
    fs::create_dir(dirs.root.path().join("empty")).unwrap();
    let want: std::collections::BTreeSet<String> = (0..files)
        .map(|i| format!("{} {}f{i:05}", i.to_string().len(), if i % 3 == 0 { "sub/" } else { "" }))
        .collect();
    let entry = |line: String| {
        let mut p = line.splitn(3, ' ');
        let size = p.next().unwrap().to_string();
        p.next().unwrap().parse::<i64>().unwrap();
        format!("{size} {}", p.next().unwrap())
    };
    let server = started(&dirs);

    // Without the feature: the count first, then exactly that many entries.
    let mut w = server.connect();
    w.send("list\n");
    assert_eq!(w.line(), format!("OK {files}"));
    let got: std::collections::BTreeSet<String> = (0..files).map(|_| entry(w.line())).collect();
    assert_eq!(got, want);
    assert_eq!(w.get("sub/f00000"), b"0", "in step after the listing");

    // With it: OK, the entries, then OK and the count.
    let mut w = server.connect();
    w.send("hello 1 list-end\n");
    assert_eq!(w.line(), "OK 1 features=list-end");
    w.send("list\n");
    assert_eq!(w.line(), "OK");
    let got: std::collections::BTreeSet<String> = (0..files).map(|_| entry(w.line())).collect();
    assert_eq!(got, want);
    assert_eq!(w.line(), format!("OK {files}"));
    w.send("list empty\nlist nothere\nlist sub/f00000\n");
    assert_eq!([w.line(), w.line()], ["OK", "OK 0"]);
    assert!(w.line().starts_with("ERR not-found "));
    assert!(w.line().starts_with("ERR not-file "));
    assert_eq!(w.get("sub/f00000"), b"0", "in step after the listings");
    assert_eq!(server.stat("requests"), 2 + 5, "hello is not a request");
}

#[test]
fn with_list_meta_a_listing_names_folders_with_modes_and_exact_times() {
    use std::os::unix::fs::PermissionsExt;
    let dirs = Dirs::new();
    let key = dirs.put("docs/key", b"secret");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let run = dirs.put("run.sh", b"#!/bin/sh\n");
    fs::set_permissions(&run, fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir_all(dirs.root.path().join("empty/deeper")).unwrap();
    let meta = |p: &str| fs::metadata(dirs.root.path().join(p)).unwrap();
    let time = |p: &str| {
        use std::os::unix::fs::MetadataExt;
        let m = meta(p);
        format!("mtime={} mtime_ns={} mode={:o}", m.mtime(), m.mtime_nsec(), m.permissions().mode() & 0o7777)
    };
    let server = started(&dirs);
    let mut w = server.connect();
    w.send("hello 1 list-meta list-end\n");
    assert_eq!(w.line(), "OK 1 features=list-meta,list-end");
    w.send("list\n");
    assert_eq!(w.line(), "OK");
    let mut lines: Vec<String> = (0..5).map(|_| w.line()).collect();
    assert_eq!(w.line(), "OK 5");
    lines.sort();
    let want = [
        format!("type=d {}\tdocs", time("docs")),
        format!("type=d {}\tempty", time("empty")),
        format!("type=d {}\tempty/deeper", time("empty/deeper")),
        format!("type=f size=10 {}\trun.sh", time("run.sh")),
        format!("type=f size=6 {}\tdocs/key", time("docs/key")),
    ];
    let mut want = want.to_vec();
    want.sort();
    assert_eq!(lines, want);
    // Without list-end the same entries come counted first, sorted.
    let mut w = server.connect();
    w.send("hello 1 list-meta\nlist empty\n");
    assert_eq!(w.line(), "OK 1 features=list-meta");
    assert_eq!([w.line(), w.line()], ["OK 1".to_string(), format!("type=d {}\tempty/deeper", time("empty/deeper"))]);
    assert!(
        want.iter().any(|l| l.contains("mode=600\tdocs/key")) && want.iter().any(|l| l.contains("mode=755\trun.sh"))
    );
}

#[test]
fn hello_agrees_on_a_version_only_as_the_first_request() {
    let dirs = Dirs::new();
    dirs.put("a.txt", b"a");
    let server = started(&dirs);
    let mut w = server.connect();
    w.send("hello 9 tls list-end brotli\n");
    assert_eq!(w.line(), "OK 2 features=list-end", "the lower version, and only the features it has");
    w.send("hello 1\n");
    assert!(w.line().starts_with("ERR bad-request hello must be the first request"));
    assert_eq!(w.get("a.txt"), b"a", "the connection goes on");

    for bad in ["hello\n", "hello 0\n", "hello 1 TLS\n", "hello one\n"] {
        let mut w = server.connect();
        w.send(bad);
        assert!(w.line().starts_with("ERR bad-request usage: hello"), "{bad:?}");
        assert_eq!(w.get("a.txt"), b"a", "{bad:?}: the connection goes on");
    }
    // Without hello, nothing changes: the first request is served as always.
    let mut w = server.connect();
    assert_eq!(w.get("a.txt"), b"a");
}

/// Rewrites a file in place, same size, and puts its old modification time back, as `touch -d`,
/// `cp -p`, `tar x` and rsync do.
fn rewrite_keeping_mtime(path: &std::path::Path, bytes: &[u8]) {
    let old = fs::metadata(path).unwrap().modified().unwrap();
    let mut f = fs::File::options().write(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
    f.set_modified(old).unwrap();
}

#[test]
fn a_rewrite_that_restores_the_mtime_is_never_served_stale() {
    let dirs = Dirs::new();
    let small = dirs.put("same.txt", &[b'A'; 4096]);
    let big = dirs.put("big.bin", &[b'A'; 100_000]);
    let old_mtime = |path: &std::path::Path| {
        let f = fs::File::options().write(true).open(path).unwrap();
        f.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000)).unwrap();
    };
    old_mtime(&small);
    old_mtime(&big);
    crate::util::wait_settled();
    // A cache big enough for same.txt only: big.bin is streamed, its digest memoised.
    let config = Config { cache_size: 10_000, ..dirs.config() };
    {
        let server = TestServer::start(config.clone());
        let mut w = server.connect();
        assert!(w.get("same.txt") == [b'A'; 4096], "same.txt: AAA");
        assert!(w.get("same.txt") == [b'A'; 4096], "same.txt: AAA");
        assert_eq!(server.stat("cache_hits"), 1, "cached");
        assert!(w.get("big.bin") == [b'A'; 100_000], "digest memoised");

        rewrite_keeping_mtime(&small, &[b'B'; 4096]);
        rewrite_keeping_mtime(&big, &[b'B'; 100_000]);
        assert!(w.get("same.txt") == [b'B'; 4096], "not the cached A's");
        // Wire::get checks the digest: a stale memo would announce the A's digest.
        assert!(w.get("big.bin") == [b'B'; 100_000], "big.bin: BBB");

        // Once settled the B's are cached; then the C's replace them, and are cached in turn.
        crate::util::wait_settled();
        std::thread::sleep(ft::server::cache::SETTLE_TIME);
        assert!(w.get("same.txt") == [b'B'; 4096], "same.txt: BBB");
        assert!(w.get("same.txt") == [b'B'; 4096], "same.txt: BBB");
        assert_eq!(server.stat("cache_hits"), 2, "the B's were cached");
        rewrite_keeping_mtime(&small, &[b'C'; 4096]);
        assert!(w.get("same.txt") == [b'C'; 4096], "same.txt: CCC");
        std::thread::sleep(ft::server::cache::SETTLE_TIME);
        assert!(w.get("same.txt") == [b'C'; 4096], "same.txt: CCC");
        w.sync();
        assert_eq!(server.server.cache_stats().entries, 1, "the C's are cached and mirrored");
    }
    // Nor after a restart, from the mirror.
    rewrite_keeping_mtime(&small, &[b'D'; 4096]);
    let server = TestServer::start(config);
    assert_eq!(server.server.warmed(), 0, "the mirrored C's are stale");
    let mut w = server.connect();
    assert!(w.get("same.txt") == [b'D'; 4096], "same.txt: DDD");
}

#[test]
fn list_and_get_follow_the_same_rule_for_symlinked_folders() {
    let dirs = Dirs::new();
    dirs.put("real/a.txt", b"a");
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("secret.txt"), b"secret").unwrap();
    std::os::unix::fs::symlink("real", dirs.root.path().join("link")).unwrap();
    std::os::unix::fs::symlink("..", dirs.root.path().join("real/up")).unwrap();
    std::os::unix::fs::symlink(outside.path(), dirs.root.path().join("out")).unwrap();
    let server = started(&dirs);
    let mut w = server.connect();
    w.send("list\n");
    let n: usize = w.line().strip_prefix("OK ").unwrap().parse().unwrap();
    let names: Vec<String> = (0..n).map(|_| w.line().splitn(3, ' ').nth(2).unwrap().to_string()).collect();
    // Through the symlinked folder as through the real one; not round the loop back up (a listing
    // has to end), and nothing from outside the root.
    assert_eq!(names, ["link/a.txt", "real/a.txt"]);
    for name in &names {
        assert_eq!(w.get(name), b"a", "{name}: get serves what list shows");
    }
    w.send("get out/secret.txt\n");
    assert!(w.line().starts_with("ERR denied"));
    // Listing a folder through the loop starts there and stops where it would come round again.
    w.send("list real/up\n");
    assert_eq!(w.line(), "OK 2");
    assert!(w.line().ends_with(" real/up/link/a.txt"));
    assert!(w.line().ends_with(" real/up/real/a.txt"));
}

#[test]
fn a_cache_folder_that_could_be_planted_or_served_is_refused_and_a_fifo_in_it_is_ignored() {
    use std::os::unix::fs::PermissionsExt;
    let dirs = Dirs::new();
    dirs.put("a.txt", b"a");
    // Inside the served folder, or the folder itself.
    for inside in [dirs.root.path().to_path_buf(), dirs.root.path().join("cache"), dirs.root.path().join("x/../c")] {
        let config = Config { cache_dir: Some(inside.clone()), ..dirs.config() };
        let err = ft::server::Server::new(config).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("is inside the served folder"), "{inside:?}: {err}");
    }
    assert!(!dirs.root.path().join("cache").exists(), "refused before anything was created");
    // Writable by others.
    fs::set_permissions(dirs.cache.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let err = ft::server::Server::new(dirs.config()).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("writable by others (mode 0777)"), "{err}");
    // Writable by a group that is not the server's own.
    // (Giving a folder to another group takes root, as CI has.)
    fs::set_permissions(dirs.cache.path(), fs::Permissions::from_mode(0o770)).unwrap();
    if std::os::unix::fs::chown(dirs.cache.path(), None, Some(4242)).is_ok() {
        let err = ft::server::Server::new(dirs.config()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("writable by others (mode 0770)"), "{err}");
    }
    fs::set_permissions(dirs.cache.path(), fs::Permissions::from_mode(0o700)).unwrap();

    // A fifo named like a cache entry: start-up neither blocks on it nor deletes it.
    let fifo = dirs.cache.path().join("x.ftc");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let (done, started) = std::sync::mpsc::channel();
    let config = dirs.config();
    thread::spawn(move || done.send(ft::server::Server::new(config).map(|s| s.warmed()).is_ok()).unwrap());
    assert_eq!(started.recv_timeout(Duration::from_secs(10)), Ok(true), "start-up must not hang on a fifo");
    assert!(fifo.exists());
}

#[test]
fn one_address_cannot_take_every_connection() {
    let dirs = Dirs::new();
    dirs.put("a.txt", b"a");
    let config = Config { max_conns_per_addr: 2, limit_loopback: true, ..dirs.config() };
    let server = TestServer::start(config);
    // Connects from a chosen loopback address (127.0.0.0/8 is all this machine).
    let from = |ip: &str| Wire::from_stream(connect_from(ip, server.addr));
    let mut first = from("127.0.0.1");
    let mut second = from("127.0.0.1");
    assert_eq!(first.get("a.txt"), b"a");
    assert_eq!(second.get("a.txt"), b"a");
    let mut third = from("127.0.0.1");
    assert_eq!(third.line(), "ERR busy too many connections from your address; try again later");
    // Another address still gets in.
    let mut other = from("127.0.0.2");
    assert_eq!(other.get("a.txt"), b"a");
    assert_eq!(server.stat("connections_refused_per_addr"), 1);
    // Once one closes, its address has room again.
    drop(first);
    server.wait_connections(2);
    let mut again = from("127.0.0.1");
    assert_eq!(again.get("a.txt"), b"a");
}

/// A TCP connection to `to` from the loopback address `ip` (bound before connecting).
fn connect_from(ip: &str, to: std::net::SocketAddr) -> std::net::TcpStream {
    let socket = rustix::net::socket(rustix::net::AddressFamily::INET, rustix::net::SocketType::STREAM, None).unwrap();
    let local: std::net::SocketAddr = format!("{ip}:0").parse().unwrap();
    rustix::net::bind(&socket, &local).unwrap();
    rustix::net::connect(&socket, &to).unwrap();
    std::net::TcpStream::from(socket)
}

#[test]
fn a_saved_file_is_never_more_permissive_than_the_servers_copy() {
    use std::os::unix::fs::PermissionsExt;
    let dirs = Dirs::new();
    let cases = [("key", 0o600, 10), ("run.sh", 0o755, 10), ("setuid", 0o4755, 10), ("big-key", 0o640, 400_000)];
    for (name, mode, len) in cases {
        let path = dirs.put(name, &pattern(len));
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    }
    crate::util::wait_settled();
    let server = started(&dirs);
    let out = tempfile::tempdir().unwrap();
    let dir = ft::client::OutDir::create(out.path()).unwrap();
    let names: Vec<ft::name::Name> = cases.iter().map(|(n, ..)| ft::name::Name::parse(n).unwrap()).collect();
    let mut client = server.client();
    client.download_all(&names, &dir, false, |n, r| assert!(r.is_ok(), "{n}: {r:?}"));
    let umask = 0o777 & !dir.mode_for(Some(0o777));
    for (name, mode, _) in cases {
        let got = mode_of(&out.path().join(name));
        // The server's bits less setuid/setgid/sticky, masked by the umask: never more.
        assert_eq!(got, mode & 0o777 & !umask, "{name}: {got:o}");
        assert_eq!(got & !mode, 0, "{name}: {got:o} is more permissive than {mode:o}");
    }
}

/// Requests: formatting then parsing is the identity, and parsing any bytes is total.
mod request_props {
    use ft::digest::Digest;
    use ft::mtime::Mtime;
    use ft::name::Name;
    use ft::wire::{Form, Hello, PLAIN_PUT_PERM, Request};
    use proptest::prelude::*;

    fn name() -> impl Strategy<Value = Name> {
        prop_oneof![
            "[a-zA-Z0-9 ._é-]{1,12}(/[a-zA-Z0-9 ._é-]{1,12}){0,3}"
                .prop_filter_map("valid names only", |s| Name::parse(&s).ok()),
            proptest::collection::vec(any::<u8>(), 1..24)
                .prop_filter_map("valid names only", |b| Name::from_bytes(&b).ok()),
        ]
    }

    fn request() -> impl Strategy<Value = Request> {
        prop_oneof![
            proptest::option::of(name()).prop_map(Request::List),
            (any::<bool>(), proptest::option::of(name())).prop_map(|(follow, folder)| Request::Walk { follow, folder }),
            name().prop_map(Request::Get),
            name().prop_map(Request::Stat),
            (0u32..0o7777, any::<i64>(), 0u32..1_000_000_000, name())
                .prop_map(|(perm, secs, nanos, name)| Request::Mkdir { perm, mtime: Mtime::new(secs, nanos), name }),
            (any::<u64>(), any::<u128>(), name()).prop_map(|(offset, d, name)| Request::Resume {
                offset,
                prefix: Digest(d),
                name
            }),
            (
                any::<u64>(),
                any::<u128>(),
                any::<i64>(),
                0u32..1_000_000_000,
                any::<u64>(),
                any::<bool>(),
                0u32..0o7777,
                name()
            )
                .prop_map(|(size, d, secs, nanos, from, replace, perm, name)| Request::Put {
                    size,
                    digest: (d % 3 != 0).then_some(Digest(d)),
                    mtime: Mtime::new(secs, nanos),
                    from: from % size.saturating_add(1),
                    replace,
                    perm,
                    name
                }),
            (any::<u64>(), any::<i64>(), 0u32..1_000_000_000, any::<bool>(), name()).prop_map(
                |(size, secs, nanos, replace, name)| Request::Partial {
                    size,
                    mtime: Mtime::new(secs, nanos),
                    replace,
                    name
                }
            ),
            Just(Request::Stats),
            Just(Request::Health),
            Just(Request::Quit),
            (1u32.., proptest::collection::vec("[a-z0-9-]{1,32}", 0..4))
                .prop_map(|(version, features)| Request::Hello(Hello { version, features })),
        ]
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(req in request()) {
            prop_assert_eq!(Request::parse(req.to_line(Form::Escaped).unwrap().as_bytes(), Form::Escaped), Ok(req.clone()));
            if let Ok(line) = req.to_line(Form::Plain) {
                let back = Request::parse(line.as_bytes(), Form::Plain);
                // Version 1 has no mode on a put: it reads back as 0644.
                let req = match req {
                    Request::Put { size, digest, mtime, from, replace, name, .. } =>
                        Request::Put { size, digest, mtime, from, replace, perm: PLAIN_PUT_PERM, name },
                    other => other,
                };
                prop_assert_eq!(back, Ok(req));
            }
        }

        /// Any bytes at all: no panic, and whatever name comes out is a checked one.
        #[test]
        fn parsing_arbitrary_bytes_is_total(line in proptest::collection::vec(any::<u8>(), 0..80)) {
            for form in [Form::Plain, Form::Escaped] {
                match Request::parse(&line, form) {
                    Ok(Request::Get(n)) | Ok(Request::Resume { name: n, .. }) | Ok(Request::List(Some(n))) => {
                        prop_assert_eq!(Name::from_bytes(n.as_bytes()), Ok(n.clone()));
                    }
                    _ => {}
                }
            }
        }
    }
}

/// The congestion control a TCP socket on loopback from `local` uses, as `ss` reports it.
fn congestion_of(local: std::net::SocketAddr) -> String {
    let out =
        std::process::Command::new("ss").args(["-tinH", "state", "established", "src", &local.to_string()]).output();
    let out = out.expect("ss (iproute2) runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    ["reno", "cubic", "bbr"].into_iter().find(|cc| text.contains(cc)).unwrap_or("none").to_string()
}

#[test]
fn each_connection_gets_the_congestion_control_asked_for_and_a_missing_one_is_not_fatal() {
    let dirs = Dirs::new();
    dirs.put("f", b"x");
    let system = fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control").unwrap();
    let system = system.trim();
    // Not the system's, so the test tells.
    let other = if system == "reno" { "cubic" } else { "reno" };
    let server = TestServer::start(ft::server::Config { congestion: Some(other.into()), ..dirs.config() });
    let mut w = server.connect();
    w.sync();
    assert_eq!(congestion_of(server.addr), other);
    // One the kernel does not have: the system's default, and the server serves.
    let server = TestServer::start(ft::server::Config { congestion: Some("no-such-cc".into()), ..dirs.config() });
    let mut w = server.connect();
    assert_eq!(w.get("f"), b"x");
    assert_eq!(congestion_of(server.addr), system);
}

#[test]
fn the_client_asks_for_its_congestion_control_too_and_a_missing_one_is_warned_of() {
    let dirs = Dirs::new();
    dirs.put("f", b"x");
    let server = TestServer::start(dirs.config());
    let system = fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control").unwrap();
    let other = if system.trim() == "reno" { "cubic" } else { "reno" };
    let mut client = server.client();
    client.set_congestion(other).unwrap();
    assert_eq!(client.congestion().as_deref(), Some(other));
    assert!(client.set_congestion("no-such-cc").is_err());
    assert_eq!(client.congestion().as_deref(), Some(other), "unchanged");
    assert_eq!(client.list(None).unwrap().len(), 1, "and the connection serves on");
    // ftclient: the default says nothing where it cannot be had; a name given is warned of once.
    let cwd = tempfile::tempdir().unwrap();
    let (code, _, err) = crate::util::ftclient(cwd.path(), server.addr.port(), &["list"], b"");
    assert_eq!((code, err.as_str()), (0, ""));
    let (code, _, err) =
        crate::util::ftclient(cwd.path(), server.addr.port(), &["--congestion", "no-such-cc", "list"], b"");
    assert_eq!(code, 0, "{err}");
    assert_eq!(err.matches("cannot set TCP congestion control no-such-cc").count(), 1, "{err}");
}
