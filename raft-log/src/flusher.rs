//! Write-behind group commit.
//!
//! `append` encodes records and *stages* them here (a user-space copy) together with its
//! callback. One flusher thread takes everything staged since its last round, writes
//! each contiguous run with a single `pwrite`, `fdatasync`s every file it wrote, and then
//! completes the callbacks in the order they were staged, which is log order. Concurrent
//! appends therefore share both the write syscall and the fsync.
//!
//! Staged bytes stay visible to readers until they are in the file (see [`Flusher::overlay`]),
//! so an entry is readable as soon as `append` returns.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Condvar;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use crate::error::LogError;
use crate::fault::FaultInjector;

/// Initial capacity of a staging buffer; a group commit of 64 x 16 KiB fits.
const STAGE_CAPACITY: usize = 2 << 20;
/// Staging buffers kept for reuse, and the largest one worth keeping.
const MAX_SPARE: usize = 4;
const MAX_SPARE_CAPACITY: usize = 16 << 20;

/// Called once the appended entries are durable, or with the error that poisoned the log.
pub type FlushCallback = Box<dyn FnOnce(Result<(), LogError>) + Send>;

/// Set once by the first failed write or fsync; the log refuses all work afterwards.
#[derive(Debug, Default)]
pub(crate) struct Poison(OnceLock<String>);

impl Poison {
    pub fn set(&self, why: String) {
        if self.0.set(why.clone()).is_ok() {
            tracing::error!(error = %why, "commit log poisoned; refusing all further I/O");
        }
    }

    pub fn check(&self) -> Result<(), LogError> {
        match self.0.get() {
            Some(why) => Err(LogError::Poisoned(why.clone())),
            None => Ok(()),
        }
    }
}

/// Bytes destined for `file` at `offset`, not yet (known to be) written there.
#[derive(Debug)]
pub(crate) struct Run {
    pub file: Arc<File>,
    pub path: PathBuf,
    pub offset: u64,
    pub data: Vec<u8>,
}

/// A piece of staged data a reader must lay over what it read from the file.
pub(crate) struct Patch {
    pub offset: u64,
    pub bytes: Vec<u8>,
}

#[derive(Default)]
struct Queue {
    /// Staged runs not yet taken by the flusher, in log order.
    staged: Vec<Run>,
    /// Runs the flusher is writing right now.
    in_flight: Vec<Arc<Run>>,
    callbacks: Vec<FlushCallback>,
    /// Buffers of written runs, reused so that staging does not fault in fresh pages.
    spare: Vec<Vec<u8>>,
    /// The flusher is between taking work and finishing it.
    busy: bool,
    stop: bool,
}

/// Counters of the group commit since the log was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushStats {
    /// Flusher rounds (each one write per run plus one fdatasync per file).
    pub rounds: u64,
    /// Appends completed.
    pub appends: u64,
    /// Bytes written.
    pub bytes: u64,
}

#[derive(Default)]
struct Counters {
    rounds: AtomicU64,
    appends: AtomicU64,
    bytes: AtomicU64,
}

struct Shared {
    counters: Counters,
    queue: Mutex<Queue>,
    /// Wakes the flusher.
    work: Condvar,
    /// Wakes threads waiting for the staging to drain.
    drained: Condvar,
    poison: Arc<Poison>,
    faults: Option<Arc<FaultInjector>>,
}

