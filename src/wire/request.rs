//! Requests: the parser beside the formatter. A request is one line, `verb [argument]`; see the
//! [module doc](super) for the grammar.

use std::fmt;

use crate::digest::Digest;
use crate::name::{Name, NameError};

use super::hello::Hello;
use super::reply::ErrorCode;
use super::text::{escape, parse_u64};

/// A secret as it travels: shown nowhere (its `Debug` and `Display` say `<secret>`); only
/// [`Secret::expose`] gives the text, to write it on the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Agree on a protocol version and features; only as the first request (see `hello.rs`).
    Hello(Hello),
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
    /// Whether the server takes new clients (`health`): `OK ready`, or `ERR draining` while it
    /// shuts down gracefully. Answered without a token, for load balancers' checks.
    Health,
    Quit,
    /// Present a token (`auth TOKEN`); the token is never shown (see [`Request::for_log`]).
    Auth(Secret),
    /// A file's digest without its bytes (`sum NAME`), for comparing a local copy.
    Sum(Name),
    /// Store a file of `size` bytes as `name` (`put SIZE XXH3|- MTIME MTIME_NS FROM new|replace
    /// NAME`): its bytes from offset `from` on follow the line at once (those before are the
    /// partial upload a `partial` request proved); checked against `digest`, or with `-` against
    /// the digest on the line that follows the bytes ([`PutTrailer`]), so a sender can hash a
    /// big file as it sends it; given modification time `mtime`; an existing file is replaced
    /// only with `replace` (and a server that allows it).
    Put {
        size: u64,
        digest: Option<Digest>,
        mtime: (i64, u32),
        from: u64,
        replace: bool,
        name: Name,
    },
    /// Whether this upload may go ahead, and how much of an interrupted upload of this very file
    /// (its name, size and modification time) the server holds (`partial SIZE MTIME MTIME_NS
    /// new|replace NAME`): refused as the `put` would be before its body, else answered
    /// `OK <offset> xxh3=<digest of those bytes>`, for the sender to check against its own file's
    /// first bytes before it sends the rest with `put ... FROM`.
    Partial {
        size: u64,
        mtime: (i64, u32),
        replace: bool,
        name: Name,
    },
}

/// The line after a `put -`'s bytes: the digest of the whole file, or the sender giving up on it
/// (it changed or shrank while it was read), which stores nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutTrailer {
    Digest(Digest),
    Abort,
}

impl PutTrailer {
    pub fn parse(line: &[u8]) -> Option<PutTrailer> {
        let line = std::str::from_utf8(line).ok()?.trim_end_matches(['\r', '\n']);
        match line.strip_prefix("xxh3=") {
            Some(hex) => Digest::parse(hex).map(PutTrailer::Digest),
            None if line == "abort" => Some(PutTrailer::Abort),
            None => None,
        }
    }
}

impl fmt::Display for PutTrailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutTrailer::Digest(d) => write!(f, "xxh3={d}"),
            PutTrailer::Abort => f.write_str("abort"),
        }
    }
}

/// Why a request line was refused. The connection stays usable after each of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("request is not valid UTF-8")]
    NotUtf8,
    #[error("empty request")]
    Empty,
    #[error("unknown command '{0}' (try list, get NAME, resume, sum NAME, put, partial, stats, health, auth, quit)")]
    UnknownCommand(String),
    #[error("'{0}' needs a file name")]
    MissingName(&'static str),
    #[error("'{0}' takes no argument")]
    UnexpectedArgument(&'static str),
    #[error("usage: resume OFFSET PREFIX-XXH3 NAME")]
    BadResume,
    #[error("usage: partial SIZE MTIME MTIME_NS new|replace NAME")]
    BadPartial,
    #[error("usage: hello VERSION [FEATURE...] (VERSION from 1, FEATURE of a-z, 0-9, -)")]
    BadHello,
    #[error("usage: auth TOKEN")]
    BadAuth,
    /// A `put` line that cannot be read: its body cannot be told from requests, so the
    /// connection ends after this error.
    #[error(
        "usage: put SIZE XXH3|- MTIME MTIME_NS FROM new|replace NAME (the connection closes: its body cannot be skipped)"
    )]
    BadPut,
    #[error("bad name: {0} (the connection closes: the put's body cannot be skipped)")]
    BadPutName(NameError),
    #[error("bad name: {0}")]
    BadName(#[from] NameError),
}

