//! Deterministic application of commands.
//!
//! [`Pending`] applies commands on top of a read-only [`StateView`] (RocksDB in production,
//! a map in tests) and records the resulting changes as [`Op`]s, which the caller writes in
//! one batch. It also overlays its own changes, so later commands of the same batch see
//! earlier ones (a topic created at index 5 accepts the send at index 6; two sends to one
//! queue get consecutive offsets). The result depends only on the view and the commands,
//! so every replica computes the same results and the same changes.
//!
//! A command that cannot be applied is refused as a whole with a
//! [`Rejection`](crate::command::Rejection) and changes nothing.

use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::batch_run::BatchRun;
use super::batch_run::SendRun;
use super::error::SmError;
use super::error::SmResult;
use super::keys;
use super::queue_map::QueueMap;
use super::records::CqEntry;
use super::records::OffsetRecord;
use super::records::PopState;
use super::records::TopicRecord;
use crate::command::Command;
use crate::command::CommandResult;
use crate::command::Header;
use crate::command::MessageMeta;
use crate::command::Permission;
use crate::command::QueuePosition;
use crate::command::Rejection;
use crate::command::TopicConfig;

/// Most queues a topic may have.
///
/// Part of the replicated state machine's behaviour (like the limits in [`pop`]): every
/// replica must apply with the same value, so changing it requires all replicas to change
/// together (a format/version bump), never in a rolling upgrade.
pub const MAX_QUEUES: u32 = 1024;

/// The reads applying a command depends on.
pub trait StateView {
    /// A topic's stored record.
    fn topic(&self, name: &str) -> SmResult<Option<TopicRecord>>;
    /// The offset the next message of a queue gets (0 for a queue never written).
    fn next_offset(&self, topic: &str, queue_id: u32) -> SmResult<u64>;
    /// Consume-queue entries from offset `from` on: at most `max`, ending at the first
    /// missing offset.
    fn cq_entries(&self, topic: &str, queue_id: u32, from: u64, max: usize) -> SmResult<Vec<CqEntry>>;
    /// A group's stored offset record of a queue (of whatever incarnation of the topic).
    fn offset_record(&self, group: &str, topic: &str, queue_id: u32) -> SmResult<Option<OffsetRecord>>;
    /// A group's stored pop state of a queue (of whatever incarnation of the topic).
    fn pop_state(&self, group: &str, topic: &str, queue_id: u32) -> SmResult<Option<PopState>>;
}

/// (group, topic, queue id).
type GroupQueue = (String, String, u32);

/// One change to the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    PutTopic(TopicRecord),
    /// Remove a topic's config, queue counters and consume queues.
    DeleteTopic(String),
    SetNextOffset {
        topic: String,
        queue_id: u32,
        next: u64,
    },
    /// Consume-queue entries of one queue: `entries[0]` at offset `first`, the others at
    /// the offsets after it (a send's messages to one queue are one such run).
    PutCq {
        /// Shared by every run of a send to the topic.
        topic: Arc<str>,
        queue_id: u32,
        first: u64,
        entries: Vec<CqEntry>,
    },
    PutOffset {
        group: String,
        topic: String,
        queue_id: u32,
        record: OffsetRecord,
    },
    PutPop {
        group: String,
        topic: String,
        queue_id: u32,
        state: PopState,
    },
}

/// Commands applied on top of a base view, not yet written.
#[derive(Debug)]
pub struct Pending<'a, V> {
    base: &'a V,
    topics: HashMap<String, Option<TopicRecord>>,
    counters: QueueMap<u64>,
    /// Topics deleted in this batch: their counters restart at 0, whatever the base says.
    deleted: HashSet<String>,
    /// Consume-queue entries written in this batch.
    cq: QueueMap<BatchRun>,
    offsets: HashMap<GroupQueue, OffsetRecord>,
    pops: HashMap<GroupQueue, PopState>,
    ops: Vec<Op>,
}

