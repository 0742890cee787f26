//! Reading uploads off an ft connection: a `put`'s body of exactly its announced length, the
//! trailer line after a `put -`'s bytes, skipping the body of a refused one to stay in step, and
//! answering in request order while small uploads are stored on the connection's store threads.
//! Whether an upload may happen and what each outcome means is the session's (`upload.rs`).

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};

use tracing::info;

use super::conn::{Connection, FLUSH_ANSWERS};
use super::error::ConnError;
use crate::digest::Digest;
use crate::name::Name;
use crate::server::storers::{self, Job, SMALL_UPLOAD, Storers};
use crate::server::upload::{Offer, PutFailed, SKIP_REFUSED_UP_TO};
use crate::store::{Expected, PutError, Stored};
use crate::transport::BufStream;
use crate::wire::{self as protocol, ProtocolError};

/// Reads the line after a `put -`'s bytes: the file's digest, or the sender giving up on it.
pub(super) fn read_put_trailer(stream: &mut BufStream) -> Result<Digest, PutError> {
    let mut line = Vec::with_capacity(64);
    match protocol::read_line(stream, &mut line, 128) {
        Ok(true) => {}
        Ok(false) => return Err(PutError::Short { expected: 1, received: 0 }),
        Err(ProtocolError::Io(e)) => return Err(PutError::Body(e)),
        Err(_) => return Err(PutError::BadTrailer),
    }
    match protocol::PutTrailer::parse(&line) {
        Some(protocol::PutTrailer::Digest(digest)) => Ok(digest),
        Some(protocol::PutTrailer::Abort) => Err(PutError::Aborted),
        None => Err(PutError::BadTrailer),
    }
}

/// The connection's end when an upload's body or the line after it cannot be read as announced.
pub(super) fn broken(e: PutError) -> ConnError {
    match e {
        PutError::Body(e) => ConnError::Io(e),
        PutError::Short { .. } => ConnError::Truncated,
        _ => ConnError::Io(io::Error::new(io::ErrorKind::InvalidData, "the line after a put's bytes is not a digest")),
    }
}

/// Reads and drops the line after the bytes of a `put -` that was not stored: a digest or an
/// abort leaves the connection in step; anything else ends it.
pub(super) fn skip_put_trailer(stream: &mut BufStream) -> Result<(), ConnError> {
    match read_put_trailer(stream) {
        Ok(_) | Err(PutError::Aborted) => Ok(()),
        Err(e) => Err(broken(e)),
    }
}

/// A body of `left` bytes read from a stream shared with the reader of the line after it.
struct Limited<'c, 's> {
    stream: &'c RefCell<&'s mut BufStream>,
    left: u64,
}

impl Read for Limited<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let most = usize::try_from(self.left).unwrap_or(usize::MAX).min(buf.len());
        let n = self.stream.borrow_mut().read(&mut buf[..most])?;
        self.left -= n as u64;
        Ok(n)
    }
}

