//! Fetching folders (`ftclient get -r`), and keeping a local copy in sync as rsync does.
//!
//! For each folder named, the server's listing says what there is: `walk` (protocol version 2)
//! names every entry and what it is, `list` with `list-meta` (older servers) files and folders.
//! Folders are made locally; a file whose local copy has the same size and modification time is
//! skipped (rsync's quick check), every other one is fetched, pipelined over the connection as
//! `get` does; a symlink is made as a symlink holding the same text (never followed, here or on
//! the server), unless links are followed (`copy_links`, rsync's `-L`), when the server lists
//! what they lead to; fifos and sockets are made as such; devices are not copied and said so,
//! as is whatever the server could not read. Then folders get the server's modes and times
//! (deepest first, so setting one does not move its parent's time). With `delete`, what lies
//! beneath a fetched folder and the server does not have is removed, but only when every listing
//! was read to its end and named nothing the server could not read, and never through a symlink
//! or outside the output folder.

use std::collections::HashSet;

use super::listed::Listed;
use super::window::MEANINGFUL_RTT;
use super::{Client, ClientError, Downloaded, Local, OutDir};
use crate::mtime::Mtime;
use crate::name::Name;
use crate::wire::{EntryKind, ErrorCode, MetaEntry};

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
    /// Follow symlinks on the server (inside its root) and fetch what they lead to, as rsync's
    /// `-L`; else each symlink is made as a symlink.
    pub copy_links: bool,
    /// With [`Client::fetch_tree_with`]: most files found to fetch that wait between the two
    /// connections (`None`: [`QUEUE`]).
    pub queue: Option<usize>,
}

/// What fetching a tree did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeSummary {
    /// Files fetched (or, dry, that would be).
    pub fetched: u64,
    /// Entries skipped: the local copy has the server's size and modification time (a symlink:
    /// the same text; a fifo: is one).
    pub skipped: u64,
    /// Symlinks, fifos and sockets made (or that would be).
    pub made: u64,
    /// Files and folders removed (or that would be).
    pub deleted: u64,
    /// File bytes received.
    pub bytes: u64,
    /// File bytes taken from older local copies by delta downloads instead of received.
    pub reused: u64,
    /// File bytes compression spared the wire.
    pub compression_saved: u64,
    /// Entries that failed.
    pub failed: u64,
    /// Entries not copied: devices, and what the server could not read.
    pub not_copied: u64,
    /// With `delete`: nothing was deleted, because the server could not read some entries.
    pub deletion_skipped: bool,
}

/// What happened to one entry, for the caller to report.
pub enum TreeEvent<'a> {
    /// A file was fetched, or an entry failed (fetched, or made).
    Fetched(&'a Name, &'a Result<Downloaded, ClientError>),
    /// With `dry_run`: a file that would be fetched.
    WouldFetch(&'a Name),
    /// A symlink, fifo or socket made (or, dry, that would be).
    Made(&'a Name, &'a EntryKind),
    /// An entry the server has that is not copied: a device, or what it could not read (why).
    NotCopied(&'a Name, &'a str),
    /// A local file or folder removed (or, dry, that would be), as its name's bytes.
    Deleted(&'a [u8]),
    /// With `delete`: nothing is deleted, since this many entries could not be read on the server.
    DeletionSkipped(u64),
}

/// One named thing to fetch: a folder (or the whole root: `None`), or something else.
enum Top {
    Folder(Option<Name>),
    Other,
}

/// What listing the trees found, besides the files to fetch (which go to the fetcher as found).
struct Plan {
    tops: Vec<Top>,
    folders: Vec<MetaEntry>,
    /// With `delete`: every name listed.
    listed: Listed,
    /// Entries whose local copy matched.
    skipped: u64,
    made: u64,
    failed: u64,
    not_copied: u64,
    /// Entries the server could not read: what lies beneath them is not known.
    unreadable: u64,
    /// The first local error making a folder, which ends the fetch.
    local_error: Option<ClientError>,
}

/// Where entries found by the listing go: files to fetch to the fetcher, everything else to be
/// reported.
struct Sink<'s> {
    fetch: &'s mut dyn FnMut(Name),
    report: &'s mut dyn FnMut(TreeEvent<'_>),
}