impl RequestError {
    /// Whether the connection must end after this error: the line was a `put` whose body follows
    /// and cannot be told from requests.
    pub fn ends_connection(&self) -> bool {
        matches!(self, RequestError::BadPut | RequestError::BadPutName(_))
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            RequestError::UnknownCommand(_) => ErrorCode::UnknownCommand,
            RequestError::BadName(_) | RequestError::BadPutName(_) => ErrorCode::BadName,
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
        } else if verb.eq_ignore_ascii_case("sum") {
            match arg {
                Some(name) if !name.is_empty() => Ok(Request::Sum(Name::parse(name)?)),
                _ => Err(RequestError::MissingName("sum")),
            }
        } else if verb.eq_ignore_ascii_case("put") {
            let mut parts = arg.unwrap_or("").splitn(7, ' ');
            let size = parts.next().and_then(parse_u64).ok_or(RequestError::BadPut)?;
            let digest = match parts.next() {
                Some("-") => None,
                Some(hex) => Some(Digest::parse(hex).ok_or(RequestError::BadPut)?),
                None => return Err(RequestError::BadPut),
            };
            let mtime = parse_mtime(&mut parts).ok_or(RequestError::BadPut)?;
            let from = parts.next().and_then(parse_u64).filter(|&from| from <= size).ok_or(RequestError::BadPut)?;
            let replace = parts.next().and_then(parse_mode).ok_or(RequestError::BadPut)?;
            let name = parts.next().filter(|n| !n.is_empty()).ok_or(RequestError::BadPut)?;
            let name = Name::parse(name).map_err(RequestError::BadPutName)?;
            Ok(Request::Put { size, digest, mtime, from, replace, name })
        } else if verb.eq_ignore_ascii_case("partial") {
            let mut parts = arg.unwrap_or("").splitn(5, ' ');
            let size = parts.next().and_then(parse_u64).ok_or(RequestError::BadPartial)?;
            let mtime = parse_mtime(&mut parts).ok_or(RequestError::BadPartial)?;
            let replace = parts.next().and_then(parse_mode).ok_or(RequestError::BadPartial)?;
            let name = parts.next().filter(|n| !n.is_empty()).ok_or(RequestError::BadPartial)?;
            Ok(Request::Partial { size, mtime, replace, name: Name::parse(name)? })
        } else if verb.eq_ignore_ascii_case("auth") {
            match arg {
                Some(token) if !token.is_empty() && !token.contains(' ') => Ok(Request::Auth(Secret::new(token))),
                _ => Err(RequestError::BadAuth),
            }
        } else if verb.eq_ignore_ascii_case("hello") {
            Hello::parse_args(arg.unwrap_or("")).map(Request::Hello).ok_or(RequestError::BadHello)
        } else if verb.eq_ignore_ascii_case("list") {
            match arg {
                None | Some("") => Ok(Request::List(None)),
                Some(folder) => Ok(Request::List(Some(Name::parse(folder)?))),
            }
        } else if verb.eq_ignore_ascii_case("stats") {
            no_argument(arg, "stats").map(|()| Request::Stats)
        } else if verb.eq_ignore_ascii_case("health") {
            no_argument(arg, "health").map(|()| Request::Health)
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

impl Request {
    /// The request as a log shows it: as on the wire, but a token is `<secret>`.
    pub fn for_log(&self) -> String {
        match self {
            Request::Auth(_) => "auth <secret>".to_string(),
            other => other.to_string(),
        }
    }
}

/// A modification time as two fields: seconds (may be negative) and nanoseconds.
fn parse_mtime<'a>(parts: &mut impl Iterator<Item = &'a str>) -> Option<(i64, u32)> {
    let secs = parts.next()?.parse::<i64>().ok()?;
    let nanos = parts.next()?.parse::<u32>().ok().filter(|&n| n < 1_000_000_000)?;
    Some((secs, nanos))
}

/// An upload's mode on the wire: `new` (never replaces) or `replace`.
fn parse_mode(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("new") {
        Some(false)
    } else if s.eq_ignore_ascii_case("replace") {
        Some(true)
    } else {
        None
    }
}

fn mode(replace: bool) -> &'static str {
    if replace { "replace" } else { "new" }
}

