//! A broker node's registration, checked: what the wire message must satisfy before it
//! may touch the route table. Pure functions; a refused registration changes nothing.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::net::SocketAddr;

use raftmq_proto::raftmq::admin::v1 as admin;
use raftmq_proto::raftmq::namesrv::v1 as pb;

use crate::error::NamesrvError;

/// Longest broker group name (the broker checks it with the topic-name rule).
pub const GROUP_MAX_LEN: usize = 127;
use raftmq_proto::names::GROUP_MAX_LEN as CONSUMER_GROUP_MAX_LEN;
pub use raftmq_proto::names::TOPIC_MAX_LEN;
use raftmq_proto::names::check_name;
/// Most queues a topic has on one group (the broker's limit).
pub const MAX_QUEUES: u32 = 1024;

/// A broker node's Raft role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    Learner,
}

impl Role {
    pub fn to_wire(self) -> pb::Role {
        match self {
            Role::Leader => pb::Role::Leader,
            Role::Follower => pb::Role::Follower,
            Role::Candidate => pb::Role::Candidate,
            Role::Learner => pb::Role::Learner,
        }
    }
}

/// A topic as one group hosts it: already checked, enums known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub queues: u32,
    pub permission: admin::Permission,
    pub kind: admin::MessageKind,
}

impl TopicSpec {
    pub fn to_wire(&self, name: &str) -> admin::TopicSpec {
        admin::TopicSpec {
            name: name.to_owned(),
            queues: self.queues,
            permission: self.permission as i32,
            kind: self.kind as i32,
        }
    }
}

/// A checked registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub group: String,
    pub node_id: u64,
    pub role: Role,
    pub term: u64,
    pub leader_id: Option<u64>,
    /// `host:port`, never an unspecified host.
    pub client_addr: String,
    pub applied_index: u64,
    /// By topic name.
    pub topics: BTreeMap<String, TopicSpec>,
}

fn invalid(detail: impl Into<String>) -> NamesrvError {
    NamesrvError::InvalidRegistration(detail.into())
}

/// Checks a wire registration. `peer` is the address it came from: a node that listens on
/// every interface (`0.0.0.0:8081`) is reachable at the host it registered from.
pub fn check(req: &pb::RegisterRequest, peer: Option<IpAddr>) -> Result<Registration, NamesrvError> {
    check_name("group", &req.group, GROUP_MAX_LEN).map_err(invalid)?;
    if req.node_id == 0 {
        return Err(invalid("node_id must not be 0"));
    }
    let role = match pb::Role::try_from(req.role) {
        Ok(pb::Role::Leader) => Role::Leader,
        Ok(pb::Role::Follower) => Role::Follower,
        Ok(pb::Role::Candidate) => Role::Candidate,
        Ok(pb::Role::Learner) => Role::Learner,
        Ok(pb::Role::Unspecified) | Err(_) => return Err(invalid(format!("unknown role {}", req.role))),
    };
    if role == Role::Leader && req.leader_id.is_some_and(|l| l != req.node_id) {
        return Err(invalid(format!(
            "node {} says it leads but names leader {:?}",
            req.node_id, req.leader_id
        )));
    }
    let leader_id = match role {
        Role::Leader => Some(req.node_id),
        _ => req.leader_id.filter(|l| *l != 0),
    };
    let client_addr = client_addr(&req.client_addr, peer)?;
    let mut topics = BTreeMap::new();
    for spec in &req.topics {
        let (name, spec) = check_topic(spec)?;
        if topics.insert(name.clone(), spec).is_some() {
            return Err(invalid(format!("topic {name} is listed twice")));
        }
    }
    Ok(Registration {
        group: req.group.clone(),
        node_id: req.node_id,
        role,
        term: req.term,
        leader_id,
        client_addr,
        applied_index: req.applied_index,
        topics,
    })
}

fn check_topic(spec: &admin::TopicSpec) -> Result<(String, TopicSpec), NamesrvError> {
    check_topic_name(&spec.name).map_err(invalid)?;
    if spec.queues == 0 || spec.queues > MAX_QUEUES {
        return Err(invalid(format!(
            "topic {} has {} queues, allowed 1..={MAX_QUEUES}",
            spec.name, spec.queues
        )));
    }
    let permission = match admin::Permission::try_from(spec.permission) {
        Ok(admin::Permission::Unspecified) => admin::Permission::ReadWrite,
        Ok(p) => p,
        Err(_) => {
            return Err(invalid(format!(
                "topic {}: unknown permission {}",
                spec.name, spec.permission
            )));
        }
    };
    let kind = match admin::MessageKind::try_from(spec.kind) {
        Ok(admin::MessageKind::KindUnspecified) => admin::MessageKind::Normal,
        Ok(k) => k,
        Err(_) => {
            return Err(invalid(format!(
                "topic {}: unknown kind {}",
                spec.name, spec.kind
            )));
        }
    };
    Ok((
        spec.name.clone(),
        TopicSpec {
            queues: spec.queues,
            permission,
            kind,
        },
    ))
}

