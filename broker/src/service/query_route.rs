//! QueryRoute: the queues of a topic and where to reach them.
//!
//! Until namesrv exists a node answers with its own group's queues: one message queue per
//! queue id (always queue 0), on broker id 0 named after the group, with the topic's
//! permission and the one message type the topic accepts.
//!
//! The queues are spread over the group's members: queue `i` is reached at member
//! `i mod n` (by node id), one address each. Every member accepts every call and forwards
//! writes to the leader, so any member serves any queue; the spread is what keeps clients
//! going when a node dies. Official clients refresh routes only every 30 s and nothing is
//! pushed to them, but they retry a failed send at once on the next queue, which then is
//! on another member. (Listing several addresses in one queue's endpoints would let the
//! client's channel fail over by itself, but the official clients then send an HTTP/2
//! `:authority` of `host1:port1,host2:port2`, which our HTTP/2 server refuses as
//! malformed.)
//!
//! raftmq's own client asks for every address (`x-raftmq-endpoints: all`, as at a name
//! server): each queue then lists all members, the leader first, so that its sends go
//! straight to the leader instead of through a follower's relay, and it walks the list
//! itself when the leader fails.

use std::net::IpAddr;
use std::net::SocketAddr;
use std::sync::Arc;

use raftmq_proto::rocketmq::v2 as pb;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use super::status;
use crate::command::MessageKind;
use crate::command::Permission;
use crate::command::Rejection;
use crate::command::TopicConfig;
use crate::context::Broker;
use crate::error::BrokerError;
use crate::error::BrokerResult;
use crate::error::InvalidCode;
use crate::sm::keys;

#[tracing::instrument(name = "query_route", skip_all, fields(topic))]
pub async fn handle(
    broker: &Arc<Broker>,
    req: Request<pb::QueryRouteRequest>,
) -> Result<Response<pb::QueryRouteResponse>, Status> {
    let all = raftmq_proto::route_headers::wants_all_addresses(req.metadata());
    let req = req.into_inner();
    let resp = match route(broker, &req, all) {
        Ok(message_queues) => pb::QueryRouteResponse {
            status: Some(status::ok()),
            message_queues,
        },
        Err(e) => {
            tracing::debug!(error = %e, "route refused");
            pb::QueryRouteResponse {
                status: Some(status::from_error(&e)),
                message_queues: Vec::new(),
            }
        }
    };
    Ok(Response::new(resp))
}

/// The topic's queues: spread over the members one address each, or with `all` every
/// queue listing every member, the leader first.
pub(crate) fn route(
    broker: &Broker,
    req: &pb::QueryRouteRequest,
    all: bool,
) -> BrokerResult<Vec<pb::MessageQueue>> {
    let topic = req.topic.clone().unwrap_or_default();
    tracing::Span::current().record("topic", topic.name.as_str());
    keys::validate_topic_name(&topic.name).map_err(|e| BrokerError::invalid(InvalidCode::IllegalTopic, e))?;
    let config = broker
        .sm
        .topic(&topic.name)?
        .ok_or_else(|| BrokerError::Rejected(Rejection::UnknownTopic(topic.name.clone())))?;
    let mut addrs = member_addrs(broker);
    if all {
        addrs = leader_first(addrs, broker.leader().map(|(_, n)| n.client_addr));
    }
    let endpoints: Vec<pb::Endpoints> = addrs
        .iter()
        .map(|a| {
            endpoints_of(a, req.endpoints.as_ref())
                .ok_or_else(|| BrokerError::Internal(format!("cannot advertise client address {a:?}")))
        })
        .collect::<BrokerResult<Vec<_>>>()?;
    let endpoints = if all { vec![joined(endpoints)] } else { endpoints };
    let target = Target {
        topic,
        broker_name: broker.config.group.clone(),
        endpoints,
    };
    Ok(message_queues(&config, &target))
}

/// Where a topic's queues live.
#[derive(Debug, Clone)]
struct Target {
    /// The topic as the client named it (namespace included).
    topic: pb::Resource,
    broker_name: String,
    /// One per member; queue `i` uses `endpoints[i % len]`.
    endpoints: Vec<pb::Endpoints>,
}

