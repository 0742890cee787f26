//! Uploads said as records (`patch`, feature `patch`): where the server has an older copy, it
//! gives that copy's signature (`signature`) and the file goes as copies of its blocks and the
//! bytes it lacks; where it has none and compression is on, the whole file goes as records,
//! compressed where that pays. The server rebuilds the file, checks it against the digest that
//! follows the records, and stores it as any upload; one whose rebuild fails the check is
//! refused `changed`, and sent again whole (`upload.rs`).
//!
//! The signature is checked as it is read: a shape out of bounds is refused before a byte of it
//! is taken, so a hostile server cannot make the client hold more than `delta::MAX_BLOCKS`
//! entries.

use std::cell::Cell;
use std::io::{self, Read};

use super::conn::Client;
use super::delta::DELTA_FROM;
use super::local::Outgoing;
use super::result::ClientError;
use crate::compress::{Packer, is_packed_name};
use crate::delta::matcher::{Index, scan};
use crate::delta::{MIN_BLOCK, Shape, Signature};
use crate::digest::Hasher;
use crate::name::Name;
use crate::records::{At, Hashing, RecordWriter};
use crate::wire::{Feature, PutTrailer, Record, Request};

/// What a patch upload did not need to send.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Spared {
    /// Bytes the server took from its copy.
    pub(super) reused: u64,
    /// Bytes compression spared.
    pub(super) compressed: u64,
}

/// How one upload is to go.
pub(super) enum How {
    /// As a `put`: its bytes as they are.
    Put,
    /// As a `patch` against the server's copy, whose signature this is.
    Delta(Signature),
    /// As a `patch` with no copy: the whole file as records, compressed where that pays.
    Compressed,
}

impl Client {
    /// Whether an upload of a file of `size` bytes, that the server holds at `theirs` bytes (if
    /// it does), is worth asking the server's signature for.
    pub(super) fn wants_signature(&mut self, size: u64, theirs: Option<u64>) -> Result<bool, ClientError> {
        let worth = self.delta && size >= DELTA_FROM && theirs.is_some_and(|t| t >= DELTA_FROM);
        Ok(worth && self.agreed()?.has(Feature::Patch))
    }

    /// Whether an upload of `outgoing` as `name` goes compressed (a big file, not compressed
    /// already, to a server that takes patches and compression).
    pub(super) fn compresses(&mut self, outgoing: &Outgoing, name: &Name) -> Result<bool, ClientError> {
        if !self.compress || outgoing.whole.is_some() || is_packed_name(name.as_bytes()) {
            return Ok(false);
        }
        let agreed = self.agreed()?;
        Ok(agreed.has(Feature::Patch) && agreed.has(Feature::Zstd))
    }

    /// Sends one `patch` of `outgoing` as `name`: against `signature` (the server's copy), or
    /// with none, the whole file as records. The records end with the whole file's digest, or
    /// with `abort` if the file changed or shrank while it was read (a shrunk file's missing
    /// bytes are sent as zeros first, so the connection stays in step).
    pub(super) fn send_patch(
        &mut self,
        outgoing: &Outgoing,
        name: &Name,
        signature: Option<Signature>,
        replace: bool,
    ) -> Result<Spared, ClientError> {
        let Outgoing { ref file, size, mtime, perm, .. } = *outgoing;
        let none = || Signature { shape: Shape { size: 0, block: MIN_BLOCK }, sums: Vec::new() };
        let signature = signature.unwrap_or_else(none);
        let base = signature.shape;
        let packs = self.agreed()?.has(Feature::Zstd) && self.compress && !is_packed_name(name.as_bytes());
        if packs && self.packer.is_none() {
            self.packer = Some(Packer::new().map_err(ClientError::from)?);
        }
        self.send(&Request::Patch { base, size, mtime, replace, perm, name: name.clone() })?;
        if let Some(progress) = &self.progress {
            progress.begin(name, size);
        }
        let index = Index::new(signature);
        let mut hasher = Hasher::default();
        // A local read that fails ends the file early; it is then given up on (`abort`).
        let unreadable = Cell::new(false);
        let mut reading = Local { at: At::new(file, size), failed: &unreadable, progress: self.progress.as_deref() };
        // Out of step until the records and the trailer are written.
        self.broken = true;
        let mut out = RecordWriter::new(&mut self.stream, self.packer.as_mut().filter(|_| packs));
        let scanned = scan(&index, &mut Hashing(&mut reading, &mut hasher), |op| out.say(op))?;
        let mut said = scanned.total;
        if said < size {
            let zeros = vec![0u8; 64 << 10];
            while said < size {
                let n = (size - said).min(zeros.len() as u64) as usize;
                out.say(crate::delta::matcher::Op::Literal(&zeros[..n]))?;
                said += n as u64;
            }
        }
        out.flush()?;
        let spared = Spared { reused: scanned.copied, compressed: out.spared };
        Record::End { size }.write(&mut self.stream)?;
        let whole = scanned.total == size && !unreadable.get() && outgoing.unchanged();
        let trailer = if whole { PutTrailer::Digest(hasher.digest()) } else { PutTrailer::Abort };
        io::Write::write_all(&mut self.stream, format!("{trailer}\n").as_bytes())?;
        self.broken = false;
        Ok(spared)
    }
}

/// The local file read for a patch, its progress shown; a read error ends it (noted in `failed`).
struct Local<'a, 'f> {
    at: At<'f>,
    failed: &'a Cell<bool>,
    progress: Option<&'a dyn super::conn::Progress>,
}

impl Read for Local<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.at.read(buf) {
            Ok(n) => {
                if let Some(progress) = self.progress {
                    progress.advance(n as u64);
                }
                Ok(n)
            }
            Err(_) => {
                self.failed.set(true);
                Ok(0)
            }
        }
    }
}