impl Client {
    /// Fetches each of `names` into `dir`: a folder with all it holds (`None` for the whole
    /// root), a file as `get` would. See the module doc for what is skipped and removed. An
    /// error that stops the whole fetch (the connection lost, a listing that cannot be read) is
    /// returned; an entry that fails is reported and counted, and the others go on. The listing
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
        let plan =
            self.plan(names, dir, options, &mut Sink { fetch: &mut |name| fetch.push(name), report: &mut report })?;
        let mut summary = TreeSummary::default();
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
    /// listing of any length. Events of the listing (links made, entries not copied) are reported
    /// from its thread.
    pub fn fetch_tree_with(
        &mut self,
        mut lister: Client,
        names: &[Option<Name>],
        dir: &OutDir,
        options: TreeOptions,
        report: impl FnMut(TreeEvent<'_>) + Send,
    ) -> Result<TreeSummary, ClientError> {
        let mut summary = TreeSummary::default();
        let report = parking_lot::Mutex::new(report);
        let (plan, left) = std::thread::scope(|scope| {
            let queue = options.queue.unwrap_or(QUEUE).max(1);
            let (to_fetch, names_found) = std::sync::mpsc::sync_channel::<Name>(queue);
            // Fetching starts once the listing has ended, or once QUEUE files wait: a listing
            // that small costs little memory, and fetching while it goes on was measured slower
            // on this project's 2-core machine (file creation on ext4 interleaved with folder
            // creation); past that, fetching goes on beside the listing to keep memory bounded.
            // Over a path where a round trip costs something, fetching starts with the first
            // file: a listing grows through TCP's start like any reply, and waiting for its end
            // would add its round trips to the fetch.
            let eager = self.rtt >= MEANINGFUL_RTT;
            let (start, started) = std::sync::mpsc::sync_channel::<()>(1);
            let report = &report;
            let listing = scope.spawn(move || {
                let mut queued = 0;
                let mut fetch = |name| {
                    let _ = to_fetch.send(name);
                    queued += 1;
                    if queued == queue || eager {
                        let _ = start.try_send(());
                    }
                };
                let mut events = |event: TreeEvent<'_>| (*report.lock())(event);
                let plan = lister.plan(names, dir, options, &mut Sink { fetch: &mut fetch, report: &mut events });
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
                    (*report.lock())(TreeEvent::WouldFetch(&name));
                }
                0
            } else {
                self.download_stream(names_found, dir, options.resume, |name, result| {
                    count(&mut summary, &result);
                    (*report.lock())(TreeEvent::Fetched(name, &result));
                })
            };
            let plan = listing.join().unwrap_or(Err(ClientError::Broken));
            (plan, left)
        });
        let mut report = report.into_inner();
        finish(plan?, left, dir, options, summary, &mut report)
    }

    /// Lists each of `names`, makes their folders, links and fifos (unless `dry_run`), and hands
    /// each file to fetch to `sink` as it is found (with `checksum`, once the digests were
    /// compared).
    fn plan(
        &mut self,
        names: &[Option<Name>],
        dir: &OutDir,
        options: TreeOptions,
        sink: &mut Sink<'_>,
    ) -> Result<Plan, ClientError> {
        let mut plan = Plan {
            tops: Vec::new(),
            folders: Vec::new(),
            listed: Listed::default(),
            skipped: 0,
            made: 0,
            failed: 0,
            not_copied: 0,
            unreadable: 0,
            local_error: None,
        };
        let mut candidates = Vec::new();
        for name in names {
            let listing = self.list_tree(name.as_ref(), options, &mut plan, dir, sink, &mut candidates);
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
                    let Some(top) = name.clone() else { continue };
                    if options.delete {
                        plan.listed.add(top.as_bytes());
                    }
                    // Not a folder: what it is decides (a symlink is made as one, as rsync -a
                    // makes `src/link` one); a server that cannot say is asked for the file.
                    let entry = if self.walks()? && !options.copy_links { Some(self.stat(&top)?) } else { None };
                    match entry {
                        Some(entry) if !entry.is_file() => place(&entry, dir, options, &mut plan, sink),
                        _ => (sink.fetch)(top),
                    }
                    Top::Other
                }
                Err(e) => return Err(e),
            };
            plan.tops.push(top);
        }
        if let Some(e) = plan.local_error.take() {
            return Err(e);
        }
        plan.listed.seal();
        if options.checksum {
            let (differ, same) = self.compare_digests(candidates, dir, options.dry_run)?;
            plan.skipped += same;
            differ.into_iter().for_each(|name| (sink.fetch)(name));
        }
        Ok(plan)
    }

    /// `--checksum`: of the files listed (with the server's modification times), those whose
    /// local copy is missing or differs from the server's by size or digest, and how many others
    /// matched; those get the server's time, as `rsync -a --checksum` gives them (unless `dry_run`).
    fn compare_digests(
        &mut self,
        candidates: Vec<(Name, Mtime)>,
        dir: &OutDir,
        dry_run: bool,
    ) -> Result<(Vec<Name>, u64), ClientError> {
        let (local, absent): (Vec<_>, Vec<_>) =
            candidates.into_iter().partition(|(name, _)| dir.local_file(name).is_some());
        let mut differ: Vec<Name> = absent.into_iter().map(|(name, _)| name).collect();
        let (names, times): (Vec<Name>, Vec<Mtime>) = local.into_iter().unzip();
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
    /// making its folders, links and fifos as they come (unless `dry_run`) and handing on each
    /// file to fetch (each whose local copy differs; with `checksum`, each goes to `candidates`).
    fn list_tree(
        &mut self,
        folder: Option<&Name>,
        options: TreeOptions,
        plan: &mut Plan,
        dir: &OutDir,
        sink: &mut Sink<'_>,
        candidates: &mut Vec<(Name, Mtime)>,
    ) -> Result<(), ClientError> {
        // With `delete`, every name the server listed (and a listing that names one twice is
        // refused); without, none is kept: a listing of any length costs only what is left to do.
        let remember = options.delete;
        if let (Some(folder), true) = (folder, remember) {
            plan.listed.add(folder.as_bytes());
        }
        let first = plan.listed.len();
        let mut odd = None;
        // Folders that had no local copy before this run: nothing beneath them needs comparing,
        // which on a first fetch saves a lookup per file (and its wait on the folder's lock while
        // files are being created in it).
        let mut fresh: HashSet<Vec<u8>> = HashSet::new();
        if let Some(folder) = folder
            && !dir.exists(folder)
        {
            fresh.insert(folder.as_bytes().to_vec());
        }
        let in_fresh = |fresh: &HashSet<Vec<u8>>, name: &Name| name.parent_bytes().is_some_and(|up| fresh.contains(up));
        let mut each = |entry: MetaEntry| {
            if folder.is_some_and(|f| !entry.name.is_beneath(f)) {
                odd.get_or_insert(entry.name);
                return Ok(());
            }
            // What could not be read is not counted as a name (it may repeat the folder it is
            // said of): once there is any, nothing is deleted anyway.
            if remember && !matches!(entry.kind, EntryKind::Unreadable { .. }) {
                plan.listed.add(entry.name.as_bytes());
            }
            match &entry.kind {
                EntryKind::Folder => {
                    let made = if options.dry_run {
                        !dir.exists(&entry.name)
                    } else {
                        dir.ensure_folder(&entry.name).unwrap_or_else(|source| {
                            let path = dir.path().join(entry.name.as_path());
                            plan.local_error.get_or_insert(ClientError::Local { path, source });
                            false
                        })
                    };
                    if made || in_fresh(&fresh, &entry.name) {
                        fresh.insert(entry.name.as_bytes().to_vec());
                    }
                    plan.folders.push(entry);
                }
                EntryKind::File if options.checksum => {
                    let mtime = entry.mtime();
                    candidates.push((entry.name, mtime));
                }
                EntryKind::File
                    if !in_fresh(&fresh, &entry.name)
                        && dir.local_file(&entry.name) == Some((entry.size, entry.mtime)) =>
                {
                    plan.skipped += 1;
                }
                EntryKind::File => (sink.fetch)(entry.name),
                _ => place(&entry, dir, options, plan, sink),
            }
            Ok(())
        };
        if self.walk_each_if_walks(folder, options.copy_links, &mut each)?.is_none() {
            if !self.lists_folders()? {
                return Err(crate::wire::ProtocolError::Malformed(
                    "this server's listings do not name folders (it predates list-meta); fetch its files by name"
                        .into(),
                )
                .into());
            }
            self.list_all_each(folder, &mut each)?;
        }
        if let Some(name) = odd {
            let what = format!("the listing names {name} outside the folder asked for");
            return Err(crate::wire::ProtocolError::Malformed(what).into());
        }
        if plan.listed.names_one_twice(first) {
            let what = format!("the listing of {} names one entry twice", folder.map_or(".".into(), Name::to_string));
            return Err(crate::wire::ProtocolError::Malformed(what).into());
        }
        Ok(())
    }
}

