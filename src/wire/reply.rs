//! Replies: status lines (`OK ...` / `ERR <code> <message>`) and their payload lines, each writer
//! beside its parser.

use std::fmt;
use std::io::{self, BufRead, Write};

use crate::digest::Digest;
use crate::name::Name;

use super::hello::Form;
use super::line::{MAX_REPLY_LINE, ProtocolError, read_line};
use super::text::{escape, malformed, parse_i64, parse_u64};

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

/// Writes `OK <fields>`.
pub fn write_ok_fields(w: &mut impl Write, fields: &str) -> io::Result<()> {
    writeln!(w, "OK {fields}")
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

/// The status line of a `get` or `resume` reply: `<len>` body bytes follow, which are the
/// file's bytes from `offset` on; the whole file is `size` bytes with digest `digest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetHeader {
    pub len: u64,
    pub offset: u64,
    pub size: u64,
    /// The whole file's digest; `None` when it follows the body in a trailer (see
    /// [`write_trailer`]), which only a client that agreed to the `trailer` feature is sent.
    pub digest: Option<Digest>,
    /// The file's permission bits on the server (`mode=` in octal), so the client never saves
    /// it more permissive; `None` from a server that does not send them.
    pub mode: Option<u32>,
    /// The file's modification time (seconds, nanoseconds), which the client gives its copy;
    /// `None` from a server that does not send it.
    pub mtime: Option<(i64, u32)>,
}

impl GetHeader {
    /// The header for the whole file.
    pub fn whole(size: u64, digest: Digest) -> GetHeader {
        GetHeader { len: size, offset: 0, size, digest: Some(digest), mode: None, mtime: None }
    }

    /// Writes `OK <len> [offset=<o> size=<size>] [xxh3=<digest>] [mode=<octal>]`; offset and size
    /// only for a partial body, so a plain `get` reads `OK <size> xxh3=... mode=...`; no digest
    /// when a trailer will carry it.
    pub fn write(&self, w: &mut impl Write) -> io::Result<()> {
        write!(w, "OK {}", self.len)?;
        if self.offset != 0 {
            write!(w, " offset={} size={}", self.offset, self.size)?;
        }
        if let Some(digest) = self.digest {
            write!(w, " xxh3={digest}")?;
        }
        if let Some(mode) = self.mode {
            write!(w, " mode={mode:o}")?;
        }
        if let Some((secs, nanos)) = self.mtime {
            write!(w, " mtime={secs} mtime_ns={nanos}")?;
        }
        writeln!(w)
    }

    /// Parses the fields after `OK `. Unknown `key=value` fields are ignored; known ones must be
    /// well-formed, and `offset + len` must equal `size`. A missing digest means a trailer follows
    /// the body: the caller decides whether it agreed to that.
    pub fn parse(fields: &str) -> Result<GetHeader, ProtocolError> {
        let bad = |what: &str| malformed(what, fields.as_bytes());
        let mut parts = fields.split(' ');
        let len = parts.next().and_then(parse_u64).ok_or_else(|| bad("expected a decimal size"))?;
        let (mut offset, mut size, mut digest, mut mode, mut mtime, mut mtime_ns) = (0, None, None, None, None, 0);
        for field in parts {
            match field.split_once('=') {
                Some(("offset", v)) => offset = parse_u64(v).ok_or_else(|| bad("bad offset"))?,
                Some(("size", v)) => size = Some(parse_u64(v).ok_or_else(|| bad("bad size"))?),
                Some(("xxh3", v)) => digest = Some(Digest::parse(v).ok_or_else(|| bad("bad xxh3 digest"))?),
                Some(("mode", v)) => {
                    let parsed = u32::from_str_radix(v, 8).ok().filter(|m| *m <= 0o7777 && !v.starts_with('+'));
                    mode = Some(parsed.ok_or_else(|| bad("bad mode"))?);
                }
                Some(("mtime", v)) => mtime = Some(parse_i64(v).ok_or_else(|| bad("bad mtime"))?),
                Some(("mtime_ns", v)) => {
                    mtime_ns = parse_u64(v)
                        .and_then(|n| u32::try_from(n).ok())
                        .filter(|n| *n < 1_000_000_000)
                        .ok_or_else(|| bad("bad mtime_ns"))?;
                }
                _ => {}
            }
        }
        let mtime = mtime.map(|secs| (secs, mtime_ns));
        let size = size.unwrap_or(len);
        if offset.checked_add(len) != Some(size) {
            return Err(bad("offset + length disagrees with size"));
        }
        Ok(GetHeader { len, offset, size, digest, mode, mtime })
    }
}

