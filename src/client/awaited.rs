//! The replies a `put` of many files waits for, in the order its requests went: the uploads'
//! (stored, or refused), and the questions asked about the next files ahead of their turns (the
//! signature of the server's copy, or for a big new file `partial`: whether the server takes it
//! and what it holds of it), so a sync of many files waits one round trip in all, not one or
//! two per file.
//!
//! Answers asked for ahead are bounded in bytes ([`AHEAD_BYTES`]): the server writes them while
//! this client is writing an upload and not reading, and they must fit in the sockets' buffers,
//! or the server would stop reading to finish writing them while the client waits to finish
//! writing to it.

use std::collections::{HashMap, VecDeque};

use super::conn::Client;
use super::patch::Spared;
use super::result::{ClientError, Uploaded};
use crate::delta::{Shape, Signature};
use crate::mtime::Mtime;
use crate::name::Name;
use crate::wire::{Reply, Request, SignatureHeader, Summed};

/// Signature bytes asked for ahead of their files' turns and not yet read, at most: well within
/// what a connection's buffers hold at their smallest (a 128 KiB receive buffer, half of it for
/// data, and the server's send buffer).
pub(super) const AHEAD_BYTES: u64 = 48 << 10;

/// Files looked at ahead of the one being sent, at most.
pub(super) const AHEAD_FILES: usize = 64;

/// An upload sent and not yet answered: its name and place in the list, where it was sent from,
/// and (for a patch) what it spared.
pub(super) struct Pending<'n> {
    pub(super) name: &'n Name,
    pub(super) k: usize,
    pub(super) from: u64,
    pub(super) spared: Option<Spared>,
}

/// A reply still to come.
enum Awaited<'n> {
    Stored(Pending<'n>),
    /// The signature of the server's copy of file `k`, counted as `len` bytes while unread.
    Signature {
        k: usize,
        len: u64,
    },
    /// The answer to a `partial` for file `k` as it was then (`size` bytes, modified at `mtime`).
    Partial {
        k: usize,
        size: u64,
        mtime: Mtime,
    },
}

/// What was asked about a file ahead of its turn, as answered.
pub(super) enum Ahead {
    /// The signature of the server's copy (`None`: the server gave none).
    Signature(Option<Signature>),
    /// The answer to a `partial` for the file as it was (its size and time then).
    Partial { size: u64, mtime: Mtime, reply: Reply<Summed> },
}

/// What a `partial`'s answer is counted as while unread.
const PARTIAL_LEN: u64 = 128;

/// The replies still to come, and the signatures read before their files' turns.
pub(super) struct Flight<'n> {
    awaited: VecDeque<Awaited<'n>>,
    /// `Stored` entries in `awaited`.
    uploads: usize,
    /// Bytes of the signatures in `awaited`.
    asked: u64,
    /// Answers read before their files' turns, on the way to other replies.
    read: HashMap<usize, Ahead>,
}

impl<'n> Flight<'n> {
    pub(super) fn new() -> Flight<'n> {
        Flight { awaited: VecDeque::new(), uploads: 0, asked: 0, read: HashMap::new() }
    }

    /// Uploads sent and not yet answered.
    pub(super) fn uploads(&self) -> usize {
        self.uploads
    }

    pub(super) fn push(&mut self, pending: Pending<'n>) {
        self.awaited.push_back(Awaited::Stored(pending));
        self.uploads += 1;
    }

    /// Whether a signature of the server's copy of `theirs` bytes may be asked for now.
    pub(super) fn has_room_for_signature(&self, theirs: u64) -> bool {
        self.asked + signature_len(theirs) <= AHEAD_BYTES
    }

    /// Whether a `partial` may be asked now.
    pub(super) fn has_room_for_partial(&self) -> bool {
        self.asked + PARTIAL_LEN <= AHEAD_BYTES
    }
}

/// The bytes a signature of the server's copy of `theirs` bytes takes on the wire.
fn signature_len(theirs: u64) -> u64 {
    Shape::for_size(theirs).map_or(0, |shape| shape.wire_len()) + 64
}

impl Client {
    /// Asks for the signature of the server's copy of file `k`, `name`, of `theirs` bytes; its
    /// reply is read by [`Client::ahead_for`].
    pub(super) fn ask_signature(
        &mut self,
        flight: &mut Flight<'_>,
        k: usize,
        name: &Name,
        theirs: u64,
    ) -> Result<(), ClientError> {
        let len = signature_len(theirs);
        self.ask(flight, &Request::Signature(name.clone()), Awaited::Signature { k, len }, len)
    }

