//! The wire protocol: request and reply types, each parser beside its formatter, and the bounded
//! line reader both sides use.
//!
//! Nothing here touches a file or a socket directly: parsing works on byte slices, formatting on
//! `impl Write`, and reading on `impl BufRead`, so the same code is tested in memory and used over
//! TCP. README's "Protocol" section is the long form of this summary:
//!
//! ```text
//! request  = verb [SP argument] LF          ; a CR before LF is dropped; verbs are case-insensitive
//!   list [FOLDER]                           ; FOLDER and NAME are everything after the first space
//!   get NAME
//!   resume OFFSET PREFIX-XXH3 NAME          ; continue a download (see README)
//!   stats
//!   quit
//! reply    = "OK" [SP fields] LF [payload]  |  "ERR" SP code SP message LF
//!   get   -> OK <size> xxh3=<digest>                              then exactly <size> raw bytes
//!   resume-> OK <n> offset=<o> size=<size> xxh3=<digest>         then the <n> = <size> - <o> bytes from <o>
//!   list  -> OK <count>            then <count> lines "<size> <mtime-unix-seconds> <name>"
//!   stats -> OK <count>            then <count> lines "<key> <value>"
//!   quit  -> OK bye                then the server closes the connection
//! ```
//!
//! Numbers are plain decimal. Fields after the first on an `OK` line are `key=value` pairs that a
//! reader must ignore when it does not know them, so later versions can add them (a digest, a
//! resume offset) without breaking older clients.

use std::fmt;
use std::io::{self, BufRead, Write};

use crate::digest::Digest;
use crate::name::{MAX_NAME_LEN, Name, NameError};

/// Longest request line the server reads, in bytes, excluding the line feed.
pub const MAX_REQUEST_LINE: usize = 4096;
/// Longest reply line a client reads: a list entry is two numbers and a name.
pub const MAX_REPLY_LINE: usize = MAX_NAME_LEN + 64;

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Every servable file, or those under one folder.
    List(Option<Name>),
    Get(Name),
    /// The file from `offset` on, if its first `offset` bytes have digest `prefix`; else all of it.
    Resume {
        offset: u64,
        prefix: Digest,
        name: Name,
    },
    Stats,
    Quit,
}

/// Why a request line was refused. The connection stays usable after each of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("request is not valid UTF-8")]
    NotUtf8,
    #[error("empty request")]
    Empty,
    #[error("unknown command '{0}' (try list, get NAME, resume, stats, quit)")]
    UnknownCommand(String),
    #[error("'{0}' needs a file name")]
    MissingName(&'static str),
    #[error("'{0}' takes no argument")]
    UnexpectedArgument(&'static str),
    #[error("usage: resume OFFSET PREFIX-XXH3 NAME")]
    BadResume,
    #[error("bad name: {0}")]
    BadName(#[from] NameError),
}

impl RequestError {
    pub fn code(&self) -> ErrorCode {
        match self {
            RequestError::UnknownCommand(_) => ErrorCode::UnknownCommand,
            RequestError::BadName(_) => ErrorCode::BadName,
            _ => ErrorCode::BadRequest,
        }
    }
}

impl Request {
    /// Parses one request line (without its line feed; a trailing CR is tolerated).
    pub fn parse(line: &[u8]) -> Result<Request, RequestError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = std::str::from_utf8(line).map_err(|_| RequestError::NotUtf8)?;
        let (verb, arg) = match line.split_once(' ') {
            Some((verb, arg)) => (verb, Some(arg)),
            None => (line, None),
        };
        if verb.is_empty() {
            return Err(RequestError::Empty);
        }
        if verb.eq_ignore_ascii_case("get") {
            match arg {
                Some(name) if !name.is_empty() => Ok(Request::Get(Name::parse(name)?)),
                _ => Err(RequestError::MissingName("get")),
            }
        } else if verb.eq_ignore_ascii_case("resume") {
            let mut parts = arg.unwrap_or("").splitn(3, ' ');
            let offset = parts.next().and_then(parse_u64).ok_or(RequestError::BadResume)?;
            let prefix = parts.next().and_then(Digest::parse).ok_or(RequestError::BadResume)?;
            let name = parts.next().filter(|n| !n.is_empty()).ok_or(RequestError::BadResume)?;
            Ok(Request::Resume { offset, prefix, name: Name::parse(name)? })
        } else if verb.eq_ignore_ascii_case("list") {
            match arg {
                None | Some("") => Ok(Request::List(None)),
                Some(folder) => Ok(Request::List(Some(Name::parse(folder)?))),
            }
        } else if verb.eq_ignore_ascii_case("stats") {
            no_argument(arg, "stats").map(|()| Request::Stats)
        } else if verb.eq_ignore_ascii_case("quit") {
            no_argument(arg, "quit").map(|()| Request::Quit)
        } else {
            let shown: String = verb.chars().take(32).collect();
            Err(RequestError::UnknownCommand(escape(&shown)))
        }
    }
}

fn no_argument(arg: Option<&str>, verb: &'static str) -> Result<(), RequestError> {
    match arg {
        None | Some("") => Ok(()),
        Some(_) => Err(RequestError::UnexpectedArgument(verb)),
    }
}

/// The canonical request line, without its line feed.
impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::List(None) => f.write_str("list"),
            Request::List(Some(folder)) => write!(f, "list {folder}"),
            Request::Get(name) => write!(f, "get {name}"),
            Request::Resume { offset, prefix, name } => write!(f, "resume {offset} {prefix} {name}"),
            Request::Stats => f.write_str("stats"),
            Request::Quit => f.write_str("quit"),
        }
    }
}

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
}

