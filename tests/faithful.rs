//! Copies that are faithful and syncs that lose nothing, with the real binaries: every entry of
//! the server's tree is transferred or named (fifos, symlinks in and out of the root and to
//! nothing, names holding a newline, a tab, an escape, a backslash or bytes that are not UTF-8,
//! devices), `--delete` deletes nothing when the server could not read part of the tree, and a
//! folder in the way of a file leaves no `.part` behind.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::util::{RealServer, ftclient, is_root, pattern, put};

/// A work folder with a served folder that the server's user may read.
fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("server_downloads")).unwrap();
    dir
}

/// Everything beneath `root`, not following symlinks, by the names' bytes: what kind each entry
/// is (with a symlink's target), its contents, and its mode and time (files and fifos).
fn tree(root: &Path) -> Vec<(Vec<u8>, String)> {
    let mut all = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().as_os_str().as_bytes().to_vec();
            let kind = meta.file_type();
            let what = if kind.is_dir() {
                stack.push(path.clone());
                "folder".to_string()
            } else if kind.is_symlink() {
                format!("symlink -> {:?}", fs::read_link(&path).unwrap())
            } else if kind.is_fifo() {
                format!("fifo {:o} {}", meta.mode() & 0o777, meta.mtime())
            } else if kind.is_file() {
                format!("file {:o} {} {:?}", meta.mode() & 0o777, meta.mtime(), fs::read(&path).unwrap())
            } else {
                "other".to_string()
            };
            all.push((rel, what));
        }
    }
    all.sort();
    all
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo reads a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o640) }, 0);
}

fn path_of(dir: &Path, name: &[u8]) -> PathBuf {
    dir.join(OsStr::from_bytes(name))
}

#[test]
fn every_entry_of_the_tree_arrives_or_is_named_and_odd_names_round_trip() {
    let work = workdir();
    let root = work.path().join("server_downloads");
    let names: [&[u8]; 7] = [
        b"new\nline.txt",
        b"tab\there.txt",
        b"esc\x1b[31mred.txt",
        b"back\\slash.txt",
        b"latin1-\xe9t\xe9.txt",
        b"%41 and %.txt",
        b"d\xff/inside.txt",
    ];
    for (i, name) in names.iter().enumerate() {
        let path = path_of(&root.join("t"), name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, format!("file {i}")).unwrap();
    }
    put(&root, "t/sub/deep.bin", &pattern(300 << 10));
    fs::set_permissions(root.join("t/sub/deep.bin"), fs::Permissions::from_mode(0o600)).unwrap();
    mkfifo(&root.join("t/a-fifo"));
    std::os::unix::fs::symlink("nowhere", root.join("t/dangling")).unwrap();
    std::os::unix::fs::symlink("/etc", root.join("t/out-of-root")).unwrap();
    std::os::unix::fs::symlink("sub", root.join("t/link-to-dir")).unwrap();
    std::os::unix::fs::symlink("../t/sub/deep.bin", root.join("t/link-to-file")).unwrap();
    fs::create_dir_all(root.join("t/empty")).unwrap();
    // A device, where the test may make one (root): not copied, and said so.
    let device = is_root() && {
        let c = std::ffi::CString::new(root.join("t/null-device").as_os_str().as_bytes()).unwrap();
        // SAFETY: mknod reads a NUL-terminated path; 1:3 is /dev/null's device number.
        unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) == 0 }
    };
    if !device {
        eprintln!("no device in the tree: making one needs root");
    }
    let server = RealServer::start(work.path(), &[]);
    let run = |args: &[&str]| ftclient(work.path(), server.port, args, b"");

    let (code, out, err) = run(&["get", "-r", "t", "-o", "out"]);
    let mut want = tree(&root.join("t"));
    if device {
        assert_eq!(code, 23, "a partial transfer: {err}");
        assert!(err.contains("t/null-device: not copied: a character device"), "{err}");
        want.retain(|(name, _)| name != b"null-device");
    } else {
        assert_eq!(code, 0, "{err}");
    }
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    let got = tree(&work.path().join("out/t"));
    assert_eq!(got, want, "every entry as it is on the server, each symlink as a symlink");
    // Names reach the terminal escaped, never raw.
    assert!(!err.contains('\x1b') && !err.contains("\n\t"), "{err:?}");

    // Again: nothing moves, and a dry run of --delete over the copy removes nothing the server has.
    let (code, out, err) = run(&["get", "-r", "t", "-o", "out", "--delete", "--dry-run"]);
    assert_eq!(code, if device { 23 } else { 0 }, "{err}");
    assert_eq!(String::from_utf8_lossy(&out), "", "nothing to fetch, make or delete");
    let (code, _, err) = run(&["get", "-r", "t", "-o", "out", "--delete"]);
    assert_eq!(code, if device { 23 } else { 0 }, "{err}");
    assert!(err.contains("fetched 0 files") && err.contains("deleted 0"), "{err}");
    assert_eq!(tree(&work.path().join("out/t")), want);

    // A local file the server never had is what --delete removes; its name printed escaped.
    fs::write(path_of(&work.path().join("out/t"), b"gone\x1b[2J"), b"x").unwrap();
    let (_, out, _) = run(&["get", "-r", "t", "-o", "out", "--delete", "--dry-run"]);
    assert_eq!(String::from_utf8_lossy(&out), "delete t/gone\\u{1b}[2J\n");

    // With -L the links inside the root are followed; those out of it or to nothing are named.
    let (code, _, err) = run(&["get", "-r", "-L", "t", "-o", "copies"]);
    assert_eq!(code, 23, "{err}");
    assert!(err.contains("t/dangling: not copied") && err.contains("t/out-of-root: not copied"), "{err}");
    assert_eq!(fs::read(work.path().join("copies/t/link-to-dir/deep.bin")).unwrap(), pattern(300 << 10));
    assert!(fs::symlink_metadata(work.path().join("copies/t/link-to-file")).unwrap().is_file());
}

