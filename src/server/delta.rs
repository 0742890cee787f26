//! Answering a delta download, apart from any transport: the new file (from the cache's memory
//! or the disk) scanned against the asker's signature ([`crate::delta::matcher`]), said as copies
//! of the asker's blocks and bytes it lacks, and the whole file's digest, computed from the very
//! bytes scanned, for the asker to check its rebuilt file against.
//!
//! A file that changes while it is scanned (it shrinks, or its version moves) gets no digest but
//! a refusal (`changed`), as a streamed body does: the asker keeps its older copy. The digest is
//! remembered per version, as a streamed body's is, for the next `get` or `sum`.

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use tracing::debug;

use super::bytes::{Body, Bytes};
use super::cache::settled;
use super::get::open_error_code;
use super::hashing::unchanged;
use super::memo::Hashed;
use super::refusal::Refusal;
use super::shared::Shared;
use crate::delta::Signature;
use crate::delta::matcher::{Index, Op, Scanned, scan};
use crate::digest::{Digest, Hasher};
use crate::name::Name;
use crate::records::{At, Hashing};
use crate::store::FileVersion;
use crate::wire::{DeltaHeader, ErrorCode};

/// What to send for one delta download.
pub struct DeltaAnswer<'a> {
    shared: &'a Shared,
    name: Name,
    header: DeltaHeader,
    source: Source,
    index: Index,
}

enum Source {
    /// A cache hit, whose digest is known.
    Memory { body: Body, digest: Digest },
    /// The file on disk, its digest remembered if it was computed before.
    File { file: File, version: FileVersion, known: Option<Digest> },
}

/// How sending a delta went. The bytes that went are the speaker's to count in `bytes_sent`
/// (it may have compressed them).
pub struct DeltaSent {
    pub scanned: Scanned,
    /// The whole file's digest for the trailer, or why the bytes sent must not be trusted; or the
    /// sink's error.
    pub end: io::Result<Result<Digest, Refusal>>,
}

impl DeltaAnswer<'_> {
    pub fn header(&self) -> &DeltaHeader {
        &self.header
    }

    /// Scans the file against the signature, saying it through `emit`, then settles the digest.
    pub fn send(self, emit: impl FnMut(Op<'_>) -> io::Result<()>) -> DeltaSent {
        let DeltaAnswer { shared, name, header, source, index } = self;
        let mut hasher = Hasher::default();
        let hashed_since = SystemTime::now();
        let result = match &source {
            Source::Memory { body, .. } => match body.bytes() {
                Bytes::Heap(heap) => scan(&index, &mut Hashing(&heap[..], &mut hasher), emit),
                Bytes::Sealed { file, len } => scan(&index, &mut Hashing(At::new(file, *len), &mut hasher), emit),
            },
            Source::File { file, .. } => scan(&index, &mut Hashing(At::new(file, header.size), &mut hasher), emit),
        };
        let scanned = match result {
            Ok(scanned) => scanned,
            Err(e) => return DeltaSent { scanned: Scanned::default(), end: Err(e) },
        };
        // Asked with no signature (all of it, compressed): not a delta.
        if index.shape().size > 0 {
            shared.delta_gets.fetch_add(1, Ordering::Relaxed);
            shared.delta_bytes_saved.fetch_add(scanned.copied, Ordering::Relaxed);
        }
        let changed = || Refusal::new(ErrorCode::Changed, "it changed while it was being sent; try again");
        let digest = hasher.digest();
        let end = match source {
            _ if scanned.total != header.size => Err(changed()),
            Source::Memory { digest: known, .. } if known != digest => Err(changed()),
            Source::Memory { .. } => Ok(digest),
            Source::File { file, version, known } => {
                if !unchanged(&file, &version) || known.is_some_and(|k| k != digest) {
                    Err(changed())
                } else {
                    if known.is_none() && settled(&version, hashed_since) {
                        shared.digests_computed.fetch_add(1, Ordering::Relaxed);
                        shared.digests.put(&name, version, Arc::new(Hashed::new(Some(digest), Vec::new())));
                    }
                    Ok(digest)
                }
            }
        };
        DeltaSent { scanned, end: Ok(end) }
    }
}

/// Answers a delta download of `name` against `signature`: from the cache if it holds a fresh
/// copy, else from the disk (not admitted to the cache: the asker had most of it already).
pub(crate) fn answer<'a>(
    shared: &'a Shared,
    name: &Name,
    signature: Signature,
    peer: &dyn std::fmt::Display,
) -> Result<DeltaAnswer<'a>, Refusal> {
    let fresh = |cached: &FileVersion| shared.root.version(name) == Some(*cached);
    let index = Index::new(signature);
    if let Some(hit) = shared.cache.lookup(name, Instant::now(), fresh) {
        debug!(%peer, %name, size = hit.body.len(), "delta from the cache");
        let header = DeltaHeader { size: hit.body.len(), mode: hit.mode, mtime: hit.mtime };
        let source = Source::Memory { body: hit.body, digest: hit.digest };
        return Ok(DeltaAnswer { shared, name: name.clone(), header, source, index });
    }
    let (file, version) = shared.root.open_file(name).map_err(|e| Refusal::new(open_error_code(&e), e))?;
    debug!(%peer, %name, size = version.size, "delta from the disk");
    let known = shared.digests.get(name, &version).and_then(|h| h.digest);
    let header = DeltaHeader { size: version.size, mode: version.mode, mtime: version.mtime() };
    Ok(DeltaAnswer { shared, name: name.clone(), header, source: Source::File { file, version, known }, index })
}

/// The signature of the server's copy of `name` (`signature`, for a `patch` upload), read from
/// the disk (the cache's copy may be older than the file).
pub(crate) fn signature(shared: &Shared, name: &Name) -> Result<Signature, Refusal> {
    let (file, version) = shared.root.open_file(name).map_err(|e| Refusal::new(open_error_code(&e), e))?;
    let too_big = || Refusal::new(ErrorCode::TooBig, "too big for a signature");
    let shape = crate::delta::Shape::for_size(version.size).ok_or_else(too_big)?;
    let signature = Signature::of_file(shape, &file).map_err(|e| Refusal::new(ErrorCode::Internal, e))?;
    // Changed while it was read: the signature may describe no version of it.
    if !unchanged(&file, &version) {
        return Err(Refusal::new(ErrorCode::Changed, "it changed while its signature was made; try again"));
    }
    Ok(signature)
}
