//! Pop-style consumption, applied deterministically: which messages a receive hands out,
//! acknowledgements, changes of invisibility, and dead-lettering after too many attempts.
//!
//! Per (group, topic, queue) the state machine keeps a [`PopState`]: the next offset never
//! handed out and the in-flight set (offset → visible-again time and attempt). A pop first
//! redelivers in-flight messages whose invisibility has expired, then hands out new ones.
//! The group's committed offset is kept equal to the lowest unacknowledged offset, so
//! offset queries and consumer-progress reports see pop consumption too. Time comes from
//! the command (`now_ms`, stamped by the leader), never from the replica's clock.

use super::Applied;
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
use crate::sm::error::SmResult;
use crate::sm::keys;
use crate::sm::records::CqEntry;
use crate::sm::records::Inflight;
use crate::sm::records::OffsetRecord;
use crate::sm::records::PopState;
use crate::sm::records::TopicRecord;

/// Most unacknowledged messages a group may hold on one queue; a pop hands out no new
/// messages of a queue at this limit (redeliveries still happen).
pub const MAX_INFLIGHT_PER_QUEUE: usize = 2048;
/// Most consume-queue entries one pop examines per queue (bounds the work of a pop whose
/// filter skips many messages).
pub const MAX_SCAN_PER_QUEUE: usize = 4096;
/// Most messages one pop hands out.
pub const MAX_POP_BATCH: u32 = 1024;

/// The dead-letter topic of a consumer group (RocketMQ's naming).
pub fn dlq_topic(group: &str) -> String {
    format!("%DLQ%{group}")
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

    pub(super) fn pop(&mut self, log_index: u64, req: &PopRequest) -> Applied {
        if let Err(e) = keys::validate_group_name(&req.group) {
            return rejected(Rejection::InvalidGroup(e));
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
            if out.len() >= max {
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
        let fifo = req.fifo || topic.config.kind == MessageKind::Fifo;
        let locked = fifo && state.inflight.values().any(|i| i.visible_at_ms > req.now_ms);
        if !locked {
            self.pop_new(req, topic, queue_id, &mut state, visible_at_ms, max, out)?;
        }
        if state != before {
            self.store_pop(&req.group, topic, queue_id, state);
        }
        Ok(())
    }

    /// Delivers again the in-flight messages whose invisibility expired (lowest offsets
    /// first); one past `max_attempts` goes to the dead-letter topic instead.
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
        let expired: Vec<(u64, Inflight)> = state
            .inflight
            .iter()
            .filter(|(_, i)| i.visible_at_ms <= req.now_ms)
            .map(|(o, i)| (*o, *i))
            .collect();
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
            out.push(popped(queue_id, offset, attempt, &entry, visible_at_ms));
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
                out.push(popped(queue_id, offset, 1, entry, visible_at_ms));
                taken += 1;
            }
            state.next = offset + 1;
        }
        Ok(())
    }

    /// Indexes a message in the group's dead-letter topic (created on first use, one
    /// queue, readable only); the record itself stays where it is. `false` if the group's
    /// dead-letter topic name is not a valid topic name (the message then stays in flight).
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
        self.counters.insert((name.clone(), 0), offset + 1);
        self.cq.insert((name.clone(), 0, offset), entry);
        self.ops.push(Op::PutCq {
            topic: name.clone(),
            queue_id: 0,
            offset,
            entry,
        });
        self.ops.push(Op::SetNextOffset {
            topic: name,
            queue_id: 0,
            next: offset + 1,
        });
        Ok(true)
    }

    /// Applies receipts of one group and topic: `f` decides per in-flight message whether
    /// the receipt is current and changes the state; returns one answer per receipt.
    fn with_receipts(
        &mut self,
        group: &str,
        topic_name: &str,
        receipts: &[Receipt],
        mut f: impl FnMut(&mut PopState, &Receipt) -> bool,
    ) -> Applied {
        if let Err(e) = keys::validate_group_name(group) {
            return rejected(Rejection::InvalidGroup(e));
        }
        let Some(topic) = self.topic(topic_name)? else {
            return rejected(Rejection::UnknownTopic(topic_name.to_owned()));
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
                Some((state, _)) => f(state, r),
                None => false,
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
            match state.inflight.get(&r.offset) {
                Some(i) if i.attempt == r.attempt => {
                    state.inflight.remove(&r.offset);
                    true
                }
                _ => false,
            }
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

fn popped(queue_id: u32, offset: u64, attempt: u32, entry: &CqEntry, visible_at_ms: u64) -> Popped {
    Popped {
        receipt: Receipt {
            queue_id,
            offset,
            attempt,
        },
        log_index: entry.log_index,
        slot: entry.slot,
        store_time_ms: entry.store_time_ms,
        visible_at_ms,
    }
}
