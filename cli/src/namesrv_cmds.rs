//! `namesrv groups` and `namesrv route`: reads of `raftmq.namesrv.v1.NamesrvService`,
//! and the name server client the `--groups` topic commands use.
//!
//! Name servers share nothing, so any one of them will do: they are tried in order, and
//! one that cannot be reached or does not answer (UNAVAILABLE, DEADLINE_EXCEEDED,
//! UNKNOWN, CANCELLED) moves the call on to the next. Any other answer is final.

use std::future::Future;
use std::time::Duration;

use anyhow::{Result, bail};
use raftmq_proto::raftmq::namesrv::v1::namesrv_service_client::NamesrvServiceClient;
use raftmq_proto::raftmq::namesrv::v1::{
    BrokerGroup, GroupRoute, ListGroupsRequest, ListGroupsResponse, Role, TopicRouteRequest,
    TopicRouteResponse,
};
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::admin_cmds::{kind_name, opt, perm_name, pretty};
use crate::args::NamesrvCmd;
use crate::connect::{clean_addrs, connect_addr, request, status_line};
use crate::table::{Align, Table};

/// The name servers of `--namesrv`, in the order given.
#[derive(Debug, Clone)]
pub struct Namesrv {
    addrs: Vec<String>,
    timeout: Duration,
}

/// Why a name server call failed.
#[derive(Debug)]
pub enum NamesrvError {
    /// A name server answered with this status.
    Answered(tonic::Status),
    /// None answered; one line per name server tried.
    NoneAnswered(Vec<String>),
}

impl NamesrvError {
    /// The error as the CLI reports it.
    fn into_anyhow(self, call: &str) -> anyhow::Error {
        match self {
            NamesrvError::Answered(s) => anyhow::anyhow!("{call} failed: {}", status_line(&s)),
            NamesrvError::NoneAnswered(failures) => {
                anyhow::anyhow!("no name server answered ({})", failures.join("; "))
            }
        }
    }
}

/// True for a status that says "this name server could not answer", not "no".
fn try_next(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
    )
}

impl Namesrv {
    /// The name servers at these addresses; at least one is needed.
    pub fn new(addrs: &[String], timeout: Duration) -> Result<Self> {
        let addrs = clean_addrs(addrs);
        if addrs.is_empty() {
            bail!("no name server given (--namesrv host:port or RAFTMQ_NAMESRV)");
        }
        Ok(Namesrv { addrs, timeout })
    }

    /// Runs `call` against each name server in turn until one answers.
    async fn call<T, F, Fut>(&self, mut call: F) -> Result<T, NamesrvError>
    where
        F: FnMut(NamesrvServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut failures = Vec::new();
        for addr in &self.addrs {
            let channel = match connect_addr(addr, self.timeout).await {
                Ok(c) => c,
                Err(e) => {
                    failures.push(format!("{addr}: {e}"));
                    continue;
                }
            };
            match call(NamesrvServiceClient::new(channel)).await {
                Ok(resp) => return Ok(resp.into_inner()),
                Err(s) if try_next(s.code()) => failures.push(format!("{addr}: {}", status_line(&s))),
                Err(s) => return Err(NamesrvError::Answered(s)),
            }
        }
        Err(NamesrvError::NoneAnswered(failures))
    }

    /// Every broker group with a live member (`ListGroups`).
    pub async fn list_groups(&self) -> Result<ListGroupsResponse> {
        let timeout = self.timeout;
        self.call(|mut c| async move { c.list_groups(request(ListGroupsRequest {}, timeout)).await })
            .await
            .map_err(|e| e.into_anyhow("ListGroups"))
    }

    /// Where `topic` is (`TopicRoute`); NOT_FOUND becomes a sentence naming the topic.
    pub async fn topic_route(&self, topic: &str) -> Result<TopicRouteResponse> {
        let timeout = self.timeout;
        let result = self
            .call(|mut c| {
                let req = TopicRouteRequest {
                    topic: topic.to_string(),
                };
                async move { c.topic_route(request(req, timeout)).await }
            })
            .await;
        match result {
            Ok(resp) if resp.groups.is_empty() => bail!(not_hosted(topic)),
            Ok(resp) => Ok(resp),
            Err(NamesrvError::Answered(s)) if s.code() == tonic::Code::NotFound => {
                bail!(not_hosted(topic))
            }
            Err(e) => Err(e.into_anyhow("TopicRoute")),
        }
    }
}

