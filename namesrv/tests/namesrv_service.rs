//! A name server in this process, called over gRPC as brokers and clients call it.

use std::time::Duration;
use std::time::Instant;

use raftmq_namesrv::Namesrv;
use raftmq_namesrv::NamesrvConfig;
use raftmq_proto::raftmq::admin::v1 as admin;
use raftmq_proto::raftmq::namesrv::v1 as ns;
use raftmq_proto::raftmq::namesrv::v1::namesrv_service_client::NamesrvServiceClient;
use raftmq_proto::rocketmq::v2 as rmq;
use raftmq_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use tonic::transport::Channel;

async fn start(expiry_ms: u64, scan_interval_ms: u64) -> (Namesrv, Channel) {
    let config = NamesrvConfig {
        listen: "127.0.0.1:0".into(),
        expiry_ms,
        scan_interval_ms,
        ..NamesrvConfig::default()
    };
    let namesrv = Namesrv::start(config).await.expect("start");
    let channel = Channel::from_shared(format!("http://{}", namesrv.local_addr()))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    (namesrv, channel)
}

fn registration(group: &str, node_id: u64, leader: u64, term: u64, port: u16) -> ns::RegisterRequest {
    let role = if node_id == leader {
        ns::Role::Leader
    } else {
        ns::Role::Follower
    };
    ns::RegisterRequest {
        group: group.into(),
        node_id,
        role: role as i32,
        term,
        leader_id: Some(leader),
        client_addr: format!("127.0.0.1:{port}"),
        applied_index: 5,
        topics: vec![admin::TopicSpec {
            name: "orders".into(),
            queues: 2,
            permission: admin::Permission::ReadWrite as i32,
            kind: admin::MessageKind::Normal as i32,
        }],
    }
}

async fn register_group(c: &mut NamesrvServiceClient<Channel>, group: &str, leader: u64, base_port: u16) {
    for id in 1..=3u64 {
        let port = base_port + u16::try_from(id).expect("small");
        c.register(registration(group, id, leader, 1, port))
            .await
            .expect("register");
    }
}

fn query(topic: &str) -> rmq::QueryRouteRequest {
    rmq::QueryRouteRequest {
        topic: Some(rmq::Resource {
            resource_namespace: String::new(),
            name: topic.into(),
        }),
        endpoints: None,
    }
}

fn queue_summary(resp: &rmq::QueryRouteResponse) -> Vec<(String, i32, Vec<i32>)> {
    resp.message_queues
        .iter()
        .map(|q| {
            let b = q.broker.clone().expect("broker");
            let ports = b
                .endpoints
                .map(|e| e.addresses.iter().map(|a| a.port).collect())
                .unwrap_or_default();
            (b.name, q.id, ports)
        })
        .collect()
}

