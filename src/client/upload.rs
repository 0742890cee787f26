//! Uploads: `put` of files (pipelined over one connection, each hashed and verified by the
//! server, interrupted ones resumed) as a sync: what the server has unchanged is skipped, what
//! changed is replaced where the server allows it; and the folders of `put -r`, with their modes
//! and times. What is sent is read by `local.rs`.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::FileExt;

use super::awaited::{AHEAD_FILES, Ahead, Flight, Pending};
use super::conn::Client;
use super::download::WINDOW;
use super::local::{LocalFile, LocalFolder, Outgoing};
use super::patch::How;
use super::result::{ClientError, Uploaded};
use super::window::MEANINGFUL_RTT;
use crate::digest::Hasher;
use crate::name::Name;
use crate::wire::{self as protocol, Feature, MetaEntry, ProtocolError, PutTrailer, Reply, Request, Summed};

/// Files of this size and more are resumable: the server says first whether it takes them and
/// how much of an interrupted upload it holds (the server's `RESUMABLE_FROM`).
pub use crate::RESUMABLE_FROM;

/// How `put` goes about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutOptions {
    /// Send every file, even one the server has unchanged, replacing what it has (where the
    /// server allows it).
    pub force: bool,
    /// Continue an interrupted upload the server holds, once its bytes are proved to be this
    /// file's first bytes.
    pub resume: bool,
    /// Decide "unchanged" by size and digest (one read of the local file, the server's digest
    /// without its bytes) instead of size and modification time.
    pub checksum: bool,
}

impl Default for PutOptions {
    fn default() -> PutOptions {
        PutOptions { force: false, resume: true, checksum: false }
    }
}

/// What became of one file given to [`Client::put_sync`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// Stored (new, or replacing the server's copy).
    Sent(Uploaded),
    /// The server has it unchanged: not sent.
    Unchanged,
}

/// What the server has, by name (as `walk` or `stat` says it), for deciding what to send.
pub type Remote = HashMap<Name, MetaEntry>;

impl Client {
    /// Uploads each local file in `files` as its name on the server, as a sync: a file the server
    /// has with the same size and modification time (with `checksum`, the same size and digest)
    /// is not sent ([`Put::Unchanged`]); one it has otherwise is sent to replace it, which the
    /// server does only where it allows replacing (else it refuses, saying why); a new one is
    /// sent as new. What the server has is `remote` if given (a listing of the folder), else
    /// asked name by name (`stat`, pipelined). A server that predates protocol version 2 cannot
    /// say: every file is sent, replacing only with `force`. `each` hears each file's result
    /// (unchanged ones first). Stops at an error that leaves the connection out of step.
    pub fn put_sync(
        &mut self,
        files: &[(LocalFile, Name)],
        remote: Option<&Remote>,
        options: PutOptions,
        mut each: impl FnMut(&Name, Result<Put, ClientError>),
    ) -> Result<(), ClientError> {
        let asked;
        let remote = match remote {
            Some(remote) => Some(remote),
            None if self.walks()? => {
                let names: Vec<&Name> = files.iter().map(|(_, name)| name).collect();
                asked = self.stat_all(&names)?;
                Some(&asked)
            }
            None => None,
        };
        let Some(remote) = remote else {
            let plan: Vec<_> = files.iter().map(|(local, name)| (local, name, options.force, None)).collect();
            return self.put_list(&plan, options, |name, result| each(name, result.map(Put::Sent)));
        };
        // Same size (and, without checksum, the same time): compared by digest with checksum.
        let looks_same = |local: &LocalFile, name: &Name| -> bool {
            let Some(theirs) = remote.get(name).filter(|e| e.is_file()) else { return false };
            let Some((size, mtime)) = local.stamp() else { return false };
            size == theirs.size && (options.checksum || mtime == theirs.mtime())
        };
        let held = |name: &Name| remote.get(name).filter(|e| e.is_file()).map(|e| e.size);
        let mut send = Vec::with_capacity(files.len());
        let mut compare = Vec::new();
        for (local, name) in files {
            match (options.force, looks_same(local, name)) {
                (false, true) if options.checksum => compare.push((local, name)),
                (false, true) => each(name, Ok(Put::Unchanged)),
                _ => send.push((local, name, remote.contains_key(name) || options.force, held(name))),
            }
        }
        if !compare.is_empty() {
            let names: Vec<Name> = compare.iter().map(|(_, name)| (*name).clone()).collect();
            let mut theirs = HashMap::new();
            self.sum_all(&names, |name, result| {
                if let Ok((_, digest)) = result {
                    theirs.insert(name.clone(), digest);
                }
            })?;
            for (local, name) in compare {
                let ours = Outgoing::read(local).ok().and_then(|o| o.digest().ok());
                match ours.is_some() && ours == theirs.get(name).copied() {
                    true => each(name, Ok(Put::Unchanged)),
                    false => send.push((local, name, true, held(name))),
                }
            }
        }
        self.put_list(&send, options, |name, result| each(name, result.map(Put::Sent)))
    }