/// Writes the trailer that follows a body whose header had no digest: `OK xxh3=<digest>`, the
/// whole file's digest, sent only if the server read the same bytes twice and the file's version
/// did not change meanwhile (else it sends `ERR changed` instead, and the body must be thrown
/// away).
pub fn write_trailer(w: &mut impl Write, digest: Digest) -> io::Result<()> {
    writeln!(w, "OK xxh3={digest}")
}

/// Parses the fields of a trailer's `OK` line down to its digest (unknown fields are ignored).
pub fn parse_trailer(fields: &str) -> Result<Digest, ProtocolError> {
    let digest = fields.split(' ').find_map(|f| f.strip_prefix("xxh3="));
    digest.and_then(Digest::parse).ok_or_else(|| malformed("expected a trailer 'OK xxh3=<digest>'", fields.as_bytes()))
}

/// One line of a `list` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    pub size: u64,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    pub name: Name,
}

impl ListEntry {
    /// Writes `<size> <mtime> <name>`, the name in `form` (an `InvalidInput` error for a name
    /// version 1 cannot carry: a listing leaves such names out).
    pub fn write(&self, w: &mut impl Write, form: Form) -> io::Result<()> {
        let name = form.write(&self.name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        writeln!(w, "{} {} {name}", self.size, self.mtime)
    }

    /// Parses `<size> <mtime> <name>`; the name is the rest of the line and must be a valid name.
    pub fn parse(line: &[u8], form: Form) -> Result<ListEntry, ProtocolError> {
        let text = std::str::from_utf8(line).map_err(|_| malformed("list entry is not UTF-8", line))?;
        let mut parts = text.splitn(3, ' ');
        let (size, mtime, name) = match (parts.next(), parts.next(), parts.next()) {
            (Some(s), Some(m), Some(n)) => (s, m, n),
            _ => return Err(malformed("expected '<size> <mtime> <name>'", line)),
        };
        let size = parse_u64(size).ok_or_else(|| malformed("bad size in list entry", line))?;
        let mtime = parse_i64(mtime).ok_or_else(|| malformed("bad mtime in list entry", line))?;
        let name = form.read(name).map_err(|e| malformed(&format!("bad name in list entry: {e}"), line))?;
        Ok(ListEntry { size, mtime, name })
    }
}

/// Longest symlink target an entry carries, in bytes (Linux's `PATH_MAX` less its NUL).
pub const MAX_TARGET_LEN: usize = 4095;

/// What a listed entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Folder,
    /// A symlink, not followed: the text it holds (any bytes but NUL).
    Symlink(Vec<u8>),
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
    /// An entry (or a whole folder) the server could not read: the listing beneath it is
    /// incomplete, and a client must not take its absence as gone.
    Unreadable {
        code: ErrorCode,
        message: String,
    },
}

impl EntryKind {
    fn letter(&self) -> &'static str {
        match self {
            EntryKind::File => "f",
            EntryKind::Folder => "d",
            EntryKind::Symlink(_) => "l",
            EntryKind::Fifo => "p",
            EntryKind::Socket => "s",
            EntryKind::CharDevice => "c",
            EntryKind::BlockDevice => "b",
            EntryKind::Unreadable { .. } => "e",
        }
    }

    /// What it is, for people: "a fifo", "a symlink", ...
    pub fn describe(&self) -> &'static str {
        match self {
            EntryKind::File => "a file",
            EntryKind::Folder => "a folder",
            EntryKind::Symlink(_) => "a symlink",
            EntryKind::Fifo => "a fifo",
            EntryKind::Socket => "a socket",
            EntryKind::CharDevice => "a character device",
            EntryKind::BlockDevice => "a block device",
            EntryKind::Unreadable { .. } => "unreadable",
        }
    }
}

