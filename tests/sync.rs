//! Fetching folders (`get -r`): whole trees with their times and modes, rsync's quick check,
//! `--delete` and `--dry-run`, and servers that lie in their listings.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::thread;
use std::time::{Duration, UNIX_EPOCH};

use ft::client::tree::{TreeEvent, TreeOptions, TreeSummary};
use ft::client::{Client, ClientError, OutDir};
use ft::name::Name;

use crate::util::{Dirs, TestServer, WAIT, pattern, wait_settled};

fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
}

/// Sets a file's (or folder's) mode and modification time.
fn stamp(path: &Path, mode: u32, secs: u64, nanos: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    let file = fs::File::open(path).unwrap();
    file.set_modified(UNIX_EPOCH + Duration::new(secs, nanos)).unwrap();
}

/// Everything beneath `root`, not following symlinks: relative path -> (is folder, mode, mtime s,
/// ns, contents: a file's bytes, or `-> target` for a symlink).
fn snapshot(root: &Path) -> BTreeMap<String, (bool, u32, i64, i64, Vec<u8>)> {
    let mut all = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let (body, mode) = if meta.is_dir() {
                (Vec::new(), meta.mode() & 0o7777)
            } else if meta.file_type().is_symlink() {
                ([&b"-> "[..], fs::read_link(&path).unwrap().as_os_str().as_encoded_bytes()].concat(), 0)
            } else {
                (fs::read(&path).unwrap(), meta.mode() & 0o7777)
            };
            all.insert(rel, (meta.is_dir(), mode, meta.mtime(), meta.mtime_nsec(), body));
            if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    all
}

fn fetch(
    client: &mut Client,
    names: &[Option<Name>],
    dir: &OutDir,
    options: TreeOptions,
) -> (TreeSummary, Vec<String>) {
    fetch_with(client, None, names, dir, options)
}

/// [`fetch`], listing on `lister` (a second connection) while `client` fetches, if given.
fn fetch_with(
    client: &mut Client,
    lister: Option<Client>,
    names: &[Option<Name>],
    dir: &OutDir,
    options: TreeOptions,
) -> (TreeSummary, Vec<String>) {
    let mut events = Vec::new();
    let report = |e: TreeEvent<'_>| match e {
        TreeEvent::Fetched(n, r) => events.push(format!("{} {n}", if r.is_ok() { "fetched" } else { "failed" })),
        TreeEvent::WouldFetch(n) => events.push(format!("would fetch {n}")),
        TreeEvent::Deleted(n) => events.push(format!("deleted {}", String::from_utf8_lossy(n))),
        TreeEvent::Made(n, kind) => events.push(format!("made {n} ({})", kind.describe())),
        TreeEvent::NotCopied(n, why) => events.push(format!("not copied {n}: {why}")),
        TreeEvent::DeletionSkipped(k) => events.push(format!("deletion skipped: {k} unreadable")),
    };
    let summary = match lister {
        Some(lister) => client.fetch_tree_with(lister, names, dir, options, report),
        None => client.fetch_tree(names, dir, options, report),
    };
    let summary = summary.unwrap();
    events.sort();
    (summary, events)
}

/// A tree with nested and empty folders, odd names, modes 600/644/755 and old times (to the
/// nanosecond), a symlinked folder inside the root and one pointing outside.
fn a_tree(dirs: &Dirs, outside: &Path) {
    let root = dirs.root.path();
    dirs.put("proj/README", b"read me\n");
    dirs.put("proj/bin/run.sh", b"#!/bin/sh\necho hi\n");
    dirs.put("proj/keys/id_key", b"-----BEGIN KEY-----\n");
    dirs.put("proj/data/big.bin", &pattern(1 << 20));
    dirs.put("proj/ünï côdé/a b.txt", b"spaced");
    fs::create_dir_all(root.join("proj/empty/deeper")).unwrap();
    std::os::unix::fs::symlink("data", root.join("proj/data-link")).unwrap();
    fs::create_dir_all(outside).unwrap();
    fs::write(outside.join("secret"), b"secret").unwrap();
    std::os::unix::fs::symlink(outside, root.join("proj/escape")).unwrap();
    stamp(&root.join("proj/README"), 0o644, 1_000_000_000, 1);
    stamp(&root.join("proj/bin/run.sh"), 0o755, 1_100_000_000, 999_999_999);
    stamp(&root.join("proj/keys/id_key"), 0o600, 1_200_000_000, 0);
    stamp(&root.join("proj/keys"), 0o700, 1_300_000_000, 5);
    stamp(&root.join("proj/empty/deeper"), 0o750, 1_400_000_000, 6);
    wait_settled();
}

