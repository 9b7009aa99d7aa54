//! Consumer offsets: UpdateOffset commits a group's offset on a queue through Raft (on the
//! leader; [`super::Messaging`] relays it there), GetOffset reads it back, QueryOffset finds
//! a queue offset by policy — the first available, the end, or the first message stored at
//! or after a time (a binary search over the consume queue, one entry read per probe).
//!
//! Also the request checks the offset handlers share with PullMessage.

use std::sync::Arc;

use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::Code;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use super::status;
use crate::command::Command;
use crate::command::CommandResult;
use crate::command::Header;
use crate::command::Rejection;
use crate::command::TopicConfig;
use crate::context::Broker;
use crate::error::BrokerError;
use crate::error::BrokerResult;
use crate::error::InvalidCode;
use crate::message::timestamp_ms;
use crate::sm::keys;

#[tracing::instrument(name = "update_offset", skip_all, fields(offset = req.get_ref().offset))]
pub async fn update_offset(
    broker: &Arc<Broker>,
    req: Request<pb::UpdateOffsetRequest>,
) -> Result<Response<pb::UpdateOffsetResponse>, Status> {
    let st = match commit(broker, req.into_inner()).await {
        Ok(()) => status::ok(),
        Err(e) => {
            tracing::debug!(error = %e, "offset update refused");
            status::from_error(&e)
        }
    };
    Ok(Response::new(pb::UpdateOffsetResponse { status: Some(st) }))
}

async fn commit(broker: &Broker, req: pb::UpdateOffsetRequest) -> BrokerResult<()> {
    let group = group_name(req.group.as_ref())?;
    let (topic, queue_id) = queue_of(broker, req.message_queue.as_ref())?;
    let offset = u64::try_from(req.offset).map_err(|_| {
        BrokerError::invalid(
            InvalidCode::IllegalOffset,
            format!("offset {} is negative", req.offset),
        )
    })?;
    let header = Header::CommitOffset {
        group,
        topic: topic.name,
        queue_id,
        offset,
    };
    let cmd = Command::control(header).map_err(|e| BrokerError::Internal(e.to_string()))?;
    match broker.write(cmd).await? {
        CommandResult::Done => Ok(()),
        CommandResult::Rejected(r) => Err(BrokerError::Rejected(r)),
        other => Err(BrokerError::Internal(format!(
            "unexpected offset commit result {other:?}"
        ))),
    }
}

#[tracing::instrument(name = "get_offset", skip_all)]
pub async fn get_offset(
    broker: &Arc<Broker>,
    req: Request<pb::GetOffsetRequest>,
) -> Result<Response<pb::GetOffsetResponse>, Status> {
    let req = req.into_inner();
    // A consumer decides where a new group starts from "no offset": that answer must not
    // come from a new leader whose applied state lags the log.
    let barrier = broker.read_barrier().await;
    let found = barrier
        .and_then(|()| group_name(req.group.as_ref()))
        .and_then(|group| {
            let (topic, queue_id) = queue_of(broker, req.message_queue.as_ref())?;
            Ok(broker.sm.committed_offset(&group, &topic.name, queue_id)?)
        });
    let (st, offset) = match found {
        Ok(Some(offset)) => (status::ok(), offset_i64(offset)),
        Ok(None) => (
            status::status(
                Code::OffsetNotFound,
                "the group has committed no offset on this queue",
            ),
            0,
        ),
        Err(e) => (status::from_error(&e), 0),
    };
    Ok(Response::new(pb::GetOffsetResponse {
        status: Some(st),
        offset,
    }))
}

#[tracing::instrument(name = "query_offset", skip_all, fields(policy = req.get_ref().query_offset_policy))]
pub async fn query_offset(
    broker: &Arc<Broker>,
    req: Request<pb::QueryOffsetRequest>,
) -> Result<Response<pb::QueryOffsetResponse>, Status> {
    let (st, offset) = match find_offset(broker, &req.into_inner()) {
        Ok(offset) => (status::ok(), offset_i64(offset)),
        Err(e) => (status::from_error(&e), 0),
    };
    Ok(Response::new(pb::QueryOffsetResponse {
        status: Some(st),
        offset,
    }))
}

