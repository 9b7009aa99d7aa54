//! Ordered consumption through a leader kill, and publish/subscribe between consumer
//! groups, with real brokers.

mod push_common;

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use push_common::Members;
use raftmq_client::ConsumeResult;
use raftmq_client::FilterExpression;
use raftmq_client::Message;
use raftmq_client::Producer;
use raftmq_client::PushConsumer;
use raftmq_client::StartFrom;
use raftmq_proto::raftmq::admin::v1::MessageKind;
use raftmq_testkit::Cluster;

const KEYS: usize = 50;
const PER_KEY: usize = 200;

/// Sends `PER_KEY` messages for each of `KEYS` keys, each key's in order (one sender per
/// five keys, each message sent after the previous one of its key was acknowledged).
async fn send_ordered(producer: Arc<Producer>) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    for sender in 0..10 {
        let producer = producer.clone();
        tasks.push(tokio::spawn(async move {
            for seq in 0..PER_KEY {
                for key in (sender..KEYS).step_by(10) {
                    let m = Message::new("ordered", format!("k{key}-{seq}"))
                        .with_message_group(format!("k{key}"));
                    producer.send(m).await?;
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Per key, the sequence numbers in the order they were first consumed.
fn first_consumptions(events: &[push_common::Event]) -> BTreeMap<String, Vec<usize>> {
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut out: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut consumed: Vec<&push_common::Event> = events.iter().filter(|e| e.kind == "CONSUMED").collect();
    // Stable: a member's own lines keep their order within a millisecond.
    consumed.sort_by_key(|e| e.ms);
    for e in consumed {
        if !seen.insert(e.body.clone()) {
            continue;
        }
        let Some((key, seq)) = e.body.split_once('-') else {
            continue;
        };
        if let Ok(seq) = seq.parse() {
            out.entry(key.to_owned()).or_default().push(seq);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_consumed_in_order_through_a_leader_kill() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(1, &["g1"], 1_000, "").await?;
    cluster.create_topic("ordered", 8, MessageKind::Fifo).await?;
    let namesrv = cluster.access_points()[0].clone();
    let mut members = Members::new();
    for m in 1..=2 {
        // The group starts at the queues' beginnings: sending starts at once, before the
        // members are given their queues.
        members.start(
            m,
            &namesrv,
            "ordered",
            "GID_ordered",
            &["--ordered", "--from=first"],
        )?;
    }
    let producer = Arc::new(
        Producer::builder()
            .access_points([namesrv.as_str()])
            .retries(10)
            .start()
            .await?,
    );
    let started = Instant::now();
    let sending = tokio::spawn(send_ordered(producer.clone()));
    let total = KEYS * PER_KEY;
    let count = |m: &Members| {
        let ev = m.snapshot();
        ev.iter()
            .filter(|e| e.kind == "CONSUMED")
            .map(|e| e.body.clone())
            .collect::<BTreeSet<_>>()
            .len()
    };
    while count(&members) < total / 3 {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300),
            "too slow before the kill"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let g1 = cluster.group_mut("g1");
    let leader = g1.wait_leader(&[1, 2, 3]).await?;
    g1.kill(leader)?;
    println!(
        "killed leader {leader} after {} of {total} consumed",
        count(&members)
    );
    sending.await??;
    while count(&members) < total {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "only {} of {total} consumed",
            count(&members)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("{total} ordered messages consumed in {:?}", started.elapsed());
    members.stop_all()?;
    producer.shutdown().await;
    let order = first_consumptions(&members.snapshot());
    assert_eq!(order.len(), KEYS);
    for (key, seqs) in &order {
        let want: Vec<usize> = (0..PER_KEY).collect();
        assert_eq!(seqs, &want, "key {key} consumed out of order");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_consumer_group_receives_every_message() -> anyhow::Result<()> {
    let cluster = Cluster::start(1, &["g1", "g2"], 1_000, "").await?;
    cluster.create_topic("news", 4, MessageKind::Normal).await?;
    let namesrv = cluster.access_points()[0].clone();
    let mut groups = Vec::new();
    for group in ["GID_billing", "GID_audit"] {
        let got: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let sink = got.clone();
        let consumer = PushConsumer::builder()
            .access_points([namesrv.as_str()])
            .consumer_group(group)
            .subscribe("news", FilterExpression::all())
            // Sending starts at once, maybe before the queues are assigned.
            .start_from(StartFrom::First)
            .listener(move |m| {
                let sink = sink.clone();
                async move {
                    sink.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(String::from_utf8_lossy(&m.body).into_owned());
                    ConsumeResult::Success
                }
            })
            .start()
            .await?;
        groups.push((group, consumer, got));
    }
    let producer = Producer::builder()
        .access_points([namesrv.as_str()])
        .start()
        .await?;
    let n = 2_000;
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let batch = chunk
            .iter()
            .map(|i| Message::new("news", format!("n-{i}")))
            .collect();
        producer.send_batch(batch).await?;
    }
    let started = Instant::now();
    for (group, consumer, got) in &groups {
        loop {
            let have = got.lock().unwrap_or_else(|p| p.into_inner()).len();
            if have == n {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(120),
                "{group} has {have} of {n}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!(
            "{group}: all {n} after {:?}, queues {:?}",
            started.elapsed(),
            consumer.assigned().len()
        );
    }
    for (_, consumer, _) in &groups {
        consumer.shutdown().await;
    }
    producer.shutdown().await;
    Ok(())
}
