//! Replies: status lines (`OK ...` / `ERR <code> <message>`), the reason codes of refusals, and
//! `stats` lines, each writer beside its parser. The `get` header is in `header.rs`, listing
//! entries in `entry.rs`, the other typed answers in `answer.rs`.

use std::fmt;
use std::io::{self, BufRead, Write};

use super::line::{MAX_REPLY_LINE, ProtocolError, read_line};
use super::text::{escape, malformed, parse_u64};

/// The machine-readable reason in an `ERR` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    UnknownCommand,
    BadName,
    NotFound,
    NotFile,
    Denied,
    TooLong,
    Timeout,
    Busy,
    Internal,
    Changed,
    Unauthorized,
    /// `put`: the name is taken.
    Exists,
    /// `put`: larger than the server takes (`--max-upload`).
    TooBig,
    /// `put`: not enough free space beneath the root.
    NoSpace,
    /// `health`: the server is shutting down and takes no new clients.
    Draining,
}

impl ErrorCode {
    /// Every code, in the order README lists them.
    pub const ALL: [ErrorCode; 16] = [
        ErrorCode::BadRequest,
        ErrorCode::UnknownCommand,
        ErrorCode::BadName,
        ErrorCode::NotFound,
        ErrorCode::NotFile,
        ErrorCode::Denied,
        ErrorCode::TooLong,
        ErrorCode::Timeout,
        ErrorCode::Busy,
        ErrorCode::Internal,
        ErrorCode::Changed,
        ErrorCode::Unauthorized,
        ErrorCode::Exists,
        ErrorCode::TooBig,
        ErrorCode::NoSpace,
        ErrorCode::Draining,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad-request",
            ErrorCode::UnknownCommand => "unknown-command",
            ErrorCode::BadName => "bad-name",
            ErrorCode::NotFound => "not-found",
            ErrorCode::NotFile => "not-file",
            ErrorCode::Denied => "denied",
            ErrorCode::TooLong => "too-long",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Busy => "busy",
            ErrorCode::Internal => "internal",
            ErrorCode::Changed => "changed",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Exists => "exists",
            ErrorCode::TooBig => "too-big",
            ErrorCode::NoSpace => "no-space",
            ErrorCode::Draining => "draining",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A code that is not one of [`ErrorCode::ALL`] (from a newer server, or a confused one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown error code")]
pub struct UnknownCode;

impl std::str::FromStr for ErrorCode {
    type Err = UnknownCode;
    fn from_str(s: &str) -> Result<ErrorCode, UnknownCode> {
        ErrorCode::ALL.into_iter().find(|code| code.as_str() == s).ok_or(UnknownCode)
    }
}

/// An `ERR` reply as a client sees it. The code is kept as sent, so unknown codes survive for
/// the message; [`ErrorReply::kind`] is what code decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    /// The code as sent (escaped when shown).
    pub code: String,
    pub message: String,
}

impl ErrorReply {
    /// The code, if it is one this version knows.
    pub fn kind(&self) -> Option<ErrorCode> {
        self.code.parse().ok()
    }
}

impl fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", escape(&self.message), escape(&self.code))
    }
}

/// A reply's status line as a client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// `OK [fields]`: the fields after `OK ` (empty if none); what they mean depends on the request.
    Ok(String),
    /// `ERR <code> <message>`.
    Err(ErrorReply),
}

impl Status {
    pub fn into_result(self) -> Result<String, ErrorReply> {
        match self {
            Status::Ok(fields) => Ok(fields),
            Status::Err(reply) => Err(reply),
        }
    }
}

/// A reply read to its end, the stream still in step: the answer asked for (the `OK` line's
/// fields, parsed into what the request expects), or the server's refusal of this request alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply<T> {
    Answer(T),
    Refused(ErrorReply),
}

impl<T> Reply<T> {
    pub fn into_result(self) -> Result<T, ErrorReply> {
        match self {
            Reply::Answer(answer) => Ok(answer),
            Reply::Refused(reply) => Err(reply),
        }
    }
}

impl Status {
    /// The reply with its `OK` fields parsed by `parse`.
    pub fn parsed<T>(self, parse: impl FnOnce(&str) -> Result<T, ProtocolError>) -> Result<Reply<T>, ProtocolError> {
        match self {
            Status::Ok(fields) => parse(&fields).map(Reply::Answer),
            Status::Err(reply) => Ok(Reply::Refused(reply)),
        }
    }
}

/// Whether a line in a listing's place is its closing status line (`OK ...` or `ERR ...`) rather
/// than an entry (which starts with its size, a digit, or `type=`).
pub fn is_status_line(line: &[u8]) -> bool {
    line == b"OK" || line.starts_with(b"OK ") || line.starts_with(b"ERR ")
}

/// Reads one reply status line.
pub fn read_status(r: &mut impl BufRead, buf: &mut Vec<u8>) -> Result<Status, ProtocolError> {
    if !read_line(r, buf, MAX_REPLY_LINE)? {
        return Err(ProtocolError::Closed);
    }
    parse_status(buf)
}

