//! QueryRoute at the access point: every broker group hosting the topic, merged.
//!
//! Each group contributes its queues `0..n` on broker `{name: group, id: 0}`. Queues of
//! different groups alternate in the answer (g1 q0, g2 q0, g1 q1, …): the official clients
//! retry a failed send on the next queue, which then belongs to another group.
//!
//! Which addresses a queue names depends on the client:
//! - A client that sends `x-raftmq-endpoints: all` (raftmq's own) gets every live member
//!   of the group, the leader first, on every queue, and fails over along that list.
//! - Any other client gets one address per queue: the group's members taken in turn,
//!   the leader first (queue 0 on the leader, queue 1 on the next member, …), skipping
//!   members that have not registered since the group's last election (most likely
//!   down; they expire after 120 s). The
//!   official clients turn a multi-address endpoint into an HTTP/2 `:authority` of
//!   `host1:port1,host2:port2`, which raftmq's HTTP/2 server refuses; and they refresh
//!   routes only every 30 s. Every member serves every queue (followers forward writes
//!   to the leader), so spreading keeps a client going when one node dies: its retry
//!   lands on a queue of another member.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use raftmq_proto::raftmq::admin::v1 as admin;
use raftmq_proto::rocketmq::v2 as pb;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use raftmq_proto::route_headers::wants_all_addresses;

use crate::error;
use crate::registry::Registry;
use crate::route_table::GroupRoute;

#[tracing::instrument(name = "query_route", skip_all, fields(topic))]
pub async fn handle(
    registry: &Arc<Registry>,
    req: Request<pb::QueryRouteRequest>,
) -> Result<Response<pb::QueryRouteResponse>, Status> {
    let all = wants_all_addresses(req.metadata());
    let req = req.into_inner();
    let topic = req.topic.unwrap_or_default();
    tracing::Span::current().record("topic", topic.name.as_str());
    let resp = match registry.route(&topic.name, Instant::now()) {
        Ok(routes) => pb::QueryRouteResponse {
            status: Some(error::ok()),
            message_queues: message_queues(&topic, &routes, all),
        },
        Err(e) => {
            tracing::debug!(error = %e, "route refused");
            pb::QueryRouteResponse {
                status: Some(e.to_rocketmq()),
                message_queues: Vec::new(),
            }
        }
    };
    Ok(Response::new(resp))
}

/// The message queues of `routes`, groups alternating.
pub fn message_queues(topic: &pb::Resource, routes: &[GroupRoute], all: bool) -> Vec<pb::MessageQueue> {
    let most = routes.iter().map(|r| r.spec.queues).max().unwrap_or(0);
    let mut out = Vec::new();
    for id in 0..most {
        for r in routes.iter().filter(|r| id < r.spec.queues) {
            let current = r.current.clamp(1, r.endpoints.len().max(1));
            let addrs: &[String] = if all || r.endpoints.is_empty() {
                &r.endpoints
            } else {
                let i = id as usize % current;
                &r.endpoints[i..=i]
            };
            out.push(pb::MessageQueue {
                topic: Some(topic.clone()),
                id: i32::try_from(id).unwrap_or(i32::MAX),
                permission: permission(r.spec.permission) as i32,
                broker: Some(pb::Broker {
                    name: r.group.clone(),
                    id: 0,
                    endpoints: endpoints_of(addrs),
                }),
                accept_message_types: vec![message_type(r.spec.kind) as i32],
            });
        }
    }
    out
}

fn permission(p: admin::Permission) -> pb::Permission {
    match p {
        admin::Permission::Read => pb::Permission::Read,
        admin::Permission::Write => pb::Permission::Write,
        admin::Permission::ReadWrite | admin::Permission::Unspecified => pb::Permission::ReadWrite,
    }
}

fn message_type(k: admin::MessageKind) -> pb::MessageType {
    match k {
        admin::MessageKind::Fifo => pb::MessageType::Fifo,
        admin::MessageKind::Delay => pb::MessageType::Delay,
        admin::MessageKind::Transaction => pb::MessageType::Transaction,
        admin::MessageKind::Normal | admin::MessageKind::KindUnspecified => pb::MessageType::Normal,
    }
}

fn scheme_of(host: &str) -> pb::AddressScheme {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => pb::AddressScheme::IPv4,
        Ok(IpAddr::V6(_)) => pb::AddressScheme::IPv6,
        Err(_) => pb::AddressScheme::DomainName,
    }
}

