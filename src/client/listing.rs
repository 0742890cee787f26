//! What the server holds, without the bytes: listings and walks entry by entry, one entry's
//! `stat`, digests (`sum`), and the server's counters.

use std::io::{self, Write};

use super::conn::Client;
use super::download::WINDOW;
use super::result::ClientError;
use crate::digest::Digest;
use crate::mtime::Mtime;
use crate::name::Name;
use crate::wire::escape;
use crate::wire::{
    self as protocol, Agreed, EntryKind, Feature, Form, ListEntry, MetaEntry, ProtocolError, Reply, Request, Summed,
};

/// Most entries [`Client::list`] keeps in memory; [`Client::list_each`] has no limit.
pub const MAX_LIST_KEPT: usize = 1_000_000;

/// Most lines a `stats` reply may announce (the server sends a few dozen).
pub const MAX_STATS: u64 = 1024;

impl Client {
    /// The files the server offers, under `folder` or all of them, sorted by name.
    /// At most [`MAX_LIST_KEPT`] of them: a listing longer than that is an error here (see
    /// [`Client::list_each`] to go through one of any length).
    pub fn list(&mut self, folder: Option<&Name>) -> Result<Vec<ListEntry>, ClientError> {
        let mut entries = Vec::new();
        self.list_each(folder, |entry| {
            if entries.len() >= MAX_LIST_KEPT {
                return Err(io::Error::other(format!("listing longer than {MAX_LIST_KEPT} entries")));
            }
            entries.push(entry);
            Ok(())
        })?;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// The files the server offers, handed to `each` one by one as they arrive, so a listing of
    /// any length takes the memory of one entry. Returns how many there were. An error from
    /// `each` stops the listing (the connection is then out of step). The order is the server's
    /// (a server that streams its listing sends it unsorted).
    pub fn list_each(
        &mut self,
        folder: Option<&Name>,
        mut each: impl FnMut(ListEntry) -> io::Result<()>,
    ) -> Result<u64, ClientError> {
        let mut files = 0;
        self.list_all_each(folder, |entry| {
            if !entry.is_file() {
                return Ok(());
            }
            files += 1;
            each(ListEntry { size: entry.size, mtime: entry.mtime.secs, name: entry.name })
        })?;
        Ok(files)
    }

    /// [`Client::list_each`], telling `unreadable` of each entry the server could not read (a
    /// server that walks says so and goes on; an older one ends such a listing with an error).
    pub fn list_each_reporting(
        &mut self,
        folder: Option<&Name>,
        mut each: impl FnMut(ListEntry) -> io::Result<()>,
        mut unreadable: impl FnMut(&Name, &str),
    ) -> Result<u64, ClientError> {
        if !self.walks()? {
            return self.list_each(folder, each);
        }
        let mut files = 0;
        self.walk_each(folder, true, |entry| match entry.kind {
            EntryKind::File => {
                files += 1;
                each(ListEntry { size: entry.size, mtime: entry.mtime.secs, name: entry.name })
            }
            EntryKind::Unreadable { message, .. } => {
                unreadable(&entry.name, &message);
                Ok(())
            }
            _ => Ok(()),
        })?;
        Ok(files)
    }

    /// Whether the server sends folders, modes and exact times in its listings (`list-meta`).
    pub fn lists_folders(&mut self) -> Result<bool, ClientError> {
        Ok(self.agreed()?.has(Feature::ListMeta))
    }

    /// [`Client::list_each`] with folders too (each before what it holds) and every entry's mode
    /// and exact modification time, from a server that agreed to `list-meta`; from one that did
    /// not, files only, with mode 0 and whole seconds. Returns how many entries there were.
    pub fn list_all_each(
        &mut self,
        folder: Option<&Name>,
        each: impl FnMut(MetaEntry) -> io::Result<()>,
    ) -> Result<u64, ClientError> {
        self.entries_each(&Request::List(folder.cloned()), each)
    }

    /// Whether the server can `walk` a tree, saying what every entry is (protocol version 2).
    pub fn walks(&mut self) -> Result<bool, ClientError> {
        Ok(self.agreed()?.version >= 2)
    }

    /// Every entry beneath `folder` (or the whole server) as `walk` lists it, handed to `each` as
    /// it arrives: files, folders (each before what it holds), symlinks (with `follow`, followed
    /// inside the server's root and listed as what they lead to), fifos, sockets, devices, and
    /// what the server could not read ([`EntryKind::Unreadable`]). Returns how many there were.
    /// Needs protocol version 2 ([`Client::walks`]).
    pub fn walk_each(
        &mut self,
        folder: Option<&Name>,
        follow: bool,
        each: impl FnMut(MetaEntry) -> io::Result<()>,
    ) -> Result<u64, ClientError> {
        self.entries_each(&Request::Walk { follow, folder: folder.cloned() }, each)
    }

    /// [`Client::walk_each`] where the server can walk, returning `None` where it cannot. Asked
    /// before the reply to `hello` has come, the walk leaves at once on the bet that the server
    /// speaks version 2, as this build does, which saves the round trip of waiting for that reply;
    /// a server that does not answers it with an error, read and dropped here, the connection in
    /// step.
    pub fn walk_each_if_walks(
        &mut self,
        folder: Option<&Name>,
        follow: bool,
        each: impl FnMut(MetaEntry) -> io::Result<()>,
    ) -> Result<Option<u64>, ClientError> {
        if self.agreed.is_some() || self.broken {
            return match self.walks()? {
                true => self.walk_each(folder, follow, each).map(Some),
                false => Ok(None),
            };
        }
        let line = Request::Walk { follow, folder: folder.cloned() }.to_line(Form::Escaped);
        let written = writeln!(self.stream, "{}", line.map_err(ClientError::Unsayable)?);
        self.or_lost(written)?;
        self.flush()?;
        let walks = self.walks()?;
        let status = self.reading(|c| c.read_status())?;
        match (walks, status.into_result()) {
            (true, Ok(fields)) => self.read_entries(true, &fields, each).map(Some),
            (true, Err(reply)) => Err(ClientError::Server(reply)),
            (false, Err(_)) => Ok(None),
            (false, Ok(_)) => Err(self.lost(ProtocolError::Malformed("a version 1 server answered walk".into()))),
        }
    }

    /// What is at `name` on the server, not following a symlink at its end (`stat`, protocol
    /// version 2); `ERR not-found` if nothing.
    pub fn stat(&mut self, name: &Name) -> Result<MetaEntry, ClientError> {
        let fields = self.call(&Request::Stat(name.clone()))?;
        let entry = MetaEntry::parse(fields.as_bytes(), Form::Escaped)?;
        if entry.name != *name {
            return Err(ProtocolError::Malformed(format!("stat {name} answered for {}", entry.name)).into());
        }
        Ok(entry)
    }

    /// The reply to a `list` or a `walk`, entry by entry.
    pub(super) fn entries_each(
        &mut self,
        request: &Request,
        each: impl FnMut(MetaEntry) -> io::Result<()>,
    ) -> Result<u64, ClientError> {
        let fields = self.call(request)?;
        self.read_entries(matches!(request, Request::Walk { .. }), &fields, each)
    }

    /// The entries of a `list` (or, with `walk`, a `walk`) reply whose status line gave `fields`.
    fn read_entries(
        &mut self,
        walk: bool,
        fields: &str,
        mut each: impl FnMut(MetaEntry) -> io::Result<()>,
    ) -> Result<u64, ClientError> {
        let meta = walk || self.agreed.as_ref().is_some_and(|a| a.has(Feature::ListMeta));
        let ended = walk || self.agreed.as_ref().is_some_and(|a| a.has(Feature::ListEnd));
        let form = self.agreed.as_ref().map_or(Form::Plain, Agreed::form);
        // With list-end the count comes last; without, first.
        let count = if ended {
            if !fields.is_empty() {
                let what = format!("unexpected list header 'OK {}'", escape(fields));
                return Err(self.lost(ProtocolError::Malformed(what)));
            }
            u64::MAX
        } else {
            let count = protocol::parse_count(fields);
            self.or_lost(count)?
        };
        let mut done = 0u64;
        while done < count {
            let line = match self.read_line() {
                Ok(line) => line,
                Err(ClientError::Protocol(ProtocolError::Closed)) => {
                    let of = if ended { String::new() } else { format!(" of {count}") };
                    let what = format!("connection closed after {done}{of} listed entries");
                    return Err(ProtocolError::Malformed(what).into());
                }
                Err(e) => return Err(e),
            };
            if ended && protocol::is_status_line(line) {
                return match protocol::parse_status(line).and_then(|status| status.parsed(protocol::parse_count)) {
                    Ok(Reply::Answer(sent)) if sent == done => Ok(done),
                    Ok(Reply::Answer(sent)) => {
                        let what = format!("listing ended with a count of {sent} after {done} entries");
                        Err(self.lost(ProtocolError::Malformed(what)))
                    }
                    Ok(Reply::Refused(reply)) => Err(ClientError::Server(reply)),
                    Err(e) => Err(self.lost(e)),
                };
            }
            let entry = if meta {
                MetaEntry::parse(line, form)
            } else {
                ListEntry::parse(line, form).map(|e| MetaEntry {
                    kind: EntryKind::File,
                    size: e.size,
                    mtime: Mtime::new(e.mtime, 0),

                    mode: 0,
                    name: e.name,
                })
            };
            let entry = self.or_lost(entry)?;
            done += 1;
            if let Err(e) = each(entry) {
                return Err(self.lost(ClientError::Local { path: "-".into(), source: e }));
            }
        }
        Ok(count)
    }

    /// The digest of each of `names` as the server has it (`sum`), pipelined: handed to `each`
    /// in order. Stops at an error that leaves the connection out of step.
    pub fn sum_all(
        &mut self,
        names: &[Name],
        mut each: impl FnMut(&Name, Result<(u64, Digest), ClientError>),
    ) -> Result<(), ClientError> {
        for batch in names.chunks(WINDOW) {
            for name in batch {
                self.send(&Request::Sum(name.clone()))?;
            }
            self.flush()?;
            for name in batch {
                let summed = self.read_reply(Summed::parse)?.into_result();
                each(name, summed.map(|s| (s.size, s.digest)).map_err(ClientError::Server));
            }
        }
        Ok(())
    }

    /// The server's counters, in the order it sent them (at most [`MAX_STATS`]).
    pub fn stats(&mut self) -> Result<Vec<(String, u64)>, ClientError> {
        let count = self.call_count(&Request::Stats)?;
        if count > MAX_STATS {
            let what = format!("{count} stats lines announced; at most {MAX_STATS}");
            return Err(self.lost(ProtocolError::Malformed(what)));
        }
        let mut stats = Vec::new();
        for _ in 0..count {
            stats.push(protocol::parse_stat(self.read_line()?)?);
        }
        Ok(stats)
    }
}
