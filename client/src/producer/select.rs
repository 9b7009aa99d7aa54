//! Which queue an attempt goes to, sans-IO.
//!
//! - A normal send: round robin over the writable queues, preferring broker groups not yet
//!   tried by this send and available to the [`FaultTracker`]; when none is both, a group
//!   not yet tried that becomes available soonest; when every group was tried (a topic on
//!   one group), the same preferences among all groups.
//! - An ordered send: a stable hash of the sharding key (the message group) picks the
//!   broker group among the writable queues, and within the group the queue the broker
//!   stores that key on — raftmq brokers place a message with a message group on queue
//!   `fnv1a64(group) mod queues` of the group ([`broker_queue_id`]). Every message of a key
//!   thus goes to one queue while the route stays the same.

use std::time::Instant;

use crate::route::MessageQueue;

use super::fault::FaultTracker;

/// FNV-1a (64 bit) of `s`: the hash raftmq brokers place message groups by.
pub fn fnv1a64(s: &str) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    s.bytes()
        .fold(OFFSET_BASIS, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

/// SplitMix64's finalizer: decorrelates the choice of group from the broker's
/// `hash mod queues` within it (else, with groups alternating in the route, a group would
/// only ever get every other of its queues).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The queue id a raftmq broker group with `queues` queues stores message group `key` on.
pub fn broker_queue_id(key: &str, queues: usize) -> i32 {
    let n = u64::try_from(queues.max(1)).unwrap_or(u64::MAX);
    i32::try_from(fnv1a64(key) % n).unwrap_or(0)
}

/// The index in `queues` of the next attempt of a normal send. `start` is the round-robin
/// position (the caller advances it per send), `tried` the groups this send already
/// tried. None when no queue is writable.
pub fn select_queue(
    queues: &[MessageQueue],
    start: usize,
    tried: &[String],
    faults: &FaultTracker,
    now: Instant,
) -> Option<usize> {
    let n = queues.len();
    (0..n)
        .map(|i| (start.wrapping_add(i)) % n)
        .filter(|&i| queues[i].writable())
        .min_by_key(|&i| {
            let broker = queues[i].broker.as_str();
            let was_tried = tried.iter().any(|t| t == broker);
            // Available groups first (in round-robin order), then by when they recover.
            let waiting = faults
                .available_at(broker)
                .filter(|at| *at > now)
                .map(|at| at - now);
            (was_tried, waiting)
        })
}

/// How the attempts of one send choose their queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// A normal send: round robin, other groups on retries ([`select_queue`]).
    Spread,
    /// An ordered send by sharding key (the message group): its key's queue
    /// ([`ordered_queue`]), on every attempt.
    Key(String),
    /// An ordered send whose queue the caller's selector picked: the queue at this index
    /// of the route, on every attempt.
    Chosen(usize),
}

impl Placement {
    /// Whether every attempt goes to one queue (an ordered send: never retried on
    /// another queue).
    pub fn is_fixed(&self) -> bool {
        !matches!(self, Placement::Spread)
    }
}

/// The index in `queues` of the next attempt of a send placed by `placement`; `start`,
/// `tried` and `faults` matter only to a [`Placement::Spread`] send ([`select_queue`]).
/// None when the queue (or, spread, every queue) is not writable.
pub fn attempt_queue(
    queues: &[MessageQueue],
    placement: &Placement,
    start: usize,
    tried: &[String],
    faults: &FaultTracker,
    now: Instant,
) -> Option<usize> {
    match placement {
        Placement::Spread => select_queue(queues, start, tried, faults, now),
        Placement::Key(key) => ordered_queue(queues, key),
        Placement::Chosen(i) => queues.get(*i).filter(|q| q.writable()).map(|_| *i),
    }
}

