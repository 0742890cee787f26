//! Requests: the parser beside the formatter. A request is one line, `verb [argument]`; see the
//! [module doc](super) for the grammar.

use std::fmt;

use crate::delta::Shape;
use crate::digest::Digest;
use crate::mtime::Mtime;
use crate::name::{Name, NameError};

use super::delta::parse_shape;
use super::hello::{Form, Hello};
use super::reply::ErrorCode;
use super::secret::Secret;
use super::text::{escape, parse_u64};

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Agree on a protocol version and features; only as the first request (see `hello.rs`).
    Hello(Hello),
    /// Every servable file, or those under one folder.
    List(Option<Name>),
    /// Every entry of the tree beneath a folder (or the root), whatever it is: files, folders,
    /// symlinks, fifos, devices, and what could not be read, each said so (`walk links|follow
    /// [FOLDER]`, version 2). With `follow`, symlinks that stay inside the root are followed, as
    /// `get` follows them, and listed as what they lead to; without, they are listed as links.
    Walk {
        follow: bool,
        folder: Option<Name>,
    },
    Get(Name),
    /// The file from `offset` on, if its first `offset` bytes have digest `prefix`; else all of it.
    Resume {
        offset: u64,
        prefix: Digest,
        name: Name,
    },
    /// The file, said as what the asker's older copy lacks (`delta SIZE BLOCK NAME`, feature
    /// `delta`): the signature of that copy, of this shape, follows the line (see `delta.rs`).
    Delta {
        shape: Shape,
        name: Name,
    },
    /// The signature of the server's copy of a file (`signature NAME`, feature `patch`): answered
    /// `OK signature size=<size> block=<block>` and its entries (see `delta.rs`), for an uploader
    /// to say a newer version as what this copy lacks.
    Signature(Name),
    /// Store a file of `size` bytes as `name`, said as records against the server's copy of it
    /// (`patch BASE_SIZE BLOCK SIZE MTIME MTIME_NS new|replace PERM NAME`, feature `patch`): the
    /// records follow the line (copies of the blocks of the signature of shape `base` the server
    /// gave, and bytes, compressed where feature `zstd` was agreed), then the trailer a `put -`
    /// has. `base.size` 0: no copy, the whole file as records. Answered as a `put` is.
    Patch {
        base: Shape,
        size: u64,
        mtime: Mtime,
        replace: bool,
        perm: u32,
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
    /// What is at a name, without following a symlink at its end (`stat NAME`, version 2):
    /// answered with one entry as `walk` writes it, or `ERR not-found`.
    Stat(Name),
    /// Make a folder (and the folders above it) if missing and give it a mode and modification
    /// time (`mkdir PERM MTIME MTIME_NS NAME`, version 2): what `put -r` sends for each folder
    /// once its files are in, so empty folders arrive and every folder keeps its time.
    Mkdir {
        perm: u32,
        mtime: Mtime,
        name: Name,
    },
    /// Store a file of `size` bytes as `name` (`put SIZE XXH3|- MTIME MTIME_NS FROM new|replace
    /// [PERM] NAME`, PERM from version 2 on): its bytes from offset `from` on follow the line at
    /// once (those before are the partial upload a `partial` request proved); checked against
    /// `digest`, or with `-` against the digest on the line that follows the bytes
    /// ([`PutTrailer`]), so a sender can hash a big file as it sends it; given modification time
    /// `mtime` and permissions `perm` (as the server allows); an existing file is replaced only
    /// with `replace` (and a server that allows it).
    Put {
        size: u64,
        digest: Option<Digest>,
        mtime: Mtime,
        from: u64,
        replace: bool,
        /// The sender's permission bits (version 1 cannot say: 0644).
        perm: u32,
        name: Name,
    },
    /// Whether this upload may go ahead, and how much of an interrupted upload of this very file
    /// (its name, size and modification time) the server holds (`partial SIZE MTIME MTIME_NS
    /// new|replace NAME`): refused as the `put` would be before its body, else answered
    /// `OK <offset> xxh3=<digest of those bytes>`, for the sender to check against its own file's
    /// first bytes before it sends the rest with `put ... FROM`.
    Partial {
        size: u64,
        mtime: Mtime,
        replace: bool,
        name: Name,
    },
}

