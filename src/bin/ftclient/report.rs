//! What `--json` prints, as types: one record per file for `get` and `put` alike, the summaries
//! of `get`, `put` and `get -r`, and `list`'s entries. Names are carried exactly (a name that is
//! not UTF-8 in its escaped wire form, marked `"name_encoding": "percent"`).

use std::io::{self, Write};

use ft::client::ClientError;
use ft::digest::Digest;
use ft::name::Name;
use ft::wire::ListEntry;
use serde::Serialize;

use crate::exit::code_of;

/// A name as JSON carries it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct NameJson {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name_encoding: Option<&'static str>,
}

impl NameJson {
    pub(crate) fn new(name: &Name) -> NameJson {
        match name.to_str() {
            Some(s) => NameJson { name: s.to_string(), name_encoding: None },
            None => NameJson { name: name.escaped().into_owned(), name_encoding: Some("percent") },
        }
    }
}

/// What became of one file of a `get` or a `put`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    /// Transferred and verified.
    Ok,
    /// `get --no-clobber`: a local file of that name was kept.
    Kept,
    /// `put`: the server has it unchanged; not sent.
    Unchanged,
    Error,
}

/// One file of a `get` or a `put`: its status, and what was moved or why not.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FileRecord {
    #[serde(flatten)]
    name: NameJson,
    pub(crate) status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    xxh3: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resumed_from: Option<u64>,
    /// `get`: a partial copy did not match the server's file and was fetched afresh.
    #[serde(skip_serializing_if = "Option::is_none")]
    started_over: Option<bool>,
    /// `get`: bytes taken from the older local copy (a delta download) instead of received.
    #[serde(skip_serializing_if = "Option::is_none")]
    reused: Option<u64>,
    /// `get`: bytes compression spared the wire.
    #[serde(skip_serializing_if = "Option::is_none")]
    compression_saved: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl FileRecord {
    fn new(name: &Name, status: Status) -> FileRecord {
        FileRecord {
            name: NameJson::new(name),
            status,
            size: None,
            xxh3: None,
            resumed_from: None,
            started_over: None,
            reused: None,
            compression_saved: None,
            exit_code: None,
            error: None,
        }
    }

    /// A file moved whole (from `resumed_from` on) and verified.
    pub(crate) fn ok(name: &Name, size: u64, digest: Digest, resumed_from: u64) -> FileRecord {
        FileRecord {
            size: Some(size),
            xxh3: Some(digest.to_string()),
            resumed_from: Some(resumed_from),
            ..FileRecord::new(name, Status::Ok)
        }
    }

    /// A download: [`FileRecord::ok`], whether it started over, the bytes it took from the
    /// older local copy, and the bytes compression spared.
    pub(crate) fn downloaded(self, started_over: bool, reused: u64, compression_saved: u64) -> FileRecord {
        FileRecord { started_over: Some(started_over), ..self.spared(reused, compression_saved) }
    }

    /// A transfer's bytes that did not cross the wire: taken from the receiver's older copy
    /// (delta), and spared by compression.
    pub(crate) fn spared(self, reused: u64, compression_saved: u64) -> FileRecord {
        FileRecord { reused: Some(reused), compression_saved: Some(compression_saved), ..self }
    }

    pub(crate) fn kept(name: &Name) -> FileRecord {
        FileRecord::new(name, Status::Kept)
    }

    pub(crate) fn unchanged(name: &Name) -> FileRecord {
        FileRecord::new(name, Status::Unchanged)
    }

    pub(crate) fn failed(name: &Name, e: &ClientError) -> FileRecord {
        FileRecord { exit_code: Some(code_of(e)), error: Some(e.to_string()), ..FileRecord::new(name, Status::Error) }
    }
}

/// `get --json`.
#[derive(Debug, Serialize)]
pub(crate) struct GetSummary {
    pub(crate) ok: usize,
    pub(crate) kept: usize,
    pub(crate) failed: usize,
    pub(crate) not_fetched: usize,
    pub(crate) bytes_received: u64,
    /// Bytes taken from older local copies by delta downloads instead of received.
    pub(crate) bytes_reused: u64,
    /// Bytes compression spared the wire.
    pub(crate) bytes_compression_saved: u64,
    pub(crate) elapsed_secs: f64,
    /// In the order the names were given.
    pub(crate) files: Vec<FileRecord>,
}

