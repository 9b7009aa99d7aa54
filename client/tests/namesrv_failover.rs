//! Name-server failover against real processes: two name servers and two three-node
//! broker groups registering with both. The first name server is killed; a producer and
//! a simple consumer built afterwards with both addresses, the dead one first, must find
//! their routes through the second and send and receive as usual.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::time::Duration;
use std::time::Instant;

use anyhow::ensure;
use raftmq_client::FilterExpression;
use raftmq_client::Message;
use raftmq_client::Producer;
use raftmq_client::SimpleConsumer;
use raftmq_proto::raftmq::admin::v1 as admin;
use raftmq_proto::raftmq::namesrv::v1::TopicRouteRequest;
use raftmq_testkit::Cluster;
use raftmq_testkit::NamesrvProc;

const GROUPS: [&str; 2] = ["g1", "g2"];
const REGISTER_MS: u64 = 300;
const TOPIC: &str = "ns-failover";
const MESSAGES: usize = 40;

/// Waits until `ns` routes `topic` on every group of `GROUPS`, each with a leader.
async fn wait_routed(ns: &NamesrvProc, topic: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let last = match ns
            .registry()?
            .topic_route(TopicRouteRequest { topic: topic.into() })
            .await
        {
            Ok(r) => {
                let groups = &r.get_ref().groups;
                let names: BTreeSet<&str> = groups.iter().map(|g| g.group.as_str()).collect();
                if names == GROUPS.into_iter().collect() && groups.iter().all(|g| g.leader_id.is_some()) {
                    return Ok(());
                }
                format!("{groups:?}")
            }
            Err(e) => e.to_string(),
        };
        ensure!(
            Instant::now() < deadline,
            "{} never routed {topic} on {GROUPS:?}; last answer: {last}",
            ns.addr
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_fail_over_to_the_second_name_server() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(2, &GROUPS, REGISTER_MS, "").await?;
    cluster.create_topic(TOPIC, 4, admin::MessageKind::Normal).await?;
    wait_routed(&cluster.namesrvs[1], TOPIC).await?;
    let access = cluster.access_points();
    let dead = access[0].clone();
    cluster.namesrvs[0].kill()?;
    ensure!(
        tokio::net::TcpStream::connect(&dead).await.is_err(),
        "the killed name server {dead} still accepts connections"
    );

    // Built after the kill, so that nothing is cached from the dead name server.
    let t = Instant::now();
    let p = Producer::builder()
        .access_points(access.clone())
        .producer_group("ns-failover-producer")
        .start()
        .await?;
    let first = p.send(Message::new(TOPIC, "body-0")).await?;
    let first_send = t.elapsed();
    let mut receipts = vec![first];
    for i in 1..MESSAGES {
        receipts.push(p.send(Message::new(TOPIC, format!("body-{i}"))).await?);
    }
    let mut per_group: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &receipts {
        *per_group.entry(r.broker.as_str()).or_default() += 1;
    }
    eprintln!(
        "name server {dead} dead: producer start and first send {first_send:?}; \
         {MESSAGES} sends ok, per group {per_group:?}"
    );
    ensure!(
        per_group.len() == GROUPS.len(),
        "the route through the second name server names both groups: {per_group:?}"
    );
    p.shutdown().await;

    let t = Instant::now();
    let c = SimpleConsumer::builder()
        .access_points(access)
        .consumer_group("ns-failover-consumer")
        .subscribe(TOPIC, FilterExpression::all())
        .await_duration(Duration::from_secs(2))
        .build()
        .await?;
    let mut missing: BTreeSet<String> = receipts.iter().map(|r| r.message_id.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !missing.is_empty() {
        ensure!(
            Instant::now() < deadline,
            "{} of {MESSAGES} never received: {missing:?}",
            missing.len()
        );
        for m in c.receive(32, Duration::from_secs(30)).await? {
            ensure!(
                missing.remove(&m.message_id),
                "{} unexpected or received twice",
                m.message_id
            );
            c.ack(&m).await?;
        }
    }
    eprintln!("consumer received and acked all {MESSAGES} in {:?}", t.elapsed());
    c.shutdown().await;
    Ok(())
}
