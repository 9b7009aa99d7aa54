//! `topic create|update|delete|list --groups g1,g2|all`: a topic command on several
//! broker groups, found through the name server (`ListGroups`).
//!
//! Each chosen group is asked in turn through its members' client addresses, the leader
//! first: a member that cannot be reached or answers UNAVAILABLE moves the call on to
//! the next member; any other answer (ALREADY_EXISTS, NOT_FOUND, ...) is that group's
//! outcome. One line per group says what happened; the command fails if any group did.

use std::future::Future;
use std::time::Duration;

use anyhow::{Result, bail};
use raftmq_proto::raftmq::admin::v1::admin_service_client::AdminServiceClient;
use raftmq_proto::raftmq::namesrv::v1::BrokerGroup;
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::admin_cmds::{
    CallError, TopicAction, TopicChange, apply_topic_change, list_topics, pretty, topics_json, topics_table,
};
use crate::args::TopicCmd;
use crate::connect::connect_addr;
use crate::namesrv_cmds::Namesrv;

/// The groups `--groups` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// `--groups all`: every group the name server knows.
    All,
    /// These groups, in the order given, without repeats.
    Named(Vec<String>),
}

/// Reads `--groups`: `all`, or group names (trimmed; empty items and repeats dropped).
pub fn parse_selection(items: &[String]) -> Result<Selection> {
    let mut names: Vec<String> = Vec::new();
    for item in items.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        if !names.iter().any(|n| n == item) {
            names.push(item.to_string());
        }
    }
    match names.as_slice() {
        [] => bail!("--groups needs group names or `all`"),
        [only] if only == "all" => Ok(Selection::All),
        _ if names.iter().any(|n| n == "all") => {
            bail!("--groups all cannot be combined with group names")
        }
        _ => Ok(Selection::Named(names)),
    }
}

