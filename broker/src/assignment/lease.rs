//! Which consumer owns which queue: RocketMQ's average allocation, handed out under
//! leases so that a queue has one owner at a time. Sans-IO: fed with queries and `now`.
//!
//! - The target of a member is its share of the queues by average allocation over the
//!   sorted member list (RocketMQ's `AllocateMessageQueueAveragely`).
//! - A queue is granted only when free. It becomes free when its owner no longer holds it
//!   (the owner's query lists what it still consumes; without that list, when the owner's
//!   own target no longer contains it), when the owner leaves the group, or when the
//!   owner's lease runs out (no query for `lease`).
//! - After a leader change the table starts empty, and the old leader's grants are unknown:
//!   until every current member of the group has asked once (saying what it holds), or a
//!   whole lease has passed, the new leader grants only the queues a member says it
//!   already holds. So a queue granted by the old leader is never given to a second member
//!   while its holder may still consume it.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::time::Duration;
use std::time::Instant;

#[derive(Debug, Clone)]
struct Grant {
    client: String,
    renewed: Instant,
}

/// One member's question.
#[derive(Debug, Clone)]
pub struct Query<'a> {
    pub group: &'a str,
    pub topic: &'a str,
    pub client: &'a str,
    /// The topic's queue count here (0 for an unknown topic).
    pub queues: u32,
    /// The live members of the group, sorted.
    pub members: &'a [String],
    /// The queues the member still consumes, when it says.
    pub holding: Option<&'a BTreeSet<u32>>,
    pub now: Instant,
}

/// The lease table of one leader.
#[derive(Debug, Clone)]
pub struct Assigner {
    lease: Duration,
    term: u64,
    term_started: Instant,
    /// Per consumer group and topic, the members that asked since this term began.
    asked: BTreeMap<(String, String), BTreeSet<String>>,
    grants: BTreeMap<(String, String), BTreeMap<u32, Grant>>,
}

/// RocketMQ's average allocation: `client`'s share of `queues` over sorted `members`.
pub fn allocate(queues: u32, members: &[String], client: &str) -> Vec<u32> {
    let Some(index) = members.iter().position(|m| m == client) else {
        return Vec::new();
    };
    let (n, q, i) = (members.len(), queues as usize, index);
    if q == 0 {
        return Vec::new();
    }
    let rem = q % n;
    let size = if q <= n {
        1
    } else if rem > 0 && i < rem {
        q / n + 1
    } else {
        q / n
    };
    let start = if rem > 0 && i < rem {
        i * size
    } else {
        i * size + rem
    };
    let count = size.min(q.saturating_sub(start));
    (start..start + count)
        .filter_map(|s| u32::try_from(s).ok())
        .collect()
}

impl Assigner {
    pub fn new(lease: Duration, now: Instant) -> Self {
        Self {
            lease,
            term: 0,
            term_started: now,
            asked: BTreeMap::new(),
            grants: BTreeMap::new(),
        }
    }

    /// Starts afresh when this node leads a new term.
    pub fn observe_term(&mut self, term: u64, now: Instant) {
        if term != self.term {
            self.term = term;
            self.term_started = now;
            self.asked.clear();
            self.grants.clear();
        }
    }

    /// Whether `client` owns queue `queue` of `topic` for consumer group `group` now.
    pub fn holds(&self, group: &str, topic: &str, client: &str, queue: u32, now: Instant) -> bool {
        self.grants
            .get(&(group.to_owned(), topic.to_owned()))
            .and_then(|g| g.get(&queue))
            .is_some_and(|g| g.client == client && now.saturating_duration_since(g.renewed) <= self.lease)
    }

    /// Whether grants of the last leader may still be in use: some current member has not
    /// said what it holds since this term began, and a lease has not passed yet.
    fn in_grace(&mut self, q: &Query<'_>) -> bool {
        let asked = self
            .asked
            .entry((q.group.to_owned(), q.topic.to_owned()))
            .or_default();
        asked.insert(q.client.to_owned());
        asked.retain(|c| q.members.contains(c));
        let everyone = q.members.iter().all(|m| asked.contains(m));
        !everyone && q.now.saturating_duration_since(self.term_started) < self.lease
    }

    /// The queues `q.client` owns now (its answer), after releasing and granting.
    pub fn query(&mut self, q: &Query<'_>) -> Vec<u32> {
        let key = (q.group.to_owned(), q.topic.to_owned());
        let lease = self.lease;
        let in_grace = self.in_grace(q);
        let grants = self.grants.entry(key.clone()).or_default();
        // Owners that left, leases that ran out, queues that no longer exist.
        grants.retain(|queue, g| {
            *queue < q.queues
                && q.members.contains(&g.client)
                && q.now.saturating_duration_since(g.renewed) <= lease
        });
        let target: BTreeSet<u32> = allocate(q.queues, q.members, q.client).into_iter().collect();
        release_and_claim(grants, q, &target);
        for queue in &target {
            let free = !grants.contains_key(queue);
            if free && !in_grace {
                grants.insert(*queue, grant(q));
            }
        }
        let answer = grants
            .iter()
            .filter(|(queue, g)| g.client == q.client && target.contains(queue))
            .map(|(queue, _)| *queue)
            .collect();
        if grants.is_empty() {
            self.grants.remove(&key);
        }
        answer
    }
}

fn grant(q: &Query<'_>) -> Grant {
    Grant {
        client: q.client.to_owned(),
        renewed: q.now,
    }
}

/// The member's own grants: released when it no longer holds them (or, without a holding
/// list, when they left its target), renewed otherwise; free queues it says it holds are
/// granted to it (how a new leader learns the old grants).
fn release_and_claim(grants: &mut BTreeMap<u32, Grant>, q: &Query<'_>, target: &BTreeSet<u32>) {
    grants.retain(|queue, g| {
        if g.client != q.client {
            return true;
        }
        match q.holding {
            Some(h) => h.contains(queue) || target.contains(queue),
            None => target.contains(queue),
        }
    });
    for g in grants.values_mut().filter(|g| g.client == q.client) {
        g.renewed = q.now;
    }
    if let Some(h) = q.holding {
        for queue in h.iter().filter(|queue| **queue < q.queues) {
            grants.entry(*queue).or_insert_with(|| grant(q));
        }
    }
}

#[cfg(test)]
#[path = "lease_tests.rs"]
mod tests;
