//! How ftclient ends: its exit codes (as `--help` and README list them), the code for each
//! failure, and what is said above one.

use std::io;

use ft::client::ClientError;
use ft::wire::ErrorCode;

pub(crate) const FAILED: u8 = 1;
pub(crate) const USAGE: u8 = 2;
pub(crate) const NOT_FOUND: u8 = 3;
pub(crate) const CONNECTION: u8 = 4;
pub(crate) const INTEGRITY: u8 = 5;
pub(crate) const LOCAL_IO: u8 = 6;
pub(crate) const KEY_MISMATCH: u8 = 7;
pub(crate) const UNAUTHORIZED: u8 = 8;
pub(crate) const UNKNOWN_HOST: u8 = 9;
/// Some entries were not transferred (devices, what the server could not read): as rsync's 23.
pub(crate) const PARTIAL: u8 = 23;

/// A mistake in how ftclient was called, found after clap's own checks.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Usage(pub(crate) String);

/// The exit code for a failure.
pub(crate) fn code_of(e: &ClientError) -> u8 {
    match e {
        ClientError::Server(reply) if matches!(reply.kind(), Some(ErrorCode::NotFound | ErrorCode::NotFile)) => {
            NOT_FOUND
        }
        // Changed while it was sent: what arrived could not be verified.
        ClientError::Server(reply) if reply.kind() == Some(ErrorCode::Changed) => INTEGRITY,
        ClientError::Server(reply) if reply.kind() == Some(ErrorCode::Unauthorized) => UNAUTHORIZED,
        ClientError::Server(_) => FAILED,
        ClientError::Integrity { .. } => INTEGRITY,
        ClientError::Local { .. } | ClientError::Unreadable { .. } => LOCAL_IO,
        ClientError::Connect { .. }
        | ClientError::Network(_)
        | ClientError::Timeout
        | ClientError::ShortBody { .. }
        | ClientError::Protocol(_)
        | ClientError::Tls { .. }
        | ClientError::Broken => CONNECTION,
        ClientError::HostKeyChanged(_) | ClientError::NotPinned(_) => KEY_MISMATCH,
        ClientError::TokenInPlainText { .. } => USAGE,
        ClientError::Unsayable(_) => FAILED,
        ClientError::UnknownHost { .. } => UNKNOWN_HOST,
        ClientError::Kept { .. } => 0,
    }
}

/// The exit code for an error that ended the command: from the first cause that tells.
pub(crate) fn code_of_error(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(client) = cause.downcast_ref::<ClientError>() {
            return code_of(client);
        }
        if cause.is::<Usage>() || cause.is::<ft::name::NameError>() {
            return USAGE;
        }
        if cause.is::<io::Error>() {
            return LOCAL_IO;
        }
    }
    FAILED
}

/// Printed above the error when a server's key is not the one on record, as OpenSSH does.
pub(crate) const KEY_CHANGED: &str = "\
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!
Someone could be eavesdropping on you right now (man-in-the-middle attack)!
It is also possible that the server's key has just been changed.
";

/// Whether the command ended because stdout was closed (`ftclient list | head`): not a failure.
pub(crate) fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        let io = match cause.downcast_ref::<ClientError>() {
            Some(ClientError::Local { source, .. }) => Some(source),
            _ => cause.downcast_ref::<io::Error>(),
        };
        io.is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}
