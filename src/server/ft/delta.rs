//! `delta` on an ft connection: the signature read off the wire after its line (always, so the
//! connection stays in step whatever the answer), then the session's answer said as records:
//! the bytes gathered into records of up to [`RECORD`] bytes, each compressed where the
//! connection agreed to `zstd` and it pays (see `compress.rs`).

use std::io::{self, Write};
use std::sync::atomic::Ordering;

use super::conn::Connection;
use super::error::ConnError;
use crate::compress::{Packer, RECORD, is_packed_name};
use crate::delta::matcher::Op;
use crate::delta::{Shape, Signature};
use crate::name::Name;
use crate::transport::BufStream;
use crate::wire::{self as protocol, Feature, Record};

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
        let packer = match self.agreed.has(Feature::Zstd) && !is_packed_name(name.as_bytes()) {
            true => Some(Packer::new()?),
            false => None,
        };
        answer.header().write(&mut self.stream)?;
        self.stream.flush()?;
        let mut out = Records { stream: &mut self.stream, pending: Vec::new(), packer, went: 0, spared: 0 };
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
}

/// Records going out: bytes gathered until a record is full or a copy comes, then sent as they
/// are or compressed.
struct Records<'s> {
    stream: &'s mut BufStream,
    pending: Vec<u8>,
    packer: Option<Packer>,
    /// Bytes of the file's content that went (compressed or not).
    went: u64,
    /// Bytes compression spared.
    spared: u64,
}

impl Records<'_> {
    fn say(&mut self, op: Op<'_>) -> io::Result<()> {
        match op {
            Op::Copy { block, count } => {
                self.flush()?;
                Record::Copy { block, count }.write(self.stream)?;
                // Out now, so the receiver copies these blocks while the scan goes on.
                self.stream.flush()
            }
            Op::Literal(mut bytes) => {
                while !bytes.is_empty() {
                    let room = RECORD - self.pending.len();
                    let (now, later) = bytes.split_at(room.min(bytes.len()));
                    self.pending.extend_from_slice(now);
                    bytes = later;
                    if self.pending.len() == RECORD {
                        self.flush()?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Sends the bytes gathered, if any.
    fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let len = self.pending.len() as u64;
        match self.packer.as_mut().and_then(|p| p.pack(&self.pending)) {
            Some(packed) => {
                Record::Zstd { len, packed: packed.len() as u64 }.write(self.stream)?;
                self.stream.write_all(packed)?;
                self.went += packed.len() as u64;
                self.spared += len - packed.len() as u64;
            }
            None => {
                Record::Literal { len }.write(self.stream)?;
                self.stream.write_all(&self.pending)?;
                self.went += len;
            }
        }
        self.pending.clear();
        Ok(())
    }
}
