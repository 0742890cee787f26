//! The uploads' staging folder beneath the root: where interrupted uploads are kept for resuming
//! and replacements are staged; never listed or served.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use rustix::fs::AtFlags;
use rustix::io::Errno;

use crate::digest::Digest;
use crate::mtime::Mtime;
use crate::name::Name;

use super::held::Held;

/// The folder beneath the root where uploads of [`RESUMABLE_FROM`] bytes or more are written (so
/// an interrupted one can go on) and replacements are staged; neither listed nor served.
pub const STAGING: &str = ".ft-partial";

pub use crate::RESUMABLE_FROM;

/// Whether `name` lies in the uploads' staging folder, which is neither listed nor served.
pub fn is_reserved(name: &Name) -> bool {
    name.components().next() == Some(STAGING.as_bytes())
}

/// The staging folder, open, and the file system it is on.
pub(super) struct Staging {
    pub(super) dir: OwnedFd,
    pub(super) dev: u64,
    /// The folder's inode: whatever path reaches it (a symlink `self -> .` in the root, say), it
    /// is never listed or served.
    pub(super) ino: u64,
    /// What it holds.
    pub(super) held: Arc<Held>,
}

impl Staging {
    pub(super) fn dev(&self) -> u64 {
        self.dev
    }

    /// Whether the staging name `key` still holds the file whose status is `st`: an upload that
    /// finished meanwhile takes its file out of the staging folder, and a later one may put
    /// another file under the same name.
    pub(super) fn still_names(&self, key: &str, st: &rustix::fs::Stat) -> Result<bool, Errno> {
        match rustix::fs::statat(&self.dir, key, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(named) => Ok((named.st_dev, named.st_ino) == (st.st_dev, st.st_ino)),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// A name the store may look up, open, list or write: not in the staging folder. The one way to
/// make one is [`Unstaged::new`], and everything that reaches into the root from a name (its
/// lookups and opens, finding an upload's folders, naming a staging file) takes this type, so
/// none can skip the rule. It reads as the [`Name`] it holds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Unstaged<'n>(&'n Name);

impl<'n> Unstaged<'n> {
    /// `name`, unless it lies in the staging folder.
    pub(super) fn new(name: &'n Name) -> Option<Unstaged<'n>> {
        (!is_reserved(name)).then_some(Unstaged(name))
    }

    /// The name, for as long as it lives.
    pub(super) fn name(self) -> &'n Name {
        self.0
    }
}

impl std::ops::Deref for Unstaged<'_> {
    type Target = Name;

    fn deref(&self) -> &Name {
        self.0
    }
}

/// The staging file's name for an upload of `name`, `len` bytes, modified at `mtime`.
pub(super) fn partial_key(name: Unstaged<'_>, len: u64, mtime: Mtime) -> String {
    let mut key = format!("{len} {} {} ", mtime.secs, mtime.nanos).into_bytes();
    key.extend_from_slice(name.as_bytes());
    format!("{}.part", Digest::of(&key))
}