/// The index in `queues` of the queue of sharding key `key`; None when no queue is
/// writable. Stable while the route stays the same.
pub fn ordered_queue(queues: &[MessageQueue], key: &str) -> Option<usize> {
    let writable: Vec<usize> = (0..queues.len()).filter(|&i| queues[i].writable()).collect();
    if writable.is_empty() {
        return None;
    }
    let h = fnv1a64(key);
    let pick = usize::try_from(mix(h) % writable.len() as u64).unwrap_or(0);
    let broker = &queues[writable[pick]].broker;
    let of_group: Vec<usize> = writable
        .iter()
        .copied()
        .filter(|&i| &queues[i].broker == broker)
        .collect();
    let id = broker_queue_id(key, of_group.len());
    of_group
        .iter()
        .copied()
        .find(|&i| queues[i].id == id)
        .or(Some(writable[pick]))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::collections::BTreeSet;
    use std::time::Duration;

    use raftmq_proto::rocketmq::v2 as pb;

    use super::*;

    /// Queues as raftmq's name server lists them: groups alternating, ids 0..n.
    fn route(groups: &[&str], per_group: i32) -> Vec<MessageQueue> {
        let mut out = Vec::new();
        for id in 0..per_group {
            for g in groups {
                let wire = pb::MessageQueue {
                    topic: None,
                    id,
                    permission: pb::Permission::ReadWrite as i32,
                    broker: Some(pb::Broker {
                        name: (*g).into(),
                        id: 0,
                        endpoints: Some(pb::Endpoints {
                            scheme: pb::AddressScheme::IPv4 as i32,
                            addresses: vec![pb::Address {
                                host: "127.0.0.1".into(),
                                port: 1,
                            }],
                        }),
                    }),
                    accept_message_types: vec![],
                };
                out.extend(MessageQueue::from_wire(&wire));
            }
        }
        out
    }

    fn picks(queues: &[MessageQueue], faults: &FaultTracker, now: Instant, n: usize) -> Vec<String> {
        (0..n)
            .map(|s| {
                let i = select_queue(queues, s, &[], faults, now).expect("a queue");
                queues[i].key()
            })
            .collect()
    }

    #[test]
    fn normal_sends_go_round_robin_over_every_queue() {
        let q = route(&["g1", "g2"], 2);
        let now = Instant::now();
        let p = picks(&q, &FaultTracker::new(), now, 5);
        assert_eq!(p, ["g1:0", "g2:0", "g1:1", "g2:1", "g1:0"]);
    }

    #[test]
    fn a_retry_goes_to_another_group_and_failed_groups_are_avoided_for_a_while() {
        let q = route(&["g1", "g2", "g3"], 2);
        let t0 = Instant::now();
        let mut f = FaultTracker::new();
        // Start on g2; it failed: the retry goes to the next group, not to g2's other queue.
        let i = select_queue(&q, 1, &["g2".into()], &f, t0).expect("queue");
        assert_eq!(q[i].broker, "g3");
        f.record_failure("g2", Duration::from_millis(2), t0);
        let later = t0 + Duration::from_secs(10);
        let p = picks(&q, &f, later, 12);
        assert!(p.iter().all(|k| !k.starts_with("g2")), "{p:?}");
        // After 30 s, g2 is chosen again.
        let p = picks(&q, &f, t0 + Duration::from_secs(30), 6);
        assert!(p.iter().any(|k| k.starts_with("g2")), "{p:?}");
        // When every untried group is unavailable, the one recovering first is used.
        f.record_failure("g1", Duration::from_millis(2), t0 + Duration::from_secs(5));
        f.record_failure("g3", Duration::from_millis(2), t0 + Duration::from_secs(1));
        let i = select_queue(&q, 0, &[], &f, later).expect("queue");
        assert_eq!(q[i].broker, "g2");
        let i = select_queue(&q, 0, &["g2".into()], &f, later).expect("queue");
        assert_eq!(q[i].broker, "g3");
        // Every group tried: the same preferences among all.
        let all = ["g1".into(), "g2".into(), "g3".into()];
        let i = select_queue(&q, 0, &all, &f, later).expect("queue");
        assert_eq!(q[i].broker, "g2");
    }

    #[test]
    fn a_single_group_is_retried_and_read_only_queues_are_skipped() {
        let mut q = route(&["g1"], 2);
        let now = Instant::now();
        let i = select_queue(&q, 0, &["g1".into()], &FaultTracker::new(), now);
        assert_eq!(i, Some(0));
        for m in &mut q {
            m.permission = pb::Permission::Read;
        }
        assert_eq!(select_queue(&q, 0, &[], &FaultTracker::new(), now), None);
        assert_eq!(ordered_queue(&q, "k"), None);
    }

    #[test]
    fn a_key_always_maps_to_the_queue_its_broker_stores_it_on() {
        assert_eq!(fnv1a64(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64("a"), 0xaf63_dc4c_8601_ec8c);
        let q = route(&["g1", "g2"], 4);
        let mut used = BTreeMap::<String, BTreeSet<i32>>::new();
        for k in 0..400 {
            let key = format!("order-{k}");
            let i = ordered_queue(&q, &key).expect("queue");
            assert_eq!(ordered_queue(&q, &key), Some(i), "stable");
            assert_eq!(q[i].id, broker_queue_id(&key, 4), "the broker's queue");
            used.entry(q[i].broker.clone()).or_default().insert(q[i].id);
        }
        // Keys spread over both groups and every queue of each.
        assert_eq!(used.len(), 2);
        assert!(used.values().all(|ids| ids.len() == 4), "{used:?}");
    }
}
