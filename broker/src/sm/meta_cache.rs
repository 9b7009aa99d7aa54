//! Every topic record and queue counter of the database, kept in memory.
//!
//! Applying a send reads its topic (is it writable, how many queues) and the counter of
//! each queue it touches, and the handlers read them on every send and pull. From RocksDB
//! that was a lookup, a key built and a record decoded each time, on every replica (1.5 %
//! of the machine's CPU in a profile at window 1024, none after). Both sets are small — a
//! record per topic and a counter per queue, as RocketMQ keeps its topic configs in
//! memory — so the store loads them whole when it opens and [`MetaCache::apply`] keeps
//! them current with every batch it writes. The cache is complete: a name it does not hold
//! is a topic the database does not hold, and a queue without a counter starts at 0. It
//! also keeps the newest consume-queue entries of each queue ([`super::cq_tail`]), changed
//! under the same lock as the counters.
//!
//! The store writes RocksDB first and the cache after, so a reader running between the
//! two sees the state before the batch for topics and counters. Apply results reach
//! clients only after both.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::RwLockReadGuard;
use std::sync::RwLockWriteGuard;

use super::apply::Op;
use super::cq_tail::CqTails;
use super::queue_map::QueueMap;
use super::records::CqEntry;
use super::records::TopicRecord;
use crate::command::TopicConfig;

#[derive(Debug, Default)]
pub struct MetaCache {
    state: RwLock<State>,
}

#[derive(Debug, Default)]
struct State {
    topics: HashMap<String, TopicRecord>,
    counters: QueueMap<u64>,
    /// The newest consume-queue entries, changed with the counters ([`super::cq_tail`]).
    tails: CqTails,
}

impl MetaCache {
    /// A cache holding exactly these topics and queue counters.
    pub fn load(
        topics: impl IntoIterator<Item = TopicRecord>,
        counters: impl IntoIterator<Item = (String, u32, u64)>,
    ) -> Self {
        let mut state = State::default();
        for t in topics {
            state.topics.insert(t.config.name.clone(), t);
        }
        for (topic, queue_id, next) in counters {
            state.counters.insert(&topic, queue_id, next);
        }
        Self {
            state: RwLock::new(state),
        }
    }

    pub fn topic(&self, name: &str) -> Option<TopicRecord> {
        self.read().topics.get(name).cloned()
    }

    /// Every topic's config, ordered by name.
    pub fn topics(&self) -> Vec<TopicConfig> {
        let mut out: Vec<TopicConfig> = self.read().topics.values().map(|t| t.config.clone()).collect();
        out.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The offset the next message of a queue gets (0 for a queue never written).
    pub fn next_offset(&self, topic: &str, queue_id: u32) -> u64 {
        self.read().counters.get(topic, queue_id).copied().unwrap_or(0)
    }

    /// Consume-queue entries from `from` on if the queue's tail holds `from`
    /// ([`CqTails::read`]).
    pub fn tail_entries(&self, topic: &str, queue_id: u32, from: u64, max: usize) -> Option<Vec<CqEntry>> {
        self.read().tails.read(topic, queue_id, from, max)
    }

    /// Takes in the changes of a batch the store has written.
    pub fn apply(&self, ops: &[Op]) {
        let touches = ops.iter().any(|op| {
            matches!(
                op,
                Op::PutTopic(_) | Op::DeleteTopic(_) | Op::SetNextOffset { .. } | Op::PutCq { .. }
            )
        });
        if !touches {
            return;
        }
        let mut state = self.write();
        for op in ops {
            match op {
                Op::PutTopic(r) => {
                    state.topics.insert(r.config.name.clone(), r.clone());
                }
                Op::DeleteTopic(name) => {
                    state.topics.remove(name);
                    state.counters.remove_topic(name);
                    state.tails.remove_topic(name);
                }
                Op::SetNextOffset {
                    topic,
                    queue_id,
                    next,
                } => state.counters.insert(topic, *queue_id, *next),
                Op::PutCq {
                    topic,
                    queue_id,
                    first,
                    entries,
                } => state.tails.push(topic, *queue_id, *first, entries),
                Op::PutOffset { .. } | Op::PutPop { .. } => {}
            }
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::MessageKind;
    use crate::command::Permission;

    fn record(name: &str, queues: u32, created_at: u64) -> TopicRecord {
        TopicRecord {
            config: TopicConfig {
                name: name.into(),
                queues,
                permission: Permission::ReadWrite,
                kind: MessageKind::Normal,
            },
            created_at,
        }
    }

    fn counter(topic: &str, queue_id: u32, next: u64) -> Op {
        Op::SetNextOffset {
            topic: topic.into(),
            queue_id,
            next,
        }
    }

    #[test]
    fn batches_update_topics_and_counters_and_a_deletion_takes_both() {
        let cache = MetaCache::load([record("a", 2, 1)], [("a".to_owned(), 1, 5)]);
        assert_eq!(cache.topic("a").map(|t| t.created_at), Some(1));
        assert_eq!((cache.next_offset("a", 1), cache.next_offset("a", 0)), (5, 0));
        assert_eq!(cache.topic("b"), None);

        cache.apply(&[
            Op::PutTopic(record("b", 4, 7)),
            counter("b", 3, 1),
            counter("a", 1, 6),
        ]);
        assert_eq!(cache.topic("b").map(|t| t.config.queues), Some(4));
        let names: Vec<String> = cache.topics().into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["a", "b"], "ordered by name");
        assert_eq!((cache.next_offset("b", 3), cache.next_offset("a", 1)), (1, 6));

        cache.apply(&[Op::DeleteTopic("a".into())]);
        assert_eq!(cache.topic("a"), None);
        assert_eq!(cache.next_offset("a", 1), 0, "a new incarnation starts at 0");
        assert_eq!(cache.next_offset("b", 3), 1);
    }

    #[test]
    fn a_topic_deleted_and_created_again_in_one_batch_keeps_the_new_one() {
        let cache = MetaCache::load([record("a", 2, 1)], [("a".to_owned(), 0, 9)]);
        cache.apply(&[
            Op::DeleteTopic("a".into()),
            Op::PutTopic(record("a", 8, 20)),
            counter("a", 0, 1),
        ]);
        assert_eq!(
            cache.topic("a").map(|t| (t.config.queues, t.created_at)),
            Some((8, 20))
        );
        assert_eq!(cache.next_offset("a", 0), 1);
    }
}
