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
//!
//! Every answer counts from the time its question was *sent* (the broker's lease runs
//! from when it received the question, which is later), and each poller checks its own
//! [`Validity`] — the last confirming question's send time + [`ANSWER_TTL`] — before
//! each receive and each batch it hands to the listener, so a member whose rebalancing
//! stalls stops consuming in time too.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Mutex;
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
    /// Records the answer of `broker` for `topic` to the question sent at `sent` (not the
    /// time the answer came: the broker's lease may have started as early as that).
    pub fn answered(&mut self, topic: &str, broker: &str, ids: impl IntoIterator<Item = i32>, sent: Instant) {
        self.answers.insert(
            (topic.to_owned(), broker.to_owned()),
            (ids.into_iter().collect(), sent),
        );
    }

    /// Until when the last answer naming `key` lets it be consumed (its question's send
    /// time + [`ANSWER_TTL`]); None when no answer names it.
    pub fn valid_until(&self, key: &QueueKey) -> Option<Instant> {
        let (ids, sent) = self.answers.get(&(key.topic.clone(), key.broker.clone()))?;
        ids.contains(&key.id).then(|| *sent + ANSWER_TTL)
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

/// Until when a poller may receive from its queue and hand messages to the listener: the
/// rebalancer extends it with each answer confirming the queue ([`Rebalance::valid_until`]).
#[derive(Debug)]
pub struct Validity {
    until: Mutex<Instant>,
}

impl Validity {
    /// Valid until `until`.
    pub fn new(until: Instant) -> Self {
        Self {
            until: Mutex::new(until),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Instant> {
        self.until.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves the end to `until` if that is later (answers may come back out of order).
    pub fn extend(&self, until: Instant) {
        let mut u = self.lock();
        *u = (*u).max(until);
    }

    /// The current end.
    pub fn until(&self) -> Instant {
        *self.lock()
    }

    /// The time left at `now`; None once the end is reached.
    pub fn left(&self, now: Instant) -> Option<Duration> {
        let until = self.until();
        (now < until).then(|| until - now)
    }

    /// Whether the end is reached at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        self.left(now).is_none()
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
    fn answers_count_from_the_time_their_question_was_sent() {
        let sent = Instant::now();
        let mut r = Rebalance::default();
        // The answer came 2 s after the question: it still counts from the question.
        r.answered("t", "g1", [0, 2], sent);
        assert_eq!(r.valid_until(&key("g1", 0)), Some(sent + ANSWER_TTL));
        assert_eq!(r.valid_until(&key("g1", 1)), None, "not named by the answer");
        assert_eq!(r.valid_until(&key("g2", 0)), None, "no answer from g2");
        r.expire(sent + ANSWER_TTL);
        assert_eq!(r.assigned().len(), 2, "valid up to the TTL");
        r.expire(sent + ANSWER_TTL + Duration::from_millis(1));
        assert!(r.assigned().is_empty());
        assert_eq!(r.valid_until(&key("g1", 0)), None);
    }

    #[test]
    fn a_pollers_validity_only_grows_and_ends_at_its_deadline() {
        let t0 = Instant::now();
        let v = Validity::new(t0 + ANSWER_TTL);
        assert_eq!(v.left(t0), Some(ANSWER_TTL));
        v.extend(t0 + Duration::from_secs(3));
        assert_eq!(v.until(), t0 + ANSWER_TTL, "an older answer does not shorten it");
        v.extend(t0 + Duration::from_secs(12));
        assert_eq!(v.until(), t0 + Duration::from_secs(12));
        assert!(!v.expired(t0 + Duration::from_millis(11_999)));
        assert!(
            v.expired(t0 + Duration::from_secs(12)),
            "past the deadline: stop receiving"
        );
        assert_eq!(v.left(t0 + Duration::from_secs(20)), None);
    }

    #[test]
    fn the_holding_header_lists_one_groups_queues() {
        let held: BTreeSet<QueueKey> = [key("g1", 0), key("g1", 5), key("g2", 1)].into_iter().collect();
        assert_eq!(holding_header(&held, "t", "g1"), "0,5");
        assert_eq!(holding_header(&held, "t", "g3"), "");
        assert_eq!(holding_header(&held, "other", "g1"), "");
    }
}