impl<V: StateView> StateView for Pending<'_, V> {
    fn topic(&self, name: &str) -> SmResult<Option<TopicRecord>> {
        match self.topics.get(name) {
            Some(t) => Ok(t.clone()),
            None => self.base.topic(name),
        }
    }

    fn next_offset(&self, topic: &str, queue_id: u32) -> SmResult<u64> {
        if let Some(next) = self.counters.get(topic, queue_id) {
            return Ok(*next);
        }
        if self.deleted.contains(topic) {
            return Ok(0);
        }
        self.base.next_offset(topic, queue_id)
    }

    fn cq_entries(&self, topic: &str, queue_id: u32, from: u64, max: usize) -> SmResult<Vec<CqEntry>> {
        let mut out = if self.deleted.contains(topic) {
            Vec::new()
        } else {
            self.base.cq_entries(topic, queue_id, from, max)?
        };
        // Entries of this batch continue the base's (sends only append).
        let start = from + out.len() as u64;
        if let Some(batch) = self.cq.get(topic, queue_id) {
            let room = max.saturating_sub(out.len());
            out.extend(batch.from(start).iter().take(room));
        }
        Ok(out)
    }

    fn offset_record(&self, group: &str, topic: &str, queue_id: u32) -> SmResult<Option<OffsetRecord>> {
        match self.offsets.get(&(group.to_owned(), topic.to_owned(), queue_id)) {
            Some(r) => Ok(Some(*r)),
            None => self.base.offset_record(group, topic, queue_id),
        }
    }

    fn pop_state(&self, group: &str, topic: &str, queue_id: u32) -> SmResult<Option<PopState>> {
        match self.pops.get(&(group.to_owned(), topic.to_owned(), queue_id)) {
            Some(p) => Ok(Some(p.clone())),
            None => self.base.pop_state(group, topic, queue_id),
        }
    }
}

type Applied = SmResult<CommandResult>;

fn rejected(r: Rejection) -> Applied {
    Ok(CommandResult::Rejected(r))
}

impl<'a, V: StateView> Pending<'a, V> {
    pub fn new(base: &'a V) -> Self {
        Self {
            base,
            topics: HashMap::new(),
            counters: QueueMap::default(),
            deleted: HashSet::new(),
            cq: QueueMap::default(),
            offsets: HashMap::new(),
            pops: HashMap::new(),
            ops: Vec::new(),
        }
    }

    /// The changes of every command applied so far, in order.
    pub fn into_ops(self) -> Vec<Op> {
        self.ops
    }

    /// Applies the command of log entry `log_index`.
    pub fn apply(&mut self, log_index: u64, cmd: &Command) -> Applied {
        let header = match cmd.header() {
            Ok(h) => h,
            Err(e) => return rejected(Rejection::Malformed(e.to_string())),
        };
        match header {
            Header::Send {
                store_time_ms,
                messages,
            } => self.send(log_index, *store_time_ms, messages, cmd.records()),
            Header::CreateTopic(config) => self.create_topic(log_index, config),
            Header::UpdateTopic(config) => self.update_topic(config),
            Header::DeleteTopic { name } => self.delete_topic(name),
            Header::CommitOffset {
                group,
                topic,
                queue_id,
                offset,
            } => self.commit_offset(group, topic, *queue_id, *offset),
            Header::Pop(req) => self.pop(log_index, req),
            Header::Ack {
                group,
                topic,
                receipts,
            } => self.ack(group, topic, receipts),
            Header::ChangeInvisible {
                group,
                topic,
                receipt,
                invisible_ms,
                now_ms,
            } => self.change_invisible(group, topic, *receipt, now_ms.saturating_add(*invisible_ms)),
            Header::DeadLetter {
                group,
                topic,
                receipt,
            } => self.dead_letter_receipt(log_index, group, topic, *receipt),
        }
    }