/// `host:port` addresses as endpoints. One endpoints value has one scheme: addresses of
/// another scheme than the first's are left out.
pub fn endpoints_of(addrs: &[String]) -> Option<pb::Endpoints> {
    let parsed: Vec<(String, u16)> = addrs
        .iter()
        .filter_map(|a| {
            let (host, port) = a.rsplit_once(':')?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            Some((host.to_owned(), port.parse().ok()?))
        })
        .collect();
    let scheme = scheme_of(&parsed.first()?.0);
    let addresses = parsed
        .into_iter()
        .filter(|(h, _)| scheme_of(h) == scheme)
        .map(|(host, port)| pb::Address {
            host,
            port: i32::from(port),
        })
        .collect();
    Some(pb::Endpoints {
        scheme: scheme as i32,
        addresses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registration::TopicSpec;

    fn route(group: &str, queues: u32, endpoints: &[&str]) -> GroupRoute {
        GroupRoute {
            group: group.into(),
            spec: TopicSpec {
                queues,
                permission: admin::Permission::ReadWrite,
                kind: admin::MessageKind::Fifo,
            },
            endpoints: endpoints.iter().map(|s| (*s).to_owned()).collect(),
            current: endpoints.len(),
            leader_id: Some(1),
        }
    }

    fn summary(queues: &[pb::MessageQueue]) -> Vec<(String, i32, Vec<i32>)> {
        queues
            .iter()
            .map(|q| {
                let b = q.broker.as_ref().expect("broker");
                let ports = b
                    .endpoints
                    .as_ref()
                    .map(|e| e.addresses.iter().map(|a| a.port).collect())
                    .unwrap_or_default();
                (b.name.clone(), q.id, ports)
            })
            .collect()
    }

    #[test]
    fn groups_alternate_and_one_address_per_queue_goes_round_the_members() {
        let topic = pb::Resource {
            resource_namespace: "ns".into(),
            name: "orders".into(),
        };
        let routes = [
            route("g1", 3, &["127.0.0.1:8082", "127.0.0.1:8081"]),
            route("g2", 1, &["127.0.0.1:8091"]),
        ];
        let queues = message_queues(&topic, &routes, false);
        assert_eq!(
            summary(&queues),
            [
                ("g1".to_owned(), 0, vec![8082]),
                ("g2".to_owned(), 0, vec![8091]),
                ("g1".to_owned(), 1, vec![8081]),
                ("g1".to_owned(), 2, vec![8082]),
            ]
        );
        for q in &queues {
            assert_eq!(q.topic.as_ref(), Some(&topic));
            assert_eq!(q.permission, pb::Permission::ReadWrite as i32);
            assert_eq!(q.accept_message_types, [pb::MessageType::Fifo as i32]);
            assert_eq!(q.broker.as_ref().map(|b| b.id), Some(0));
        }
        let mut stale = routes.clone();
        stale[0].current = 1;
        let spread: Vec<Vec<i32>> = summary(&message_queues(&topic, &stale, false))
            .into_iter()
            .filter(|q| q.0 == "g1")
            .map(|q| q.2)
            .collect();
        assert_eq!(
            spread,
            [vec![8082], vec![8082], vec![8082]],
            "a stale member gets no queue"
        );
        let all = message_queues(&topic, &routes, true);
        assert_eq!(summary(&all)[0].2, [8082, 8081], "leader first, every member");
        assert_eq!(summary(&all)[3].2, [8082, 8081]);
    }

    #[test]
    fn endpoints_carry_the_scheme_of_their_hosts() {
        let e = endpoints_of(&["127.0.0.1:8081".into()]).expect("v4");
        assert_eq!(e.scheme, pb::AddressScheme::IPv4 as i32);
        let e = endpoints_of(&["[::1]:8081".into()]).expect("v6");
        assert_eq!(
            (e.scheme, e.addresses[0].host.as_str()),
            (pb::AddressScheme::IPv6 as i32, "::1")
        );
        let e = endpoints_of(&["mq-a.local:8081".into(), "10.0.0.1:8081".into()]).expect("dns");
        assert_eq!(e.scheme, pb::AddressScheme::DomainName as i32);
        assert_eq!(e.addresses.len(), 1, "one scheme per endpoints");
        assert!(endpoints_of(&[]).is_none());
    }
}