#[test]
fn a_folder_the_server_cannot_read_stops_delete_and_is_named() {
    let work = workdir();
    let root = work.path().join("server_downloads");
    put(&root, "pub/a.txt", b"a");
    put(&root, "secret/s.txt", b"s");
    for dir in [&root, &root.join("pub"), &root.join("secret")] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let server = RealServer::start_unprivileged(work.path(), &[]);
    let run = |args: &[&str]| ftclient(work.path(), server.port, args, b"");
    let (code, _, err) = run(&["get", "-r", ".", "-o", "out"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(fs::read(work.path().join("out/secret/s.txt")).unwrap(), b"s");

    // Now the server's user may not read the folder: its listing cannot be complete.
    fs::set_permissions(root.join("secret"), fs::Permissions::from_mode(0o700)).unwrap();
    if !is_root() {
        fs::set_permissions(root.join("secret"), fs::Permissions::from_mode(0o000)).unwrap();
    }
    let (code, out, err) = run(&["get", "-r", ".", "-o", "out", "--delete", "--dry-run"]);
    assert_eq!(code, 23, "{err}");
    assert_eq!(String::from_utf8_lossy(&out), "", "nothing would be deleted");
    let (code, _, err) = run(&["get", "-r", ".", "-o", "out", "--delete"]);
    assert_eq!(code, 23, "{err}");
    assert!(err.contains("secret: not copied: the server cannot read it"), "{err}");
    assert!(err.contains("skipping deletion (nothing was deleted)"), "{err}");
    assert_eq!(fs::read(work.path().join("out/secret/s.txt")).unwrap(), b"s", "the local copy is kept");
    // list says so too, and exits with the same code.
    let (code, out, err) = run(&["list"]);
    assert_eq!(code, 23, "{err}");
    assert!(err.contains("secret: the server cannot read it") && err.contains("incomplete"), "{err}");
    assert!(String::from_utf8_lossy(&out).contains("pub/a.txt"));
    fs::set_permissions(root.join("secret"), fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_folder_in_the_way_of_a_file_is_named_and_leaves_no_part() {
    let work = workdir();
    let root = work.path().join("server_downloads");
    put(&root, "small.txt", b"small");
    put(&root, "big.bin", &pattern(1 << 20));
    let server = RealServer::start(work.path(), &[]);
    for name in ["small.txt", "big.bin"] {
        fs::create_dir_all(work.path().join("out").join(name).join("inside")).unwrap();
        let (code, _, err) = ftclient(work.path(), server.port, &["get", name, "-o", "out"], b"");
        assert_eq!(code, 6, "{err}");
        assert!(err.contains(&format!("a folder {name} is in the way")), "{err}");
        assert!(!work.path().join("out").join(format!("{name}.part")).exists(), "{name}: no .part");
        assert!(work.path().join("out").join(name).join("inside").is_dir(), "the folder is untouched");
    }
}
