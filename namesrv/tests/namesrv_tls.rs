//! TLS and plaintext on the name server's one port: official clients that use TLS by
//! default (Java, Go, C#, C++) and plaintext ones (Python, the brokers' registrations) reach
//! the same registry, and a registration records its peer's address either way.

use std::time::Duration;

use raftmq_namesrv::Namesrv;
use raftmq_namesrv::NamesrvConfig;
use raftmq_namesrv::NamesrvError;
use raftmq_proto::raftmq::admin::v1 as admin;
use raftmq_proto::raftmq::namesrv::v1 as ns;
use raftmq_proto::raftmq::namesrv::v1::namesrv_service_client::NamesrvServiceClient;
use raftmq_proto::rocketmq::v2 as rmq;
use raftmq_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use tonic::transport::Certificate;
use tonic::transport::Channel;
use tonic::transport::ClientTlsConfig;
use tonic::transport::Endpoint;

async fn start(config: NamesrvConfig) -> Namesrv {
    Namesrv::start(NamesrvConfig {
        listen: "127.0.0.1:0".into(),
        ..config
    })
    .await
    .expect("start")
}

async fn plaintext(namesrv: &Namesrv) -> Channel {
    Endpoint::from_shared(format!("http://{}", namesrv.local_addr()))
        .expect("uri")
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("connect")
}

/// A TLS channel that trusts `cert_pem` and checks the certificate against `domain`, or
/// against the address's host (an IP) when `None`.
async fn tls(namesrv: &Namesrv, cert_pem: &str, domain: Option<&str>) -> Channel {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(cert_pem));
    if let Some(d) = domain {
        tls = tls.domain_name(d);
    }
    Endpoint::from_shared(format!("https://{}", namesrv.local_addr()))
        .expect("uri")
        .tls_config(tls)
        .expect("tls config")
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("TLS handshake")
}