impl ErrorCode {
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
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An `ERR` reply as a client sees it. The code is kept as sent, so unknown codes survive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    pub code: String,
    pub message: String,
}

impl fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

/// Errors reading or decoding the wire. After any of these the stream is out of step.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("line longer than {0} bytes")]
    LineTooLong(usize),
    #[error("connection closed in the middle of a line")]
    TruncatedLine,
    #[error("connection closed before the reply")]
    Closed,
    #[error("malformed reply: {0}")]
    Malformed(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads one line into `buf` (without the LF; a trailing CR is kept for the parser to drop).
///
/// Returns `Ok(false)` on a clean end of stream before any byte of a line, `Ok(true)` with a
/// line in `buf` otherwise. Never buffers more than `cap` bytes of one line.
pub fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>, cap: usize) -> Result<bool, ProtocolError> {
    read_line_with(r, buf, cap, || Ok(()))
}

/// [`read_line`], calling `more` before each read after the first, when the line is still
/// incomplete (the server uses it to shrink the socket timeout to the line's deadline).
pub fn read_line_with(
    r: &mut impl BufRead,
    buf: &mut Vec<u8>,
    cap: usize,
    mut more: impl FnMut() -> io::Result<()>,
) -> Result<bool, ProtocolError> {
    buf.clear();
    let mut first = true;
    loop {
        if !first {
            more()?;
        }
        first = false;
        let avail = match r.fill_buf() {
            Ok(avail) => avail,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if avail.is_empty() {
            return if buf.is_empty() { Ok(false) } else { Err(ProtocolError::TruncatedLine) };
        }
        let (chunk, found) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (&avail[..i], true),
            None => (avail, false),
        };
        if buf.len() + chunk.len() > cap {
            return Err(ProtocolError::LineTooLong(cap));
        }
        buf.extend_from_slice(chunk);
        let used = chunk.len() + usize::from(found);
        r.consume(used);
        if found {
            return Ok(true);
        }
    }
}

/// Reads one reply status line: `Ok(fields)` for `OK`, `Err(reply)` for `ERR`.
pub fn read_status(r: &mut impl BufRead, buf: &mut Vec<u8>) -> Result<Result<String, ErrorReply>, ProtocolError> {
    if !read_line(r, buf, MAX_REPLY_LINE)? {
        return Err(ProtocolError::Closed);
    }
    parse_status(buf)
}