/// The canonical request line, without its line feed (a token included: this is what is sent).
impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Hello(hello) => write!(f, "{hello}"),
            Request::List(None) => f.write_str("list"),
            Request::List(Some(folder)) => write!(f, "list {folder}"),
            Request::Get(name) => write!(f, "get {name}"),
            Request::Resume { offset, prefix, name } => write!(f, "resume {offset} {prefix} {name}"),
            Request::Stats => f.write_str("stats"),
            Request::Health => f.write_str("health"),
            Request::Quit => f.write_str("quit"),
            Request::Auth(token) => write!(f, "auth {}", token.expose()),
            Request::Sum(name) => write!(f, "sum {name}"),
            Request::Put { size, digest, mtime, from, replace, name } => {
                let digest = digest.map_or("-".to_string(), |d| d.to_string());
                write!(f, "put {size} {digest} {} {} {from} {} {name}", mtime.0, mtime.1, mode(*replace))
            }
            Request::Partial { size, mtime, replace, name } => {
                write!(f, "partial {size} {} {} {} {name}", mtime.0, mtime.1, mode(*replace))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_put_line_that_cannot_be_read_ends_the_connection() {
        let d = Digest::of(b"hi");
        assert_eq!(
            Request::parse(format!("PUT 2 {d} -5 9 1 Replace up/a b").as_bytes()),
            Ok(Request::Put { size: 2, digest: Some(d), mtime: (-5, 9), from: 1, replace: true, name: name("up/a b") })
        );
        assert_eq!(
            Request::parse(b"put 2 - 7 0 0 new a"),
            Ok(Request::Put { size: 2, digest: None, mtime: (7, 0), from: 0, replace: false, name: name("a") })
        );
        assert_eq!(
            Request::parse(b"partial 2 -5 9 new up/a b"),
            Ok(Request::Partial { size: 2, mtime: (-5, 9), replace: false, name: name("up/a b") })
        );
        let bad = [
            "put".to_string(),
            format!("put 2 {d} 1 0 0 new"),
            format!("put x {d} 1 0 0 new a"),
            "put 2 nothex 1 0 0 new a".to_string(),
            format!("put 2 {d} 1 1000000000 0 new a"),
            format!("put 2 {d} 1 0 3 new a"),
            format!("put 2 {d} 1 0 0 maybe a"),
            format!("put 2 {d} 1 0 a"),
        ];
        for line in bad {
            let e = Request::parse(line.as_bytes()).unwrap_err();
            assert_eq!(
                (e.clone(), e.ends_connection(), e.code()),
                (RequestError::BadPut, true, ErrorCode::BadRequest),
                "{line}"
            );
        }
        let e = Request::parse(format!("put 2 {d} 1 0 0 new ../a").as_bytes()).unwrap_err();
        assert!(e.ends_connection() && e.code() == ErrorCode::BadName, "{e:?}");
        assert!(!Request::parse(b"get ../a").unwrap_err().ends_connection());
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
            (any::<u64>(), any::<u128>(), any::<i64>(), 0u32..1_000_000_000, any::<u64>(), any::<bool>(), name())
                .prop_map(|(size, d, secs, nanos, from, replace, name)| Request::Put {
                    size,
                    digest: (d % 3 != 0).then_some(Digest(d)),
                    mtime: (secs, nanos),
                    from: from % size.saturating_add(1),
                    replace,
                    name
                }),
            (any::<u64>(), any::<i64>(), 0u32..1_000_000_000, any::<bool>(), name()).prop_map(
                |(size, secs, nanos, replace, name)| Request::Partial { size, mtime: (secs, nanos), replace, name }
            ),
            Just(Request::Stats),
            Just(Request::Health),
            Just(Request::Quit),
            (1u32.., proptest::collection::vec("[a-z0-9-]{1,32}", 0..4))
                .prop_map(|(version, features)| Request::Hello(Hello { version, features })),
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
    }
}
