//! QueryRoute, Telemetry, Heartbeat, NotifyClientTermination, PullMessage and the offset
//! calls against a real single-node broker group serving its client port on loopback
//! (ports chosen at run time), through a gRPC client.

mod node_common;

use std::time::Duration;
use std::time::Instant;

use futures_util::StreamExt;
use node_common::message;
use node_common::res;
use openraft::ServerState;
use raftmq_broker::command::MessageKind;
use raftmq_broker::message::StoredMessage;
use raftmq_broker::node::Node;
use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::Code;
use raftmq_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use raftmq_proto::rocketmq::v2::pull_message_response::Content;
use tonic::Request;
use tonic::transport::Channel;

const TOPIC: &str = "orders";
const GROUP: &str = "GID_pull";
const CLIENT_ID: &str = "test-client@1";
/// The message group of the sends, which puts them all on one queue.
const ONE_QUEUE: &str = "all-on-one-queue";

fn mq(id: i32) -> pb::MessageQueue {
    pb::MessageQueue {
        topic: Some(res(TOPIC)),
        id,
        ..Default::default()
    }
}

fn with_client_id<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("x-mq-client-id", CLIENT_ID.parse().expect("ascii"));
    r
}

struct Harness {
    node: Option<Node>,
    client: MessagingServiceClient<Channel>,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let config = node_common::config(
            "broker-t",
            dir.path(),
            format!("127.0.0.1:{}", raftmq_testkit::free_port()?),
            format!("127.0.0.1:{}", raftmq_testkit::free_port()?),
        );
        let client_url = format!("http://{}", config.client_addr);
        let node = Node::start(config).await?;
        node.broker()
            .raft
            .wait(Some(Duration::from_secs(20)))
            .state(ServerState::Leader, "single node leads")
            .await?;
        let client = MessagingServiceClient::connect(client_url).await?;
        let h = Self {
            node: Some(node),
            client,
            _dir: dir,
        };
        h.create_topic(TOPIC, 2, MessageKind::Normal).await?;
        Ok(h)
    }

    /// Shuts the node down (a test that panics leaves it to `Drop`).
    async fn stop(mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown(Duration::from_secs(2)).await;
        }
    }

    fn node(&self) -> &Node {
        self.node.as_ref().expect("running")
    }

    async fn create_topic(&self, name: &str, queues: u32, kind: MessageKind) -> anyhow::Result<()> {
        node_common::create_topic(self.node().broker(), name, queues, kind).await
    }

    /// Sends one message with `tag` and returns its queue offset.
    async fn send(&mut self, id: &str, tag: &str) -> anyhow::Result<i64> {
        let m = message(TOPIC, id, Some(tag), Some(ONE_QUEUE), format!("body of {id}"));
        let resp = self
            .client
            .send_message(pb::SendMessageRequest { messages: vec![m] })
            .await?
            .into_inner();
        let entry = resp.entries.first().cloned().unwrap_or_default();
        anyhow::ensure!(
            entry.status.map(|s| s.code) == Some(Code::Ok as i32),
            "send failed: {resp:?}"
        );
        Ok(entry.offset)
    }

    fn queue_of_group(&self) -> i32 {
        raftmq_broker::service::send_message::group_queue(ONE_QUEUE, 2) as i32
    }

    async fn pull(&mut self, queue: i32, offset: i64, batch: i32, tags: &str, poll_ms: u64) -> Pulled {
        let req = pb::PullMessageRequest {
            group: Some(res(GROUP)),
            message_queue: Some(mq(queue)),
            offset,
            batch_size: batch,
            filter_expression: Some(pb::FilterExpression {
                r#type: pb::FilterType::Tag as i32,
                expression: tags.into(),
            }),
            long_polling_timeout: Some(raftmq_broker::message::duration(poll_ms)),
        };
        let mut req = Request::new(req);
        req.set_timeout(Duration::from_secs(10));
        let stream = self.client.pull_message(req).await.expect("pull").into_inner();
        let mut out = Pulled::default();
        for item in stream.collect::<Vec<_>>().await {
            match item.expect("item").content {
                Some(Content::Status(s)) => out.status.push(s.code),
                Some(Content::Message(m)) => out.ids.push(m.system_properties.expect("sys").message_id),
                Some(Content::NextOffset(n)) => out.next.push(n),
                other => panic!("not a decoded item: {other:?}"),
            }
        }
        out
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(node) = self.node.take() {
            drop(tokio::spawn(node.shutdown(Duration::from_secs(1))));
        }
    }
}