    /// What the server has at each of `names` (`stat`, pipelined): those it has, by name.
    pub fn stat_all(&mut self, names: &[&Name]) -> Result<Remote, ClientError> {
        let mut found = HashMap::new();
        for batch in names.chunks(WINDOW) {
            for name in batch {
                self.send(&Request::Stat((*name).clone()))?;
            }
            self.flush()?;
            for name in batch {
                let status = self.reading(|c| c.read_status())?;
                if let protocol::Status::Ok(fields) = status {
                    let entry = MetaEntry::parse(fields.as_bytes(), protocol::Form::Escaped)?;
                    if entry.name == **name {
                        found.insert(entry.name.clone(), entry);
                    }
                }
            }
        }
        Ok(found)
    }

    /// Uploads each local file in `files` as its name on the server (`put`), pipelined over this
    /// connection, each with its size, mode and modification time, and the server stores it only
    /// if every byte arrives and matches its digest; replacing what the server has only with
    /// `options.force` (see [`Client::put_sync`] for a sync). `each` hears each result in order.
    pub fn put_all(
        &mut self,
        files: &[(LocalFile, Name)],
        options: PutOptions,
        each: impl FnMut(&Name, Result<Uploaded, ClientError>),
    ) -> Result<(), ClientError> {
        let plan: Vec<_> = files.iter().map(|(local, name)| (local, name, options.force, None)).collect();
        self.put_list(&plan, options, each)
    }

    /// Sends each `(local, name, replace, theirs)` (`theirs`: the size of the server's copy, if
    /// it has one): a small file is read once and its digest sent ahead of it; a bigger one is
    /// hashed as it is sent and its digest follows its bytes (one read of the file), or if it
    /// changed meanwhile an `abort`, which stores nothing. A file of [`RESUMABLE_FROM`] bytes or
    /// more is first announced (`partial`): the server refuses it there if it would refuse the
    /// upload, which costs no bytes, or says how much of an interrupted upload of it it holds,
    /// which is sent on from there if its digest matches this file's start. Where the server
    /// has an older copy and takes patches, its signature is asked for instead and the file goes
    /// as what that copy lacks; a big file it does not have goes compressed where that is on
    /// (`patch.rs`). A patch the server refuses as `changed` is sent again whole. A local file
    /// that cannot be read is reported without being sent.
    fn put_list(
        &mut self,
        files: &[(&LocalFile, &Name, bool, Option<u64>)],
        options: PutOptions,
        mut each: impl FnMut(&Name, Result<Uploaded, ClientError>),
    ) -> Result<(), ClientError> {
        let mut again = Vec::new();
        self.put_each(files, options, true, &mut again, &mut each)?;
        let again: Vec<_> = again.into_iter().map(|k| files[k]).collect();
        self.put_each(&again, options, false, &mut Vec::new(), &mut each)
    }

