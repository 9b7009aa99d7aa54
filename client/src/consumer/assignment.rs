//! The pull consumer's bookkeeping, sans-IO: which queues it reads, with which filter,
//! from which offset (its position), and what it committed last. Positions move only by
//! the pull that began at them, a seek, or a start found for a queue without one.
//!
//! A topic subscribed to gains the queues its route gains; it loses none on a route
//! change (a broker group missing from a route for a while keeps its positions).

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use super::FilterExpression;
use super::ReceivedMessage;
use crate::error::ClientError;
use crate::error::Result;
use crate::route::MessageQueue;
use crate::route::TopicRoute;

/// One pull's result: the queue and offset pulled, the messages, the next offset.
#[derive(Debug)]
pub(crate) struct Pulled {
    pub queue: MessageQueue,
    pub from: i64,
    pub messages: Vec<ReceivedMessage>,
    pub next: i64,
}

/// One assigned queue and its offsets.
#[derive(Debug, Clone)]
struct Assigned {
    queue: MessageQueue,
    filter: FilterExpression,
    /// The next offset to read; None until found.
    position: Option<i64>,
    /// The offset last committed (or read back); None when unknown.
    committed: Option<i64>,
}

/// The queues a pull consumer reads and its offsets on each. Sans-IO.
#[derive(Debug, Clone, Default)]
pub(crate) struct Assignment {
    queues: BTreeMap<String, Assigned>,
    /// Topics subscribed to (rather than assigned queue by queue), with their filters.
    subscribed: BTreeMap<String, FilterExpression>,
}

/// A queue's identity: topic, broker group, queue id.
pub(super) fn queue_key(q: &MessageQueue) -> String {
    format!("{}@{}", q.topic, q.key())
}

impl Assignment {
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    pub fn topics(&self) -> BTreeSet<String> {
        self.queues.values().map(|a| a.queue.topic.clone()).collect()
    }

    pub fn queues(&self) -> Vec<MessageQueue> {
        self.queues.values().map(|a| a.queue.clone()).collect()
    }

    /// Replaces the queues of `topic` with `queues`, keeping the offsets of those kept.
    pub fn set_topic(&mut self, topic: &str, queues: Vec<MessageQueue>, filter: &FilterExpression) {
        let (others, mut old) = std::mem::take(&mut self.queues)
            .into_iter()
            .partition(|(_, a)| a.queue.topic != topic);
        self.queues = others;
        self.add(queues, filter, &mut old);
        self.subscribed.insert(topic.to_owned(), filter.clone());
    }

    /// Replaces everything with `queues`, keeping the offsets of those kept; no topic is
    /// subscribed to any more.
    pub fn replace(&mut self, queues: Vec<MessageQueue>, filter: &FilterExpression) {
        let mut old = std::mem::take(&mut self.queues);
        self.add(queues, filter, &mut old);
        self.subscribed.clear();
    }

    fn add(
        &mut self,
        queues: Vec<MessageQueue>,
        filter: &FilterExpression,
        old: &mut BTreeMap<String, Assigned>,
    ) {
        for queue in queues {
            let key = queue_key(&queue);
            let kept = old.remove(&key);
            let assigned = Assigned {
                position: kept.as_ref().and_then(|k| k.position),
                committed: kept.as_ref().and_then(|k| k.committed),
                queue,
                filter: filter.clone(),
            };
            self.queues.insert(key, assigned);
        }
    }

    pub fn remove_topic(&mut self, topic: &str) {
        self.queues.retain(|_, a| a.queue.topic != topic);
        self.subscribed.remove(topic);
    }

    pub fn check_assigned(&self, queue: &MessageQueue) -> Result<()> {
        if self.queues.contains_key(&queue_key(queue)) {
            return Ok(());
        }
        Err(ClientError::InvalidArgument(format!(
            "queue {} of {} is not assigned to this consumer",
            queue.key(),
            queue.topic
        )))
    }

    pub fn position(&self, queue: &MessageQueue) -> Option<i64> {
        self.queues.get(&queue_key(queue))?.position
    }

    pub fn seek(&mut self, queue: &MessageQueue, offset: i64) -> Result<()> {
        self.check_assigned(queue)?;
        if offset < 0 {
            return Err(ClientError::InvalidArgument(format!(
                "offset {offset} is negative"
            )));
        }
        if let Some(a) = self.queues.get_mut(&queue_key(queue)) {
            a.position = Some(offset);
        }
        Ok(())
    }

    pub fn unresolved(&self) -> Vec<MessageQueue> {
        self.queues
            .values()
            .filter(|a| a.position.is_none())
            .map(|a| a.queue.clone())
            .collect()
    }