/// The client's side of a telemetry stream: what is sent on the sender goes out on the stream.
fn outbound() -> (
    tokio::sync::mpsc::Sender<pb::TelemetryCommand>,
    impl futures_util::Stream<Item = pb::TelemetryCommand> + Send + 'static,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::TelemetryCommand>(4);
    let outbound = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    (tx, outbound)
}

/// Sends `settings` on a telemetry stream and returns the status and settings of the reply.
async fn exchange_settings(
    tx: &tokio::sync::mpsc::Sender<pb::TelemetryCommand>,
    replies: &mut tonic::Streaming<pb::TelemetryCommand>,
    settings: pb::Settings,
) -> anyhow::Result<(Option<pb::Status>, pb::Settings)> {
    tx.send(pb::TelemetryCommand {
        status: None,
        command: Some(pb::telemetry_command::Command::Settings(settings)),
    })
    .await?;
    let reply = tokio::time::timeout(Duration::from_secs(5), replies.message())
        .await??
        .expect("a reply");
    let Some(pb::telemetry_command::Command::Settings(s)) = reply.command else {
        panic!("settings expected");
    };
    Ok((reply.status, s))
}

#[derive(Debug, Default)]
struct Pulled {
    status: Vec<i32>,
    ids: Vec<String>,
    next: Vec<i64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_list_every_queue_on_broker_zero_at_the_leader() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let req = pb::QueryRouteRequest {
        topic: Some(res(TOPIC)),
        endpoints: None,
    };
    let resp = h.client.query_route(req).await?.into_inner();
    assert_eq!(resp.status.map(|s| s.code), Some(Code::Ok as i32));
    assert_eq!(
        resp.message_queues.iter().map(|q| q.id).collect::<Vec<_>>(),
        [0, 1]
    );
    let q = &resp.message_queues[0];
    assert_eq!(q.permission, pb::Permission::ReadWrite as i32);
    assert_eq!(q.accept_message_types, [pb::MessageType::Normal as i32]);
    let broker = q.broker.as_ref().expect("broker");
    assert_eq!((broker.name.as_str(), broker.id), ("broker-t", 0));
    let addr = &broker.endpoints.as_ref().expect("endpoints").addresses[0];
    assert_eq!(
        format!("{}:{}", addr.host, addr.port),
        h.node().broker().client_addr()
    );

    let unknown = pb::QueryRouteRequest {
        topic: Some(res("nope")),
        endpoints: None,
    };
    let resp = h.client.query_route(unknown).await?.into_inner();
    assert_eq!(resp.status.map(|s| s.code), Some(Code::TopicNotFound as i32));
    let illegal = pb::QueryRouteRequest {
        topic: Some(res("no spaces")),
        endpoints: None,
    };
    let resp = h.client.query_route(illegal).await?.into_inner();
    assert_eq!(resp.status.map(|s| s.code), Some(Code::IllegalTopic as i32));
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_answers_settings_and_registers_the_client() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let (tx, outbound) = outbound();
    // The response (headers) arrives before the client sent anything.
    let resp = tokio::time::timeout(
        Duration::from_secs(5),
        h.client.telemetry(with_client_id(outbound)),
    )
    .await??;
    let mut replies = resp.into_inner();
    let settings = pb::Settings {
        client_type: Some(pb::ClientType::SimpleConsumer as i32),
        pub_sub: Some(pb::settings::PubSub::Subscription(pb::Subscription {
            group: Some(res(GROUP)),
            fifo: Some(true),
            ..Default::default()
        })),
        ..Default::default()
    };
    let (status, s) = exchange_settings(&tx, &mut replies, settings).await?;
    assert_eq!(status.map(|s| s.code), Some(Code::Ok as i32));
    assert!(matches!(
        s.backoff_policy.and_then(|p| p.strategy),
        Some(pb::retry_policy::Strategy::CustomizedBackoff(_))
    ));
    let info = h.node().broker().clients.get(CLIENT_ID).expect("registered");
    assert!(info.fifo());

    let hb = h
        .client
        .heartbeat(with_client_id(pb::HeartbeatRequest::default()))
        .await?
        .into_inner();
    assert_eq!(hb.status.map(|s| s.code), Some(Code::Ok as i32));
    let hb = h
        .client
        .heartbeat(pb::HeartbeatRequest::default())
        .await?
        .into_inner();
    assert_eq!(hb.status.map(|s| s.code), Some(Code::ClientIdRequired as i32));