fn find_offset(broker: &Broker, req: &pb::QueryOffsetRequest) -> BrokerResult<u64> {
    let (topic, queue_id) = queue_of(broker, req.message_queue.as_ref())?;
    let end = broker.sm.next_offset(&topic.name, queue_id)?;
    let policy = pb::QueryOffsetPolicy::try_from(req.query_offset_policy).map_err(|_| {
        BrokerError::invalid(
            InvalidCode::BadRequest,
            format!("unknown query offset policy {}", req.query_offset_policy),
        )
    })?;
    match policy {
        pb::QueryOffsetPolicy::Beginning => first_available(broker, &topic.name, queue_id, end),
        pb::QueryOffsetPolicy::End => Ok(end),
        pb::QueryOffsetPolicy::Timestamp => {
            let ts = req.timestamp.as_ref().map(timestamp_ms).ok_or_else(|| {
                BrokerError::invalid(InvalidCode::BadRequest, "the TIMESTAMP policy needs a timestamp")
            })?;
            partition_point(0, end, |o| {
                let entry = broker.sm.read_cq(&topic.name, queue_id, o, 1)?;
                Ok(entry.first().is_some_and(|e| e.store_time_ms >= ts))
            })
        }
    }
}

fn offset_i64(offset: u64) -> i64 {
    i64::try_from(offset).unwrap_or(i64::MAX)
}

/// The consumer group a request names; it must be a valid group name.
pub(crate) fn group_name(group: Option<&pb::Resource>) -> BrokerResult<String> {
    let name = group.map(|g| g.name.as_str()).unwrap_or("");
    keys::validate_group_name(name).map_err(|e| BrokerError::invalid(InvalidCode::IllegalGroup, e))?;
    Ok(name.to_owned())
}

/// The topic (as it exists now) and the queue id a request names. An invalid topic name is
/// `ILLEGAL_TOPIC`, an unknown topic `TOPIC_NOT_FOUND`, a queue id the topic does not have
/// `BAD_REQUEST`.
pub(crate) fn queue_of(broker: &Broker, mq: Option<&pb::MessageQueue>) -> BrokerResult<(TopicConfig, u32)> {
    let mq = mq
        .ok_or_else(|| BrokerError::invalid(InvalidCode::BadRequest, "the request names no message queue"))?;
    let name = mq.topic.as_ref().map(|t| t.name.as_str()).unwrap_or("");
    keys::validate_topic_name(name).map_err(|e| BrokerError::invalid(InvalidCode::IllegalTopic, e))?;
    let config = broker
        .sm
        .topic(name)?
        .ok_or_else(|| BrokerError::Rejected(Rejection::UnknownTopic(name.to_owned())))?;
    let queue_id = check_queue_id(&config, mq.id)?;
    Ok((config, queue_id))
}

fn check_queue_id(config: &TopicConfig, id: i32) -> BrokerResult<u32> {
    u32::try_from(id)
        .ok()
        .filter(|q| *q < config.queues.max(1))
        .ok_or_else(|| {
            BrokerError::invalid(
                InvalidCode::BadRequest,
                format!(
                    "topic {} has no queue {id} (it has {})",
                    config.name,
                    config.queues.max(1)
                ),
            )
        })
}

/// The lowest offset of a queue still held (below it, retention purged the messages);
/// `end` (the queue's next offset) when it holds none.
pub(crate) fn first_available(broker: &Broker, topic: &str, queue_id: u32, end: u64) -> BrokerResult<u64> {
    partition_point(0, end, |o| {
        Ok(!broker.sm.read_cq(topic, queue_id, o, 1)?.is_empty())
    })
}

