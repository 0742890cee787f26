//! ft: a file-transfer server and client over a small text protocol on TCP.
//!
//! `ftserver` serves the files beneath one folder; `ftclient` lists them and downloads them
//! into a local folder. The server runs one `std::thread` per connection and keeps recently
//! requested files in a byte-capped in-memory cache that is mirrored on disk, so hits are sent
//! from memory and a restart does not start cold.
//!
//! # Layout
//! Each folder is one side of the system; imports run one way: binaries -> [`server`] /
//! [`client`] -> [`wire`], [`store`], `files` -> [`name`], [`escape`], [`digest`], [`delta`], [`compress`],
//! [`mtime`], [`fingerprint`], [`transport`]. No file imports one that imports it back (`tests/layout.rs` checks it).
//! - [`name`]: [`name::Name`], the checked relative file name both sides resolve paths with: any
//!   bytes but NUL, never a component that climbs; its wire forms and its form for people.
//! - [`escape`]: showing peer text on a terminal, and the printable token form the wire uses.
//! - [`digest`]: XXH3-128 digests of bytes and files, and their hex form on the wire.
//! - [`compress`]: zstd on the wire: the level and why, what is not worth trying, bounded frames.
//! - [`delta`]: delta transfer by rsync's method: block signatures, the rolling checksum, and the
//!   sender's scan that says a file as copies of the receiver's blocks and the bytes it lacks.
//! - [`mtime`]: [`mtime::Mtime`], a file's modification time, the one type for it on both sides.
//! - [`wire`]: requests and typed replies (the get header, rights, size and digest, entries,
//!   `Reply<T>`), each parser beside its formatter; the bounded line reader; numbers; escaping.
//! - [`fingerprint`]: a public key's SHA-256 fingerprint, as OpenSSH writes host-key ones.
//! - [`transport`]: the byte stream a connection runs over (plain TCP, or TLS as a server or a
//!   client), and whether it can take `sendfile`; buffered both ways over one owner, never split.
//! - `files`: the umask, naming an unnamed file, setting times, and private files, for both sides.
//! - [`store`]: the served folder: file versions, open and walk strictly beneath the root, store
//!   uploads (verified, atomic), the staging folder and interrupted uploads.
//! - [`server`]: a core that knows no syntax ([`server::Session`]: rights, and what `get` (with
//!   ranges), `sum`, `stat`, `health`, `partial`, `put` and `mkdir` mean, answered from the
//!   byte-capped cache and its mirror in `server_cache/`, the digest memo and the store), ft's
//!   text protocol as one speaker over it, the PROXY protocol in front, the listener and its
//!   limits, configuration, the TLS identity and tokens.
//! - [`client`]: a connection (TLS and whom to trust), listings, pipelined and verified downloads
//!   and uploads, the output folder's safe writes, `get -r`, the load generator behind
//!   `ftclient bench`.
//! - [`human`]: sizes and times for people.
//!
//! # Wire format in brief
//! ```text
//! hello VERSION [FEATURE...]\n  ->  OK <version> features=<f>,...\n   (optional, first request only;
//!                                   version 2 writes names escaped, and adds walk, stat, mkdir)
//! list [FOLDER]\n               ->  OK\n  then "<size> <mtime> <name>\n" per file, then OK <count>\n
//!                                   (feature list-end; without it: OK <count>\n first, then the entries)
//! get NAME\n                    ->  OK <size> xxh3=<digest> mode=<octal>\n  then <size> raw bytes
//! resume OFFSET PREFIX NAME\n   ->  OK <n> offset=<o> size=<size> xxh3=<digest>\n  then <n> bytes from <o>
//!                                   (feature trailer: the digest may come after the body instead,
//!                                   as OK xxh3=<digest>\n, or ERR changed ...\n)
//!                                   (or the whole file, as for get, if PREFIX does not match)
//! delta SIZE BLOCK NAME\n       ->  OK delta size=<size> mode=.. mtime=..\n  then records, then the trailer
//!   + the signature             (feature delta: a download said against the client's older copy)
//! stats\n                       ->  OK <count>\n  then <count> × "<key> <value>\n"
//! auth TOKEN\n                  ->  OK rights=read\n   (or ERR unauthorized; required first with an auth file)
//! quit\n                        ->  OK bye\n      and the connection closes
//! any error                     ->  ERR <code> <message>\n   (the connection stays usable)
//! ```
//! [`wire`] has the grammar, README's "Protocol" section the long form.

#![deny(unsafe_code)]

pub mod client;
pub mod compress;
pub mod delta;
pub mod digest;
pub mod escape;
mod files;
pub mod fingerprint;
pub mod human;
pub mod mtime;
pub mod name;
pub mod records;
pub mod server;
pub mod store;
pub mod transport;
pub mod wire;

/// ft's folder in the user's configuration, for the server's identity and the client's known
/// hosts: `$XDG_CONFIG_HOME/ft`, else `$HOME/.config/ft`, else `.ft` in the working folder.
pub fn config_folder() -> std::path::PathBuf {
    use std::path::PathBuf;
    let from = |var: &str| std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from);
    match (from("XDG_CONFIG_HOME"), from("HOME")) {
        (Some(config), _) => config.join("ft"),
        (None, Some(home)) => home.join(".config").join("ft"),
        (None, None) => PathBuf::from(".ft"),
    }
}

/// A server keeps an interrupted upload of this many bytes or more (in its staging folder), and
/// `partial` tells a sender how much of it is held, so sending the same file again continues
/// where the bytes stopped; a smaller one is sent again whole.
pub const RESUMABLE_FROM: u64 = 1 << 20;

/// The port both binaries use when none is given.
pub const DEFAULT_PORT: u16 = 9000;
