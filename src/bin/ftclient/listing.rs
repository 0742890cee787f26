//! `ftclient list`, and printing a listing in name order without holding one of any size: a server
//! streams its listing in the order its file system yields, so up to [`SORT_UP_TO`] entries are
//! held and printed sorted at the end; a longer listing prints what is held, sorted, then the rest
//! as it comes.

use std::ffi::OsString;
use std::io::{self, Write};

use anyhow::Context;
use ft::client::{Client, ClientError};
use ft::wire::{ListEntry, escape};

use crate::exit;
use crate::names::arg_folder;
use crate::report::EntryJson;

/// `list [FOLDER]`: a table for people, or with `json` a JSON array; sorted by name (see the
/// module doc). An entry the server could not read is named on stderr, and the exit code is
/// [`exit::PARTIAL`].
pub(crate) fn run(
    connect: &(dyn Fn() -> Result<Client, ClientError> + Sync),
    folder: Option<OsString>,
    json: bool,
) -> anyhow::Result<u8> {
    let folder = match folder {
        Some(f) => arg_folder(&f)?,
        None => None,
    };
    let what = folder.as_ref().map_or("list".to_string(), |f| format!("list {f}"));
    let mut out = io::BufWriter::new(io::stdout().lock());
    let mut first = true;
    if json {
        out.write_all(b"[")?;
    }
    let mut sorting = Sorting::new(|entry: &ListEntry| {
        if json {
            out.write_all(if first { b"\n  " } else { b",\n  " })?;
            serde_json::to_writer(&mut out, &EntryJson::new(entry))?;
        } else {
            print_entry(&mut out, entry)?;
        }
        first = false;
        Ok(())
    });
    let mut unreadable = 0u64;
    let listed = connect()?.list_each_reporting(
        folder.as_ref(),
        |entry| sorting.push(entry),
        |name, why| {
            unreadable += 1;
            eprintln!("ftclient: {name}: the server cannot read it: {}", escape(why));
        },
    );
    sorting.finish()?;
    if json && listed.is_ok() {
        out.write_all(b"\n]\n")?;
    }
    out.flush()?;
    listed.context(what)?;
    if unreadable > 0 {
        eprintln!("ftclient: the listing is incomplete: the server could not read {unreadable} entries");
        return Ok(exit::PARTIAL);
    }
    Ok(0)
}

/// A table for people: human size, modification time (UTC), then the name, escaped.
pub(crate) fn print_entry(out: &mut impl Write, e: &ListEntry) -> io::Result<()> {
    writeln!(out, "{:>10}  {}  {}", ft::human::size(e.size), ft::human::utc(e.mtime), e.name)
}

/// Most entries held to print a listing sorted (about 10 MB).
pub const SORT_UP_TO: usize = 100_000;

pub struct Sorting<F: FnMut(&ListEntry) -> io::Result<()>> {
    held: Vec<ListEntry>,
    streaming: bool,
    print: F,
}

impl<F: FnMut(&ListEntry) -> io::Result<()>> Sorting<F> {
    pub fn new(print: F) -> Self {
        Sorting { held: Vec::new(), streaming: false, print }
    }

    pub fn push(&mut self, entry: ListEntry) -> io::Result<()> {
        if self.streaming {
            return (self.print)(&entry);
        }
        self.held.push(entry);
        if self.held.len() >= SORT_UP_TO {
            self.streaming = true;
            self.print_held()?;
        }
        Ok(())
    }

    /// Prints what is still held; call at the end of the listing (also one that failed).
    pub fn finish(mut self) -> io::Result<()> {
        self.print_held()
    }

    fn print_held(&mut self) -> io::Result<()> {
        self.held.sort_by(|a, b| a.name.cmp(&b.name));
        for entry in self.held.drain(..) {
            (self.print)(&entry)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_listings_come_out_sorted_and_long_ones_in_bounded_memory() {
        let entry =
            |n: usize| ListEntry { size: 0, mtime: 0, name: ft::name::Name::parse(&format!("f{n:07}")).unwrap() };
        let mut printed = Vec::new();
        let mut sorting = Sorting::new(|e: &ListEntry| {
            printed.push(e.name.to_string());
            Ok(())
        });
        for n in [3, 1, 2] {
            sorting.push(entry(n)).unwrap();
        }
        sorting.finish().unwrap();
        assert_eq!(printed, ["f0000001", "f0000002", "f0000003"]);

        let mut printed = Vec::new();
        let mut sorting = Sorting::new(|e: &ListEntry| {
            printed.push(e.name.to_string());
            Ok(())
        });
        for n in (0..SORT_UP_TO + 10).rev() {
            sorting.push(entry(n)).unwrap();
            assert!(sorting.held.len() < SORT_UP_TO);
        }
        sorting.finish().unwrap();
        assert_eq!(printed.len(), SORT_UP_TO + 10);
        assert_eq!(printed[0], entry(10).name.to_string(), "the first block came out sorted");
    }
}
