//! ft's own speaker: its text protocol over TLS or plain TCP, one [`Connection`] per client.
//! `conn.rs` sets a connection up and runs its command loop, saying each verb's answer in ft's
//! words over a [`Session`](crate::server::Session); `put.rs` reads uploads off it; `delta.rs` reads a signature and says a delta; `list.rs`
//! writes listings as the folder is walked; `sink.rs` sends bodies (by `sendfile` where it can);
//! `error.rs` says why a connection ended.

mod conn;
mod delta;
mod error;
mod list;
mod put;
mod sink;

pub(crate) use conn::{Connection, Speaker};
pub use list::SORTED_UP_TO;
