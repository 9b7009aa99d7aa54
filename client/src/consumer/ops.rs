//! The consumer calls on one broker group that the consumers share: receive from a queue,
//! acknowledge, change invisibility (simple and push consumer), and the offset calls —
//! read the group's committed offset, find an offset by [`StartFrom`], commit one (pull
//! and push consumer). Each goes through [`GroupCalls`] (the group's addresses in turn).

use std::sync::Arc;
use std::time::Duration;

use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use raftmq_proto::rocketmq::v2::receive_message_response::Content;
use tokio::time::Instant;
use tonic::transport::Channel;

use super::FilterExpression;
use super::GroupCalls;
use super::ReceivedMessage;
use super::check_status;
use super::duration;
use super::leader_hint;
use super::pull::StartFrom;
use super::received::timestamp;
use crate::error::ClientError;
use crate::error::Result;
use crate::route::MessageQueue;
use crate::rpc::call_error;

type Stub = MessagingServiceClient<Channel>;

/// One consumer group's calls.
#[derive(Debug)]
pub(crate) struct GroupOps<'a> {
    pub calls: GroupCalls<'a>,
    pub group: pb::Resource,
    pub namespace: &'a str,
    /// Receive from the asked queue only (a push consumer owns its queues); otherwise the
    /// broker may hand out messages of the topic's other queues when this one is empty.
    pub only_requested: bool,
}

/// The request header that asks a broker to pop the requested queue only.
const QUEUE_HEADER: &str = "x-raftmq-queue";

