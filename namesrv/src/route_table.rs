//! The registry of broker groups: fed with registrations and `now`, it answers where a
//! topic's queues are. No IO and no clock of its own, so simulated time tests it.
//!
//! - A member is live while its last registration is younger than the expiry; reads
//!   ignore expired members even before [`RouteTable::expire`] removes them.
//! - A group's leader is the leader named at the highest term any live member reported,
//!   if that leader is itself live. A deposed leader that still believes it leads (an
//!   old term) loses to a follower that reports a newer term.
//! - A group's topics come from its live member with the highest applied index (the
//!   freshest view of the group's replicated topic table); ties go to the latest
//!   registration.

use std::collections::BTreeMap;
use std::time::Duration;
use std::time::Instant;

use crate::registration::Registration;
use crate::registration::Role;
use crate::registration::TopicSpec;

#[derive(Debug, Clone)]
struct Member {
    reg: Registration,
    last_seen: Instant,
}

/// What a registration did to the table (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    /// A member the table did not know (or had dropped).
    NewMember,
    /// A known member whose role, term or leader changed.
    Changed,
    /// A known member, nothing but its freshness changed (topics may have).
    Refreshed,
}

/// The registry. `max_members` bounds its size.
#[derive(Debug, Clone)]
pub struct RouteTable {
    expiry: Duration,
    max_members: usize,
    groups: BTreeMap<String, BTreeMap<u64, Member>>,
}

/// The table is full: a new member was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableFull(pub usize);

/// One group's share of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRoute {
    pub group: String,
    pub spec: TopicSpec,
    /// Client addresses of the live members: the leader first, then the other members
    /// that reported the group's newest term, by node id, then members still at an older
    /// term (they have not registered since the last election: most likely down).
    pub endpoints: Vec<String>,
    /// How many of `endpoints` (from the front) reported the newest term; at least 1.
    pub current: usize,
    pub leader_id: Option<u64>,
}

/// A live member as the table knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    pub node_id: u64,
    pub client_addr: String,
    pub role: Role,
    pub term: u64,
    pub applied_index: u64,
    pub last_seen_ago: Duration,
}

/// A group with at least one live member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    pub name: String,
    pub leader_id: Option<u64>,
    pub term: u64,
    /// By node id.
    pub members: Vec<MemberView>,
    pub topics: usize,
}

impl RouteTable {
    pub fn new(expiry: Duration, max_members: usize) -> Self {
        Self {
            expiry,
            max_members,
            groups: BTreeMap::new(),
        }
    }

    /// How long a silent member stays.
    pub fn expiry(&self) -> Duration {
        self.expiry
    }

    /// Records a registration made at `now`.
    pub fn register(&mut self, reg: Registration, now: Instant) -> Result<Registered, TableFull> {
        let known = self
            .groups
            .get(&reg.group)
            .and_then(|g| g.get(&reg.node_id))
            .filter(|m| self.is_live(m, now));
        let outcome = match known {
            None => Registered::NewMember,
            Some(m) if (m.reg.role, m.reg.term, m.reg.leader_id) != (reg.role, reg.term, reg.leader_id) => {
                Registered::Changed
            }
            Some(_) => Registered::Refreshed,
        };
        let exists = self
            .groups
            .get(&reg.group)
            .is_some_and(|g| g.contains_key(&reg.node_id));
        if !exists && self.member_count() >= self.max_members {
            return Err(TableFull(self.max_members));
        }
        let group = self.groups.entry(reg.group.clone()).or_default();
        group.insert(reg.node_id, Member { reg, last_seen: now });
        Ok(outcome)
    }

    /// Removes members silent for longer than the expiry, and groups left empty; returns
    /// the removed `(group, node id)` pairs.
    pub fn expire(&mut self, now: Instant) -> Vec<(String, u64)> {
        let expiry = self.expiry;
        let mut removed = Vec::new();
        for (name, members) in &mut self.groups {
            members.retain(|id, m| {
                let live = now.saturating_duration_since(m.last_seen) <= expiry;
                if !live {
                    removed.push((name.clone(), *id));
                }
                live
            });
        }
        self.groups.retain(|_, members| !members.is_empty());
        removed
    }

