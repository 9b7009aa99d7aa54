//! `topic`, `cluster` and `group` commands: calls of `raftmq.admin.v1.AdminService`.

use std::time::Duration;

use anyhow::Result;
use raftmq_proto::raftmq::admin::v1::admin_service_client::AdminServiceClient;
use raftmq_proto::raftmq::admin::v1::{
    ClusterStatusRequest, ClusterStatusResponse, CreateTopicRequest, DeleteTopicRequest,
    GroupProgressRequest, GroupProgressResponse, ListTopicsRequest, ListTopicsResponse, MessageKind,
    Permission, TopicInfo, TopicSpec, UpdateTopicRequest,
};
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::args::{ClusterCmd, GroupCmd, KindArg, PermArg, TopicCmd};
use crate::connect::{Conn, request, rpc_error, status_line};
use crate::table::{Align, Table};

async fn client(conn: &Conn) -> Result<AdminServiceClient<Channel>> {
    Ok(AdminServiceClient::new(conn.channel().await?))
}

/// A change to one topic, as asked for on the command line.
#[derive(Debug, Clone, PartialEq)]
pub enum TopicChange {
    Create(TopicSpec),
    Update {
        name: String,
        queues: Option<u32>,
        kind: Option<KindArg>,
        perm: Option<PermArg>,
    },
    Delete {
        name: String,
    },
}

/// What a `topic` command does: change a topic, or list them.
#[derive(Debug, Clone, PartialEq)]
pub enum TopicAction {
    Change(TopicChange),
    List { json: bool },
}

impl From<TopicCmd> for TopicAction {
    fn from(cmd: TopicCmd) -> Self {
        match cmd {
            TopicCmd::Create {
                name,
                queues,
                kind,
                perm,
                ..
            } => TopicAction::Change(TopicChange::Create(TopicSpec {
                name,
                queues,
                permission: perm_to_proto(perm) as i32,
                kind: kind_to_proto(kind) as i32,
            })),
            TopicCmd::Update {
                name,
                queues,
                kind,
                perm,
                ..
            } => TopicAction::Change(TopicChange::Update {
                name,
                queues,
                kind,
                perm,
            }),
            TopicCmd::Delete { name, .. } => TopicAction::Change(TopicChange::Delete { name }),
            TopicCmd::List { json, .. } => TopicAction::List { json },
        }
    }
}

/// A failed admin call: the call (absent for a check made here) and its status.
#[derive(Debug)]
pub struct CallError {
    pub call: Option<&'static str>,
    pub status: tonic::Status,
}

