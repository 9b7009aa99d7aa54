//! SendMessage: validates the messages, picks each one's queue (a FIFO message by its
//! message group, so one group always lands on one queue; others round-robin), proposes
//! them as one Raft entry and answers once it is committed and applied — i.e. on disk on a
//! majority of the group.

use std::sync::Arc;

use raftmq_proto::rocketmq::v2 as pb;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use super::status;
use crate::command::CommandResult;
use crate::command::MessageMeta;
use crate::command::Permission;
use crate::context::Broker;
use crate::error::BrokerError;
use crate::error::BrokerResult;
use crate::error::InvalidCode;
use crate::message::StoredMessage;

#[tracing::instrument(name = "send_message", skip_all, fields(messages = req.get_ref().messages.len()))]
pub async fn handle(
    broker: &Arc<Broker>,
    req: Request<pb::SendMessageRequest>,
) -> Result<Response<pb::SendMessageResponse>, Status> {
    let client_queues = req
        .metadata()
        .get(QUEUE_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("client"));
    let messages = req.into_inner().messages;
    let ids: Vec<String> = messages
        .iter()
        .map(|m| {
            m.system_properties
                .as_ref()
                .map(|s| s.message_id.clone())
                .unwrap_or_default()
        })
        .collect();
    let requested: Vec<Option<u32>> = messages
        .iter()
        .map(|m| {
            let q = m.system_properties.as_ref().map_or(0, |s| s.queue_id);
            client_queues.then(|| u32::try_from(q).unwrap_or(u32::MAX))
        })
        .collect();
    let resp = match send(broker, messages, &requested, &ids).await {
        Ok(entries) => pb::SendMessageResponse {
            status: Some(status::ok()),
            entries,
        },
        Err(e) => {
            tracing::debug!(error = %e, "send refused");
            let st = status::from_error(&e);
            // Never an empty entry list: one failed entry per message (at least one).
            let mut entries: Vec<pb::SendResultEntry> = ids
                .into_iter()
                .map(|message_id| pb::SendResultEntry {
                    status: Some(st.clone()),
                    message_id,
                    ..Default::default()
                })
                .collect();
            if entries.is_empty() {
                entries.push(pb::SendResultEntry {
                    status: Some(st.clone()),
                    ..Default::default()
                });
            }
            pb::SendMessageResponse {
                status: Some(st),
                entries,
            }
        }
    };
    Ok(Response::new(resp))
}

/// The request header by which a client says it chose each message's queue
/// (`system_properties.queue_id`): `x-raftmq-queue: client`. Without it the broker places
/// messages itself (queue ids are 0 by default in the protocol, so the field alone cannot
/// tell a choice of queue 0 from no choice).
pub const QUEUE_HEADER: &str = "x-raftmq-queue";

async fn send(
    broker: &Arc<Broker>,
    messages: Vec<pb::Message>,
    requested: &[Option<u32>],
    ids: &[String],
) -> BrokerResult<Vec<pb::SendResultEntry>> {
    let stored = validate(broker, messages)?;
    let metas = match placed(broker, &stored, requested) {
        // A leader elected a moment ago may not have applied everything committed yet
        // (after a crash its state machine is rebuilt from the log): look again once it
        // has, before calling a topic unknown.
        Err(BrokerError::Rejected(crate::command::Rejection::UnknownTopic(_))) => {
            broker.read_barrier().await?;
            placed(broker, &stored, requested)?
        }
        placed => placed?,
    };
    // The records are laid out by the batcher, straight into the entry's buffer.
    match broker.sends.send(broker, metas, stored).await? {
        CommandResult::Sent(positions) => Ok(ids
            .iter()
            .zip(positions)
            .map(|(id, p)| pb::SendResultEntry {
                status: Some(status::ok()),
                message_id: id.clone(),
                transaction_id: String::new(),
                offset: p.offset as i64,
                recall_handle: String::new(),
            })
            .collect()),
        CommandResult::Rejected(r) => Err(BrokerError::Rejected(r)),
        other => Err(BrokerError::Internal(format!("unexpected send result {other:?}"))),
    }
}