/// Places an entry that is neither a folder nor a file: a symlink, fifo or socket is made (unless
/// the local name already holds the same), a device or what the server could not read is
/// reported as not copied.
fn place(entry: &MetaEntry, dir: &OutDir, options: TreeOptions, plan: &mut Plan, sink: &mut Sink<'_>) {
    let name = &entry.name;
    let local = dir.local_entry(name);
    let made = match &entry.kind {
        EntryKind::File | EntryKind::Folder => return,
        EntryKind::Symlink(_) if options.copy_links => {
            plan.not_copied += 1;
            let why =
                "a symlink the server does not follow (it leads out of its folder, to nothing, or back above itself)";
            (sink.report)(TreeEvent::NotCopied(name, why));
            return;
        }
        EntryKind::Symlink(target) => {
            if let Some(Local::Symlink { target: ours, mtime }) = &local
                && ours == target
            {
                plan.skipped += 1;
                if *mtime != entry.mtime() && !options.dry_run {
                    let _ = dir.make_symlink(name, target, entry.mtime());
                }
                return;
            }
            options.dry_run
                || dir.is_kept(name)
                || dir.make_symlink(name, target, entry.mtime()).map_err(|e| fail(dir, name, e, sink)).is_ok()
        }
        EntryKind::Fifo | EntryKind::Socket => {
            let socket = entry.kind == EntryKind::Socket;
            let same = match &local {
                Some(Local::Fifo { mode, mtime }) if !socket => {
                    (*mode, *mtime) == (dir.mode_for(Some(entry.mode)), entry.mtime())
                }
                Some(Local::Socket { mode, mtime }) if socket => {
                    (*mode, *mtime) == (dir.mode_for(Some(entry.mode)), entry.mtime())
                }
                _ => false,
            };
            if same {
                plan.skipped += 1;
                return;
            }
            options.dry_run
                || dir.is_kept(name)
                || dir
                    .make_special(name, socket, entry.mode, entry.mtime())
                    .map_err(|e| fail(dir, name, e, sink))
                    .is_ok()
        }
        EntryKind::CharDevice | EntryKind::BlockDevice => {
            plan.not_copied += 1;
            let why = format!("{}: devices are not copied", entry.kind.describe());
            (sink.report)(TreeEvent::NotCopied(name, &why));
            return;
        }
        EntryKind::Unreadable { message, .. } => {
            plan.not_copied += 1;
            plan.unreadable += 1;
            let why = format!("the server cannot read it: {message}");
            (sink.report)(TreeEvent::NotCopied(name, &why));
            return;
        }
    };
    if made {
        plan.made += 1;
        (sink.report)(TreeEvent::Made(name, &entry.kind));
    } else {
        plan.failed += 1;
    }
}