/// `host:port` with a port in 1..=65535; an unspecified IP is replaced by `peer`.
fn client_addr(addr: &str, peer: Option<IpAddr>) -> Result<String, NamesrvError> {
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        if sa.port() == 0 {
            return Err(invalid(format!("client_addr {addr:?} has port 0")));
        }
        if !sa.ip().is_unspecified() {
            return Ok(sa.to_string());
        }
        let Some(ip) = peer else {
            return Err(invalid(format!(
                "client_addr {addr:?} names no host and the registration's origin is unknown"
            )));
        };
        return Ok(SocketAddr::new(ip, sa.port()).to_string());
    }
    let bad = || invalid(format!("client_addr {addr:?} is not host:port"));
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.'));
    if port == 0 || !host_ok {
        return Err(bad());
    }
    Ok(addr.to_owned())
}

/// RocketMQ's topic name rule: `[A-Za-z0-9_%|-]`, 1..=127 bytes.
pub fn check_topic_name(name: &str) -> Result<(), String> {
    check_name("topic", name, TOPIC_MAX_LEN)?;
    Ok(())
}

/// RocketMQ's consumer group rule: `[A-Za-z0-9_%|-]`, up to 255 bytes; empty means none.
pub fn check_consumer_group(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Ok(());
    }
    check_name("consumer group", name, CONSUMER_GROUP_MAX_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn request(group: &str, node_id: u64, role: pb::Role, term: u64) -> pb::RegisterRequest {
        pb::RegisterRequest {
            group: group.into(),
            node_id,
            role: role as i32,
            term,
            leader_id: (role == pb::Role::Leader).then_some(node_id),
            client_addr: format!("127.0.0.1:{}", 8080 + node_id),
            applied_index: 1,
            topics: vec![admin::TopicSpec {
                name: "orders".into(),
                queues: 4,
                permission: 0,
                kind: admin::MessageKind::Fifo as i32,
            }],
        }
    }

    #[test]
    fn a_good_registration_is_taken_with_defaults_filled_in() {
        let r = check(&request("g1", 2, pb::Role::Leader, 7), None).expect("valid");
        assert_eq!(
            (r.group.as_str(), r.node_id, r.role, r.term),
            ("g1", 2, Role::Leader, 7)
        );
        assert_eq!(r.leader_id, Some(2));
        assert_eq!(r.client_addr, "127.0.0.1:8082");
        let t = &r.topics["orders"];
        assert_eq!(t.permission, admin::Permission::ReadWrite);
        assert_eq!(t.kind, admin::MessageKind::Fifo);
    }

    #[test]
    fn malformed_registrations_are_refused_with_the_reason() {
        let base = request("g1", 1, pb::Role::Follower, 3);
        let cases: Vec<(pb::RegisterRequest, &str)> = vec![
            (
                pb::RegisterRequest {
                    group: String::new(),
                    ..base.clone()
                },
                "group name is empty",
            ),
            (
                pb::RegisterRequest {
                    group: "a b".into(),
                    ..base.clone()
                },
                "contains ' '",
            ),
            (
                pb::RegisterRequest {
                    node_id: 0,
                    ..base.clone()
                },
                "node_id",
            ),
            (
                pb::RegisterRequest {
                    role: 0,
                    ..base.clone()
                },
                "unknown role",
            ),
            (
                pb::RegisterRequest {
                    role: 42,
                    ..base.clone()
                },
                "unknown role",
            ),
            (
                pb::RegisterRequest {
                    client_addr: "nowhere".into(),
                    ..base.clone()
                },
                "host:port",
            ),
            (
                pb::RegisterRequest {
                    client_addr: "h:0".into(),
                    ..base.clone()
                },
                "host:port",
            ),
            (
                pb::RegisterRequest {
                    client_addr: "0.0.0.0:8081".into(),
                    ..base.clone()
                },
                "names no host",
            ),
            (
                pb::RegisterRequest {
                    role: pb::Role::Leader as i32,
                    leader_id: Some(9),
                    ..base.clone()
                },
                "says it leads",
            ),
        ];
        for (req, why) in cases {
            let e = check(&req, None).expect_err(why).to_string();
            assert!(e.contains(why), "{e} should mention {why}");
        }
        let mut twice = base.clone();
        twice.topics.push(twice.topics[0].clone());
        assert!(check(&twice, None).is_err());
        let mut bad_topic = base.clone();
        bad_topic.topics[0].queues = 0;
        assert!(check(&bad_topic, None).is_err());
        bad_topic.topics[0].queues = 1;
        bad_topic.topics[0].kind = 99;
        assert!(check(&bad_topic, None).is_err());
        bad_topic.topics[0].kind = 0;
        bad_topic.topics[0].name = "x/y".into();
        assert!(check(&bad_topic, None).is_err());
    }

    #[test]
    fn an_unspecified_host_becomes_the_registering_peer() {
        let req = pb::RegisterRequest {
            client_addr: "0.0.0.0:8081".into(),
            ..request("g1", 1, pb::Role::Follower, 1)
        };
        let r = check(&req, Some("10.1.2.3".parse().expect("ip"))).expect("valid");
        assert_eq!(r.client_addr, "10.1.2.3:8081");
        let req = pb::RegisterRequest {
            client_addr: "broker-1.local:8081".into(),
            ..request("g1", 1, pb::Role::Follower, 1)
        };
        assert_eq!(
            check(&req, None).expect("valid").client_addr,
            "broker-1.local:8081"
        );
    }
}