    let bye = pb::NotifyClientTerminationRequest {
        group: Some(res(GROUP)),
    };
    let resp = h
        .client
        .notify_client_termination(with_client_id(bye))
        .await?
        .into_inner();
    assert_eq!(resp.status.map(|s| s.code), Some(Code::Ok as i32));
    assert!(h.node().broker().clients.get(CLIENT_ID).is_none());

    drop(tx);
    let end = tokio::time::timeout(Duration::from_secs(5), replies.message()).await?;
    assert!(
        matches!(end, Ok(None)),
        "the stream ends when the client closes it: {end:?}"
    );
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_read_filter_and_long_poll() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let q = h.queue_of_group();
    for (i, tag) in ["a", "b", "a"].iter().enumerate() {
        assert_eq!(h.send(&format!("m{i}"), tag).await?, i as i64);
    }
    let p = h.pull(q, 0, 10, "*", 0).await;
    assert_eq!(
        (p.status, p.ids, p.next),
        (
            vec![Code::Ok as i32],
            vec!["m0".into(), "m1".into(), "m2".into()],
            vec![3]
        )
    );
    let p = h.pull(q, 0, 1, "*", 0).await;
    assert_eq!((p.ids, p.next), (vec!["m0".to_owned()], vec![1]));
    let p = h.pull(q, 0, 10, "a", 0).await;
    assert_eq!((p.ids, p.next), (vec!["m0".to_owned(), "m2".to_owned()], vec![3]));
    let p = h.pull(q, 1, 10, "c", 0).await;
    assert_eq!(
        (p.status, p.next),
        (vec![Code::MessageNotFound as i32], vec![3]),
        "skipped to the end"
    );
    let p = h.pull(q, 7, 10, "*", 0).await;
    assert_eq!((p.status, p.next), (vec![Code::IllegalOffset as i32], vec![3]));
    let p = h.pull(q, 0, 0, "*", 0).await;
    assert_eq!(p.status, [Code::BadRequest as i32]);
    let p = h.pull(9, 0, 1, "*", 0).await;
    assert_eq!(p.status, [Code::BadRequest as i32]);

    // A long poll at the end returns as soon as a message arrives.
    let sender = {
        let mut client = h.client.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let m = message(TOPIC, "late", Some("a"), Some(ONE_QUEUE), b"late");
            client
                .send_message(pb::SendMessageRequest { messages: vec![m] })
                .await
        })
    };
    let started = Instant::now();
    let p = h.pull(q, 3, 10, "*", 5_000).await;
    assert_eq!((p.ids, p.next), (vec!["late".to_owned()], vec![4]));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "woken by the send: {:?}",
        started.elapsed()
    );
    sender.await??;

    // A long poll with nothing arriving ends at its timeout.
    let started = Instant::now();
    let p = h.pull(q, 4, 10, "*", 400).await;
    assert_eq!((p.status, p.next), (vec![Code::MessageNotFound as i32], vec![4]));
    assert!(started.elapsed() >= Duration::from_millis(350));
    h.stop().await;
    Ok(())
}

