//! The message index: find a topic's messages by message id or by key, as RocketMQ's
//! index service does.
//!
//! Each node builds its own index from its commit log ([`indexer`]), behind the state
//! machine: only applied entries are indexed, so nothing is indexed that Raft could still
//! truncate. The index is derived data: it is not replicated, not part of snapshots and
//! never fsynced while a segment is active; a node that loses part of it (a crash, a
//! deleted directory) indexes the commit log again from where its index ends.
//!
//! Storage is a list of hash-slot segments ([`segment`]); a lookup walks the chain of the
//! key's slot in each segment, newest segment first. Every hit is only a candidate: the
//! query reads the message and checks topic and key ([`query`]), so hash collisions,
//! sends the state machine refused and deleted topics never show.
//!
//! Bounds: a segment holds `entries_per_file` entries (40 bytes each) and its slot table
//! `slots_per_file` slots (4 bytes each, in memory for the one active segment only);
//! segments whose entries all lie below the commit log's first index are deleted.

pub mod entry;
pub mod indexer;
pub mod query;
pub mod segment;

use std::collections::HashSet;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::MutexGuard;

use serde::Deserialize;
use serde::Serialize;

use self::entry::IndexEntry;
use self::segment::IndexItem;
use self::segment::Segment;
use crate::error::BrokerError;
use crate::error::BrokerResult;

/// Configuration of the message index (`[index]` in the broker's TOML file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IndexConfig {
    /// Index message ids and keys (RocketMQ's `messageIndexEnable`, default true).
    pub enabled: bool,
    /// Entries per index file; one per message id and one per key (RocketMQ's
    /// `maxIndexNum` is 20,000,000; raftmq uses smaller files because the active one
    /// is scanned when a node starts).
    pub entries_per_file: u32,
    /// Hash slots per index file (RocketMQ's `maxHashSlotNum` is 5,000,000). Fewer slots
    /// make longer chains for a lookup to walk (about 60 entries per slot in a full file
    /// by default, read with `pread`) but keep the table that every indexed message
    /// updates small enough for the CPU's cache (256 KiB); a table of 4 MiB cost a
    /// cache miss per message.
    pub slots_per_file: u32,
    /// Most messages one query returns (RocketMQ's `maxMsgsNumBatch`: 64).
    pub max_query_results: u32,
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            entries_per_file: 4_000_000,
            slots_per_file: 65_536,
            max_query_results: 64,
        }
    }
}

impl IndexConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.entries_per_file == 0 || self.entries_per_file > 50_000_000 {
            return Err("index.entries_per_file must be between 1 and 50000000".into());
        }
        if self.slots_per_file == 0 || self.slots_per_file > 50_000_000 {
            return Err("index.slots_per_file must be between 1 and 50000000".into());
        }
        if self.max_query_results == 0 || self.max_query_results > 1024 {
            return Err("index.max_query_results must be between 1 and 1024".into());
        }
        Ok(())
    }
}

/// How many chain links one lookup follows in one segment at most: a query's cost stays
/// bounded even for a key that millions of messages share.
const MAX_STEPS_PER_SEGMENT: usize = 100_000;

/// A node's message index.
#[derive(Debug)]
pub struct MessageIndex {
    dir: PathBuf,
    cfg: IndexConfig,
    segments: Mutex<Segments>,
    /// The last log index whose messages are all indexed (0: none yet).
    progress: tokio::sync::watch::Sender<u64>,
}

#[derive(Debug)]
struct Segments {
    /// Oldest first; only the last one may be active.
    list: Vec<Segment>,
    next_seq: u64,
}

/// Turns an I/O error into a storage error naming the file (the path is formatted only
/// when there is an error: this is built on every write).
pub(crate) fn io_error<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> BrokerError + 'a {
    move |e| BrokerError::Storage(format!("message index: {what} {}: {e}", path.display()))
}