/// Reports a local failure to make `name`; its `Err` for [`place`].
fn fail(dir: &OutDir, name: &Name, source: std::io::Error, sink: &mut Sink<'_>) {
    let e = Err(ClientError::Local { path: dir.path().join(name.as_path()), source });
    (sink.report)(TreeEvent::Fetched(name, &e));
}

/// Counts one download's result.
fn count(summary: &mut TreeSummary, result: &Result<Downloaded, ClientError>) {
    match result {
        Ok(done) => {
            summary.fetched += 1;
            summary.bytes += done.moved();
            summary.reused += done.reused;
            summary.compression_saved += done.compression_saved;
        }
        Err(ClientError::Kept { .. }) => summary.skipped += 1,
        Err(_) => summary.failed += 1,
    }
}

/// After the fetching: the folders' modes and times (deepest first, so setting one does not move
/// its parent's time), then, with `delete`, what the server no longer has, unless the server
/// could not read some entries (then what they hold is not known, and nothing is deleted).
fn finish(
    mut plan: Plan,
    left: usize,
    dir: &OutDir,
    options: TreeOptions,
    mut summary: TreeSummary,
    report: &mut impl FnMut(TreeEvent<'_>),
) -> Result<TreeSummary, ClientError> {
    summary.failed += left as u64 + plan.failed;
    summary.skipped += plan.skipped;
    summary.made += plan.made;
    summary.not_copied += plan.not_copied;
    if !options.dry_run {
        plan.folders.sort_by_key(|f| std::cmp::Reverse(f.name.depth()));
        for folder in &plan.folders {
            if let Err(source) = dir.set_folder(&folder.name, folder.mode, folder.mtime()) {
                return Err(ClientError::Local { path: dir.path().join(folder.name.as_path()), source });
            }
        }
        if left > 0 {
            return Err(ClientError::Broken);
        }
    }
    if options.delete && plan.unreadable > 0 {
        summary.deletion_skipped = true;
        report(TreeEvent::DeletionSkipped(plan.unreadable));
    } else if options.delete {
        for top in &plan.tops {
            let Top::Folder(top) = top else { continue };
            let mut removed = |name: &[u8]| report(TreeEvent::Deleted(name));
            let keep = |name: &[u8]| plan.listed.contains(name);
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

/// Files found to fetch that may wait between the listing and the fetching connection.
pub const QUEUE: usize = 50_000;