/// A pull near its queue's end is answered from memory (the apply leaves what it stored in
/// the commit log's read cache); one further behind than `MEMORY_TAIL` goes to the blocking
/// pool. Both give the same messages and next offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_near_the_end_and_far_behind_give_the_same_answers() -> anyhow::Result<()> {
    use raftmq_broker::service::pull_message::MEMORY_TAIL;
    let mut h = Harness::start().await?;
    let q = h.queue_of_group();
    let total = (MEMORY_TAIL / 100 + 2) * 100;
    for first in (0..total).step_by(100) {
        let messages = (first..first + 100)
            .map(|i| {
                message(
                    TOPIC,
                    &format!("m{i}"),
                    Some("a"),
                    Some(ONE_QUEUE),
                    format!("body {i}"),
                )
            })
            .collect();
        let resp = h
            .client
            .send_message(pb::SendMessageRequest { messages })
            .await?
            .into_inner();
        anyhow::ensure!(
            resp.entries
                .iter()
                .all(|e| e.status.as_ref().map(|s| s.code) == Some(Code::Ok as i32)),
            "send failed: {:?}",
            resp.status
        );
    }
    let broker = h.node().broker();
    let last = broker.sm.read_cq(TOPIC, q as u32, total - 1, 1)?;
    let cached = broker.read_cached_record(last[0].log_index, last[0].slot)?;
    let cached = cached.map(|r| StoredMessage::decode(&r)).transpose()?;
    assert_eq!(
        cached.map(|m| m.msg_id),
        Some(format!("m{}", total - 1)),
        "the newest message is in the read cache"
    );
    let ids = |from: u64, to: u64| (from..to).map(|i| format!("m{i}")).collect::<Vec<_>>();
    for from in [0, 7, total - MEMORY_TAIL - 1, total - MEMORY_TAIL, total - 20] {
        let p = h.pull(q, from as i64, 32, "*", 0).await;
        let to = (from + 32).min(total);
        assert_eq!(
            (p.status, p.ids, p.next),
            (vec![Code::Ok as i32], ids(from, to), vec![to as i64]),
            "pull from {from}"
        );
    }
    let p = h.pull(q, total as i64, 32, "*", 0).await;
    assert_eq!(
        (p.status, p.next),
        (vec![Code::MessageNotFound as i32], vec![total as i64])
    );
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_commit_read_back_and_resolve_by_policy() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let q = h.queue_of_group();
    let get = pb::GetOffsetRequest {
        group: Some(res(GROUP)),
        message_queue: Some(mq(q)),
    };
    let resp = h.client.get_offset(get.clone()).await?.into_inner();
    assert_eq!(resp.status.map(|s| s.code), Some(Code::OffsetNotFound as i32));
    let update = pb::UpdateOffsetRequest {
        group: Some(res(GROUP)),
        message_queue: Some(mq(q)),
        offset: 2,
    };
    let resp = h.client.update_offset(update.clone()).await?.into_inner();
    assert_eq!(resp.status.map(|s| s.code), Some(Code::Ok as i32));
    let resp = h.client.get_offset(get).await?.into_inner();
    assert_eq!(
        (resp.status.map(|s| s.code), resp.offset),
        (Some(Code::Ok as i32), 2)
    );
    let resp = h
        .client
        .update_offset(pb::UpdateOffsetRequest {
            offset: -1,
            ..update.clone()
        })
        .await?;
    assert_eq!(
        resp.into_inner().status.map(|s| s.code),
        Some(Code::IllegalOffset as i32)
    );
    let bad_group = pb::UpdateOffsetRequest {
        group: Some(res("bad group")),
        ..update
    };
    let resp = h.client.update_offset(bad_group).await?.into_inner();
    assert_eq!(
        resp.status.map(|s| s.code),
        Some(Code::IllegalConsumerGroup as i32)
    );

    h.send("x0", "a").await?;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let between = raftmq_broker::context::now_ms();
    tokio::time::sleep(Duration::from_millis(20)).await;
    h.send("x1", "a").await?;
    let query = |policy: pb::QueryOffsetPolicy, ts: Option<u64>| pb::QueryOffsetRequest {
        message_queue: Some(mq(q)),
        query_offset_policy: policy as i32,
        timestamp: ts.map(raftmq_broker::message::timestamp),
    };
    let cases = [
        (query(pb::QueryOffsetPolicy::Beginning, None), Code::Ok, 0),
        (query(pb::QueryOffsetPolicy::End, None), Code::Ok, 2),
        (query(pb::QueryOffsetPolicy::Timestamp, Some(0)), Code::Ok, 0),
        (
            query(pb::QueryOffsetPolicy::Timestamp, Some(between)),
            Code::Ok,
            1,
        ),
        (
            query(pb::QueryOffsetPolicy::Timestamp, Some(between + 3_600_000)),
            Code::Ok,
            2,
        ),
        (query(pb::QueryOffsetPolicy::Timestamp, None), Code::BadRequest, 0),
    ];
    for (req, code, offset) in cases {
        let resp = h.client.query_offset(req.clone()).await?.into_inner();
        assert_eq!(
            (resp.status.map(|s| s.code), resp.offset),
            (Some(code as i32), offset),
            "{req:?}"
        );
    }
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_timestamps_are_answered_not_panicked_on() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let q = h.queue_of_group();
    h.send("t0", "a").await?;
    h.send("t1", "a").await?;
    let at = |seconds, nanos| pb::QueryOffsetRequest {
        message_queue: Some(mq(q)),
        query_offset_policy: pb::QueryOffsetPolicy::Timestamp as i32,
        timestamp: Some(raftmq_proto::prost_types::Timestamp { seconds, nanos }),
    };
    let cases = [
        (at(i64::MAX, 999_999_999), 2),
        (at(i64::MAX, -999_999_999), 2),
        (at(i64::MIN, -999_999_999), 0),
        (at(i64::MIN, 999_999_999), 0),
        (at(0, -1), 0),
        (at(-1, 0), 0),
    ];
    for (req, offset) in cases {
        let resp = h.client.query_offset(req.clone()).await?.into_inner();
        assert_eq!(
            (resp.status.map(|s| s.code), resp.offset),
            (Some(Code::Ok as i32), offset),
            "{req:?}"
        );
    }
    // A send with an absurd born timestamp is stored (the time saturates).
    let mut m = message_with_keys("late-born", Vec::new());
    if let Some(s) = m.system_properties.as_mut() {
        s.born_timestamp = Some(raftmq_proto::prost_types::Timestamp {
            seconds: i64::MAX,
            nanos: 999_999_999,
        });
    }
    assert_eq!(send_code(&mut h, m).await?, Code::Ok as i32);
    h.stop().await;
    Ok(())
}