/// The batch's messages, each valid, the batch within its count and body limits.
fn validate(broker: &Broker, messages: Vec<pb::Message>) -> BrokerResult<Vec<StoredMessage>> {
    if messages.is_empty() {
        return Err(BrokerError::invalid(
            InvalidCode::BadRequest,
            "a send needs at least one message",
        ));
    }
    let limit = broker.config.max_batch_messages;
    if messages.len() > limit {
        return Err(BrokerError::invalid(
            InvalidCode::BadRequest,
            format!("{} messages in one send, at most {limit} allowed", messages.len()),
        ));
    }
    let max_body = broker.config.max_body_size;
    let stored = messages
        .into_iter()
        .map(|m| StoredMessage::from_wire(m, max_body))
        .collect::<BrokerResult<Vec<_>>>()?;
    let total: usize = stored.iter().map(|m| m.body.len()).sum();
    let max_total = max_body.saturating_mul(4);
    if total > max_total {
        return Err(BrokerError::invalid(
            InvalidCode::BodyTooLarge,
            format!("a batch of {total} body bytes, at most {max_total} allowed"),
        ));
    }
    Ok(stored)
}

/// Each message's queue (the one the client chose when it asked to choose, else a FIFO
/// message's by its group, the others round-robin).
fn placed(
    broker: &Broker,
    stored: &[StoredMessage],
    requested: &[Option<u32>],
) -> BrokerResult<Vec<MessageMeta>> {
    let mut metas = Vec::with_capacity(stored.len());
    let rr = broker.next_round_robin();
    // A batch usually names one topic: read each topic's config once.
    let mut queue_counts: std::collections::HashMap<&str, u32> = std::collections::HashMap::new();
    for (i, m) in stored.iter().enumerate() {
        let queues = match queue_counts.get(m.topic.as_str()) {
            Some(q) => *q,
            None => {
                let q = writable_queues(broker, &m.topic)?;
                queue_counts.insert(&m.topic, q);
                q
            }
        };
        let queue_id = match (requested.get(i).copied().flatten(), &m.message_group) {
            (Some(q), _) if q < queues => q,
            (Some(q), _) => {
                return Err(BrokerError::invalid(
                    InvalidCode::BadRequest,
                    format!("queue {q} is not a queue of topic {} (0..{queues})", m.topic),
                ));
            }
            (None, Some(g)) => group_queue(g, queues),
            (None, None) => (rr % u64::from(queues)) as u32,
        };
        metas.push(MessageMeta {
            topic: m.topic.clone(),
            queue_id,
            tag_hash: m.tag_hash(),
            // The id travels in the record; the header's copy fed an index no build keeps.
            msg_id: String::new(),
        });
    }
    Ok(metas)
}

/// The queue count of a topic that accepts sends (checked again, authoritatively, at apply).
fn writable_queues(broker: &Broker, topic: &str) -> BrokerResult<u32> {
    let config = broker
        .sm
        .topic(topic)?
        .ok_or_else(|| BrokerError::Rejected(crate::command::Rejection::UnknownTopic(topic.to_owned())))?;
    if !matches!(config.permission, Permission::Write | Permission::ReadWrite) {
        return Err(BrokerError::Rejected(crate::command::Rejection::NotWritable(
            topic.to_owned(),
        )));
    }
    Ok(config.queues.max(1))
}

/// The queue of a message group: a stable hash, so a group stays on one queue across
/// leaders and restarts (as long as the topic's queue count stays).
pub fn group_queue(group: &str, queues: u32) -> u32 {
    (crate::command::tag_hash(group) % u64::from(queues.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_group_always_maps_to_the_same_queue() {
        let q = group_queue("order-42", 8);
        assert!(q < 8);
        for _ in 0..10 {
            assert_eq!(group_queue("order-42", 8), q);
        }
        let spread: std::collections::BTreeSet<u32> =
            (0..200).map(|i| group_queue(&format!("g{i}"), 8)).collect();
        assert_eq!(spread.len(), 8, "groups spread over all queues");
    }
}
