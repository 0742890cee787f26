//! Writing a file beneath the root, for uploads: verified, atomic, never through a symlink.
//!
//! [`Root::put`] goes down the file's folders one component at a time, each opened with
//! `O_NOFOLLOW` (a symlink anywhere on the way is refused, whether it leads inside the root or
//! out), writes the bytes into an unnamed file (`O_TMPFILE`) in the deepest folder that exists,
//! hashing them as they arrive, and only once every byte is there and matches the sender's digest
//! makes the missing folders (the same way) and gives the file its name. A body that is short,
//! wrong or interrupted leaves nothing behind, not even a folder: an unnamed file vanishes when it
//! is closed. The
//! name is taken with `linkat`, which fails if anything (even a dangling symlink) holds it, or,
//! when replacing is asked for, with a `rename` over it, so readers see the old file or the new
//! one, never a mix. Uploaded files get mode 0644 whatever the sender's was: never executable.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

use super::Root;
use crate::digest::{Digest, Hasher};
use crate::name::Name;

/// The mode of every uploaded file.
pub const UPLOAD_MODE: u32 = 0o644;

/// The mode of every folder an upload creates.
pub const FOLDER_MODE: u32 = 0o755;

/// Why an upload was not stored. Nothing was left beneath the root in any case.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error("already exists")]
    Exists,
    #[error("{0} is not a folder (or is a symlink)")]
    NotFolder(String),
    #[error("the body ended after {received} of {expected} bytes")]
    Short { expected: u64, received: u64 },
    #[error("the bytes received have digest {got}, not the {expected} announced")]
    Mismatch { expected: Digest, got: Digest },
    #[error("this file system cannot hold unnamed files (O_TMPFILE), which uploads need")]
    Unsupported,
    /// Reading the body failed (the sender is gone or stalled).
    #[error("reading the body: {0}")]
    Body(io::Error),
    /// Writing beneath the root failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl From<Errno> for PutError {
    fn from(e: Errno) -> PutError {
        PutError::Io(e.into())
    }
}

impl Root {
    /// Stores the `len` bytes read from `body` as `name` beneath the root, as the module doc says:
    /// checked against `digest`, with mode [`UPLOAD_MODE`] and modification time `mtime`
    /// (seconds, nanoseconds). An existing `name` is replaced only if `replace`. Reads exactly
    /// `len` bytes from `body` unless it ends or fails first.
    pub fn put(
        &self,
        name: &Name,
        len: u64,
        digest: Digest,
        mtime: (i64, u32),
        body: &mut dyn Read,
        replace: bool,
    ) -> Result<(), PutError> {
        let (existing, missing, file) = self.existing_folder(name)?;
        let tmp = match rustix::fs::openat(
            &existing,
            ".",
            OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => File::from(fd),
            Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL) => return Err(PutError::Unsupported),
            Err(e) => return Err(e.into()),
        };
        let got = copy_hashed(body, &tmp, len)?;
        if got != digest {
            return Err(PutError::Mismatch { expected: digest, got });
        }
        rustix::fs::fchmod(&tmp, Mode::from_raw_mode(UPLOAD_MODE))?;
        let when = Timespec { tv_sec: mtime.0, tv_nsec: mtime.1.into() };
        rustix::fs::futimens(&tmp, &Timestamps { last_access: when, last_modification: when })?;
        // Only now are missing folders made (an unnamed file can be linked into any folder of its
        // file system), so a refused upload leaves no empty folders behind either.
        let folder = make_folders(existing, &missing, name)?;
        if !replace {
            return match link_unnamed(&tmp, &folder, file) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(PutError::Exists),
                other => Ok(other?),
            };
        }
        // A name of its own first, then renamed over the old file in one step.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let staged = format!(".{file}.{}-{}.ft-put", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        link_unnamed(&tmp, &folder, &staged)?;
        if let Err(e) = rustix::fs::renameat(&folder, staged.as_str(), &folder, file) {
            let _ = rustix::fs::unlinkat(&folder, staged.as_str(), AtFlags::empty());
            return Err(e.into());
        }
        Ok(())
    }

    /// The deepest folder on the way to `name` that exists, opened without following a symlink,
    /// the components beneath it still to be made, and the last component of `name`.
    fn existing_folder<'n>(&self, name: &'n Name) -> Result<(OwnedFd, Vec<&'n str>, &'n str), PutError> {
        let mut folder = rustix::fs::openat(&self.dir, ".", FOLDER_FLAGS, Mode::empty())?;
        let Some((folders, file)) = name.as_str().rsplit_once('/') else {
            return Ok((folder, Vec::new(), name.as_str()));
        };
        let parts: Vec<&str> = folders.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            folder = match rustix::fs::openat(&folder, *part, FOLDER_FLAGS, Mode::empty()) {
                Ok(next) => next,
                Err(Errno::NOENT) => return Ok((folder, parts[i..].to_vec(), file)),
                Err(Errno::LOOP | Errno::NOTDIR) => return Err(PutError::NotFolder(parts[..=i].join("/"))),
                Err(e) => return Err(e.into()),
            };
        }
        Ok((folder, Vec::new(), file))
    }
}

