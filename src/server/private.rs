//! Files that hold secrets (the TLS identity, the auth file): read only if no one but their owner
//! may read or write them, as OpenSSH treats a private key; written in one step with mode 0600,
//! never wider, even for a moment.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a private file could not be read.
pub(crate) enum ReadError {
    Io(io::Error),
    /// Others may read or write it: its permission bits.
    TooOpen(u32),
}

/// Reads at most `limit` bytes of `path`, with its metadata; with `secret`, refuses it if anyone
/// but its owner may read or write it.
pub(crate) fn read_private(path: &Path, secret: bool, limit: u64) -> Result<(fs::Metadata, Vec<u8>), ReadError> {
    let file = fs::File::open(path).map_err(ReadError::Io)?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    let mode = meta.permissions().mode() & 0o7777;
    if secret && mode & 0o077 != 0 {
        return Err(ReadError::TooOpen(mode));
    }
    let mut bytes = Vec::new();
    file.take(limit).read_to_end(&mut bytes).map_err(ReadError::Io)?;
    Ok((meta, bytes))
}

/// Writes `bytes` to `path` with mode 0600, in one step: a temporary file beside it (created
/// with that mode, never wider), synced, then moved to the name: linked, so an existing file is
/// never replaced (`replace` false: an identity another server wrote meanwhile stays), or renamed
/// over it. Creates the folder (0700) if missing.
pub(crate) fn write_private(path: &Path, bytes: &[u8], replace: bool) -> io::Result<()> {
    if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(folder)?;
    }
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
