//! AdminService against a real single-node broker group (commit log, RocksDB state machine,
//! openraft), calling the handlers directly: no client port is opened.

mod node_common;

use bytes::Bytes;
use node_common::SingleNode;
use raftmq_broker::admin::Admin;
use raftmq_broker::command::Command;
use raftmq_broker::command::CommandResult;
use raftmq_broker::command::Header;
use raftmq_broker::command::MessageMeta;
use raftmq_broker::forward::FORWARDED_HEADER;
use raftmq_proto::raftmq::admin::v1 as pb;
use raftmq_proto::raftmq::admin::v1::admin_service_server::AdminService;
use tonic::Code;
use tonic::Request;

const GROUP: &str = "admin-test";

/// A single-node group, initialized and leading, and its admin service.
/// (The admin service, holding the broker too, is dropped before the node's data folder.)
struct Harness {
    admin: Admin,
    node: SingleNode,
}

impl Harness {
    async fn start() -> anyhow::Result<Self> {
        let node = SingleNode::start(GROUP).await?;
        let admin = Admin::new(node.broker.clone());
        Ok(Self { admin, node })
    }

    async fn create(&self, name: &str, queues: u32, kind: pb::MessageKind) -> Result<(), tonic::Status> {
        let topic = pb::TopicSpec {
            name: name.into(),
            queues,
            permission: pb::Permission::Unspecified as i32,
            kind: kind as i32,
        };
        let req = Request::new(pb::CreateTopicRequest { topic: Some(topic) });
        self.admin.create_topic(req).await.map(|_| ())
    }

    async fn update(&self, name: &str, queues: u32, kind: pb::MessageKind) -> Result<(), tonic::Status> {
        self.update_perm(name, queues, kind, pb::Permission::ReadWrite)
            .await
    }

    async fn update_perm(
        &self,
        name: &str,
        queues: u32,
        kind: pb::MessageKind,
        permission: pb::Permission,
    ) -> Result<(), tonic::Status> {
        let topic = pb::TopicSpec {
            name: name.into(),
            queues,
            permission: permission as i32,
            kind: kind as i32,
        };
        let req = Request::new(pb::UpdateTopicRequest { topic: Some(topic) });
        self.admin.update_topic(req).await.map(|_| ())
    }

    async fn delete(&self, name: &str) -> Result<(), tonic::Status> {
        let req = Request::new(pb::DeleteTopicRequest { name: name.into() });
        self.admin.delete_topic(req).await.map(|_| ())
    }

    async fn list(&self) -> pb::ListTopicsResponse {
        let resp = self
            .admin
            .list_topics(Request::new(pb::ListTopicsRequest {}))
            .await;
        resp.expect("list topics").into_inner()
    }

    async fn progress(&self, group: &str, topic: &str) -> Result<pb::GroupProgressResponse, tonic::Status> {
        let req = pb::GroupProgressRequest {
            group: group.into(),
            topic: topic.into(),
        };
        Ok(self.admin.group_progress(Request::new(req)).await?.into_inner())
    }

    /// Stores `n` messages in a queue of a topic.
    async fn send(&self, topic: &str, queue_id: u32, n: usize) {
        let messages = (0..n)
            .map(|i| MessageMeta {
                topic: topic.into(),
                queue_id,
                tag_hash: 0,
                msg_id: format!("{topic}-{queue_id}-{i}-{}", rand_suffix()),
            })
            .collect();
        let records = vec![Bytes::from_static(b"body"); n];
        let header = Header::Send {
            store_time_ms: 1,
            messages,
        };
        let cmd = Command::new(header, records).expect("valid send");
        let result = self.node.broker.write(cmd).await.expect("send committed");
        assert!(matches!(result, CommandResult::Sent(_)), "{result:?}");
    }

    async fn commit_offset(&self, group: &str, topic: &str, queue_id: u32, offset: u64) {
        let header = Header::CommitOffset {
            group: group.into(),
            topic: topic.into(),
            queue_id,
            offset,
        };
        let result = self
            .node
            .broker
            .write(Command::control(header).expect("cmd"))
            .await;
        assert_eq!(result.expect("committed"), CommandResult::Done);
    }