fn not_hosted(topic: &str) -> String {
    format!("topic {topic} is not hosted by any live broker group")
}

pub async fn run(ns: &Namesrv, cmd: NamesrvCmd) -> Result<()> {
    match cmd {
        NamesrvCmd::Groups { json } => {
            let resp = ns.list_groups().await?;
            if json {
                println!("{}", pretty(&groups_json(&resp))?);
            } else {
                print!("{}", groups_text(&resp));
            }
        }
        NamesrvCmd::Route { topic, json } => {
            let resp = ns.topic_route(&topic).await?;
            if json {
                println!("{}", pretty(&route_json(&resp))?);
            } else {
                print!("{}", route_table(&resp));
            }
        }
    }
    Ok(())
}

/// `leader`, `follower`, `candidate`, `learner`; `-` when unspecified.
pub fn role_name(role: i32) -> String {
    match Role::try_from(role) {
        Ok(Role::Unspecified) => "-".into(),
        Ok(Role::Leader) => "leader".into(),
        Ok(Role::Follower) => "follower".into(),
        Ok(Role::Candidate) => "candidate".into(),
        Ok(Role::Learner) => "learner".into(),
        Err(_) => format!("unknown({role})"),
    }
}

/// Two tables: one line per group, then one line per member.
pub fn groups_text(resp: &ListGroupsResponse) -> String {
    if resp.groups.is_empty() {
        return "no broker groups registered\n".into();
    }
    let mut groups = Table::new(&[
        ("GROUP", Align::Left),
        ("LEADER", Align::Right),
        ("TERM", Align::Right),
        ("TOPICS", Align::Right),
        ("MEMBERS", Align::Right),
    ]);
    let mut members = Table::new(&[
        ("GROUP", Align::Left),
        ("ID", Align::Right),
        ("CLIENT ADDR", Align::Left),
        ("ROLE", Align::Left),
        ("TERM", Align::Right),
        ("APPLIED", Align::Right),
        ("LAST SEEN", Align::Right),
    ]);
    for g in &resp.groups {
        groups.row(vec![
            g.name.clone(),
            opt(g.leader_id),
            g.term.to_string(),
            g.topics.to_string(),
            g.members.len().to_string(),
        ]);
        for m in &g.members {
            members.row(vec![
                g.name.clone(),
                m.node_id.to_string(),
                m.client_addr.clone(),
                role_name(m.role),
                m.term.to_string(),
                m.applied_index.to_string(),
                format!("{} ms ago", m.last_seen_ms_ago),
            ]);
        }
    }
    format!("{}\n{}", groups.render(), members.render())
}

pub fn groups_json(resp: &ListGroupsResponse) -> Value {
    Value::Array(resp.groups.iter().map(group_json).collect())
}

fn group_json(g: &BrokerGroup) -> Value {
    json!({
        "group": g.name,
        "leader_id": g.leader_id,
        "term": g.term,
        "topics": g.topics,
        "members": g.members.iter().map(|m| json!({
            "id": m.node_id,
            "client_addr": m.client_addr,
            "role": role_name(m.role),
            "term": m.term,
            "applied_index": m.applied_index,
            "last_seen_ms_ago": m.last_seen_ms_ago,
        })).collect::<Vec<_>>(),
    })
}

/// One line per hosting group; endpoints as the name server orders them (leader first).
pub fn route_table(resp: &TopicRouteResponse) -> String {
    let mut table = Table::new(&[
        ("GROUP", Align::Left),
        ("QUEUES", Align::Right),
        ("KIND", Align::Left),
        ("PERM", Align::Left),
        ("LEADER", Align::Right),
        ("ENDPOINTS", Align::Left),
    ]);
    for r in &resp.groups {
        let spec = r.spec.clone().unwrap_or_default();
        table.row(vec![
            r.group.clone(),
            spec.queues.to_string(),
            kind_name(spec.kind),
            perm_name(spec.permission),
            opt(r.leader_id),
            r.endpoints.join(","),
        ]);
    }
    table.render()
}

pub fn route_json(resp: &TopicRouteResponse) -> Value {
    json!({
        "topic": resp.topic,
        "groups": resp.groups.iter().map(route_group_json).collect::<Vec<_>>(),
    })
}