/// One message queue per queue id of the topic (at least queue 0).
fn message_queues(config: &TopicConfig, target: &Target) -> Vec<pb::MessageQueue> {
    let n = target.endpoints.len().max(1);
    (0..config.queues.max(1))
        .map(|id| pb::MessageQueue {
            topic: Some(target.topic.clone()),
            id: i32::try_from(id).unwrap_or(i32::MAX),
            permission: permission(config.permission) as i32,
            broker: Some(pb::Broker {
                name: target.broker_name.clone(),
                id: 0,
                endpoints: target.endpoints.get(id as usize % n).cloned(),
            }),
            accept_message_types: vec![message_type(config.kind) as i32],
        })
        .collect()
}

fn permission(p: Permission) -> pb::Permission {
    match p {
        Permission::Read => pb::Permission::Read,
        Permission::Write => pb::Permission::Write,
        Permission::ReadWrite => pb::Permission::ReadWrite,
    }
}

fn message_type(k: MessageKind) -> pb::MessageType {
    match k {
        MessageKind::Normal => pb::MessageType::Normal,
        MessageKind::Fifo => pb::MessageType::Fifo,
        MessageKind::Delay => pb::MessageType::Delay,
        MessageKind::Transaction => pb::MessageType::Transaction,
    }
}

/// `addrs` with `leader` (if it is one of them) moved to the front.
fn leader_first(mut addrs: Vec<String>, leader: Option<String>) -> Vec<String> {
    if let Some(i) = leader.and_then(|l| addrs.iter().position(|a| *a == l)) {
        addrs[..=i].rotate_right(1);
    }
    addrs
}

/// One endpoint list of every address of `parts`, in order (the first one's scheme).
fn joined(parts: Vec<pb::Endpoints>) -> pb::Endpoints {
    let scheme = parts.first().map_or(0, |e| e.scheme);
    pb::Endpoints {
        scheme,
        addresses: parts.into_iter().flat_map(|e| e.addresses).collect(),
    }
}

/// Client addresses of the group's members by node id (this node's alone if the
/// configuration lists none).
fn member_addrs(broker: &Broker) -> Vec<String> {
    let mut peers: Vec<_> = broker.config.peers.iter().collect();
    peers.sort_by_key(|p| p.id);
    let addrs: Vec<String> = peers.iter().map(|p| p.client_addr.clone()).collect();
    if addrs.is_empty() {
        vec![broker.client_addr().to_owned()]
    } else {
        addrs
    }
}