fn message_with_keys(id: &str, keys: Vec<String>) -> pb::Message {
    let mut m = message(TOPIC, id, None, None, b"body");
    if let Some(s) = m.system_properties.as_mut() {
        s.keys = keys;
    }
    m
}

async fn send_code(h: &mut Harness, m: pb::Message) -> anyhow::Result<i32> {
    let resp = h
        .client
        .send_message(pb::SendMessageRequest { messages: vec![m] })
        .await?
        .into_inner();
    Ok(resp.status.map_or(0, |s| s.code))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_metadata_is_refused_at_validation() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    // The review's send: 33,000 keys of 1 KiB (a 33 MiB entry).
    let keys = vec!["k".repeat(1024); 33_000];
    let code = send_code(&mut h, message_with_keys("many-keys", keys)).await?;
    assert_eq!(code, Code::IllegalMessageKey as i32);
    let keys = vec!["k".repeat(1024); 20];
    let code = send_code(&mut h, message_with_keys("big-keys", keys)).await?;
    assert_eq!(code, Code::MessagePropertiesTooLarge as i32);
    // The node still leads and takes sends.
    let keys = vec!["k".repeat(100); 64];
    let code = send_code(&mut h, message_with_keys("fine", keys)).await?;
    assert_eq!(code, Code::Ok as i32);
    assert!(h.node().broker().is_leader());
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_of_a_fifo_topic_are_told_to_consume_in_order() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    h.create_topic("fifo-orders", 2, MessageKind::Fifo).await?;
    let (tx, outbound) = outbound();
    let mut replies = h.client.telemetry(with_client_id(outbound)).await?.into_inner();
    for (topic, fifo) in [(TOPIC, false), ("fifo-orders", true)] {
        let settings = pb::Settings {
            client_type: Some(pb::ClientType::PushConsumer as i32),
            pub_sub: Some(pb::settings::PubSub::Subscription(pb::Subscription {
                group: Some(res(GROUP)),
                subscriptions: vec![pb::SubscriptionEntry {
                    topic: Some(res(topic)),
                    expression: None,
                }],
                ..Default::default()
            })),
            ..Default::default()
        };
        let (_, s) = exchange_settings(&tx, &mut replies, settings).await?;
        let Some(pb::settings::PubSub::Subscription(sub)) = s.pub_sub else {
            panic!("subscription expected");
        };
        assert_eq!(sub.fifo, Some(fifo), "{topic}");
        let info = h.node().broker().clients.get(CLIENT_ID).expect("registered");
        assert_eq!(info.fifo(), fifo, "{topic}");
    }
    drop(tx);
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_may_choose_the_queue_with_the_queue_header() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let on_queue = |id: &str, queue: i32| {
        let mut m = message(TOPIC, id, None, None, "chosen");
        if let Some(sp) = m.system_properties.as_mut() {
            sp.queue_id = queue;
        }
        let mut r = Request::new(pb::SendMessageRequest { messages: vec![m] });
        r.metadata_mut()
            .insert("x-raftmq-queue", "client".parse().expect("ascii"));
        r
    };
    for i in 0..3 {
        let resp = h
            .client
            .send_message(on_queue(&format!("q1-{i}"), 1))
            .await?
            .into_inner();
        assert_eq!(resp.status.map(|s| s.code), Some(Code::Ok as i32));
    }
    let sm = &h.node().broker().sm;
    assert_eq!(
        (sm.next_offset(TOPIC, 0)?, sm.next_offset(TOPIC, 1)?),
        (0, 3),
        "all on queue 1"
    );
    let resp = h.client.send_message(on_queue("bad", 7)).await?.into_inner();
    let st = resp.status.expect("status");
    assert_eq!(st.code, Code::BadRequest as i32, "{}", st.message);
    assert!(st.message.contains("queue 7"), "{}", st.message);
    h.stop().await;
    Ok(())
}
