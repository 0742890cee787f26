//! The core under every speaker: one client's standing with the server (the token it presented
//! and what that allows, an interrupted upload it is resuming) and what each verb means for it.
//! A speaker (ft's text protocol in `ft/`; a pipe under ssh or HTTP later) parses its own syntax,
//! asks a [`Session`], and says the answer its own way; it never touches the cache, the digest
//! memo or the staging folder itself. Nothing here reads or writes a line of text.
//!
//! The verbs live beside this file: `get.rs` (and `hashing.rs`, `send.rs`) for downloads,
//! `upload.rs` for `partial`, `put` and `mkdir`; the rest are short enough to live here.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::auth::{Refused, TokenEntry};
use super::delta::{self, DeltaAnswer};
use super::get::{self, Answer, Part};
use super::refusal::Refusal;
use super::shared::{Shared, Stat, addr_key};
use crate::delta::Signature;
use crate::mtime::Mtime;
use crate::name::Name;
use crate::store::{FileEntry, Kind, Partial};
use crate::wire::{EntryKind, ErrorCode, MetaEntry, Rights, Secret, Summed};

/// What a request is told that needs a token first.
const NEEDS_TOKEN: &str = "this server needs a token (ftclient: FT_TOKEN or --token-file; on the wire: auth TOKEN)";

/// One client's standing with the server, across its requests.
pub struct Session<'a> {
    pub(super) shared: &'a Shared,
    pub(super) peer: SocketAddr,
    /// The token presented, if any (checked again on each request: see [`Session::recheck`]).
    pub(super) token: Option<TokenEntry>,
    /// What that token allows now.
    pub(super) rights: Option<Rights>,
    /// The interrupted upload a `partial` found (its name, size and time), held for the `put`
    /// that follows.
    pub(super) partial: Option<(Name, u64, Mtime, Partial)>,
}

/// A token refused.
#[derive(Debug)]
pub struct AuthFailed {
    pub why: Refused,
    /// How long to wait before saying so (failures from one address are answered ever slower).
    pub delay: Duration,
    /// The address failed too often: the connection is to end once this is said.
    pub cut_off: bool,
}

impl<'a> Session<'a> {
    pub(crate) fn new(shared: &'a Shared, peer: SocketAddr) -> Session<'a> {
        Session { shared, peer, token: None, rights: None, partial: None }
    }

    /// The address requests come from (the client's, where a trusted proxy named it).
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Whether this address was cut off for failed tokens: its first request is answered so.
    pub fn is_cut_off(&self) -> bool {
        self.shared.auth.is_some() && self.shared.auth_failures.is_cut_off(addr_key(self.peer.ip()), Instant::now())
    }

    /// Why a request other than setting up, leaving, `auth` and `health` is refused before a token
    /// is presented, if the server needs one.
    pub fn needs_token(&self) -> Option<Refusal> {
        (self.shared.auth.is_some() && self.token.is_none()).then(|| Refusal::new(ErrorCode::Unauthorized, NEEDS_TOKEN))
    }

    /// The name of the token presented, for logs.
    pub fn token_name(&self) -> Option<&str> {
        self.token.as_ref().map(|t| t.name.as_str())
    }

    /// Checks a token (`auth`): the rights it grants (reading, on a server without tokens).
    pub fn authenticate(&mut self, token: &Secret) -> Result<Rights, AuthFailed> {
        let Some(file) = &self.shared.auth else { return Ok(Rights::READ) };
        let key = addr_key(self.peer.ip());
        match file.check(token) {
            Ok(entry) => {
                info!(peer = %self.peer, token = %entry.name, "authenticated");
                self.shared.auth_failures.succeeded(key);
                let rights = entry.rights;
                self.rights = Some(rights);
                self.token = Some(entry);
                Ok(rights)
            }
            Err(why) => {
                self.shared.auth_failed.fetch_add(1, Ordering::Relaxed);
                let (delay, cut_off) =
                    self.shared.auth_failures.failed(key, Instant::now(), self.shared.config.auth_delay);
                warn!(peer = %self.peer, "auth failed: {why}");
                Err(if cut_off {
                    AuthFailed { why: Refused::CutOff, delay, cut_off }
                } else {
                    AuthFailed { why, delay, cut_off }
                })
            }
        }
    }

    /// Checks that the token presented is still in the auth file with the same secret, and takes
    /// its rights as they are now; else the session is as if it had presented none (and the
    /// revocation is logged once). Speakers call it before each request.
    pub fn recheck(&mut self) {
        let (Some(file), Some(token)) = (&self.shared.auth, &self.token) else { return };
        match file.still_valid(token) {
            Some(rights) => self.rights = Some(rights),
            None => {
                info!(peer = %self.peer, token = %token.name, "token revoked: the connection needs a token again");
                self.token = None;
                self.rights = None;
            }
        }
    }

    /// Whether the session may write (a token with the write right).
    pub(super) fn may_write(&self) -> bool {
        self.rights.is_some_and(|r| r.write)
    }

    /// Answers a download of `part` of `name`: its header and body, from the cache or the disk.
    /// With `trailer`, the digest may follow the body instead of leading it.
    pub fn get(&self, name: &Name, part: Part, trailer: bool) -> Result<Answer<'a>, Refusal> {
        get::answer(self.shared, name, part, trailer, &self.peer)
    }

    /// Answers a delta download of `name` against the asker's `signature` of its older copy.
    pub fn delta(&self, name: &Name, signature: Signature) -> Result<DeltaAnswer<'a>, Refusal> {
        delta::answer(self.shared, name, signature, &self.peer)
    }

    /// Answers `signature`: the signature of the server's copy of `name`, for a `patch`.
    pub fn signature(&self, name: &Name) -> Result<Signature, Refusal> {
        delta::signature(self.shared, name)
    }

    /// Answers `sum`: a file's size and digest, without its bytes.
    pub fn sum(&self, name: &Name) -> Result<Summed, Refusal> {
        get::sum(self.shared, name).map(|(size, digest)| Summed { size, digest })
    }

    /// Answers `stat`: one entry, as `walk` describes it.
    pub fn stat(&self, name: &Name) -> Result<MetaEntry, Refusal> {
        match self.shared.root.lookup(name) {
            Ok(entry) => Ok(meta_entry(entry)),
            Err(e) => Err(Refusal::new(get::open_error_code(&e), e)),
        }
    }

    /// Answers `health`: ready, or draining (shutting down: no new clients).
    pub fn health(&self) -> Result<(), Refusal> {
        match self.shared.shutdown.get() {
            Some(s) if s.is_draining() => Err(Refusal::new(ErrorCode::Draining, "shutting down: no new clients")),
            _ => Ok(()),
        }
    }

    /// Answers `stats`: every figure, in order.
    pub fn stats(&self) -> Vec<Stat> {
        self.shared.stats()
    }

    /// Counts a request in `stats`.
    pub fn count_request(&self) {
        self.shared.requests.fetch_add(1, Ordering::Relaxed);
    }
}

/// A store entry as the wire writes it.
pub(crate) fn meta_entry(entry: FileEntry) -> MetaEntry {
    let FileEntry { name, kind, size, mtime, mode } = entry;
    let kind = match kind {
        Kind::File => EntryKind::File,
        Kind::Folder => EntryKind::Folder,
        Kind::Symlink(target) => EntryKind::Symlink(target),
        Kind::Fifo => EntryKind::Fifo,
        Kind::Socket => EntryKind::Socket,
        Kind::CharDevice => EntryKind::CharDevice,
        Kind::BlockDevice => EntryKind::BlockDevice,
    };
    MetaEntry { kind, size, mtime, mode, name }
}
