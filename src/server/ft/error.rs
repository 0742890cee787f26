//! Why an ft connection ended early, and which of those are the peer's doing.

use std::io;
use std::time::Duration;

use crate::name::Name;
use crate::wire::ProtocolError;

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    #[error("{}", shown_io(.0))]
    Io(#[from] io::Error),
    #[error("request line longer than {0} bytes")]
    LineTooLong(usize),
    #[error("request line not complete within {0:?}")]
    RequestTimeout(Duration),
    #[error("connection closed in the middle of a request")]
    Truncated,
    #[error("{name} shrank while being sent: {sent} of {len} bytes")]
    Shrank { name: Name, sent: u64, len: u64 },
    #[error("the folder changed while it was listed: {sent} of {announced} entries found")]
    ListChanged { announced: u64, sent: u64 },
    #[error("TLS handshake failed: {}", shown_io(.0))]
    Handshake(io::Error),
    #[error("plain text refused from a peer that is not on this machine")]
    PlainRefused,
    #[error("cut off after too many failed auth attempts")]
    CutOff,
}

/// An I/O error as a log line says it: a peer gone part-way over TLS (rustls's words carry a link
/// to its manual) said plainly.
fn shown_io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => "the peer left without ending TLS (no close_notify)".to_string(),
        _ => e.to_string(),
    }
}

impl ConnError {
    /// Errors that are the peer's doing (gone, idle, stalled) rather than the server's.
    pub(crate) fn is_peer(&self) -> bool {
        use io::ErrorKind::*;
        match self {
            ConnError::Io(e) => {
                matches!(
                    e.kind(),
                    BrokenPipe | ConnectionReset | ConnectionAborted | UnexpectedEof | WouldBlock | TimedOut
                )
            }
            ConnError::LineTooLong(_)
            | ConnError::RequestTimeout(_)
            | ConnError::Truncated
            | ConnError::Handshake(_)
            | ConnError::PlainRefused
            | ConnError::CutOff => true,
            ConnError::Shrank { .. } | ConnError::ListChanged { .. } => false,
        }
    }
}

impl From<ProtocolError> for ConnError {
    fn from(e: ProtocolError) -> ConnError {
        match e {
            ProtocolError::LineTooLong(n) => ConnError::LineTooLong(n),
            ProtocolError::Io(e) => ConnError::Io(e),
            _ => ConnError::Truncated,
        }
    }
}