    /// Why a send may not go to `meta`'s topic, if it may not; else the topic's number of
    /// queues.
    fn check_topic(&self, meta: &MessageMeta) -> SmResult<Result<u32, Rejection>> {
        let Some(topic) = self.topic(&meta.topic)? else {
            return Ok(Err(Rejection::UnknownTopic(meta.topic.clone())));
        };
        if !matches!(topic.config.permission, Permission::Write | Permission::ReadWrite) {
            return Ok(Err(Rejection::NotWritable(meta.topic.clone())));
        }
        Ok(Ok(topic.config.queues))
    }

    /// Why a send may not go where its messages say, if it may not. A topic is looked up
    /// once per run of messages to it (a merged send usually names one topic).
    fn check_targets(&self, messages: &[MessageMeta]) -> SmResult<Option<Rejection>> {
        let mut known: Option<(&str, u32)> = None;
        for meta in messages {
            let queues = match known {
                Some((name, queues)) if name == meta.topic => queues,
                _ => match self.check_topic(meta)? {
                    Ok(queues) => queues,
                    Err(r) => return Ok(Some(r)),
                },
            };
            known = Some((&meta.topic, queues));
            if meta.queue_id >= queues {
                return Ok(Some(Rejection::NoSuchQueue {
                    topic: meta.topic.clone(),
                    queue_id: meta.queue_id,
                }));
            }
        }
        Ok(None)
    }

    fn send(
        &mut self,
        log_index: u64,
        store_time_ms: u64,
        messages: &[MessageMeta],
        records: &[bytes::Bytes],
    ) -> Applied {
        if messages.len() != records.len() {
            // Command::new refuses this; an entry decoded from elsewhere is refused here, alike on
            // every replica.
            let detail = format!(
                "malformed send: {} messages, {} records",
                messages.len(),
                records.len()
            );
            return rejected(Rejection::Malformed(detail));
        }
        if let Some(r) = self.check_targets(messages)? {
            return rejected(r);
        }
        let (runs, positions) = self.runs_of(log_index, store_time_ms, messages, records)?;
        let mut shared: Option<Arc<str>> = None;
        for run in runs {
            shared = Some(self.put_run(run, shared)?);
        }
        Ok(CommandResult::Sent(positions))
    }