    /// [`Client::put_list`]'s one pass, with or without patches; the index of each patch refused
    /// as `changed` goes into `again` (not to `each`).
    fn put_each(
        &mut self,
        files: &[(&LocalFile, &Name, bool, Option<u64>)],
        options: PutOptions,
        patches: bool,
        again: &mut Vec<usize>,
        each: &mut impl FnMut(&Name, Result<Uploaded, ClientError>),
    ) -> Result<(), ClientError> {
        if files.is_empty() {
            return Ok(());
        }
        if !self.agreed()?.has(Feature::Put) {
            return Err(ProtocolError::Malformed("this server does not know put (it predates uploads)".into()).into());
        }
        let mut flight = Flight::new();
        let mut answered = |name: &Name, k: usize, result: Result<Uploaded, ClientError>, patch: bool| match result {
            Err(ClientError::Server(reply)) if patch && reply.kind() == Some(protocol::ErrorCode::Changed) => {
                again.push(k);
            }
            result => each(name, result),
        };
        // The next file to ask about ahead of its turn.
        let mut next = 0;
        for (k, &(local, name, replace, theirs)) in files.iter().enumerate() {
            next = next.max(k + 1);
            while next < files.len() && next <= k + AHEAD_FILES {
                if !self.ask_ahead(&mut flight, next, files[next], patches)? {
                    break;
                }
                next += 1;
            }
            let mut early = self.ahead_for(&mut flight, k, &mut answered)?;
            let outgoing = match Outgoing::read(local) {
                Ok(outgoing) => outgoing,
                Err(e) => {
                    self.replies(&mut flight, 0, &mut answered)?;
                    answered(name, k, Err(e), false);
                    continue;
                }
            };
            let mut how = How::Put;
            if patches && self.wants_signature(outgoing.size, theirs)? {
                let signature = match early.take() {
                    Some(Ahead::Signature(signature)) => signature,
                    _ => {
                        self.ask_signature(&mut flight, k, name, theirs.unwrap_or(0))?;
                        match self.ahead_for(&mut flight, k, &mut answered)? {
                            Some(Ahead::Signature(signature)) => signature,
                            _ => None,
                        }
                    }
                };
                if let Some(signature) = signature {
                    how = How::Delta(signature);
                }
            }
            let mut start = (0, Hasher::default());
            if matches!(how, How::Put) && outgoing.size >= RESUMABLE_FROM {
                let (size, mtime) = (outgoing.size, outgoing.mtime);
                // Asked ahead, of this very file, and nothing held: as good as asked now. Bytes
                // held are asked for again now, the server holding one upload at a time for
                // the `put` that follows.
                let reply = match early {
                    Some(Ahead::Partial { size: s, mtime: m, reply })
                        if (s, m) == (size, mtime) && !matches!(reply, Reply::Answer(Summed { size: 1.., .. })) =>
                    {
                        reply
                    }
                    _ => {
                        self.settle(&mut flight, &mut answered)?;
                        self.send(&Request::Partial { size, mtime, replace, name: name.clone() })?;
                        self.flush()?;
                        self.read_reply(Summed::parse)?
                    }
                };
                match reply {
                    Reply::Refused(refused) => {
                        answered(name, k, Err(ClientError::Server(refused)), false);
                        continue;
                    }
                    Reply::Answer(Summed { size: held, digest: prefix })
                        if options.resume && held > 0 && held <= size =>
                    {
                        let mut hasher = Hasher::default();
                        crate::digest::feed_file(&outgoing.file, 0, held, &mut hasher)
                            .map_err(|source| ClientError::Unreadable { path: local.path().to_path_buf(), source })?;
                        if hasher.digest() == prefix {
                            start = (held, hasher);
                        }
                    }
                    Reply::Answer(_) => {}
                }
            }
            if matches!(how, How::Put) && start.0 == 0 && patches && self.compresses(&outgoing, name)? {
                how = How::Compressed;
            }
            let from = start.0;
            let sent = match how {
                How::Put => self.send_put(&outgoing, name, start, replace).map(|()| None),
                How::Delta(signature) => self.send_patch(&outgoing, name, Some(signature), replace).map(Some),
                How::Compressed => self.send_patch(&outgoing, name, None, replace).map(Some),
            };
            let spared = match sent {
                Ok(spared) => spared,
                // A name this server's version cannot carry: said of this file alone.
                Err(e) if !self.broken => {
                    answered(name, k, Err(e), false);
                    continue;
                }
                Err(e) => return Err(e),
            };
            flight.push(Pending { name, k, from, spared });
            // A full window: the older half is answered while the server stores the newer.
            if flight.uploads() >= WINDOW {
                self.replies(&mut flight, WINDOW / 2, &mut answered)?;
            }
        }
        self.settle(&mut flight, &mut answered)
    }

    /// Asks what file `k` will need ahead of its turn, where there is room: the signature of the
    /// server's copy (a patch), or `partial` (a big file sent as it is). False when there is no
    /// room now; true otherwise (also when there was nothing to ask).
    fn ask_ahead(
        &mut self,
        flight: &mut Flight<'_>,
        k: usize,
        (local, name, replace, theirs): (&LocalFile, &Name, bool, Option<u64>),
        patches: bool,
    ) -> Result<bool, ClientError> {
        // Only where a round trip costs something, or a patch is on the way.
        if self.rtt < MEANINGFUL_RTT && !(patches && self.delta) {
            return Ok(true);
        }
        let Some((size, mtime)) = local.stamp() else { return Ok(true) };
        if let Some(theirs) = theirs.filter(|_| patches)
            && self.wants_signature(size, Some(theirs))?
        {
            if !flight.has_room_for_signature(theirs) {
                return Ok(false);
            }
            self.ask_signature(flight, k, name, theirs)?;
        } else if size >= RESUMABLE_FROM {
            if !flight.has_room_for_partial() {
                return Ok(false);
            }
            self.ask_partial(flight, k, name, (size, mtime), replace)?;
        }
        Ok(true)
    }