/// The permissions a version 1 `put` (which cannot say) gets.
pub const PLAIN_PUT_PERM: u32 = 0o644;

/// Why a request cannot be written in a form: a name version 1 cannot carry, or a verb it lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsayable {
    #[error("{0}")]
    Name(NameError),
    #[error("this server speaks protocol version 1, which has no '{0}'")]
    Verb(&'static str),
}

/// Why a request line was refused. The connection stays usable after each of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("request is not valid UTF-8")]
    NotUtf8,
    #[error("empty request")]
    Empty,
    #[error(
        "unknown command '{0}' (try list, walk, get NAME, resume, sum NAME, stat NAME, put, partial, mkdir, stats, health, auth, quit)"
    )]
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
    #[error("usage: walk links|follow [FOLDER]")]
    BadWalk,
    #[error("usage: mkdir PERM MTIME MTIME_NS NAME")]
    BadMkdir,
    /// A `put` line that cannot be read: its body cannot be told from requests, so the
    /// connection ends after this error.
    #[error(
        "usage: put SIZE XXH3|- MTIME MTIME_NS FROM new|replace [PERM] NAME (the connection closes: its body cannot be skipped)"
    )]
    BadPut,
    /// A `delta` line that cannot be read or whose shape is refused: its signature cannot be
    /// told from requests, so the connection ends after this error.
    #[error("{0} (the connection closes: the signature cannot be skipped)")]
    BadDelta(String),
    #[error("bad patch: {0}")]
    BadPatch(String),
    #[error("bad name: {0} (the connection closes: the put's body cannot be skipped)")]
    BadPutName(NameError),
    #[error("bad name: {0}")]
    BadName(#[from] NameError),
}

