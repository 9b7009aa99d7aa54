//! The shared core of a [`StateMachine`](super::StateMachine) handle: the open database, the
//! locks that order writers, and applying a batch of entries.
//!
//! Locks, always taken in this order:
//! - `writer` serializes everything that changes the database (apply, checkpoint, install);
//! - `live` holds the open database: readers and apply share it, install replaces it;
//! - `snapshot` guards the current snapshot file and its meta.

use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::RwLock;
use std::sync::RwLockReadGuard;
use std::sync::RwLockWriteGuard;
use std::sync::TryLockError;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Instant;

use openraft::EntryPayload;

use super::Entry;
use super::apply::Op;
use super::apply::Pending;
use super::archive;
use super::archive::SnapshotMeta;
use super::error::SmError;
use super::error::SmResult;
use super::layout::Layout;
use super::queue_signals::QueueSignals;
use super::store::SmConfig;
use super::store::Stall;
use super::store::Store;
use super::store::StoredMembership;
use crate::command::CommandResult;

#[derive(Debug)]
pub(super) struct Inner {
    pub layout: Layout,
    pub cfg: SmConfig,
    writer: Mutex<()>,
    /// The open database; `None` only after a failed snapshot install.
    live: RwLock<Option<Store>>,
    /// The generation (directory) `CURRENT_DB` names.
    generation: AtomicU64,
    snapshot: Mutex<Option<SnapshotMeta>>,
    seq: AtomicU64,
    /// Bumped after every applied batch that changed consumable state (sends, acks, topic
    /// changes): long-polling receivers wait on it.
    pub changes: tokio::sync::watch::Sender<u64>,
    /// Bumped after every applied batch that created, updated or deleted a topic (a
    /// dead-letter topic created on first use included), and after a snapshot install:
    /// the registrar re-announces the group's topics to the name servers.
    pub topic_changes: tokio::sync::watch::Sender<u64>,
    /// Bumped per queue by the batches that appended to it; pulls at a queue's end wait on
    /// it.
    pub queue_signals: QueueSignals,
    /// Batches applied on the caller's task ([`Inner::try_apply_entries_now`]).
    applied_now: AtomicU64,
    /// Until when (ms since `opened`) batches go straight to the blocking pool: set
    /// [`STALL_BACKOFF_MS`] ahead when RocksDB refuses a write that would have stalled, so
    /// that batches do not gather their effects twice meanwhile.
    stall_backoff_until_ms: AtomicU64,
    opened: Instant,
}

