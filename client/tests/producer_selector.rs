//! The producer against real processes (one name server, groups g1 and g2): ordered
//! sends to queues a selector picks, routes refreshed while clients run; and the
//! builder's checks, which need no cluster.

use std::collections::BTreeMap;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use anyhow::ensure;
use raftmq_client::ClientConfig;
use raftmq_client::ClientError;
use raftmq_client::FilterExpression;
use raftmq_client::Message;
use raftmq_client::Producer;
use raftmq_client::PullConsumer;
use raftmq_client::StartFrom;
use raftmq_client::producer::QueueSelector;
use raftmq_client::producer::SendReceipt;
use raftmq_client::producer::select::broker_queue_id;
use raftmq_client::route::MessageQueue;
use raftmq_proto::raftmq::admin::v1 as admin;
use raftmq_proto::raftmq::namesrv::v1::TopicRouteRequest;
use raftmq_testkit::Cluster;
use raftmq_testkit::step;

const GROUPS: [&str; 2] = ["g1", "g2"];
const REGISTER_MS: u64 = 300;
/// Messages each key sends.
const PER_KEY: usize = 25;

/// A selector of one queue, by broker group and id.
fn queue(broker: &'static str, id: i32) -> impl QueueSelector {
    move |qs: &[MessageQueue], _: &Message| qs.iter().position(|q| q.broker == broker && q.id == id)
}

