//! Write-behind group commit.
//!
//! `append` encodes records and *stages* them here together with its callback: the
//! buffer it encoded into becomes the staged run, or is copied onto the end of the run
//! staged before it (see `staging.rs`). A write thread takes everything staged since its last round and writes each
//! contiguous run with a single `pwrite`; a sync thread takes everything written since
//! its last round, `fdatasync`s every file involved, and completes the callbacks in the
//! order they were staged, which is log order. Concurrent appends therefore share the
//! write syscall and the fsync, and the copy of one group into the page cache overlaps
//! the fsync of the previous one (see `flush_pipeline.rs`).
//!
//! Staged bytes stay visible to readers until they are in the file (see [`Flusher::overlay_into`]),
//! so an entry is readable as soon as `append` returns.

use std::fs::File;
use std::ops::Range;
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
use crate::flush_pipeline;
use crate::staging::Run;

/// Initial capacity of a staging buffer; a group commit of 64 x 16 KiB fits.
const STAGE_CAPACITY: usize = 2 << 20;

/// Called once the appended entries are durable, or with the error that poisoned the log.
/// Runs on the log's sync thread: keep it short; it may call back into the log.
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

/// A file written in one round and where the data written to it ends.
pub(crate) struct WrittenFile {
    pub file: Arc<File>,
    pub path: PathBuf,
    pub end: u64,
    /// Written with `O_DIRECT` (no page-cache pages of its own to drop).
    pub direct: bool,
}

/// Written runs whose callbacks wait for the next fsync.
pub(crate) struct Written {
    pub files: Vec<WrittenFile>,
    pub callbacks: Vec<FlushCallback>,
}

#[derive(Default)]
pub(crate) struct Queue {
    /// Staged runs not yet taken by the write thread, in log order.
    pub staged: Vec<Run>,
    /// Callbacks of the staged runs.
    pub callbacks: Vec<FlushCallback>,
    /// Runs the write thread is writing right now.
    pub in_flight: Vec<Arc<Run>>,
    pub writing: bool,
    /// Written groups waiting for the sync thread, in log order.
    pub written: Vec<Written>,
    pub syncing: bool,
    /// Buffers of written runs, reused so that staging does not fault in fresh pages.
    pub spare: Vec<Vec<u8>>,
    pub stop: bool,
    pub writer_exited: bool,
}

impl Queue {
    fn idle(&self) -> bool {
        !self.writing
            && !self.syncing
            && self.staged.is_empty()
            && self.callbacks.is_empty()
            && self.written.is_empty()
    }
}

/// Counters of the group commit since the log was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushStats {
    /// fsync rounds (one `fdatasync` per file written since the previous round).
    pub rounds: u64,
    /// Appends completed.
    pub appends: u64,
    /// Bytes written.
    pub bytes: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub rounds: AtomicU64,
    pub appends: AtomicU64,
    pub bytes: AtomicU64,
}

pub(crate) struct Shared {
    pub counters: Counters,
    pub queue: Mutex<Queue>,
    /// Wakes the write thread.
    pub work: Condvar,
    /// Wakes the sync thread.
    pub to_sync: Condvar,
    /// Wakes threads waiting for everything to be durable.
    pub drained: Condvar,
    pub poison: Arc<Poison>,
    pub faults: Option<Arc<FaultInjector>>,
    /// Keep the synced-length ledger (see `synced.rs`).
    pub track_synced: bool,
    /// Newest durable bytes left in the page cache (see `page_cache.rs`); 0: all.
    pub page_cache_window: u64,
    /// Write segments with `O_DIRECT` where the filesystem allows (see `direct_write.rs`).
    pub direct_io: bool,
}