/// Parses a status line: `OK [fields]` or `ERR <code> <message>`.
pub fn parse_status(line: &[u8]) -> Result<Status, ProtocolError> {
    let line = std::str::from_utf8(line).map_err(|_| malformed("status line is not UTF-8", line))?;
    if line == "OK" {
        return Ok(Status::Ok(String::new()));
    }
    if let Some(fields) = line.strip_prefix("OK ") {
        return Ok(Status::Ok(fields.to_string()));
    }
    if let Some(rest) = line.strip_prefix("ERR ") {
        let (code, message) = rest.split_once(' ').unwrap_or((rest, ""));
        return Ok(Status::Err(ErrorReply { code: code.to_string(), message: message.to_string() }));
    }
    Err(malformed("expected OK or ERR", line.as_bytes()))
}

/// Writes `ERR <code> <message>`; the message is flattened to one line. The line goes out in one
/// `write`, so on an unbuffered socket that is closed next (`busy`) it leaves as one segment.
pub fn write_err(w: &mut impl Write, code: ErrorCode, message: &dyn fmt::Display) -> io::Result<()> {
    let message = escape(&message.to_string());
    w.write_all(format!("ERR {code} {message}\n").as_bytes())
}

/// Writes `OK bye`, the reply to `quit`.
pub fn write_bye(w: &mut impl Write) -> io::Result<()> {
    writeln!(w, "OK bye")
}

/// Writes a bare `OK`: the start of a `list` reply that ends with its status (`list-end`).
pub fn write_ok(w: &mut impl Write) -> io::Result<()> {
    w.write_all(b"OK\n")
}

/// Writes `OK <n>`: the header of a `get` (n = size) or of a `list` or `stats` (n = lines).
pub fn write_ok_count(w: &mut impl Write, n: u64) -> io::Result<()> {
    writeln!(w, "OK {n}")
}

/// Parses the fields of an `OK <n> [key=value...]` line down to `n`, ignoring unknown fields.
pub fn parse_count(fields: &str) -> Result<u64, ProtocolError> {
    let first = fields.split(' ').next().unwrap_or("");
    parse_u64(first).ok_or_else(|| malformed("expected a decimal count", fields.as_bytes()))
}

/// Writes one line of a `stats` reply.
pub fn write_stat(w: &mut impl Write, key: &str, value: u64) -> io::Result<()> {
    writeln!(w, "{key} {value}")
}

/// Parses one line of a `stats` reply: a counter's name and value.
pub fn parse_stat(line: &[u8]) -> Result<(String, u64), ProtocolError> {
    let text = std::str::from_utf8(line).map_err(|_| malformed("stat line is not UTF-8", line))?;
    match text.split_once(' ') {
        Some((key, value)) if !key.is_empty() => match parse_u64(value) {
            Some(v) => Ok((key.to_string(), v)),
            None => Err(malformed("bad stat value", line)),
        },
        _ => Err(malformed("expected '<key> <value>'", line)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"OK 12").unwrap(), Status::Ok("12".to_string()));
        assert_eq!(parse_status(b"OK").unwrap(), Status::Ok(String::new()));
        let err = parse_status(b"ERR not-found no such file: x").unwrap().into_result().unwrap_err();
        assert_eq!((err.code.as_str(), err.message.as_str()), ("not-found", "no such file: x"));
        assert_eq!(err.kind(), Some(ErrorCode::NotFound));
        let future = parse_status(b"ERR quota-exceeded over quota").unwrap().into_result().unwrap_err();
        assert_eq!((future.kind(), future.code.as_str()), (None, "quota-exceeded"), "unknown codes survive");
        assert!(parse_status(b"HTTP/1.1 200 OK").is_err());
        assert!(parse_status(b"OKAY").is_err());
    }

    #[test]
    fn errors_are_one_line() {
        let mut out = Vec::new();
        write_err(&mut out, ErrorCode::NotFound, &"a\nb").unwrap();
        assert_eq!(out, b"ERR not-found a\\nb\n");
    }

    #[test]
    fn stat_lines() {
        assert_eq!(parse_stat(b"hits 3").unwrap(), ("hits".to_string(), 3));
        assert!(parse_stat(b"hits").is_err());
        assert!(parse_stat(b"hits -1").is_err());
    }

    #[test]
    fn counts_are_strict_decimal_and_ignore_extra_fields() {
        assert_eq!(parse_count("42").unwrap(), 42);
        assert_eq!(parse_count("42 xxh3=abc").unwrap(), 42);
        for bad in ["", "-1", "+1", " 1", "0x10", "1e3", "18446744073709551616"] {
            assert!(parse_count(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn error_codes_parse_from_their_text() {
        for code in ErrorCode::ALL {
            assert_eq!(code.as_str().parse(), Ok(code));
        }
        assert_eq!("Not-Found".parse::<ErrorCode>(), Err(UnknownCode));
        let mut out = Vec::new();
        write_bye(&mut out).unwrap();
        assert_eq!(parse_status(out.trim_ascii_end()).unwrap(), Status::Ok("bye".into()));
    }
}