    /// Every group hosting `topic`, by group name; empty if none does.
    pub fn route(&self, topic: &str, now: Instant) -> Vec<GroupRoute> {
        self.groups
            .iter()
            .filter_map(|(name, members)| {
                let live = self.live(members, now);
                let spec = freshest(&live)?.reg.topics.get(topic)?.clone();
                let leader_id = leader(&live);
                let (endpoints, current) = endpoints(&live, leader_id);
                Some(GroupRoute {
                    group: name.clone(),
                    spec,
                    endpoints,
                    current,
                    leader_id,
                })
            })
            .collect()
    }

    /// Every group with a live member, by name.
    pub fn groups(&self, now: Instant) -> Vec<GroupView> {
        self.groups
            .iter()
            .filter_map(|(name, members)| {
                let live = self.live(members, now);
                let fresh = freshest(&live)?;
                Some(GroupView {
                    name: name.clone(),
                    leader_id: leader(&live),
                    term: live.iter().map(|m| m.reg.term).max().unwrap_or(0),
                    members: live.iter().map(|m| view(m, now)).collect(),
                    topics: fresh.reg.topics.len(),
                })
            })
            .collect()
    }

    /// Whether any live group hosts `topic` as a FIFO topic.
    pub fn is_fifo(&self, topic: &str, now: Instant) -> bool {
        use raftmq_proto::raftmq::admin::v1::MessageKind;
        self.route(topic, now)
            .iter()
            .any(|r| r.spec.kind == MessageKind::Fifo)
    }

    fn member_count(&self) -> usize {
        self.groups.values().map(BTreeMap::len).sum()
    }

    fn is_live(&self, m: &Member, now: Instant) -> bool {
        now.saturating_duration_since(m.last_seen) <= self.expiry
    }

    /// Live members by node id.
    fn live<'a>(&self, members: &'a BTreeMap<u64, Member>, now: Instant) -> Vec<&'a Member> {
        members.values().filter(|m| self.is_live(m, now)).collect()
    }
}

fn view(m: &Member, now: Instant) -> MemberView {
    MemberView {
        node_id: m.reg.node_id,
        client_addr: m.reg.client_addr.clone(),
        role: m.reg.role,
        term: m.reg.term,
        applied_index: m.reg.applied_index,
        last_seen_ago: now.saturating_duration_since(m.last_seen),
    }
}

/// The member with the highest applied index (the latest registration on a tie).
fn freshest<'a>(live: &[&'a Member]) -> Option<&'a Member> {
    live.iter()
        .copied()
        .max_by_key(|m| (m.reg.applied_index, m.last_seen))
}

/// The leader named at the highest reported term, if it is live.
fn leader(live: &[&Member]) -> Option<u64> {
    let top = live.iter().map(|m| m.reg.term).max()?;
    let named = live
        .iter()
        .filter(|m| m.reg.term == top)
        .find_map(|m| m.reg.leader_id)?;
    live.iter().any(|m| m.reg.node_id == named).then_some(named)
}

/// Client addresses: the leader, the other members at the newest term, then the members
/// at older terms, each part by node id; and how many are at the newest term.
fn endpoints(live: &[&Member], leader_id: Option<u64>) -> (Vec<String>, usize) {
    let top = live.iter().map(|m| m.reg.term).max().unwrap_or(0);
    let mut ordered: Vec<&Member> = live.to_vec();
    ordered.sort_by_key(|m| (Some(m.reg.node_id) != leader_id, m.reg.term < top, m.reg.node_id));
    let current = ordered.iter().filter(|m| m.reg.term == top).count();
    (
        ordered.iter().map(|m| m.reg.client_addr.clone()).collect(),
        current.max(1),
    )
}

#[cfg(test)]
#[path = "route_table_tests.rs"]
mod tests;
