//! What an upload means, for every speaker: whether it may happen here (found before a byte of
//! its body is read), how much of an interrupted one is held (`partial`), storing it through the
//! store's staging folder, and what each outcome is told. Folders (`mkdir`) are uploads of no
//! bytes. How a body is read off the wire is the speaker's (ft's is in `ft/put.rs`).

use std::io::Read;
use std::sync::atomic::Ordering;

use tracing::info;

use super::refusal::Refusal;
use super::session::Session;
use super::shared::addr_key;
use crate::digest::Digest;
use crate::mtime::Mtime;
use crate::name::Name;
use crate::store::{Expected, Partial, PutError, STAGING, Stored, Upload, is_reserved};
use crate::wire::{ErrorCode, Summed};

/// A refused upload's body up to this size is read and dropped, and the connection goes on;
/// past it the connection ends rather than take bytes it will not keep.
pub(crate) const SKIP_REFUSED_UP_TO: u64 = 1 << 20;

/// An upload's fields but its name and body.
#[derive(Debug, Clone, Copy)]
pub struct Offer {
    pub size: u64,
    /// Modification time (seconds, nanoseconds).
    pub mtime: Mtime,
    /// The sender's permission bits.
    pub perm: u32,
    /// Whether the sender asked to replace a file of that name.
    pub replace: bool,
}

/// What a `patch` upload did not need to carry.
#[derive(Debug, Clone, Copy, Default)]
pub struct Patched {
    /// Said against a copy (else the whole file came as records).
    pub delta: bool,
    /// Bytes taken from the server's copy.
    pub reused: u64,
    /// Bytes compression spared.
    pub spared: u64,
}

/// How an upload that was read went wrong.
#[derive(Debug)]
pub enum PutFailed {
    /// Refused, with the session and the stream in step.
    Refused(Refusal),
    /// The body or its trailer could not be read as announced: the stream is out of step.
    Broken(PutError),
}

/// What an upload is told when its name is taken (the sender knows the name).
pub(crate) fn exists_message(asked_to_replace: bool) -> &'static str {
    if asked_to_replace {
        "it exists and differs, and this server does not replace files (ftserver --allow-overwrite)"
    } else {
        "it exists (ftclient put --force replaces it, where the server allows)"
    }
}

