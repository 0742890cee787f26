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
    /// With [`Client::fetch_tree_with`]: most files found to fetch that wait between the two
    /// connections (`None`: [`QUEUE`]).
    pub queue: Option<usize>,
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

/// What listing the trees found, besides the files to fetch (which go to the fetcher as found).
struct Plan {
    tops: Vec<Top>,
    folders: Vec<MetaEntry>,
    /// With `delete`: every name listed.
    listed: Listed,
    /// Files whose local copy matched.
    skipped: u64,
}

impl Client {
    /// Fetches each of `names` into `dir`: a folder with all it holds (`None` for the whole
    /// root), a file as `get` would. See the module doc for what is skipped and removed. An
    /// error that stops the whole fetch (the connection lost, a listing that cannot be read) is
    /// returned; a file that fails is reported and counted, and the others go on. The listing
    /// and the fetching share this connection, so the files to fetch are held until the listings
    /// have ended; [`Client::fetch_tree_with`] lists on a second connection instead.
    pub fn fetch_tree(
        &mut self,
        names: &[Option<Name>],
        dir: &OutDir,
        options: TreeOptions,
        mut report: impl FnMut(TreeEvent<'_>),
    ) -> Result<TreeSummary, ClientError> {
        let mut fetch = Vec::new();
        let plan = self.plan(names, dir, options, &mut |name| fetch.push(name))?;
        let mut summary = TreeSummary { skipped: plan.skipped, ..TreeSummary::default() };
        let left = if options.dry_run {
            for name in &fetch {
                report(TreeEvent::WouldFetch(name));
            }
            summary.fetched = fetch.len() as u64;
            0
        } else {
            self.download_all(&fetch, dir, options.resume, |name, result| {
                count(&mut summary, &result);
                report(TreeEvent::Fetched(name, &result));
            })
        };
        finish(plan, left, dir, options, summary, &mut report)
    }

    /// [`Client::fetch_tree`] with the listings read on `lister`, a second connection to the same
    /// server: the files to fetch wait in a queue of at most [`QUEUE`] names between the two, and
    /// fetching starts when the listing has ended or the queue is full, so neither side holds a
    /// listing of any length.
    pub fn fetch_tree_with(
        &mut self,
        mut lister: Client,
        names: &[Option<Name>],
        dir: &OutDir,
        options: TreeOptions,
        mut report: impl FnMut(TreeEvent<'_>),
    ) -> Result<TreeSummary, ClientError> {
        let mut summary = TreeSummary::default();
        let (plan, left) = std::thread::scope(|scope| {
            let queue = options.queue.unwrap_or(QUEUE).max(1);
            let (to_fetch, names_found) = std::sync::mpsc::sync_channel::<Name>(queue);
            // Fetching starts once the listing has ended, or once QUEUE files wait: a listing
            // that small costs little memory, and fetching while it goes on was measured slower
            // on this project's 2-core machine (file creation on ext4 interleaved with folder
            // creation); past that, fetching goes on beside the listing to keep memory bounded.
            let (start, started) = std::sync::mpsc::sync_channel::<()>(1);
            let listing = scope.spawn(move || {
                let mut queued = 0;
                let plan = lister.plan(names, dir, options, &mut |name| {
                    let _ = to_fetch.send(name);
                    queued += 1;
                    if queued == queue {
                        let _ = start.try_send(());
                    }
                });
                let _ = start.try_send(());
                drop(to_fetch);
                if lister.is_usable() {
                    let _ = lister.quit();
                }
                plan
            });
            let _ = started.recv();
            let left = if options.dry_run {
                for name in names_found.iter() {
                    summary.fetched += 1;
                    report(TreeEvent::WouldFetch(&name));
                }
                0
            } else {
                self.download_stream(names_found, dir, options.resume, |name, result| {
                    count(&mut summary, &result);
                    report(TreeEvent::Fetched(name, &result));
                })
            };
            let plan = listing.join().unwrap_or(Err(ClientError::Broken));
            (plan, left)
        });
        let plan = plan?;
        summary.skipped += plan.skipped;
        finish(plan, left, dir, options, summary, &mut report)
    }

    /// Lists each of `names`, makes their folders (unless `dry_run`), and hands each file to
    /// fetch to `fetch` as it is found (with `checksum`, once the digests were compared).
    fn plan(
        &mut self,
        names: &[Option<Name>],
        dir: &OutDir,
        options: TreeOptions,
        fetch: &mut dyn FnMut(Name),
    ) -> Result<Plan, ClientError> {
        let mut plan = Plan { tops: Vec::new(), folders: Vec::new(), listed: Listed::default(), skipped: 0 };
        let mut candidates = Vec::new();
        for name in names {
            let mut sink = |n: Name, mtime: (i64, u32)| {
                if options.checksum { candidates.push((n, mtime)) } else { fetch(n) }
            };
            let listing = self.list_tree(name.as_ref(), options, &mut plan, dir, &mut sink);
            let top = match listing {
                Ok(()) => {
                    // The folder named, also when empty (its own mode and time would come from
                    // a listing of its parent, which was not asked for: it keeps what it gets).
                    if let (Some(top), false) = (name, options.dry_run)
                        && let Err(source) = dir.ensure_folder(top)
                    {
                        return Err(ClientError::Local { path: dir.path().join(top.as_path()), source });
                    }
                    Top::Folder(name.clone())
                }
                Err(ClientError::Server(reply)) if reply.kind() == Some(ErrorCode::NotFile) && name.is_some() => {
                    let Some(file) = name.clone() else { continue };
                    if options.delete {
                        plan.listed.add(file.as_str());
                    }
                    fetch(file);
                    Top::File
                }
                Err(e) => return Err(e),
            };
            plan.tops.push(top);
        }
        plan.listed.seal();
        if options.checksum {
            let (differ, same) = self.compare_digests(candidates, dir, options.dry_run)?;
            plan.skipped += same;
            differ.into_iter().for_each(fetch);
        }
        Ok(plan)
    }

    /// `--checksum`: of the files listed (with the server's modification times), those whose
    /// local copy is missing or differs from the server's by size or digest, and how many others
    /// matched; those get the server's time, as `rsync -a --checksum` gives them (unless `dry_run`).
    fn compare_digests(
        &mut self,
        candidates: Vec<(Name, (i64, u32))>,
        dir: &OutDir,
        dry_run: bool,
    ) -> Result<(Vec<Name>, u64), ClientError> {
        let (local, absent): (Vec<_>, Vec<_>) =
            candidates.into_iter().partition(|(name, _)| dir.local_file(name).is_some());
        let mut differ: Vec<Name> = absent.into_iter().map(|(name, _)| name).collect();
        let (names, times): (Vec<Name>, Vec<(i64, u32)>) = local.into_iter().unzip();
        let mut same = 0;
        let mut index = 0;
        self.sum_all(&names, |name, theirs| {
            let mtime = times[index];
            index += 1;
            let ours = dir.local_digest(name);
            match (theirs, ours) {
                (Ok((size, digest)), Some((our_size, our_digest))) if size == our_size && digest == our_digest => {
                    same += 1;
                    if !dry_run {
                        // Best effort: the bytes are right either way.
                        let _ = dir.set_file_mtime(name, mtime);
                    }
                }
                _ => differ.push(name.clone()),
            }
        })?;
        Ok((differ, same))
    }

    /// Reads the listing of `folder` (all of it, or an error: a listing cut short is an error),
    /// making its folders as they come (unless `dry_run`) and handing on each file to fetch
    /// (each whose local copy differs, unless `checksum`: then each).
    fn list_tree(
        &mut self,
        folder: Option<&Name>,
        options: TreeOptions,
        plan: &mut Plan,
        dir: &OutDir,
        fetch: &mut dyn FnMut(Name, (i64, u32)),
    ) -> Result<(), ClientError> {
        if !self.lists_folders()? {
            return Err(crate::wire::ProtocolError::Malformed(
                "this server's listings do not name folders (it predates list-meta); fetch its files by name".into(),
            )
            .into());
        }
        // With `delete`, every name the server listed (and a listing that names one twice is
        // refused); without, none is kept: a listing of any length costs only what is left to do.
        let remember = options.delete;
        if let (Some(folder), true) = (folder, remember) {
            plan.listed.add(folder.as_str());
        }
        let first = plan.listed.len();
        let prefix = folder.map(|f| format!("{f}/"));
        let mut odd = None;
        let mut local_error = None;
        // Folders that had no local copy before this run: nothing beneath them needs comparing,
        // which on a first fetch saves a lookup per file (and its wait on the folder's lock while
        // files are being created in it).
        let mut fresh: HashSet<String> = HashSet::new();
        if let Some(folder) = folder
            && !dir.exists(folder)
        {
            fresh.insert(folder.to_string());
        }
        let in_fresh =
            |fresh: &HashSet<String>, name: &str| name.rsplit_once('/').is_some_and(|(up, _)| fresh.contains(up));
        self.list_all_each(folder, |entry| {
            let name = entry.name.to_string();
            let outside = prefix.as_deref().is_some_and(|p| !name.starts_with(p));
            if outside {
                odd.get_or_insert(name);
                return Ok(());
            }
            if remember {
                plan.listed.add(&name);
            }
            if entry.folder {
                let made = if options.dry_run {
                    !dir.exists(&entry.name)
                } else {
                    dir.ensure_folder(&entry.name).unwrap_or_else(|source| {
                        let path = dir.path().join(entry.name.as_path());
                        local_error.get_or_insert(ClientError::Local { path, source });
                        false
                    })
                };
                if made || in_fresh(&fresh, &name) {
                    fresh.insert(name);
                }
                plan.folders.push(entry);
            } else if !options.checksum
                && !in_fresh(&fresh, &name)
                && dir.local_file(&entry.name) == Some((entry.size, entry.mtime, entry.mtime_nsec))
            {
                plan.skipped += 1;
            } else {
                fetch(entry.name, (entry.mtime, entry.mtime_nsec));
            }
            Ok(())
        })?;
        if let Some(name) = odd {
            let what = format!("the listing names {} outside the folder asked for", crate::wire::escape(&name));
            return Err(crate::wire::ProtocolError::Malformed(what).into());
        }
        if plan.listed.names_one_twice(first) {
            let what = format!("the listing of {} names one entry twice", folder.map_or(".", |f| f.as_str()));
            return Err(crate::wire::ProtocolError::Malformed(crate::wire::escape(&what)).into());
        }
        local_error.map_or(Ok(()), Err)
    }
}

/// Counts one download's result.
fn count(summary: &mut TreeSummary, result: &Result<Downloaded, ClientError>) {
    match result {
        Ok(done) => {
            summary.fetched += 1;
            summary.bytes += done.size - done.resumed_from;
        }
        Err(ClientError::Kept { .. }) => summary.skipped += 1,
        Err(_) => summary.failed += 1,
    }
}

/// After the fetching: the folders' modes and times (deepest first, so setting one does not move
/// its parent's time), then, with `delete`, what the server no longer has.
fn finish(
    mut plan: Plan,
    left: usize,
    dir: &OutDir,
    options: TreeOptions,
    mut summary: TreeSummary,
    report: &mut impl FnMut(TreeEvent<'_>),
) -> Result<TreeSummary, ClientError> {
    summary.failed += left as u64;
    if !options.dry_run {
        plan.folders.sort_by_key(|f| std::cmp::Reverse(f.name.as_str().matches('/').count()));
        for folder in &plan.folders {
            if let Err(source) = dir.set_folder(&folder.name, folder.mode, (folder.mtime, folder.mtime_nsec)) {
                return Err(ClientError::Local { path: dir.path().join(folder.name.as_path()), source });
            }
        }
        if left > 0 {
            return Err(ClientError::Broken);
        }
    }
    if options.delete {
        for top in &plan.tops {
            let Top::Folder(top) = top else { continue };
            let mut removed = |name: &str| report(TreeEvent::Deleted(name));
            let keep = |name: &str| plan.listed.contains(name);
            match dir.prune(top.as_ref(), &keep, options.dry_run, &mut removed) {
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

/// The names a listing held, for `delete`: each as a 128-bit hash of the name (16 bytes, however
/// long the name is, where a set of names costs some 80 bytes each), in one vector that is sorted
/// once the listings have ended; a million names hold 16 MiB. Two names with one hash (odds of
/// about 10^-27 for a million names) could only keep a local file that might have been removed,
/// never remove one that the server has.
#[derive(Default)]
struct Listed {
    hashes: Vec<u128>,
}

impl Listed {
    fn add(&mut self, name: &str) {
        self.hashes.push(crate::digest::Digest::of(name.as_bytes()).0);
    }

    fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether a name was added twice since the first `from` (sorting those).
    fn names_one_twice(&mut self, from: usize) -> bool {
        let since = &mut self.hashes[from..];
        since.sort_unstable();
        since.windows(2).any(|pair| pair[0] == pair[1])
    }

    /// Sorts all, dropping repeats (two folders named may overlap), for [`Listed::contains`].
    fn seal(&mut self) {
        self.hashes.sort_unstable();
        self.hashes.dedup();
        self.hashes.shrink_to_fit();
    }

    /// Whether `name` was added (once sealed).
    fn contains(&self, name: &str) -> bool {
        self.hashes.binary_search(&crate::digest::Digest::of(name.as_bytes()).0).is_ok()
    }
}

/// Files found to fetch that may wait between the listing and the fetching connection.
pub const QUEUE: usize = 50_000;

#[cfg(test)]
mod tests {
    use super::Listed;

    #[test]
    fn listed_names_are_found_once_sealed_and_a_repeat_within_one_listing_is_seen() {
        let mut listed = Listed::default();
        listed.add("a");
        let first = listed.len();
        for name in ["a/x", "a/y", "a/ü z"] {
            listed.add(name);
        }
        assert!(!listed.names_one_twice(first));
        // A second listing may repeat the first (a folder within one named before)...
        let second = listed.len();
        listed.add("a/x");
        assert!(!listed.names_one_twice(second));
        // ...but not itself.
        listed.add("a/x");
        assert!(listed.names_one_twice(second));
        listed.seal();
        assert_eq!(listed.len(), 4);
        for name in ["a", "a/x", "a/y", "a/ü z"] {
            assert!(listed.contains(name), "{name}");
        }
        for name in ["", "b", "a/", "a/x.part", "A/X"] {
            assert!(!listed.contains(name), "{name}");
        }
    }
}
