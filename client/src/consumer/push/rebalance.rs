//! Which queues this push consumer should be polling. Sans-IO: fed with the route and the
//! assignments the broker groups answered.
//!
//! Every broker group decides for its own queues (its leader keeps the leases), so the
//! consumer asks each group of each subscribed topic, telling it which of that group's
//! queues it still holds; the union of the answers is what it should poll. A group that
//! cannot be asked keeps its previous answer for a while — its queues are not dropped
//! because of one failed question — but not longer than [`ANSWER_TTL`], which is shorter
//! than the brokers' lease (15 s): a member that cannot confirm its queues stops
//! consuming them before the broker may give them to another member.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::time::Duration;
use std::time::Instant;

/// How long an answer counts without being confirmed.
pub const ANSWER_TTL: Duration = Duration::from_secs(10);

/// A queue: topic, broker group, queue id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueKey {
    /// The topic.
    pub topic: String,
    /// The broker group holding the queue.
    pub broker: String,
    /// The queue id within the group.
    pub id: i32,
}

/// What changed between the queues being polled and the ones assigned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    /// Queues to start polling.
    pub start: Vec<QueueKey>,
    /// Queues to drain and let go.
    pub stop: Vec<QueueKey>,
}

/// The last answer of each (topic, broker group).
#[derive(Debug, Clone, Default)]
pub struct Rebalance {
    answers: BTreeMap<(String, String), (BTreeSet<i32>, Instant)>,
}

impl Rebalance {
    /// Records the answer of `broker` for `topic`, given at `now`.
    pub fn answered(&mut self, topic: &str, broker: &str, ids: impl IntoIterator<Item = i32>, now: Instant) {
        self.answers.insert(
            (topic.to_owned(), broker.to_owned()),
            (ids.into_iter().collect(), now),
        );
    }

    /// Forgets answers older than [`ANSWER_TTL`].
    pub fn expire(&mut self, now: Instant) {
        self.answers
            .retain(|_, (_, at)| now.saturating_duration_since(*at) <= ANSWER_TTL);
    }

    /// Forgets groups no longer in `topic`'s route (`brokers`).
    pub fn keep_brokers(&mut self, topic: &str, brokers: &[&str]) {
        self.answers
            .retain(|(t, b), _| t != topic || brokers.contains(&b.as_str()));
    }

    /// Forgets a topic no longer subscribed.
    pub fn forget_topic(&mut self, topic: &str) {
        self.answers.retain(|(t, _), _| t != topic);
    }

    /// Every assigned queue.
    pub fn assigned(&self) -> BTreeSet<QueueKey> {
        self.answers
            .iter()
            .flat_map(|((topic, broker), (ids, _))| {
                ids.iter().map(|id| QueueKey {
                    topic: topic.clone(),
                    broker: broker.clone(),
                    id: *id,
                })
            })
            .collect()
    }

    /// What to start and stop, given the queues being polled.
    pub fn change(&self, running: &BTreeSet<QueueKey>) -> Change {
        let assigned = self.assigned();
        Change {
            start: assigned.difference(running).cloned().collect(),
            stop: running.difference(&assigned).cloned().collect(),
        }
    }
}

/// The holding header's value for `broker`'s queues of `topic` among `held`.
pub fn holding_header(held: &BTreeSet<QueueKey>, topic: &str, broker: &str) -> String {
    held.iter()
        .filter(|k| k.topic == topic && k.broker == broker)
        .map(|k| k.id.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(broker: &str, id: i32) -> QueueKey {
        QueueKey {
            topic: "t".into(),
            broker: broker.into(),
            id,
        }
    }

    #[test]
    fn answers_of_every_group_make_the_plan() {
        let t0 = Instant::now();
        let mut r = Rebalance::default();
        r.answered("t", "g1", [0, 1], t0);
        r.answered("t", "g2", [3], t0);
        let running: BTreeSet<QueueKey> = [key("g1", 1), key("g1", 2)].into_iter().collect();
        let c = r.change(&running);
        assert_eq!(c.start, [key("g1", 0), key("g2", 3)]);
        assert_eq!(c.stop, [key("g1", 2)]);
        // g2 leaves the route: its queues go.
        r.keep_brokers("t", &["g1"]);
        assert_eq!(r.assigned().len(), 2);
        // An answer not confirmed for longer than the TTL no longer counts.
        r.answered("t", "g2", [3], t0 + ANSWER_TTL);
        r.expire(t0 + ANSWER_TTL + Duration::from_millis(1));
        assert_eq!(r.assigned(), [key("g2", 3)].into_iter().collect());
        r.forget_topic("t");
        assert!(r.assigned().is_empty());
    }

    #[test]
    fn the_holding_header_lists_one_groups_queues() {
        let held: BTreeSet<QueueKey> = [key("g1", 0), key("g1", 5), key("g2", 1)].into_iter().collect();
        assert_eq!(holding_header(&held, "t", "g1"), "0,5");
        assert_eq!(holding_header(&held, "t", "g3"), "");
        assert_eq!(holding_header(&held, "other", "g1"), "");
    }
}
