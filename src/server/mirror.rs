//! The cache's copy on disk (`server_cache/`): one self-describing file per cached entry.
//!
//! Each entry is a file `<id>.ftc` holding one header line and then the cached bytes:
//!
//! ```text
//! ftcache4 <size:20> <mtime-sec:+20> <mtime-nsec:9> <ctime-sec:+20> <ctime-nsec:9> <inode:20> <device:20> <mode:o6> <admitted-unix-ms:20> <xxh3:32> <name, escaped>\n
//! <size bytes of the file as it was when admitted>
//! ```
//!
//! Numbers are zero-padded to fixed widths so an entry's size on disk is known before it is
//! written ([`overhead`]) and the cache can charge it against its cap up front. A file is written
//! under `<id>.ftc.tmp` and renamed into place when complete, so after a crash an entry is
//! complete or absent; leftover `.tmp` files and entries whose length disagrees with their
//! header are deleted by [`Mirror::scan`]. The header carries the source's version so a restarted
//! server keeps only entries whose source is unchanged, and the admission time so the TTL survives
//! restarts. Only `*.ftc` and `*.ftc.tmp` files are ever deleted, whatever else the folder holds.

use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};

use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};
use rustix::fs::OFlags;
use rustix::io::Errno;

use super::bytes::Bytes;
use crate::digest::Digest;
use crate::name::{MAX_NAME_LEN, Name};
use crate::store::FileVersion;
use crate::wire::{parse_u64, read_line};

const MAGIC: &str = "ftcache4";
/// Header bytes besides the name and its line feed: the magic, six fixed-width numbers, the digest.
const HEADER_FIXED: u64 = (MAGIC.len() + 1 + 21 + 21 + 10 + 21 + 10 + 21 + 21 + 7 + 21 + 33) as u64;

/// Bytes an entry for `name` takes on disk besides the file's own bytes.
pub fn overhead(name: &Name) -> u64 {
    HEADER_FIXED + name.escaped().len() as u64 + 1
}

/// An entry found on disk by [`Mirror::scan`]; its bytes are read by [`Mirror::load`].
#[derive(Debug)]
pub struct Stored {
    pub file: String,
    pub name: Name,
    pub version: FileVersion,
    pub digest: Digest,
    pub admitted: SystemTime,
}

/// The `server_cache/` folder.
pub struct Mirror {
    dir: Dir,
    path: PathBuf,
    /// Distinguishes this run's file names from earlier runs'.
    run: u64,
    /// Next file number within this run.
    seq: AtomicU64,
}

impl Mirror {
    /// Opens (creating if needed, as `0700`) the mirror folder. A folder that others can write is
    /// refused, as OpenSSH's StrictModes refuses such a key file: anyone who can write it could
    /// plant an entry, with a digest that matches the bytes it plants, and have it served.
    /// Writable by all: refused. Writable by its group: refused unless that group is this
    /// process's own (the per-user group of a umask-002 system, as a fresh clone there has).
    pub fn open(path: &Path) -> io::Result<Mirror> {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(path)?;
        let meta = std::fs::metadata(path)?;
        let mode = meta.permissions().mode() & 0o7777;
        let own_group = meta.gid() == rustix::process::getegid().as_raw();
        if mode & 0o002 != 0 || (mode & 0o020 != 0 && !own_group) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "it is writable by others (mode {mode:04o}), who could plant cached files; run chmod go-w on it"
                ),
            ));
        }
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me && meta.uid() != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("it belongs to user {}, not to this server's user ({me}) or root", meta.uid()),
            ));
        }
        let dir = Dir::open_ambient_dir(path, cap_std::ambient_authority())?;
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
        Ok(Mirror { dir, path: path.to_path_buf(), run: nanos ^ u64::from(std::process::id()), seq: AtomicU64::new(0) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes an entry atomically and returns its file name.
    pub fn write(
        &self,
        name: &Name,
        v: &FileVersion,
        digest: Digest,
        admitted: SystemTime,
        body: &Bytes,
    ) -> io::Result<String> {
        let file = format!("{:016x}-{:08x}.ftc", self.run, self.seq.fetch_add(1, Ordering::Relaxed));
        let tmp = format!("{file}.tmp");
        let result = (|| {
            let mut out = self.dir.open_with(&tmp, OpenOptions::new().write(true).create_new(true))?.into_std();
            out.write_all(header(name, v, digest, admitted).as_bytes())?;
            body.write_to(&mut out)?;
            drop(out);
            self.dir.rename(&tmp, &self.dir, &file)
        })();
        if let Err(e) = result {
            let _ = self.dir.remove_file(&tmp);
            return Err(e);
        }
        Ok(file)
    }

    /// Deletes an entry's file; a file already gone is fine.
    pub fn remove(&self, file: &str) {
        match self.dir.remove_file(file) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(dir = %self.path.display(), file, "cannot remove cache file: {e}"),
        }
    }

    /// Every well-formed entry in the folder. Deletes leftover temporary files and entries that
    /// are truncated or unreadable.
    pub fn scan(&self) -> io::Result<Vec<Stored>> {
        let mut found = Vec::new();
        for entry in self.dir.entries()?.flatten() {
            let file_name = entry.file_name();
            let Some(file) = file_name.to_str() else { continue };
            if file.ends_with(".ftc.tmp") {
                self.remove(file);
            } else if file.ends_with(".ftc") {
                match self.read_header(file) {
                    Ok(stored) => found.push(stored),
                    // Not ours to delete: say so and leave it.
                    Err(e)
                        if matches!(e.kind(), io::ErrorKind::InvalidInput)
                            || e.raw_os_error() == Some(Errno::LOOP.raw_os_error()) =>
                    {
                        tracing::warn!(dir = %self.path.display(), file, "ignoring a cache file that is not a regular file");
                    }
                    Err(e) => {
                        tracing::warn!(dir = %self.path.display(), file, "dropping bad cache file: {e}");
                        self.remove(file);
                    }
                }
            }
        }
        Ok(found)
    }

    /// Reads an entry's bytes, checking their length and digest against its header.
    pub fn load(&self, stored: &Stored) -> io::Result<Bytes> {
        let file = self.dir.open(&stored.file)?.into_std();
        if file.metadata()?.len() != overhead(&stored.name) + stored.version.size {
            return Err(bad("cache file length disagrees with its header"));
        }
        let (body, digest) = Bytes::read(&file, overhead(&stored.name), stored.version.size)?;
        if digest != stored.digest {
            return Err(bad("cache file bytes disagree with their digest"));
        }
        Ok(body)
    }

    fn read_header(&self, file: &str) -> io::Result<Stored> {
        // Non-blocking, not following a symlink: a fifo named like an entry cannot stall start-up.
        let mut options = OpenOptions::new();
        options.read(true).custom_flags((OFlags::NONBLOCK | OFlags::NOFOLLOW).bits() as i32);
        let f = self.dir.open_with(file, &options)?;
        let meta = f.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
        }
        let on_disk = meta.len();
        let mut r = BufReader::new(f);
        let mut line = Vec::new();
        if !read_line(&mut r, &mut line, header_cap()).map_err(io::Error::other)? {
            return Err(bad("empty file"));
        }
        let text = std::str::from_utf8(&line).map_err(|_| bad("header is not UTF-8"))?;
        let (name, version, digest, admitted) = parse_header(text).ok_or_else(|| bad("malformed header"))?;
        if on_disk != overhead(&name) + version.size {
            return Err(bad("length disagrees with header"));
        }
        Ok(Stored { file: file.to_string(), name, version, digest, admitted })
    }
}