#[test]
fn a_tree_arrives_whole_with_times_and_modes_and_a_second_fetch_moves_nothing() {
    let dirs = Dirs::new();
    let outside = tempfile::tempdir().unwrap();
    a_tree(&dirs, &outside.path().join("o"));
    let server = TestServer::start(dirs.config());
    let out = tempfile::tempdir().unwrap();
    let dir = OutDir::create(out.path()).unwrap();
    // Listed on a second connection while the first fetches (a queue of two between them, so
    // the fetching starts before the listing has ended).
    let mut client = server.client();
    let small_queue = TreeOptions { queue: Some(2), ..TreeOptions::default() };
    let (summary, events) = fetch_with(&mut client, Some(server.client()), &[Some(name("proj"))], &dir, small_queue);
    assert_eq!((summary.fetched, summary.made, summary.skipped, summary.failed), (5, 2, 0, 0), "{summary:?}");
    assert!(events.contains(&"made proj/data-link (a symlink)".to_string()), "{events:?}");
    let got = snapshot(&out.path().join("proj"));
    // As rsync -a keeps it: every entry, each symlink as a symlink holding the same text (the
    // one inside the root and the one out of it alike: neither is followed, here or there).
    let want = snapshot(&dirs.root.path().join("proj"));
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
    for (k, (folder, mode, secs, nanos, body)) in &got {
        let w = &want[k];
        assert_eq!(body, &w.4, "{k}");
        assert_eq!(*folder, w.0, "{k}");
        assert_eq!(*mode, w.1 & 0o777 & !0o022, "{k}: the server's mode, less the umask");
        assert_eq!((*secs, *nanos), (w.2, w.3), "{k}: the server's time");
    }
    assert_eq!(got["keys/id_key"].1, 0o600);
    assert_eq!(got["bin/run.sh"].1, 0o755);
    assert_eq!(got["data-link"].4, b"-> data");
    assert!(got["empty/deeper"].0, "empty folders are made");

    // Nothing changed: nothing fetched or made, one listing asked.
    let requests = server.stat("requests");
    let mut client = server.client();
    let (summary, events) = fetch(&mut client, &[Some(name("proj"))], &dir, TreeOptions::default());
    assert_eq!((summary.fetched, summary.made, summary.skipped), (0, 0, 7), "{events:?}");
    assert_eq!(server.stat("requests") - requests, 1);
    // The whole root, too.
    let (summary, _) = fetch(&mut client, &[None], &dir, TreeOptions::default());
    assert_eq!((summary.fetched, summary.skipped), (0, 7));

    // -L (copy_links): links inside the root are followed, as get follows them; the one out of
    // it is not copied, and said so.
    let out = tempfile::tempdir().unwrap();
    let dir = OutDir::create(out.path()).unwrap();
    let follow = TreeOptions { copy_links: true, ..TreeOptions::default() };
    let (summary, events) = fetch(&mut server.client(), &[Some(name("proj"))], &dir, follow);
    assert_eq!((summary.fetched, summary.made, summary.not_copied), (6, 0, 1), "{events:?}");
    assert!(events.iter().any(|e| e.starts_with("not copied proj/escape: a symlink")), "{events:?}");
    assert_eq!(fs::read(out.path().join("proj/data-link/big.bin")).unwrap(), pattern(1 << 20));
    assert!(fs::symlink_metadata(out.path().join("proj/escape")).is_err());
}