impl RequestError {
    /// Whether the connection must end after this error: the line was a `put` whose body follows
    /// and cannot be told from requests.
    pub fn ends_connection(&self) -> bool {
        matches!(
            self,
            RequestError::BadPut | RequestError::BadPutName(_) | RequestError::BadDelta(_) | RequestError::BadPatch(_)
        )
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
    /// Parses one request line (without its line feed; a trailing CR is tolerated), its names
    /// written in `form`.
    pub fn parse(line: &[u8], form: Form) -> Result<Request, RequestError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = std::str::from_utf8(line).map_err(|_| RequestError::NotUtf8)?;
        let (verb, arg) = match line.split_once(' ') {
            Some((verb, arg)) => (verb, Some(arg)),
            None => (line, None),
        };
        if verb.is_empty() {
            return Err(RequestError::Empty);
        }
        let v2 = form == Form::Escaped;
        let name = |s: &str| form.read(s).map_err(RequestError::BadName);
        let is = |v: &str| verb.eq_ignore_ascii_case(v);
        if is("get") {
            match arg {
                Some(n) if !n.is_empty() => Ok(Request::Get(name(n)?)),
                _ => Err(RequestError::MissingName("get")),
            }
        } else if is("delta") {
            let (shape, n) = parse_shape(arg.unwrap_or("")).map_err(RequestError::BadDelta)?;
            let name = form.read(n).map_err(|e| RequestError::BadDelta(format!("bad name: {e}")))?;
            Ok(Request::Delta { shape, name })
        } else if v2 && is("patch") {
            parse_patch(arg.unwrap_or(""), form).map_err(RequestError::BadPatch)
        } else if v2 && is("signature") {
            match arg {
                Some(n) if !n.is_empty() => Ok(Request::Signature(name(n)?)),
                _ => Err(RequestError::MissingName("signature")),
            }
        } else if is("resume") {
            let mut parts = arg.unwrap_or("").splitn(3, ' ');
            let offset = parts.next().and_then(parse_u64).ok_or(RequestError::BadResume)?;
            let prefix = parts.next().and_then(Digest::parse).ok_or(RequestError::BadResume)?;
            let n = parts.next().filter(|n| !n.is_empty()).ok_or(RequestError::BadResume)?;
            Ok(Request::Resume { offset, prefix, name: name(n)? })
        } else if is("sum") || (v2 && is("stat")) {
            let n = match arg {
                Some(n) if !n.is_empty() => name(n)?,
                _ => return Err(RequestError::MissingName(if is("sum") { "sum" } else { "stat" })),
            };
            Ok(if is("sum") { Request::Sum(n) } else { Request::Stat(n) })
        } else if is("put") {
            let fields = if v2 { 8 } else { 7 };
            let mut parts = arg.unwrap_or("").splitn(fields, ' ');
            let size = parts.next().and_then(parse_u64).ok_or(RequestError::BadPut)?;
            let digest = match parts.next() {
                Some("-") => None,
                Some(hex) => Some(Digest::parse(hex).ok_or(RequestError::BadPut)?),
                None => return Err(RequestError::BadPut),
            };
            let mtime = parse_mtime(&mut parts).ok_or(RequestError::BadPut)?;
            let from = parts.next().and_then(parse_u64).filter(|&from| from <= size).ok_or(RequestError::BadPut)?;
            let replace = parts.next().and_then(parse_mode).ok_or(RequestError::BadPut)?;
            let perm = if v2 { parts.next().and_then(parse_perm).ok_or(RequestError::BadPut)? } else { PLAIN_PUT_PERM };
            let n = parts.next().filter(|n| !n.is_empty()).ok_or(RequestError::BadPut)?;
            let name = form.read(n).map_err(RequestError::BadPutName)?;
            Ok(Request::Put { size, digest, mtime, from, replace, perm, name })
        } else if is("partial") {
            let mut parts = arg.unwrap_or("").splitn(5, ' ');
            let size = parts.next().and_then(parse_u64).ok_or(RequestError::BadPartial)?;
            let mtime = parse_mtime(&mut parts).ok_or(RequestError::BadPartial)?;
            let replace = parts.next().and_then(parse_mode).ok_or(RequestError::BadPartial)?;
            let n = parts.next().filter(|n| !n.is_empty()).ok_or(RequestError::BadPartial)?;
            Ok(Request::Partial { size, mtime, replace, name: name(n)? })
        } else if v2 && is("mkdir") {
            let mut parts = arg.unwrap_or("").splitn(4, ' ');
            let perm = parts.next().and_then(parse_perm).ok_or(RequestError::BadMkdir)?;
            let mtime = parse_mtime(&mut parts).ok_or(RequestError::BadMkdir)?;
            let n = parts.next().filter(|n| !n.is_empty()).ok_or(RequestError::BadMkdir)?;
            Ok(Request::Mkdir { perm, mtime, name: name(n)? })
        } else if v2 && is("walk") {
            let mut parts = arg.unwrap_or("").splitn(2, ' ');
            let follow = match parts.next() {
                Some("links") => false,
                Some("follow") => true,
                _ => return Err(RequestError::BadWalk),
            };
            let folder = match parts.next() {
                None | Some("") => None,
                Some(n) => Some(name(n)?),
            };
            Ok(Request::Walk { follow, folder })
        } else if is("auth") {
            match arg {
                Some(token) if !token.is_empty() && !token.contains(' ') => Ok(Request::Auth(Secret::new(token))),
                _ => Err(RequestError::BadAuth),
            }
        } else if is("hello") {
            Hello::parse_args(arg.unwrap_or("")).map(Request::Hello).ok_or(RequestError::BadHello)
        } else if is("list") {
            match arg {
                None | Some("") => Ok(Request::List(None)),
                Some(folder) => Ok(Request::List(Some(name(folder)?))),
            }
        } else if is("stats") {
            no_argument(arg, "stats").map(|()| Request::Stats)
        } else if is("health") {
            no_argument(arg, "health").map(|()| Request::Health)
        } else if is("quit") {
            no_argument(arg, "quit").map(|()| Request::Quit)
        } else {
            let shown: String = verb.chars().take(32).collect();
            Err(RequestError::UnknownCommand(escape(&shown)))
        }
    }

