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
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, Mode, Timestamps};
use rustix::io::Errno;

use crate::digest::{Digest, Hasher};
use crate::name::Name;

use super::error::PutError;
use super::folder::{FOLDER_FLAGS, FOLDER_MODE, Folder, make_folders, same_fs, unnamed_in};
use super::partial::Partial;
use super::root::Root;
use super::staging::{RESUMABLE_FROM, Staging, Unstaged, partial_key};
use crate::files::link_unnamed;
use crate::mtime::Mtime;

/// What is stored, besides the bytes: the name, the size, and what the sender's copy has.
#[derive(Debug, Clone, Copy)]
pub struct Upload<'a> {
    pub name: &'a Name,
    pub len: u64,
    /// Modification time (seconds, nanoseconds).
    pub mtime: Mtime,
    /// The sender's permission bits: the file gets them less setuid, setgid and sticky, masked
    /// by the server's umask, so never wider than the sender's copy.
    pub perm: u32,
    /// Replace what the name holds (else an existing name is refused).
    pub replace: bool,
    /// Whose upload it is (a token's name, or without tokens the peer's address): interrupted
    /// uploads are capped per owner.
    pub owner: &'a str,
}

/// The digest an upload must have: announced with it, or read once its bytes are in (so its
/// sender could hash it as it sent it).
pub enum Expected<'a> {
    Known(Digest),
    After(&'a mut dyn FnMut() -> Result<Digest, PutError>),
}

/// What [`Root::put`] stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// The file's digest, checked.
    pub digest: Digest,
    /// Where the bytes read for it began (those before were held from an interrupted upload).
    pub from: u64,
}

/// Where an upload's bytes are written.
enum Target {
    /// An `O_TMPFILE` in the folder it goes to: vanishes unless named.
    Unnamed(File),
    /// A named file in the staging folder: kept if the upload is cut off.
    Partial(Partial),
}

impl Root {
    /// The permissions an upload with the sender's `perm` gets: less setuid, setgid and sticky,
    /// masked by the umask.
    pub fn upload_mode(&self, perm: u32) -> u32 {
        perm & 0o777 & !self.umask
    }

