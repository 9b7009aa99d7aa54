//! TLS and plaintext on one client port: a TLS client (trusting the node's generated
//! certificate) and a plaintext client both get answers from the same port.

mod process_common;

use std::time::Duration;

use process_common::*;
use raftmq_proto::raftmq::admin::v1 as admin;
use raftmq_proto::raftmq::admin::v1::admin_service_client::AdminServiceClient;
use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use tonic::transport::Certificate;
use tonic::transport::ClientTlsConfig;
use tonic::transport::Endpoint;

const TOPIC_NOT_FOUND: i32 = 40402;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_port_serves_tls_and_plaintext_clients() -> anyhow::Result<()> {
    let g = ProcGroup::start(1)?;
    g.wait_leader(&[1]).await?;
    let cert = std::fs::read(g.dir.path().join("node-1/tls/cert.pem"))?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(cert))
        .domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://{}", g.client_addr(1)))?
        .tls_config(tls)?
        .timeout(Duration::from_secs(10))
        .connect()
        .await?;

    let mut admin_tls = AdminServiceClient::new(channel.clone());
    let status = admin_tls
        .cluster_status(admin::ClusterStatusRequest {})
        .await?
        .into_inner();
    assert_eq!(status.leader_id, Some(1));

    let route = pb::QueryRouteRequest {
        topic: Some(pb::Resource {
            resource_namespace: String::new(),
            name: "nope".into(),
        }),
        endpoints: None,
    };
    let mut tls_client = MessagingServiceClient::new(channel);
    let resp = tls_client.query_route(route.clone()).await?.into_inner();
    assert_eq!(resp.status.map(|s| s.code), Some(TOPIC_NOT_FOUND));

    let mut plain = g.messaging(1).await?;
    let resp = plain.query_route(route).await?.into_inner();
    assert_eq!(resp.status.map(|s| s.code), Some(TOPIC_NOT_FOUND));
    Ok(())
}