    /// The request line (without its line feed) with its names written in `form`: an error for a
    /// name version 1 cannot carry, or a request it does not have.
    pub fn to_line(&self, form: Form) -> Result<String, Unsayable> {
        let n = |name: &Name| form.write(name).map(|n| n.into_owned()).map_err(Unsayable::Name);
        let v2 = form == Form::Escaped;
        Ok(match self {
            Request::Hello(hello) => hello.to_string(),
            Request::List(None) => "list".to_string(),
            Request::List(Some(folder)) => format!("list {}", n(folder)?),
            Request::Walk { .. } if !v2 => return Err(Unsayable::Verb("walk")),
            Request::Stat(_) if !v2 => return Err(Unsayable::Verb("stat")),
            Request::Mkdir { .. } if !v2 => return Err(Unsayable::Verb("mkdir")),
            Request::Walk { follow, folder } => {
                let how = if *follow { "follow" } else { "links" };
                match folder {
                    Some(folder) => format!("walk {how} {}", n(folder)?),
                    None => format!("walk {how}"),
                }
            }
            Request::Get(name) => format!("get {}", n(name)?),
            Request::Resume { offset, prefix, name } => format!("resume {offset} {prefix} {}", n(name)?),
            Request::Delta { shape, name } => format!("delta {} {} {}", shape.size, shape.block, n(name)?),
            Request::Signature(_) if !v2 => return Err(Unsayable::Verb("signature")),
            Request::Patch { .. } if !v2 => return Err(Unsayable::Verb("patch")),
            Request::Signature(name) => format!("signature {}", n(name)?),
            Request::Patch { base, size, mtime, replace, perm, name } => format!(
                "patch {} {} {size} {} {} {} {perm:o} {}",
                base.size,
                base.block,
                mtime.secs,
                mtime.nanos,
                mode(*replace),
                n(name)?
            ),
            Request::Stats => "stats".to_string(),
            Request::Health => "health".to_string(),
            Request::Quit => "quit".to_string(),
            Request::Auth(token) => format!("auth {}", token.expose()),
            Request::Sum(name) => format!("sum {}", n(name)?),
            Request::Stat(name) => format!("stat {}", n(name)?),
            Request::Mkdir { perm, mtime, name } => {
                format!("mkdir {perm:o} {} {} {}", mtime.secs, mtime.nanos, n(name)?)
            }
            Request::Put { size, digest, mtime, from, replace, perm, name } => {
                let digest = digest.map_or("-".to_string(), |d| d.to_string());
                let (secs, nanos, mode) = (mtime.secs, mtime.nanos, mode(*replace));
                match v2 {
                    true => format!("put {size} {digest} {secs} {nanos} {from} {mode} {perm:o} {}", n(name)?),
                    false => format!("put {size} {digest} {secs} {nanos} {from} {mode} {}", n(name)?),
                }
            }
            Request::Partial { size, mtime, replace, name } => {
                format!("partial {size} {} {} {} {}", mtime.secs, mtime.nanos, mode(*replace), n(name)?)
            }
        })
    }

    /// The request as a log shows it: as on the wire (version 2), but a token is `<secret>`, and
    /// escaped for a terminal.
    pub fn for_log(&self) -> String {
        match self {
            Request::Auth(_) => "auth <secret>".to_string(),
            other => escape(&other.to_string()),
        }
    }
}

/// The fields of a `patch` line after the verb; the shape checked, the size at least 1.
fn parse_patch(arg: &str, form: Form) -> Result<Request, String> {
    const USAGE: &str = "usage: patch BASE_SIZE BLOCK SIZE MTIME MTIME_NS new|replace PERM NAME";
    let (base, rest) = parse_shape(arg).map_err(|e| if e.starts_with("usage") { USAGE.to_string() } else { e })?;
    let mut parts = rest.splitn(6, ' ');
    let size = parts.next().and_then(parse_u64).filter(|&s| s > 0);
    let mtime = parse_mtime(&mut parts);
    let replace = parts.next().and_then(parse_mode);
    let perm = parts.next().and_then(parse_perm);
    let n = parts.next().filter(|n| !n.is_empty());
    match (size, mtime, replace, perm, n) {
        (Some(size), Some(mtime), Some(replace), Some(perm), Some(n)) => {
            let name = form.read(n).map_err(|e| format!("bad name: {e}"))?;
            Ok(Request::Patch { base, size, mtime, replace, perm, name })
        }
        _ => Err(USAGE.into()),
    }
}

