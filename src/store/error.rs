//! Why the store could not serve a name, or store an upload.

use std::io;

use rustix::io::Errno;

use crate::digest::Digest;

use super::staging::STAGING;

/// Why a name could not be served.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("no such file")]
    NotFound,
    #[error("not a regular file")]
    NotFile,
    #[error("access denied")]
    Denied,
    #[error("i/o error: {0}")]
    Io(io::Error),
}

impl From<io::Error> for OpenError {
    fn from(e: io::Error) -> OpenError {
        match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => OpenError::NotFound,
            // cap-std reports an escape from the root as PermissionDenied; ELOOP is a symlink loop.
            io::ErrorKind::PermissionDenied => OpenError::Denied,
            _ if e.raw_os_error() == Some(Errno::LOOP.raw_os_error()) => OpenError::Denied,
            _ => OpenError::Io(e),
        }
    }
}

/// Why an upload was not stored. Nothing was left beneath the root in any case (but an
/// interrupted upload's bytes, in [`STAGING`], for resuming).
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error("already exists")]
    Exists,
    #[error("{0} is not a folder (or is a symlink)")]
    NotFolder(String),
    #[error("{STAGING} is where uploads are staged, not a place to put files")]
    Reserved,
    #[error("the body ended after {received} of {expected} bytes")]
    Short { expected: u64, received: u64 },
    #[error("the bytes received have digest {got}, not the {expected} announced")]
    Mismatch { expected: Digest, got: Digest },
    #[error("the sender gave up on the file (it changed or shrank while it was read)")]
    Aborted,
    /// The line after the bytes is not a digest: the connection is out of step.
    #[error("the line after the bytes is not xxh3=<digest> or abort")]
    BadTrailer,
    #[error("the partial upload to continue from byte {0} is not held here (ask with `partial` first)")]
    NoPartial(u64),
    #[error("this file system cannot hold unnamed files (O_TMPFILE), which uploads need")]
    Unsupported,
    /// No room for another interrupted upload.
    #[error("{0}")]
    StagingFull(#[from] super::held::Full),
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
