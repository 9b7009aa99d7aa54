//! The state machine (RocksDB): consume queues, offsets, topics; changed only by applying
//! Raft entries.
//!
//! [`StateMachine`] is a cheap-to-clone handle implementing openraft's
//! [`RaftStateMachine`]; clones share one database. Besides openraft's interface it offers
//! the reads the broker's handlers need ([`StateMachine::read_cq`] and friends).
//!
//! Blocking: snapshot building and installing, and most applies, run on tokio's blocking
//! pool (`spawn_blocking`), so a RocksDB write stall, a pop's scan or a large checkpoint
//! never stalls the runtime's workers. A small batch of sends (the usual batch under load)
//! is applied on the calling task when nothing can make it wait: the writer lock and the
//! database free, and RocksDB told to refuse rather than stall the write (`no_slowdown`);
//! otherwise it goes to the pool too ([`apply_now`]). The read methods are plain
//! synchronous calls: point reads and short scans served mostly from the block cache,
//! cheap enough to call from async handlers.
//! `applied_state` and `get_current_snapshot` read inline for the same reason.
//!
//! Durability: RocksDB's WAL is off; see [`store`] for why that is safe.

pub mod apply;
#[cfg(test)]
mod apply_now_tests;
pub mod archive;
mod batch_run;
mod cq_runs;
mod cq_tail;
pub mod error;
pub(crate) mod fsutil;
mod inner;
pub mod keys;
pub mod layout;
mod meta_cache;
mod queue_map;
mod queue_signals;
pub mod read;
pub mod records;
pub mod snapshot;
pub mod store;
#[cfg(test)]
mod watch_tests;

use std::io;
use std::path::Path;
use std::sync::Arc;

use futures_util::Stream;
use futures_util::StreamExt;
use openraft::OptionalSend;
use openraft::RaftSnapshotBuilder;
use openraft::storage::ApplyResponder;
use openraft::storage::EntryResponder;
use openraft::storage::RaftStateMachine;
use openraft::type_config::alias::EntryOf;
use openraft::type_config::alias::SnapshotMetaOf;

use self::apply::StateView;
pub use self::error::SmError;
pub use self::error::SmResult;
use self::inner::Inner;
use self::layout::Layout;
pub use self::records::CqEntry;
pub use self::records::PopState;
pub use self::snapshot::Snapshot;
pub use self::store::LogId;
pub use self::store::SmConfig;
pub use self::store::StoredMembership;
use crate::command::CommandResult;
use crate::command::TopicConfig;
use crate::raft::types::SnapshotData;
use crate::raft::types::TypeConfig;

/// A Raft entry of the broker group.
pub type Entry = EntryOf<TypeConfig>;

/// Most entries applied (and written) as one batch; a longer apply stream (e.g. catching up
/// after a restart) is written in several batches.
pub const MAX_APPLY_BATCH: usize = 4096;

/// The broker group's state machine. Cheap to clone; clones share the database.
#[derive(Debug, Clone)]
pub struct StateMachine {
    inner: Arc<Inner>,
}

/// Builds snapshots of a [`StateMachine`] (shares its database).
#[derive(Debug, Clone)]
pub struct SnapshotBuilder {
    inner: Arc<Inner>,
}

/// Most entries of a batch applied on the calling task (see [`apply_now`]).
pub const APPLY_NOW_MAX_ENTRIES: usize = 64;

/// Most messages of a batch applied on the calling task (see [`apply_now`]).
pub const APPLY_NOW_MAX_MESSAGES: usize = 8192;

/// Whether `entries` are cheap enough to apply on the calling async task: at most
/// [`APPLY_NOW_MAX_ENTRIES`] entries holding at most [`APPLY_NOW_MAX_MESSAGES`] messages,
/// and nothing but sends, blank and membership entries. Applying a send reads only the
/// in-memory queue tails; under load a batch is a few such entries, applied in well under
/// a millisecond, and handing it to the blocking pool cost two thread wake-ups each way.
/// Everything else still goes to the pool: pops, acks, offset commits and their kin read
/// RocksDB (a pop scans up to thousands of consume-queue rows, maybe from the disk), topic
/// changes are rare, and larger batches (catching up after a restart, up to
/// [`MAX_APPLY_BATCH`] entries) take long. So does any batch that would wait
/// ([`inner::Inner::try_apply_entries_now`]).
fn apply_now(entries: &[Entry]) -> bool {
    if entries.len() > APPLY_NOW_MAX_ENTRIES {
        return false;
    }
    let mut messages = 0;
    for e in entries {
        if let openraft::EntryPayload::Normal(cmd) = &e.payload {
            match cmd.header() {
                Ok(crate::command::Header::Send { messages: m, .. }) => messages += m.len(),
                _ => return false,
            }
        }
    }
    messages <= APPLY_NOW_MAX_MESSAGES
}

/// Runs blocking work on tokio's blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> SmResult<T> + Send + 'static) -> SmResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SmError::Task(e.to_string()))?
}

