//! Records on an ft connection, both ways. `delta`: the signature read off the wire after its
//! line (always, so the connection stays in step whatever the answer), then the session's
//! answer said as records, each compressed where the connection agreed to `zstd` and it pays
//! (see `records.rs`). `signature` and `patch`: the server's signature of its copy, and an
//! upload said as records against it, rebuilt as it is read and stored as any upload is; a
//! refused one's records are read and dropped, so the connection stays in step.

use std::cell::{Cell, RefCell};
use std::io::{self, Write};
use std::sync::atomic::Ordering;

use tracing::info;

use super::conn::Connection;
use super::error::ConnError;
use super::put::{read_put_trailer, skip_put_trailer};
use crate::compress::{Packer, is_packed_name};
use crate::delta::{Shape, Signature};
use crate::name::Name;
use crate::records::{Rebuild, RecordWriter};
use crate::server::refusal::Refusal;
use crate::server::upload::{Offer, Patched, PutFailed, SKIP_REFUSED_UP_TO};
use crate::store::Expected;
use crate::wire::{self as protocol, ErrorCode, Feature, Record, SignatureHeader};

impl Connection<'_> {
    /// Serves `delta SIZE BLOCK NAME` and the signature that follows it.
    pub(super) fn delta(&mut self, shape: Shape, name: &Name) -> Result<(), ConnError> {
        let signature = match Signature::read(shape, &mut self.stream) {
            Ok(signature) => signature,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(ConnError::Truncated),
            Err(e) => return Err(e.into()),
        };
        // Not asked before the signature was read: a refusal must leave the stream in step.
        if let Some(refusal) = self.session.needs_token() {
            return self.refuse(&refusal);
        }
        let answer = match self.session.delta(name, signature) {
            Ok(answer) => answer,
            Err(refusal) => return self.refuse(&refusal),
        };
        let packs = self.agreed.has(Feature::Zstd) && !is_packed_name(name.as_bytes());
        if packs && self.packer.is_none() {
            self.packer = Some(Packer::new()?);
        }
        answer.header().write(&mut self.stream)?;
        self.stream.flush()?;
        let mut out = RecordWriter::new(&mut self.stream, self.packer.as_mut().filter(|_| packs));
        let sent = answer.send(|op| out.say(op));
        let flushed = out.flush();
        let (went, spared) = (out.went, out.spared);
        self.bytes += went;
        self.shared().bytes_sent.fetch_add(went, Ordering::Relaxed);
        self.shared().bytes_compressed_saved.fetch_add(spared, Ordering::Relaxed);
        let end = sent.end?;
        flushed?;
        Record::End { size: sent.scanned.total }.write(&mut self.stream)?;
        match end {
            Ok(digest) => Ok(protocol::write_trailer(&mut self.stream, digest)?),
            Err(refusal) => self.refuse(&refusal),
        }
    }

    /// Serves `signature NAME`: the signature of the server's copy.
    pub(super) fn signature(&mut self, name: &Name) -> Result<(), ConnError> {
        match self.session.signature(name) {
            Ok(signature) => {
                SignatureHeader(signature.shape).write(&mut self.stream)?;
                let bytes = signature.to_bytes();
                self.stream.write_all(&bytes)?;
                self.bytes += bytes.len() as u64;
                Ok(())
            }
            Err(refusal) => self.refuse(&refusal),
        }
    }

    /// Serves `patch`: refused (its records then read and dropped, reading nothing from any copy)
    /// where a `put` would be, or where the server's copy is no longer of the size its signature
    /// said; else the file is rebuilt from the records and the copy as they are read, and stored
    /// as a `put -` is. Records that do not fit the copy or the size end the connection, as a
    /// body cut short does. Returns false when the connection is to close.
    pub(super) fn patch(&mut self, base: Shape, offer: Offer, name: Name) -> Result<bool, ConnError> {
        let partial = self.session.take_partial(&name, &offer);
        let size = offer.size;
        let against = (base.size > 0).then_some(base);
        let mut refusal = self.session.needs_token().or_else(|| self.session.upload_refusal(&offer, &name));
        let mut copy = None;
        if refusal.is_none() && base.size > 0 {
            match self.shared().root.open_file(&name) {
                Ok((file, version)) if version.size == base.size => copy = Some(file),
                _ => {
                    let why = "the server's copy changed since its signature; send it whole";
                    refusal = Some(Refusal::new(ErrorCode::Changed, why));
                }
            }
        }
        let stream = RefCell::new(&mut self.stream);
        let broken = |e: io::Error| match e.kind() {
            io::ErrorKind::UnexpectedEof => ConnError::Truncated,
            _ => ConnError::Io(e),
        };
        if let Some(refusal) = refusal {
            info!(peer = %self.session.peer(), %name, size, "patch refused: {}", refusal.message);
            // Without a copy, the records carry the whole file: not read past a point, as a put's
            // body is not.
            if against.is_none() && size > SKIP_REFUSED_UP_TO {
                self.refuse(&refusal)?;
                return Ok(false);
            }
            Rebuild::skip(&stream, against, size).map_err(broken)?;
            skip_put_trailer(&mut stream.borrow_mut())?;
            self.refuse(&refusal)?;
            return Ok(true);
        }
        let mut body = Rebuild::new(&stream, copy.as_ref().zip(against), size);
        let trailer_read = Cell::new(false);
        let mut after = || {
            trailer_read.set(true);
            read_put_trailer(&mut stream.borrow_mut())
        };
        let delta = against.is_some();
        let saved = |body: &Rebuild<'_, _>| Patched { delta, reused: body.reused, spared: body.spared };
        let stored = self.session.patch(&name, &offer, Expected::After(&mut after), &mut body, partial, saved);
        // What a refusal left unread is read and dropped, to stay in step with the peer.
        let mut skipped = Ok(());
        if !body.ended() {
            skipped = body.skip_rest().map_err(broken);
        }
        if skipped.is_ok() && !trailer_read.get() {
            skipped = skip_put_trailer(&mut stream.borrow_mut());
        }
        let answered = match stored {
            Ok(stored) => {
                self.unflushed_answers += 1;
                stored.write(&mut self.stream).map_err(ConnError::from)
            }
            Err(PutFailed::Refused(refusal)) => self.refuse(&refusal),
            Err(PutFailed::Broken(e)) => Err(super::put::broken(e)),
        };
        skipped?;
        answered?;
        Ok(true)
    }
}