/// The groups of `known` that `selection` chooses, in the selection's order (or the name
/// server's for `all`). Unknown names are an error that lists the known groups.
pub fn select_groups<'a>(selection: &Selection, known: &'a [BrokerGroup]) -> Result<Vec<&'a BrokerGroup>> {
    let known_names = || {
        if known.is_empty() {
            "none: no broker group is registered with the name server".to_string()
        } else {
            known
                .iter()
                .map(|g| g.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    match selection {
        Selection::All if known.is_empty() => {
            bail!("no broker group is registered with the name server")
        }
        Selection::All => Ok(known.iter().collect()),
        Selection::Named(names) => {
            let unknown: Vec<&str> = names
                .iter()
                .filter(|n| !known.iter().any(|g| &g.name == *n))
                .map(String::as_str)
                .collect();
            if !unknown.is_empty() {
                bail!(
                    "unknown broker group{} {}; known groups: {}",
                    if unknown.len() > 1 { "s" } else { "" },
                    unknown.join(", "),
                    known_names()
                );
            }
            Ok(names
                .iter()
                .filter_map(|n| known.iter().find(|g| &g.name == n))
                .collect())
        }
    }
}

/// A group's client addresses: the leader's first, then by node id; blanks and repeats
/// dropped.
pub fn endpoints(group: &BrokerGroup) -> Vec<String> {
    let mut members: Vec<_> = group.members.iter().collect();
    members.sort_by_key(|m| (Some(m.node_id) != group.leader_id, m.node_id));
    let mut out: Vec<String> = Vec::new();
    for m in members {
        let addr = m.client_addr.trim();
        if !addr.is_empty() && !out.iter().any(|a| a == addr) {
            out.push(addr.to_string());
        }
    }
    out
}

/// Runs `op` on the first member of `endpoints` that can do it; the error is one line.
async fn on_group<T, F, Fut>(endpoints: &[String], timeout: Duration, mut op: F) -> Result<T, String>
where
    F: FnMut(AdminServiceClient<Channel>) -> Fut,
    Fut: Future<Output = Result<T, CallError>>,
{
    if endpoints.is_empty() {
        return Err("the name server knows no client address of this group".into());
    }
    let mut failures = Vec::new();
    for addr in endpoints {
        let channel = match connect_addr(addr, timeout).await {
            Ok(c) => c,
            Err(e) => {
                failures.push(format!("{addr}: {e}"));
                continue;
            }
        };
        match op(AdminServiceClient::new(channel)).await {
            Ok(v) => return Ok(v),
            Err(e) if e.status.code() == tonic::Code::Unavailable => failures.push(format!("{addr}: {e}")),
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(format!("no member could do it ({})", failures.join("; ")))
}

/// The verb of a change, for the summary line.
fn verb(change: &TopicChange) -> &'static str {
    match change {
        TopicChange::Create(_) => "create",
        TopicChange::Update { .. } => "update",
        TopicChange::Delete { .. } => "delete",
    }
}

/// One line per group: `g1: created topic ...` or `g2: CreateTopic failed: ...`.
pub fn outcome_line(group: &str, outcome: &Result<String, String>) -> String {
    match outcome {
        Ok(done) => format!("{group}: {done}"),
        Err(e) => format!("{group}: {e}"),
    }
}

/// The command's error when some groups failed.
fn failure_summary(what: &str, failed: &[String], total: usize) -> Result<()> {
    if failed.is_empty() {
        return Ok(());
    }
    bail!(
        "{what} failed on {} of {total} broker group{}: {}",
        failed.len(),
        if total == 1 { "" } else { "s" },
        failed.join(", ")
    )
}

pub async fn topic(ns: &Namesrv, timeout: Duration, cmd: TopicCmd) -> Result<()> {
    let selection = parse_selection(cmd.groups().unwrap_or_default())?;
    let known = ns.list_groups().await?.groups;
    let chosen = select_groups(&selection, &known)?;
    match TopicAction::from(cmd) {
        TopicAction::Change(change) => change_on_groups(&chosen, timeout, &change).await,
        TopicAction::List { json } => list_on_groups(&chosen, timeout, json).await,
    }
}

async fn change_on_groups(groups: &[&BrokerGroup], timeout: Duration, change: &TopicChange) -> Result<()> {
    let mut failed = Vec::new();
    for g in groups {
        let outcome = on_group(&endpoints(g), timeout, |mut admin| async move {
            apply_topic_change(&mut admin, timeout, change).await
        })
        .await;
        println!("{}", outcome_line(&g.name, &outcome));
        if outcome.is_err() {
            failed.push(g.name.clone());
        }
    }
    failure_summary(&format!("topic {}", verb(change)), &failed, groups.len())
}

async fn list_on_groups(groups: &[&BrokerGroup], timeout: Duration, json: bool) -> Result<()> {
    let mut failed = Vec::new();
    let mut json_out = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        let outcome = on_group(&endpoints(g), timeout, |mut admin| async move {
            list_topics(&mut admin, timeout).await
        })
        .await;
        if outcome.is_err() {
            failed.push(g.name.clone());
        }
        if json {
            json_out.push(match &outcome {
                Ok(resp) => json!({ "group": g.name, "topics": topics_json(resp) }),
                Err(e) => json!({ "group": g.name, "error": e }),
            });
            continue;
        }
        if i > 0 {
            println!();
        }
        match &outcome {
            Ok(resp) => print!("group {}:\n{}", g.name, topics_table(resp)),
            Err(e) => println!("group {}: {e}", g.name),
        }
    }
    if json {
        println!("{}", pretty(&Value::Array(json_out))?);
    }
    failure_summary("topic list", &failed, groups.len())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use raftmq_proto::raftmq::admin::v1::admin_service_server::{AdminService, AdminServiceServer};
    use raftmq_proto::raftmq::admin::v1::*;
    use raftmq_proto::raftmq::namesrv::v1::Role;
    use tonic::transport::Server;
    use tonic::transport::server::TcpIncoming;
    use tonic::{Request, Response, Status};

    use super::*;
    use crate::namesrv_cmds::tests::{MockNamesrv, group, member, serve_namesrv};

    fn names(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn selection_parsing() {
        assert_eq!(parse_selection(&names(&["all"])).expect("all"), Selection::All);
        assert_eq!(
            parse_selection(&names(&[" g2", "g1", "", "g2 "])).expect("named"),
            Selection::Named(names(&["g2", "g1"]))
        );
        assert!(parse_selection(&names(&["", " "])).is_err());
        let err = parse_selection(&names(&["all", "g1"])).expect_err("mixed");
        assert!(err.to_string().contains("cannot be combined"), "{err}");
    }

    #[test]
    fn group_selection() {
        let known = vec![group("g1", Some(1), &["a:1"]), group("g2", None, &["b:1"])];
        let picked = select_groups(&Selection::All, &known).expect("all");
        assert_eq!(
            picked.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(),
            ["g1", "g2"]
        );
        let picked = select_groups(&Selection::Named(names(&["g2", "g1"])), &known).expect("named");
        assert_eq!(
            picked.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(),
            ["g2", "g1"]
        );

        let err = select_groups(&Selection::Named(names(&["g3", "g1", "x"])), &known).expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "unknown broker groups g3, x; known groups: g1, g2"
        );
        let err = select_groups(&Selection::Named(names(&["g1"])), &[]).expect_err("none known");
        assert!(err.to_string().contains("no broker group is registered"), "{err}");
        assert!(select_groups(&Selection::All, &[]).is_err());
    }

    #[test]
    fn endpoints_put_the_leader_first() {
        let mut g = group("g1", Some(2), &["a:1", "b:1", "c:1"]);
        assert_eq!(endpoints(&g), names(&["b:1", "a:1", "c:1"]));
        g.leader_id = None;
        assert_eq!(endpoints(&g), names(&["a:1", "b:1", "c:1"]));
        // A leader the group's members do not include, blanks and repeats.
        g.leader_id = Some(9);
        g.members = vec![
            member(3, "c:1", Role::Follower),
            member(1, " ", Role::Follower),
            member(2, "c:1", Role::Follower),
        ];
        assert_eq!(endpoints(&g), names(&["c:1"]));
    }

    #[test]
    fn outcome_lines_and_summary() {
        assert_eq!(
            outcome_line("g1", &Ok("created topic t (8 queues, normal, rw)".into())),
            "g1: created topic t (8 queues, normal, rw)"
        );
        assert_eq!(outcome_line("g2", &Err("boom".into())), "g2: boom");
        assert!(failure_summary("topic create", &[], 2).is_ok());
        let err = failure_summary("topic create", &names(&["g2"]), 2).expect_err("failed");
        assert_eq!(err.to_string(), "topic create failed on 1 of 2 broker groups: g2");
    }

    /// An admin service that answers CreateTopic with a fixed result and counts calls.
    #[derive(Debug, Clone)]
    struct Admin {
        answer: Result<(), (tonic::Code, &'static str)>,
        calls: Arc<Mutex<u32>>,
    }

    #[tonic::async_trait]
    impl AdminService for Admin {
        async fn create_topic(
            &self,
            _: Request<CreateTopicRequest>,
        ) -> Result<Response<CreateTopicResponse>, Status> {
            if let Ok(mut n) = self.calls.lock() {
                *n += 1;
            }
            match self.answer {
                Ok(()) => Ok(Response::new(CreateTopicResponse {})),
                Err((code, msg)) => Err(Status::new(code, msg)),
            }
        }
        async fn update_topic(
            &self,
            _: Request<UpdateTopicRequest>,
        ) -> Result<Response<UpdateTopicResponse>, Status> {
            Err(Status::unimplemented(""))
        }
        async fn delete_topic(
            &self,
            _: Request<DeleteTopicRequest>,
        ) -> Result<Response<DeleteTopicResponse>, Status> {
            Err(Status::unimplemented(""))
        }
        async fn list_topics(
            &self,
            _: Request<ListTopicsRequest>,
        ) -> Result<Response<ListTopicsResponse>, Status> {
            Err(Status::unimplemented(""))
        }
        async fn cluster_status(
            &self,
            _: Request<ClusterStatusRequest>,
        ) -> Result<Response<ClusterStatusResponse>, Status> {
            Err(Status::unimplemented(""))
        }
        async fn group_progress(
            &self,
            _: Request<GroupProgressRequest>,
        ) -> Result<Response<GroupProgressResponse>, Status> {
            Err(Status::unimplemented(""))
        }
        async fn query_messages(
            &self,
            _: Request<raftmq_proto::raftmq::admin::v1::QueryMessagesRequest>,
        ) -> Result<Response<raftmq_proto::raftmq::admin::v1::QueryMessagesResponse>, Status> {
            Err(Status::unimplemented(""))
        }
    }

    async fn serve(answer: Result<(), (tonic::Code, &'static str)>) -> (String, Arc<Mutex<u32>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let calls = Arc::new(Mutex::new(0));
        let admin = Admin {
            answer,
            calls: calls.clone(),
        };
        tokio::spawn(
            Server::builder()
                .add_service(AdminServiceServer::new(admin))
                .serve_with_incoming(TcpIncoming::from(listener)),
        );
        (addr, calls)
    }

    fn create() -> TopicChange {
        TopicChange::Create(TopicSpec {
            name: "t".into(),
            queues: 2,
            permission: Permission::ReadWrite as i32,
            kind: MessageKind::Normal as i32,
        })
    }

    async fn create_on(endpoints: &[String]) -> Result<String, String> {
        let change = create();
        let timeout = Duration::from_secs(3);
        on_group(endpoints, timeout, |mut admin| {
            let change = change.clone();
            async move { apply_topic_change(&mut admin, timeout, &change).await }
        })
        .await
    }

    fn count(calls: &Arc<Mutex<u32>>) -> u32 {
        calls.lock().map(|n| *n).unwrap_or(0)
    }

    #[tokio::test]
    async fn dead_and_unavailable_members_are_skipped() {
        let (unavailable, unavailable_calls) = serve(Err((tonic::Code::Unavailable, "no leader"))).await;
        let (good, good_calls) = serve(Ok(())).await;
        // Port 1: connection refused.
        let eps = vec!["127.0.0.1:1".to_string(), unavailable, good];
        let done = create_on(&eps).await.expect("third member does it");
        assert_eq!(done, "created topic t (2 queues, normal, rw)");
        assert_eq!((count(&unavailable_calls), count(&good_calls)), (1, 1));
    }

    #[tokio::test]
    async fn create_on_groups_through_the_name_server() {
        let (g1_good, g1_calls) = serve(Ok(())).await;
        let (g2_exists, _) = serve(Err((tonic::Code::AlreadyExists, "topic t exists"))).await;
        let (g3_good, g3_calls) = serve(Ok(())).await;
        // g1's leader (node 2) is dead: its follower does it.
        let g1 = group("g1", Some(2), &[&g1_good, "127.0.0.1:1"]);
        let g2 = group("g2", Some(1), &[&g2_exists]);
        let g3 = group("g3", Some(1), &[&g3_good]);
        let ns_addr = serve_namesrv(MockNamesrv {
            groups: vec![g1, g2, g3],
            fail: None,
        })
        .await;
        let ns = Namesrv::new(&[ns_addr], Duration::from_secs(3)).expect("namesrv");
        let cmd = |groups: &[&str]| TopicCmd::Create {
            name: "t".into(),
            queues: 2,
            kind: crate::args::KindArg::Normal,
            perm: crate::args::PermArg::Rw,
            groups: Some(names(groups)),
        };

        topic(&ns, Duration::from_secs(3), cmd(&["g3", "g1"]))
            .await
            .expect("both created");
        assert_eq!((count(&g1_calls), count(&g3_calls)), (1, 1));

        let err = topic(&ns, Duration::from_secs(3), cmd(&["all"]))
            .await
            .expect_err("g2 refuses");
        assert_eq!(err.to_string(), "topic create failed on 1 of 3 broker groups: g2");
        assert_eq!(
            (count(&g1_calls), count(&g3_calls)),
            (2, 2),
            "the others were still asked"
        );

        let err = topic(&ns, Duration::from_secs(3), cmd(&["g9"]))
            .await
            .expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "unknown broker group g9; known groups: g1, g2, g3"
        );
    }

    #[tokio::test]
    async fn a_real_answer_is_final() {
        let (exists, _) = serve(Err((tonic::Code::AlreadyExists, "topic t exists"))).await;
        let (good, good_calls) = serve(Ok(())).await;
        let err = create_on(&[exists, good]).await.expect_err("already exists");
        assert_eq!(err, "CreateTopic failed: ALREADY_EXISTS: topic t exists");
        assert_eq!(count(&good_calls), 0, "no second try after a real answer");

        let err = create_on(&["127.0.0.1:1".to_string()]).await.expect_err("dead");
        assert!(err.starts_with("no member could do it (127.0.0.1:1: "), "{err}");
        let err = create_on(&[]).await.expect_err("no endpoints");
        assert!(err.contains("no client address"), "{err}");
    }
}