fn no_argument(arg: Option<&str>, verb: &'static str) -> Result<(), RequestError> {
    match arg {
        None | Some("") => Ok(()),
        Some(_) => Err(RequestError::UnexpectedArgument(verb)),
    }
}

/// A modification time as two fields: seconds (may be negative) and nanoseconds.
fn parse_mtime<'a>(parts: &mut impl Iterator<Item = &'a str>) -> Option<Mtime> {
    let secs = parts.next()?.parse::<i64>().ok()?;
    let nanos = parts.next()?.parse::<u32>().ok().filter(|&n| n < 1_000_000_000)?;
    Some(Mtime::new(secs, nanos))
}

/// Permission bits in octal, at most `7777`.
fn parse_perm(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(s, 8).ok()
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

/// The request line in version 2's form (a token included: this is what is sent).
impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_line(Form::Escaped) {
            Ok(line) => f.write_str(&line),
            Err(_) => Err(fmt::Error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    fn v1(line: &[u8]) -> Result<Request, RequestError> {
        Request::parse(line, Form::Plain)
    }

    fn v2(line: &[u8]) -> Result<Request, RequestError> {
        Request::parse(line, Form::Escaped)
    }

    #[test]
    fn parses_each_verb_case_insensitively() {
        assert_eq!(v1(b"list"), Ok(Request::List(None)));
        assert_eq!(v1(b"LIST docs"), Ok(Request::List(Some(name("docs")))));
        assert_eq!(v1(b"Get file1.txt\r"), Ok(Request::Get(name("file1.txt"))));
        assert_eq!(v1(b"get a b  c"), Ok(Request::Get(name("a b  c"))));
        assert_eq!(v1(b"stats"), Ok(Request::Stats));
        let prefix = Digest::of(b"abc");
        assert_eq!(
            v1(format!("resume 3 {prefix} a b").as_bytes()),
            Ok(Request::Resume { offset: 3, prefix, name: name("a b") })
        );
        assert_eq!(v1(b"QUIT"), Ok(Request::Quit));
    }

    #[test]
    fn patches_round_trip_and_bad_ones_close_the_connection() {
        let base = Shape { size: 1 << 20, block: 1024 };
        let patch =
            Request::Patch { base, size: 7, mtime: Mtime::new(5, 6), replace: true, perm: 0o640, name: name("a b") };
        let line = patch.to_line(Form::Escaped).unwrap();
        assert_eq!(line, "patch 1048576 1024 7 5 6 replace 640 a%20b");
        assert_eq!(v2(line.as_bytes()), Ok(patch.clone()));
        assert_eq!(v2(b"signature a"), Ok(Request::Signature(name("a"))));
        assert!(patch.to_line(Form::Plain).is_err() && v1(b"signature a").is_err());
        for bad in ["patch 100 3 7 5 6 new 644 a", "patch 100 512 0 5 6 new 644 a", "patch 100 512 7 5 6 maybe 644 a"] {
            let err = v2(bad.as_bytes()).unwrap_err();
            assert!(matches!(err, RequestError::BadPatch(_)) && err.ends_connection(), "{bad}: {err:?}");
        }
    }

    #[test]
    fn version_2_names_are_escaped_tokens_decoded_once() {
        assert_eq!(v2(b"get a%20b%0Ac"), Ok(Request::Get(Name::from_bytes(b"a b\nc").unwrap())));
        assert_eq!(v2(b"get %FF"), Ok(Request::Get(Name::from_bytes(b"\xff").unwrap())));
        assert_eq!(v2(b"get a b").unwrap_err().code(), ErrorCode::BadName, "a raw space is not a version 2 name");
        assert_eq!(v2(b"get %2e%2e/x").unwrap_err().code(), ErrorCode::BadName);
        assert_eq!(v2(b"get a%2Fb").unwrap_err().code(), ErrorCode::BadName);
        assert_eq!(v1(b"get a%20b"), Ok(Request::Get(name("a%20b"))), "version 1 names are literal");
        assert_eq!(v2(b"walk links"), Ok(Request::Walk { follow: false, folder: None }));
        assert_eq!(v2(b"walk follow d%20x"), Ok(Request::Walk { follow: true, folder: Some(name("d x")) }));
        assert_eq!(v2(b"walk d").unwrap_err(), RequestError::BadWalk);
        assert_eq!(v2(b"stat x"), Ok(Request::Stat(name("x"))));
        assert_eq!(
            v2(b"mkdir 700 -3 9 a/b"),
            Ok(Request::Mkdir { perm: 0o700, mtime: Mtime::new(-3, 9), name: name("a/b") })
        );
        assert_eq!(v2(b"mkdir 9 1 0 a").unwrap_err(), RequestError::BadMkdir);
        assert_eq!(v1(b"walk links").unwrap_err().code(), ErrorCode::UnknownCommand, "not in version 1");
        let walk = Request::Walk { follow: true, folder: None };
        assert_eq!(walk.to_line(Form::Plain), Err(Unsayable::Verb("walk")));
        let odd = Request::Get(Name::from_bytes(b"x\ny").unwrap());
        assert!(matches!(odd.to_line(Form::Plain), Err(Unsayable::Name(NameError::Control))));
        assert_eq!(odd.to_line(Form::Escaped).unwrap(), "get x%0Ay");
    }

    #[test]
    fn a_put_line_that_cannot_be_read_ends_the_connection() {
        let d = Digest::of(b"hi");
        assert_eq!(
            v1(format!("PUT 2 {d} -5 9 1 Replace up/a b").as_bytes()),
            Ok(Request::Put {
                size: 2,
                digest: Some(d),
                mtime: Mtime::new(-5, 9),
                from: 1,
                replace: true,
                perm: PLAIN_PUT_PERM,
                name: name("up/a b")
            })
        );
        assert_eq!(
            v2(b"put 2 - 7 0 0 new 600 a%20b"),
            Ok(Request::Put {
                size: 2,
                digest: None,
                mtime: Mtime::new(7, 0),
                from: 0,
                replace: false,
                perm: 0o600,
                name: name("a b")
            })
        );
        assert_eq!(
            v1(b"partial 2 -5 9 new up/a b"),
            Ok(Request::Partial { size: 2, mtime: Mtime::new(-5, 9), replace: false, name: name("up/a b") })
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
            let e = v1(line.as_bytes()).unwrap_err();
            assert_eq!(
                (e.clone(), e.ends_connection(), e.code()),
                (RequestError::BadPut, true, ErrorCode::BadRequest),
                "{line}"
            );
        }
        for line in [
            format!("put 2 {d} 1 0 0 new a"),
            format!("put 2 {d} 1 0 0 new 8 a"),
            format!("put 2 {d} 1 0 0 new 17777 a"),
        ] {
            assert_eq!(v2(line.as_bytes()).unwrap_err(), RequestError::BadPut, "{line}");
        }
        let e = v1(format!("put 2 {d} 1 0 0 new ../a").as_bytes()).unwrap_err();
        assert!(e.ends_connection() && e.code() == ErrorCode::BadName, "{e:?}");
        assert!(!v1(b"get ../a").unwrap_err().ends_connection());
    }

    #[test]
    fn refuses_bad_requests_with_the_right_code() {
        let code = |line: &[u8]| v1(line).unwrap_err().code();
        assert_eq!(code(b""), ErrorCode::BadRequest);
        assert_eq!(code(b" get x"), ErrorCode::BadRequest);
        assert_eq!(code(b"get"), ErrorCode::BadRequest);
        assert_eq!(code(b"get "), ErrorCode::BadRequest);
        assert_eq!(code(b"quit now"), ErrorCode::BadRequest);
        assert_eq!(code(b"\xff\xfe"), ErrorCode::BadRequest);
        assert_eq!(code(b"fetch x"), ErrorCode::UnknownCommand);
        assert_eq!(code(b"get ../x"), ErrorCode::BadName);
        assert_eq!(code(b"get /etc/passwd"), ErrorCode::BadName);
        assert_eq!(code(b"get a\x1bb"), ErrorCode::BadName, "version 1 names hold no control character");
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
            for form in [Form::Plain, Form::Escaped] {
                assert_eq!(Request::parse(req.to_line(form).unwrap().as_bytes(), form), Ok(req.clone()));
            }
        }
    }
}