/// The smallest `x` in `lo..hi` for which `pred(x)` holds, `hi` if none does; `pred` must
/// be false then true over the range (a partitioned range). `pred(lo)` is probed first, so
/// a range true from its start costs one probe; otherwise about log2(hi - lo) probes.
pub fn partition_point<E>(lo: u64, hi: u64, mut pred: impl FnMut(u64) -> Result<bool, E>) -> Result<u64, E> {
    if lo >= hi || pred(lo)? {
        return Ok(lo.min(hi));
    }
    // Invariant: pred(lo) is false, pred(hi) is true (or hi is the end).
    let (mut lo, mut hi) = (lo, hi);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if pred(mid)? {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::MessageKind;
    use crate::command::Permission;

    fn search(lo: u64, hi: u64, pred: impl Fn(u64) -> bool) -> (u64, usize) {
        let mut probes = 0;
        let r = partition_point::<()>(lo, hi, |x| {
            probes += 1;
            assert!((lo..hi).contains(&x), "probe {x} outside {lo}..{hi}");
            Ok(pred(x))
        });
        (r.expect("infallible"), probes)
    }

    #[test]
    fn the_partition_point_is_found_in_logarithmic_probes() {
        assert_eq!(search(0, 0, |_| true).0, 0);
        assert_eq!(search(5, 3, |_| true).0, 3);
        assert_eq!(search(0, 10, |_| true), (0, 1));
        assert_eq!(search(0, 10, |_| false).0, 10);
        assert_eq!(search(0, 1, |_| false).0, 1);
        for split in 0..=40 {
            assert_eq!(search(0, 40, |x| x >= split).0, split, "split {split}");
            assert_eq!(
                search(7, 40, |x| x >= split).0,
                split.max(7),
                "split {split} from 7"
            );
        }
        let (at, probes) = search(0, 1 << 40, |x| x >= 123_456_789);
        assert_eq!(at, 123_456_789);
        assert!(probes <= 42, "{probes} probes");
    }

    #[test]
    fn a_timestamp_maps_to_the_first_message_stored_at_or_after_it() {
        // Store times of offsets 0..6; offsets 0 and 1 were purged (no entry).
        let times: [Option<u64>; 6] = [None, None, Some(100), Some(200), Some(200), Some(300)];
        let at = |ts: u64| search(0, 6, |o| times[o as usize].is_some_and(|t| t >= ts)).0;
        assert_eq!(at(0), 2, "before everything: the first available");
        assert_eq!(at(150), 3);
        assert_eq!(at(200), 3, "the first of equal times");
        assert_eq!(at(300), 5);
        assert_eq!(at(301), 6, "after everything: the end");
    }

    #[test]
    fn errors_stop_the_search() {
        assert_eq!(
            partition_point(0, 100, |x| if x > 10 { Err("boom") } else { Ok(false) }),
            Err("boom")
        );
    }

    #[test]
    fn queue_ids_must_exist_and_groups_be_valid() {
        let t = TopicConfig {
            name: "t".into(),
            queues: 4,
            permission: Permission::ReadWrite,
            kind: MessageKind::Normal,
        };
        assert_eq!(check_queue_id(&t, 3).expect("queue 3"), 3);
        for bad in [4, -1, i32::MAX] {
            let e = check_queue_id(&t, bad).expect_err("no such queue");
            assert_eq!(status::code_of(&e), Code::BadRequest, "{e}");
        }
        let res = |n: &str| pb::Resource {
            resource_namespace: String::new(),
            name: n.into(),
        };
        assert_eq!(group_name(Some(&res("GID_a"))).expect("valid"), "GID_a");
        for bad in [None, Some(res("")), Some(res("a b"))] {
            let e = group_name(bad.as_ref()).expect_err("invalid group");
            assert_eq!(status::code_of(&e), Code::IllegalConsumerGroup);
        }
    }
}
