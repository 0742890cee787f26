//! `delta` on an ft connection: the signature read off the wire after its line (always, so the
//! connection stays in step whatever the answer), then the session's answer said as records.

use std::io::{self, Write};

use super::conn::Connection;
use super::error::ConnError;
use crate::delta::matcher::Op;
use crate::delta::{Shape, Signature};
use crate::name::Name;
use crate::wire::{self as protocol, Record};

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
        answer.header().write(&mut self.stream)?;
        let stream = &mut self.stream;
        let sent = answer.send(|op| match op {
            Op::Copy { block, count } => Record::Copy { block, count }.write(stream),
            Op::Literal(bytes) => {
                Record::Literal { len: bytes.len() as u64 }.write(stream)?;
                stream.write_all(bytes)
            }
        });
        self.bytes += sent.scanned.total - sent.scanned.copied;
        let end = sent.end?;
        Record::End { size: sent.scanned.total }.write(&mut self.stream)?;
        match end {
            Ok(digest) => Ok(protocol::write_trailer(&mut self.stream, digest)?),
            Err(refusal) => self.refuse(&refusal),
        }
    }
}
