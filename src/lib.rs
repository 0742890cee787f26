//! ft: a file-transfer server and client over a small text protocol on TCP.
//!
//! `ftserver` serves the files beneath one folder; `ftclient` lists them and downloads them
//! into a local folder. The server runs one `std::thread` per connection and keeps recently
//! requested files in a byte-capped in-memory cache that is mirrored on disk, so hits are sent
//! from memory and a restart does not start cold.
//!
//! # Layout
//! - [`protocol`]: request and reply types, parsers beside formatters, the bounded line reader.
//! - [`name`]: [`name::Name`], the checked relative file name both sides resolve paths with.
//! - [`root`]: the served folder: stat, open and list strictly beneath it.
//! - [`cache`]: the byte-capped, TTL-bounded cache and its admission rules.
//! - [`mirror`]: the cache's on-disk copy in `server_cache/`.
//! - [`server`]: configuration, accept loop, per-connection command loop.
//! - [`client`]: one connection's requests, pipelined and verified.
//! - [`bench`]: the load generator behind `ftclient bench`.
//! - [`human`]: sizes and times for people.
//! - `outdir`: saving downloads beneath the output folder ([`client::OutDir`]).
//!
//! # Wire format in brief
//! ```text
//! list [FOLDER]\n  ->  OK <count>\n  then <count> × "<size> <mtime> <name>\n"
//! get NAME\n       ->  OK <size>\n   then <size> raw bytes
//! stats\n          ->  OK <count>\n  then <count> × "<key> <value>\n"
//! quit\n           ->  OK bye\n      and the connection closes
//! any error        ->  ERR <code> <message>\n   (the connection stays usable)
//! ```

pub mod bench;
pub mod cache;
pub mod client;
mod conn;
pub mod digest;
pub mod human;
pub mod mirror;
pub mod name;
mod outdir;
pub mod protocol;
pub mod root;
pub mod server;

/// The port both binaries use when none is given.
pub const DEFAULT_PORT: u16 = 9000;
