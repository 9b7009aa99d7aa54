//! ReceiveMessage, AckMessage and ChangeInvisibleDuration against a real single-node broker
//! group (commit log, RocksDB state machine, openraft), calling the handlers directly.

mod node_common;

use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use futures_util::StreamExt;
use node_common::SingleNode;
use node_common::message;
use node_common::res;
use openraft::async_runtime::WatchReceiver;
use raftmq_broker::command::MessageKind;
use raftmq_broker::service::ack_message;
use raftmq_broker::service::change_invisible;
use raftmq_broker::service::forward_dlq;
use raftmq_broker::service::receive_message;
use raftmq_broker::service::send_message;
use raftmq_proto::prost_types;
use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::Code;
use raftmq_proto::rocketmq::v2::receive_message_response::Content;
use tonic::Request;

const GROUP: &str = "consume-test";
const TOPIC: &str = "orders";

struct Harness {
    node: SingleNode,
}

impl Harness {
    async fn start() -> anyhow::Result<Self> {
        let node = SingleNode::start(GROUP).await?;
        node.create_topic(TOPIC, 2, MessageKind::Normal).await?;
        Ok(Self { node })
    }

    async fn send(&self, id: &str, tag: &str) -> anyhow::Result<()> {
        let m = message(TOPIC, id, Some(tag), None, format!("body of {id}"));
        let req = pb::SendMessageRequest { messages: vec![m] };
        let resp = send_message::handle(&self.node.broker, Request::new(req))
            .await?
            .into_inner();
        anyhow::ensure!(
            resp.status.map(|s| s.code) == Some(Code::Ok as i32),
            "send failed"
        );
        Ok(())
    }

    async fn receive(&self, req: Request<pb::ReceiveMessageRequest>) -> Received {
        let stream = receive_message::handle(&self.node.broker, req)
            .await
            .expect("stream")
            .into_inner();
        let items: Vec<_> = stream.collect().await;
        let mut out = Received::default();
        for item in items {
            match item.expect("item").content {
                Some(Content::Status(s)) => out.statuses.push(s.code),
                Some(Content::Message(m)) => out.messages.push(m),
                Some(Content::DeliveryTimestamp(_)) => out.timestamps += 1,
                None => panic!("empty item"),
            }
        }
        out
    }

    async fn ack(&self, handles: &[&str]) -> pb::AckMessageResponse {
        let entries = handles
            .iter()
            .map(|h| pb::AckMessageEntry {
                message_id: "id".into(),
                receipt_handle: (*h).into(),
                lite_topic: None,
            })
            .collect();
        let req = pb::AckMessageRequest {
            group: Some(res("cg")),
            topic: Some(res(TOPIC)),
            entries,
        };
        ack_message::handle(&self.node.broker, Request::new(req))
            .await
            .expect("ack")
            .into_inner()
    }

    /// Makes the message of `handle` invisible for `ms` from now (0: a nack).
    async fn change_invisible(
        &self,
        handle: &str,
        ms: u64,
    ) -> Result<pb::ChangeInvisibleDurationResponse, tonic::Status> {
        let req = pb::ChangeInvisibleDurationRequest {
            group: Some(res("cg")),
            topic: Some(res(TOPIC)),
            receipt_handle: handle.into(),
            invisible_duration: Some(dur(ms)),
            message_id: String::new(),
            lite_topic: None,
            suspend: None,
        };
        let resp = change_invisible::handle(&self.node.broker, Request::new(req)).await?;
        Ok(resp.into_inner())
    }

    fn last_log_index(&self) -> Option<u64> {
        self.node.broker.raft.metrics().borrow_watched().last_log_index
    }
}

#[derive(Debug, Default)]
struct Received {
    statuses: Vec<i32>,
    messages: Vec<pb::Message>,
    timestamps: usize,
}

impl Received {
    fn handles(&self) -> Vec<String> {
        self.messages
            .iter()
            .map(|m| sys(m).receipt_handle.clone().expect("handle"))
            .collect()
    }
}

fn sys(m: &pb::Message) -> &pb::SystemProperties {
    m.system_properties.as_ref().expect("system properties")
}