/// The endpoints of a `host:port` address. A node listening on every interface
/// (`0.0.0.0`, `::`) cannot be reached there: the host the client used (`requested`) is
/// advertised instead.
fn endpoints_of(addr: &str, requested: Option<&pb::Endpoints>) -> Option<pb::Endpoints> {
    let (host, port) = match addr.parse::<SocketAddr>() {
        Ok(sa) if sa.ip().is_unspecified() => {
            let host = requested
                .and_then(|e| e.addresses.first())
                .map_or_else(|| sa.ip().to_string(), |a| a.host.clone());
            (host, sa.port())
        }
        Ok(sa) => (sa.ip().to_string(), sa.port()),
        Err(_) => {
            let (host, port) = addr.rsplit_once(':')?;
            (host.to_owned(), port.parse().ok()?)
        }
    };
    let scheme = match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => pb::AddressScheme::IPv4,
        Ok(IpAddr::V6(_)) => pb::AddressScheme::IPv6,
        Err(_) => pb::AddressScheme::DomainName,
    };
    Some(pb::Endpoints {
        scheme: scheme as i32,
        addresses: vec![pb::Address {
            host,
            port: i32::from(port),
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(host: &str, port: i32) -> pb::Endpoints {
        pb::Endpoints {
            scheme: pb::AddressScheme::DomainName as i32,
            addresses: vec![pb::Address {
                host: host.into(),
                port,
            }],
        }
    }

    #[test]
    fn addresses_become_endpoints_with_their_scheme() {
        let e = endpoints_of("127.0.0.1:8081", None).expect("ipv4");
        assert_eq!(e.scheme, pb::AddressScheme::IPv4 as i32);
        assert_eq!(
            (e.addresses[0].host.as_str(), e.addresses[0].port),
            ("127.0.0.1", 8081)
        );
        let e = endpoints_of("[::1]:8081", None).expect("ipv6");
        assert_eq!(
            (e.scheme, e.addresses[0].host.as_str()),
            (pb::AddressScheme::IPv6 as i32, "::1")
        );
        let e = endpoints_of("broker-a.local:8081", None).expect("domain");
        assert_eq!(e.scheme, pb::AddressScheme::DomainName as i32);
        assert_eq!(e.addresses[0].host, "broker-a.local");
        assert!(endpoints_of("no-port", None).is_none());
    }

    #[test]
    fn asked_for_all_addresses_the_leader_comes_first() {
        let addrs = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let members = addrs(&["a:1", "b:1", "c:1"]);
        assert_eq!(
            leader_first(members.clone(), Some("c:1".into())),
            addrs(&["c:1", "a:1", "b:1"])
        );
        assert_eq!(leader_first(members.clone(), Some("a:1".into())), members);
        assert_eq!(leader_first(members.clone(), Some("elsewhere:1".into())), members);
        assert_eq!(leader_first(members.clone(), None), members);
        let parts = ["10.0.0.1:1", "10.0.0.2:2"]
            .iter()
            .map(|a| endpoints_of(a, None).expect("endpoints"))
            .collect();
        let j = joined(parts);
        assert_eq!(j.scheme, pb::AddressScheme::IPv4 as i32);
        let listed: Vec<(&str, i32)> = j.addresses.iter().map(|a| (a.host.as_str(), a.port)).collect();
        assert_eq!(listed, [("10.0.0.1", 1), ("10.0.0.2", 2)]);
    }

    #[test]
    fn a_wildcard_address_advertises_the_host_the_client_used() {
        let asked = endpoint("10.0.0.7", 9999);
        let e = endpoints_of("0.0.0.0:8081", Some(&asked)).expect("endpoints");
        assert_eq!(e.scheme, pb::AddressScheme::IPv4 as i32);
        assert_eq!(
            (e.addresses[0].host.as_str(), e.addresses[0].port),
            ("10.0.0.7", 8081)
        );
        let e = endpoints_of("0.0.0.0:8081", Some(&endpoint("mq.example", 1))).expect("endpoints");
        assert_eq!(e.scheme, pb::AddressScheme::DomainName as i32);
    }

    #[test]
    fn every_queue_is_on_broker_zero_with_the_topic_permission_and_type() {
        let config = TopicConfig {
            name: "orders".into(),
            queues: 4,
            permission: Permission::ReadWrite,
            kind: MessageKind::Fifo,
        };
        let target = Target {
            topic: pb::Resource {
                resource_namespace: "ns".into(),
                name: "orders".into(),
            },
            broker_name: "broker-a".into(),
            endpoints: vec![endpoint("127.0.0.1", 8081), endpoint("127.0.0.1", 8082)],
        };
        let queues = message_queues(&config, &target);
        assert_eq!(queues.iter().map(|q| q.id).collect::<Vec<_>>(), [0, 1, 2, 3]);
        let ports: Vec<i32> = queues
            .iter()
            .map(|q| {
                q.broker
                    .as_ref()
                    .and_then(|b| b.endpoints.as_ref())
                    .map_or(0, |e| e.addresses[0].port)
            })
            .collect();
        assert_eq!(ports, [8081, 8082, 8081, 8082], "queues spread over the members");
        for q in &queues {
            assert_eq!(q.permission, pb::Permission::ReadWrite as i32);
            assert_eq!(q.accept_message_types, [pb::MessageType::Fifo as i32]);
            let b = q.broker.as_ref().expect("broker");
            assert_eq!((b.name.as_str(), b.id), ("broker-a", 0));
            assert_eq!(b.endpoints.as_ref(), Some(&target.endpoints[q.id as usize % 2]));
            assert_eq!(q.topic.as_ref(), Some(&target.topic));
        }
        let none = TopicConfig {
            queues: 0,
            kind: MessageKind::Normal,
            permission: Permission::Read,
            ..config
        };
        let queues = message_queues(&none, &target);
        assert_eq!(queues.len(), 1, "queue 0 is always there");
        assert_eq!(queues[0].accept_message_types, [pb::MessageType::Normal as i32]);
        assert_eq!(queues[0].permission, pb::Permission::Read as i32);
    }
}