impl StateMachine {
    /// Opens the state machine kept in directory `dir` (created if missing). Blocks.
    pub fn open(dir: impl AsRef<Path>, cfg: SmConfig) -> SmResult<Self> {
        let (layout, generation) = Layout::open(dir.as_ref())?;
        let inner = Inner::open(layout, generation, cfg)?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The state machine's directory.
    pub fn dir(&self) -> &Path {
        self.inner.layout.root()
    }

    /// The last applied log id and membership.
    pub fn applied(&self) -> SmResult<(Option<LogId>, StoredMembership)> {
        self.inner.with_store(|s| s.applied_state())
    }

    /// A topic's configuration.
    pub fn topic(&self, name: &str) -> SmResult<Option<TopicConfig>> {
        self.inner.with_store(|s| Ok(s.topic(name)?.map(|r| r.config)))
    }

    /// All topics, ordered by name.
    pub fn topics(&self) -> SmResult<Vec<TopicConfig>> {
        self.inner.with_store(|s| s.topics())
    }

    /// The offset the next message sent to a queue gets, i.e. the queue's max offset.
    pub fn next_offset(&self, topic: &str, queue_id: u32) -> SmResult<u64> {
        self.inner.with_store(|s| s.next_offset(topic, queue_id))
    }

    /// Consume-queue entries of offsets `from_offset, from_offset + 1, …`: at most `max`,
    /// fewer at the end of the queue. Entry `i` is the message at offset `from_offset + i`.
    pub fn read_cq(
        &self,
        topic: &str,
        queue_id: u32,
        from_offset: u64,
        max: usize,
    ) -> SmResult<Vec<CqEntry>> {
        self.inner
            .with_store(|s| s.read_cq(topic, queue_id, from_offset, max))
    }

    /// A consumer group's committed offset on a queue.
    pub fn committed_offset(&self, group: &str, topic: &str, queue_id: u32) -> SmResult<Option<u64>> {
        self.inner
            .with_store(|s| s.committed_offset(group, topic, queue_id))
    }

    /// A receiver that changes after every applied batch that changed consumable state
    /// (sends, acks, topic changes; not pops). Long polls wait on it.
    pub fn subscribe_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// A receiver that changes after every applied batch that appended to `topic`'s queue
    /// `queue_id`, after every topic change and after a snapshot install. Pulls at the end
    /// of a queue wait on it, so a send wakes only the pulls of its own queue.
    pub fn subscribe_queue(&self, topic: &str, queue_id: u32) -> tokio::sync::watch::Receiver<u64> {
        self.inner.queue_signals.subscribe(topic, queue_id)
    }

    /// A receiver that changes after every applied batch that created, updated or deleted
    /// a topic (dead-letter topics created on first use included), and after a snapshot
    /// install. The registrar re-announces the group's topics on it.
    pub fn subscribe_topic_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.topic_changes.subscribe()
    }

    /// A consumer group's pop state (next offset, in-flight messages) on a queue.
    pub fn pop_state(&self, group: &str, topic: &str, queue_id: u32) -> SmResult<Option<PopState>> {
        self.inner
            .with_store(|s| s.current_pop_state(group, topic, queue_id))
    }

    /// A page of pop states (see [`read::PopEntry`]); pass the returned key to continue.
    pub fn scan_pop_states(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> SmResult<(Vec<read::PopEntry>, Option<Vec<u8>>)> {
        self.inner.with_store(|s| s.scan_pop_states(after, limit))
    }

    /// Batches applied on the calling task so far (see [`apply_now`]), for tests and
    /// metrics.
    pub fn batches_applied_now(&self) -> u64 {
        self.inner.applied_now()
    }

    /// Flushes applied state to disk (it is otherwise flushed by RocksDB as memtables fill,
    /// by snapshots, and when the last handle is dropped).
    pub fn flush(&self) -> SmResult<()> {
        self.inner.with_store(|s| s.flush())
    }

    /// Applies entries in order as one batch and returns one result per entry (`Done` for
    /// blank and membership entries): a small batch on the calling task when that cannot
    /// block ([`apply_now`]), any other on the blocking pool. openraft's `apply` goes
    /// through here; it is public for tools and tests.
    pub async fn apply_entries(&self, entries: Vec<Entry>) -> SmResult<Vec<CommandResult>> {
        if apply_now(&entries)
            && let Some(done) = self.inner.try_apply_entries_now(&entries)
        {
            return done;
        }
        let inner = self.inner.clone();
        blocking(move || inner.apply_entries(&entries)).await
    }

    async fn apply_batch(
        &self,
        entries: Vec<Entry>,
        responders: Vec<Option<ApplyResponder<TypeConfig>>>,
    ) -> SmResult<()> {
        let results = self.apply_entries(entries).await?;
        for (responder, result) in responders.into_iter().zip(results) {
            if let Some(r) = responder {
                r.send(result);
            }
        }
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let inner = self.inner.clone();
        Ok(blocking(move || inner.build_snapshot()).await?)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok(self.applied()?)
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        loop {
            let mut batch = Vec::new();
            let mut responders = Vec::new();
            let mut failure = None;
            while batch.len() < MAX_APPLY_BATCH {
                match entries.next().await {
                    Some(Ok((entry, responder))) => {
                        batch.push(entry);
                        responders.push(responder);
                    }
                    Some(Err(e)) => {
                        failure = Some(e);
                        break;
                    }
                    None => break,
                }
            }
            let done = batch.len() < MAX_APPLY_BATCH;
            if !batch.is_empty() {
                self.apply_batch(batch, responders).await?;
            }
            if let Some(e) = failure {
                return Err(e);
            }
            if done {
                return Ok(());
            }
        }
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            inner: self.inner.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TypeConfig>,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let inner = self.inner.clone();
        let meta = meta.clone();
        blocking(move || inner.install_snapshot(&meta, snapshot)).await?;
        self.inner.notify_replaced();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(self.inner.current_snapshot()?)
    }
}
