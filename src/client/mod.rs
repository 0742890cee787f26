//! The client: one connection, the requests over it, and saving downloads safely.
//!
//! A [`Client`] speaks the protocol over one connection (a [`Transport`](crate::transport::Transport), read and written by one
//! owner, never split) and never trusts it: status lines and list entries are parsed strictly, a body is read to exactly its announced size through a
//! fixed buffer (a body that ends early is an error, bytes beyond it are never written), and
//! every body is hashed as it streams in and checked against the digest the server announced
//! (in the header, or in a trailer after the body when the server had not hashed the file yet).
//!
//! Downloads go through an [`OutDir`]. A large file streams into `<name>.part`, renamed to `<name>`
//! only once complete and verified; a failed transfer leaves no file under the final name and never
//! destroys an existing copy, an interrupted one keeps its `.part` so `resume` can continue it, and
//! one that fails verification deletes it. A small file is read whole, verified in memory, and
//! handed to writer threads (`saver.rs`) that save it in one step, so the receive loop never waits
//! on the file system for it.
//!
//! [`Client::download_all`] pipelines: it keeps a window of requests in flight on the connection,
//! so many small files cost one round trip in all rather than one each.
//!
//! The files: `conn.rs` (the connection, its requests and replies, and when it is out of step),
//! `connect.rs` (connecting, TLS), `trust.rs` (whom to trust), `listing.rs` (listings, walks,
//! `stat`, `sum`, `stats`), `download.rs` (the download pipeline), `outdir.rs`, `part.rs` and
//! `saver.rs` (saving safely, a file being saved, and the writer threads), `upload.rs` and
//! `local.rs` (uploads as a sync, and what they read), `tree.rs` and `listed.rs` (`get -r`, and the
//! names its listings found), `result.rs` (what each call returns and why it failed), `bench.rs`
//! (the load generator).

mod awaited;
pub mod bench;
mod conn;
mod connect;
mod delta;
mod download;
mod listed;
mod listing;
mod local;
mod outdir;
mod part;
mod patch;
mod result;
mod saver;
pub mod tree;
pub mod trust;
mod upload;
mod window;

pub use conn::{CLIENT_FEATURES, Client, Interrupter, Progress};
pub use connect::{DEFAULT_HOST, DEFAULT_TIMEOUT, tls_handshake};
pub use download::DEFAULT_OUTPUT;
pub use listing::{MAX_LIST_KEPT, MAX_STATS};
pub use local::{LocalFile, LocalFolder, LocalTree, Skipped, local_tree};
pub use outdir::{Local, OutDir};
pub use part::{PART_SUFFIX, Partial};
pub use result::{ClientError, Downloaded, KeyMismatch, Uploaded};
pub use saver::SMALL_FILE;
pub use saver::WRITERS;
pub use upload::{Put, PutOptions, RESUMABLE_FROM, Remote};
pub use window::{MAX_WINDOW, WINDOW};