/// Node 1 of `group`, leader, hosting `orders`, at `client_addr`.
fn registration(group: &str, client_addr: &str) -> ns::RegisterRequest {
    ns::RegisterRequest {
        group: group.into(),
        node_id: 1,
        role: ns::Role::Leader as i32,
        term: 1,
        leader_id: Some(1),
        client_addr: client_addr.into(),
        applied_index: 1,
        topics: vec![admin::TopicSpec {
            name: "orders".into(),
            queues: 1,
            permission: admin::Permission::ReadWrite as i32,
            kind: admin::MessageKind::Normal as i32,
        }],
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

/// Every (group, host, port) the route of `orders` names.
async fn route(channel: Channel) -> Vec<(String, String, i32)> {
    let resp = MessagingServiceClient::new(channel)
        .query_route(query("orders"))
        .await
        .expect("query route")
        .into_inner();
    assert_eq!(resp.status.map(|s| s.code), Some(rmq::Code::Ok as i32));
    let mut seen: Vec<_> = resp
        .message_queues
        .into_iter()
        .flat_map(|q| {
            let b = q.broker.expect("broker");
            let name = b.name;
            b.endpoints
                .map(|e| e.addresses)
                .unwrap_or_default()
                .into_iter()
                .map(move |a| (name.clone(), a.host, a.port))
        })
        .collect();
    seen.sort();
    seen.dedup();
    seen
}

/// The client address each registered group's member is known by.
async fn members(channel: Channel) -> Vec<(String, String)> {
    let groups = NamesrvServiceClient::new(channel)
        .list_groups(ns::ListGroupsRequest {})
        .await
        .expect("list groups")
        .into_inner();
    let mut seen: Vec<_> = groups
        .groups
        .into_iter()
        .flat_map(|g| {
            let name = g.name;
            g.members.into_iter().map(move |m| (name.clone(), m.client_addr))
        })
        .collect();
    seen.sort();
    seen
}

#[tokio::test]
async fn one_port_serves_tls_and_plaintext_clients() {
    let namesrv = start(NamesrvConfig::default()).await;
    let cert = namesrv.tls_cert_pem().to_owned();
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");

    // The ephemeral certificate names `localhost` and the listen host.
    let by_name = tls(&namesrv, &cert, Some("localhost")).await;
    let by_ip = tls(&namesrv, &cert, None).await;
    let plain = plaintext(&namesrv).await;

    // Registrations over either kind of connection; the unspecified host is replaced by
    // the peer's address in both.
    let mut reg_tls = NamesrvServiceClient::new(by_name.clone());
    reg_tls
        .register(registration("g-tls", "0.0.0.0:8081"))
        .await
        .expect("register over TLS");
    let mut reg_plain = NamesrvServiceClient::new(plain.clone());
    reg_plain
        .register(registration("g-plain", "0.0.0.0:8091"))
        .await
        .expect("register in plaintext");

    let expected = vec![
        ("g-plain".to_owned(), "127.0.0.1".to_owned(), 8091),
        ("g-tls".to_owned(), "127.0.0.1".to_owned(), 8081),
    ];
    assert_eq!(route(by_name).await, expected, "QueryRoute over TLS");
    assert_eq!(route(by_ip).await, expected, "QueryRoute over TLS, checked by IP");
    assert_eq!(route(plain.clone()).await, expected, "QueryRoute in plaintext");
    assert_eq!(
        members(plain).await,
        [
            ("g-plain".to_owned(), "127.0.0.1:8091".to_owned()),
            ("g-tls".to_owned(), "127.0.0.1:8081".to_owned()),
        ]
    );
    namesrv.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_plaintext_registration_from_an_unspecified_host_records_the_peer() {
    let namesrv = start(NamesrvConfig::default()).await;
    let mut reg = NamesrvServiceClient::new(plaintext(&namesrv).await);
    reg.register(registration("g1", "0.0.0.0:8081"))
        .await
        .expect("register");
    assert_eq!(
        members(plaintext(&namesrv).await).await,
        [("g1".to_owned(), "127.0.0.1:8081".to_owned())]
    );
    assert_eq!(
        route(plaintext(&namesrv).await).await,
        [("g1".to_owned(), "127.0.0.1".to_owned(), 8081)]
    );
    namesrv.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn configured_pem_files_are_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let generated = rcgen::generate_simple_self_signed(vec!["namesrv.test".to_owned()]).expect("certificate");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, generated.cert.pem()).expect("write cert");
    std::fs::write(&key, generated.key_pair.serialize_pem()).expect("write key");

    let namesrv = start(NamesrvConfig {
        tls_cert_file: Some(cert.clone()),
        tls_key_file: Some(key.clone()),
        ..NamesrvConfig::default()
    })
    .await;
    assert_eq!(namesrv.tls_cert_pem(), generated.cert.pem());
    let channel = tls(&namesrv, &generated.cert.pem(), Some("namesrv.test")).await;
    NamesrvServiceClient::new(channel.clone())
        .register(registration("g1", "127.0.0.1:8081"))
        .await
        .expect("register over TLS");
    assert_eq!(
        route(channel).await,
        [("g1".to_owned(), "127.0.0.1".to_owned(), 8081)]
    );
    namesrv.shutdown(Duration::from_secs(1)).await;

    // Half a pair is refused before anything starts; a missing file names itself.
    let half = Namesrv::start(NamesrvConfig {
        listen: "127.0.0.1:0".into(),
        tls_cert_file: Some(cert),
        ..NamesrvConfig::default()
    })
    .await
    .expect_err("half a pair");
    assert!(matches!(half, NamesrvError::Config(_)), "{half}");
    let missing = dir.path().join("missing.pem");
    let e = Namesrv::start(NamesrvConfig {
        listen: "127.0.0.1:0".into(),
        tls_cert_file: Some(missing.clone()),
        tls_key_file: Some(key),
        ..NamesrvConfig::default()
    })
    .await
    .expect_err("missing file");
    assert!(matches!(e, NamesrvError::Tls(_)), "{e}");
    assert!(e.to_string().contains(&missing.display().to_string()), "{e}");
}
