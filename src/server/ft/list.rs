//! Answering `list`: the served folder's files, written as the store walks them, so a listing
//! of any size costs a connection the same bounded memory (one open folder per level of nesting,
//! the connection's write buffer, the socket's), and a peer that asks and never reads holds no
//! more than that.
//!
//! With the `list-end` feature the reply is `OK`, the entries, then `OK <count>` (or an `ERR` if a
//! folder beneath could not be read, so the client knows the listing is incomplete). Without it
//! the reply must start with its count: a listing of up to [`SORTED_UP_TO`] entries is held,
//! sorted and sent as before; a longer one is walked twice, once to count and once to send. If the
//! folder changed between the two walks so that fewer entries are found than were announced, the
//! connection is closed rather than sent a wrong count.

use std::io::Write;

use super::error::ConnError;
use crate::mtime::Mtime;
use crate::name::Name;
use crate::server::get::open_error_code;
use crate::server::session::meta_entry;
use crate::store::{FileEntry, Found, OpenError, Root, WalkError};
use crate::wire::{self as protocol, EntryKind, ErrorCode, Form, ListEntry, MetaEntry};

/// Most entries a listing for a client without `list-end` is held in memory (and sorted) for.
pub const SORTED_UP_TO: usize = 4096;

/// How entries are written: `<size> <mtime> <name>` for files only, or with `list-meta`, files
/// and folders with their modes and exact times; names in the connection's form (a name that form
/// cannot carry is left out, as version 1 always left such names out).
#[derive(Clone, Copy)]
pub(crate) enum Format {
    Plain(Form),
    Meta(Form),
}

impl Format {
    fn walk<E>(
        self,
        root: &Root,
        folder: Option<&Name>,
        each: impl FnMut(FileEntry) -> Result<(), E>,
    ) -> Result<u64, WalkError<E>> {
        let form = self.form();
        let mut each = each;
        let carried = move |entry: FileEntry| if form.write(&entry.name).is_ok() { each(entry) } else { Ok(()) };
        match self {
            Format::Plain(_) => root.walk(folder, carried),
            Format::Meta(_) => root.walk_all(folder, carried),
        }
    }

    fn form(self) -> Form {
        match self {
            Format::Plain(form) | Format::Meta(form) => form,
        }
    }

    fn write(self, entry: FileEntry, w: &mut impl Write) -> std::io::Result<()> {
        match self {
            Format::Plain(form) => {
                ListEntry { size: entry.size, mtime: entry.mtime.secs, name: entry.name }.write(w, form)
            }
            Format::Meta(form) => meta_entry(entry).write(w, form),
        }
    }
}

/// Writes the reply to `list [folder]`, ending with a status line (`list-end`).
pub(crate) fn write_ended(
    root: &Root,
    folder: Option<&Name>,
    format: Format,
    w: &mut impl Write,
) -> Result<(), ConnError> {
    let mut started = false;
    let walked = format.walk(root, folder, |entry| {
        if !started {
            started = true;
            protocol::write_ok(w)?;
        }
        format.write(entry, w)
    });
    end_streamed(walked, started, w)
}

/// Ends a listing streamed as it was walked (`OK`, the entries, then a status line): `OK
/// <count>`, or, for one that stopped, the refusal of the folder asked for (if nothing was sent
/// yet) or an `ERR` that says the listing is incomplete.
fn end_streamed(
    walked: Result<u64, WalkError<std::io::Error>>,
    started: bool,
    w: &mut impl Write,
) -> Result<(), ConnError> {
    match walked {
        Err(WalkError::Stopped(e)) => Err(e.into()),
        Err(WalkError::Open(e)) if !started => Ok(refuse(w, &e)?),
        walked => {
            if !started {
                protocol::write_ok(w)?;
            }
            match walked {
                Ok(count) => Ok(protocol::write_ok_count(w, count)?),
                Err(e) => Ok(protocol::write_err(w, ErrorCode::Internal, &format_args!("listing incomplete: {e}"))?),
            }
        }
    }
}

/// Writes the reply to `list [folder]` for a client without `list-end`: `OK <count>`, then the
/// entries.
pub(crate) fn write_counted(
    root: &Root,
    folder: Option<&Name>,
    format: Format,
    w: &mut impl Write,
) -> Result<(), ConnError> {
    let mut held = Vec::new();
    let walked = format.walk(root, folder, |entry| {
        if held.len() >= SORTED_UP_TO {
            return Err(());
        }
        held.push(entry);
        Ok(())
    });
    match walked {
        Ok(_) => {
            held.sort_by(|a, b| a.name.cmp(&b.name));
            protocol::write_ok_count(w, held.len() as u64)?;
            for entry in held {
                format.write(entry, w)?;
            }
            return Ok(());
        }
        Err(WalkError::Open(e)) => return Ok(refuse(w, &e)?),
        Err(e @ WalkError::Read { .. }) => return Ok(failed(w, &e)?),
        Err(WalkError::Stopped(())) => drop(held),
    }
    let count = format.walk(root, folder, |_| Ok::<(), std::convert::Infallible>(()));
    let count = match count {
        Ok(count) => count,
        Err(WalkError::Open(e)) => return Ok(refuse(w, &e)?),
        Err(e) => return Ok(failed(w, &e)?),
    };
    protocol::write_ok_count(w, count)?;
    let mut left = count;
    let walked = format.walk(root, folder, |entry| {
        if left == 0 {
            return Err(None);
        }
        left -= 1;
        format.write(entry, w).map_err(Some)
    });
    match walked {
        Err(WalkError::Stopped(Some(e))) => Err(e.into()),
        _ if left == 0 => Ok(()),
        _ => Err(ConnError::ListChanged { announced: count, sent: count - left }),
    }
}

/// Writes the reply to `walk links|follow [folder]` (version 2): `OK`, an entry per line for
/// everything found (what could not be read as `type=e` entries, after which the walk goes on),
/// then `OK <count>`.
pub(crate) fn write_walk(
    root: &Root,
    folder: Option<&Name>,
    follow: bool,
    w: &mut impl Write,
) -> Result<(), ConnError> {
    let mut started = false;
    let walked = root.walk_tree(folder, follow, |found| {
        if !started {
            started = true;
            protocol::write_ok(w)?;
        }
        let entry = match found {
            Found::Entry(entry) => meta_entry(entry),
            Found::Unreadable { name, error } => {
                let code = open_error_code(&error.open_error());
                let kind = EntryKind::Unreadable { code, message: error.to_string() };
                MetaEntry { kind, size: 0, mtime: Mtime::default(), mode: 0, name }
            }
        };
        entry.write(w, Form::Escaped)
    });
    end_streamed(walked, started, w)
}

/// The `ERR` for a folder that cannot be listed, said of it as a folder.
fn refuse(w: &mut impl Write, e: &OpenError) -> std::io::Result<()> {
    match e {
        OpenError::NotFound => protocol::write_err(w, ErrorCode::NotFound, &"no such folder"),
        OpenError::NotFile => protocol::write_err(w, ErrorCode::NotFile, &"not a folder"),
        e => protocol::write_err(w, open_error_code(e), e),
    }
}

fn failed<E>(w: &mut impl Write, e: &WalkError<E>) -> std::io::Result<()> {
    protocol::write_err(w, ErrorCode::Internal, &format_args!("cannot list: {e}"))
}