#[test]
fn changes_are_fetched_and_delete_removes_only_what_the_server_lost() {
    let dirs = Dirs::new();
    let outside = tempfile::tempdir().unwrap();
    a_tree(&dirs, &outside.path().join("o"));
    let server = TestServer::start(dirs.config());
    let out = tempfile::tempdir().unwrap();
    let dir = OutDir::create(out.path()).unwrap();
    let top = [Some(name("proj"))];
    fetch(&mut server.client(), &top, &dir, TreeOptions::default());
    let root = dirs.root.path();
    // On the server: one file grows, one is rewritten keeping its size and time, one goes, one
    // comes. Locally: a file and a folder the server never had, and a symlink to a folder
    // outside the output folder.
    dirs.put("proj/bin/run.sh", b"#!/bin/sh\necho hello\n");
    let readme = root.join("proj/README");
    fs::write(&readme, b"READ ME\n").unwrap();
    stamp(&readme, 0o644, 1_000_000_000, 1);
    fs::remove_file(root.join("proj/keys/id_key")).unwrap();
    dirs.put("proj/new.txt", b"new");
    wait_settled();
    let victim = tempfile::tempdir().unwrap();
    fs::write(victim.path().join("precious"), b"keep me").unwrap();
    fs::write(out.path().join("proj/local.txt"), b"mine").unwrap();
    fs::create_dir_all(out.path().join("proj/local-dir/sub")).unwrap();
    fs::write(out.path().join("proj/local-dir/sub/f"), b"f").unwrap();
    std::os::unix::fs::symlink(victim.path(), out.path().join("proj/link-out")).unwrap();
    std::os::unix::fs::symlink(victim.path(), out.path().join("proj/empty/deeper/inside")).unwrap();

    let dry = TreeOptions { delete: true, dry_run: true, ..TreeOptions::default() };
    let before = snapshot(out.path());
    let (summary, events) = fetch_with(&mut server.client(), Some(server.client()), &top, &dir, dry);
    assert_eq!(snapshot(out.path()), before, "a dry run changes nothing");
    let want_events = [
        "deleted proj/empty/deeper/inside",
        "deleted proj/keys/id_key",
        "deleted proj/link-out",
        "deleted proj/local-dir",
        "deleted proj/local.txt",
        "would fetch proj/bin/run.sh",
        "would fetch proj/new.txt",
    ];
    assert_eq!(events, want_events);
    assert_eq!((summary.fetched, summary.deleted), (2, 5));

    let delete = TreeOptions { delete: true, ..TreeOptions::default() };
    let (summary, events) = fetch_with(&mut server.client(), Some(server.client()), &top, &dir, delete);
    assert_eq!((summary.fetched, summary.deleted, summary.failed), (2, 5, 0), "{events:?}");
    assert_eq!(fs::read(out.path().join("proj/bin/run.sh")).unwrap(), b"#!/bin/sh\necho hello\n");
    assert_eq!(fs::read(out.path().join("proj/new.txt")).unwrap(), b"new");
    assert_eq!(fs::read(out.path().join("proj/README")).unwrap(), b"read me\n", "same size and time: not seen");
    for gone in ["keys/id_key", "local.txt", "local-dir", "link-out", "empty/deeper/inside"] {
        assert!(fs::symlink_metadata(out.path().join("proj").join(gone)).is_err(), "{gone}");
    }
    assert_eq!(fs::read(victim.path().join("precious")).unwrap(), b"keep me", "nothing outside is touched");
    assert!(out.path().join("proj/keys").is_dir());
    // Two folders named, one within the other: listed twice, which is no lie; nothing more goes.
    let nested = [Some(name("proj")), Some(name("proj/bin"))];
    let (summary, events) = fetch(&mut server.client(), &nested, &dir, delete);
    assert_eq!((summary.fetched, summary.skipped, summary.deleted), (0, 8, 0), "{events:?}");

    // --checksum sees the rewrite that kept its size and time, and fetches nothing else; a local
    // copy with the right bytes and another time is not fetched but given the server's time.
    let local_big = out.path().join("proj/data/big.bin");
    fs::File::options().write(true).open(&local_big).unwrap().set_modified(UNIX_EPOCH).unwrap();
    let checksum = TreeOptions { checksum: true, ..TreeOptions::default() };
    let (summary, events) = fetch(&mut server.client(), &top, &dir, checksum);
    assert_eq!(events, ["fetched proj/README"]);
    assert_eq!((summary.fetched, summary.skipped), (1, 6), "4 files and 2 symlinks unchanged");
    let server_big = fs::metadata(root.join("proj/data/big.bin")).unwrap();
    let local_big = fs::metadata(&local_big).unwrap();
    assert_eq!((local_big.mtime(), local_big.mtime_nsec()), (server_big.mtime(), server_big.mtime_nsec()));
    assert_eq!(fs::read(out.path().join("proj/README")).unwrap(), b"READ ME\n");
    // sum on the wire: the size and digest, or why not.
    let mut w = server.connect();
    w.send("sum proj/new.txt\nsum proj/nope\nsum proj\n");
    assert_eq!(w.line(), format!("OK 3 xxh3={}", ft::digest::Digest::of(b"new")));
    assert!(w.line().starts_with("ERR not-found "));
    assert!(w.line().starts_with("ERR not-file "));
}