/// Parses a status line: `OK [fields]` or `ERR <code> <message>`.
pub fn parse_status(line: &[u8]) -> Result<Result<String, ErrorReply>, ProtocolError> {
    let line = std::str::from_utf8(line).map_err(|_| malformed("status line is not UTF-8", line))?;
    if line == "OK" {
        return Ok(Ok(String::new()));
    }
    if let Some(fields) = line.strip_prefix("OK ") {
        return Ok(Ok(fields.to_string()));
    }
    if let Some(rest) = line.strip_prefix("ERR ") {
        let (code, message) = rest.split_once(' ').unwrap_or((rest, ""));
        return Ok(Err(ErrorReply { code: code.to_string(), message: message.to_string() }));
    }
    Err(malformed("expected OK or ERR", line.as_bytes()))
}

/// Writes `ERR <code> <message>`; the message is flattened to one line.
pub fn write_err(w: &mut impl Write, code: ErrorCode, message: &dyn fmt::Display) -> io::Result<()> {
    let message = escape(&message.to_string());
    writeln!(w, "ERR {code} {message}")
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
    pub digest: Digest,
}

impl GetHeader {
    /// The header for the whole file.
    pub fn whole(size: u64, digest: Digest) -> GetHeader {
        GetHeader { len: size, offset: 0, size, digest }
    }

    /// Writes `OK <len> [offset=<o> size=<size>] xxh3=<digest>`; offset and size only for a
    /// partial body, so a plain `get` reads `OK <size> xxh3=...`.
    pub fn write(&self, w: &mut impl Write) -> io::Result<()> {
        if self.offset == 0 {
            writeln!(w, "OK {} xxh3={}", self.len, self.digest)
        } else {
            writeln!(w, "OK {} offset={} size={} xxh3={}", self.len, self.offset, self.size, self.digest)
        }
    }

    /// Parses the fields after `OK `. Unknown `key=value` fields are ignored; known ones must be
    /// well-formed, the digest must be present, and `offset + len` must equal `size`.
    pub fn parse(fields: &str) -> Result<GetHeader, ProtocolError> {
        let bad = |what: &str| malformed(what, fields.as_bytes());
        let mut parts = fields.split(' ');
        let len = parts.next().and_then(parse_u64).ok_or_else(|| bad("expected a decimal size"))?;
        let (mut offset, mut size, mut digest) = (0, None, None);
        for field in parts {
            match field.split_once('=') {
                Some(("offset", v)) => offset = parse_u64(v).ok_or_else(|| bad("bad offset"))?,
                Some(("size", v)) => size = Some(parse_u64(v).ok_or_else(|| bad("bad size"))?),
                Some(("xxh3", v)) => digest = Some(Digest::parse(v).ok_or_else(|| bad("bad xxh3 digest"))?),
                _ => {}
            }
        }
        let size = size.unwrap_or(len);
        if offset.checked_add(len) != Some(size) {
            return Err(bad("offset + length disagrees with size"));
        }
        let digest = digest.ok_or_else(|| bad("no xxh3 digest"))?;
        Ok(GetHeader { len, offset, size, digest })
    }
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
    pub fn write(&self, w: &mut impl Write) -> io::Result<()> {
        writeln!(w, "{} {} {}", self.size, self.mtime, self.name)
    }

    /// Parses `<size> <mtime> <name>`; the name is the rest of the line and must be a valid name.
    pub fn parse(line: &[u8]) -> Result<ListEntry, ProtocolError> {
        let text = std::str::from_utf8(line).map_err(|_| malformed("list entry is not UTF-8", line))?;
        let mut parts = text.splitn(3, ' ');
        let (size, mtime, name) = match (parts.next(), parts.next(), parts.next()) {
            (Some(s), Some(m), Some(n)) => (s, m, n),
            _ => return Err(malformed("expected '<size> <mtime> <name>'", line)),
        };
        let size = parse_u64(size).ok_or_else(|| malformed("bad size in list entry", line))?;
        let mtime = parse_i64(mtime).ok_or_else(|| malformed("bad mtime in list entry", line))?;
        let name = Name::parse(name).map_err(|e| malformed(&format!("bad name in list entry: {e}"), line))?;
        Ok(ListEntry { size, mtime, name })
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

/// A strict decimal `u64`: ASCII digits only (no sign, no spaces), no overflow.
pub fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_i64(s: &str) -> Option<i64> {
    match s.strip_prefix('-') {
        Some(digits) => parse_u64(digits).and_then(|v| 0i64.checked_sub_unsigned(v)),
        None => parse_u64(s).and_then(|v| i64::try_from(v).ok()),
    }
}

/// Escapes control characters so a peer's text cannot forge lines or terminal sequences.
pub fn escape(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars().flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] }).collect()
}

