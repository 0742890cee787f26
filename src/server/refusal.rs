//! Why a request is answered with a refusal instead of what it asked for: a reason code and a
//! message for the peer. Every verb of the core refuses with one; each speaker says it its own way
//! (an `ERR` line for ft).

use crate::wire::ErrorCode;

/// A request the core will not answer as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

impl Refusal {
    pub(crate) fn new(code: ErrorCode, message: impl std::fmt::Display) -> Refusal {
        Refusal { code, message: message.to_string() }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}