fn header_cap() -> usize {
    HEADER_FIXED as usize + 3 * MAX_NAME_LEN
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

fn header(name: &Name, v: &FileVersion, digest: Digest, admitted: SystemTime) -> String {
    let ms = admitted.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
    format!(
        "{MAGIC} {:020} {:+020} {:09} {:+020} {:09} {:020} {:020} {:06o} {ms:020} {digest} {}\n",
        v.size,
        v.mtime_sec,
        v.mtime_nsec,
        v.ctime_sec,
        v.ctime_nsec,
        v.ino,
        v.dev,
        v.mode,
        name.escaped()
    )
}

fn parse_header(line: &str) -> Option<(Name, FileVersion, Digest, SystemTime)> {
    let mut f = line.splitn(12, ' ');
    if f.next()? != MAGIC {
        return None;
    }
    let size = parse_u64(f.next()?)?;
    let mtime_sec: i64 = f.next()?.parse().ok()?;
    let mtime_nsec: i64 = f.next()?.parse().ok()?;
    let ctime_sec: i64 = f.next()?.parse().ok()?;
    let ctime_nsec: i64 = f.next()?.parse().ok()?;
    let ino = parse_u64(f.next()?)?;
    let dev = parse_u64(f.next()?)?;
    let mode = u32::from_str_radix(f.next()?, 8).ok().filter(|m| *m <= 0o7777)?;
    let admitted = UNIX_EPOCH + Duration::from_millis(parse_u64(f.next()?)?);
    let digest = Digest::parse(f.next()?)?;
    let name = Name::from_escaped(f.next()?).ok()?;
    Some((name, FileVersion { size, mtime_sec, mtime_nsec, ctime_sec, ctime_nsec, ino, dev, mode }, digest, admitted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version() -> FileVersion {
        FileVersion {
            size: 5,
            mtime_sec: -12,
            mtime_nsec: 999_999_999,
            ctime_sec: i64::MIN + 1,
            ctime_nsec: 1,
            ino: u64::MAX,
            dev: 7,
            mode: 0o4750,
        }
    }

    #[test]
    fn header_length_is_fixed_plus_name() {
        let name = Name::parse("dir/ü name.txt").unwrap();
        let h = header(&name, &version(), Digest(u128::MAX), SystemTime::now());
        assert_eq!(h.len() as u64, overhead(&name));
        let (n, v, d, _) = parse_header(h.trim_end_matches('\n')).unwrap();
        assert_eq!((n, v, d), (name, version(), Digest(u128::MAX)));
    }

    #[test]
    fn write_scan_load_and_cleanup() {
        let tmp = tempfile::tempdir().unwrap();
        let m = Mirror::open(tmp.path()).unwrap();
        let name = Name::parse("a b/c").unwrap();
        let file = m
            .write(&name, &version(), Digest::of(b"hello"), SystemTime::now(), &Bytes::Heap(b"hello".to_vec()))
            .unwrap();
        std::fs::write(tmp.path().join("x.ftc.tmp"), b"partial").unwrap();
        std::fs::write(tmp.path().join("broken.ftc"), b"ftcache1 0").unwrap();
        std::fs::write(tmp.path().join("keep-me.txt"), b"not ours").unwrap();

        let found = m.scan().unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].file.as_str(), &found[0].name), (file.as_str(), &name));
        assert_eq!(m.load(&found[0]).unwrap().to_vec().unwrap(), b"hello");
        let mut left: Vec<_> =
            std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, vec![file.clone(), "keep-me.txt".to_string()]);

        m.remove(&file);
        m.remove(&file);
        assert!(m.scan().unwrap().is_empty());
    }
}
