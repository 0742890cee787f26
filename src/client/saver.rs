//! Saving small downloads on writer threads while the receive loop goes on.
//!
//! A small file is read whole, verified in memory, and handed to a [`Saver`], which passes files
//! to writer threads in batches (one channel per writer, taken in turn), so that a thousand small
//! files cost dozens of wake-ups, not thousands, and the receive loop never waits on the file
//! system for them. The channels are bounded, which bounds the memory of files not yet saved.

use std::io;
use std::sync::mpsc;
use std::thread::Scope;

use super::outdir::OutDir;
use super::result::{ClientError, Downloaded};
use crate::mtime::Mtime;
use crate::name::Name;

/// Threads saving small files while the receive loop goes on (one per core here).
pub const WRITERS: usize = 2;

/// A batch of small files goes to a writer once it holds this many files...
const BATCH_FILES: usize = 64;
/// ... or this many bytes, or when the receive loop would otherwise wait for the network.
const BATCH_BYTES: usize = 1 << 20;
/// Batches waiting for each writer; with the above, bounds the memory of unsaved small files.
const LANE_BATCHES: usize = 2;

/// Small verified files on their way to the writer threads, handed over in batches (one channel
/// per writer, taken in turn) so that a thousand small files cost dozens of wake-ups, not
/// thousands. With no writers, files are saved at once.
pub(super) struct Saver<'a> {
    dir: &'a OutDir,
    batch: Vec<Whole>,
    batch_bytes: usize,
    lanes: Vec<mpsc::SyncSender<Vec<Whole>>>,
    next_lane: usize,
}

pub(super) type Saved = (Name, Result<Downloaded, ClientError>);

impl<'a> Saver<'a> {
    /// A saver for `dir` with `writers` threads in `scope`, each sending its results to `saved`;
    /// with none, files are saved on the calling thread as they come.
    pub(super) fn start<'scope>(
        scope: &'scope Scope<'scope, '_>,
        dir: &'a OutDir,
        writers: usize,
        saved: mpsc::Sender<Vec<Saved>>,
    ) -> Saver<'a>
    where
        'a: 'scope,
    {
        let mut saver = Saver { dir, batch: Vec::new(), batch_bytes: 0, lanes: Vec::new(), next_lane: 0 };
        for _ in 0..writers {
            let (lane, batches) = mpsc::sync_channel::<Vec<Whole>>(LANE_BATCHES);
            let saved = saved.clone();
            saver.lanes.push(lane);
            scope.spawn(move || {
                for batch in batches {
                    let results: Vec<Saved> = batch.into_iter().map(|whole| whole.save(dir)).collect();
                    if saved.send(results).is_err() {
                        return;
                    }
                }
            });
        }
        saver
    }

    /// Takes a file; returns the results of any files it had to save itself.
    pub(super) fn push(&mut self, whole: Whole) -> Vec<Saved> {
        self.batch_bytes += whole.bytes.len();
        self.batch.push(whole);
        if self.lanes.is_empty() || self.batch.len() >= BATCH_FILES || self.batch_bytes >= BATCH_BYTES {
            return self.hand_off();
        }
        Vec::new()
    }

    /// Sends the current batch to the next writer (or saves it here if there is none).
    pub(super) fn hand_off(&mut self) -> Vec<Saved> {
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        if batch.is_empty() {
            return Vec::new();
        }
        let batch = match self.lanes.get(self.next_lane % self.lanes.len().max(1)) {
            Some(lane) => match lane.send(batch) {
                Ok(()) => Vec::new(),
                Err(failed) => failed.0,
            },
            None => batch,
        };
        self.next_lane += 1;
        batch.into_iter().map(|whole| whole.save(self.dir)).collect()
    }

    /// Hands off what is left and lets the writers finish.
    pub(super) fn finish(mut self) -> Vec<Saved> {
        let left = self.hand_off();
        self.lanes.clear();
        left
    }
}

/// Files up to this size are read whole into memory, verified, and saved in one step.
pub const SMALL_FILE: u64 = 256 << 10;

/// What reading a download's reply made of it.
pub(super) enum Received {
    /// Streamed to disk and saved.
    Saved(Downloaded),
    /// A small file, whole and verified in memory, still to be saved.
    Whole(Whole),
}

/// A small file, verified, waiting to be saved.
pub(super) struct Whole {
    pub(super) name: Name,
    pub(super) bytes: Vec<u8>,
    pub(super) done: Downloaded,
    /// The server's permission bits, if it sent them.
    pub(super) mode: Option<u32>,
    /// The server's modification time, if it sent it.
    pub(super) mtime: Option<Mtime>,
}

impl Whole {
    pub(super) fn save(self, dir: &OutDir) -> (Name, Result<Downloaded, ClientError>) {
        let path = dir.path().join(self.name.as_path());
        let result = match dir.save_whole_with_mode(&self.name, &self.bytes, self.mode, self.mtime) {
            Ok(()) => Ok(self.done),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(ClientError::Kept { path }),
            Err(source) => Err(ClientError::Local { path, source }),
        };
        (self.name, result)
    }
}