/// `put --json`.
#[derive(Debug, Serialize)]
pub(crate) struct PutSummary {
    pub(crate) sent: u64,
    pub(crate) skipped: u64,
    pub(crate) failed: u64,
    /// Bytes of the files' content that crossed the wire.
    pub(crate) bytes_sent: u64,
    /// Bytes the server took from its older copies (delta uploads) instead.
    pub(crate) bytes_reused: u64,
    /// Bytes compression spared the wire.
    pub(crate) bytes_compression_saved: u64,
    pub(crate) elapsed_secs: f64,
    /// Without `-r`: each file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) files: Option<Vec<FileRecord>>,
}

/// `get -r --json` (one line).
#[derive(Debug, Serialize)]
pub(crate) struct TreeSummary {
    pub(crate) fetched: u64,
    pub(crate) skipped: u64,
    pub(crate) made: u64,
    pub(crate) deleted: u64,
    pub(crate) deletion_skipped: bool,
    pub(crate) failed: u64,
    pub(crate) not_copied: u64,
    pub(crate) bytes_received: u64,
    /// Bytes taken from older local copies by delta downloads instead of received.
    pub(crate) bytes_reused: u64,
    /// Bytes compression spared the wire.
    pub(crate) bytes_compression_saved: u64,
    pub(crate) dry_run: bool,
    pub(crate) elapsed_secs: f64,
}

/// One entry of `list --json`.
#[derive(Debug, Serialize)]
pub(crate) struct EntryJson {
    #[serde(flatten)]
    name: NameJson,
    size: u64,
    /// RFC 3339, UTC.
    mtime: String,
    mtime_unix: i64,
}

impl EntryJson {
    pub(crate) fn new(e: &ListEntry) -> EntryJson {
        EntryJson { name: NameJson::new(&e.name), size: e.size, mtime: ft::human::utc(e.mtime), mtime_unix: e.mtime }
    }
}

/// Prints `value` on stdout, indented, and a line feed.
pub(crate) fn print_pretty(value: &impl Serialize) -> io::Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)
}

/// Prints `value` on stdout as one line.
pub(crate) fn print_line(value: &impl Serialize) -> io::Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_of_get_and_put_share_one_shape() {
        let name = Name::parse("a b.txt").unwrap();
        let ok = serde_json::to_value(FileRecord::ok(&name, 10, Digest::of(b"x"), 4).downloaded(false, 3, 2)).unwrap();
        assert_eq!(ok["name"], "a b.txt");
        assert_eq!(ok["status"], "ok");
        assert_eq!((ok["size"].as_u64(), ok["resumed_from"].as_u64()), (Some(10), Some(4)));
        assert_eq!(ok["xxh3"], Digest::of(b"x").to_string());
        assert_eq!(ok["started_over"], false);
        assert_eq!((ok["reused"].as_u64(), ok["compression_saved"].as_u64()), (Some(3), Some(2)));
        assert!(ok.get("name_encoding").is_none() && ok.get("error").is_none());
        let put = serde_json::to_value(FileRecord::ok(&name, 10, Digest::of(b"x"), 0)).unwrap();
        assert!(put.get("started_over").is_none(), "a put never starts over");
        let kept = serde_json::to_value(FileRecord::kept(&name)).unwrap();
        assert_eq!(kept, serde_json::json!({"name": "a b.txt", "status": "kept"}));
        let failed = serde_json::to_value(FileRecord::failed(&name, &ClientError::Timeout)).unwrap();
        assert_eq!(failed["status"], "error");
        assert_eq!(failed["exit_code"], crate::exit::CONNECTION);
        assert_eq!(failed["error"], ClientError::Timeout.to_string());
    }

    #[test]
    fn a_name_that_is_not_utf8_is_marked_escaped() {
        let name = Name::from_bytes(b"caf\xe9").unwrap();
        let value = serde_json::to_value(FileRecord::unchanged(&name)).unwrap();
        assert_eq!(value["name"], name.escaped().as_ref());
        assert_eq!(value["name_encoding"], "percent");
        assert_eq!(value["status"], "unchanged");
    }
}