/// Handle to the flusher thread; dropping it writes and syncs what is staged, completes
/// the callbacks and joins the thread.
pub(crate) struct Flusher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Flusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flusher").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Flusher {
    pub fn start(poison: Arc<Poison>, faults: Option<Arc<FaultInjector>>) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            counters: Counters::default(),
            queue: Mutex::default(),
            work: Condvar::new(),
            drained: Condvar::new(),
            poison,
            faults,
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("raft-log-flush".into())
            .spawn(move || run(&s))?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Stages `bytes` for `file` at `offset`. Call [`Flusher::enqueue`] for the callback
    /// once the entries are published in the index. Must be called in log order; the
    /// writer lock guarantees that.
    pub fn stage(&self, file: &Arc<File>, path: &std::path::Path, offset: u64, bytes: &[u8]) {
        let mut q = lock(&self.shared.queue);
        match q.staged.last_mut() {
            Some(r) if Arc::ptr_eq(&r.file, file) && r.offset + r.data.len() as u64 == offset => {
                r.data.extend_from_slice(bytes);
            }
            _ => {
                let mut data = q
                    .spare
                    .pop()
                    .unwrap_or_else(|| Vec::with_capacity(STAGE_CAPACITY));
                data.extend_from_slice(bytes);
                q.staged.push(Run {
                    file: file.clone(),
                    path: path.to_path_buf(),
                    offset,
                    data,
                });
            }
        }
    }

    /// Queues `callback` behind everything staged so far.
    pub fn enqueue(&self, callback: FlushCallback) {
        let mut q = lock(&self.shared.queue);
        q.callbacks.push(callback);
        let idle = !q.busy;
        drop(q);
        if idle {
            self.shared.work.notify_one();
        }
    }

    /// Staged bytes of `file` overlapping `[start, end)`. Take this *before* reading the
    /// file: data leaves the staging only after it is in the file.
    pub fn overlay(&self, file: &Arc<File>, start: u64, end: u64) -> Vec<Patch> {
        let q = lock(&self.shared.queue);
        let in_flight = q.in_flight.iter().map(|r| &**r);
        let mut patches = Vec::new();
        for r in in_flight.chain(q.staged.iter()) {
            let (lo, hi) = (r.offset.max(start), (r.offset + r.data.len() as u64).min(end));
            if Arc::ptr_eq(&r.file, file) && lo < hi {
                let bytes = r.data[(lo - r.offset) as usize..(hi - r.offset) as usize].to_vec();
                patches.push(Patch { offset: lo, bytes });
            }
        }
        patches
    }

    pub fn stats(&self) -> FlushStats {
        let c = &self.shared.counters;
        FlushStats {
            rounds: c.rounds.load(Ordering::Relaxed),
            appends: c.appends.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
        }
    }

    /// Waits until everything staged is written (and synced) or the log is poisoned.
    pub fn drain(&self) -> Result<(), LogError> {
        let mut q = lock(&self.shared.queue);
        while (q.busy || !q.staged.is_empty() || !q.callbacks.is_empty())
            && self.shared.poison.check().is_ok()
        {
            self.shared.work.notify_one();
            q = self.shared.drained.wait(q).unwrap_or_else(|p| p.into_inner());
        }
        drop(q);
        self.shared.poison.check()
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        lock(&self.shared.queue).stop = true;
        self.shared.work.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(shared: &Shared) {
    loop {
        let (callbacks, runs) = {
            let mut q = lock(&shared.queue);
            while q.callbacks.is_empty() && q.staged.is_empty() && !q.stop {
                shared.drained.notify_all();
                q = shared.work.wait(q).unwrap_or_else(|p| p.into_inner());
            }
            if q.callbacks.is_empty() && q.staged.is_empty() {
                shared.drained.notify_all();
                return;
            }
            let runs: Vec<Arc<Run>> = std::mem::take(&mut q.staged).into_iter().map(Arc::new).collect();
            q.in_flight.clone_from(&runs);
            q.busy = true;
            (std::mem::take(&mut q.callbacks), runs)
        };
        let span = tracing::trace_span!("group_commit", entries = callbacks.len(), runs = runs.len());
        let _g = span.enter();
        let result = write_and_sync(shared, &runs);
        let c = &shared.counters;
        c.rounds.fetch_add(1, Ordering::Relaxed);
        c.appends.fetch_add(callbacks.len() as u64, Ordering::Relaxed);
        c.bytes
            .fetch_add(runs.iter().map(|r| r.data.len() as u64).sum(), Ordering::Relaxed);
        if let Err(e) = &result {
            shared.poison.set(e.to_string());
        }
        {
            let mut q = lock(&shared.queue);
            q.in_flight.clear();
            q.busy = false;
            for run in runs {
                if let Ok(mut r) = Arc::try_unwrap(run)
                    && q.spare.len() < MAX_SPARE
                    && r.data.capacity() <= MAX_SPARE_CAPACITY
                {
                    r.data.clear();
                    q.spare.push(r.data);
                }
            }
        }
        for cb in callbacks {
            cb(match &result {
                Ok(()) => Ok(()),
                Err(_) => shared.poison.check(),
            });
        }
        shared.drained.notify_all();
    }
}

fn write_and_sync(shared: &Shared, runs: &[Arc<Run>]) -> Result<(), LogError> {
    shared.poison.check()?;
    for r in runs {
        r.file
            .write_all_at(&r.data, r.offset)
            .map_err(|e| LogError::io("write segment", &r.path, e))?;
    }
    let mut synced: Vec<&Arc<File>> = Vec::new();
    for r in runs {
        if synced.iter().any(|f| Arc::ptr_eq(f, &r.file)) {
            continue;
        }
        if let Some(f) = &shared.faults {
            f.before_sync()
                .map_err(|e| LogError::io("fdatasync segment", &r.path, e))?;
        }
        r.file
            .sync_data()
            .map_err(|e| LogError::io("fdatasync segment", &r.path, e))?;
        synced.push(&r.file);
    }
    Ok(())
}
