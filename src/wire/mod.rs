//! The wire protocol: requests (`request.rs`, `hello.rs`, `secret.rs`), typed replies (`reply.rs`:
//! [`Status`], [`Reply`], [`ErrorCode`] and stats lines; `header.rs`: the `get` header and the
//! digest trailer; `answer.rs`: the rights `auth` grants, the size and digest of `sum`, `put` and
//! `partial`, `health`'s readiness; `entry.rs`: list, walk and stat entries), the bounded line
//! reader and its limits (`line.rs`), and numbers and escaping of peer text (`text.rs`). Each
//! parser sits beside its formatter, and no reply text is written anywhere else in the crate
//! (`tests/layout.rs` checks it).
//!
//! Nothing here touches a file or a socket directly: parsing works on byte slices, formatting on
//! `impl Write`, and reading on `impl BufRead`, so the same code is tested in memory and used over
//! TCP. README's "Protocol" section is the long form of this summary:
//!
//! ```text
//! request  = verb [SP argument] LF          ; a CR before LF is dropped; verbs are case-insensitive
//!   hello VERSION [FEATURE...]              ; optional, first request only (see hello.rs)
//!   list [FOLDER]                           ; version 1: FOLDER and NAME are everything after the first space
//!   walk links|follow [FOLDER]              ; version 2: every entry, what it is, what could not be read
//!   get NAME
//!   resume OFFSET PREFIX-XXH3 NAME          ; continue a download (see README)
//!   stats
//!   sum NAME                                ; a file's size and digest, without its bytes
//!   stat NAME                               ; version 2: one entry, as walk writes it
//!   put SIZE XXH3|- MTIME MTIME_NS FROM new|replace [PERM] NAME   ; then the body (PERM: version 2)
//!   partial SIZE MTIME MTIME_NS new|replace NAME
//!   mkdir PERM MTIME MTIME_NS NAME          ; version 2: a folder, with its mode and time
//!   auth TOKEN                              ; present a token (a server with an auth file needs one)
//!   health
//!   quit
//! reply    = "OK" [SP fields] LF [payload]  |  "ERR" SP code SP message LF
//!   get   -> OK <size> xxh3=<digest> mode=<octal>                 then exactly <size> raw bytes
//!   resume-> OK <n> offset=<o> size=<size> xxh3=<digest> mode=<o> then the <n> = <size> - <o> bytes from <o>
//!            (offset and size only when o > 0: a prefix that does not match gets get's reply)
//!            with feature trailer, the xxh3 field may be missing: then the body is followed by
//!            OK xxh3=<digest>, or ERR changed if the file changed while it was sent
//!   hello -> OK <version> features=<f>,<f>
//!   list  -> OK                    then lines "<size> <mtime-unix-seconds> <name>", then OK <count>
//!            (feature list-end; the end may be an ERR: the listing is incomplete)
//!         -> OK <count>            then <count> lines "<size> <mtime-unix-seconds> <name>" (without it)
//!   walk  -> OK                    then entries "type=.. key=value..\t<name>" (see MetaEntry), then OK <count>
//!   stats -> OK <count>            then <count> lines "<key> <value>"
//!   auth  -> OK rights=<read|read,write>, or ERR unauthorized
//!   sum   -> OK <size> xxh3=<digest>
//!   stat  -> OK type=.. key=value..\t<name>   (one entry, as walk writes it)
//!   put   -> OK <size> xxh3=<digest>            (once stored and checked; see README for the body)
//!   partial -> OK <held> xxh3=<digest of the held bytes>
//!   mkdir -> OK
//!   health -> OK ready, or ERR draining (then the server closes the connection)
//!   quit  -> OK bye                then the server closes the connection
//! ```
//!
//! Names are written in the connection's [`Form`]: as they are in version 1 (which cannot carry
//! control characters or bytes that are not UTF-8), escaped in version 2 (one printable token,
//! `%HH` for what is not; see `name.rs`).
//!
//! Numbers are plain decimal. Fields after the first on an `OK` line are `key=value` pairs that a
//! reader must ignore when it does not know them, so later versions can add them (a digest, a
//! resume offset) without breaking older clients.

mod answer;
mod delta;
mod entry;
mod header;
mod hello;
mod line;
mod reply;
mod request;
mod secret;
mod text;

pub use answer::{Ready, Rights, Summed};
pub use delta::{DeltaHeader, MAX_RECORD, Record, SignatureHeader};
pub use entry::{EntryKind, ListEntry, MetaEntry};
pub use header::{GetHeader, PutTrailer, parse_trailer, write_trailer};
pub use hello::{
    Agreed, FEATURE_LIST_END, FEATURE_LIST_META, FEATURE_PUT, FEATURE_TRAILER, Feature, Form, Hello, PROTOCOL_VERSION,
    SERVER_FEATURES,
};
pub use line::{MAX_REPLY_LINE, MAX_REQUEST_LINE, MAX_TARGET_LEN, ProtocolError, read_line, read_line_with};
pub use reply::{
    ErrorCode, ErrorReply, Reply, Status, UnknownCode, is_status_line, parse_count, parse_stat, parse_status,
    read_status, write_bye, write_err, write_ok, write_ok_count, write_stat,
};
pub use request::{PLAIN_PUT_PERM, Request, RequestError, Unsayable};
pub use secret::Secret;
pub use text::{escape, parse_u64};