impl Connection<'_> {
    /// Answers `put`: refused before its body is read ([`Session::upload_refusal`]); the body
    /// is then read and dropped if it is small (the connection goes on), else the connection ends,
    /// since a body cannot be told from requests. Otherwise the body is read (each read within
    /// the request timeout) and stored, and any refusal after that leaves the connection usable.
    /// Returns false when the connection is to close.
    ///
    /// [`Session::upload_refusal`]: crate::server::session::Session::upload_refusal
    pub(super) fn put(
        &mut self,
        offer: Offer,
        digest: Option<Digest>,
        from: u64,
        name: Name,
        storers: &mut Storers<'_, '_>,
    ) -> Result<bool, ConnError> {
        let partial = self.session.take_partial(&name, &offer);
        let size = offer.size;
        let body_len = size - from;
        if let Some(refusal) = self.session.upload_refusal(&offer, &name) {
            self.answer_stored(storers, true)?;
            info!(peer = %self.peer(), %name, size, "upload refused: {}", refusal.message);
            self.refuse(&refusal)?;
            if body_len > SKIP_REFUSED_UP_TO {
                return Ok(false);
            }
            let skipped = io::copy(&mut io::Read::take(&mut self.stream, body_len), &mut io::sink())?;
            if skipped != body_len {
                return Err(ConnError::Truncated);
            }
            if digest.is_none() {
                skip_put_trailer(&mut self.stream)?;
            }
            return Ok(true);
        }
        if size <= SMALL_UPLOAD && from == 0 && partial.is_none() {
            self.put_small(offer, digest, name, storers)?;
            return Ok(true);
        }
        self.answer_stored(storers, true)?;
        // The body and the digest after it (if it comes after) are read from the one stream, in
        // turn: shared through a cell, since both readers are handed to the store at once.
        let stream = RefCell::new(&mut self.stream);
        let trailer_read = Cell::new(digest.is_some());
        let mut body = Limited { stream: &stream, left: body_len };
        let mut after = || {
            trailer_read.set(true);
            read_put_trailer(&mut stream.borrow_mut())
        };
        let expected = match digest {
            Some(digest) => Expected::Known(digest),
            None => Expected::After(&mut after),
        };
        let stored = self.session.put(&name, &offer, expected, &mut body, (from, partial));
        // What a refusal left unread is skipped, to stay in step with the peer.
        let mut skipped = io::copy(&mut body, &mut io::sink()).map(drop).map_err(ConnError::from);
        if skipped.is_ok() && !trailer_read.get() {
            skipped = skip_put_trailer(&mut stream.borrow_mut());
        }
        let answered = self.put_answer(stored);
        skipped?;
        answered?;
        Ok(true)
    }

    /// A small upload, whole in memory, then stored on a store thread while the next request is
    /// read.
    fn put_small(
        &mut self,
        offer: Offer,
        digest: Option<Digest>,
        name: Name,
        storers: &mut Storers<'_, '_>,
    ) -> Result<(), ConnError> {
        let size = offer.size;
        if storers.holds(&name) {
            self.answer_stored(storers, true)?;
        }
        let mut bytes = Vec::with_capacity(size as usize);
        io::Read::take(&mut self.stream, size).read_to_end(&mut bytes)?;
        if bytes.len() as u64 != size {
            return Err(ConnError::Truncated);
        }
        let digest = match digest {
            Some(digest) => digest,
            None => match read_put_trailer(&mut self.stream) {
                Ok(digest) => digest,
                Err(e) => {
                    self.answer_stored(storers, true)?;
                    let answer = self.session.stored(&name, &offer, Err(e));
                    return self.put_answer(answer);
                }
            },
        };
        let replace = offer.replace && self.session.replaces();
        let job = Job { name, digest, offer, replace, bytes };
        match storers.submit(job) {
            Ok(()) => {}
            Err(job) => {
                self.answer_stored(storers, true)?;
                let stored = storers::store(self.shared(), &job);
                self.answer_job(&job.name, &job.offer, stored)?;
            }
        }
        // Answers already known go out (a batch at a time, so a client that keeps sending
        // hears of the first while it does); a full hand waits for the oldest.
        self.answer_stored(storers, false)?;
        while storers.full() {
            self.answer_one(storers)?;
        }
        if self.unflushed_answers >= FLUSH_ANSWERS {
            self.stream.flush()?;
            self.unflushed_answers = 0;
        }
        Ok(())
    }

    /// Writes the answers of the uploads handed to `storers` that are known, in order; with
    /// `wait`, of all of them, waiting for each.
    pub(super) fn answer_stored(&mut self, storers: &mut Storers<'_, '_>, wait: bool) -> Result<(), ConnError> {
        while !storers.is_empty() {
            match storers.next_answer(wait) {
                Some((waiting, stored)) => self.answer_job(&waiting.name, &waiting.offer, stored)?,
                None => break,
            }
        }
        Ok(())
    }

    /// Waits for the oldest upload handed to `storers` and writes its answer.
    fn answer_one(&mut self, storers: &mut Storers<'_, '_>) -> Result<(), ConnError> {
        match storers.next_answer(true) {
            Some((waiting, stored)) => self.answer_job(&waiting.name, &waiting.offer, stored),
            None => Ok(()),
        }
    }

    fn answer_job(&mut self, name: &Name, offer: &Offer, stored: Result<Stored, PutError>) -> Result<(), ConnError> {
        let answer = self.session.stored(name, offer, stored);
        self.put_answer(answer)
    }

    /// Writes the answer to an upload that was read and stored, or refused: the connection goes
    /// on, unless its body was cut short.
    fn put_answer(&mut self, answer: Result<protocol::Summed, PutFailed>) -> Result<(), ConnError> {
        match answer {
            Ok(stored) => {
                self.unflushed_answers += 1;
                Ok(stored.write(&mut self.stream)?)
            }
            Err(PutFailed::Refused(refusal)) => self.refuse(&refusal),
            Err(PutFailed::Broken(e)) => Err(broken(e)),
        }
    }
}