    /// The start found for `queue` (unless a seek set one meanwhile).
    pub fn resolved(&mut self, queue: &MessageQueue, committed: Option<i64>, position: i64) {
        if let Some(a) = self.queues.get_mut(&queue_key(queue)) {
            a.position.get_or_insert(position);
            a.committed = committed;
        }
    }

    /// What to pull: every queue with a position, its filter and offset.
    pub fn targets(&self) -> Vec<(MessageQueue, FilterExpression, i64)> {
        self.queues
            .values()
            .filter_map(|a| Some((a.queue.clone(), a.filter.clone(), a.position?)))
            .collect()
    }

    /// Takes a pull's result: moves the queue's position (if it is still where the pull
    /// began) and adds its messages to `out`, or its error to `errors`. True if it
    /// brought messages.
    pub fn apply(
        &mut self,
        result: Result<Pulled>,
        out: &mut Vec<ReceivedMessage>,
        errors: &mut Vec<ClientError>,
    ) -> bool {
        let p = match result {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "pull failed");
                errors.push(e);
                return false;
            }
        };
        match self.queues.get_mut(&queue_key(&p.queue)) {
            Some(a) if a.position == Some(p.from) => a.position = Some(p.next),
            _ => return false,
        }
        let found = !p.messages.is_empty();
        out.extend(p.messages);
        found
    }

    /// Queues whose position differs from their last commit, with that position.
    pub fn to_commit(&self) -> Vec<(MessageQueue, i64)> {
        self.queues
            .values()
            .filter_map(|a| match a.position {
                Some(p) if a.committed != Some(p) => Some((a.queue.clone(), p)),
                _ => None,
            })
            .collect()
    }

    pub fn committed(&mut self, queue: &MessageQueue, offset: i64) {
        if let Some(a) = self.queues.get_mut(&queue_key(queue)) {
            a.committed = Some(offset);
        }
    }

    /// Takes the current addresses of the queues of `route`, and its new readable queues
    /// if the topic is subscribed to.
    pub fn update_route(&mut self, route: &TopicRoute) {
        let filter = self.subscribed.get(&route.topic).cloned();
        for q in &route.queues {
            match (self.queues.get_mut(&queue_key(q)), &filter) {
                (Some(a), _) => a.queue.endpoints.clone_from(&q.endpoints),
                (None, Some(f)) if q.readable() => self.add(vec![q.clone()], f, &mut BTreeMap::new()),
                (None, _) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use raftmq_proto::rocketmq::v2 as pb;

    use super::*;

    fn queue(topic: &str, broker: &str, id: i32, port: i32) -> MessageQueue {
        let wire = pb::MessageQueue {
            topic: Some(pb::Resource {
                resource_namespace: String::new(),
                name: topic.into(),
            }),
            id,
            permission: pb::Permission::ReadWrite as i32,
            broker: Some(pb::Broker {
                name: broker.into(),
                id: 0,
                endpoints: Some(pb::Endpoints {
                    scheme: pb::AddressScheme::IPv4 as i32,
                    addresses: vec![pb::Address {
                        host: "127.0.0.1".into(),
                        port,
                    }],
                }),
            }),
            accept_message_types: vec![],
        };
        MessageQueue::from_wire(&wire).expect("queue")
    }

    fn pulled(q: &MessageQueue, from: i64, n: i64) -> Result<Pulled> {
        let messages = (from..from + n)
            .map(|o| ReceivedMessage {
                message_id: format!("m{o}"),
                topic: q.topic.clone(),
                body: Default::default(),
                tag: None,
                keys: vec![],
                properties: BTreeMap::new(),
                message_group: None,
                broker: q.broker.clone(),
                queue_id: q.id,
                queue_offset: o,
                delivery_attempt: 0,
                born_timestamp: None,
                born_host: String::new(),
                store_timestamp: None,
                invisible_duration: None,
                receipt_handle: None,
                endpoints: q.endpoints.as_slice().into(),
                corrupted: false,
            })
            .collect();
        Ok(Pulled {
            queue: q.clone(),
            from,
            messages,
            next: from + n,
        })
    }

    #[test]
    fn positions_start_unknown_then_move_with_pulls_and_seeks() {
        let (a0, a1) = (queue("a", "g1", 0, 1), queue("a", "g1", 1, 1));
        let mut s = Assignment::default();
        s.set_topic("a", vec![a0.clone(), a1.clone()], &FilterExpression::All);
        assert_eq!(s.unresolved().len(), 2);
        assert!(s.targets().is_empty(), "nothing to pull before a start is known");
        s.resolved(&a0, Some(5), 5);
        s.seek(&a1, 2).expect("seek");
        s.resolved(&a1, None, 9);
        assert_eq!(s.position(&a1), Some(2), "a seek wins over the start found");
        assert!(s.unresolved().is_empty());
        let (mut out, mut errors) = (Vec::new(), Vec::new());
        assert!(s.apply(pulled(&a0, 5, 3), &mut out, &mut errors));
        assert_eq!(s.position(&a0), Some(8));
        assert!(
            !s.apply(pulled(&a0, 5, 3), &mut out, &mut errors),
            "a stale pull is ignored"
        );
        assert_eq!((s.position(&a0), out.len()), (Some(8), 3));
        assert!(!s.apply(pulled(&a1, 2, 0), &mut out, &mut errors));
        assert!(!s.apply(Err(ClientError::Timeout("t".into())), &mut out, &mut errors));
        assert_eq!(errors.len(), 1);
        let other = queue("b", "g1", 0, 1);
        assert!(matches!(s.seek(&other, 1), Err(ClientError::InvalidArgument(_))));
        assert!(matches!(s.seek(&a0, -1), Err(ClientError::InvalidArgument(_))));
    }

    #[test]
    fn commits_cover_moved_positions_only() {
        let (a0, a1) = (queue("a", "g1", 0, 1), queue("a", "g2", 0, 1));
        let mut s = Assignment::default();
        s.replace(vec![a0.clone(), a1.clone()], &FilterExpression::All);
        s.resolved(&a0, Some(4), 4);
        s.resolved(&a1, None, 0);
        let pending: Vec<_> = s.to_commit().into_iter().map(|(q, o)| (q.key(), o)).collect();
        assert_eq!(
            pending,
            [("g2:0".to_owned(), 0)],
            "a start never committed is committed"
        );
        s.committed(&a1, 0);
        assert!(s.to_commit().is_empty());
        s.apply(pulled(&a0, 4, 2), &mut Vec::new(), &mut Vec::new());
        assert_eq!(s.to_commit().len(), 1);
        s.committed(&a0, 6);
        assert!(s.to_commit().is_empty());
    }

    #[test]
    fn reassigning_keeps_the_positions_of_queues_kept() {
        let (a0, a1, b0) = (
            queue("a", "g1", 0, 1),
            queue("a", "g1", 1, 1),
            queue("b", "g1", 0, 1),
        );
        let mut s = Assignment::default();
        s.set_topic("a", vec![a0.clone(), a1.clone()], &FilterExpression::All);
        s.set_topic("b", vec![b0.clone()], &FilterExpression::All);
        s.seek(&a0, 7).expect("seek");
        s.seek(&b0, 3).expect("seek");
        let tags = FilterExpression::tag("x").expect("tag");
        s.set_topic("a", vec![a0.clone()], &tags);
        assert_eq!(s.queues().len(), 2, "a1 is gone, b0 stays");
        assert_eq!((s.position(&a0), s.position(&b0)), (Some(7), Some(3)));
        assert_eq!(
            s.targets().iter().find(|t| t.0 == a0).map(|t| t.1.clone()),
            Some(tags)
        );
        assert_eq!(s.topics().into_iter().collect::<Vec<_>>(), ["a", "b"]);
        s.remove_topic("b");
        assert_eq!(s.position(&b0), None);
        s.replace(vec![a0.clone(), b0.clone()], &FilterExpression::All);
        assert_eq!((s.position(&a0), s.position(&b0)), (Some(7), None));
        let moved = TopicRoute {
            topic: "a".into(),
            queues: vec![queue("a", "g1", 0, 2), queue("a", "g1", 1, 2)],
        };
        s.update_route(&moved);
        assert_eq!(s.queues()[0].endpoints, ["127.0.0.1:2"]);
        assert_eq!(s.queues().len(), 2, "assigned, not subscribed: no queue added");
        assert!(!s.is_empty());
    }

    #[test]
    fn subscribed_topics_gain_the_queues_their_route_gains_and_lose_none() {
        let (a0, a1, a2) = (
            queue("a", "g1", 0, 1),
            queue("a", "g1", 1, 1),
            queue("a", "g2", 0, 1),
        );
        let mut s = Assignment::default();
        s.set_topic("a", vec![a0.clone(), a1.clone()], &FilterExpression::All);
        s.seek(&a1, 4).expect("seek");
        let grown = TopicRoute {
            topic: "a".into(),
            queues: vec![a0.clone(), a2.clone()],
        };
        s.update_route(&grown);
        assert_eq!(s.queues().len(), 3, "a2 added, a1 kept");
        assert_eq!((s.position(&a1), s.position(&a2)), (Some(4), None));
        assert_eq!(s.unresolved().len(), 2);
        s.remove_topic("a");
        s.update_route(&grown);
        assert!(s.is_empty(), "unsubscribed: nothing comes back");
    }
}