/// One line of a `list` reply with the `list-meta` feature, or of a `walk` reply (version 2): an
/// entry with its kind, mode and exact modification time. On the wire, `key=value` fields, a TAB,
/// then the name (in the connection's [`Form`]; neither form holds a TAB):
///
/// ```text
/// type=f size=<bytes> mtime=<unix seconds> mtime_ns=<0..999999999> mode=<octal>\t<name>
/// type=d mtime=<unix seconds> mtime_ns=<ns> mode=<octal>\t<name>
/// type=l mtime=.. mtime_ns=.. mode=.. target=<token>\t<name>     (walk only: a symlink, not followed)
/// type=p|s|c|b mtime=.. mtime_ns=.. mode=..\t<name>              (walk only: fifo, socket, devices)
/// type=e code=<error code> msg=<token>\t<name>                  (walk only: could not be read)
/// ```
///
/// A `<token>` is written as version 2 writes names (percent-escaped: no space, no control byte).
/// Unknown fields are ignored, so later versions can add some.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaEntry {
    pub kind: EntryKind,
    /// 0 but for a file.
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    pub name: Name,
}

impl MetaEntry {
    pub fn is_folder(&self) -> bool {
        self.kind == EntryKind::Folder
    }

    pub fn is_file(&self) -> bool {
        self.kind == EntryKind::File
    }

    /// The modification time: seconds and nanoseconds.
    pub fn mtime(&self) -> (i64, u32) {
        (self.mtime, self.mtime_nsec)
    }

    /// Writes the answer to `stat`: `OK ` and the entry, its name escaped.
    pub fn write_reply(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(b"OK ")?;
        self.write(w, Form::Escaped)
    }

