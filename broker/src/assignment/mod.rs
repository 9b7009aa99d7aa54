//! Push consumers' queue assignment (QueryAssignment): the members of each consumer group
//! as this node sees them ([`membership`]) and the leases of the queues they own
//! ([`lease`]). Only the group's leader answers (followers forward), so one table decides.

pub mod lease;
pub mod membership;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

pub use lease::Assigner;
pub use lease::Query;
pub use membership::Membership;

/// The request header in which raftmq's client lists the queue ids (of the answering
/// broker group) it still consumes: `x-raftmq-holding: 0,3,5`.
pub const HOLDING_HEADER: &str = "x-raftmq-holding";

/// Membership and leases of one node, behind one lock.
#[derive(Debug)]
pub struct Consumers {
    inner: Mutex<(Membership, Assigner)>,
}

impl Consumers {
    pub fn new(member_expiry: Duration, max_members: usize, lease: Duration) -> Self {
        let now = Instant::now();
        Self {
            inner: Mutex::new((
                Membership::new(member_expiry, max_members),
                Assigner::new(lease, now),
            )),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Membership, Assigner)> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the membership.
    pub fn members_mut<T>(&self, f: impl FnOnce(&mut Membership) -> T) -> T {
        f(&mut self.lock().0)
    }

    /// The queues of `topic` (of this group, `queues` of them) that `client` of consumer
    /// group `group` owns now, as the leader of `term` decides.
    pub fn assign(
        &self,
        term: u64,
        group: &str,
        topic: &str,
        client: &str,
        queues: u32,
        holding: Option<&BTreeSet<u32>>,
    ) -> Vec<u32> {
        let now = Instant::now();
        let mut guard = self.lock();
        let (membership, assigner) = &mut *guard;
        membership.expire(now);
        // Asking is a sign of life: a member whose stream reaches another node of the group
        // (or none yet) is a member here too.
        membership.heartbeat(group, client, now);
        let members = membership.members(group, now);
        assigner.observe_term(term, now);
        assigner.query(&Query {
            group,
            topic,
            client,
            queues,
            members: &members,
            holding,
            now,
        })
    }
}

impl Consumers {
    /// Whether `client` of consumer group `group` owns `queue` of `topic` now, as the
    /// leader of `term` granted it (a receive of a push consumer is refused otherwise).
    pub fn holds(&self, term: u64, group: &str, topic: &str, client: &str, queue: u32) -> bool {
        let now = Instant::now();
        let mut guard = self.lock();
        guard.1.observe_term(term, now);
        guard.1.holds(group, topic, client, queue, now)
    }
}

/// Parses the holding header: comma-separated queue ids; None when absent or malformed.
pub fn parse_holding(value: Option<&str>) -> Option<BTreeSet<u32>> {
    let v = value?.trim();
    if v.is_empty() {
        return Some(BTreeSet::new());
    }
    v.split(',').map(|s| s.trim().parse::<u32>().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holding_header_is_a_list_of_queue_ids() {
        assert_eq!(parse_holding(None), None);
        assert_eq!(parse_holding(Some("")), Some(BTreeSet::new()));
        assert_eq!(
            parse_holding(Some("0, 3,5")),
            Some([0, 3, 5].into_iter().collect())
        );
        assert_eq!(parse_holding(Some("0,x")), None);
    }
}
