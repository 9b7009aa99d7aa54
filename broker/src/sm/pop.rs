//! Pop-style consumption, applied deterministically: which messages a receive hands out,
//! acknowledgements, changes of invisibility, and dead-lettering after too many attempts.
//!
//! Per (group, topic, queue) the state machine keeps a [`PopState`]: the next offset never
//! handed out and the in-flight set (offset → visible-again time and attempt). A pop first
//! redelivers in-flight messages whose invisibility has expired, then hands out new ones.
//! The group's committed offset is kept equal to the lowest unacknowledged offset, so
//! offset queries and consumer-progress reports see pop consumption too. Time comes from
//! the command (`now_ms`, stamped by the leader), never from the replica's clock.
//!
//! The limits below ([`MAX_INFLIGHT_PER_QUEUE`], [`MAX_SCAN_PER_QUEUE`], [`MAX_POP_BATCH`],
//! and [`MAX_QUEUES`](super::MAX_QUEUES)) shape what applying a command does, so they are
//! part of the replicated state machine's behaviour: replicas applying the same entries
//! with different values diverge. Changing one requires all replicas to change together
//! (a format/version bump), never a rolling upgrade.

use super::Applied;
use super::BatchRun;
use super::Op;
use super::Pending;
use super::StateView;
use super::rejected;
use crate::command::CommandResult;
use crate::command::MessageKind;
use crate::command::Permission;
use crate::command::PopRequest;
use crate::command::Popped;
use crate::command::Receipt;
use crate::command::Rejection;
use crate::command::TopicConfig;
use crate::sm::error::SmError;
use crate::sm::error::SmResult;
use crate::sm::keys;
use crate::sm::records::CqEntry;
use crate::sm::records::Inflight;
use crate::sm::records::OffsetRecord;
use crate::sm::records::PopState;
use crate::sm::records::TopicRecord;

/// Most unacknowledged messages a group may hold on one queue; a pop hands out no new
/// messages of a queue at this limit (redeliveries still happen).
///
/// Part of the replicated state machine's behaviour: changing it requires all replicas to
/// change together (a format/version bump), never in a rolling upgrade.
pub const MAX_INFLIGHT_PER_QUEUE: usize = 2048;
/// Most consume-queue entries one pop examines per queue (bounds the work of a pop whose
/// filter skips many messages).
///
/// Part of the replicated state machine's behaviour: changing it requires all replicas to
/// change together (a format/version bump), never in a rolling upgrade.
pub const MAX_SCAN_PER_QUEUE: usize = 4096;
/// Most messages one pop hands out.
///
/// Part of the replicated state machine's behaviour: changing it requires all replicas to
/// change together (a format/version bump), never in a rolling upgrade.
pub const MAX_POP_BATCH: u32 = 1024;

/// What a group's dead-letter topic name starts with (RocketMQ's naming).
const DLQ_PREFIX: &str = "%DLQ%";

/// Longest name of a group that receives (pops): its dead-letter topic `%DLQ%<group>` must
/// be a valid topic name.
pub const MAX_RECEIVING_GROUP_LEN: usize = keys::TOPIC_MAX_LEN - DLQ_PREFIX.len();

/// The dead-letter topic of a consumer group (RocketMQ's naming).
pub fn dlq_topic(group: &str) -> String {
    format!("{DLQ_PREFIX}{group}")
}

/// Checks the group of a pop, ack, change of invisibility or dead-lettering: a valid group
/// name whose dead-letter topic name is valid too (at most [`MAX_RECEIVING_GROUP_LEN`]).
pub fn validate_receiving_group(group: &str) -> Result<(), Rejection> {
    keys::validate_group_name(group).map_err(Rejection::InvalidGroup)?;
    if group.len() > MAX_RECEIVING_GROUP_LEN {
        return Err(Rejection::InvalidGroup(format!(
            "group name is {} bytes long, at most {MAX_RECEIVING_GROUP_LEN} characters for \
             consumers that receive, because the dead-letter topic %DLQ%<group> must be a \
             valid topic name",
            group.len()
        )));
    }
    Ok(())
}

/// Whether a pop of `topic` is FIFO: asked for by the consumer or the topic's kind.
fn is_fifo(req: &PopRequest, topic: &TopicRecord) -> bool {
    req.fifo || topic.config.kind == MessageKind::Fifo
}

/// Whether `r` names the current delivery of an in-flight message of `state` (the topic
/// incarnation is checked by the caller).
fn is_current(state: &PopState, r: &Receipt) -> bool {
    state
        .inflight
        .get(&r.offset)
        .is_some_and(|i| i.attempt == r.attempt)
}

