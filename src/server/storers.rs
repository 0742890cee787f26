//! Small uploads stored on helper threads while their connection reads the next ones.
//!
//! Naming a new file costs the file system far more than receiving 4 KiB (on ext4, finding a
//! free inode dominates), so a client that pipelines a thousand small files would otherwise
//! wait on one thread doing that a thousand times in turn. The connection's thread reads each
//! small body into memory and hands it to two store threads (started with the connection's
//! first upload, ended with it); replies still go out in request order, each only once its file
//! is named. Bounded: at most [`MAX_JOBS`] uploads and [`MAX_BYTES`] bytes wait per connection.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, mpsc};
use std::thread::Scope;

use parking_lot::Mutex;

use super::shared::Shared;
use super::upload::Offer;
use crate::digest::Digest;
use crate::name::Name;
use crate::store::{Expected, PutError, Stored, Upload};

/// Threads storing one connection's small uploads (one per core here).
const WORKERS: usize = 2;
/// Uploads of at most this many bytes go to the store threads.
pub(crate) const SMALL_UPLOAD: u64 = 256 << 10;
/// Uploads handed over and not yet answered, at most.
const MAX_JOBS: usize = 128;
/// Their bytes, at most.
const MAX_BYTES: usize = 4 << 20;

/// One small upload, whole in memory.
pub(crate) struct Job {
    pub(crate) name: Name,
    pub(crate) digest: Digest,
    /// What the sender said of it (its size, time, mode, and whether to replace).
    pub(crate) offer: Offer,
    /// Whether it replaces an existing file (asked for, and allowed).
    pub(crate) replace: bool,
    pub(crate) bytes: Vec<u8>,
}

/// An upload handed over, waiting for its answer.
pub(crate) struct Waiting {
    seq: u64,
    pub(crate) name: Name,
    pub(crate) offer: Offer,
}

type Done = (u64, Result<Stored, PutError>);

/// The store threads of one connection and the uploads they hold.
pub(crate) struct Storers<'scope, 'env> {
    scope: &'scope Scope<'scope, 'env>,
    shared: &'env Shared,
    /// Where jobs go; `None` until the threads are started.
    jobs: Option<mpsc::Sender<(u64, Job)>>,
    done: (mpsc::Sender<Done>, mpsc::Receiver<Done>),
    /// The threads could not be started: uploads are stored on the connection's thread.
    unavailable: bool,
    next: u64,
    /// Handed over and not yet answered, in request order.
    waiting: VecDeque<Waiting>,
    /// Answers that came before those of earlier uploads.
    early: HashMap<u64, Result<Stored, PutError>>,
    bytes: usize,
}

impl<'scope, 'env> Storers<'scope, 'env> {
    pub(crate) fn new(scope: &'scope Scope<'scope, 'env>, shared: &'env Shared) -> Self {
        Storers {
            scope,
            shared,
            jobs: None,
            done: mpsc::channel(),
            unavailable: false,
            next: 0,
            waiting: VecDeque::new(),
            early: HashMap::new(),
            bytes: 0,
        }
    }

    /// Whether nothing waits for an answer.
    pub(crate) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Whether an upload of `name` is handed over and not answered (a second one must wait for
    /// it, so the two happen in the order they were asked for).
    pub(crate) fn holds(&self, name: &Name) -> bool {
        self.waiting.iter().any(|w| w.name == *name)
    }

    /// Whether no more may be handed over before an answer is taken.
    pub(crate) fn full(&self) -> bool {
        self.waiting.len() >= MAX_JOBS || self.bytes >= MAX_BYTES
    }

    /// Hands `job` to the store threads (starting them the first time); gives it back if they
    /// cannot be started.
    pub(crate) fn submit(&mut self, job: Job) -> Result<(), Job> {
        if self.jobs.is_none() && !self.start() {
            return Err(job);
        }
        let Some(jobs) = &self.jobs else { return Err(job) };
        let (seq, len) = (self.next, job.bytes.len());
        let waiting = Waiting { seq, name: job.name.clone(), offer: job.offer };
        if let Err(mpsc::SendError((_, job))) = jobs.send((seq, job)) {
            return Err(job);
        }
        self.next += 1;
        self.bytes += len;
        self.waiting.push_back(waiting);
        Ok(())
    }

    /// The oldest upload handed over with its result, if it is known, or if `wait`, once it is.
    pub(crate) fn next_answer(&mut self, wait: bool) -> Option<(Waiting, Result<Stored, PutError>)> {
        let seq = self.waiting.front()?.seq;
        loop {
            if let Some(result) = self.early.remove(&seq) {
                let waiting = self.waiting.pop_front()?;
                self.bytes -= waiting.offer.size as usize;
                return Some((waiting, result));
            }
            let (done, result) = if wait { self.done.1.recv().ok()? } else { self.done.1.try_recv().ok()? };
            self.early.insert(done, result);
        }
    }

    /// Starts the store threads; false if none could be.
    fn start(&mut self) -> bool {
        if self.unavailable {
            return false;
        }
        let (tx, rx) = mpsc::channel::<(u64, Job)>();
        let rx = Arc::new(Mutex::new(rx));
        let mut started = 0;
        for _ in 0..WORKERS {
            // Out of the server's thread budget: none left, and uploads are stored on the
            // connection's own thread.
            let Some(thread) = self.shared.threads.take() else { break };
            let (rx, done, shared) = (rx.clone(), self.done.0.clone(), self.shared);
            let spawned = std::thread::Builder::new().name("store".into()).stack_size(128 << 10).spawn_scoped(
                self.scope,
                move || {
                    let _thread = thread;
                    loop {
                        let next = rx.lock().recv();
                        let Ok((seq, job)) = next else { break };
                        let result = store(shared, &job);
                        if done.send((seq, result)).is_err() {
                            break;
                        }
                    }
                },
            );
            started += usize::from(spawned.is_ok());
        }
        if started == 0 {
            self.unavailable = true;
            return false;
        }
        self.jobs = Some(tx);
        true
    }
}

/// Stores one small upload; on success its cache entry and digest memo go at once.
pub(crate) fn store(shared: &Shared, job: &Job) -> Result<Stored, PutError> {
    let len = job.bytes.len() as u64;
    // Small: never staged, so never counted against anyone's share of the staging folder.
    let (mtime, perm) = (job.offer.mtime, job.offer.perm);
    let up = Upload { name: &job.name, len, mtime, perm, replace: job.replace, owner: "-" };
    let result = shared.root.put(&up, Expected::Known(job.digest), &mut &job.bytes[..], 0, None);
    if result.is_ok() {
        shared.cache.forget(&job.name);
        shared.digests.forget(&job.name);
    }
    result
}
