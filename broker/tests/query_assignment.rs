//! QueryAssignment against a real single-node group on loopback: push consumers join
//! with their Telemetry stream, share the queues, hand them over only after letting go,
//! and a consumer whose stream closes (its process died) leaves at once.

mod node_common;

use std::time::Duration;
use std::time::Instant;

use node_common::res;
use openraft::ServerState;
use raftmq_broker::command::MessageKind;
use raftmq_broker::node::Node;
use raftmq_proto::prost_types;
use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::Code;
use raftmq_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use tokio::sync::mpsc;
use tonic::Request;
use tonic::transport::Channel;

const TOPIC: &str = "jobs";
const GROUP: &str = "GID_workers";

fn as_client<T>(msg: T, client: &str, holding: Option<&str>) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("x-mq-client-id", client.parse().expect("ascii"));
    if let Some(h) = holding {
        r.metadata_mut()
            .insert("x-raftmq-holding", h.parse().expect("ascii"));
    }
    r
}

fn push_settings() -> pb::TelemetryCommand {
    pb::TelemetryCommand {
        status: None,
        command: Some(pb::telemetry_command::Command::Settings(pb::Settings {
            client_type: Some(pb::ClientType::PushConsumer as i32),
            pub_sub: Some(pb::settings::PubSub::Subscription(pb::Subscription {
                group: Some(res(GROUP)),
                ..Default::default()
            })),
            ..Default::default()
        })),
    }
}

/// Opens a push consumer's Telemetry stream; dropping the sender closes it.
async fn join(
    client: &mut MessagingServiceClient<Channel>,
    id: &str,
) -> anyhow::Result<(
    mpsc::Sender<pb::TelemetryCommand>,
    tonic::Streaming<pb::TelemetryCommand>,
)> {
    let (tx, rx) = mpsc::channel(4);
    tx.send(push_settings()).await?;
    let outbound = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let mut replies = client
        .telemetry(as_client(outbound, id, None))
        .await?
        .into_inner();
    // The settings reply means the stream (and the membership) is registered.
    tokio::time::timeout(Duration::from_secs(5), replies.message()).await??;
    Ok((tx, replies))
}

async fn ask(
    client: &mut MessagingServiceClient<Channel>,
    id: &str,
    holding: Option<&str>,
) -> anyhow::Result<(i32, Vec<i32>)> {
    let req = pb::QueryAssignmentRequest {
        topic: Some(res(TOPIC)),
        group: Some(res(GROUP)),
        endpoints: None,
    };
    let resp = client
        .query_assignment(as_client(req, id, holding))
        .await?
        .into_inner();
    let code = resp.status.map_or(0, |s| s.code);
    let mut ids: Vec<i32> = resp
        .assignments
        .iter()
        .filter_map(|a| a.message_queue.as_ref().map(|q| q.id))
        .collect();
    ids.sort_unstable();
    Ok((code, ids))
}

/// The status code of a one-message receive of queue `id` (popping that queue only).
async fn receive_code(
    client: &mut MessagingServiceClient<Channel>,
    who: &str,
    id: i32,
) -> anyhow::Result<i32> {
    let req = pb::ReceiveMessageRequest {
        group: Some(res(GROUP)),
        message_queue: Some(pb::MessageQueue {
            topic: Some(res(TOPIC)),
            id,
            ..Default::default()
        }),
        filter_expression: None,
        batch_size: 1,
        invisible_duration: Some(prost_types::Duration {
            seconds: 30,
            nanos: 0,
        }),
        auto_renew: false,
        long_polling_timeout: Some(prost_types::Duration {
            seconds: 0,
            nanos: 100_000_000,
        }),
        ..Default::default()
    };
    let mut r = as_client(req, who, None);
    r.metadata_mut()
        .insert("x-raftmq-queue", "only".parse().expect("ascii"));
    let mut stream = client.receive_message(r).await?.into_inner();
    let mut code = 0;
    while let Some(item) = stream.message().await? {
        if let Some(pb::receive_message_response::Content::Status(s)) = item.content {
            code = s.code;
        }
    }
    Ok(code)
}

fn csv(ids: &[i32]) -> String {
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_share_queues_and_a_dead_one_leaves_at_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = node_common::config(
        "broker-q",
        dir.path(),
        format!("127.0.0.1:{}", raftmq_testkit::free_port()?),
        format!("127.0.0.1:{}", raftmq_testkit::free_port()?),
    );
    let url = format!("http://{}", config.client_addr);
    let node = Node::start(config).await?;
    node.broker()
        .raft
        .wait(Some(Duration::from_secs(20)))
        .state(ServerState::Leader, "single node leads")
        .await?;
    node_common::create_topic(node.broker(), TOPIC, 4, MessageKind::Normal).await?;
    let mut c = MessagingServiceClient::connect(url.clone()).await?;

    // Asking is a sign of life: the first asker is a member and gets every queue.
    let (code, q) = ask(&mut c, "a@1", None).await?;
    assert_eq!((code, q), (Code::Ok as i32, vec![0, 1, 2, 3]));
    let req = pb::QueryAssignmentRequest {
        topic: Some(res("nothere")),
        group: Some(res(GROUP)),
        endpoints: None,
    };
    let resp = c
        .query_assignment(as_client(req, "a@1", None))
        .await?
        .into_inner();
    assert_eq!(resp.status.map(|s| s.code), Some(Code::TopicNotFound as i32));

    let (a_stream, _a_replies) = join(&mut c, "a@1").await?;
    let (code, a) = ask(&mut c, "a@1", Some("")).await?;
    assert_eq!((code, a.clone()), (Code::Ok as i32, vec![0, 1, 2, 3]));

    // b joins: its share (2, 3) moves only once a lets go of it.
    let mut c2 = MessagingServiceClient::connect(url.clone()).await?;
    let (b_stream, _b_replies) = join(&mut c2, "b@1").await?;
    assert_eq!(ask(&mut c2, "b@1", Some("")).await?.1, Vec::<i32>::new());
    assert_eq!(ask(&mut c, "a@1", Some(&csv(&a))).await?.1, [0, 1]);
    assert_eq!(
        ask(&mut c2, "b@1", Some("")).await?.1,
        Vec::<i32>::new(),
        "a still drains 2, 3"
    );
    assert_eq!(ask(&mut c, "a@1", Some("0,1")).await?.1, [0, 1]);
    assert_eq!(ask(&mut c2, "b@1", Some("")).await?.1, [2, 3]);

    // The broker fences receives: b may pop its own queue, not a's.
    assert_eq!(
        receive_code(&mut c2, "b@1", 2).await?,
        Code::MessageNotFound as i32
    );
    assert_eq!(receive_code(&mut c2, "b@1", 0).await?, Code::Forbidden as i32);
    assert_eq!(receive_code(&mut c2, "b@1", 9).await?, Code::BadRequest as i32);

    // a's process dies: its stream closes; b gets every queue once the departure grace
    // (3 s, for streams that break and reopen) has passed.
    drop(a_stream);
    drop(c);
    let gone = Instant::now();
    loop {
        let (_, b) = ask(&mut c2, "b@1", Some("2,3")).await?;
        if b == [0, 1, 2, 3] {
            break;
        }
        assert!(
            gone.elapsed() < Duration::from_secs(5),
            "a never left: b has {b:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "a's queues moved to b {:?} after its stream closed",
        gone.elapsed()
    );
    drop(b_stream);
    node.shutdown(Duration::from_secs(2)).await;
    Ok(())
}
