//! What client operations give back: [`ClientError`], why one failed (the binary turns its variants
//! into exit codes), and [`Downloaded`], what a download did.

use std::io;
use std::path::PathBuf;

use crate::digest::Digest;
use crate::fingerprint::Fingerprint;
use crate::wire::{ErrorReply, ProtocolError};

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("network error: {0}")]
    Network(io::Error),
    #[error("timed out: the server sent nothing for the whole timeout (--timeout)")]
    Timeout,
    #[error(transparent)]
    Protocol(ProtocolError),
    #[error("{0}")]
    Server(ErrorReply),
    #[error("connection lost after {received} of {expected} bytes")]
    ShortBody { expected: u64, received: u64 },
    #[error("integrity check failed: the server announced xxh3 {expected}, the bytes received hash to {actual}")]
    Integrity { expected: Digest, actual: Digest },
    #[error("cannot write {}: {source}", path.display())]
    Local { path: PathBuf, source: io::Error },
    /// A local file to upload could not be read (nothing of it was sent).
    #[error("cannot read {}: {source}", path.display())]
    Unreadable { path: PathBuf, source: io::Error },
    #[error("the connection is out of step after an earlier error")]
    Broken,
    #[error("{} already exists; kept (no-clobber)", path.display())]
    Kept { path: PathBuf },
    #[error("TLS with {addr} failed: {source}")]
    Tls { addr: String, source: io::Error },
    #[error(
        "the key of {} has changed: it is now {}, where {} (line {}) expects {}; someone may be \
         intercepting this connection, or the server's key was replaced; if that is expected, \
         delete line {} of {}",
        .0.host, .0.actual, .0.known_hosts.display(), .0.line, .0.expected, .0.line, .0.known_hosts.display()
    )]
    HostKeyChanged(Box<KeyMismatch>),
    #[error("the key of {} is {}, not {} as --fingerprint says; refused", .0.host, .0.actual, .0.expected)]
    NotPinned(Box<KeyMismatch>),
    #[error(
        "{host} is not a known server: its key fingerprint is {fingerprint}; check it against \
         `ftserver fingerprint` on the server, then connect again with --accept-new (to add it to {}) \
         or with --fingerprint {fingerprint}",
        known_hosts.display()
    )]
    UnknownHost { host: String, fingerprint: Box<Fingerprint>, known_hosts: PathBuf },
    #[error("not sending the token to {addr} in plain text: it is not on this machine (drop --plaintext)")]
    TokenInPlainText { addr: String },
    /// The request cannot be said to this server (a name or a verb its protocol version lacks).
    #[error("{0}")]
    Unsayable(crate::wire::Unsayable),
}

/// A server whose key is not the one expected.
#[derive(Debug)]
pub struct KeyMismatch {
    /// `host:port` as the client named it.
    pub host: String,
    pub expected: Fingerprint,
    pub actual: Fingerprint,
    /// Where the expected key was found (the known-hosts file and line), if there.
    pub known_hosts: PathBuf,
    pub line: usize,
}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> ClientError {
        // A socket timeout surfaces as EAGAIN ("resource temporarily unavailable"): say what it is.
        // A TLS stream cut without its close_notify is a connection closed, said so plainly
        // (rustls's own words carry a link to its manual).
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::Timeout,
            io::ErrorKind::UnexpectedEof => ClientError::Protocol(ProtocolError::Closed),
            _ => ClientError::Network(e),
        }
    }
}

impl From<ProtocolError> for ClientError {
    fn from(e: ProtocolError) -> ClientError {
        match e {
            ProtocolError::Io(e) => e.into(),
            other => ClientError::Protocol(other),
        }
    }
}

/// What an upload stored: its size and digest, as the server confirmed them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uploaded {
    pub size: u64,
    pub digest: crate::digest::Digest,
    /// Bytes the server already held from an interrupted upload, proved and not sent again.
    pub resumed_from: u64,
    /// Bytes the server took from its older copy (a delta upload), not sent.
    pub reused: u64,
    /// Bytes compression spared the wire.
    pub compression_saved: u64,
}

impl Uploaded {
    /// Bytes of the file's content that crossed the wire.
    pub fn moved(&self) -> u64 {
        self.size - self.resumed_from - self.reused - self.compression_saved
    }
}

/// What a download did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Downloaded {
    /// The file's size.
    pub size: u64,
    /// Bytes kept from an earlier `.part` (0 for a fresh download).
    pub resumed_from: u64,
    /// A `.part` was found but did not match the server's file, so it was discarded.
    pub started_over: bool,
    pub digest: Digest,
    /// Bytes taken from the local older copy by a delta download instead of sent.
    pub reused: u64,
    /// Bytes compression spared the wire (the file's bytes less the compressed ones sent).
    pub compression_saved: u64,
}

impl Downloaded {
    /// The file's bytes that crossed the wire.
    pub fn moved(&self) -> u64 {
        self.size - self.resumed_from - self.reused - self.compression_saved
    }
}
