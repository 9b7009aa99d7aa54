//! Name servers and several broker groups as real processes: registration, routes that
//! merge groups, a leader change reaching the routes, a silent group leaving them, and a
//! dead name server.

mod process_common;

use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;
use process_common::NamesrvProc;
use process_common::ProcGroup;
use process_common::WAIT;
use raftmq_proto::raftmq::admin::v1 as admin;
use raftmq_proto::raftmq::namesrv::v1 as ns;
use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;

/// Broker config lines that register with `namesrvs` every `interval_ms`.
fn registering(namesrvs: &[&NamesrvProc], interval_ms: u64) -> String {
    let list: Vec<String> = namesrvs.iter().map(|n| format!("{:?}", n.addr)).collect();
    format!(
        "namesrv = [{}]\nregister_interval_ms = {interval_ms}\nregister_timeout_ms = {}\n",
        list.join(", "),
        interval_ms.min(3_000) / 2
    )
}

/// The name server's route of `topic`, or None while it has none.
async fn route(n: &NamesrvProc, topic: &str) -> Option<ns::TopicRouteResponse> {
    let mut c = n.registry().ok()?;
    c.topic_route(ns::TopicRouteRequest { topic: topic.into() })
        .await
        .ok()
        .map(tonic::Response::into_inner)
}