impl CallError {
    fn of(call: &'static str) -> impl FnOnce(tonic::Status) -> CallError {
        move |status| CallError {
            call: Some(call),
            status,
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.call {
            Some(call) => write!(f, "{call} failed: {}", status_line(&self.status)),
            None => f.write_str(&status_line(&self.status)),
        }
    }
}

impl std::error::Error for CallError {}

pub async fn topic(conn: &Conn, cmd: TopicCmd) -> Result<()> {
    let mut admin = client(conn).await?;
    match TopicAction::from(cmd) {
        TopicAction::Change(change) => {
            println!("{}", apply_topic_change(&mut admin, conn.timeout, &change).await?);
        }
        TopicAction::List { json } => {
            let resp = list_topics(&mut admin, conn.timeout)
                .await
                .map_err(anyhow::Error::from)?;
            if json {
                println!("{}", pretty(&topics_json(&resp))?);
            } else {
                print!("{}", topics_table(&resp));
            }
        }
    }
    Ok(())
}

/// Makes `change` through `admin`; on success, the line that says what was done.
pub async fn apply_topic_change(
    admin: &mut AdminServiceClient<Channel>,
    timeout: Duration,
    change: &TopicChange,
) -> Result<String, CallError> {
    match change {
        TopicChange::Create(spec) => {
            admin
                .create_topic(request(
                    CreateTopicRequest {
                        topic: Some(spec.clone()),
                    },
                    timeout,
                ))
                .await
                .map_err(CallError::of("CreateTopic"))?;
            Ok(format!("created topic {} ({})", spec.name, spec_summary(spec)))
        }
        TopicChange::Update {
            name,
            queues,
            kind,
            perm,
        } => {
            let topics = list_topics(admin, timeout).await?;
            let Some(current) = topics
                .topics
                .into_iter()
                .filter_map(|t| t.spec)
                .find(|s| &s.name == name)
            else {
                return Err(CallError {
                    call: None,
                    status: tonic::Status::not_found(format!("topic {name:?} not found")),
                });
            };
            let spec = updated_spec(current, *queues, *kind, *perm);
            let summary = spec_summary(&spec);
            admin
                .update_topic(request(UpdateTopicRequest { topic: Some(spec) }, timeout))
                .await
                .map_err(CallError::of("UpdateTopic"))?;
            Ok(format!("updated topic {name}: {summary}"))
        }
        TopicChange::Delete { name } => {
            admin
                .delete_topic(request(DeleteTopicRequest { name: name.clone() }, timeout))
                .await
                .map_err(CallError::of("DeleteTopic"))?;
            Ok(format!("deleted topic {name}"))
        }
    }
}

/// The topics of the broker group (`ListTopics`).
pub async fn list_topics(
    admin: &mut AdminServiceClient<Channel>,
    timeout: Duration,
) -> Result<ListTopicsResponse, CallError> {
    Ok(admin
        .list_topics(request(ListTopicsRequest {}, timeout))
        .await
        .map_err(CallError::of("ListTopics"))?
        .into_inner())
}

pub async fn cluster(conn: &Conn, cmd: ClusterCmd) -> Result<()> {
    let ClusterCmd::Status { json } = cmd;
    let mut admin = client(conn).await?;
    let resp = admin
        .cluster_status(request(ClusterStatusRequest {}, conn.timeout))
        .await
        .map_err(rpc_error("ClusterStatus"))?
        .into_inner();
    if json {
        println!("{}", pretty(&cluster_json(&resp))?);
    } else {
        print!("{}", cluster_text(&resp));
    }
    Ok(())
}

pub async fn group(conn: &Conn, cmd: GroupCmd) -> Result<()> {
    let GroupCmd::Progress { group, topic, json } = cmd;
    let mut admin = client(conn).await?;
    let req = GroupProgressRequest {
        group: group.clone(),
        topic: topic.unwrap_or_default(),
    };
    let resp = admin
        .group_progress(request(req, conn.timeout))
        .await
        .map_err(rpc_error("GroupProgress"))?
        .into_inner();
    if json {
        println!("{}", pretty(&progress_json(&group, &resp))?);
    } else {
        print!("{}", progress_table(&resp));
    }
    Ok(())
}

pub fn pretty(v: &Value) -> Result<String> {
    Ok(serde_json::to_string_pretty(v)?)
}

fn perm_to_proto(p: PermArg) -> Permission {
    match p {
        PermArg::Rw => Permission::ReadWrite,
        PermArg::R => Permission::Read,
        PermArg::W => Permission::Write,
    }
}

fn kind_to_proto(k: KindArg) -> MessageKind {
    match k {
        KindArg::Normal => MessageKind::Normal,
        KindArg::Fifo => MessageKind::Fifo,
        KindArg::Delay => MessageKind::Delay,
        KindArg::Transaction => MessageKind::Transaction,
    }
}

/// `rw`, `r` or `w` for a wire permission (unspecified reads as read-write).
pub fn perm_name(p: i32) -> String {
    match Permission::try_from(p) {
        Ok(Permission::Unspecified | Permission::ReadWrite) => "rw".into(),
        Ok(Permission::Read) => "r".into(),
        Ok(Permission::Write) => "w".into(),
        Err(_) => format!("unknown({p})"),
    }
}

/// `normal`, `fifo`, `delay` or `transaction` for a wire kind (unspecified is normal).
pub fn kind_name(k: i32) -> String {
    match MessageKind::try_from(k) {
        Ok(MessageKind::KindUnspecified | MessageKind::Normal) => "normal".into(),
        Ok(MessageKind::Fifo) => "fifo".into(),
        Ok(MessageKind::Delay) => "delay".into(),
        Ok(MessageKind::Transaction) => "transaction".into(),
        Err(_) => format!("unknown({k})"),
    }
}

/// `current` with the given changes applied.
fn updated_spec(
    mut current: TopicSpec,
    queues: Option<u32>,
    kind: Option<KindArg>,
    perm: Option<PermArg>,
) -> TopicSpec {
    if let Some(q) = queues {
        current.queues = q;
    }
    if let Some(k) = kind {
        current.kind = kind_to_proto(k) as i32;
    }
    if let Some(p) = perm {
        current.permission = perm_to_proto(p) as i32;
    }
    current
}

fn spec_summary(s: &TopicSpec) -> String {
    format!(
        "{} queues, {}, {}",
        s.queues,
        kind_name(s.kind),
        perm_name(s.permission)
    )
}

/// Sum of a topic's queues' max offsets: the number of messages ever stored in it.
fn stored(t: &TopicInfo) -> u64 {
    t.queues.iter().map(|q| q.max_offset).sum()
}

pub fn topics_table(resp: &ListTopicsResponse) -> String {
    if resp.topics.is_empty() {
        return "no topics\n".into();
    }
    let mut table = Table::new(&[
        ("NAME", Align::Left),
        ("QUEUES", Align::Right),
        ("KIND", Align::Left),
        ("PERM", Align::Left),
        ("STORED", Align::Right),
    ]);
    for t in &resp.topics {
        let spec = t.spec.clone().unwrap_or_default();
        table.row(vec![
            spec.name,
            spec.queues.to_string(),
            kind_name(spec.kind),
            perm_name(spec.permission),
            stored(t).to_string(),
        ]);
    }
    table.render()
}

pub fn topics_json(resp: &ListTopicsResponse) -> Value {
    Value::Array(
        resp.topics
            .iter()
            .map(|t| {
                let spec = t.spec.clone().unwrap_or_default();
                json!({
                    "name": spec.name,
                    "queues": spec.queues,
                    "kind": kind_name(spec.kind),
                    "perm": perm_name(spec.permission),
                    "queue_offsets": t.queues.iter().map(|q| json!({
                        "queue_id": q.queue_id,
                        "max_offset": q.max_offset,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

fn cluster_json(r: &ClusterStatusResponse) -> Value {
    json!({
        "group": r.group,
        "node_id": r.node_id,
        "leader_id": r.leader_id,
        "term": r.term,
        "commit_index": r.commit_index,
        "applied_index": r.applied_index,
        "last_log_index": r.last_log_index,
        "last_quorum_acked_ms_ago": r.last_quorum_acked_ms_ago,
        "members": r.members.iter().map(|m| json!({
            "id": m.id,
            "raft_addr": m.raft_addr,
            "client_addr": m.client_addr,
            "role": m.role,
            "voter": m.voter,
            "matched_index": m.matched_index,
            "lag": m.lag,
        })).collect::<Vec<_>>(),
    })
}

pub fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn cluster_text(r: &ClusterStatusResponse) -> String {
    let mut out = String::new();
    let leader = match r.leader_id {
        Some(id) if id == r.node_id => format!("{id} (this node)"),
        Some(id) => id.to_string(),
        None => "none known".to_string(),
    };
    let mut summary = Table::new(&[("", Align::Left), ("", Align::Left)]);
    for (k, v) in [
        ("group:", r.group.clone()),
        ("node:", r.node_id.to_string()),
        ("leader:", leader),
        ("term:", r.term.to_string()),
        ("committed:", opt(r.commit_index)),
        ("applied:", opt(r.applied_index)),
        ("last log:", r.last_log_index.to_string()),
    ] {
        summary.row(vec![k.to_string(), v]);
    }
    if let Some(ms) = r.last_quorum_acked_ms_ago {
        summary.row(vec!["quorum ack:".into(), format!("{ms} ms ago")]);
    }
    // Skip the (empty) header line of the key/value table.
    out.extend(summary.render().lines().skip(1).map(|l| format!("{l}\n")));
    out.push('\n');
    let mut members = Table::new(&[
        ("ID", Align::Right),
        ("ROLE", Align::Left),
        ("VOTER", Align::Left),
        ("RAFT ADDR", Align::Left),
        ("CLIENT ADDR", Align::Left),
        ("MATCHED", Align::Right),
        ("LAG", Align::Right),
    ]);
    for m in &r.members {
        let id = if m.id == r.node_id {
            format!("*{}", m.id)
        } else {
            m.id.to_string()
        };
        members.row(vec![
            id,
            m.role.clone(),
            if m.voter { "yes" } else { "no" }.to_string(),
            m.raft_addr.clone(),
            m.client_addr.clone(),
            opt(m.matched_index),
            opt(m.lag),
        ]);
    }
    out.push_str(&members.render());
    out
}

fn progress_json(group: &str, r: &GroupProgressResponse) -> Value {
    json!({
        "group": group,
        "queues": r.queues.iter().map(|q| json!({
            "topic": q.topic,
            "queue_id": q.queue_id,
            "broker_offset": q.broker_offset,
            "consumer_offset": q.consumer_offset,
            "lag": q.lag,
            "inflight": q.inflight,
        })).collect::<Vec<_>>(),
    })
}

fn progress_table(r: &GroupProgressResponse) -> String {
    if r.queues.is_empty() {
        return "no queues\n".into();
    }
    let mut table = Table::new(&[
        ("TOPIC", Align::Left),
        ("QUEUE", Align::Right),
        ("BROKER OFFSET", Align::Right),
        ("CONSUMER OFFSET", Align::Right),
        ("LAG", Align::Right),
        ("INFLIGHT", Align::Right),
    ]);
    for q in &r.queues {
        table.row(vec![
            q.topic.clone(),
            q.queue_id.to_string(),
            q.broker_offset.to_string(),
            opt(q.consumer_offset),
            q.lag.to_string(),
            q.inflight.to_string(),
        ]);
    }
    let lag: u64 = r.queues.iter().map(|q| q.lag).sum();
    let inflight: u64 = r.queues.iter().map(|q| u64::from(q.inflight)).sum();
    format!("{}total lag {lag}, in flight {inflight}\n", table.render())
}

#[cfg(test)]
mod tests {
    use raftmq_proto::raftmq::admin::v1::{Member, QueueInfo, QueueProgress};

    use super::*;

    fn status() -> ClusterStatusResponse {
        ClusterStatusResponse {
            group: "broker-a".into(),
            node_id: 1,
            leader_id: Some(1),
            term: 3,
            commit_index: Some(42),
            applied_index: Some(41),
            last_log_index: 42,
            members: vec![
                Member {
                    id: 1,
                    raft_addr: "127.0.0.1:9001".into(),
                    client_addr: "127.0.0.1:8081".into(),
                    role: "leader".into(),
                    voter: true,
                    matched_index: Some(42),
                    lag: Some(0),
                },
                Member {
                    id: 2,
                    raft_addr: "127.0.0.1:9002".into(),
                    client_addr: "127.0.0.1:8082".into(),
                    role: "follower".into(),
                    voter: true,
                    matched_index: None,
                    lag: None,
                },
            ],
            last_quorum_acked_ms_ago: None,
        }
    }

    #[test]
    fn cluster_json_shape() {
        let v = cluster_json(&ClusterStatusResponse {
            leader_id: None,
            ..status()
        });
        assert_eq!(v["group"], "broker-a");
        assert_eq!(v["leader_id"], Value::Null);
        assert_eq!(v["commit_index"], 42);
        assert_eq!(v["members"][0]["role"], "leader");
        assert_eq!(v["members"][1]["matched_index"], Value::Null);
        assert_eq!(v["members"][1]["voter"], true);
    }

    #[test]
    fn cluster_text_marks_this_node() {
        let text = cluster_text(&status());
        assert!(text.contains("leader:     1 (this node)"), "{text}");
        assert!(text.contains("*1  leader"), "{text}");
        assert!(text.contains(" 2  follower  yes    127.0.0.1:9002"), "{text}");
    }

    #[test]
    fn update_changes_only_what_is_given() {
        let current = TopicSpec {
            name: "t".into(),
            queues: 4,
            permission: Permission::Read as i32,
            kind: MessageKind::Fifo as i32,
        };
        let spec = updated_spec(current.clone(), Some(8), None, None);
        assert_eq!(
            spec,
            TopicSpec {
                queues: 8,
                ..current.clone()
            }
        );
        let spec = updated_spec(current.clone(), None, Some(KindArg::Delay), Some(PermArg::Rw));
        assert_eq!(spec.kind, MessageKind::Delay as i32);
        assert_eq!(spec.permission, Permission::ReadWrite as i32);
        assert_eq!(spec.queues, 4);
    }

    #[test]
    fn topics_and_progress_render() {
        let resp = ListTopicsResponse {
            topics: vec![TopicInfo {
                spec: Some(TopicSpec {
                    name: "orders".into(),
                    queues: 2,
                    permission: 0,
                    kind: 2,
                }),
                queues: vec![
                    QueueInfo {
                        queue_id: 0,
                        max_offset: 5,
                    },
                    QueueInfo {
                        queue_id: 1,
                        max_offset: 7,
                    },
                ],
            }],
        };
        assert_eq!(
            topics_table(&resp),
            "NAME    QUEUES  KIND  PERM  STORED\norders       2  fifo  rw        12\n"
        );
        assert_eq!(topics_json(&resp)[0]["queue_offsets"][1]["max_offset"], 7);

        let progress = GroupProgressResponse {
            queues: vec![QueueProgress {
                topic: "orders".into(),
                queue_id: 1,
                broker_offset: 7,
                consumer_offset: None,
                lag: 7,
                inflight: 2,
            }],
        };
        let text = progress_table(&progress);
        assert!(text.ends_with("total lag 7, in flight 2\n"), "{text}");
        assert_eq!(
            progress_json("g", &progress)["queues"][0]["consumer_offset"],
            Value::Null
        );
    }
}