/// How every folder on the way to an upload is opened: never through a symlink.
const FOLDER_FLAGS: OFlags = OFlags::DIRECTORY.union(OFlags::NOFOLLOW).union(OFlags::RDONLY).union(OFlags::CLOEXEC);

/// Makes the folders `missing` one inside the other beneath `folder`, each opened without
/// following a symlink (another upload may make one meanwhile: that is fine; a symlink is not).
fn make_folders(mut folder: OwnedFd, missing: &[&str], name: &Name) -> Result<OwnedFd, PutError> {
    let above = name.as_str().matches('/').count() - missing.len();
    for (i, part) in missing.iter().enumerate() {
        match rustix::fs::mkdirat(&folder, *part, Mode::from_raw_mode(FOLDER_MODE)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        folder = match rustix::fs::openat(&folder, *part, FOLDER_FLAGS, Mode::empty()) {
            Ok(next) => next,
            Err(Errno::LOOP | Errno::NOTDIR) => {
                let shown: Vec<&str> = name.as_str().split('/').take(above + i + 1).collect();
                return Err(PutError::NotFolder(shown.join("/")));
            }
            Err(e) => return Err(e.into()),
        };
    }
    Ok(folder)
}

/// Copies exactly `len` bytes of `body` into `out`, returning their digest.
fn copy_hashed(body: &mut dyn Read, mut out: &File, len: u64) -> Result<Digest, PutError> {
    let mut buf = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX).clamp(1, 256 << 10)];
    let mut hasher = Hasher::default();
    let mut done = 0u64;
    while done < len {
        let want = (len - done).min(buf.len() as u64) as usize;
        let n = match body.read(&mut buf[..want]) {
            Ok(0) => return Err(PutError::Short { expected: len, received: done }),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(PutError::Body(e)),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        done += n as u64;
    }
    Ok(hasher.digest())
}

