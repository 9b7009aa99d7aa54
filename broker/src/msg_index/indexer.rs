//! The background task that indexes applied log entries (RocketMQ builds its index files
//! the same way, behind the commit log).
//!
//! It follows openraft's `last_applied`: entries up to it are read from the commit log
//! (usually from its read cache: they were just written), the sends among them have the
//! message id and keys of every record indexed, and the index's progress moves on. On
//! start it resumes at the newest indexed entry; entries purged from the log in between
//! (a snapshot install) are skipped, since their messages can no longer be read.

use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use raft_log::CommitLog;
use raft_log::EntryKind;
use raft_log::LogError;
use raft_log::SlottedPayload;
use tokio::sync::watch;
use tracing::Instrument;

use super::MessageIndex;
use super::entry::KeyKind;
use super::entry::key_hash;
use super::segment::IndexItem;
use crate::command::Command;
use crate::command::Header;
use crate::context::Broker;
use crate::error::BrokerResult;

/// Log entries read and indexed per step (a step holds the index's lock only while it
/// appends, so queries interleave with a long catch-up).
const ENTRIES_PER_STEP: u64 = 256;
/// Pause after a failed step before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Runs until `stop` turns true.
pub async fn run(broker: Arc<Broker>, index: Arc<MessageIndex>, mut stop: watch::Receiver<bool>) {
    let mut metrics = broker.raft.data_metrics();
    let mut next = index.last_log_index().unwrap_or(0).max(broker.log.bounds().first);
    index.set_progress(next.saturating_sub(1));
    let span = tracing::info_span!("message_indexer", from = next);
    async move {
        loop {
            let applied = metrics.borrow_watched().last_applied.map_or(0, |l| l.index);
            if applied >= next {
                let to = (applied + 1).min(next + ENTRIES_PER_STEP);
                let (log, idx) = (broker.log.clone(), index.clone());
                let step = tokio::task::spawn_blocking(move || index_range(&log, &idx, next, to)).await;
                match step {
                    Ok(Ok(done)) => {
                        next = done;
                        index.set_progress(done - 1);
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, from = next, "indexing failed; retrying");
                        tokio::time::sleep(RETRY_AFTER).await;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "indexing step panicked; the indexer stops");
                        return;
                    }
                }
                continue;
            }
            if let Err(e) = index.retain_from(broker.log.bounds().first) {
                tracing::warn!(error = %e, "deleting old index segments failed");
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                changed = metrics.changed() => if changed.is_err() { return },
            }
            if *stop.borrow() {
                return;
            }
        }
    }
    .instrument(span)
    .await
}

/// Indexes the entries `from..to`; returns where the next step starts (past a purged
/// stretch, the log's first index).
pub fn index_range(log: &CommitLog, index: &MessageIndex, from: u64, to: u64) -> BrokerResult<u64> {
    let entries = match log.read(from, to) {
        Ok(entries) => entries,
        Err(LogError::Purged { first, .. }) => return Ok(first.max(from + 1)),
        Err(e) => return Err(e.into()),
    };
    let mut items = Vec::new();
    for e in entries {
        if e.meta.kind != EntryKind::Normal {
            continue;
        }
        let index = e.meta.index;
        match Command::from_encoded(e.payload) {
            Ok(cmd) => items_of(index, &cmd, &mut items),
            Err(err) => tracing::warn!(index, error = %err, "not indexed: undecodable command"),
        }
    }
    index.append(&items)?;
    Ok(to)
}

/// The index items of one command: a send's message ids and keys.
fn items_of(log_index: u64, cmd: &Command, out: &mut Vec<IndexItem>) {
    let Ok(Header::Send {
        store_time_ms,
        messages,
    }) = cmd.header()
    else {
        return;
    };
    for (i, (meta, record)) in messages.iter().zip(cmd.records()).enumerate() {
        let fields = match crate::message_record::index_fields(record) {
            Ok(f) => f,
            Err(err) => {
                tracing::warn!(log_index, slot = i + 1, error = %err, "not indexed: undecodable record");
                continue;
            }
        };
        let item = |kind, key| IndexItem {
            hash: key_hash(kind, &meta.topic, key),
            log_index,
            store_time_ms: *store_time_ms,
            slot: Command::slot_of_record(i),
            queue_id: meta.queue_id,
        };
        out.push(item(KeyKind::MessageId, fields.msg_id));
        for key in &fields.keys {
            out.push(item(KeyKind::Key, key));
        }
    }
}
