//! Who belongs to a consumer group, as this node sees it. Sans-IO: fed with events and
//! `now`.
//!
//! A push consumer joins with a heartbeat or with the Telemetry stream it keeps open to
//! every broker address. It leaves
//! - at once when it says so (NotifyClientTermination),
//! - [`DEPARTURE_GRACE`] after the last Telemetry stream it had open here closed (unless
//!   it opens one again, or heartbeats, meanwhile): a killed process's connections are
//!   closed by its kernel, so a crashed member is noticed within seconds, not after an
//!   expiry, while a stream that breaks and is reopened at once does not cost a member
//!   its queues;
//! - when it has neither an open stream nor a heartbeat younger than the expiry.

use std::collections::BTreeMap;
use std::time::Duration;
use std::time::Instant;

/// How long a member whose last stream closed stays (its client reopens a broken stream
/// after about a second).
pub const DEPARTURE_GRACE: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
struct Member {
    last_seen: Instant,
    streams: u32,
    /// When its last stream closed; None while one is open or it never had one.
    closed_at: Option<Instant>,
}

impl Member {
    fn live(&self, now: Instant, expiry: Duration) -> bool {
        if self.streams > 0 {
            return true;
        }
        match self.closed_at {
            Some(at) => now.saturating_duration_since(at) <= DEPARTURE_GRACE,
            None => now.saturating_duration_since(self.last_seen) <= expiry,
        }
    }
}

/// The members of every consumer group.
#[derive(Debug, Clone)]
pub struct Membership {
    expiry: Duration,
    max_members: usize,
    groups: BTreeMap<String, BTreeMap<String, Member>>,
}

impl Membership {
    pub fn new(expiry: Duration, max_members: usize) -> Self {
        Self {
            expiry,
            max_members,
            groups: BTreeMap::new(),
        }
    }

    fn count(&self) -> usize {
        self.groups.values().map(BTreeMap::len).sum()
    }

    fn member(&mut self, group: &str, client: &str, now: Instant) -> Option<&mut Member> {
        let known = self.groups.get(group).is_some_and(|g| g.contains_key(client));
        if !known && self.count() >= self.max_members {
            return None;
        }
        let members = self.groups.entry(group.to_owned()).or_default();
        Some(members.entry(client.to_owned()).or_insert(Member {
            last_seen: now,
            streams: 0,
            closed_at: None,
        }))
    }

    /// A heartbeat of `client` in `group`; false if the table is full.
    pub fn heartbeat(&mut self, group: &str, client: &str, now: Instant) -> bool {
        match self.member(group, client, now) {
            Some(m) => {
                m.last_seen = now;
                m.closed_at = None;
                true
            }
            None => false,
        }
    }

    /// `client` opened a Telemetry stream here announcing `group`.
    pub fn stream_opened(&mut self, group: &str, client: &str, now: Instant) -> bool {
        match self.member(group, client, now) {
            Some(m) => {
                m.last_seen = now;
                m.streams += 1;
                m.closed_at = None;
                true
            }
            None => false,
        }
    }

    /// A Telemetry stream of `client` in `group` closed at `now`; with its last one the
    /// member leaves after [`DEPARTURE_GRACE`].
    pub fn stream_closed(&mut self, group: &str, client: &str, now: Instant) {
        let Some(m) = self.groups.get_mut(group).and_then(|g| g.get_mut(client)) else {
            return;
        };
        m.streams = m.streams.saturating_sub(1);
        if m.streams == 0 {
            m.closed_at = Some(now);
        }
    }

    /// `client` said it leaves (`group`, or every group when None).
    pub fn left(&mut self, group: Option<&str>, client: &str) {
        for (name, members) in &mut self.groups {
            if group.is_none_or(|g| g == name) {
                members.remove(client);
            }
        }
        self.groups.retain(|_, m| !m.is_empty());
    }

    /// Forgets members with no open stream and no recent heartbeat.
    pub fn expire(&mut self, now: Instant) {
        let expiry = self.expiry;
        for members in self.groups.values_mut() {
            members.retain(|_, m| m.live(now, expiry));
        }
        self.groups.retain(|_, m| !m.is_empty());
    }

    /// The live members of `group`, sorted.
    pub fn members(&self, group: &str, now: Instant) -> Vec<String> {
        self.groups
            .get(group)
            .map(|members| {
                members
                    .iter()
                    .filter(|(_, m)| m.live(now, self.expiry))
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPIRY: Duration = Duration::from_secs(30);

    #[test]
    fn a_member_leaves_shortly_after_its_last_stream_closed() {
        let t0 = Instant::now();
        let mut m = Membership::new(EXPIRY, 100);
        assert!(m.stream_opened("g", "b", t0));
        assert!(m.stream_opened("g", "a", t0));
        assert!(
            m.stream_opened("g", "a", t0),
            "a second stream of the same client"
        );
        assert_eq!(m.members("g", t0), ["a", "b"]);
        m.stream_closed("g", "a", t0);
        assert_eq!(m.members("g", t0), ["a", "b"], "one stream of a is still open");
        m.stream_closed("g", "a", t0);
        assert_eq!(
            m.members("g", t0 + DEPARTURE_GRACE),
            ["a", "b"],
            "within the grace"
        );
        let after = t0 + DEPARTURE_GRACE + Duration::from_millis(1);
        assert_eq!(m.members("g", after), ["b"]);
        // A stream reopened within the grace keeps the member.
        m.stream_closed("g", "b", t0);
        m.stream_opened("g", "b", t0 + Duration::from_secs(1));
        assert_eq!(m.members("g", after), ["b"]);
        // Open streams keep a member however old its last heartbeat.
        assert_eq!(m.members("g", t0 + EXPIRY * 10), ["b"]);
    }

    #[test]
    fn heartbeats_alone_keep_a_member_until_the_expiry() {
        let t0 = Instant::now();
        let mut m = Membership::new(EXPIRY, 100);
        m.heartbeat("g", "a", t0);
        assert_eq!(m.members("g", t0 + EXPIRY), ["a"]);
        assert!(m.members("g", t0 + EXPIRY + Duration::from_millis(1)).is_empty());
        m.expire(t0 + EXPIRY * 2);
        m.heartbeat("g", "a", t0 + EXPIRY * 2);
        assert_eq!(
            m.members("g", t0 + EXPIRY * 2),
            ["a"],
            "back with its next heartbeat"
        );
    }

    #[test]
    fn leaving_and_bounds() {
        let t0 = Instant::now();
        let mut m = Membership::new(EXPIRY, 2);
        m.heartbeat("g1", "a", t0);
        m.heartbeat("g2", "a", t0);
        assert!(!m.heartbeat("g1", "c", t0), "full");
        m.left(Some("g1"), "a");
        assert!(m.members("g1", t0).is_empty());
        assert_eq!(m.members("g2", t0), ["a"]);
        m.left(None, "a");
        assert!(m.members("g2", t0).is_empty());
        assert!(m.heartbeat("g1", "c", t0), "room again");
    }
}