fn malformed(what: &str, line: &[u8]) -> ProtocolError {
    let shown: String = String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned();
    ProtocolError::Malformed(format!("{what}: {:?}", escape(&shown)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    fn name(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    #[test]
    fn parses_each_verb_case_insensitively() {
        assert_eq!(Request::parse(b"list"), Ok(Request::List(None)));
        assert_eq!(Request::parse(b"LIST docs"), Ok(Request::List(Some(name("docs")))));
        assert_eq!(Request::parse(b"Get file1.txt\r"), Ok(Request::Get(name("file1.txt"))));
        assert_eq!(Request::parse(b"get a b  c"), Ok(Request::Get(name("a b  c"))));
        assert_eq!(Request::parse(b"stats"), Ok(Request::Stats));
        let prefix = Digest::of(b"abc");
        assert_eq!(
            Request::parse(format!("resume 3 {prefix} a b").as_bytes()),
            Ok(Request::Resume { offset: 3, prefix, name: name("a b") })
        );
        assert_eq!(Request::parse(b"QUIT"), Ok(Request::Quit));
    }

    #[test]
    fn refuses_bad_requests_with_the_right_code() {
        let code = |line: &[u8]| Request::parse(line).unwrap_err().code();
        assert_eq!(code(b""), ErrorCode::BadRequest);
        assert_eq!(code(b" get x"), ErrorCode::BadRequest);
        assert_eq!(code(b"get"), ErrorCode::BadRequest);
        assert_eq!(code(b"get "), ErrorCode::BadRequest);
        assert_eq!(code(b"quit now"), ErrorCode::BadRequest);
        assert_eq!(code(b"\xff\xfe"), ErrorCode::BadRequest);
        assert_eq!(code(b"fetch x"), ErrorCode::UnknownCommand);
        assert_eq!(code(b"get ../x"), ErrorCode::BadName);
        assert_eq!(code(b"get /etc/passwd"), ErrorCode::BadName);
        assert_eq!(code(b"list a/../.."), ErrorCode::BadName);
        assert_eq!(code(b"resume"), ErrorCode::BadRequest);
        assert_eq!(code(b"resume 1 abc x"), ErrorCode::BadRequest);
        assert_eq!(code(b"resume -1 00000000000000000000000000000000 x"), ErrorCode::BadRequest);
        assert_eq!(code(b"resume 1 00000000000000000000000000000000"), ErrorCode::BadRequest);
        assert_eq!(code(b"resume 1 00000000000000000000000000000000 ../x"), ErrorCode::BadName);
    }

    #[test]
    fn format_then_parse_is_identity() {
        for req in [
            Request::List(None),
            Request::List(Some(name("docs/sub"))),
            Request::Get(name("with space/ünï.txt")),
            Request::Resume { offset: 9, prefix: Digest(u128::MAX), name: name("r") },
            Request::Stats,
            Request::Quit,
        ] {
            assert_eq!(Request::parse(req.to_string().as_bytes()), Ok(req));
        }
    }

    #[test]
    fn read_line_handles_eof_crlf_and_the_cap() {
        let mut r = BufReader::with_capacity(4, &b"ab\r\ncdefgh\nlast"[..]);
        let mut buf = Vec::new();
        assert!(read_line(&mut r, &mut buf, 16).unwrap());
        assert_eq!(buf, b"ab\r");
        assert!(read_line(&mut r, &mut buf, 16).unwrap());
        assert_eq!(buf, b"cdefgh");
        assert!(matches!(read_line(&mut r, &mut buf, 16), Err(ProtocolError::TruncatedLine)));

        let mut r = BufReader::new(&b""[..]);
        assert!(!read_line(&mut r, &mut buf, 16).unwrap());

        let long = [b'x'; 100];
        let mut r = BufReader::with_capacity(8, &long[..]);
        assert!(matches!(read_line(&mut r, &mut buf, 16), Err(ProtocolError::LineTooLong(16))));
        assert!(buf.len() <= 16);
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"OK 12").unwrap(), Ok("12".to_string()));
        assert_eq!(parse_status(b"OK").unwrap(), Ok(String::new()));
        let err = parse_status(b"ERR not-found no such file: x").unwrap().unwrap_err();
        assert_eq!((err.code.as_str(), err.message.as_str()), ("not-found", "no such file: x"));
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
        for h in [GetHeader::whole(10, d), GetHeader { len: 4, offset: 6, size: 10, digest: d }, GetHeader::whole(0, d)]
        {
            let mut out = Vec::new();
            h.write(&mut out).unwrap();
            let fields = std::str::from_utf8(&out).unwrap().strip_prefix("OK ").unwrap().trim_end();
            assert_eq!(GetHeader::parse(fields).unwrap(), h);
        }
        assert_eq!(GetHeader::parse(&format!("5 future=1 xxh3={d}")).unwrap(), GetHeader::whole(5, d));
        for bad in [
            "5".to_string(),
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
    fn list_entries_round_trip() {
        let e = ListEntry { size: 7, mtime: -3, name: name("a dir/b c.txt") };
        let mut out = Vec::new();
        e.write(&mut out).unwrap();
        assert_eq!(out, b"7 -3 a dir/b c.txt\n");
        assert_eq!(ListEntry::parse(&out[..out.len() - 1]).unwrap(), e);
        assert!(ListEntry::parse(b"7 3 ../x").is_err());
        assert!(ListEntry::parse(b"7 x").is_err());
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

    fn name() -> impl Strategy<Value = Name> {
        "[a-zA-Z0-9 ._é-]{1,12}(/[a-zA-Z0-9 ._é-]{1,12}){0,3}"
            .prop_filter_map("valid names only", |s| Name::parse(&s).ok())
    }

    fn request() -> impl Strategy<Value = Request> {
        prop_oneof![
            proptest::option::of(name()).prop_map(Request::List),
            name().prop_map(Request::Get),
            (any::<u64>(), any::<u128>(), name()).prop_map(|(offset, d, name)| Request::Resume {
                offset,
                prefix: Digest(d),
                name
            }),
            Just(Request::Stats),
            Just(Request::Quit),
        ]
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(req in request()) {
            prop_assert_eq!(Request::parse(req.to_string().as_bytes()), Ok(req));
        }

        /// Any bytes at all: no panic, and whatever name comes out is a checked one.
        #[test]
        fn parsing_arbitrary_bytes_is_total(line in proptest::collection::vec(any::<u8>(), 0..80)) {
            match Request::parse(&line) {
                Ok(Request::Get(n)) | Ok(Request::Resume { name: n, .. }) | Ok(Request::List(Some(n))) => {
                    prop_assert_eq!(Name::parse(n.as_str()), Ok(n.clone()));
                }
                _ => {}
            }
        }

        #[test]
        fn get_headers_round_trip(len in any::<u64>(), offset in any::<u64>(), d in any::<u128>()) {
            if let Some(size) = len.checked_add(offset) {
                let h = GetHeader { len, offset, size, digest: Digest(d) };
                let mut out = Vec::new();
                h.write(&mut out).unwrap();
                let line = std::str::from_utf8(&out).unwrap();
                prop_assert_eq!(GetHeader::parse(&line[3..line.len() - 1]).unwrap(), h);
            }
        }
    }
}