/// Handle to the flusher thread; dropping it writes and syncs what is staged, completes
/// the callbacks and joins the thread.
pub(crate) struct Flusher {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Flusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flusher").finish_non_exhaustive()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Flusher {
    pub fn start(
        poison: Arc<Poison>,
        faults: Option<Arc<FaultInjector>>,
        track_synced: bool,
        page_cache_window: u64,
        direct_io: bool,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            counters: Counters::default(),
            queue: Mutex::default(),
            work: Condvar::new(),
            to_sync: Condvar::new(),
            drained: Condvar::new(),
            poison,
            faults,
            track_synced,
            page_cache_window,
            direct_io,
        });
        let (w, s) = (shared.clone(), shared.clone());
        let spawn = |name: &str| std::thread::Builder::new().name(name.into());
        let writer = spawn("raft-log-write").spawn(move || flush_pipeline::write_loop(&w))?;
        let syncer = spawn("raft-log-sync").spawn(move || flush_pipeline::sync_loop(&s))?;
        Ok(Self {
            shared,
            threads: vec![writer, syncer],
        })
    }

    /// Stages a copy of `bytes` for `file` at `offset`. Call [`Flusher::enqueue`] for the
    /// callback once the entries are published in the index. Must be called in log order;
    /// the writer lock guarantees that.
    pub fn stage(&self, file: &Arc<File>, path: &std::path::Path, offset: u64, bytes: &[u8]) {
        let mut q = lock(&self.shared.queue);
        match q.staged.last_mut() {
            Some(r) if Arc::ptr_eq(&r.file, file) && r.end() == offset => r.extend(bytes),
            _ => {
                let spare = q
                    .spare
                    .pop()
                    .unwrap_or_else(|| Vec::with_capacity(STAGE_CAPACITY));
                q.staged.push(Run::copied(file, path, offset, bytes, spare));
            }
        }
    }

    /// Stages `buf[start..]`, laid out for `offset` by [`crate::staging::lay_out`], as
    /// [`Flusher::stage`] does: the buffer itself becomes the run if it starts one, and
    /// is copied only if it joins a run already staged. Returns a buffer for the caller's
    /// next records (this one if it was copied).
    pub fn stage_encoded(
        &self,
        file: &Arc<File>,
        path: &std::path::Path,
        offset: u64,
        buf: Vec<u8>,
        start: usize,
    ) -> Vec<u8> {
        let mut q = lock(&self.shared.queue);
        if let Some(r) = q.staged.last_mut()
            && Arc::ptr_eq(&r.file, file)
            && r.end() == offset
        {
            r.extend(&buf[start..]);
            return buf;
        }
        match Run::take(file, path, offset, buf, start) {
            Ok(run) => {
                q.staged.push(run);
                q.spare
                    .pop()
                    .unwrap_or_else(|| Vec::with_capacity(STAGE_CAPACITY))
            }
            Err(buf) => {
                let spare = q
                    .spare
                    .pop()
                    .unwrap_or_else(|| Vec::with_capacity(STAGE_CAPACITY));
                q.staged
                    .push(Run::copied(file, path, offset, &buf[start..], spare));
                buf
            }
        }
    }

    /// Queues `callback` behind everything staged so far.
    pub fn enqueue(&self, callback: FlushCallback) {
        let mut q = lock(&self.shared.queue);
        q.callbacks.push(callback);
        let idle = !q.writing;
        drop(q);
        if idle {
            self.shared.work.notify_one();
        }
    }

    /// Copies the staged bytes of `file` that fall in `[start, start + buf.len())` into
    /// `buf` and returns the ranges it filled (file offsets, in staging order). Call this
    /// *before* reading the rest from the file: data leaves the staging only after it is
    /// in the file, so what was not staged at this moment is already there.
    pub fn overlay_into(&self, file: &Arc<File>, start: u64, buf: &mut [u8]) -> Vec<Range<u64>> {
        let end = start + buf.len() as u64;
        let q = lock(&self.shared.queue);
        let in_flight = q.in_flight.iter().map(|r| &**r);
        let mut filled = Vec::new();
        for r in in_flight.chain(q.staged.iter()) {
            let (lo, hi) = (r.offset.max(start), r.end().min(end));
            if Arc::ptr_eq(&r.file, file) && lo < hi {
                let src = &r.bytes()[(lo - r.offset) as usize..(hi - r.offset) as usize];
                buf[(lo - start) as usize..(hi - start) as usize].copy_from_slice(src);
                filled.push(lo..hi);
            }
        }
        filled
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
        while !q.idle() && self.shared.poison.check().is_ok() {
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
        // The write thread exits first, then the sync thread once it has synced the rest.
        for t in self.threads.drain(..) {
            // The last handle may be dropped inside a callback, on the sync thread itself.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::staging::lay_out;

    /// A flusher and a segment-like file whose first 100 bytes are already written (as
    /// a segment's header is before its first record).
    fn flusher() -> (tempfile::TempDir, Arc<File>, Flusher) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("seg");
        std::fs::write(&path, [9u8; 100]).expect("header");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open");
        let fl = Flusher::start(Arc::new(Poison::default()), None, false, 0, true).expect("start");
        (dir, Arc::new(f), fl)
    }

    /// The file's bytes once everything staged is written. (Whether a run is still staged
    /// at a given moment is up to the write thread, so the test does not depend on it.)
    fn written_bytes(fl: &Flusher, path: &std::path::Path) -> Vec<u8> {
        fl.drain().expect("drain");
        std::fs::read(path).expect("read back")
    }

    /// An encoded buffer that starts a run becomes the run (no copy); the caller gets
    /// another buffer back. One laid out for another offset is copied and given back.
    #[test]
    fn an_encoded_buffer_starting_a_run_is_taken_not_copied() {
        let (dir, f, fl) = flusher();
        let path = dir.path().join("seg");
        let mut buf = Vec::new();
        let start = lay_out(&mut buf, 100, 64);
        buf.extend_from_slice(&[5u8; 64]);
        let ptr = buf.as_ptr();
        let back = fl.stage_encoded(&f, &path, 100, buf, start);
        assert_ne!(back.as_ptr(), ptr, "the buffer became the run");
        let file = written_bytes(&fl, &path);
        assert_eq!(&file[..100], &[9u8; 100], "the header is kept");
        assert_eq!(&file[100..164], &[5u8; 64]);

        let mut other = Vec::new();
        let start = lay_out(&mut other, 1, 8);
        other.extend_from_slice(&[6u8; 8]);
        let ptr = other.as_ptr();
        // Nothing is staged (drained above) and the buffer is laid out for offset 1, not 164.
        let back = fl.stage_encoded(&f, &path, 164, other, start);
        assert_eq!(back.as_ptr(), ptr, "copied, and the buffer given back");
        let file = written_bytes(&fl, &path);
        assert_eq!(&file[..100], &[9u8; 100]);
        assert_eq!(&file[100..164], &[5u8; 64]);
        assert_eq!(&file[164..172], &[6u8; 8]);
        drop(fl);
    }
}