impl<V: StateView> Pending<'_, V> {
    /// The group's state on a queue of the topic's current incarnation; a new one starts
    /// at the group's committed offset, or at the start of the queue.
    fn load_pop(&self, group: &str, topic: &TopicRecord, queue_id: u32) -> SmResult<PopState> {
        let name = &topic.config.name;
        if let Some(s) = self.pop_state(group, name, queue_id)?
            && s.topic_created_at == topic.created_at
        {
            return Ok(s);
        }
        let next = self
            .offset_record(group, name, queue_id)?
            .filter(|r| r.topic_created_at == topic.created_at)
            .map_or(0, |r| r.offset);
        Ok(PopState {
            topic_created_at: topic.created_at,
            next,
            inflight: Default::default(),
        })
    }

    /// Stores the group's state on a queue and keeps its committed offset in step.
    fn store_pop(&mut self, group: &str, topic: &TopicRecord, queue_id: u32, state: PopState) {
        let name = topic.config.name.clone();
        let committed = state.committed();
        let current = self
            .offsets
            .get(&(group.to_owned(), name.clone(), queue_id))
            .map(|r| r.offset);
        if current != Some(committed) {
            let record = OffsetRecord {
                offset: committed,
                topic_created_at: topic.created_at,
            };
            self.put_offset(group, &name, queue_id, record);
        }
        self.pops
            .insert((group.to_owned(), name.clone(), queue_id), state.clone());
        self.ops.push(Op::PutPop {
            group: group.to_owned(),
            topic: name,
            queue_id,
            state,
        });
    }

    /// An offset reset (a commit) of a group that pops on the topic's current incarnation:
    /// its pop state on the queue restarts at `offset` with nothing in flight ("consume
    /// from here"; receipts handed out before become stale).
    pub(super) fn reset_pop(
        &mut self,
        group: &str,
        topic: &TopicRecord,
        queue_id: u32,
        offset: u64,
    ) -> SmResult<()> {
        let Some(old) = self.pop_state(group, &topic.config.name, queue_id)? else {
            return Ok(());
        };
        if old.topic_created_at != topic.created_at {
            // Of an earlier incarnation: `load_pop` starts afresh from the committed offset.
            return Ok(());
        }
        let state = PopState {
            topic_created_at: topic.created_at,
            next: offset,
            inflight: Default::default(),
        };
        if state != old {
            self.store_pop(group, topic, queue_id, state);
        }
        Ok(())
    }

    pub(super) fn pop(&mut self, log_index: u64, req: &PopRequest) -> Applied {
        if let Err(r) = validate_receiving_group(&req.group) {
            return rejected(r);
        }
        let Some(topic) = self.topic(&req.topic)? else {
            return rejected(Rejection::UnknownTopic(req.topic.clone()));
        };
        if !matches!(topic.config.permission, Permission::Read | Permission::ReadWrite) {
            return rejected(Rejection::NotReadable(req.topic.clone()));
        }
        let mut out = Vec::new();
        let max = req.max.min(MAX_POP_BATCH) as usize;
        for &queue_id in &req.queue_ids {
            // A pop of `max` 0 (the leader's sweep) visits every queue it names.
            if max > 0 && out.len() >= max {
                break;
            }
            if queue_id >= topic.config.queues {
                continue;
            }
            self.pop_queue(log_index, req, &topic, queue_id, max, &mut out)?;
        }
        Ok(CommandResult::Popped(out))
    }

    /// Pops from one queue into `out` (up to `max` in total).
    fn pop_queue(
        &mut self,
        log_index: u64,
        req: &PopRequest,
        topic: &TopicRecord,
        queue_id: u32,
        max: usize,
        out: &mut Vec<Popped>,
    ) -> SmResult<()> {
        let mut state = self.load_pop(&req.group, topic, queue_id)?;
        let before = state.clone();
        let visible_at_ms = req.now_ms.saturating_add(req.invisible_ms);
        self.redeliver_expired(log_index, req, topic, queue_id, &mut state, max, out)?;
        let locked = is_fifo(req, topic) && state.inflight.values().any(|i| i.visible_at_ms > req.now_ms);
        if !locked {
            self.pop_new(req, topic, queue_id, &mut state, visible_at_ms, max, out)?;
        }
        if state != before {
            self.store_pop(&req.group, topic, queue_id, state);
        }
        Ok(())
    }

    /// Delivers again the in-flight messages whose invisibility expired (lowest offsets
    /// first); one past `max_attempts` goes to the dead-letter topic instead. FIFO: only
    /// those below the lowest offset still invisible, so no message is handed out while an
    /// earlier one of its queue is still held by a consumer.
    #[allow(clippy::too_many_arguments)]
    fn redeliver_expired(
        &mut self,
        log_index: u64,
        req: &PopRequest,
        topic: &TopicRecord,
        queue_id: u32,
        state: &mut PopState,
        max: usize,
        out: &mut Vec<Popped>,
    ) -> SmResult<()> {
        let fifo = is_fifo(req, topic);
        let mut expired: Vec<(u64, Inflight)> = Vec::new();
        for (offset, inflight) in &state.inflight {
            if inflight.visible_at_ms <= req.now_ms {
                expired.push((*offset, *inflight));
            } else if fifo {
                break;
            }
        }
        let visible_at_ms = req.now_ms.saturating_add(req.invisible_ms);
        for (offset, inflight) in expired {
            let exhausted = req.max_attempts > 0 && inflight.attempt >= req.max_attempts;
            // Exhausted messages are dead-lettered even when the batch is full (a pop with
            // `max` 0 only sweeps them).
            if out.len() >= max && !exhausted {
                continue;
            }
            let Some(entry) = self.cq_entries(&topic.config.name, queue_id, offset, 1)?.pop() else {
                // Purged by retention: nothing left to deliver.
                state.inflight.remove(&offset);
                continue;
            };
            if exhausted {
                if self.dead_letter(log_index, &req.group, entry)? {
                    state.inflight.remove(&offset);
                }
                continue;
            }
            let attempt = inflight.attempt.saturating_add(1);
            state.inflight.insert(
                offset,
                Inflight {
                    visible_at_ms,
                    attempt,
                },
            );
            let receipt = Receipt {
                queue_id,
                offset,
                attempt,
                topic_created_at: topic.created_at,
            };
            out.push(popped(receipt, &entry, visible_at_ms));
        }
        Ok(())
    }

    /// Hands out messages never delivered, from `state.next` on; messages the filter does
    /// not want are skipped (they count as consumed).
    #[allow(clippy::too_many_arguments)]
    fn pop_new(
        &mut self,
        req: &PopRequest,
        topic: &TopicRecord,
        queue_id: u32,
        state: &mut PopState,
        visible_at_ms: u64,
        max: usize,
        out: &mut Vec<Popped>,
    ) -> SmResult<()> {
        let room = MAX_INFLIGHT_PER_QUEUE.saturating_sub(state.inflight.len());
        let wanted = (max - out.len().min(max)).min(room);
        if wanted == 0 {
            return Ok(());
        }
        let scan = if matches!(req.filter, crate::command::TagFilter::All) {
            wanted
        } else {
            MAX_SCAN_PER_QUEUE
        };
        let start = state.next;
        let entries = self.cq_entries(&topic.config.name, queue_id, start, scan)?;
        let mut taken = 0;
        for (i, entry) in entries.iter().enumerate() {
            if taken >= wanted {
                break;
            }
            let offset = start + i as u64;
            if req.filter.matches(entry.tag_hash) {
                state.inflight.insert(
                    offset,
                    Inflight {
                        visible_at_ms,
                        attempt: 1,
                    },
                );
                let receipt = Receipt {
                    queue_id,
                    offset,
                    attempt: 1,
                    topic_created_at: topic.created_at,
                };
                out.push(popped(receipt, entry, visible_at_ms));
                taken += 1;
            }
            state.next = offset + 1;
        }
        Ok(())
    }

    /// Indexes a message in the group's dead-letter topic (created on first use with one
    /// queue, read-write so that the dead letters can be consumed and resent); the record
    /// itself stays where it is. `false` if the group's dead-letter topic name is not a
    /// valid topic name (the message then stays in flight; [`validate_receiving_group`]
    /// keeps such groups from popping).
    fn dead_letter(&mut self, log_index: u64, group: &str, entry: CqEntry) -> SmResult<bool> {
        let name = dlq_topic(group);
        if keys::validate_topic_name(&name).is_err() {
            return Ok(false);
        }
        if self.topic(&name)?.is_none() {
            let config = TopicConfig {
                name: name.clone(),
                queues: 1,
                permission: Permission::ReadWrite,
                kind: MessageKind::Normal,
            };
            self.put_topic(TopicRecord {
                config,
                created_at: log_index,
            });
        }
        let offset = self.next_offset(&name, 0)?;
        let next = offset
            .checked_add(1)
            .ok_or_else(|| SmError::corrupt("queue counter", "overflow"))?;
        self.counters.insert(&name, 0, next);
        self.cq.entry(&name, 0, BatchRun::default).push(offset, entry)?;
        self.ops.push(Op::PutCq {
            topic: name.as_str().into(),
            queue_id: 0,
            first: offset,
            entries: vec![entry],
        });
        self.ops.push(Op::SetNextOffset {
            topic: name,
            queue_id: 0,
            next,
        });
        Ok(true)
    }

    /// Moves a popped message to the group's dead-letter topic at the consumer's request, if
    /// its receipt is current; it leaves the in-flight set. One answer: whether it was.
    pub(super) fn dead_letter_receipt(
        &mut self,
        log_index: u64,
        group: &str,
        topic_name: &str,
        receipt: Receipt,
    ) -> Applied {
        let topic = match self.receipt_topic(group, topic_name)? {
            Ok(t) => t,
            Err(r) => return rejected(r),
        };
        let queue_id = receipt.queue_id;
        if receipt.topic_created_at != topic.created_at || queue_id >= topic.config.queues {
            return Ok(CommandResult::Acked(vec![false]));
        }
        let mut state = self.load_pop(group, &topic, queue_id)?;
        if !is_current(&state, &receipt) {
            return Ok(CommandResult::Acked(vec![false]));
        }
        let moved = match self
            .cq_entries(&topic.config.name, queue_id, receipt.offset, 1)?
            .pop()
        {
            Some(entry) => self.dead_letter(log_index, group, entry)?,
            // Purged by retention: nothing left to move.
            None => true,
        };
        if moved {
            state.inflight.remove(&receipt.offset);
            self.store_pop(group, &topic, queue_id, state);
        }
        Ok(CommandResult::Acked(vec![moved]))
    }

    /// The topic receipts of `group` refer to, or why the command is refused.
    fn receipt_topic(&self, group: &str, topic_name: &str) -> SmResult<Result<TopicRecord, Rejection>> {
        if let Err(r) = validate_receiving_group(group) {
            return Ok(Err(r));
        }
        Ok(self
            .topic(topic_name)?
            .ok_or_else(|| Rejection::UnknownTopic(topic_name.to_owned())))
    }

    /// Applies receipts of one group and topic: `f` decides per in-flight message whether
    /// the receipt is current and changes the state; returns one answer per receipt. A
    /// receipt of another incarnation of the topic is stale.
    fn with_receipts(
        &mut self,
        group: &str,
        topic_name: &str,
        receipts: &[Receipt],
        mut f: impl FnMut(&mut PopState, &Receipt) -> bool,
    ) -> Applied {
        let topic = match self.receipt_topic(group, topic_name)? {
            Ok(t) => t,
            Err(r) => return rejected(r),
        };
        let mut answers = Vec::with_capacity(receipts.len());
        let mut queues: Vec<u32> = receipts.iter().map(|r| r.queue_id).collect();
        queues.sort_unstable();
        queues.dedup();
        let mut by_queue = std::collections::HashMap::new();
        for q in queues {
            if q < topic.config.queues {
                let s = self.load_pop(group, &topic, q)?;
                by_queue.insert(q, (s.clone(), s));
            }
        }
        for r in receipts {
            let ok = match by_queue.get_mut(&r.queue_id) {
                Some((state, _)) if r.topic_created_at == topic.created_at => f(state, r),
                _ => false,
            };
            answers.push(ok);
        }
        let mut changed: Vec<(u32, PopState)> = by_queue
            .into_iter()
            .filter(|(_, (now, before))| now != before)
            .map(|(q, (now, _))| (q, now))
            .collect();
        changed.sort_unstable_by_key(|(q, _)| *q);
        for (q, state) in changed {
            self.store_pop(group, &topic, q, state);
        }
        Ok(CommandResult::Acked(answers))
    }

    pub(super) fn ack(&mut self, group: &str, topic: &str, receipts: &[Receipt]) -> Applied {
        self.with_receipts(group, topic, receipts, |state, r| {
            let current = is_current(state, r);
            if current {
                state.inflight.remove(&r.offset);
            }
            current
        })
    }

    pub(super) fn change_invisible(
        &mut self,
        group: &str,
        topic: &str,
        receipt: Receipt,
        visible_at_ms: u64,
    ) -> Applied {
        self.with_receipts(group, topic, &[receipt], |state, r| {
            match state.inflight.get_mut(&r.offset) {
                Some(i) if i.attempt == r.attempt => {
                    i.visible_at_ms = visible_at_ms;
                    true
                }
                _ => false,
            }
        })
    }
}

fn popped(receipt: Receipt, entry: &CqEntry, visible_at_ms: u64) -> Popped {
    Popped {
        receipt,
        log_index: entry.log_index,
        slot: entry.slot,
        store_time_ms: entry.store_time_ms,
        visible_at_ms,
    }
}
