//! The producer against real processes: one name server and two three-node broker groups.
//!
//! Two clusters, one per test (they run in parallel): a healthy one shared by the
//! scenarios that leave it healthy (each on its own topic), and one whose group g2 is
//! killed.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use anyhow::ensure;
use raftmq_client::ClientError;
use raftmq_client::Message;
use raftmq_client::Producer;
use raftmq_client::producer::SendReceipt;
use raftmq_proto::raftmq::admin::v1 as admin;
use raftmq_testkit::Cluster;
use raftmq_testkit::ProcGroup;
use raftmq_testkit::step;

const GROUPS: [&str; 2] = ["g1", "g2"];
const REGISTER_MS: u64 = 300;

async fn producer(cluster: &Cluster) -> anyhow::Result<Producer> {
    Ok(Producer::builder()
        .access_points(cluster.access_points())
        .producer_group("test-producer")
        .start()
        .await?)
}

/// Messages stored on `topic`, per group.
async fn stored(cluster: &Cluster, topic: &str) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for g in GROUPS {
        let offsets = cluster.group(g).max_offsets(topic).await?;
        out.insert(g.to_owned(), offsets.iter().sum());
    }
    Ok(out)
}

/// Waits until `topic` holds `n` messages on all groups together.
async fn wait_stored(cluster: &Cluster, topic: &str, n: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let total: u64 = stored(cluster, topic).await?.values().sum();
        if total == n {
            return Ok(());
        }
        ensure!(total < n, "{total} messages stored on {topic}, expected {n}");
        ensure!(
            Instant::now() < deadline,
            "{total} of {n} messages stored on {topic}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn create(cluster: &Cluster, topic: &str, queues: u32, kind: admin::MessageKind) -> anyhow::Result<()> {
    cluster.create_topic(topic, queues, kind).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sends_on_a_healthy_cluster() -> anyhow::Result<()> {
    let started = Instant::now();
    let cluster = Cluster::start(1, &GROUPS, REGISTER_MS, "").await?;
    let p = producer(&cluster).await?;
    eprintln!("cluster and producer up in {:?}", started.elapsed());
    step("sync", sync_sends_reach_both_groups(&cluster, &p)).await?;
    step("ordered", ordered_keys_stay_on_their_queue(&cluster, &p)).await?;
    step("batch", batches(&cluster, &p)).await?;
    step("bad input", bad_input(&p)).await?;
    step("async and oneway", async_and_oneway(&cluster, &p)).await?;
    step("merged async", merged_async_sends(&cluster)).await?;
    p.shutdown().await;
    Ok(())
}

async fn sync_sends_reach_both_groups(cluster: &Cluster, p: &Producer) -> anyhow::Result<()> {
    create(cluster, "sync", 4, admin::MessageKind::Normal).await?;
    let mut receipts = Vec::new();
    let t = Instant::now();
    for i in 0..20 {
        let m = Message::new("sync", format!("body-{i}"))
            .with_tag("TagA")
            .with_key(format!("key-{i}"))
            .with_property("seq", i.to_string());
        receipts.push(p.send(m).await?);
    }
    eprintln!("20 sync sends: {:?}", t.elapsed());
    let ids: BTreeSet<&str> = receipts.iter().map(|r| r.message_id.as_str()).collect();
    ensure!(
        ids.len() == 20 && ids.iter().all(|id| id.len() == 32),
        "ids {ids:?}"
    );
    let mut per_group = BTreeMap::<String, u64>::new();
    for r in &receipts {
        ensure!(GROUPS.contains(&r.broker.as_str()) && r.offset >= 0, "{r:?}");
        ensure!(
            r.topic == "sync" && r.attempts == 1 && r.queue_id.is_some(),
            "{r:?}"
        );
        *per_group.entry(r.broker.clone()).or_default() += 1;
    }
    // The producer chose each queue: every queue's offsets are 0, 1, 2, … as the receipts
    // say (the topic is fresh).
    let mut per_queue = BTreeMap::<(String, Option<i32>), Vec<i64>>::new();
    for r in &receipts {
        per_queue
            .entry((r.broker.clone(), r.queue_id))
            .or_default()
            .push(r.offset);
    }
    for (queue, offsets) in &per_queue {
        let want: Vec<i64> = (0..i64::try_from(offsets.len())?).collect();
        ensure!(offsets == &want, "queue {queue:?} has offsets {offsets:?}");
    }
    ensure!(per_group.len() == 2, "both groups get messages: {per_group:?}");
    ensure!(
        stored(cluster, "sync").await? == per_group,
        "stored where the receipts say"
    );
    check_received(cluster, &receipts).await
}

/// Every message arrives with its id, tag, key and property.
async fn check_received(cluster: &Cluster, receipts: &[SendReceipt]) -> anyhow::Result<()> {
    let mut missing: BTreeSet<String> = receipts.iter().map(|r| r.message_id.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !missing.is_empty() {
        ensure!(Instant::now() < deadline, "never received {missing:?}");
        for g in GROUPS {
            let mut c = cluster.group(g).messaging(1).await?;
            let (_, msgs) =
                raftmq_testkit::receive(&mut c, "sync", "verify", 32, Duration::from_secs(1)).await?;
            for m in msgs {
                let sys = m.system_properties.clone().unwrap_or_default();
                let seq = m.user_properties.get("seq").context("seq property")?;
                ensure!(sys.tag.as_deref() == Some("TagA"), "tag of {sys:?}");
                ensure!(sys.keys == [format!("key-{seq}")], "keys of {sys:?}");
                ensure!(m.body == format!("body-{seq}").into_bytes(), "body of {seq}");
                missing.remove(&sys.message_id);
            }
        }
    }
    Ok(())
}

async fn ordered_keys_stay_on_their_queue(cluster: &Cluster, p: &Producer) -> anyhow::Result<()> {
    create(cluster, "fifo", 4, admin::MessageKind::Fifo).await?;
    let t = Instant::now();
    let tasks: Vec<_> = (0..10)
        .map(|k| {
            let p = p.clone();
            tokio::spawn(async move {
                let mut out = Vec::new();
                for i in 0..30 {
                    let m = Message::new("fifo", format!("{k}-{i}")).with_message_group(format!("key-{k}"));
                    out.push(p.send(m).await?);
                }
                anyhow::Ok(out)
            })
        })
        .collect();
    let mut per_queue = BTreeMap::<(String, i32), u64>::new();
    for (k, task) in tasks.into_iter().enumerate() {
        let receipts = task.await??;
        let queue = (
            receipts[0].broker.clone(),
            receipts[0].queue_id.context("queue id")?,
        );
        for w in receipts.windows(2) {
            ensure!(
                (w[1].broker.clone(), w[1].queue_id) == (queue.0.clone(), Some(queue.1)),
                "key {k} moved: {w:?}"
            );
            ensure!(w[1].offset > w[0].offset, "key {k} out of order: {w:?}");
        }
        *per_queue.entry(queue).or_default() += 30;
    }
    eprintln!("300 ordered sends (10 keys in parallel): {:?}", t.elapsed());
    // The queues the receipts name are the ones the brokers stored on.
    for g in GROUPS {
        let offsets = cluster.group(g).max_offsets("fifo").await?;
        for (q, max) in offsets.iter().enumerate() {
            let expected = per_queue.get(&(g.to_owned(), q as i32)).copied().unwrap_or(0);
            ensure!(*max == expected, "{g}:{q} holds {max}, receipts say {expected}");
        }
    }
    ensure!(per_queue.len() > 2, "keys spread: {per_queue:?}");
    Ok(())
}

async fn batches(cluster: &Cluster, p: &Producer) -> anyhow::Result<()> {
    create(cluster, "batch", 2, admin::MessageKind::Normal).await?;
    let batch: Vec<Message> = (0..10)
        .map(|i| Message::new("batch", format!("b{i}")).with_key(format!("k{i}")))
        .collect();
    let receipts = p.send_batch(batch).await?;
    ensure!(receipts.len() == 10, "{receipts:?}");
    for (i, r) in receipts.iter().enumerate() {
        ensure!(
            r.broker == receipts[0].broker && r.offset == receipts[0].offset + i as i64,
            "{r:?}"
        );
    }
    let offsets = cluster.group(&receipts[0].broker).max_offsets("batch").await?;
    ensure!(
        offsets.iter().filter(|o| **o == 10).count() == 1,
        "one queue: {offsets:?}"
    );
    ensure!(stored(cluster, "batch").await?.values().sum::<u64>() == 10);
    // 5 × 1 MiB is over the 4 MiB limit: refused before sending.
    let big: Vec<Message> = (0..5)
        .map(|_| Message::new("batch", vec![7u8; 1 << 20]))
        .collect();
    match p.send_batch(big).await {
        Err(ClientError::InvalidArgument(m)) => ensure!(m.contains("limit"), "{m}"),
        other => anyhow::bail!("an oversized batch: {other:?}"),
    }
    ensure!(stored(cluster, "batch").await?.values().sum::<u64>() == 10);
    Ok(())
}

async fn bad_input(p: &Producer) -> anyhow::Result<()> {
    // A producer whose only access point is closed: any RPC would fail as unreachable.
    let offline = Producer::builder().access_points(["127.0.0.1:1"]).start().await?;
    let cases = [
        Message::new("", "x"),
        Message::new("t", ""),
        Message::new("t", vec![0u8; (4 << 20) + 1]),
    ];
    for m in cases {
        for producer in [&offline, p] {
            let topic = m.topic.clone();
            match producer.send(m.clone()).await {
                Err(ClientError::InvalidArgument(_)) => {}
                other => anyhow::bail!("topic {topic:?}, {} bytes: {other:?}", m.body.len()),
            }
        }
    }
    offline.shutdown().await;
    match p.send(Message::new("no-such-topic", "x")).await {
        Err(ClientError::NotFound(_)) => Ok(()),
        other => anyhow::bail!("unknown topic: {other:?}"),
    }
}

async fn async_and_oneway(cluster: &Cluster, p: &Producer) -> anyhow::Result<()> {
    create(cluster, "async", 4, admin::MessageKind::Normal).await?;
    let t = Instant::now();
    let handles: Vec<_> = (0..50)
        .map(|i| p.send_async(Message::new("async", format!("a{i}"))))
        .collect();
    let mut ids = BTreeSet::new();
    for h in handles {
        ids.insert(h.await?.message_id);
    }
    ensure!(ids.len() == 50);
    eprintln!("50 async sends: {:?}", t.elapsed());
    let t = Instant::now();
    for i in 0..50 {
        p.send_oneway(Message::new("async", format!("o{i}"))).await?;
    }
    wait_stored(cluster, "async", 100).await?;
    eprintln!("50 oneway sends stored: {:?}", t.elapsed());
    Ok(())
}

/// Async sends started while the one request slot is taken go in merged requests: each
/// gets its own receipt, and each request's messages share a queue at consecutive offsets
/// (sent one by one they would be spread round-robin over all queues).
async fn merged_async_sends(cluster: &Cluster) -> anyhow::Result<()> {
    create(cluster, "merged", 8, admin::MessageKind::Normal).await?;
    let p = Producer::builder()
        .access_points(cluster.access_points())
        .producer_group("merging-producer")
        .coalesce(raftmq_client::CoalesceOptions {
            max_in_flight: 1,
            max_messages: 50,
            ..Default::default()
        })
        .start()
        .await?;
    let handles: Vec<_> = (0..201)
        .map(|i| p.send_async(Message::new("merged", format!("m{i}"))))
        .collect();
    let mut receipts = Vec::new();
    for h in handles {
        receipts.push(h.await?);
    }
    let ids: BTreeSet<&str> = receipts.iter().map(|r| r.message_id.as_str()).collect();
    ensure!(ids.len() == 201, "one receipt per send, each its own id");
    let slots: BTreeSet<(&str, Option<i32>, i64)> = receipts
        .iter()
        .map(|r| (r.broker.as_str(), r.queue_id, r.offset))
        .collect();
    ensure!(slots.len() == 201, "each send at its own queue position");
    // Receipts of one request: same queue, offsets one apart.
    let runs = receipts
        .windows(2)
        .filter(|w| {
            (&w[0].broker, w[0].queue_id) == (&w[1].broker, w[1].queue_id) && w[1].offset == w[0].offset + 1
        })
        .count();
    ensure!(
        runs >= 181,
        "{runs} neighbouring sends stored side by side; 20 requests or fewer give at least 181"
    );
    wait_stored(cluster, "merged", 201).await?;
    p.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_group_is_avoided() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(1, &GROUPS, REGISTER_MS, "").await?;
    create(&cluster, "failover", 4, admin::MessageKind::Normal).await?;
    let p = producer(&cluster).await?;
    for i in 0..8 {
        p.send(Message::new("failover", format!("warm-{i}"))).await?;
    }
    for id in 1..=3 {
        cluster.group_mut("g2").kill(id)?;
    }
    let mut latencies = Vec::new();
    let mut g2_attempts = 0;
    for i in 0..40 {
        let t = Instant::now();
        let r = p.send(Message::new("failover", format!("after-{i}"))).await?;
        latencies.push(t.elapsed());
        ensure!(r.broker == "g1", "stored on the live group: {r:?}");
        // Every attempt before the successful one went to g2.
        g2_attempts += r.attempts - 1;
    }
    let slowest = latencies.iter().max().copied().unwrap_or_default();
    eprintln!("40 sends with g2 dead: {g2_attempts} attempts to g2, slowest send {slowest:?}");
    ensure!(
        g2_attempts == 1,
        "g2 avoided after its first failure: {g2_attempts} attempts"
    );
    ensure!(stored_on(&cluster, "g1", "failover").await? >= 40);
    p.shutdown().await;
    Ok(())
}

async fn stored_on(cluster: &Cluster, group: &str, topic: &str) -> anyhow::Result<u64> {
    Ok(cluster.group(group).max_offsets(topic).await?.iter().sum())
}

/// What became of each send while the leader of the only group was killed.
#[derive(Debug, Default)]
struct Outcomes {
    stored: BTreeSet<String>,
    unknown: BTreeSet<String>,
    refused: BTreeMap<String, String>,
    /// When each acknowledgement arrived.
    acks: Vec<Instant>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_kill_is_ridden_out_and_no_outcome_misreported() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(1, &["g1"], REGISTER_MS, "").await?;
    cluster
        .create_topic("leader", 2, admin::MessageKind::Normal)
        .await?;
    // Enough retries (100 ms, 200 ms, 400 ms, 800 ms, 1 s, 1 s apart) to outlast an election.
    let p = Producer::builder()
        .access_points(cluster.access_points())
        .retries(6)
        .start()
        .await?;
    p.send(Message::new("leader", "warm")).await?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let senders: Vec<_> = (0..4)
        .map(|s| tokio::spawn(keep_sending(p.clone(), s, stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ids: Vec<u64> = cluster.group("g1").nodes.keys().copied().collect();
    let leader = cluster.group("g1").wait_leader(&ids).await?;
    let killed = Instant::now();
    cluster.group_mut("g1").kill(leader)?;
    let rest: Vec<u64> = ids.into_iter().filter(|i| *i != leader).collect();
    let new_leader = cluster.group("g1").wait_leader(&rest).await?;
    let elected = killed.elapsed();
    // Keep sending a while after the election, then stop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut all = Outcomes::default();
    for s in senders {
        let o = s.await?;
        all.stored.extend(o.stored);
        all.unknown.extend(o.unknown);
        all.refused.extend(o.refused);
        all.acks.extend(o.acks);
    }
    all.acks.sort();
    let longest_gap = all.acks.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
    eprintln!(
        "leader kill: {} stored, {} unknown, {} refused; new leader after {elected:?}, \
         longest gap between acks {longest_gap:?}",
        all.stored.len(),
        all.unknown.len(),
        all.refused.len()
    );
    let received = receive_all(cluster.group("g1"), new_leader, "leader").await?;
    for b in &all.stored {
        ensure!(received.contains(b), "acknowledged {b} is lost");
    }
    for (b, e) in &all.refused {
        ensure!(
            !received.contains(b),
            "{b} was reported as not stored ({e}) but is stored"
        );
    }
    ensure!(all.refused.is_empty(), "sends failed: {:?}", all.refused);
    ensure!(all.stored.len() > 20, "sends went on: {all:?}");
    p.shutdown().await;
    Ok(())
}

/// Sends until told to stop; the outcomes by body.
async fn keep_sending(
    p: Producer,
    sender: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Outcomes {
    let mut o = Outcomes::default();
    let mut i = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let body = format!("s{sender}-{i}");
        i += 1;
        match p.send(Message::new("leader", body.clone())).await {
            Ok(_) => {
                o.stored.insert(body);
                o.acks.push(Instant::now());
            }
            Err(ClientError::OutcomeUnknown(_)) => {
                o.unknown.insert(body);
            }
            Err(e) => {
                o.refused.insert(body, e.to_string());
            }
        }
    }
    o
}

/// The bodies of every message of `topic` on the group (polled through `node`).
async fn receive_all(group: &ProcGroup, node: u64, topic: &str) -> anyhow::Result<BTreeSet<String>> {
    let total: u64 = group.max_offsets(topic).await?.iter().sum();
    let mut c = group.messaging(node).await?;
    let mut bodies = BTreeSet::new();
    let mut count = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while count < total {
        ensure!(Instant::now() < deadline, "received {count} of {total}");
        let (_, msgs) = raftmq_testkit::receive(&mut c, topic, "verify", 32, Duration::from_secs(1)).await?;
        count += msgs.len() as u64;
        bodies.extend(
            msgs.into_iter()
                .map(|m| String::from_utf8_lossy(&m.body).into_owned()),
        );
    }
    Ok(bodies)
}
