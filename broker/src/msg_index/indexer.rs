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
use tokio::sync::watch;
use tracing::Instrument;

use super::MessageIndex;
use super::entry::KeyKind;
use super::entry::key_hash;
use super::segment::IndexItem;
use crate::command::Command;
use crate::context::Broker;
use crate::error::BrokerResult;

/// Log entries read and indexed per step (a step holds the index's lock only while it
/// appends, so queries interleave with a long catch-up).
const ENTRIES_PER_STEP: u64 = 256;
/// How long the indexer lets applied entries gather before it reads them: under load
/// a round then covers many entries (one thread hand-off per round, one file write per
/// step) instead of waking for every applied batch.
const GATHER: Duration = Duration::from_millis(10);
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
                let (log, idx) = (broker.log.clone(), index.clone());
                let round = tokio::task::spawn_blocking(move || index_upto(&log, &idx, next, applied)).await;
                match round {
                    Ok(Ok(done)) => next = done,
                    Ok(Err((done, e))) => {
                        next = done;
                        tracing::warn!(error = %e, from = next, "indexing failed; retrying");
                        tokio::select! {
                            _ = stop.wait_for(|s| *s) => return,
                            () = tokio::time::sleep(RETRY_AFTER) => continue,
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "indexing round panicked; the indexer stops");
                        return;
                    }
                }
            }
            if let Err(e) = index.retain_from(broker.log.bounds().first) {
                tracing::warn!(error = %e, "deleting old index segments failed");
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                changed = metrics.changed() => if changed.is_err() { return },
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                () = tokio::time::sleep(GATHER) => {}
            }
        }
    }
    .instrument(span)
    .await
}

/// Indexes the entries `from..=upto` step by step, recording progress after each;
/// returns where the next round starts, with the error that ended this one early.
fn index_upto(
    log: &CommitLog,
    index: &MessageIndex,
    mut from: u64,
    upto: u64,
) -> Result<u64, (u64, crate::error::BrokerError)> {
    while from <= upto {
        let to = (upto + 1).min(from + ENTRIES_PER_STEP);
        from = index_range(log, index, from, to).map_err(|e| (from, e))?;
        index.set_progress(from - 1);
    }
    Ok(from)
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
        match raft_log::slots::slices(&e.payload) {
            Ok(slots) => items_of(index, slots, &mut items),
            Err(err) => tracing::warn!(index, error = %err, "not indexed: undecodable command"),
        }
    }
    index.append(&items)?;
    Ok(to)
}

/// The part of a send's header the index needs, borrowed from its encoding: no string
/// of it is copied (the field order is [`Header::Send`]'s and [`crate::command::MessageMeta`]'s).
#[derive(serde::Deserialize)]
struct SendRef<'a> {
    store_time_ms: u64,
    #[serde(borrow)]
    messages: Vec<MetaRef<'a>>,
}

#[derive(serde::Deserialize)]
struct MetaRef<'a> {
    /// Bytes rather than `&str`: hashed only, so not checked for UTF-8.
    topic: &'a [u8],
    queue_id: u32,
    _tag_hash: u64,
    _msg_id: &'a [u8],
}

/// The send header in `encoded`, `None` for any other command. postcard writes an
/// enum as its variant's index (a varint) followed by the variant's fields, and `Send`
/// is variant 0 (a test pins both).
fn send_header(encoded: &[u8]) -> Option<SendRef<'_>> {
    match postcard::take_from_bytes::<u32>(encoded) {
        Ok((0, rest)) => postcard::from_bytes(rest).ok(),
        _ => None,
    }
}

/// The index items of one command, given as its slots (header, then records): a send's
/// message ids and keys.
fn items_of<'a>(
    log_index: u64,
    mut slots: impl ExactSizeIterator<Item = &'a [u8]>,
    out: &mut Vec<IndexItem>,
) {
    let Some(header) = slots.next().and_then(send_header) else {
        return;
    };
    if header.messages.len() != slots.len() {
        tracing::warn!(log_index, "not indexed: a send whose header and records disagree");
        return;
    }
    for (i, (meta, record)) in header.messages.iter().zip(slots).enumerate() {
        let fields = match crate::message_record::index_fields(record) {
            Ok(f) => f,
            Err(err) => {
                tracing::warn!(log_index, slot = i + 1, error = %err, "not indexed: undecodable record");
                continue;
            }
        };
        let item = |kind, key| IndexItem {
            hash: key_hash(kind, meta.topic, key),
            log_index,
            store_time_ms: header.store_time_ms,
            slot: Command::slot_of_record(i),
            queue_id: meta.queue_id,
        };
        out.push(item(KeyKind::MessageId, fields.msg_id));
        for key in &fields.keys {
            out.push(item(KeyKind::Key, key));
        }
    }
}

#[cfg(test)]
mod tests {
    use raft_log::SlottedPayload;

    use super::*;
    use crate::command::Header;
    use crate::command::MessageMeta;
    use crate::command::TopicConfig;

    fn meta(topic: &str, queue_id: u32) -> MessageMeta {
        MessageMeta {
            topic: topic.into(),
            queue_id,
            tag_hash: 7,
            msg_id: String::new(),
        }
    }

    #[test]
    fn the_borrowed_send_header_reads_what_the_full_decode_reads() {
        let header = Header::Send {
            store_time_ms: 1_700_000_000_123,
            messages: vec![meta("orders", 3), meta("payments", 0)],
        };
        let records = vec![bytes::Bytes::from_static(b"r1"), bytes::Bytes::from_static(b"r2")];
        let cmd = Command::new(header, records).expect("command");
        let got = send_header(cmd.slot(0)).expect("a send");
        assert_eq!(got.store_time_ms, 1_700_000_000_123);
        let metas: Vec<(&[u8], u32)> = got.messages.iter().map(|m| (m.topic, m.queue_id)).collect();
        assert_eq!(metas, [(&b"orders"[..], 3), (&b"payments"[..], 0)]);

        let other = Command::control(Header::CreateTopic(TopicConfig {
            name: "orders".into(),
            queues: 4,
            permission: crate::command::Permission::ReadWrite,
            kind: crate::command::MessageKind::Normal,
        }))
        .expect("command");
        assert!(send_header(other.slot(0)).is_none());
    }
}