fn dur(ms: u64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

fn receive_req(filter: &str, poll_ms: u64, invisible_ms: u64) -> Request<pb::ReceiveMessageRequest> {
    Request::new(pb::ReceiveMessageRequest {
        group: Some(res("cg")),
        message_queue: Some(pb::MessageQueue {
            topic: Some(res(TOPIC)),
            id: -1,
            ..Default::default()
        }),
        filter_expression: Some(pb::FilterExpression {
            r#type: pb::FilterType::Tag as i32,
            expression: filter.into(),
        }),
        batch_size: 32,
        invisible_duration: Some(dur(invisible_ms)),
        auto_renew: false,
        long_polling_timeout: Some(dur(poll_ms)),
        attempt_id: None,
    })
}

fn code(s: &Option<pb::Status>) -> Option<i32> {
    s.as_ref().map(|s| s.code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_received_acked_once_and_empty_polls_wait_without_writing() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    for (id, tag) in [("m1", "A"), ("m2", "B"), ("m3", "A")] {
        h.send(id, tag).await?;
    }
    let got = h.receive(receive_req("*", 1000, 30_000)).await;
    assert_eq!(got.statuses, vec![Code::Ok as i32]);
    assert_eq!((got.messages.len(), got.timestamps), (3, 1));
    for m in &got.messages {
        let s = sys(m);
        assert_eq!(s.delivery_attempt, Some(1));
        assert!(s.body_digest.as_ref().is_some_and(|d| !d.checksum.is_empty()));
        assert_eq!(m.topic.as_ref().map(|t| t.name.as_str()), Some(TOPIC));
    }

    // Nothing left: the poll waits for its whole window and proposes nothing.
    let before = h.last_log_index();
    let start = Instant::now();
    let empty = h.receive(receive_req("*", 600, 30_000)).await;
    let waited = start.elapsed();
    assert_eq!(empty.statuses, vec![Code::MessageNotFound as i32]);
    assert!(empty.messages.is_empty());
    assert!(
        waited >= Duration::from_millis(550) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    assert_eq!(h.last_log_index(), before, "an empty poll writes nothing");

    let handles = got.handles();
    let all: Vec<&str> = handles.iter().map(String::as_str).collect();
    let acked = h.ack(&all).await;
    assert_eq!(code(&acked.status), Some(Code::Ok as i32));
    assert_eq!(acked.entries.len(), 3);
    let again = h.ack(&[all[0], "not-a-handle"]).await;
    assert_eq!(code(&again.status), Some(Code::InvalidReceiptHandle as i32));
    h.send("m4", "A").await?;
    let m4 = h.receive(receive_req("*", 1000, 30_000)).await.handles();
    let mixed = h.ack(&[m4[0].as_str(), all[1]]).await;
    assert_eq!(code(&mixed.status), Some(Code::MultipleResults as i32));
    let codes: Vec<_> = mixed.entries.iter().map(|e| code(&e.status)).collect();
    assert_eq!(
        codes,
        vec![Some(Code::Ok as i32), Some(Code::InvalidReceiptHandle as i32)]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_wakes_on_a_send_and_ends_before_the_client_deadline() -> anyhow::Result<()> {
    let h = Arc::new(Harness::start().await?);
    let sender = h.clone();
    let send = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sender.send("late", "A").await
    });
    let start = Instant::now();
    let got = h.receive(receive_req("*", 10_000, 30_000)).await;
    send.await??;
    assert_eq!(got.messages.len(), 1);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "woken by the send: {:?}",
        start.elapsed()
    );

    // A 20 s poll with a 2.5 s deadline ends 2 s (the margin) before the deadline.
    let mut req = receive_req("*", 20_000, 30_000);
    req.set_timeout(Duration::from_millis(2_500));
    let start = Instant::now();
    let empty = h.receive(req).await;
    assert_eq!(empty.statuses, vec![Code::MessageNotFound as i32]);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_millis(2_000),
        "{waited:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_filters_and_changes_of_invisibility() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    for (id, tag) in [("a1", "A"), ("b1", "B"), ("c1", "C")] {
        h.send(id, tag).await?;
    }
    let got = h.receive(receive_req("A || C", 500, 30_000)).await;
    let mut ids: Vec<_> = got.messages.iter().map(|m| sys(m).message_id.clone()).collect();
    ids.sort();
    assert_eq!(ids, vec!["a1".to_owned(), "c1".to_owned()]);

    // A nack: visible again at once, redelivered as attempt 2; the first handle is stale.
    let first = got.handles()[0].clone();
    let resp = h.change_invisible(&first, 0).await?;
    assert_eq!(code(&resp.status), Some(Code::Ok as i32));
    assert_eq!(resp.receipt_handle, first);
    let again = h.receive(receive_req("*", 500, 30_000)).await;
    let redelivered: Vec<_> = again
        .messages
        .iter()
        .filter_map(|m| sys(m).delivery_attempt)
        .collect();
    assert!(redelivered.contains(&2), "{redelivered:?}");
    let stale = h.change_invisible(&first, 1000).await?;
    assert_eq!(code(&stale.status), Some(Code::InvalidReceiptHandle as i32));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_receives_get_a_single_status_with_their_code() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let mut bad_group = receive_req("*", 0, 30_000);
    bad_group.get_mut().group = Some(res("bad group"));
    let mut unknown_topic = receive_req("*", 0, 30_000);
    unknown_topic.get_mut().message_queue = Some(pb::MessageQueue {
        topic: Some(res("nope")),
        id: 0,
        ..Default::default()
    });
    let mut sql = receive_req("a > 1", 0, 30_000);
    if let Some(f) = sql.get_mut().filter_expression.as_mut() {
        f.r#type = pb::FilterType::Sql as i32;
    }
    let short = receive_req("*", 0, 1_000);
    let mut negative = receive_req("*", 0, 30_000);
    negative.get_mut().long_polling_timeout = Some(prost_types::Duration {
        seconds: -1,
        nanos: 0,
    });
    let cases = [
        (bad_group, Code::IllegalConsumerGroup),
        (unknown_topic, Code::TopicNotFound),
        (sql, Code::IllegalFilterExpression),
        (short, Code::IllegalInvisibleTime),
        (negative, Code::IllegalPollingTime),
    ];
    for (req, expected) in cases {
        let got = h.receive(req).await;
        assert_eq!(got.statuses, vec![expected as i32]);
        assert!(got.messages.is_empty());
    }
    let empty_ack = h.ack(&[]).await;
    assert_eq!(code(&empty_ack.status), Some(Code::BadRequest as i32));
    assert_eq!(empty_ack.entries.len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_wakes_when_an_inflight_message_becomes_visible_again() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    h.send("m1", "A").await?;
    let first = h.receive(receive_req("*", 500, 30_000)).await.handles();
    let resp = h.change_invisible(&first[0], 700).await?;
    assert_eq!(code(&resp.status), Some(Code::Ok as i32));
    let start = Instant::now();
    let again = h.receive(receive_req("*", 10_000, 30_000)).await;
    let waited = start.elapsed();
    assert_eq!(again.messages.len(), 1);
    assert_eq!(sys(&again.messages[0]).delivery_attempt, Some(2));
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_forwards_a_message_to_the_dead_letter_queue_once() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    h.send("m1", "A").await?;
    let handles = h.receive(receive_req("*", 500, 30_000)).await.handles();
    assert_eq!(handles.len(), 1);
    let forward = |handle: &str| pb::ForwardMessageToDeadLetterQueueRequest {
        group: Some(res("cg")),
        topic: Some(res(TOPIC)),
        receipt_handle: handle.into(),
        message_id: "m1".into(),
        delivery_attempt: 16,
        max_delivery_attempts: 16,
        lite_topic: None,
    };
    let call = |handle: &str| forward_dlq::handle(&h.node.broker, Request::new(forward(handle)));
    let resp = call(&handles[0]).await?.into_inner();
    assert_eq!(code(&resp.status), Some(Code::Ok as i32));
    assert_eq!(h.node.broker.sm.next_offset("%DLQ%cg", 0)?, 1);
    let dlq = h.node.broker.sm.read_cq("%DLQ%cg", 0, 0, 1)?;
    let original = h.node.broker.sm.read_cq(TOPIC, 0, 0, 1)?;
    let original = if original.is_empty() {
        h.node.broker.sm.read_cq(TOPIC, 1, 0, 1)?
    } else {
        original
    };
    assert_eq!(dlq, original, "the dead letter points at the original record");
    // The delivery is spent: neither a second forward nor an ack counts.
    let again = call(&handles[0]).await?.into_inner();
    assert_eq!(code(&again.status), Some(Code::InvalidReceiptHandle as i32));
    let acked = h.ack(&[handles[0].as_str()]).await;
    assert_eq!(code(&acked.status), Some(Code::InvalidReceiptHandle as i32));
    let garbage = call("r1.0.0.1").await?.into_inner();
    assert_eq!(code(&garbage.status), Some(Code::InvalidReceiptHandle as i32));
    let mut long_group = forward(&handles[0]);
    long_group.group = Some(res(&"g".repeat(123)));
    let refused = forward_dlq::handle(&h.node.broker, Request::new(long_group))
        .await?
        .into_inner();
    assert_eq!(code(&refused.status), Some(Code::IllegalConsumerGroup as i32));
    Ok(())
}