/// How long after a refused write stall no batch is tried on the caller's task.
pub const STALL_BACKOFF_MS: u64 = 100;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    pub fn open(layout: Layout, generation: u64, cfg: SmConfig) -> SmResult<Self> {
        let store = Store::open(&layout.db_dir(generation), &cfg)?;
        let snapshot = current_snapshot_meta(&layout)?;
        Ok(Self {
            layout,
            cfg,
            writer: Mutex::new(()),
            live: RwLock::new(Some(store)),
            generation: AtomicU64::new(generation),
            snapshot: Mutex::new(snapshot),
            seq: AtomicU64::new(0),
            changes: tokio::sync::watch::Sender::new(0),
            topic_changes: tokio::sync::watch::Sender::new(0),
            queue_signals: QueueSignals::default(),
            applied_now: AtomicU64::new(0),
            stall_backoff_until_ms: AtomicU64::new(0),
            opened: Instant::now(),
        })
    }

    /// A fresh number for temporary names.
    pub fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    pub fn writer(&self) -> MutexGuard<'_, ()> {
        lock(&self.writer)
    }

    pub fn snapshot(&self) -> MutexGuard<'_, Option<SnapshotMeta>> {
        lock(&self.snapshot)
    }

    pub fn live_mut(&self) -> RwLockWriteGuard<'_, Option<Store>> {
        self.live.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub fn set_generation(&self, generation: u64) {
        self.generation.store(generation, Ordering::SeqCst);
    }

    /// Runs `f` on the open database (sharing it with other readers).
    pub fn with_store<T>(&self, f: impl FnOnce(&Store) -> SmResult<T>) -> SmResult<T> {
        let guard: RwLockReadGuard<'_, Option<Store>> = self.live.read().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(store) => f(store),
            None => Err(SmError::Task(
                "the state machine database is closed after a failed snapshot install".into(),
            )),
        }
    }

    /// Applies entries in order and writes all their changes and the applied state in one
    /// batch; returns one result per entry (`Done` for blank and membership entries).
    pub fn apply_entries(&self, entries: &[Entry]) -> SmResult<Vec<CommandResult>> {
        let _writer = self.writer();
        self.with_store(|store| self.apply_to(store, entries, Stall::Wait))
    }

    /// [`Inner::apply_entries`] if it can be done without blocking: `None`, with nothing
    /// changed, while another writer (a snapshot) holds the writer lock, while a snapshot
    /// install replaces the database, or when RocksDB would stall the write (and for
    /// [`STALL_BACKOFF_MS`] after that).
    pub fn try_apply_entries_now(&self, entries: &[Entry]) -> Option<SmResult<Vec<CommandResult>>> {
        if self.ms_since_open() < self.stall_backoff_until_ms.load(Ordering::Relaxed) {
            return None;
        }
        let _writer = match self.writer.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        let live = match self.live.try_read() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        // A closed database: the blocking path reports it.
        let store = live.as_ref()?;
        match self.apply_to(store, entries, Stall::Refuse) {
            Err(SmError::WouldStall) => {
                self.stall_backoff_until_ms
                    .store(self.ms_since_open() + STALL_BACKOFF_MS, Ordering::Relaxed);
                None
            }
            done => {
                self.applied_now.fetch_add(1, Ordering::Relaxed);
                Some(done)
            }
        }
    }

    /// Batches applied by [`Inner::try_apply_entries_now`] so far.
    pub fn applied_now(&self) -> u64 {
        self.applied_now.load(Ordering::Relaxed)
    }

    fn ms_since_open(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    /// Applies `entries` to `store`; the caller holds the writer lock. Changes nothing
    /// unless the final write succeeds (the entries' effects are gathered first), so a
    /// refused stall can be retried.
    fn apply_to(&self, store: &Store, entries: &[Entry], stall: Stall) -> SmResult<Vec<CommandResult>> {
        let mut pending = Pending::new(store);
        let mut results = Vec::with_capacity(entries.len());
        let mut membership = None;
        for entry in entries {
            let result = match &entry.payload {
                EntryPayload::Blank => CommandResult::Done,
                EntryPayload::Normal(cmd) => pending.apply(entry.log_id.index, cmd)?,
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembership::new(Some(entry.log_id), m.clone()));
                    CommandResult::Done
                }
            };
            results.push(result);
        }
        let applied = entries.last().map(|e| e.log_id);
        let ops = pending.into_ops();
        store.write_with(&ops, applied.as_ref(), membership.as_ref(), stall)?;
        self.signal(entries, &ops);
        Ok(results)
    }

    /// Wakes whoever waits on what an applied batch (`entries`, which wrote `ops`) changed.
    fn signal(&self, entries: &[Entry], ops: &[Op]) {
        // Judged by what was written, not by command kind: a refused CreateTopic
        // changes nothing, a pop may create a dead-letter topic.
        let topics_changed = ops
            .iter()
            .any(|op| matches!(op, Op::PutTopic(_) | Op::DeleteTopic(_)));
        let consumable = entries.iter().any(|e| match &e.payload {
            EntryPayload::Normal(cmd) => !matches!(cmd.header(), Ok(crate::command::Header::Pop(_))),
            _ => false,
        });
        if consumable {
            bump(&self.changes);
        }
        for op in ops {
            if let Op::SetNextOffset { topic, queue_id, .. } = op {
                self.queue_signals.bump(topic, *queue_id);
            }
        }
        if topics_changed {
            bump(&self.topic_changes);
            self.queue_signals.bump_all();
        }
    }

    /// Tells every watcher that the whole state changed (a snapshot was installed).
    pub fn notify_replaced(&self) {
        bump(&self.changes);
        bump(&self.topic_changes);
        self.queue_signals.bump_all();
    }
}

fn bump(counter: &tokio::sync::watch::Sender<u64>) {
    counter.send_modify(|n| *n = n.wrapping_add(1));
}

/// The meta of the snapshot kept in the directory, if there is a readable one. An unreadable
/// one is removed: it is derived data, and openraft builds a new snapshot when it needs one.
fn current_snapshot_meta(layout: &Layout) -> SmResult<Option<SnapshotMeta>> {
    let path = layout.snapshot_file();
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(SmError::io("open", path, e)),
    };
    match archive::read_meta(&mut file) {
        Ok(meta) => Ok(Some(meta)),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "removing an unreadable snapshot");
            super::fsutil::remove_path(&path)?;
            Ok(None)
        }
    }
}