impl Session<'_> {
    /// Whose uploads these are, for the staging folder's share per sender: the token's name, or
    /// without tokens the peer's address.
    pub(crate) fn owner(&self) -> String {
        match &self.token {
            Some(token) => format!("token {}", token.name),
            None => format!("address {}", addr_key(self.peer.ip())),
        }
    }

    /// Whether the server replaces files when asked to.
    pub fn replaces(&self) -> bool {
        self.shared.config.allow_overwrite
    }

    /// Why an upload of `offer.size` bytes as `name` may not happen here, found before any of its
    /// bytes is read: uploads off, no write right, outside the upload folder, too big, no room, or
    /// (when it may not replace) the name taken. `small` bodies are read anyway, so a taken name
    /// is left for storing to find (one lookup fewer per small file).
    pub fn upload_refusal(&self, offer: &Offer, name: &Name) -> Option<Refusal> {
        let shared = self.shared;
        let config = &shared.config;
        let refuse = |code, message: &dyn std::fmt::Display| Some(Refusal::new(code, message));
        if let Some(refusal) = self.needs_token() {
            return Some(refusal);
        }
        if !config.allow_upload {
            return refuse(ErrorCode::Denied, &"this server takes no uploads (ftserver --allow-upload)");
        }
        if shared.auth.is_some() && !self.may_write() {
            return refuse(ErrorCode::Unauthorized, &"this token may not upload (ftserver token add NAME --write)");
        }
        if shared.auth.is_none() && !self.peer.ip().to_canonical().is_loopback() {
            return refuse(ErrorCode::Unauthorized, &"without an auth file, uploads are taken from this machine only");
        }
        if let Some(folder) = &config.upload_folder
            && !name.is_beneath(folder)
        {
            return refuse(ErrorCode::Denied, &format_args!("uploads go beneath {folder}/ on this server"));
        }
        if is_reserved(name) {
            return refuse(ErrorCode::Denied, &format_args!("{STAGING} is where uploads are staged"));
        }
        let size = offer.size;
        if size > config.max_upload {
            let most = config.max_upload;
            return refuse(ErrorCode::TooBig, &format_args!("{size} bytes is more than this server takes ({most})"));
        }
        // A taken name is found before a big body; a small one is read, and the name's
        // `linkat` tells (one lookup fewer per small file).
        if !(offer.replace && config.allow_overwrite) && size > SKIP_REFUSED_UP_TO && shared.root.holds(name) {
            return refuse(ErrorCode::Exists, &exists_message(offer.replace));
        }
        if let Err(full) = shared.root.staging_room(name, size, offer.mtime, &self.owner()) {
            return refuse(ErrorCode::NoSpace, &full);
        }
        match shared.root.free_bytes() {
            Ok(free) if free < size => refuse(ErrorCode::NoSpace, &format_args!("{size} bytes to store, {free} free")),
            Ok(_) => None,
            Err(e) => refuse(ErrorCode::Internal, &format_args!("cannot read the free space: {e}")),
        }
    }

    /// Answers `partial`: how much of an interrupted upload of this very file (name, size and
    /// modification time) is held, and those bytes' digest; it stays held for the session's next
    /// upload.
    pub fn partial(&mut self, offer: &Offer, name: &Name) -> Result<Summed, Refusal> {
        self.partial = None;
        if let Some(refusal) = self.upload_refusal(offer, name) {
            return Err(refusal);
        }
        match self.shared.root.partial(name, offer.size, offer.mtime) {
            Ok(held) => {
                let (len, prefix) = held.as_ref().map_or((0, Digest::of(b"")), |p| (p.held(), p.digest()));
                if len > 0 {
                    info!(peer = %self.peer, %name, held = len, size = offer.size, "upload to resume");
                }
                self.partial = held.map(|p| (name.clone(), offer.size, offer.mtime, p));
                Ok(Summed { size: len, digest: prefix })
            }
            Err(e @ (PutError::NotFolder(_) | PutError::Reserved)) => Err(Refusal::new(ErrorCode::Denied, e)),
            Err(e) => Err(Refusal::new(ErrorCode::Internal, e)),
        }
    }

    /// The interrupted upload `partial` held, if it was of this very file; it is let go either way.
    pub fn take_partial(&mut self, name: &Name, offer: &Offer) -> Option<Partial> {
        match self.partial.take() {
            Some((n, s, m, p)) if (&n, s, m) == (name, offer.size, offer.mtime) => Some(p),
            _ => None,
        }
    }

    /// Stores an upload whose body (`offer.size - from` bytes; those before `from` are held in
    /// `partial`) is read from `body`, checked against `expected`, and answers it
    /// (`Session::stored`).
    pub fn put(
        &self,
        name: &Name,
        offer: &Offer,
        expected: Expected<'_>,
        body: &mut dyn Read,
        (from, partial): (u64, Option<Partial>),
    ) -> Result<Summed, PutFailed> {
        let replace = offer.replace && self.replaces();
        let owner = self.owner();
        let up = Upload { name, len: offer.size, mtime: offer.mtime, perm: offer.perm, replace, owner: &owner };
        let stored = self.shared.root.put(&up, expected, body, from, partial);
        self.stored(name, offer, stored)
    }

    /// Stores an upload said as records against the server's copy (`patch`): `body` gives the
    /// rebuilt file's bytes, having taken `saved` (see [`Patched`]) from that copy and from
    /// compression, and is checked against the digest `expected` gives as any upload is. A
    /// rebuild that fails the check is refused as `changed` (the copy changed after its
    /// signature was made, or blocks matched by mistake), for the sender to send it whole.
    pub fn patch<B: Read>(
        &self,
        name: &Name,
        offer: &Offer,
        expected: Expected<'_>,
        body: &mut B,
        partial: Option<Partial>,
        saved: impl FnOnce(&B) -> Patched,
    ) -> Result<Summed, PutFailed> {
        let replace = offer.replace && self.replaces();
        let owner = self.owner();
        let up = Upload { name, len: offer.size, mtime: offer.mtime, perm: offer.perm, replace, owner: &owner };
        let stored = self.shared.root.put(&up, expected, body, 0, partial);
        let saved = saved(body);
        match stored {
            Err(e @ PutError::Mismatch { .. }) => {
                info!(peer = %self.peer, %name, size = offer.size, "patch refused: {e}");
                let why = "the rebuilt file does not match its digest (the server's copy changed?); send it whole";
                Err(PutFailed::Refused(Refusal::new(ErrorCode::Changed, why)))
            }
            Ok(stored) => {
                let shared = self.shared;
                shared.delta_puts.fetch_add(u64::from(saved.delta), Ordering::Relaxed);
                shared.delta_bytes_saved.fetch_add(saved.reused, Ordering::Relaxed);
                shared.bytes_compressed_saved.fetch_add(saved.spared, Ordering::Relaxed);
                self.stored_moved(name, offer, Ok(stored), offer.size - saved.reused - saved.spared)
            }
            other => self.stored(name, offer, other),
        }
    }

    /// What an upload of `name` that was read and stored (or refused) is told; a stored one is
    /// counted, logged, and forgotten by the cache and the digest memo.
    pub(crate) fn stored(
        &self,
        name: &Name,
        offer: &Offer,
        stored: Result<Stored, PutError>,
    ) -> Result<Summed, PutFailed> {
        let moved = offer.size - stored.as_ref().map_or(0, |s| s.from);
        self.stored_moved(name, offer, stored, moved)
    }

    /// [`Session::stored`] for an upload whose body moved `moved` bytes over the wire.
    fn stored_moved(
        &self,
        name: &Name,
        offer: &Offer,
        stored: Result<Stored, PutError>,
        moved: u64,
    ) -> Result<Summed, PutFailed> {
        let size = offer.size;
        let refused = |code, why: &dyn std::fmt::Display| {
            info!(peer = %self.peer, %name, size, "upload refused: {why}");
            Err(PutFailed::Refused(Refusal::new(code, why)))
        };
        match stored {
            Ok(stored) => {
                let shared = self.shared;
                shared.cache.forget(name);
                shared.digests.forget(name);
                shared.uploads.fetch_add(1, Ordering::Relaxed);
                shared.bytes_received.fetch_add(moved, Ordering::Relaxed);
                let token = self.token_name().unwrap_or("-");
                info!(peer = %self.peer, token = %token, %name, size, from = stored.from, moved, "uploaded");
                Ok(Summed { size, digest: stored.digest })
            }
            Err(e @ (PutError::Short { .. } | PutError::Body(_) | PutError::BadTrailer)) => Err(PutFailed::Broken(e)),
            Err(e @ PutError::Aborted) => refused(ErrorCode::Changed, &e),
            Err(PutError::Exists) => refused(ErrorCode::Exists, &exists_message(offer.replace)),
            Err(e @ PutError::Mismatch { .. }) => refused(ErrorCode::BadRequest, &e),
            Err(e @ (PutError::NotFolder(_) | PutError::Reserved)) => refused(ErrorCode::Denied, &e),
            Err(e @ PutError::NoPartial(_)) => refused(ErrorCode::Changed, &e),
            Err(PutError::Io(e)) if e.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()) => {
                refused(ErrorCode::NoSpace, &"the disk filled up")
            }
            Err(e @ PutError::StagingFull(_)) => refused(ErrorCode::NoSpace, &e),
            Err(PutError::Io(e)) if is_folder_error(&e) => {
                refused(ErrorCode::Denied, &"a folder holds that name on the server")
            }
            Err(e) => refused(ErrorCode::Internal, &e),
        }
    }

    /// Answers `mkdir`: refused as an upload of no bytes would be, else the folder is made (or
    /// found) and given the sender's mode and time.
    pub fn mkdir(&self, perm: u32, mtime: Mtime, name: &Name) -> Result<(), Refusal> {
        let offer = Offer { size: 0, mtime, perm, replace: true };
        if let Some(refusal) = self.upload_refusal(&offer, name) {
            return Err(refusal);
        }
        match self.shared.root.make_folder(name, perm, mtime) {
            Ok(()) => Ok(()),
            Err(e @ (PutError::NotFolder(_) | PutError::Reserved)) => Err(Refusal::new(ErrorCode::Denied, e)),
            Err(PutError::Io(e)) if e.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()) => {
                Err(Refusal::new(ErrorCode::NoSpace, "the disk is full"))
            }
            Err(e) => Err(Refusal::new(ErrorCode::Internal, e)),
        }
    }
}

/// Whether storing failed because a folder holds the name.
fn is_folder_error(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    matches!(e.raw_os_error(), Some(n) if n == Errno::ISDIR.raw_os_error() || n == Errno::NOTEMPTY.raw_os_error())
}