    /// Stores the file `up.name` of `up.len` bytes, the bytes from offset `from` on read from
    /// `body`, as the module doc says: checked against the `expected` digest, with the sender's
    /// mode as [`Root::upload_mode`] makes it and its modification time. The bytes before `from`
    /// are those of `partial` (from [`Root::partial`]), which must hold exactly that many; with
    /// `from` 0 any partial is started over. An existing name is replaced only if `up.replace`.
    /// Reads exactly `len - from` bytes from `body` unless it ends or fails first.
    pub fn put(
        &self,
        up: &Upload<'_>,
        expected: Expected<'_>,
        body: &mut dyn Read,
        from: u64,
        partial: Option<Partial>,
    ) -> Result<Stored, PutError> {
        let Upload { name, len, mtime, perm, replace, owner } = *up;
        let mode = self.upload_mode(perm);
        let name = Unstaged::new(name).ok_or(PutError::Reserved)?;
        let (existing, missing, file) = self.existing_folder(name)?;
        let mut partial = match partial {
            Some(p) if from == p.held || from == 0 => Some(p),
            None if from == 0 => None,
            _ => return Err(PutError::NoPartial(from)),
        };
        // A new resumable upload: nothing is created before the first bytes of its body are in,
        // and its staging file is counted against the caps (reclaiming the oldest, if need be).
        let mut first = Vec::new();
        if partial.is_none()
            && let Some(staging) = self.staging.as_ref().filter(|s| len >= RESUMABLE_FROM && same_fs(&existing, s))
        {
            read_first(body, &mut first, len)?;
            let key = partial_key(name, len, mtime);
            for victim in staging.held.start(&key, len, owner)? {
                let _ = rustix::fs::unlinkat(&staging.dir, victim.as_str(), AtFlags::empty());
            }
            partial = self.open_partial(&existing, name, len, mtime, true)?;
        }
        let mut body = io::Read::chain(&first[..], body);
        let (mut target, mut hasher) = match partial {
            Some(mut p) => {
                if from == 0 {
                    p.hasher = Hasher::default();
                    p.held = 0;
                }
                // Only when there is something to cut: ext4 flushes a file that was truncated
                // to nothing when it is closed (auto_da_alloc), which would write a fresh upload
                // out to disk synchronously.
                if p.on_disk != from {
                    p.file.set_len(from)?;
                    p.on_disk = from;
                }
                let hasher = std::mem::take(&mut p.hasher);
                (Target::Partial(p), hasher)
            }
            // Created with its final mode (already masked, so the umask changes nothing): no one
            // can open an unnamed file before it is linked, and no fchmod is needed.
            None => (Target::Unnamed(unnamed_in(&existing, mode)?), Hasher::default()),
        };
        let out = match &target {
            Target::Unnamed(f) => f,
            Target::Partial(p) => &p.file,
        };
        let mut done = from;
        let copied = copy_hashed(&mut body, out, &mut done, len, &mut hasher);
        // A partial is kept for resuming only if the sender stopped (with the digest of what it
        // holds noted); bytes that are wrong, or could not be written (a full disk), are not
        // worth keeping.
        let drop_partial = |target: &mut Target| {
            if let (Target::Partial(p), Some(staging)) = (target, &self.staging) {
                let _ = rustix::fs::unlinkat(&staging.dir, p.key.as_str(), AtFlags::empty());
                p.gone = true;
            }
        };
        match copied {
            Ok(()) => {}
            Err(e @ PutError::Io(_)) => {
                drop_partial(&mut target);
                return Err(e);
            }
            Err(e) => {
                if let Target::Partial(p) = &mut target {
                    (p.held, p.hasher) = (done, hasher);
                }
                return Err(e);
            }
        }
        let got = hasher.digest();
        let digest = match expected {
            Expected::Known(digest) => digest,
            Expected::After(read) => match read() {
                Ok(digest) => digest,
                Err(e) => {
                    drop_partial(&mut target);
                    return Err(e);
                }
            },
        };
        if got != digest {
            drop_partial(&mut target);
            return Err(PutError::Mismatch { expected: digest, got });
        }
        let out = match &target {
            Target::Unnamed(f) => f,
            Target::Partial(p) => &p.file,
        };
        if matches!(target, Target::Partial(_)) {
            rustix::fs::fchmod(out, Mode::from_raw_mode(mode))?;
        }
        let when = mtime.timespec();
        rustix::fs::futimens(out, &Timestamps { last_access: when, last_modification: when })?;
        // Only now are missing folders made (an unnamed file can be linked into any folder of its
        // file system), so a refused upload leaves no empty folders behind either.
        let folder = make_folders(existing, &missing, &name)?;
        match target {
            Target::Partial(mut p) => {
                self.name_partial(&p, &folder, file, replace)?;
                p.gone = true;
            }
            Target::Unnamed(tmp) => {
                self.name_unnamed(&tmp, &folder, file, replace)?;
                self.forget_partial(name, len, mtime);
            }
        }
        Ok(Stored { digest, from })
    }

