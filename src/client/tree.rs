//! Fetching folders (`ftclient get -r`), and keeping a local copy in sync as rsync does.
//!
//! For each folder named, the server's listing (with `list-meta`: folders, modes and exact
//! times) says what there is. Folders are made locally; a file whose local copy has the same
//! size and modification time is skipped (rsync's quick check), every other one is fetched,
//! pipelined over the connection as `get` does; then folders get the server's modes and times
//! (deepest first, so setting one does not move its parent's time). With `delete`, what lies
//! beneath a fetched folder and the server no longer has is removed, but only when every listing
//! was read to its end, and never through a symlink or outside the output folder.

use std::collections::HashSet;

use super::{Client, ClientError, Downloaded, OutDir};
use crate::name::Name;
use crate::wire::{ErrorCode, MetaEntry};

/// How a tree is fetched.
#[derive(Debug, Clone, Copy, Default)]
pub struct TreeOptions {
    /// Continue `.part` files (as `get` does by default).
    pub resume: bool,
    /// Remove local files and folders beneath the fetched folders that the server does not have.
    pub delete: bool,
    /// Say what would be fetched and removed; change nothing.
    pub dry_run: bool,
    /// Compare a local file with the server's by digest, not by size and modification time:
    /// the server's digests come without the bytes (`sum`), a local one costs a read.
    pub checksum: bool,
}

/// What fetching a tree did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeSummary {
    /// Files fetched (or, dry, that would be).
    pub fetched: u64,
    /// Files skipped: the local copy has the server's size and modification time.
    pub skipped: u64,
    /// Files and folders removed (or that would be).
    pub deleted: u64,
    /// File bytes received.
    pub bytes: u64,
    /// Files that failed.
    pub failed: u64,
}