impl MessageIndex {
    /// Opens (or creates) the index in `dir`; an unsealed segment that is not the newest
    /// (a crash while rolling over) is sealed now.
    pub fn open(dir: impl AsRef<Path>, cfg: IndexConfig) -> BrokerResult<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(io_error("create dir", &dir))?;
        let mut found = Vec::new();
        for de in std::fs::read_dir(&dir).map_err(io_error("list", &dir))? {
            let de = de.map_err(io_error("list", &dir))?;
            let name = de.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                std::fs::remove_file(de.path()).map_err(io_error("remove", &de.path()))?;
            } else if let Some((seq, slots)) = Segment::parse_name(&name) {
                found.push((seq, slots, de.path()));
            }
        }
        found.sort();
        let mut list = Vec::with_capacity(found.len());
        let count = found.len();
        for (i, (_, slots, path)) in found.iter().enumerate() {
            let mut seg = Segment::open(path.clone(), *slots)?;
            if i + 1 < count && !seg.is_sealed() {
                seg.seal()?;
                fsync_dir(&dir)?;
            }
            list.push(seg);
        }
        let next_seq = found.last().map_or(1, |(seq, _, _)| seq + 1);
        let last = list.iter().rev().map(Segment::span).find(|s| s.entries > 0);
        tracing::info!(dir = %dir.display(), segments = list.len(), last_log_index = ?last.map(|s| s.last_log_index), "message index opened");
        Ok(Self {
            dir,
            cfg,
            segments: Mutex::new(Segments { list, next_seq }),
            progress: tokio::sync::watch::Sender::new(0),
        })
    }

    pub fn config(&self) -> &IndexConfig {
        &self.cfg
    }

    fn lock(&self) -> MutexGuard<'_, Segments> {
        self.segments.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The log index of the newest indexed entry, if any: indexing resumes there (that
    /// entry again, since a crash may have kept only part of its keys; duplicates are
    /// dropped by lookups).
    pub fn last_log_index(&self) -> Option<u64> {
        let segs = self.lock();
        segs.list
            .iter()
            .rev()
            .map(Segment::span)
            .find(|s| s.entries > 0)
            .map(|s| s.last_log_index)
    }

    /// Appends items in log order, rolling over to a new segment when one is full.
    pub fn append(&self, items: &[IndexItem]) -> BrokerResult<()> {
        let mut segs = self.lock();
        let mut rest = items;
        while !rest.is_empty() {
            let needs_new = segs
                .list
                .last()
                .is_none_or(|s| s.is_sealed() || s.span().entries >= self.cfg.entries_per_file);
            if needs_new {
                if let Some(last) = segs.list.last_mut() {
                    last.seal()?;
                }
                let path = Segment::path(&self.dir, segs.next_seq, self.cfg.slots_per_file);
                let seg = Segment::create(path, self.cfg.slots_per_file)?;
                fsync_dir(&self.dir)?;
                segs.next_seq += 1;
                segs.list.push(seg);
            }
            let Some(active) = segs.list.last_mut() else { break };
            let n = active.append(rest, self.cfg.entries_per_file)?;
            rest = &rest[n..];
        }
        Ok(())
    }

    /// Records that every entry up to `log_index` is indexed.
    pub fn set_progress(&self, log_index: u64) {
        self.progress.send_if_modified(|p| {
            let moved = log_index > *p;
            *p = (*p).max(log_index);
            moved
        });
    }

    pub fn progress(&self) -> u64 {
        *self.progress.borrow()
    }

    pub fn subscribe_progress(&self) -> tokio::sync::watch::Receiver<u64> {
        self.progress.subscribe()
    }

    /// Entries of `hash` stored between `begin_ms` and `end_ms` (inclusive), newest
    /// first, one per message (log index, slot), at most `max`.
    pub fn lookup(&self, hash: u64, begin_ms: u64, end_ms: u64, max: usize) -> BrokerResult<Vec<IndexEntry>> {
        let segs = self.lock();
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for seg in segs.list.iter().rev() {
            let span = seg.span();
            if out.len() >= max
                || span.entries == 0
                || span.max_time_ms < begin_ms
                || span.min_time_ms > end_ms
            {
                continue;
            }
            seg.walk(hash, MAX_STEPS_PER_SEGMENT, |e| {
                let in_range = (begin_ms..=end_ms).contains(&e.store_time_ms);
                if in_range && seen.insert((e.log_index, e.slot)) {
                    out.push(*e);
                }
                out.len() < max
            })?;
        }
        Ok(out)
    }

    /// Deletes the segments whose entries all lie below `first_log_index` (the commit
    /// log's first readable index: their messages are gone). Returns how many.
    pub fn retain_from(&self, first_log_index: u64) -> BrokerResult<usize> {
        let mut segs = self.lock();
        let stale = segs
            .list
            .iter()
            .take_while(|s| s.span().entries > 0 && s.span().last_log_index < first_log_index)
            .count();
        let removed: Vec<Segment> = segs.list.drain(..stale).collect();
        drop(segs);
        for seg in removed {
            seg.remove()?;
        }
        if stale > 0 {
            fsync_dir(&self.dir)?;
            tracing::info!(
                segments = stale,
                below = first_log_index,
                "message index segments deleted"
            );
        }
        Ok(stale)
    }

    /// How many segment files the index has (for tests and status).
    pub fn segment_count(&self) -> usize {
        self.lock().list.len()
    }
}

fn fsync_dir(dir: &Path) -> BrokerResult<()> {
    Ok(crate::sm::fsutil::fsync_dir(dir)?)
}

#[cfg(test)]
mod tests;