/// Gives the unnamed file `tmp` the name `name` in `dir`; fails with `AlreadyExists` if anything
/// holds that name. Linking the descriptor itself (`AT_EMPTY_PATH`) is cheapest but needs
/// `CAP_DAC_READ_SEARCH`; its `/proc/self/fd` path works for anyone. Which one this process may
/// use is remembered.
pub(crate) fn link_unnamed(tmp: &File, dir: impl AsFd, name: &str) -> io::Result<()> {
    static EMPTY_PATH_WORKS: AtomicBool = AtomicBool::new(true);
    if EMPTY_PATH_WORKS.load(Ordering::Relaxed) {
        match rustix::fs::linkat(tmp, "", &dir, name, AtFlags::EMPTY_PATH) {
            Ok(()) => return Ok(()),
            Err(Errno::NOENT | Errno::PERM | Errno::INVAL) => EMPTY_PATH_WORKS.store(false, Ordering::Relaxed),
            Err(e) => return Err(e.into()),
        }
    }
    let proc_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(tmp));
    Ok(rustix::fs::linkat(rustix::fs::CWD, proc_path, &dir, name, AtFlags::SYMLINK_FOLLOW)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn name(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    fn put(root: &Root, n: &str, bytes: &[u8], replace: bool) -> Result<(), PutError> {
        root.put(&name(n), bytes.len() as u64, Digest::of(bytes), (1_000_000_000, 5), &mut &bytes[..], replace)
    }

    /// Everything beneath `dir`, as relative paths.
    fn tree(dir: &std::path::Path) -> Vec<String> {
        let mut all = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                all.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
                if fs::symlink_metadata(&p).unwrap().is_dir() {
                    stack.push(p);
                }
            }
        }
        all.sort();
        all
    }

    #[test]
    fn a_file_lands_whole_with_its_folders_mode_0644_and_the_senders_time() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Root::open(tmp.path()).unwrap();
        put(&root, "a/b c/new.sh", b"#!/bin/sh\n", false).unwrap();
        let path = tmp.path().join("a/b c/new.sh");
        assert_eq!(fs::read(&path).unwrap(), b"#!/bin/sh\n");
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, UPLOAD_MODE, "never executable");
        assert_eq!((meta.mtime(), meta.mtime_nsec()), (1_000_000_000, 5));
        assert!(tmp.path().join("a/b c").is_dir());
        put(&root, "empty", b"", false).unwrap();
        assert_eq!(fs::read(tmp.path().join("empty")).unwrap(), b"");
    }

    #[test]
    fn an_existing_name_is_kept_unless_replacing_and_then_replaced_in_one_step() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Root::open(tmp.path()).unwrap();
        fs::write(tmp.path().join("f"), b"old").unwrap();
        assert!(matches!(put(&root, "f", b"new", false), Err(PutError::Exists)));
        assert_eq!(fs::read(tmp.path().join("f")).unwrap(), b"old");
        // A reader holding the old file keeps reading the old bytes.
        let held = fs::read(tmp.path().join("f")).unwrap();
        put(&root, "f", b"newer", true).unwrap();
        assert_eq!((held.as_slice(), fs::read(tmp.path().join("f")).unwrap().as_slice()), (&b"old"[..], &b"newer"[..]));
        assert_eq!(tree(tmp.path()), ["f"], "no staged name left");
        // A folder at the name is never replaced.
        fs::create_dir(tmp.path().join("d")).unwrap();
        assert!(put(&root, "d", b"x", true).is_err() && tmp.path().join("d").is_dir());
    }

    #[test]
    fn a_wrong_or_short_body_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Root::open(tmp.path()).unwrap();
        let lie = root.put(&name("new/deeper/f"), 5, Digest::of(b"other"), (0, 0), &mut &b"bytes"[..], false);
        assert!(matches!(lie, Err(PutError::Mismatch { .. })), "{lie:?}");
        let short = root.put(&name("g"), 10, Digest::of(b"0123456789"), (0, 0), &mut &b"01234"[..], false);
        assert!(matches!(short, Err(PutError::Short { expected: 10, received: 5 })), "{short:?}");
        assert!(tree(tmp.path()).is_empty(), "{:?}", tree(tmp.path()));
        // Only what was announced is read: a longer body's rest is left for the caller.
        let mut body = &b"abcdef"[..];
        root.put(&name("h"), 3, Digest::of(b"abc"), (0, 0), &mut body, false).unwrap();
        assert_eq!((fs::read(tmp.path().join("h")).unwrap().as_slice(), body), (&b"abc"[..], &b"def"[..]));
    }

    #[test]
    fn nothing_is_written_through_a_symlink_inside_the_root_or_out_of_it() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root_path = tmp.path().join("root");
        fs::create_dir_all(root_path.join("real")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root_path.join("out")).unwrap();
        std::os::unix::fs::symlink("real", root_path.join("in")).unwrap();
        fs::write(outside.path().join("victim"), b"keep").unwrap();
        std::os::unix::fs::symlink(outside.path().join("victim"), root_path.join("link")).unwrap();
        let root = Root::open(&root_path).unwrap();
        for n in ["out/x", "out/deeper/x", "in/x"] {
            let r = put(&root, n, b"evil", false);
            assert!(matches!(&r, Err(PutError::NotFolder(_))), "{n}: {r:?}");
        }
        // A symlink at the final name: kept without replacing, itself replaced with it.
        assert!(matches!(put(&root, "link", b"evil", false), Err(PutError::Exists)));
        put(&root, "link", b"mine", true).unwrap();
        assert!(!fs::symlink_metadata(root_path.join("link")).unwrap().file_type().is_symlink());
        assert_eq!(fs::read(outside.path().join("victim")).unwrap(), b"keep");
        assert_eq!(tree(outside.path()), ["victim"]);
        assert_eq!(tree(&root_path.join("real")), Vec::<String>::new());
    }
}