/// What happened to one entry, for the caller to report.
pub enum TreeEvent<'a> {
    /// A file was fetched, or failed.
    Fetched(&'a Name, &'a Result<Downloaded, ClientError>),
    /// With `dry_run`: a file that would be fetched.
    WouldFetch(&'a Name),
    /// A local file or folder removed (or, dry, that would be).
    Deleted(&'a str),
}

/// One named thing to fetch: a folder (or the whole root: `None`), or a file.
enum Top {
    Folder(Option<Name>),
    File,
}

impl Client {
    /// Fetches each of `names` into `dir`: a folder with all it holds (`None` for the whole
    /// root), a file as `get` would. See the module doc for what is skipped and removed. An
    /// error that stops the whole fetch (the connection lost, a listing that cannot be read) is
    /// returned; a file that fails is reported and counted, and the others go on.
    pub fn fetch_tree(
        &mut self,
        names: &[Option<Name>],
        dir: &OutDir,
        options: TreeOptions,
        mut report: impl FnMut(TreeEvent<'_>),
    ) -> Result<TreeSummary, ClientError> {
        let mut summary = TreeSummary::default();
        let mut folders: Vec<MetaEntry> = Vec::new();
        let mut fetch: Vec<Name> = Vec::new();
        let mut tops = Vec::new();
        // With `delete`, every name the server listed (and a listing that names one twice is
        // refused); without, none is kept: a listing of any length costs only the files to fetch.
        let mut listed: HashSet<String> = HashSet::new();
        let remember = options.delete;
        for name in names {
            let quick_check = !options.checksum;
            let listing = self.list_tree(
                name.as_ref(),
                quick_check,
                remember.then_some(&mut listed),
                &mut folders,
                &mut fetch,
                dir,
                &mut summary,
            );
            let top = match listing {
                Ok(()) => Top::Folder(name.clone()),
                Err(ClientError::Server(reply)) if reply.kind() == Some(ErrorCode::NotFile) && name.is_some() => {
                    let Some(file) = name.clone() else { continue };
                    listed.insert(file.to_string());
                    fetch.push(file);
                    Top::File
                }
                Err(e) => return Err(e),
            };
            tops.push(top);
        }
        if options.checksum {
            fetch = self.compare_digests(fetch, dir, &mut summary)?;
        }
        if options.dry_run {
            for name in &fetch {
                report(TreeEvent::WouldFetch(name));
            }
            summary.fetched = fetch.len() as u64;
        } else {
            // The folders named (their own mode and time would come from a listing of their
            // parent, which was not asked for: they keep what they get here), then those beneath.
            let named = tops.iter().filter_map(|t| match t {
                Top::Folder(Some(name)) => Some(name),
                _ => None,
            });
            for name in named.chain(folders.iter().map(|f| &f.name)) {
                if let Err(source) = dir.ensure_folder(name) {
                    return Err(ClientError::Local { path: dir.path().join(name.as_path()), source });
                }
            }
            let left = self.download_all(&fetch, dir, options.resume, |name, result| {
                match result {
                    Ok(done) => {
                        summary.fetched += 1;
                        summary.bytes += done.size - done.resumed_from;
                    }
                    Err(ClientError::Kept { .. }) => summary.skipped += 1,
                    Err(_) => summary.failed += 1,
                }
                report(TreeEvent::Fetched(name, &result));
            });
            summary.failed += left as u64;
            // Deepest first: setting a folder's time after its children are in place.
            folders.sort_by_key(|f| std::cmp::Reverse(f.name.as_str().matches('/').count()));
            for folder in &folders {
                if let Err(source) = dir.set_folder(&folder.name, folder.mode, (folder.mtime, folder.mtime_nsec)) {
                    return Err(ClientError::Local { path: dir.path().join(folder.name.as_path()), source });
                }
            }
            if left > 0 {
                return Err(ClientError::Broken);
            }
        }
        if options.delete {
            for top in &tops {
                let Top::Folder(top) = top else { continue };
                let mut removed = |name: &str| report(TreeEvent::Deleted(name));
                match dir.prune(top.as_ref(), &listed, options.dry_run, &mut removed) {
                    Ok(n) => summary.deleted += n,
                    Err(source) => {
                        let path = top.as_ref().map_or(dir.path().to_path_buf(), |t| dir.path().join(t.as_path()));
                        return Err(ClientError::Local { path, source });
                    }
                }
            }
        }
        Ok(summary)
    }

    /// `--checksum`: of the files to fetch, keeps those whose local copy is missing or differs from
    /// the server's by size or digest; the others are skipped.
    fn compare_digests(
        &mut self,
        candidates: Vec<Name>,
        dir: &OutDir,
        summary: &mut TreeSummary,
    ) -> Result<Vec<Name>, ClientError> {
        let (local, absent): (Vec<Name>, Vec<Name>) =
            candidates.into_iter().partition(|name| dir.local_file(name).is_some());
        let mut fetch = absent;
        let mut same = Vec::new();
        self.sum_all(&local, |name, theirs| {
            let ours = dir.local_digest(name);
            match (theirs, ours) {
                (Ok((size, digest)), Some((our_size, our_digest))) if size == our_size && digest == our_digest => {
                    same.push(name.clone())
                }
                _ => fetch.push(name.clone()),
            }
        })?;
        summary.skipped += same.len() as u64;
        Ok(fetch)
    }

    /// Reads the listing of `folder` (all of it, or an error: a listing cut short is an error),
    /// noting its folders and the files to fetch (those whose local copy differs).
    #[allow(clippy::too_many_arguments)]
    fn list_tree(
        &mut self,
        folder: Option<&Name>,
        quick_check: bool,
        mut listed: Option<&mut HashSet<String>>,
        folders: &mut Vec<MetaEntry>,
        fetch: &mut Vec<Name>,
        dir: &OutDir,
        summary: &mut TreeSummary,
    ) -> Result<(), ClientError> {
        if !self.lists_folders()? {
            return Err(crate::wire::ProtocolError::Malformed(
                "this server's listings do not name folders (it predates list-meta); fetch its files by name".into(),
            )
            .into());
        }
        if let (Some(folder), Some(listed)) = (folder, listed.as_deref_mut()) {
            listed.insert(folder.to_string());
        }
        let prefix = folder.map(|f| format!("{f}/"));
        let mut odd = None;
        self.list_all_each(folder, |entry| {
            let name = entry.name.to_string();
            let outside = prefix.as_deref().is_some_and(|p| !name.starts_with(p));
            let twice = listed.as_deref_mut().is_some_and(|listed| !listed.insert(name.clone()));
            if outside || twice {
                odd.get_or_insert(name);
                return Ok(());
            }
            if entry.folder {
                folders.push(entry);
            } else if quick_check && dir.local_file(&entry.name) == Some((entry.size, entry.mtime, entry.mtime_nsec)) {
                summary.skipped += 1;
            } else {
                fetch.push(entry.name);
            }
            Ok(())
        })?;
        if let Some(name) = odd {
            let what =
                format!("the listing names {} twice or outside the folder asked for", crate::wire::escape(&name));
            return Err(crate::wire::ProtocolError::Malformed(what).into());
        }
        Ok(())
    }
}
