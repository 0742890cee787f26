//! Files that hold secrets (the TLS identity, the auth file) or say whom to trust (the client's
//! known hosts): read only if no one but their owner may read or write them, as OpenSSH treats a
//! private key; written in one step, or appended to, with mode 0600, never wider, even for a
//! moment, in a folder made 0700.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a private file could not be read.
pub(crate) enum ReadError {
    Io(io::Error),
    /// Others may read or write it: its permission bits.
    TooOpen(u32),
    /// Someone else could replace it: what says so (its owner, or a folder or symlink on its way).
    Unsafe(String),
}

/// Reads at most `limit` bytes of `path`, with its metadata; with `secret`, refuses it if anyone
/// but its owner may read or write it, or if anyone but this process's user or root could
/// replace it ([`check_strict`]).
pub(crate) fn read_private(path: &Path, secret: bool, limit: u64) -> Result<(fs::Metadata, Vec<u8>), ReadError> {
    let file = fs::File::open(path).map_err(ReadError::Io)?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    let mode = meta.permissions().mode() & 0o7777;
    if secret && mode & 0o077 != 0 {
        return Err(ReadError::TooOpen(mode));
    }
    if secret {
        check_strict(path, &meta).map_err(ReadError::Unsafe)?;
    }
    let mut bytes = Vec::new();
    file.take(limit).read_to_end(&mut bytes).map_err(ReadError::Io)?;
    Ok((meta, bytes))
}

/// What OpenSSH's `StrictModes` asks of a key before trusting it, asked of a file that grants
/// access (the auth file) or proves the server (its identity): that no one but this process's
/// user or root could have put it there or could replace it. The file read (`opened`) must be
/// owned by one of them and be the file the path resolves to; every folder above it, and every
/// symlink and folder on the way to it as written, must be owned by one of them and writable by
/// no one else (a folder with the sticky bit, such as /tmp, lets no one else replace what they do
/// not own, and is allowed). `Err` says which fails.
pub(crate) fn check_strict(path: &Path, opened: &fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let me = rustix::process::geteuid().as_raw();
    let trusted = |uid: u32| uid == me || uid == 0;
    let owner = |uid: u32| if uid == 0 { "root".to_string() } else { format!("uid {uid}") };
    if !trusted(opened.uid()) {
        return Err(format!("it is owned by {}, not by the server's user (uid {me}) or root", owner(opened.uid())));
    }
    let folder_ok = |p: &Path, m: &fs::Metadata| -> Result<(), String> {
        if !trusted(m.uid()) {
            return Err(format!("the folder {} is owned by {}, who could replace it", p.display(), owner(m.uid())));
        }
        let sticky = m.mode() & 0o1000 != 0;
        if m.mode() & 0o022 != 0 && !sticky {
            let mode = m.mode() & 0o7777;
            return Err(format!(
                "the folder {} may be written by others (mode {mode:04o}), who could replace it",
                p.display()
            ));
        }
        Ok(())
    };
    // The way as written: each symlink on it owned by one of them, each folder safe.
    let absolute = std::path::absolute(path).map_err(|e| format!("cannot resolve it: {e}"))?;
    let mut prefix = PathBuf::new();
    for part in absolute.components() {
        prefix.push(part);
        let Ok(m) = fs::symlink_metadata(&prefix) else { break };
        if m.file_type().is_symlink() && !trusted(m.uid()) {
            return Err(format!(
                "the symlink {} is owned by {}, who could point it elsewhere",
                prefix.display(),
                owner(m.uid())
            ));
        }
        if m.is_dir() && prefix != absolute {
            folder_ok(&prefix, &m)?;
        }
    }
    // Where it really is: the same file, in folders no one else can change.
    let real = fs::canonicalize(path).map_err(|e| format!("cannot resolve it: {e}"))?;
    let there = fs::metadata(&real).map_err(|e| format!("cannot look it up: {e}"))?;
    if (there.dev(), there.ino()) != (opened.dev(), opened.ino()) {
        return Err("it was replaced while it was read".into());
    }
    for folder in real.ancestors().skip(1) {
        let m = fs::metadata(folder).map_err(|e| format!("cannot look up {}: {e}", folder.display()))?;
        folder_ok(folder, &m)?;
    }
    Ok(())
}

/// Writes `bytes` to `path` with mode 0600, in one step: a temporary file beside it (created
/// with that mode, never wider), synced, then moved to the name: linked, so an existing file is
/// never replaced (`replace` false: an identity another server wrote meanwhile stays), or renamed
/// over it. Creates the folder (0700) if missing.
pub(crate) fn write_private(path: &Path, bytes: &[u8], replace: bool) -> io::Result<()> {
    make_folder(path)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let written = (|| {
        let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        if replace { fs::rename(&tmp, path) } else { fs::hard_link(&tmp, path) }
    })();
    let _ = fs::remove_file(&tmp);
    written
}

/// Appends `bytes` to `path`, creating it with mode 0600 (and its folder, 0700) if missing.
pub(crate) fn append_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    make_folder(path)?;
    fs::OpenOptions::new().append(true).create(true).mode(0o600).open(path)?.write_all(bytes)
}

/// Makes the folder `path` goes in (0700), if it is missing.
fn make_folder(path: &Path) -> io::Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(folder) => fs::DirBuilder::new().recursive(true).mode(0o700).create(folder),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> Result<(), String> {
        match read_private(path, true, 1 << 10) {
            Ok(_) => Ok(()),
            Err(ReadError::Unsafe(why)) => Err(why),
            Err(ReadError::TooOpen(mode)) => Err(format!("too open {mode:o}")),
            Err(ReadError::Io(e)) => Err(e.to_string()),
        }
    }

    #[test]
    fn a_secret_is_refused_where_someone_else_could_replace_it() {
        let dir = tempfile::tempdir().unwrap();
        let safe = dir.path().join("safe");
        let open = dir.path().join("open");
        fs::create_dir(&safe).unwrap();
        fs::create_dir(&open).unwrap();
        write_private(&safe.join("f"), b"x", true).unwrap();
        write_private(&open.join("f"), b"x", true).unwrap();
        assert_eq!(read(&safe.join("f")), Ok(()));
        // A folder anyone may write: refused, naming it.
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let why = read(&open.join("f")).unwrap_err();
        assert!(why.contains(&format!("the folder {} may be written by others (mode 0777)", open.display())), "{why}");
        // ... also reached through a symlink in a safe folder.
        std::os::unix::fs::symlink(open.join("f"), safe.join("link")).unwrap();
        let why = read(&safe.join("link")).unwrap_err();
        assert!(why.contains(&open.display().to_string()), "{why}");
        // A sticky one (as /tmp) lets no one else replace what is ours: allowed.
        fs::set_permissions(&open, fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(read(&open.join("f")), Ok(()));
        // Group-writable above it, a few levels up: refused too.
        fs::set_permissions(&open, fs::Permissions::from_mode(0o700)).unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o770)).unwrap();
        assert!(read(&open.join("f")).unwrap_err().contains("mode 0770"));
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        // Owned by someone else (only root can make such a file to test with).
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(safe.join("f"), Some(65534), None).unwrap();
            let why = read(&safe.join("f")).unwrap_err();
            assert!(why.contains("owned by uid 65534"), "{why}");
            std::os::unix::fs::chown(&open, Some(65534), None).unwrap();
            assert!(read(&open.join("f")).unwrap_err().contains("is owned by uid 65534, who could replace it"));
        } else {
            eprintln!("not checked: a file owned by someone else needs root to make");
        }
    }
}
