//! Group commit: one thread fdatasyncs everything written since its last round and then
//! completes the waiting callbacks in log order.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Condvar;
use std::sync::Mutex;
use std::sync::OnceLock;
use std::thread::JoinHandle;

use crate::error::LogError;
use crate::fault::FaultInjector;

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

#[derive(Default)]
struct Queue {
    callbacks: Vec<FlushCallback>,
    dirty: Vec<(Arc<File>, PathBuf)>,
    stop: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    poison: Arc<Poison>,
    faults: Option<Arc<FaultInjector>>,
}

/// Handle to the flusher thread; dropping it flushes what is queued and joins the thread.
pub(crate) struct Flusher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Flusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flusher").finish_non_exhaustive()
    }
}

impl Flusher {
    pub fn start(poison: Arc<Poison>, faults: Option<Arc<FaultInjector>>) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            queue: Mutex::default(),
            wake: Condvar::new(),
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

    /// Queues `callback` behind a sync of `file` (already written by the caller).
    /// Must be called in log order; the writer lock guarantees that.
    pub fn enqueue(&self, files: &[(Arc<File>, PathBuf)], callback: FlushCallback) {
        let mut q = lock(&self.shared.queue);
        for (file, path) in files {
            if !q.dirty.iter().any(|(f, _)| Arc::ptr_eq(f, file)) {
                q.dirty.push((file.clone(), path.clone()));
            }
        }
        q.callbacks.push(callback);
        drop(q);
        self.shared.wake.notify_one();
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        lock(&self.shared.queue).stop = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn run(shared: &Shared) {
    loop {
        let (callbacks, dirty) = {
            let mut q = lock(&shared.queue);
            while q.callbacks.is_empty() && !q.stop {
                q = shared.wake.wait(q).unwrap_or_else(|p| p.into_inner());
            }
            if q.callbacks.is_empty() && q.stop {
                return;
            }
            (std::mem::take(&mut q.callbacks), std::mem::take(&mut q.dirty))
        };
        let span = tracing::trace_span!("group_commit", entries = callbacks.len(), files = dirty.len());
        let _g = span.enter();
        let result = sync_all(shared, &dirty);
        if let Err(e) = &result {
            shared.poison.set(e.to_string());
        }
        for cb in callbacks {
            cb(match &result {
                Ok(()) => Ok(()),
                Err(_) => shared.poison.check(),
            });
        }
    }
}

fn sync_all(shared: &Shared, dirty: &[(Arc<File>, PathBuf)]) -> Result<(), LogError> {
    shared.poison.check()?;
    for (file, path) in dirty {
        if let Some(f) = &shared.faults {
            f.before_sync()
                .map_err(|e| LogError::io("fdatasync segment", path, e))?;
        }
        file.sync_data()
            .map_err(|e| LogError::io("fdatasync segment", path, e))?;
    }
    Ok(())
}
