//! GroupProgress: how far a consumer group has read each queue.
//!
//! Answered from this node's applied state, without asking the leader: on a follower the
//! offsets may trail the leader's by the entries it has not applied yet (normally a few
//! milliseconds' worth). Pop consumption counts too: the state machine keeps a group's
//! committed offset equal to its lowest unacknowledged popped offset.

use raftmq_proto::raftmq::admin::v1 as pb;

use super::errors::AdminError;
use crate::command::Rejection;
use crate::command::TopicConfig;
use crate::error::BrokerError;
use crate::sm::StateMachine;
use crate::sm::keys::validate_group_name;
use crate::sm::keys::validate_topic_name;

pub fn handle(
    sm: &StateMachine,
    req: &pb::GroupProgressRequest,
) -> Result<pb::GroupProgressResponse, AdminError> {
    validate_group_name(&req.group).map_err(AdminError::Invalid)?;
    let mut queues = Vec::new();
    for topic in topics(sm, &req.topic)? {
        for queue_id in 0..topic.queues {
            queues.push(queue_progress(sm, &req.group, &topic.name, queue_id)?);
        }
    }
    Ok(pb::GroupProgressResponse { queues })
}

/// The asked topic, or every topic (ordered by name) when none is asked.
fn topics(sm: &StateMachine, topic: &str) -> Result<Vec<TopicConfig>, AdminError> {
    if topic.is_empty() {
        return Ok(sm.topics()?);
    }
    validate_topic_name(topic).map_err(AdminError::Invalid)?;
    match sm.topic(topic)? {
        Some(t) => Ok(vec![t]),
        None => Err(BrokerError::Rejected(Rejection::UnknownTopic(topic.to_owned())).into()),
    }
}

fn queue_progress(
    sm: &StateMachine,
    group: &str,
    topic: &str,
    queue_id: u32,
) -> Result<pb::QueueProgress, AdminError> {
    let broker_offset = sm.next_offset(topic, queue_id)?;
    let consumer_offset = sm.committed_offset(group, topic, queue_id)?;
    let inflight = sm
        .pop_state(group, topic, queue_id)?
        .map_or(0, |p| p.inflight.len());
    Ok(progress(
        topic,
        queue_id,
        broker_offset,
        consumer_offset,
        inflight,
    ))
}

/// One queue's progress from plain values. Queues start at offset 0 and are never trimmed
/// at the front, so a group without an offset lags by the whole queue.
pub fn progress(
    topic: &str,
    queue_id: u32,
    broker_offset: u64,
    consumer_offset: Option<u64>,
    inflight: usize,
) -> pb::QueueProgress {
    pb::QueueProgress {
        topic: topic.to_owned(),
        queue_id,
        broker_offset,
        consumer_offset,
        lag: broker_offset.saturating_sub(consumer_offset.unwrap_or(0)),
        inflight: u32::try_from(inflight).unwrap_or(u32::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_broker_minus_consumer_offset() {
        let p = progress("t", 2, 10, Some(4), 3);
        assert_eq!((p.topic.as_str(), p.queue_id, p.broker_offset), ("t", 2, 10));
        assert_eq!((p.consumer_offset, p.lag, p.inflight), (Some(4), 6, 3));
    }

    #[test]
    fn a_group_without_offset_lags_by_the_whole_queue() {
        let p = progress("t", 0, 7, None, 0);
        assert_eq!((p.consumer_offset, p.lag), (None, 7));
        assert_eq!(progress("t", 0, 0, None, 0).lag, 0);
    }

    #[test]
    fn lag_never_underflows_and_inflight_saturates() {
        assert_eq!(progress("t", 0, 3, Some(5), 0).lag, 0);
        assert_eq!(progress("t", 0, 3, Some(3), usize::MAX).inflight, u32::MAX);
    }
}