    /// Asks `partial` for file `k`, `name`, as it is now (`size` bytes, modified at `mtime`);
    /// its answer is read by [`Client::ahead_for`].
    pub(super) fn ask_partial(
        &mut self,
        flight: &mut Flight<'_>,
        k: usize,
        name: &Name,
        (size, mtime): (u64, Mtime),
        replace: bool,
    ) -> Result<(), ClientError> {
        let request = Request::Partial { size, mtime, replace, name: name.clone() };
        self.ask(flight, &request, Awaited::Partial { k, size, mtime }, PARTIAL_LEN)
    }

    /// Sends `request`, its answer (`len` bytes, counted while unread) awaited as `awaited`.
    fn ask<'n>(
        &mut self,
        flight: &mut Flight<'n>,
        request: &Request,
        awaited: Awaited<'n>,
        len: u64,
    ) -> Result<(), ClientError> {
        self.send(request)?;
        flight.awaited.push_back(awaited);
        flight.asked += len;
        Ok(())
    }

    /// What was asked about file `k` ahead of its turn, as answered (`None` if nothing was):
    /// the replies before it are read first.
    pub(super) fn ahead_for(
        &mut self,
        flight: &mut Flight<'_>,
        k: usize,
        answered: &mut impl FnMut(&Name, usize, Result<Uploaded, ClientError>, bool),
    ) -> Result<Option<Ahead>, ClientError> {
        let asked = |flight: &Flight<'_>| {
            flight
                .awaited
                .iter()
                .any(|a| matches!(a, Awaited::Signature { k: s, .. } | Awaited::Partial { k: s, .. } if *s == k))
        };
        if !flight.read.contains_key(&k) && asked(flight) {
            self.flush()?;
            while !flight.read.contains_key(&k) && !flight.awaited.is_empty() {
                self.read_next(flight, answered)?;
            }
        }
        Ok(flight.read.remove(&k))
    }

    /// Reads replies, oldest first, until at most `left` uploads are unanswered (signatures on
    /// the way are kept for their files' turns).
    pub(super) fn replies(
        &mut self,
        flight: &mut Flight<'_>,
        left: usize,
        answered: &mut impl FnMut(&Name, usize, Result<Uploaded, ClientError>, bool),
    ) -> Result<(), ClientError> {
        if flight.uploads <= left {
            return Ok(());
        }
        self.flush()?;
        while flight.uploads > left {
            self.read_next(flight, answered)?;
        }
        Ok(())
    }

    /// Reads every reply still to come (before a request whose reply is read at once).
    pub(super) fn settle(
        &mut self,
        flight: &mut Flight<'_>,
        answered: &mut impl FnMut(&Name, usize, Result<Uploaded, ClientError>, bool),
    ) -> Result<(), ClientError> {
        if !flight.awaited.is_empty() {
            self.flush()?;
        }
        while !flight.awaited.is_empty() {
            self.read_next(flight, answered)?;
        }
        Ok(())
    }

    /// Reads the oldest reply still to come.
    fn read_next(
        &mut self,
        flight: &mut Flight<'_>,
        answered: &mut impl FnMut(&Name, usize, Result<Uploaded, ClientError>, bool),
    ) -> Result<(), ClientError> {
        match flight.awaited.pop_front() {
            None => Ok(()),
            Some(Awaited::Signature { k, len }) => {
                flight.asked -= len;
                let signature = self.read_signature()?;
                flight.read.insert(k, Ahead::Signature(signature));
                Ok(())
            }
            Some(Awaited::Partial { k, size, mtime }) => {
                flight.asked -= PARTIAL_LEN;
                let reply = self.read_reply(Summed::parse)?;
                flight.read.insert(k, Ahead::Partial { size, mtime, reply });
                Ok(())
            }
            Some(Awaited::Stored(Pending { name, k, from, spared })) => {
                flight.uploads -= 1;
                let stored = self.read_reply(Summed::parse)?.into_result().map_err(ClientError::Server);
                let Spared { reused, compressed } = spared.unwrap_or_default();
                let uploaded = |Summed { size, digest }| Uploaded {
                    size,
                    digest,
                    resumed_from: from,
                    reused,
                    compression_saved: compressed,
                };
                answered(name, k, stored.map(uploaded), spared.is_some());
                Ok(())
            }
        }
    }

    /// Reads the reply to a `signature`: the signature of the server's copy, or `None` if it
    /// gives none (it has no such file, or refuses), and the upload goes as it would without.
    fn read_signature(&mut self) -> Result<Option<Signature>, ClientError> {
        match self.read_reply(SignatureHeader::parse)? {
            Reply::Refused(_) => Ok(None),
            Reply::Answer(SignatureHeader(shape)) => {
                self.broken = true;
                let signature = Signature::read(shape, &mut self.stream);
                let signature = self.or_lost(signature)?;
                self.broken = false;
                Ok(Some(signature))
            }
        }
    }
}