    /// Makes the folder `name` (and the folders above it) if missing, each opened without
    /// following a symlink, and gives it the sender's mode (as [`Root::upload_mode`] makes it)
    /// and modification time. Something else at the name (a file, a symlink) is refused.
    pub fn make_folder(&self, name: &Name, perm: u32, mtime: Mtime) -> Result<(), PutError> {
        let name = Unstaged::new(name).ok_or(PutError::Reserved)?;
        let (existing, missing, last) = self.existing_folder(name)?;
        let above = make_folders(existing, &missing, &name)?;
        match rustix::fs::mkdirat(&above, last, Mode::from_raw_mode(FOLDER_MODE)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        let folder = match rustix::fs::openat(&above, last, FOLDER_FLAGS, Mode::empty()) {
            Ok(folder) => folder,
            Err(Errno::LOOP | Errno::NOTDIR) => return Err(PutError::NotFolder(name.to_string())),
            Err(e) => return Err(e.into()),
        };
        rustix::fs::fchmod(&folder, Mode::from_raw_mode(self.upload_mode(perm)))?;
        let when = mtime.timespec();
        rustix::fs::futimens(&folder, &Timestamps { last_access: when, last_modification: when })?;
        Ok(())
    }

    /// Gives a finished upload in the staging folder its name: linked (failing if the name is
    /// taken), or renamed over the old file when replacing. It leaves the staging folder either way.
    fn name_partial(&self, p: &Partial, folder: &Folder, file: &[u8], replace: bool) -> Result<(), PutError> {
        let Some(staging) = &self.staging else { return Err(PutError::NoPartial(0)) };
        if replace {
            rustix::fs::renameat(&staging.dir, p.key.as_str(), folder, file)?;
            return Ok(());
        }
        let linked = rustix::fs::linkat(&staging.dir, p.key.as_str(), folder, file, AtFlags::empty());
        let _ = rustix::fs::unlinkat(&staging.dir, p.key.as_str(), AtFlags::empty());
        match linked {
            Err(Errno::EXIST) => Err(PutError::Exists),
            other => Ok(other?),
        }
    }

    /// Gives an unnamed file its name: linked (failing if the name is taken), or when replacing
    /// linked under a name of its own first (in the staging folder, else beside the old file),
    /// then renamed over the old file in one step.
    fn name_unnamed(&self, tmp: &File, folder: &Folder, file: &[u8], replace: bool) -> Result<(), PutError> {
        if !replace {
            return match link_unnamed(tmp, folder, file) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(PutError::Exists),
                other => Ok(other?),
            };
        }
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let same_fs = |s: &&Staging| rustix::fs::fstat(folder).is_ok_and(|st| st.st_dev == s.dev);
        let (dir, staged) = match self.staging.as_ref().filter(same_fs) {
            Some(staging) => (staging.dir.as_fd(), format!("stage-{}-{n}", std::process::id())),
            None => (folder.as_fd(), format!(".ft-put.{}-{n}", std::process::id())),
        };
        link_unnamed(tmp, dir, &staged)?;
        if let Err(e) = rustix::fs::renameat(dir, staged.as_str(), folder, file) {
            let _ = rustix::fs::unlinkat(dir, staged.as_str(), AtFlags::empty());
            return Err(e.into());
        }
        Ok(())
    }
}
/// Copies the bytes of `body` into `out` from offset `done` up to `len`, continuing `hasher`
/// (which has hashed the bytes before `done`); `done` and `hasher` say how far it got, also when
/// it stops early.
fn copy_hashed(body: &mut dyn Read, out: &File, done: &mut u64, len: u64, hasher: &mut Hasher) -> Result<(), PutError> {
    let mut buf = vec![0u8; usize::try_from(len - *done).unwrap_or(usize::MAX).clamp(1, 256 << 10)];
    while *done < len {
        // The buffer is filled before it is written: one write for a small file, however its
        // bytes arrived.
        let want = (len - *done).min(buf.len() as u64) as usize;
        let mut n = 0;
        let mut failed = None;
        while n < want {
            match body.read(&mut buf[n..want]) {
                Ok(0) => break,
                Ok(got) => n += got,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        // What arrived before a failure is kept too: a resume goes on from it.
        out.write_all_at(&buf[..n], *done)?;
        hasher.update(&buf[..n]);
        *done += n as u64;
        if let Some(e) = failed {
            return Err(PutError::Body(e));
        }
        if n < want {
            return Err(PutError::Short { expected: len, received: *done });
        }
    }
    Ok(())
}

/// Reads the first bytes of a body (at least one, at most 64 KiB or `len`) into `first`.
fn read_first(body: &mut dyn Read, first: &mut Vec<u8>, len: u64) -> Result<(), PutError> {
    first.resize(usize::try_from(len).unwrap_or(usize::MAX).min(64 << 10), 0);
    loop {
        match body.read(first) {
            Ok(0) => return Err(PutError::Short { expected: len, received: 0 }),
            Ok(n) => {
                first.truncate(n);
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(PutError::Body(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::current_umask;
    use crate::store::{Caps, Cleaned, PARTIAL_TTL, STAGING};
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn name(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    const CAPS: Caps = Caps { bytes: 1 << 40, files: 1000 };

    fn up(name: &Name, len: u64) -> Upload<'_> {
        Upload { name, len, mtime: Mtime::new(0, 0), perm: 0o644, replace: false, owner: "-" }
    }

    fn put(root: &Root, n: &str, bytes: &[u8], replace: bool) -> Result<Stored, PutError> {
        let expected = Expected::Known(Digest::of(bytes));
        let n = name(n);
        let up = Upload {
            name: &n,
            len: bytes.len() as u64,
            mtime: Mtime::new(1_000_000_000, 5),
            perm: 0o644,
            replace,
            owner: "-",
        };
        root.put(&up, expected, &mut &bytes[..], 0, None)
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
        assert_eq!(meta.permissions().mode() & 0o7777, 0o644 & !current_umask(), "the sender's mode, masked");
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
        let (deeper, g, h) = (name("new/deeper/f"), name("g"), name("h"));
        let lie = root.put(&up(&deeper, 5), Expected::Known(Digest::of(b"other")), &mut &b"bytes"[..], 0, None);
        assert!(matches!(lie, Err(PutError::Mismatch { .. })), "{lie:?}");
        let short = root.put(&up(&g, 10), Expected::Known(Digest::of(b"0123456789")), &mut &b"01234"[..], 0, None);
        assert!(matches!(short, Err(PutError::Short { expected: 10, received: 5 })), "{short:?}");
        assert!(tree(tmp.path()).is_empty(), "{:?}", tree(tmp.path()));
        // Only what was announced is read: a longer body's rest is left for the caller.
        let mut body = &b"abcdef"[..];
        root.put(&up(&h, 3), Expected::Known(Digest::of(b"abc")), &mut body, 0, None).unwrap();
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

    #[test]
    fn start_up_removes_staged_names_and_old_partials_and_keeps_recent_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let staging = tmp.path().join(STAGING);
        fs::create_dir(&staging).unwrap();
        for f in ["stage-1-0", "recent.part", "old.part", "stray"] {
            fs::write(staging.join(f), b"x").unwrap();
        }
        let two_days_ago = std::time::SystemTime::now() - 2 * PARTIAL_TTL;
        fs::File::options().write(true).open(staging.join("old.part")).unwrap().set_modified(two_days_ago).unwrap();
        fs::create_dir(staging.join("folder")).unwrap();
        let mut root = Root::open(tmp.path()).unwrap();
        assert_eq!(root.enable_uploads(CAPS).unwrap(), Cleaned { removed: 3, kept: 1, kept_bytes: 1 });
        assert_eq!(tree(&staging), ["folder", "recent.part"]);
        // A symlink in its place is refused, not followed.
        let other = tempfile::tempdir().unwrap();
        let tmp2 = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(other.path(), tmp2.path().join(STAGING)).unwrap();
        assert!(Root::open(tmp2.path()).unwrap().enable_uploads(CAPS).is_err());
    }

    #[test]
    fn a_partial_continues_where_it_stopped_and_is_gone_once_named() {
        let tmp = tempfile::tempdir().unwrap();
        let mut root = Root::open(tmp.path()).unwrap();
        root.enable_uploads(CAPS).unwrap();
        let data: Vec<u8> = (0..RESUMABLE_FROM as usize * 2).map(|i| (i % 251) as u8).collect();
        let (n, len, digest) = (name("d/big"), data.len() as u64, Digest::of(&data));
        let up = Upload { name: &n, len, mtime: Mtime::new(0, 0), perm: 0o644, replace: false, owner: "-" };
        let cut = root.put(&up, Expected::Known(digest), &mut &data[..1000], 0, None);
        assert!(matches!(cut, Err(PutError::Short { received: 1000, .. })), "{cut:?}");
        assert!(root.partial(&n, len, Mtime::new(0, 1)).unwrap().is_none(), "another version: none");
        let held = root.partial(&n, len, Mtime::new(0, 0)).unwrap().unwrap();
        assert_eq!((held.held(), held.digest()), (1000, Digest::of(&data[..1000])));
        // Held by one caller at a time.
        assert!(root.partial(&n, len, Mtime::new(0, 0)).unwrap().is_none());
        // The digest may come after the bytes.
        let mut after = || Ok(digest);
        root.put(&up, Expected::After(&mut after), &mut &data[1000..], 1000, Some(held)).unwrap();
        assert!(fs::read(tmp.path().join("d/big")).unwrap() == data);
        assert!(tree(&tmp.path().join(STAGING)).is_empty());
        // Continuing from bytes not held is refused.
        let e = name("e");
        let gone = root.put(&Upload { name: &e, ..up }, Expected::Known(digest), &mut &data[5..], 5, None);
        assert!(matches!(gone, Err(PutError::NoPartial(5))), "{gone:?}");
        assert!(matches!(put(&root, ".ft-partial/x", b"x", false), Err(PutError::Reserved)));
    }
}
