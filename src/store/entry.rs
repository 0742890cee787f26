//! What a walk or a lookup finds beneath the root: entries and what they are, and why a walk
//! stopped.

use std::io;

use cap_std::fs::MetadataExt as _;

use crate::mtime::Mtime;
use crate::name::Name;

use super::error::OpenError;

/// Deepest folder nesting a walk follows: a [`Name`] of at most `MAX_NAME_LEN` bytes has at most
/// half as many components, so nothing servable lies deeper. Each level holds one open folder.
pub(super) const MAX_DEPTH: usize = crate::name::MAX_NAME_LEN / 2;

/// What an entry beneath the root is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File,
    Folder,
    /// A symlink, as itself (a walk that does not follow links): the text it holds.
    Symlink(Vec<u8>),
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl Kind {
    pub(super) fn of(file_type: cap_std::fs::FileType) -> Kind {
        use cap_std::fs::FileTypeExt as _;
        if file_type.is_file() {
            Kind::File
        } else if file_type.is_dir() {
            Kind::Folder
        } else if file_type.is_symlink() {
            Kind::Symlink(Vec::new())
        } else if file_type.is_fifo() {
            Kind::Fifo
        } else if file_type.is_socket() {
            Kind::Socket
        } else if file_type.is_char_device() {
            Kind::CharDevice
        } else {
            Kind::BlockDevice
        }
    }
}

/// One entry found beneath the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub name: Name,
    pub kind: Kind,
    /// 0 but for a file.
    pub size: u64,
    /// Modification time, seconds since the Unix epoch, and nanoseconds.
    pub mtime: Mtime,
    /// Permission bits (`0o7777`).
    pub mode: u32,
}

impl FileEntry {
    pub(super) fn of(name: Name, meta: Option<&cap_std::fs::Metadata>, kind: Kind) -> FileEntry {
        match meta {
            Some(m) => FileEntry {
                name,
                size: if kind == Kind::File { m.len() } else { 0 },
                mtime: Mtime::of_raw(m.mtime(), m.mtime_nsec()),
                mode: m.mode() & 0o7777,
                kind,
            },
            None => FileEntry { name, size: 0, mtime: Mtime::default(), mode: 0, kind },
        }
    }

    pub fn is_folder(&self) -> bool {
        self.kind == Kind::Folder
    }
}

/// What a [`Root::walk_tree`](super::Root::walk_tree) finds at one name.
#[derive(Debug)]
pub enum Found {
    Entry(FileEntry),
    /// Something that could not be read: a folder (so what it holds is not known) or an entry. The
    /// name is the nearest one that can be named.
    Unreadable {
        name: Name,
        error: WalkProblem,
    },
}

/// Why an entry found by a walk could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WalkProblem {
    #[error("cannot read the folder: {0}")]
    Folder(OpenError),
    #[error("cannot read it: {0}")]
    Entry(OpenError),
    #[error("nested more than {MAX_DEPTH} folders deep")]
    TooDeep,
    #[error("it holds an entry whose name cannot be served ({0})")]
    BadName(crate::name::NameError),
}

impl WalkProblem {
    /// The kind of failure, as an [`OpenError`] says it.
    pub fn open_error(&self) -> OpenError {
        match self {
            WalkProblem::Folder(e) | WalkProblem::Entry(e) => match e {
                OpenError::NotFound => OpenError::NotFound,
                OpenError::NotFile => OpenError::NotFile,
                OpenError::Denied => OpenError::Denied,
                OpenError::Io(e) => OpenError::Io(io::Error::new(e.kind(), e.to_string())),
            },
            WalkProblem::TooDeep | WalkProblem::BadName(_) => OpenError::Io(io::Error::other("cannot be listed")),
        }
    }
}

/// Why [`Root::walk`](super::Root::walk) stopped before the end.
#[derive(Debug, thiserror::Error)]
pub enum WalkError<E> {
    /// The folder asked for cannot be listed (missing, not a folder, refused).
    #[error(transparent)]
    Open(OpenError),
    /// A folder beneath it could not be read to its end: the listing is incomplete.
    #[error("cannot read {folder}: {source}")]
    Read { folder: String, source: io::Error },
    /// The caller's `each` returned an error.
    #[error("listing stopped")]
    Stopped(E),
}