    /// Sends one `put` of `outgoing` as `name`: its line, then exactly its bytes from `from` on,
    /// `hasher` having hashed those before. A small file's digest goes ahead of it; a bigger
    /// one's follows its bytes, hashed as they are sent: `abort` instead if the file changed or
    /// shrank meanwhile (a shrunk file's missing bytes are sent as zeros first, so the connection
    /// stays in step).
    fn send_put(
        &mut self,
        outgoing: &Outgoing,
        name: &Name,
        (from, mut hasher): (u64, Hasher),
        replace: bool,
    ) -> Result<(), ClientError> {
        let Outgoing { ref file, size, mtime, perm, ref whole, .. } = *outgoing;
        let digest = whole.as_ref().map(|(_, digest)| *digest);
        self.send(&Request::Put { size, digest, mtime, from, replace, perm, name: name.clone() })?;
        if let Some(progress) = &self.progress {
            progress.begin(name, size - from);
        }
        if let Some((bytes, _)) = whole {
            let written = self.stream.write_all(&bytes[from as usize..]);
            self.or_lost(written)?;
            if let Some(progress) = &self.progress {
                progress.advance(size - from);
            }
            return Ok(());
        }
        // Out of step until every announced byte and the trailer are written.
        self.broken = true;
        let mut buf = vec![0u8; usize::try_from(size - from).unwrap_or(usize::MAX).clamp(1, 64 << 10)];
        let mut sent = from;
        while sent < size {
            let want = (size - sent).min(buf.len() as u64) as usize;
            let n = match file.read_at(&mut buf[..want], sent) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            hasher.update(&buf[..n]);
            self.stream.write_all(&buf[..n])?;
            sent += n as u64;
            if let Some(progress) = &self.progress {
                progress.advance(n as u64);
            }
        }
        let whole = sent == size && outgoing.unchanged();
        // The file shrank or could not be read part-way: the rest is padded, and given up on.
        buf.fill(0);
        while sent < size {
            let n = (size - sent).min(buf.len() as u64) as usize;
            self.stream.write_all(&buf[..n])?;
            sent += n as u64;
        }
        let trailer = if whole { PutTrailer::Digest(hasher.digest()) } else { PutTrailer::Abort };
        self.stream.write_all(format!("{trailer}\n").as_bytes())?;
        self.broken = false;
        Ok(())
    }

    /// Makes each folder on the server (`mkdir`, pipelined), with its mode and modification time,
    /// deepest first so that making one does not move the time of one above it: what `put -r`
    /// sends once the files are in, so empty folders arrive and every folder keeps its time.
    /// `each` hears each result. A server that predates protocol version 2 makes folders only on
    /// the way to a file: nothing is sent to it.
    pub fn make_folders(
        &mut self,
        folders: &[LocalFolder],
        mut each: impl FnMut(&Name, Result<(), ClientError>),
    ) -> Result<(), ClientError> {
        if !self.walks()? {
            return Ok(());
        }
        let mut order: Vec<&LocalFolder> = folders.iter().collect();
        order.sort_by_key(|f| std::cmp::Reverse(f.name.depth()));
        for batch in order.chunks(WINDOW) {
            for folder in batch {
                let request = Request::Mkdir { perm: folder.perm, mtime: folder.mtime, name: folder.name.clone() };
                self.send(&request)?;
            }
            self.flush()?;
            for folder in batch {
                let status = self.reading(|c| c.read_status())?;
                each(&folder.name, status.into_result().map(drop).map_err(ClientError::Server));
            }
        }
        Ok(())
    }

    /// What the server has beneath `folder` (the folder itself included), by name, for `put -r`
    /// to skip what is already there. A folder the server does not have holds nothing.
    pub fn remote_files(&mut self, folder: Option<&Name>) -> Result<Remote, ClientError> {
        let mut found = HashMap::new();
        let mut keep = |entry: MetaEntry| {
            found.insert(entry.name.clone(), entry);
            Ok(())
        };
        let listed = if self.walks()? {
            self.walk_each(folder, false, &mut keep)
        } else {
            self.list_all_each(folder, &mut keep)
        };
        match listed {
            Ok(_) => Ok(found),
            Err(ClientError::Server(reply))
                if matches!(reply.kind(), Some(protocol::ErrorCode::NotFound | protocol::ErrorCode::NotFile)) =>
            {
                Ok(HashMap::new())
            }
            Err(e) => Err(e),
        }
    }
}
