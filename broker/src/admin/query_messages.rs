//! QueryMessages: a topic's messages by message id or key, from this node's index.
//!
//! Answered by whichever member is asked, from its own index and log: a follower's
//! answer may lack the messages it has not applied yet. The query first waits (up to
//! [`CATCH_UP_WAIT`]) for the index to cover what this node had applied when the query
//! came, so that on the leader a message whose send returned is found.

use std::sync::Arc;

use openraft::async_runtime::WatchReceiver;
use raftmq_proto::raftmq::admin::v1 as pb;

use super::errors::AdminError;
use crate::command::Rejection;
use crate::context::Broker;
use crate::error::BrokerError;
use crate::message::StoredMessage;
use crate::msg_index::entry::KeyKind;
use crate::msg_index::query::CATCH_UP_WAIT;
use crate::msg_index::query::Found;
use crate::msg_index::query::Query;
use crate::msg_index::query::caught_up;
use crate::sm::keys::validate_topic_name;

/// Messages returned when the request does not say.
const DEFAULT_MAX: usize = 32;

pub async fn handle(
    broker: &Arc<Broker>,
    req: &pb::QueryMessagesRequest,
) -> Result<pb::QueryMessagesResponse, AdminError> {
    let query = to_query(req)?;
    let Some(index) = broker.index.clone() else {
        return Err(AdminError::Precondition(
            "this node runs with its message index turned off (index.enabled = false)".into(),
        ));
    };
    if broker.sm.topic(&query.topic)?.is_none() {
        return Err(BrokerError::Rejected(Rejection::UnknownTopic(query.topic)).into());
    }
    let applied = broker
        .raft
        .data_metrics()
        .borrow_watched()
        .last_applied
        .map_or(0, |l| l.index);
    let indexed_through = caught_up(&index, applied, CATCH_UP_WAIT).await;
    let b = broker.clone();
    let found = tokio::task::spawn_blocking(move || {
        let read = |log_index, slot| read_message(&b, log_index, slot);
        crate::msg_index::query::run(&index, read, &b.sm, &query)
    })
    .await
    .map_err(|e| BrokerError::Internal(format!("query task failed: {e}")))??;
    Ok(pb::QueryMessagesResponse {
        messages: found.into_iter().map(to_wire).collect(),
        indexed_through,
    })
}

fn to_query(req: &pb::QueryMessagesRequest) -> Result<Query, AdminError> {
    validate_topic_name(&req.topic).map_err(AdminError::Invalid)?;
    let (kind, key) = match &req.by {
        Some(pb::query_messages_request::By::MessageId(id)) => (KeyKind::MessageId, id),
        Some(pb::query_messages_request::By::Key(key)) => (KeyKind::Key, key),
        None => {
            return Err(AdminError::Invalid(
                "give a message id or a key to look for".into(),
            ));
        }
    };
    let end_ms = if req.end_time_ms == 0 {
        u64::MAX
    } else {
        req.end_time_ms
    };
    let query = Query {
        topic: req.topic.clone(),
        kind,
        key: key.clone(),
        max: if req.max == 0 {
            DEFAULT_MAX
        } else {
            req.max as usize
        },
        begin_ms: req.begin_time_ms,
        end_ms,
    };
    // The checks shared with every caller of the query (empty key, reversed time range).
    query.validate().map_err(|e| AdminError::Invalid(e.to_string()))?;
    Ok(query)
}

/// The message at (log index, slot); `None` if this node's log no longer holds it.
fn read_message(broker: &Broker, log_index: u64, slot: u32) -> Result<Option<StoredMessage>, BrokerError> {
    match broker.log.read_slot(log_index, slot) {
        Ok(record) => StoredMessage::decode(&record).map(Some),
        Err(e) if !e.is_fatal() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn to_wire(f: Found) -> pb::FoundMessage {
    let m = f.message;
    pb::FoundMessage {
        message_id: m.msg_id,
        topic: m.topic,
        queue_id: f.queue_id,
        queue_offset: f.offset,
        tag: m.tag.unwrap_or_default(),
        keys: m.keys,
        message_group: m.message_group.unwrap_or_default(),
        store_time_ms: f.store_time_ms,
        born_time_ms: m.born_timestamp_ms,
        born_host: m.born_host,
        properties: m.properties.into_iter().collect(),
        body: m.body,
        log_index: f.log_index,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(by: Option<pb::query_messages_request::By>) -> pb::QueryMessagesRequest {
        pb::QueryMessagesRequest {
            topic: "orders".into(),
            by,
            max: 0,
            begin_time_ms: 0,
            end_time_ms: 0,
        }
    }

    #[test]
    fn requests_become_queries_and_bad_ones_are_refused() {
        use pb::query_messages_request::By;
        let q = to_query(&req(Some(By::Key("k1".into())))).expect("query");
        assert_eq!(
            (q.kind, q.key.as_str(), q.max, q.end_ms),
            (KeyKind::Key, "k1", DEFAULT_MAX, u64::MAX)
        );
        let q = to_query(&req(Some(By::MessageId("01AB".into())))).expect("query");
        assert_eq!(q.kind, KeyKind::MessageId);
        assert!(matches!(to_query(&req(None)), Err(AdminError::Invalid(_))));
        assert!(matches!(
            to_query(&req(Some(By::Key(String::new())))),
            Err(AdminError::Invalid(_))
        ));
        let mut bad = req(Some(By::Key("k".into())));
        bad.topic = "bad topic!".into();
        assert!(matches!(to_query(&bad), Err(AdminError::Invalid(_))));
        let mut bad = req(Some(By::Key("k".into())));
        (bad.begin_time_ms, bad.end_time_ms) = (10, 5);
        assert!(matches!(to_query(&bad), Err(AdminError::Invalid(_))));
    }
}