/// Sends `PER_KEY` messages `{key}-{i}` one after the other to the queue `target`.
async fn send_key(
    p: Producer,
    topic: &'static str,
    key: String,
    target: (&'static str, i32),
    group: bool,
) -> anyhow::Result<Vec<SendReceipt>> {
    let selector = queue(target.0, target.1);
    let mut out = Vec::new();
    for i in 0..PER_KEY {
        let mut m = Message::new(topic, format!("{key}-{i}")).with_key(key.clone());
        if group {
            m = m.with_message_group(key.clone());
        }
        let r = p.send_with_selector(m, &selector).await?;
        ensure!(
            (r.broker.as_str(), r.queue_id) == (target.0, Some(target.1)) && r.attempts == 1,
            "{key} not on {target:?}: {r:?}"
        );
        out.push(r);
    }
    ensure!(
        out.windows(2).all(|w| w[1].offset == w[0].offset + 1),
        "{key}: offsets not consecutive"
    );
    Ok(out)
}

/// Reads `queue` (broker group, id) of `topic` from its start with a pull consumer
/// assigned that queue alone; the bodies, in offset order.
async fn read_queue(
    cluster: &Cluster,
    topic: &str,
    target: (&str, i32),
    n: usize,
) -> anyhow::Result<Vec<String>> {
    let mut c = PullConsumer::builder()
        .access_points(cluster.access_points())
        .consumer_group(format!("read-{topic}-{}-{}", target.0, target.1))
        .start_from(StartFrom::First)
        .build()
        .await?;
    let q = c
        .fetch_queues(topic)
        .await?
        .into_iter()
        .find(|q| (q.broker.as_str(), q.id) == target)
        .context("the queue is routed")?;
    c.assign(vec![q]);
    let mut bodies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while bodies.len() < n {
        ensure!(
            Instant::now() < deadline,
            "{} of {n} read from {target:?}",
            bodies.len()
        );
        for m in c.poll(Duration::from_secs(1)).await? {
            ensure!((m.broker.as_str(), m.queue_id) == target, "{m:?}");
            bodies.push(m.body_str().context("utf-8")?.to_owned());
        }
    }
    c.shutdown().await;
    Ok(bodies)
}

/// Four keys, each sent to a queue its selector picks (queues the broker would not
/// choose for them), in parallel: each key's messages are stored on its queue alone, in
/// the order sent; a message group does not move a selected message.
async fn selected_queues_keep_order(cluster: &Cluster, p: &Producer) -> anyhow::Result<()> {
    cluster
        .create_topic("selected", 4, admin::MessageKind::Normal)
        .await?;
    cluster
        .create_topic("selected-fifo", 4, admin::MessageKind::Fifo)
        .await?;
    let targets = [("g1", 3), ("g2", 0), ("g2", 3), ("g1", 1)];
    // The group of the FIFO key hashes to another queue than its target.
    ensure!(broker_queue_id("k3", 4) != 1, "k3 would land on g1:1 anyway");
    let t = Instant::now();
    let tasks: Vec<_> = targets
        .iter()
        .enumerate()
        .map(|(k, &target)| {
            let fifo = k == 3;
            let topic = if fifo { "selected-fifo" } else { "selected" };
            tokio::spawn(send_key(p.clone(), topic, format!("k{k}"), target, fifo))
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    eprintln!("4 keys × {PER_KEY} sends with selectors: {:?}", t.elapsed());
    for (k, &target) in targets.iter().enumerate() {
        let topic = if k == 3 { "selected-fifo" } else { "selected" };
        let offsets = cluster.group(target.0).max_offsets(topic).await?;
        let id = usize::try_from(target.1)?;
        ensure!(offsets[id] == PER_KEY as u64, "{topic} {target:?}: {offsets:?}");
        let bodies = read_queue(cluster, topic, target, PER_KEY).await?;
        let want: Vec<String> = (0..PER_KEY).map(|i| format!("k{k}-{i}")).collect();
        ensure!(bodies == want, "{topic} {target:?} holds {bodies:?}");
    }
    let stored = |t| async move {
        let mut sum = 0;
        for g in GROUPS {
            sum += cluster.group(g).max_offsets(t).await?.iter().sum::<u64>();
        }
        anyhow::Ok(sum)
    };
    ensure!(
        stored("selected").await? == 3 * PER_KEY as u64,
        "nothing elsewhere"
    );
    ensure!(stored("selected-fifo").await? == PER_KEY as u64);
    refusals(p).await
}

/// A selector that picks nothing, or a queue that does not exist, sends nothing.
async fn refusals(p: &Producer) -> anyhow::Result<()> {
    let none = |_: &[MessageQueue], _: &Message| None;
    let beyond = |qs: &[MessageQueue], _: &Message| Some(qs.len());
    for r in [
        p.send_with_selector(Message::new("selected", "x"), &none).await,
        p.send_with_selector(Message::new("selected", "x"), &beyond).await,
    ] {
        ensure!(matches!(r, Err(ClientError::InvalidArgument(_))), "{r:?}");
    }
    let unknown = p
        .send_with_selector(Message::new("no-such-topic", "x"), &none)
        .await;
    ensure!(matches!(unknown, Err(ClientError::NotFound(_))), "{unknown:?}");
    Ok(())
}

/// Waits until the name server routes `topic` on exactly `groups`.
async fn wait_routed(cluster: &Cluster, topic: &str, groups: &[&str]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut c = cluster.namesrvs[0].registry()?;
        let req = TopicRouteRequest { topic: topic.into() };
        let routed: Vec<String> = match c.topic_route(req).await {
            Ok(r) => r.into_inner().groups.into_iter().map(|g| g.group).collect(),
            Err(_) => Vec::new(),
        };
        if routed == groups {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "{topic} routed on {routed:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A topic on g1 alone, then on g2 too (with more queues) while a producer and a pull
/// consumer run with a 500 ms route refresh: both reach g2's queues by the refresh, not
/// by a failure (with the default 30 s they would not within the 10 s allowed), and no
/// call fails meanwhile.
async fn new_queues_are_found_by_the_route_refresh(cluster: &Cluster) -> anyhow::Result<()> {
    const TOPIC: &str = "grow";
    cluster
        .group("g1")
        .create_topic(TOPIC, 2, admin::MessageKind::Normal)
        .await?;
    wait_routed(cluster, TOPIC, &["g1"]).await?;
    let every = Duration::from_millis(500);
    let p = Producer::builder()
        .access_points(cluster.access_points())
        .client(|c| c.route_refresh(every))
        .topics([TOPIC])
        .start()
        .await?;
    let config = ClientConfig::builder()
        .access_points(cluster.access_points())
        .route_refresh(every)
        .build()?;
    let mut c = PullConsumer::builder()
        .config(config)
        .consumer_group("grow-reader")
        .start_from(StartFrom::First)
        .build()
        .await?;
    c.subscribe(TOPIC, FilterExpression::all()).await?;
    ensure!(c.assignment().len() == 2, "{:?}", c.assignment());
    p.send(Message::new(TOPIC, "before")).await?;

    cluster
        .group("g2")
        .create_topic(TOPIC, 4, admin::MessageKind::Normal)
        .await?;
    let created = Instant::now();
    let mut per_group = BTreeMap::<String, usize>::new();
    let mut i = 0;
    while per_group.get("g2").is_none_or(|n| *n < 4) {
        ensure!(
            created.elapsed() < Duration::from_secs(10),
            "the producer never reached g2: {per_group:?}"
        );
        let r = p.send(Message::new(TOPIC, format!("after-{i}"))).await?;
        ensure!(r.attempts == 1, "a failed attempt: {r:?}");
        *per_group.entry(r.broker).or_default() += 1;
        i += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "producer: first sends to g2's new queues {:?} after the topic was created there ({per_group:?})",
        created.elapsed()
    );
    let sent = 1 + i;
    let mut got = 0;
    let mut from_g2 = 0;
    while got < sent || c.assignment().len() < 6 {
        ensure!(
            created.elapsed() < Duration::from_secs(20),
            "pulled {got} of {sent}, {} queues",
            c.assignment().len()
        );
        for m in c.poll(Duration::from_millis(500)).await? {
            got += 1;
            from_g2 += usize::from(m.broker == "g2");
        }
    }
    eprintln!(
        "pull consumer: 6 queues and all {sent} messages ({from_g2} from g2) {:?} after the topic was created on g2",
        created.elapsed()
    );
    ensure!(
        from_g2 == per_group["g2"],
        "{from_g2} pulled from g2, {per_group:?} sent"
    );
    c.shutdown().await;
    p.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn selected_queues_and_route_refresh() -> anyhow::Result<()> {
    let started = Instant::now();
    let cluster = Cluster::start(1, &GROUPS, REGISTER_MS, "").await?;
    let p = Producer::builder()
        .access_points(cluster.access_points())
        .max_message_size(1024)
        .start()
        .await?;
    eprintln!("cluster and producer up in {:?}", started.elapsed());
    tokio::try_join!(
        step("selector", selected_queues_keep_order(&cluster, &p)),
        step(
            "route refresh",
            new_queues_are_found_by_the_route_refresh(&cluster)
        ),
        step("size limit", size_limit(&cluster, &p)),
    )?;
    p.shutdown().await;
    Ok(())
}

/// With `max_message_size(1024)`, 1024 bytes are sent and 1025 refused by every kind of
/// send, before anything is sent.
async fn size_limit(cluster: &Cluster, p: &Producer) -> anyhow::Result<()> {
    cluster
        .create_topic("sized", 1, admin::MessageKind::Normal)
        .await?;
    let fits = Message::new("sized", vec![b'a'; 1024]);
    p.send(fits.clone()).await?;
    let big = Message::new("sized", vec![b'b'; 1025]);
    let any = |_: &[MessageQueue], _: &Message| Some(0);
    let refused = [
        p.send(big.clone()).await.map(drop),
        p.send_async(big.clone()).await.map(drop),
        p.send_batch(vec![big.clone()]).await.map(drop),
        p.send_batch(vec![fits.clone(), Message::new("sized", "x")])
            .await
            .map(drop),
        p.send_with_selector(big.clone(), &any).await.map(drop),
        p.send_oneway(big).await,
    ];
    for (i, r) in refused.into_iter().enumerate() {
        match r {
            Err(ClientError::InvalidArgument(m)) => ensure!(m.contains("1024"), "{i}: {m}"),
            other => anyhow::bail!("send {i} of more than 1024 bytes: {other:?}"),
        }
    }
    let offsets = cluster.group("g1").max_offsets("sized").await?;
    let total = offsets[0] + cluster.group("g2").max_offsets("sized").await?[0];
    ensure!(total == 1, "only the 1024-byte message is stored: {total}");
    Ok(())
}

/// The builder refuses bad settings with the typed error at start (no cluster: nothing
/// is called).
#[tokio::test]
async fn the_builder_refuses_bad_settings() -> anyhow::Result<()> {
    let b = || Producer::builder().access_points(["127.0.0.1:1"]);
    let cases = [
        (
            "no access point",
            Producer::builder().producer_group("p").start().await,
        ),
        (
            "empty access points",
            Producer::builder().access_points([" ; "]).start().await,
        ),
        (
            "an address without a port",
            Producer::builder().access_points(["ns"]).start().await,
        ),
        ("empty group", b().producer_group("").start().await),
        ("blank group", b().producer_group("  ").start().await),
        ("max_message_size 0", b().max_message_size(0).start().await),
        ("zero timeout", b().request_timeout(Duration::ZERO).start().await),
    ];
    for (what, r) in cases {
        match r {
            Err(ClientError::InvalidArgument(_)) => {}
            other => anyhow::bail!("{what}: {other:?}"),
        }
    }
    let p = b().max_message_size(1024).start().await?;
    ensure!(p.options().max_message_size == 1024);
    let r = p.send(Message::new("t", vec![0u8; 1025])).await;
    ensure!(matches!(r, Err(ClientError::InvalidArgument(_))), "{r:?}");
    p.shutdown().await;
    Ok(())
}
