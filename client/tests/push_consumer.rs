//! Push consumers as real processes against real brokers: a group of three shares a
//! topic's queues, one is killed and its queues move, a fourth joins and gets queues,
//! nothing acknowledged is lost.

mod push_common;

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use push_common::Members;
use push_common::check_ownership;
use push_common::holdings;
use push_common::now_ms;
use raftmq_client::Message;
use raftmq_client::Producer;
use raftmq_proto::raftmq::admin::v1::MessageKind;
use raftmq_testkit::Cluster;

/// Messages sent in the group test (the issue asks for 100,000); `RAFTMQ_PUSH_MESSAGES`
/// changes it.
fn total() -> usize {
    std::env::var("RAFTMQ_PUSH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

/// Sends `n` messages with bodies `seq-<i>` in batches of 100, four senders at once.
async fn produce(producer: Arc<Producer>, topic: &'static str, n: usize) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    for sender in 0..4 {
        let producer = producer.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = sender * 100;
            while i < n {
                let batch: Vec<Message> = (i..(i + 100).min(n))
                    .map(|k| Message::new(topic, format!("seq-{k}")))
                    .collect();
                producer.send_batch(batch).await?;
                i += 400;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Waits until `cond` holds over the members' events.
async fn wait_for(
    members: &Members,
    what: &str,
    limit: Duration,
    cond: impl Fn(&[push_common::Event]) -> bool,
) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        if cond(&members.snapshot()) {
            return Ok(());
        }
        anyhow::ensure!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn consumed(events: &[push_common::Event]) -> BTreeSet<String> {
    events
        .iter()
        .filter(|e| e.kind == "CONSUMED")
        .map(|e| e.body.clone())
        .collect()
}

/// Member 4 joins while messages flow: queues move to it (released by their owners
/// first) within 10 s of its start.
async fn a_joining_member_gets_queues(members: &mut Members, namesrv: &str) -> anyhow::Result<()> {
    members.start(4, namesrv, "work", "GID_work", &[])?;
    let joined_at = now_ms();
    wait_for(
        members,
        "queues for the joining member",
        Duration::from_secs(10),
        |ev| holdings(ev).get(&4).is_some_and(|qs| !qs.is_empty()),
    )
    .await?;
    let events = members.snapshot();
    let first = events
        .iter()
        .find(|e| e.kind == "ASSIGNED" && e.member == 4)
        .map_or(0, |e| e.ms.saturating_sub(joined_at));
    println!(
        "member 4 started; its first queue after {first} ms; holdings now {:?}",
        holdings(&events)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_share_the_queues_and_a_killed_one_hands_over() -> anyhow::Result<()> {
    let n = total();
    let cluster = Cluster::start(1, &["g1"], 1_000, "").await?;
    cluster.create_topic("work", 8, MessageKind::Normal).await?;
    let namesrv = cluster.access_points()[0].clone();
    let mut members = Members::new();
    for m in 1..=3 {
        members.start(m, &namesrv, "work", "GID_work", &[])?;
    }
    wait_for(
        &members,
        "three members with queues",
        Duration::from_secs(30),
        |ev| {
            let h = holdings(ev);
            h.len() == 3 && h.values().map(Vec::len).sum::<usize>() == 8
        },
    )
    .await?;
    let started = Instant::now();
    let producer = Arc::new(
        Producer::builder()
            .access_points([namesrv.as_str()])
            .start()
            .await?,
    );
    let sending = tokio::spawn(produce(producer.clone(), "work", n));

    wait_for(&members, "30 % consumed", Duration::from_secs(300), |ev| {
        consumed(ev).len() >= n * 3 / 10
    })
    .await?;
    let before_kill = holdings(&members.snapshot());
    let victim_queues = before_kill.get(&2).cloned().unwrap_or_default();
    assert!(
        !victim_queues.is_empty(),
        "member 2 holds no queue: its handover would prove nothing ({before_kill:?})"
    );
    members.kill(2)?;
    let killed_at = now_ms();
    println!(
        "killed member 2 holding {victim_queues:?} after {} consumed",
        consumed(&members.snapshot()).len()
    );

    wait_for(
        &members,
        "the killed member's queues taken over",
        Duration::from_secs(30),
        |ev| {
            let h = holdings(ev);
            victim_queues
                .iter()
                .all(|q| h.iter().any(|(m, qs)| *m != 2 && qs.contains(q)))
        },
    )
    .await?;
    let events = members.snapshot();
    let moved_after: u128 = victim_queues
        .iter()
        .filter_map(|q| {
            events
                .iter()
                .find(|e| e.kind == "ASSIGNED" && e.member != 2 && &e.queue == q && e.ms >= killed_at)
                .map(|e| e.ms - killed_at)
        })
        .max()
        .unwrap_or(0);
    println!(
        "member 2's {} queues moved within {moved_after} ms of its kill",
        victim_queues.len()
    );
    assert!(moved_after <= 10_000, "queues moved after {moved_after} ms");
    a_joining_member_gets_queues(&mut members, &namesrv).await?;

    sending.await??;
    let sent_in = started.elapsed();
    wait_for(
        &members,
        "every message consumed",
        Duration::from_secs(600),
        |ev| consumed(ev).len() >= n,
    )
    .await?;
    let took = started.elapsed();
    members.stop_all()?;
    producer.shutdown().await;

    let events = members.snapshot();
    let got = consumed(&events);
    let want: BTreeSet<String> = (0..n).map(|k| format!("seq-{k}")).collect();
    let lost: Vec<&String> = want.difference(&got).take(10).collect();
    assert!(lost.is_empty(), "lost messages, e.g. {lost:?}");
    let deliveries = events.iter().filter(|e| e.kind == "CONSUMED").count();
    let mut per_member: BTreeMap<usize, usize> = BTreeMap::new();
    for e in events.iter().filter(|e| e.kind == "CONSUMED") {
        *per_member.entry(e.member).or_default() += 1;
    }
    println!(
        "{n} messages: sent in {sent_in:?}, all consumed after {took:?} ({:.0} msg/s); {} deliveries ({} again), per member {per_member:?}",
        n as f64 / took.as_secs_f64(),
        deliveries,
        deliveries - n
    );
    check_ownership(&events, &BTreeMap::from([(2, killed_at)]))?;
    Ok(())
}