/// A fake server that agrees to list-meta and list-end, answers the first `list` with
/// `listing`, and each `get` of a name in `files` with its bytes (others: not found).
fn liar(listing: &'static str, files: &'static [(&'static str, &'static [u8])]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut reader = BufReader::new(&stream);
        let mut out = &stream;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.starts_with("hello") {
                out.write_all(b"OK 1 features=list-end,list-meta\n").unwrap();
            } else if line.starts_with("list") {
                // A listing with no end line is one cut off mid-way: the connection closes.
                if out.write_all(listing.as_bytes()).is_err() || !listing.contains("\nOK ") {
                    return;
                }
            } else if let Some(n) = line.strip_prefix("get ") {
                match files.iter().find(|(f, _)| *f == n) {
                    Some((_, body)) => {
                        let header = format!("OK {} xxh3={}\n", body.len(), ft::digest::Digest::of(body));
                        out.write_all(header.as_bytes()).unwrap();
                        out.write_all(body).unwrap();
                    }
                    None => out.write_all(b"ERR not-found no such file\n").unwrap(),
                }
            } else {
                // As a version 1 server answers what it does not know (here, `walk`).
                out.write_all(b"ERR unknown-command unknown command\n").unwrap();
            }
        }
    });
    addr
}

#[test]
fn a_server_that_lies_in_its_listing_gets_nothing_misplaced_and_nothing_deleted() {
    let out = tempfile::tempdir().unwrap();
    fs::create_dir_all(out.path().join("t")).unwrap();
    fs::write(out.path().join("t/mine"), b"mine").unwrap();
    let dir = OutDir::create(out.path()).unwrap();
    let delete = TreeOptions { delete: true, ..TreeOptions::default() };
    let cases: [(&str, &'static str); 4] = [
        ("a name that climbs out", "OK\ntype=f size=1 mtime=1 mode=644\tt/../../evil\nOK 1\n"),
        (
            "a folder and a file of one name",
            "OK\ntype=d mtime=1 mode=755\tt/x\ntype=f size=1 mtime=1 mode=644\tt/x\nOK 2\n",
        ),
        ("a name outside the folder asked for", "OK\ntype=f size=1 mtime=1 mode=644\tother\nOK 1\n"),
        ("a listing cut off mid-way", "OK\ntype=f size=1 mtime=1 mode=644\tt/a\n"),
    ];
    for (what, listing) in cases {
        let addr = liar(listing, &[("t/a", b"a"), ("t/x", b"x"), ("other", b"o")]);
        let mut client = Client::connect(&addr, WAIT).unwrap();
        let result = client.fetch_tree(&[Some(name("t"))], &dir, delete, |_| {});
        assert!(matches!(result, Err(ClientError::Protocol(_))), "{what}: {:?}", result.map(|_| ()));
        assert_eq!(fs::read(out.path().join("t/mine")).unwrap(), b"mine", "{what}: nothing deleted");
        assert!(!out.path().join("evil").exists() && !out.path().join("other").exists(), "{what}");
    }
    // An entry that vanishes before its get fails alone; the rest arrive.
    let addr = liar(
        "OK\ntype=f size=1 mtime=1 mode=644\tt/a\ntype=f size=1 mtime=1 mode=644\tt/gone\nOK 2\n",
        &[("t/a", b"a")],
    );
    let mut client = Client::connect(&addr, WAIT).unwrap();
    let (summary, events) = fetch(&mut client, &[Some(name("t"))], &dir, TreeOptions::default());
    assert_eq!((summary.fetched, summary.failed), (1, 1), "{events:?}");
    assert_eq!(fs::read(out.path().join("t/a")).unwrap(), b"a");
}
