//! Numbers and peer text on the wire: strict decimal parsing, and escaping whatever a peer sent
//! before it reaches a log or a terminal.

use super::line::ProtocolError;

/// A strict decimal `u64`: ASCII digits only (no sign, no spaces), no overflow.
pub fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

pub(super) fn parse_i64(s: &str) -> Option<i64> {
    match s.strip_prefix('-') {
        Some(digits) => parse_u64(digits).and_then(|v| 0i64.checked_sub_unsigned(v)),
        None => parse_u64(s).and_then(|v| i64::try_from(v).ok()),
    }
}

/// Nanoseconds within a second (`mtime_ns=`): strict decimal, below 1,000,000,000.
pub(super) fn parse_nanos(s: &str) -> Option<u32> {
    parse_u64(s).and_then(|n| u32::try_from(n).ok()).filter(|n| *n < 1_000_000_000)
}

/// Permission bits (`mode=`): octal, at most `0o7777`, no sign.
pub(super) fn parse_mode(s: &str) -> Option<u32> {
    u32::from_str_radix(s, 8).ok().filter(|m| *m <= 0o7777 && !s.starts_with('+'))
}

pub use crate::escape::escape;

pub(super) fn malformed(what: &str, line: &[u8]) -> ProtocolError {
    let shown: String = String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned();
    ProtocolError::Malformed(format!("{what}: {:?}", escape(&shown)))
}