    async fn stop(self) {
        self.node.stop().await;
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn code<T>(r: Result<T, tonic::Status>) -> Code {
    match r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_lifecycle() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    use pb::MessageKind::*;

    h.create("orders", 0, KindUnspecified).await?;
    assert_eq!(code(h.create("orders", 4, Normal).await), Code::AlreadyExists);
    assert_eq!(code(h.create("bad name", 4, Normal).await), Code::InvalidArgument);
    assert_eq!(code(h.create("x", 4_000, Normal).await), Code::InvalidArgument);
    let no_spec = h
        .admin
        .create_topic(Request::new(pb::CreateTopicRequest { topic: None }));
    assert_eq!(code(no_spec.await), Code::InvalidArgument);
    h.create("fifo", 2, Fifo).await?;

    let list = h.list().await;
    let names: Vec<&str> = list
        .topics
        .iter()
        .filter_map(|t| t.spec.as_ref())
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["fifo", "orders"]);
    let orders = &list.topics[1];
    let spec = orders.spec.clone().unwrap_or_default();
    assert_eq!(spec.queues, 8, "queues default to 8");
    assert_eq!(spec.permission, pb::Permission::ReadWrite as i32);
    assert_eq!(spec.kind, Normal as i32);
    let ids: Vec<u32> = orders.queues.iter().map(|q| q.queue_id).collect();
    assert_eq!(ids, (0..8).collect::<Vec<_>>());
    assert!(orders.queues.iter().all(|q| q.max_offset == 0));

    // Updates: queues only grow, unknown topics are not found, kinds change while empty.
    assert_eq!(code(h.update("orders", 4, Normal).await), Code::InvalidArgument);
    assert_eq!(code(h.update("orders", 0, Normal).await), Code::InvalidArgument);
    assert_eq!(code(h.update("nope", 4, Normal).await), Code::NotFound);
    h.update("orders", 10, Delay).await?;
    h.send("orders", 3, 2).await;
    assert_eq!(
        code(h.update("orders", 10, Normal).await),
        Code::FailedPrecondition
    );
    h.update_perm("orders", 12, Delay, pb::Permission::Read).await?;
    let list = h.list().await;
    let spec = list.topics[1].spec.clone().unwrap_or_default();
    assert_eq!(
        (spec.queues, spec.kind, spec.permission),
        (12, Delay as i32, pb::Permission::Read as i32)
    );
    assert_eq!(list.topics[1].queues[3].max_offset, 2);

    h.delete("orders").await?;
    assert_eq!(code(h.delete("orders").await), Code::NotFound);
    assert_eq!(code(h.delete("").await), Code::InvalidArgument);
    assert_eq!(h.list().await.topics.len(), 1);

    // A call relayed to the leader is served like any other.
    let mut req = Request::new(pb::DeleteTopicRequest { name: "fifo".into() });
    req.metadata_mut().insert(FORWARDED_HEADER, "1".parse()?);
    h.admin.delete_topic(req).await?;
    assert!(h.list().await.topics.is_empty());
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_status_of_a_single_leader() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    h.create("t", 1, pb::MessageKind::Normal).await?;
    let s = h
        .admin
        .cluster_status(Request::new(pb::ClusterStatusRequest {}))
        .await?
        .into_inner();
    assert_eq!((s.group.as_str(), s.node_id, s.leader_id), (GROUP, 1, Some(1)));
    assert!(s.term >= 1);
    // The topic's entry is applied (the state machine says so even when openraft's metrics
    // have not caught up yet); the log holds it.
    let (commit, applied) = (s.commit_index.unwrap_or(0), s.applied_index.unwrap_or(0));
    assert!(
        applied >= 2 && applied <= commit && commit <= s.last_log_index,
        "{s:?}"
    );
    assert_eq!(s.members.len(), 1);
    let m = &s.members[0];
    assert_eq!((m.id, m.role.as_str(), m.voter), (1, "leader", true));
    assert_eq!(
        (m.raft_addr.as_str(), m.client_addr.as_str()),
        ("127.0.0.1:1", "127.0.0.1:2")
    );
    let matched = m.matched_index.unwrap_or(0);
    assert!(matched <= s.last_log_index, "{s:?}");
    assert_eq!(m.lag, Some(s.last_log_index - matched));
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_progress_per_queue() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    h.create("a", 2, pb::MessageKind::Normal).await?;
    h.create("b", 1, pb::MessageKind::Normal).await?;
    h.send("a", 0, 5).await;
    h.send("a", 1, 2).await;
    h.send("b", 0, 1).await;
    h.commit_offset("g", "a", 0, 3).await;

    let p = h.progress("g", "a").await?;
    let row = |queue_id, broker_offset, consumer_offset, lag| pb::QueueProgress {
        topic: "a".into(),
        queue_id,
        broker_offset,
        consumer_offset,
        lag,
        inflight: 0,
    };
    assert_eq!(p.queues, [row(0, 5, Some(3), 2), row(1, 2, None, 2)]);

    let all = h.progress("g", "").await?;
    let keys: Vec<(&str, u32, u64)> = all
        .queues
        .iter()
        .map(|q| (q.topic.as_str(), q.queue_id, q.lag))
        .collect();
    assert_eq!(keys, [("a", 0, 2), ("a", 1, 2), ("b", 0, 1)]);

    assert_eq!(code(h.progress("g", "missing").await), Code::NotFound);
    assert_eq!(code(h.progress("", "a").await), Code::InvalidArgument);
    assert_eq!(code(h.progress("g g", "a").await), Code::InvalidArgument);
    assert_eq!(code(h.progress("g", "a b").await), Code::InvalidArgument);
    h.stop().await;
    Ok(())
}