fn route_group_json(r: &GroupRoute) -> Value {
    let spec = r.spec.clone().unwrap_or_default();
    json!({
        "group": r.group,
        "queues": spec.queues,
        "kind": kind_name(spec.kind),
        "perm": perm_name(spec.permission),
        "leader_id": r.leader_id,
        "endpoints": r.endpoints,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use raftmq_proto::raftmq::admin::v1::{MessageKind, Permission, TopicSpec};
    use raftmq_proto::raftmq::namesrv::v1::namesrv_service_server::{NamesrvService, NamesrvServiceServer};
    use raftmq_proto::raftmq::namesrv::v1::{GroupMember, RegisterRequest, RegisterResponse};
    use tonic::transport::Server;
    use tonic::transport::server::TcpIncoming;

    use super::*;

    pub(crate) fn member(id: u64, addr: &str, role: Role) -> GroupMember {
        GroupMember {
            node_id: id,
            client_addr: addr.into(),
            role: role as i32,
            term: 3,
            applied_index: 40 + id,
            last_seen_ms_ago: 100 * id,
        }
    }

    pub(crate) fn group(name: &str, leader: Option<u64>, addrs: &[&str]) -> BrokerGroup {
        BrokerGroup {
            name: name.into(),
            leader_id: leader,
            term: 3,
            members: addrs
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    let id = i as u64 + 1;
                    let role = if Some(id) == leader {
                        Role::Leader
                    } else {
                        Role::Follower
                    };
                    member(id, a, role)
                })
                .collect(),
            topics: 2,
        }
    }

    #[test]
    fn groups_render_as_two_tables() {
        let resp = ListGroupsResponse {
            groups: vec![
                group("g1", Some(2), &["127.0.0.1:8081", "127.0.0.1:8082"]),
                group("g2", None, &["127.0.0.1:8091"]),
            ],
        };
        assert_eq!(
            groups_text(&resp),
            "GROUP  LEADER  TERM  TOPICS  MEMBERS\n\
             g1          2     3       2        2\n\
             g2          -     3       2        1\n\
             \n\
             GROUP  ID  CLIENT ADDR     ROLE      TERM  APPLIED   LAST SEEN\n\
             g1      1  127.0.0.1:8081  follower     3       41  100 ms ago\n\
             g1      2  127.0.0.1:8082  leader       3       42  200 ms ago\n\
             g2      1  127.0.0.1:8091  follower     3       41  100 ms ago\n"
        );
        assert_eq!(
            groups_text(&ListGroupsResponse::default()),
            "no broker groups registered\n"
        );
        let v = groups_json(&resp);
        assert_eq!(v[0]["group"], "g1");
        assert_eq!(v[0]["leader_id"], 2);
        assert_eq!(v[1]["leader_id"], Value::Null);
        assert_eq!(v[0]["members"][1]["role"], "leader");
        assert_eq!(v[0]["members"][1]["last_seen_ms_ago"], 200);
    }

    #[test]
    fn roles_have_names() {
        assert_eq!(role_name(Role::Candidate as i32), "candidate");
        assert_eq!(role_name(Role::Learner as i32), "learner");
        assert_eq!(role_name(0), "-");
        assert_eq!(role_name(99), "unknown(99)");
    }

    #[test]
    fn routes_render() {
        let resp = TopicRouteResponse {
            topic: "orders".into(),
            groups: vec![GroupRoute {
                current: 1,
                group: "g1".into(),
                spec: Some(TopicSpec {
                    name: "orders".into(),
                    queues: 8,
                    permission: Permission::Read as i32,
                    kind: MessageKind::Fifo as i32,
                }),
                endpoints: vec!["127.0.0.1:8082".into(), "127.0.0.1:8081".into()],
                leader_id: Some(2),
            }],
        };
        assert_eq!(
            route_table(&resp),
            "GROUP  QUEUES  KIND  PERM  LEADER  ENDPOINTS\n\
             g1          8  fifo  r          2  127.0.0.1:8082,127.0.0.1:8081\n"
        );
        let v = route_json(&resp);
        assert_eq!(v["topic"], "orders");
        assert_eq!(v["groups"][0]["endpoints"][0], "127.0.0.1:8082");
        assert_eq!(v["groups"][0]["kind"], "fifo");
    }

    /// A name server answering ListGroups with `groups` (or `fail`) and TopicRoute with
    /// NOT_FOUND for every topic but `orders`.
    #[derive(Debug, Clone)]
    pub(crate) struct MockNamesrv {
        pub groups: Vec<BrokerGroup>,
        pub fail: Option<tonic::Code>,
    }

    #[tonic::async_trait]
    impl NamesrvService for MockNamesrv {
        async fn register(
            &self,
            _: tonic::Request<RegisterRequest>,
        ) -> Result<tonic::Response<RegisterResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented(""))
        }
        async fn list_groups(
            &self,
            _: tonic::Request<ListGroupsRequest>,
        ) -> Result<tonic::Response<ListGroupsResponse>, tonic::Status> {
            if let Some(code) = self.fail {
                return Err(tonic::Status::new(code, "mock failure"));
            }
            Ok(tonic::Response::new(ListGroupsResponse {
                groups: self.groups.clone(),
            }))
        }
        async fn topic_route(
            &self,
            r: tonic::Request<TopicRouteRequest>,
        ) -> Result<tonic::Response<TopicRouteResponse>, tonic::Status> {
            if let Some(code) = self.fail {
                return Err(tonic::Status::new(code, "mock failure"));
            }
            let topic = r.into_inner().topic;
            if topic != "orders" {
                return Err(tonic::Status::not_found(format!("no group hosts {topic}")));
            }
            Ok(tonic::Response::new(TopicRouteResponse {
                topic,
                groups: vec![GroupRoute {
                    current: 1,
                    group: "g1".into(),
                    spec: None,
                    endpoints: vec!["127.0.0.1:8081".into()],
                    leader_id: Some(1),
                }],
            }))
        }
    }

    /// Serves `mock` on a free loopback port; it stops with the test's runtime.
    pub(crate) async fn serve_namesrv(mock: MockNamesrv) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(
            Server::builder()
                .add_service(NamesrvServiceServer::new(mock))
                .serve_with_incoming(TcpIncoming::from(listener)),
        );
        addr
    }

    #[tokio::test]
    async fn a_dead_or_unavailable_name_server_moves_on() {
        let unavailable = serve_namesrv(MockNamesrv {
            groups: vec![],
            fail: Some(tonic::Code::Unavailable),
        })
        .await;
        let good = serve_namesrv(MockNamesrv {
            groups: vec![group("g1", Some(1), &["127.0.0.1:8081"])],
            fail: None,
        })
        .await;
        let ns = Namesrv::new(
            &["127.0.0.1:1".into(), unavailable.clone(), good],
            Duration::from_secs(3),
        )
        .expect("namesrv");
        let resp = ns.list_groups().await.expect("third answers");
        assert_eq!(resp.groups[0].name, "g1");
        let route = ns.topic_route("orders").await.expect("route");
        assert_eq!(route.groups[0].endpoints, vec!["127.0.0.1:8081".to_string()]);

        let err = ns.topic_route("nope").await.expect_err("not hosted");
        assert_eq!(
            err.to_string(),
            "topic nope is not hosted by any live broker group"
        );

        // None answers: every one is named.
        let ns = Namesrv::new(&["127.0.0.1:1".into(), unavailable], Duration::from_secs(3)).expect("namesrv");
        let err = format!("{:#}", ns.list_groups().await.expect_err("none answers"));
        assert!(err.starts_with("no name server answered (127.0.0.1:1: "), "{err}");
        assert!(err.contains("UNAVAILABLE: mock failure"), "{err}");
    }

    #[tokio::test]
    async fn another_answer_is_final() {
        let refusing = serve_namesrv(MockNamesrv {
            groups: vec![],
            fail: Some(tonic::Code::InvalidArgument),
        })
        .await;
        let good = serve_namesrv(MockNamesrv {
            groups: vec![group("g1", Some(1), &["127.0.0.1:8081"])],
            fail: None,
        })
        .await;
        let ns = Namesrv::new(&[refusing, good], Duration::from_secs(3)).expect("namesrv");
        let err = ns.list_groups().await.expect_err("final");
        assert_eq!(
            err.to_string(),
            "ListGroups failed: INVALID_ARGUMENT: mock failure"
        );
    }

    #[test]
    fn a_name_server_is_required() {
        let err = Namesrv::new(&[" ".into()], Duration::from_secs(1)).expect_err("empty");
        assert!(err.to_string().contains("--namesrv"), "{err}");
    }

    #[test]
    fn only_non_answers_move_on() {
        assert!(try_next(tonic::Code::Unavailable));
        assert!(try_next(tonic::Code::DeadlineExceeded));
        assert!(!try_next(tonic::Code::NotFound));
        assert!(!try_next(tonic::Code::InvalidArgument));
    }
}