    /// Writes the entry, its name in `form` (an `InvalidInput` error for a name version 1 cannot
    /// carry).
    pub fn write(&self, w: &mut impl Write, form: Form) -> io::Result<()> {
        let name = form.write(&self.name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        write!(w, "type={}", self.kind.letter())?;
        match &self.kind {
            EntryKind::Unreadable { code, message } => {
                return writeln!(w, " code={code} msg={}\t{name}", crate::escape::token(message.as_bytes()));
            }
            EntryKind::File => write!(w, " size={}", self.size)?,
            _ => {}
        }
        write!(w, " mtime={} mtime_ns={} mode={:o}", self.mtime, self.mtime_nsec, self.mode)?;
        if let EntryKind::Symlink(target) = &self.kind {
            write!(w, " target={}", crate::escape::token(target))?;
        }
        writeln!(w, "\t{name}")
    }

    pub fn parse(line: &[u8], form: Form) -> Result<MetaEntry, ProtocolError> {
        let bad = |what: &str| malformed(what, line);
        let text = std::str::from_utf8(line).map_err(|_| bad("list entry is not UTF-8"))?;
        let (fields, name) = text.split_once('\t').ok_or_else(|| bad("expected fields, a TAB, then the name"))?;
        let name = form.read(name).map_err(|e| bad(&format!("bad name in list entry: {e}")))?;
        let (mut letter, mut size, mut mtime, mut mtime_nsec, mut mode) = (None, None, None, 0, None);
        let (mut target, mut code, mut message) = (None, None, None);
        for field in fields.split(' ') {
            match field.split_once('=') {
                Some(("type", v)) => letter = Some(v),
                Some(("size", v)) => size = Some(parse_u64(v).ok_or_else(|| bad("bad size in list entry"))?),
                Some(("mtime", v)) => mtime = Some(parse_i64(v).ok_or_else(|| bad("bad mtime in list entry"))?),
                Some(("mtime_ns", v)) => {
                    mtime_nsec = parse_u64(v)
                        .and_then(|n| u32::try_from(n).ok())
                        .filter(|n| *n < 1_000_000_000)
                        .ok_or_else(|| bad("bad mtime_ns in list entry"))?;
                }
                Some(("mode", v)) => {
                    let parsed = u32::from_str_radix(v, 8).ok().filter(|m| *m <= 0o7777 && !v.starts_with('+'));
                    mode = Some(parsed.ok_or_else(|| bad("bad mode in list entry"))?);
                }
                Some(("target", v)) => {
                    let t = crate::escape::untoken(v).map_err(|e| bad(&format!("bad symlink target: {e}")))?;
                    if t.is_empty() || t.len() > MAX_TARGET_LEN || t.contains(&0) {
                        return Err(bad("bad symlink target"));
                    }
                    target = Some(t);
                }
                Some(("code", v)) => code = Some(v.to_string()),
                Some(("msg", v)) => {
                    let m = crate::escape::untoken(v).map_err(|e| bad(&format!("bad message: {e}")))?;
                    message = Some(String::from_utf8_lossy(&m).into_owned());
                }
                _ => {}
            }
        }
        let kind = match letter.ok_or_else(|| bad("no type in list entry"))? {
            "f" => EntryKind::File,
            "d" => EntryKind::Folder,
            "l" => EntryKind::Symlink(target.ok_or_else(|| bad("a symlink entry without its target"))?),
            "p" => EntryKind::Fifo,
            "s" => EntryKind::Socket,
            "c" => EntryKind::CharDevice,
            "b" => EntryKind::BlockDevice,
            "e" => {
                let code = code.ok_or_else(|| bad("an unreadable entry without its code"))?;
                let code = code.parse().unwrap_or(ErrorCode::Internal);
                let message = message.unwrap_or_default();
                return Ok(MetaEntry {
                    kind: EntryKind::Unreadable { code, message },
                    size: 0,
                    mtime: 0,
                    mtime_nsec: 0,
                    mode: 0,
                    name,
                });
            }
            _ => return Err(bad("bad type in list entry")),
        };
        let size = if kind == EntryKind::File { size.ok_or_else(|| bad("no size in list entry"))? } else { 0 };
        let mtime = mtime.ok_or_else(|| bad("no mtime in list entry"))?;
        let mode = mode.ok_or_else(|| bad("no mode in list entry"))?;
        Ok(MetaEntry { kind, size, mtime, mtime_nsec, mode, name })
    }
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

    fn name(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

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
    fn counts_are_strict_decimal_and_ignore_extra_fields() {
        assert_eq!(parse_count("42").unwrap(), 42);
        assert_eq!(parse_count("42 xxh3=abc").unwrap(), 42);
        for bad in ["", "-1", "+1", " 1", "0x10", "1e3", "18446744073709551616"] {
            assert!(parse_count(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn get_headers_round_trip_and_are_checked() {
        let d = Digest::of(b"x");
        for h in [
            GetHeader::whole(10, d),
            GetHeader { len: 4, offset: 6, size: 10, digest: Some(d), mode: None, mtime: Some((-5, 999_999_999)) },
            GetHeader { mode: Some(0o4755), ..GetHeader::whole(0, d) },
            GetHeader { digest: None, mode: Some(0o644), ..GetHeader::whole(3, d) },
        ] {
            let mut out = Vec::new();
            h.write(&mut out).unwrap();
            let fields = std::str::from_utf8(&out).unwrap().strip_prefix("OK ").unwrap().trim_end();
            assert_eq!(GetHeader::parse(fields).unwrap(), h);
        }
        assert_eq!(GetHeader::parse(&format!("5 future=1 xxh3={d}")).unwrap(), GetHeader::whole(5, d));
        assert_eq!(GetHeader::parse("5").unwrap().digest, None, "a trailer follows");
        let mut out = Vec::new();
        write_trailer(&mut out, d).unwrap();
        assert_eq!(out, format!("OK xxh3={d}\n").as_bytes());
        assert_eq!(parse_trailer(&format!("later=1 xxh3={d}")).unwrap(), d);
        assert!(parse_trailer("xxh3=00").is_err() && parse_trailer("").is_err());
        for bad in [
            format!("5 xxh3={d}0"),
            format!("5 offset=1 xxh3={d}"),
            format!("5 offset=1 size=7 xxh3={d}"),
            format!("5 offset=x size=6 xxh3={d}"),
            format!("18446744073709551615 offset=1 size=0 xxh3={d}"),
        ] {
            assert!(GetHeader::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn meta_entries_round_trip_and_are_checked() {
        let entry =
            |kind, name: Name| MetaEntry { kind, size: 0, mtime: -3, mtime_nsec: 999_999_999, mode: 0o755, name };
        let entries = [
            MetaEntry { size: 7, ..entry(EntryKind::File, name("a dir/b c")) },
            MetaEntry { mtime: 1_700_000_000, mtime_nsec: 0, mode: 0o700, ..entry(EntryKind::Folder, name("empty")) },
            entry(EntryKind::Symlink(b"../a b\n\xff".to_vec()), Name::from_bytes(b"l\tink").unwrap()),
            entry(EntryKind::Fifo, name("p")),
            entry(EntryKind::Socket, name("s")),
            entry(EntryKind::CharDevice, name("c")),
            entry(EntryKind::BlockDevice, name("b")),
            MetaEntry {
                kind: EntryKind::Unreadable {
                    code: ErrorCode::Denied,
                    message: "Permission denied (os error 13)".into(),
                },
                size: 0,
                mtime: 0,
                mtime_nsec: 0,
                mode: 0,
                name: name("secret"),
            },
        ];
        for e in entries {
            for form in [Form::Plain, Form::Escaped] {
                let mut out = Vec::new();
                if e.write(&mut out, form).is_err() {
                    assert_eq!(form, Form::Plain, "only version 1 cannot write {e:?}");
                    continue;
                }
                assert_eq!(MetaEntry::parse(&out[..out.len() - 1], form).unwrap(), e);
            }
        }
        let line = b"type=f size=5 mtime=1 mtime_ns=2 mode=644 later=x\tf";
        assert_eq!(MetaEntry::parse(line, Form::Plain).unwrap().size, 5, "unknown fields are ignored");
        for bad in [
            &b"type=f mtime=1 mode=644\tf"[..],
            b"type=x size=1 mtime=1 mode=644\tf",
            b"type=f size=1 mtime=1 mode=644 f",
            b"type=d mtime=1 mtime_ns=1000000000 mode=755\td",
            b"type=d mtime=1 mode=9\td",
            b"type=d mtime=1 mode=755\t../up",
            b"type=l mtime=1 mode=777\tl",
            b"type=l mtime=1 mode=777 target=a%00b\tl",
            b"type=e msg=x\te",
        ] {
            assert!(MetaEntry::parse(bad, Form::Escaped).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn list_entries_round_trip() {
        let e = ListEntry { size: 7, mtime: -3, name: name("a dir/b c.txt") };
        let mut out = Vec::new();
        e.write(&mut out, Form::Plain).unwrap();
        assert_eq!(out, b"7 -3 a dir/b c.txt\n");
        assert_eq!(ListEntry::parse(&out[..out.len() - 1], Form::Plain).unwrap(), e);
        out.clear();
        e.write(&mut out, Form::Escaped).unwrap();
        assert_eq!(out, b"7 -3 a%20dir/b%20c.txt\n");
        assert_eq!(ListEntry::parse(&out[..out.len() - 1], Form::Escaped).unwrap(), e);
        assert!(ListEntry::parse(b"7 3 ../x", Form::Plain).is_err());
        assert!(ListEntry::parse(b"7 x", Form::Plain).is_err());
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
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn get_headers_round_trip(len in any::<u64>(), offset in any::<u64>(), d in any::<u128>()) {
            if let Some(size) = len.checked_add(offset) {
                let h = GetHeader { len, offset, size, digest: Some(Digest(d)), mode: None, mtime: None };
                let mut out = Vec::new();
                h.write(&mut out).unwrap();
                let line = std::str::from_utf8(&out).unwrap();
                prop_assert_eq!(GetHeader::parse(&line[3..line.len() - 1]).unwrap(), h);
            }
        }
    }
}