/// Waits until `cond` holds for the route of `topic` (None: no route).
async fn wait_route(
    n: &NamesrvProc,
    topic: &str,
    what: &str,
    cond: impl Fn(Option<&ns::TopicRouteResponse>) -> bool,
) -> anyhow::Result<Option<ns::TopicRouteResponse>> {
    let deadline = Instant::now() + WAIT;
    loop {
        let r = route(n, topic).await;
        if cond(r.as_ref()) {
            return Ok(r);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "route of {topic} never became: {what}; last {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn leaders(r: Option<&ns::TopicRouteResponse>) -> Vec<(String, Option<u64>)> {
    r.map(|r| r.groups.iter().map(|g| (g.group.clone(), g.leader_id)).collect())
        .unwrap_or_default()
}

fn both_led(r: Option<&ns::TopicRouteResponse>) -> bool {
    let l = leaders(r);
    l.len() == 2 && l.iter().all(|(_, id)| id.is_some())
}

/// Sum of the topic's queue max offsets on a group.
async fn stored(g: &ProcGroup, topic: &str) -> anyhow::Result<u64> {
    let leader = g
        .wait_leader(&g.nodes.keys().copied().collect::<Vec<_>>())
        .await?;
    let list = g
        .admin(leader)
        .await?
        .list_topics(admin::ListTopicsRequest {})
        .await?
        .into_inner();
    Ok(list
        .topics
        .iter()
        .filter(|t| t.spec.as_ref().is_some_and(|s| s.name == topic))
        .flat_map(|t| t.queues.iter().map(|q| q.max_offset))
        .sum())
}

/// Sends one message on every queue QueryRoute (at the name server) returns, to the
/// queue's first endpoint.
async fn send_on_every_queue(n: &NamesrvProc, topic: &str) -> anyhow::Result<usize> {
    let mut client = n.messaging()?;
    let req = pb::QueryRouteRequest {
        topic: Some(pb::Resource {
            resource_namespace: String::new(),
            name: topic.into(),
        }),
        endpoints: None,
    };
    let resp = client.query_route(req).await?.into_inner();
    anyhow::ensure!(
        resp.status.as_ref().map(|s| s.code) == Some(pb::Code::Ok as i32),
        "{resp:?}"
    );
    for (i, q) in resp.message_queues.iter().enumerate() {
        let ep = q
            .broker
            .as_ref()
            .and_then(|b| b.endpoints.as_ref())
            .context("absent")?;
        let a = ep.addresses.first().context("absent")?;
        let ch =
            tonic::transport::Endpoint::from_shared(format!("http://{}:{}", a.host, a.port))?.connect_lazy();
        let mut broker = MessagingServiceClient::new(ch);
        let m = process_common::message(topic, &format!("msg-{i}"), b"hello", None);
        process_common::send(&mut broker, m).await?;
    }
    Ok(resp.message_queues.len())
}

/// Two groups behind one name server: the route merges them, sends through it land on
/// both, and after a leader kill the route names the new leader within 2 s of its
/// election.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_merge_groups_and_follow_a_new_leader_within_two_seconds() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let n = NamesrvProc::start(tmp.path(), &[])?;
    let cfg = registering(&[&n], 30_000);
    let mut g1 = ProcGroup::start_named("g1", 3, &cfg)?;
    let g2 = ProcGroup::start_named("g2", 3, &cfg)?;
    g1.create_topic("spread", 4, admin::MessageKind::Normal).await?;
    g2.create_topic("spread", 2, admin::MessageKind::Normal).await?;
    let r = wait_route(&n, "spread", "both groups led", both_led).await?;
    let queues: Vec<u32> = r
        .iter()
        .flat_map(|r| r.groups.iter().filter_map(|g| g.spec.as_ref().map(|s| s.queues)))
        .collect();
    assert_eq!(queues, [4, 2]);

    assert_eq!(send_on_every_queue(&n, "spread").await?, 6);
    assert_eq!(stored(&g1, "spread").await?, 4, "one message per g1 queue");
    assert_eq!(stored(&g2, "spread").await?, 2, "one message per g2 queue");

    let old = g1.wait_leader(&[1, 2, 3]).await?;
    g1.kill(old)?;
    let killed = Instant::now();
    let rest: Vec<u64> = [1, 2, 3].into_iter().filter(|i| *i != old).collect();
    let mut elected: Option<(u64, Instant)> = None;
    let mut routed: Option<Instant> = None;
    while elected.is_none() || routed.is_none() {
        anyhow::ensure!(
            killed.elapsed() < WAIT,
            "no new leader routed: {elected:?} {routed:?}"
        );
        if elected.is_none() {
            for &id in &rest {
                let Ok(mut a) = g1.admin(id).await else { continue };
                if let Ok(s) = a.cluster_status(admin::ClusterStatusRequest {}).await
                    && let Some(l) = s.into_inner().leader_id
                    && l != old
                {
                    elected = Some((l, Instant::now()));
                    break;
                }
            }
        }
        let r = route(&n, "spread").await;
        let g1_leader = leaders(r.as_ref())
            .into_iter()
            .find(|(g, _)| g == "g1")
            .and_then(|(_, l)| l);
        if routed.is_none() && g1_leader.is_some_and(|l| l != old) {
            routed = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (new, at) = elected.context("absent")?;
    let routed = routed.context("absent")?;
    let delay = routed.saturating_duration_since(at);
    println!(
        "leader {old} killed; node {new} elected (seen) after {:?}; route updated {:?} after the election",
        at - killed,
        delay
    );
    assert!(
        delay < Duration::from_secs(2),
        "route followed the new leader after {delay:?}"
    );
    let r = route(&n, "spread").await.context("absent")?;
    let g1r = r.groups.iter().find(|g| g.group == "g1").context("absent")?;
    assert_eq!(
        g1r.endpoints[0],
        g1.client_addr(new),
        "the new leader's address first"
    );
    assert_eq!(
        send_on_every_queue(&n, "spread").await?,
        6,
        "sends work through the new route"
    );
    Ok(())
}

/// A group whose every node stops leaves the routes after the expiry, and comes back
/// when it starts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_group_leaves_the_routes_after_the_expiry_and_returns() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let n = NamesrvProc::start(tmp.path(), &["--expiry-ms", "3000", "--scan-interval-ms", "500"])?;
    let cfg = registering(&[&n], 1_000);
    let g1 = ProcGroup::start_named("g1", 3, &cfg)?;
    let mut g2 = ProcGroup::start_named("g2", 3, &cfg)?;
    g1.create_topic("t", 2, admin::MessageKind::Normal).await?;
    g2.create_topic("t", 2, admin::MessageKind::Normal).await?;
    wait_route(&n, "t", "both groups led", both_led).await?;

    for id in [1, 2, 3] {
        assert!(g2.terminate(id)?, "g2 node {id} stops cleanly");
    }
    let stopped = Instant::now();
    wait_route(&n, "t", "g1 alone", |r| {
        leaders(r).iter().map(|(g, _)| g.as_str()).collect::<Vec<_>>() == ["g1"]
    })
    .await?;
    let gone = stopped.elapsed();
    println!("g2 stopped; left the routes after {gone:?} (expiry 3 s)");
    // The last registration may be up to one interval (1 s) older than the stop.
    assert!(gone >= Duration::from_millis(1_900), "left too early: {gone:?}");
    assert!(gone < Duration::from_secs(6), "left too late: {gone:?}");
    // Reads ignore an expired node at once; the next scan (every 500 ms) drops and logs it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !n.log_text().contains("dropped from the routes") {
        assert!(Instant::now() < deadline, "the expiry is never logged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    for id in [1, 2, 3] {
        g2.start_node(id)?;
    }
    let restarted = Instant::now();
    wait_route(&n, "t", "g2 back", both_led).await?;
    println!("g2 restarted; back in the routes after {:?}", restarted.elapsed());
    Ok(())
}

/// With two name servers, killing one leaves the other serving the same routes; a client
/// with both addresses moves on; a restarted name server learns the registry again from
/// the brokers; a malformed registration is refused and logged and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_name_servers_dies_and_clients_keep_working() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut n1 = NamesrvProc::start(tmp.path(), &[])?;
    let n2 = NamesrvProc::start(tmp.path(), &[])?;
    let cfg = registering(&[&n1, &n2], 1_000);
    let g1 = ProcGroup::start_named("g1", 3, &cfg)?;
    g1.create_topic("t", 2, admin::MessageKind::Normal).await?;
    for n in [&n1, &n2] {
        wait_route(n, "t", "g1 led", |r| leaders(r).iter().any(|(_, l)| l.is_some())).await?;
    }
    n1.kill()?;
    // A client given both name servers: the first fails, the second answers.
    let mut sent = 0;
    for n in [&n1, &n2] {
        match send_on_every_queue(n, "t").await {
            Ok(k) => {
                sent = k;
                break;
            }
            Err(e) => println!("name server {} failed ({e}); trying the next", n.addr),
        }
    }
    assert_eq!(sent, 2, "sent through the surviving name server");
    assert_eq!(stored(&g1, "t").await?, 2);

    // A malformed registration: refused, logged, the table unchanged.
    let before = route(&n2, "t").await.context("absent")?;
    let bad = ns::RegisterRequest {
        group: "g1".into(),
        node_id: 0,
        role: ns::Role::Leader as i32,
        term: 999,
        ..Default::default()
    };
    let e = n2.registry()?.register(bad).await.expect_err("refused");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let after = route(&n2, "t").await.context("absent")?;
    assert_eq!(leaders(Some(&before)), leaders(Some(&after)));
    assert!(
        n2.log_text().contains("registration refused"),
        "the refusal is logged"
    );

    // A restarted name server knows nothing until the brokers' next registration.
    n1.restart(&[])?;
    let back = Instant::now();
    wait_route(&n1, "t", "g1 led again", |r| {
        leaders(r).iter().any(|(_, l)| l.is_some())
    })
    .await?;
    println!("restarted name server routed g1 again after {:?}", back.elapsed());
    assert!(back.elapsed() < Duration::from_secs(5));
    Ok(())
}