#[tokio::test]
async fn query_route_merges_the_groups_that_registered() {
    let (namesrv, channel) = start(120_000, 5_000).await;
    let mut reg = NamesrvServiceClient::new(channel.clone());
    register_group(&mut reg, "g1", 2, 8080).await;
    register_group(&mut reg, "g2", 1, 8090).await;
    let mut client = MessagingServiceClient::new(channel.clone());
    let resp = client
        .query_route(query("orders"))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(resp.status.as_ref().map(|s| s.code), Some(rmq::Code::Ok as i32));
    assert_eq!(
        queue_summary(&resp),
        [
            ("g1".to_owned(), 0, vec![8082]),
            ("g2".to_owned(), 0, vec![8091]),
            ("g1".to_owned(), 1, vec![8081]),
            ("g2".to_owned(), 1, vec![8092]),
        ],
        "groups alternate; one address per queue, the leader's first"
    );
    // raftmq's own clients ask for every address.
    let mut req = tonic::Request::new(query("orders"));
    req.metadata_mut()
        .insert("x-raftmq-endpoints", "all".parse().expect("value"));
    let resp = client.query_route(req).await.expect("call").into_inner();
    assert_eq!(queue_summary(&resp)[0].2, [8082, 8081, 8083]);
    // The admin view agrees.
    let route = reg
        .topic_route(ns::TopicRouteRequest {
            topic: "orders".into(),
        })
        .await
        .expect("route")
        .into_inner();
    assert_eq!(route.groups.len(), 2);
    assert_eq!(route.groups[0].leader_id, Some(2));
    assert_eq!(route.groups[0].endpoints[0], "127.0.0.1:8082");
    let groups = reg
        .list_groups(ns::ListGroupsRequest {})
        .await
        .expect("groups")
        .into_inner();
    let names: Vec<&str> = groups.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["g1", "g2"]);
    assert_eq!(groups.groups[0].members.len(), 3);
    namesrv.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn unknown_and_illegal_topics_get_the_protocol_codes() {
    let (namesrv, channel) = start(120_000, 5_000).await;
    let mut client = MessagingServiceClient::new(channel.clone());
    let resp = client
        .query_route(query("nothere"))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(resp.status.map(|s| s.code), Some(rmq::Code::TopicNotFound as i32));
    assert!(resp.message_queues.is_empty());
    let resp = client
        .query_route(query("bad topic"))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(resp.status.map(|s| s.code), Some(rmq::Code::IllegalTopic as i32));
    let mut reg = NamesrvServiceClient::new(channel);
    let e = reg
        .topic_route(ns::TopicRouteRequest {
            topic: "nothere".into(),
        })
        .await
        .expect_err("not found");
    assert_eq!(e.code(), tonic::Code::NotFound);
    namesrv.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_malformed_registration_is_refused_and_changes_nothing() {
    let (namesrv, channel) = start(120_000, 5_000).await;
    let mut reg = NamesrvServiceClient::new(channel);
    register_group(&mut reg, "g1", 1, 8080).await;
    let before = reg
        .list_groups(ns::ListGroupsRequest {})
        .await
        .expect("groups")
        .into_inner();
    let bad = [
        ns::RegisterRequest {
            node_id: 0,
            ..registration("g1", 1, 1, 9, 8081)
        },
        ns::RegisterRequest {
            group: "g 1".into(),
            ..registration("g1", 1, 1, 9, 8081)
        },
        ns::RegisterRequest {
            client_addr: "no-port".into(),
            ..registration("g1", 1, 1, 9, 8081)
        },
        ns::RegisterRequest {
            role: 17,
            ..registration("g1", 2, 1, 9, 8082)
        },
    ];
    for req in bad {
        let e = reg.register(req).await.expect_err("refused");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{}", e.message());
    }
    let mut dup = registration("g1", 1, 1, 9, 8081);
    dup.topics.push(dup.topics[0].clone());
    assert_eq!(
        reg.register(dup).await.expect_err("dup").code(),
        tonic::Code::InvalidArgument
    );
    let after = reg
        .list_groups(ns::ListGroupsRequest {})
        .await
        .expect("groups")
        .into_inner();
    let strip = |r: &ns::ListGroupsResponse| {
        r.groups
            .iter()
            .map(|g| {
                (
                    g.name.clone(),
                    g.leader_id,
                    g.term,
                    g.members.iter().map(|m| (m.node_id, m.term)).collect::<Vec<_>>(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&before), strip(&after), "the table is untouched");
    assert_eq!(after.groups[0].term, 1);
    namesrv.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_silent_group_expires_and_returns_when_it_registers_again() {
    let (namesrv, channel) = start(400, 50).await;
    let mut reg = NamesrvServiceClient::new(channel.clone());
    register_group(&mut reg, "g1", 1, 8080).await;
    let mut client = MessagingServiceClient::new(channel);
    let code = |r: &rmq::QueryRouteResponse| r.status.as_ref().map(|s| s.code);
    let resp = client
        .query_route(query("orders"))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&resp), Some(rmq::Code::Ok as i32));
    let silent = Instant::now();
    loop {
        let resp = client
            .query_route(query("orders"))
            .await
            .expect("call")
            .into_inner();
        if code(&resp) == Some(rmq::Code::TopicNotFound as i32) {
            break;
        }
        assert!(
            silent.elapsed() < Duration::from_secs(5),
            "the group never expired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        silent.elapsed() >= Duration::from_millis(350),
        "expired too early: {:?}",
        silent.elapsed()
    );
    register_group(&mut reg, "g1", 1, 8080).await;
    let resp = client
        .query_route(query("orders"))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&resp), Some(rmq::Code::Ok as i32));
    namesrv.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn access_point_calls_are_answered_and_broker_calls_pointed_elsewhere() {
    let (namesrv, channel) = start(120_000, 5_000).await;
    let mut client = MessagingServiceClient::new(channel);
    let hb = client
        .heartbeat(rmq::HeartbeatRequest::default())
        .await
        .expect("heartbeat")
        .into_inner();
    assert_eq!(hb.status.map(|s| s.code), Some(rmq::Code::Ok as i32));
    let settings = rmq::Settings {
        client_type: Some(rmq::ClientType::Producer as i32),
        pub_sub: Some(rmq::settings::PubSub::Publishing(rmq::Publishing::default())),
        ..Default::default()
    };
    let frames = futures_util::stream::iter([rmq::TelemetryCommand {
        status: None,
        command: Some(rmq::telemetry_command::Command::Settings(settings)),
    }]);
    let mut replies = client.telemetry(frames).await.expect("telemetry").into_inner();
    let reply = tokio::time::timeout(Duration::from_secs(5), replies.message())
        .await
        .expect("in time")
        .expect("stream")
        .expect("a reply");
    let Some(rmq::telemetry_command::Command::Settings(s)) = reply.command else {
        panic!("settings expected");
    };
    let Some(rmq::settings::PubSub::Publishing(p)) = s.pub_sub else {
        panic!("publishing expected");
    };
    assert_eq!(p.max_body_size, 4 << 20);
    let send = client
        .send_message(rmq::SendMessageRequest::default())
        .await
        .expect("send")
        .into_inner();
    let st = send.status.expect("status");
    assert_eq!(st.code, rmq::Code::NotImplemented as i32);
    assert!(st.message.contains("name server"), "{}", st.message);
    namesrv.shutdown(Duration::from_secs(1)).await;
}