impl GroupOps<'_> {
    fn topic(&self, name: &str) -> Option<pb::Resource> {
        Some(pb::Resource {
            resource_namespace: self.namespace.to_owned(),
            name: name.to_owned(),
        })
    }

    /// Long-polls `queue` for up to `batch` messages for up to `await_for`; they stay
    /// invisible for `invisible`. Messages whose body fails its digest are left out (they
    /// stay invisible and come back, up to the dead-letter queue).
    pub async fn receive(
        &self,
        queue: &MessageQueue,
        filter: &FilterExpression,
        batch: u32,
        invisible: Duration,
        await_for: Duration,
    ) -> Result<Vec<ReceivedMessage>> {
        let req = pb::ReceiveMessageRequest {
            group: Some(self.group.clone()),
            message_queue: Some(queue.to_wire()),
            filter_expression: Some(filter.to_wire()),
            batch_size: i32::try_from(batch).unwrap_or(i32::MAX),
            invisible_duration: Some(duration(invisible)),
            auto_renew: false,
            ..Default::default()
        };
        let timeout = self.calls.rpc.config().request_timeout;
        let deadline = Instant::now() + timeout + await_for;
        let wire = self
            .calls
            .call(&queue.broker, &queue.endpoints, deadline, |addr, left| {
                let mut req = req.clone();
                req.long_polling_timeout = Some(duration(left.saturating_sub(timeout)));
                self.receive_at(addr, req, left)
            })
            .await?;
        let mut out = Vec::with_capacity(wire.len());
        let endpoints: Arc<[String]> = Arc::from(queue.endpoints.as_slice());
        for m in wire {
            let m = ReceivedMessage::from_wire(m, &queue.broker, &endpoints);
            if m.corrupted {
                tracing::error!(message_id = %m.message_id, queue = %queue.key(), offset = m.queue_offset,
                    "body does not match its digest; left invisible to be delivered again");
                continue;
            }
            out.push(m);
        }
        Ok(out)
    }

    /// One receive at `addr`: the messages (none for an empty poll).
    async fn receive_at(
        &self,
        addr: String,
        req: pb::ReceiveMessageRequest,
        left: Duration,
    ) -> Result<(Vec<pb::Message>, Option<String>)> {
        let rpc = self.calls.rpc;
        let mut client = rpc.messaging(&addr)?;
        let mut request = rpc.request(req, left);
        if self.only_requested {
            request
                .metadata_mut()
                .insert(QUEUE_HEADER, tonic::metadata::MetadataValue::from_static("only"));
        }
        let resp = client
            .receive_message(request)
            .await
            .map_err(|s| call_error(&s, &addr, false))?;
        let hint = leader_hint(resp.metadata());
        let mut stream = resp.into_inner();
        let mut status = None;
        let mut messages = Vec::new();
        loop {
            match stream.message().await {
                Ok(Some(item)) => match item.content {
                    Some(Content::Status(s)) => status = Some(s),
                    Some(Content::Message(m)) => messages.push(m),
                    Some(Content::DeliveryTimestamp(_)) | None => {}
                },
                Ok(None) => break,
                // The messages that came whole are delivered; the rest become visible again.
                Err(_) if !messages.is_empty() => break,
                Err(s) => return Err(call_error(&s, &addr, false)),
            }
        }
        match status.as_ref().map(|s| s.code) {
            Some(c) if c == pb::Code::MessageNotFound as i32 => Ok((Vec::new(), hint)),
            _ => check_status(status.as_ref(), &addr).map(|()| (messages, hint)),
        }
    }

    /// Acknowledges `messages` (all of one topic and broker group) in one call; one result
    /// per message. A handle that is no longer current is a broker error with
    /// `INVALID_RECEIPT_HANDLE`.
    pub async fn ack(&self, messages: &[&ReceivedMessage]) -> Result<Vec<Result<()>>> {
        let Some(first) = messages.first() else {
            return Ok(Vec::new());
        };
        let entries = messages
            .iter()
            .map(|m| {
                Ok(pb::AckMessageEntry {
                    message_id: m.message_id.clone(),
                    receipt_handle: receipt_handle(m)?.to_owned(),
                    lite_topic: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let req = pb::AckMessageRequest {
            group: Some(self.group.clone()),
            topic: self.topic(&first.topic),
            entries,
        };
        let n = messages.len();
        let call = |mut c: Stub, r| async move { c.ack_message(r).await };
        let answer = move |resp: pb::AckMessageResponse, addr: &str| {
            if resp.entries.len() != n {
                check_status(resp.status.as_ref(), addr)?;
                return Err(ClientError::Broker {
                    code: pb::Code::InternalError,
                    message: format!("{} answers to {n} acks", resp.entries.len()),
                    endpoint: addr.to_owned(),
                });
            }
            Ok(resp
                .entries
                .into_iter()
                .map(|e| check_status(e.status.as_ref(), addr))
                .collect::<Vec<_>>())
        };
        self.calls
            .unary(&first.broker, &first.endpoints, true, req, call, answer)
            .await
    }

    /// Makes `message` invisible for `d` from now; returns its new receipt handle.
    pub async fn change_invisible(&self, message: &ReceivedMessage, d: Duration) -> Result<Option<String>> {
        let req = pb::ChangeInvisibleDurationRequest {
            group: Some(self.group.clone()),
            topic: self.topic(&message.topic),
            receipt_handle: receipt_handle(message)?.to_owned(),
            invisible_duration: Some(duration(d)),
            message_id: message.message_id.clone(),
            lite_topic: None,
            suspend: None,
        };
        let call = |mut c: Stub, r| async move { c.change_invisible_duration(r).await };
        let answer = |resp: pb::ChangeInvisibleDurationResponse, addr: &str| {
            check_status(resp.status.as_ref(), addr)?;
            Ok(Some(resp.receipt_handle).filter(|h| !h.is_empty()))
        };
        self.calls
            .unary(&message.broker, &message.endpoints, true, req, call, answer)
            .await
    }
}

impl GroupOps<'_> {
    /// The group's committed offset of `queue` (GetOffset); None when it never committed
    /// one (nor received from the queue: receiving keeps the committed offset at the first
    /// unacknowledged message).
    pub async fn committed_offset(&self, queue: &MessageQueue) -> Result<Option<i64>> {
        let req = pb::GetOffsetRequest {
            group: Some(self.group.clone()),
            message_queue: Some(queue.to_wire()),
        };
        let call = |mut c: Stub, r| async move { c.get_offset(r).await };
        let answer = |resp: pb::GetOffsetResponse, addr: &str| {
            if resp.status.as_ref().map(|s| s.code) == Some(pb::Code::OffsetNotFound as i32) {
                return Ok(None);
            }
            check_status(resp.status.as_ref(), addr).map(|()| Some(resp.offset))
        };
        self.calls
            .unary(&queue.broker, &queue.endpoints, false, req, call, answer)
            .await
    }

    /// The offset of `queue` that `at` names (QueryOffset).
    pub async fn query_offset(&self, queue: &MessageQueue, at: StartFrom) -> Result<i64> {
        let (policy, time) = match at {
            StartFrom::First => (pb::QueryOffsetPolicy::Beginning, None),
            StartFrom::Last => (pb::QueryOffsetPolicy::End, None),
            StartFrom::Timestamp(t) => (pb::QueryOffsetPolicy::Timestamp, Some(timestamp(t))),
        };
        let req = pb::QueryOffsetRequest {
            message_queue: Some(queue.to_wire()),
            query_offset_policy: policy as i32,
            timestamp: time,
        };
        let call = |mut c: Stub, r| async move { c.query_offset(r).await };
        let answer = |resp: pb::QueryOffsetResponse, addr: &str| {
            check_status(resp.status.as_ref(), addr).map(|()| resp.offset)
        };
        self.calls
            .unary(&queue.broker, &queue.endpoints, false, req, call, answer)
            .await
    }

    /// Commits `offset` (the next message to consume) for `queue` (UpdateOffset;
    /// idempotent, so retried freely).
    pub async fn commit_offset(&self, queue: &MessageQueue, offset: i64) -> Result<()> {
        let req = pb::UpdateOffsetRequest {
            group: Some(self.group.clone()),
            message_queue: Some(queue.to_wire()),
            offset,
        };
        let call = |mut c: Stub, r| async move { c.update_offset(r).await };
        let answer = |resp: pb::UpdateOffsetResponse, addr: &str| check_status(resp.status.as_ref(), addr);
        self.calls
            .unary(&queue.broker, &queue.endpoints, false, req, call, answer)
            .await
    }

    /// Where the group starts on `queue`: its committed offset, else the offset `at`
    /// names. Returns the committed offset (None if there is none) and the start.
    pub async fn start_position(&self, queue: &MessageQueue, at: StartFrom) -> Result<(Option<i64>, i64)> {
        let committed = self.committed_offset(queue).await?;
        let start = match committed {
            Some(o) => o,
            None => self.query_offset(queue, at).await?,
        };
        Ok((committed, start))
    }
}

/// The receipt handle of a received (not pulled) message.
pub(crate) fn receipt_handle(message: &ReceivedMessage) -> Result<&str> {
    message.receipt_handle.as_deref().ok_or_else(|| {
        ClientError::InvalidArgument(format!(
            "message {} has no receipt handle (pulled messages are committed, not acknowledged)",
            message.message_id
        ))
    })
}