    /// A send's consume-queue entries as one run per queue it writes to, in the order the
    /// queues first appear, and each message's place.
    fn runs_of<'m>(
        &self,
        log_index: u64,
        store_time_ms: u64,
        messages: &'m [MessageMeta],
        records: &[bytes::Bytes],
    ) -> SmResult<(Vec<SendRun<'m>>, Vec<QueuePosition>)> {
        let mut runs: Vec<SendRun<'m>> = Vec::new();
        let mut run_of: FxHashMap<(&str, u32), usize> = FxHashMap::default();
        let mut positions = Vec::with_capacity(messages.len());
        for (i, (meta, record)) in messages.iter().zip(records).enumerate() {
            let key = (meta.topic.as_str(), meta.queue_id);
            let r = match run_of.get(&key) {
                Some(&r) => r,
                None => {
                    runs.push(SendRun {
                        topic: key.0,
                        queue_id: key.1,
                        first: self.next_offset(key.0, key.1)?,
                        entries: Vec::new(),
                    });
                    run_of.insert(key, runs.len() - 1);
                    runs.len() - 1
                }
            };
            let run = &mut runs[r];
            let offset = run.next()?;
            let size =
                u32::try_from(record.len()).map_err(|_| SmError::corrupt("record", "longer than 4 GiB"))?;
            run.entries.push(CqEntry {
                log_index,
                slot: Command::slot_of_record(i),
                size,
                tag_hash: meta.tag_hash,
                store_time_ms,
            });
            positions.push(QueuePosition {
                queue_id: meta.queue_id,
                offset,
            });
        }
        Ok((runs, positions))
    }

    /// Records a send's run of one queue: its entries and the queue's next offset. `shared`
    /// is the topic name of the previous run, reused when it is the same; returns this one's.
    fn put_run(&mut self, run: SendRun<'_>, shared: Option<Arc<str>>) -> SmResult<Arc<str>> {
        let next = run.next()?;
        let topic = match shared {
            Some(t) if *t == *run.topic => t,
            _ => Arc::from(run.topic),
        };
        self.counters.insert(&topic, run.queue_id, next);
        self.cq
            .entry(&topic, run.queue_id, BatchRun::default)
            .extend(run.first, &run.entries)?;
        self.ops.push(Op::SetNextOffset {
            topic: run.topic.to_owned(),
            queue_id: run.queue_id,
            next,
        });
        self.ops.push(Op::PutCq {
            topic: topic.clone(),
            queue_id: run.queue_id,
            first: run.first,
            entries: run.entries,
        });
        Ok(topic)
    }

    fn create_topic(&mut self, log_index: u64, config: &TopicConfig) -> Applied {
        if let Err(r) = validate_config(config) {
            return rejected(r);
        }
        if self.topic(&config.name)?.is_some() {
            return rejected(Rejection::TopicExists(config.name.clone()));
        }
        self.put_topic(TopicRecord {
            config: config.clone(),
            created_at: log_index,
        });
        Ok(CommandResult::Done)
    }

    fn update_topic(&mut self, config: &TopicConfig) -> Applied {
        if let Err(r) = validate_config(config) {
            return rejected(r);
        }
        let Some(existing) = self.topic(&config.name)? else {
            return rejected(Rejection::UnknownTopic(config.name.clone()));
        };
        self.put_topic(TopicRecord {
            config: config.clone(),
            created_at: existing.created_at,
        });
        Ok(CommandResult::Done)
    }

    fn put_topic(&mut self, record: TopicRecord) {
        self.topics
            .insert(record.config.name.clone(), Some(record.clone()));
        self.ops.push(Op::PutTopic(record));
    }

    fn delete_topic(&mut self, name: &str) -> Applied {
        if self.topic(name)?.is_none() {
            return rejected(Rejection::UnknownTopic(name.to_owned()));
        }
        self.topics.insert(name.to_owned(), None);
        self.counters.remove_topic(name);
        self.cq.remove_topic(name);
        self.deleted.insert(name.to_owned());
        self.ops.push(Op::DeleteTopic(name.to_owned()));
        Ok(CommandResult::Done)
    }

    fn commit_offset(&mut self, group: &str, topic: &str, queue_id: u32, offset: u64) -> Applied {
        if let Err(e) = keys::validate_group_name(group) {
            return rejected(Rejection::InvalidGroup(e));
        }
        let Some(record) = self.topic(topic)? else {
            return rejected(Rejection::UnknownTopic(topic.to_owned()));
        };
        if queue_id >= record.config.queues {
            return rejected(Rejection::NoSuchQueue {
                topic: topic.to_owned(),
                queue_id,
            });
        }
        let committed = OffsetRecord {
            offset,
            topic_created_at: record.created_at,
        };
        self.put_offset(group, topic, queue_id, committed);
        self.reset_pop(group, &record, queue_id, offset)?;
        Ok(CommandResult::Done)
    }

    fn put_offset(&mut self, group: &str, topic: &str, queue_id: u32, record: OffsetRecord) {
        self.offsets
            .insert((group.to_owned(), topic.to_owned(), queue_id), record);
        self.ops.push(Op::PutOffset {
            group: group.to_owned(),
            topic: topic.to_owned(),
            queue_id,
            record,
        });
    }
}

/// Checks a topic config for create and update.
fn validate_config(config: &TopicConfig) -> Result<(), Rejection> {
    keys::validate_topic_name(&config.name).map_err(Rejection::InvalidTopic)?;
    if config.queues == 0 || config.queues > MAX_QUEUES {
        let detail = format!(
            "topic {} has {} queues, allowed 1..={MAX_QUEUES}",
            config.name, config.queues
        );
        return Err(Rejection::InvalidTopic(detail));
    }
    Ok(())
}

#[path = "pop.rs"]
pub mod pop;

#[cfg(test)]
#[path = "apply_tests.rs"]
mod tests;
