//! Where a new push-consumer group starts, with real brokers and in-process consumers:
//! messages stored before the group first polls a queue are skipped with `Last`, consumed
//! with `First`, and consumed from the first one stored at or after the time with
//! `Timestamp`; a group that consumed a queue resumes at its committed offset whatever
//! its start says.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;
use std::time::SystemTime;

use futures_util::future::join_all;
use raftmq_client::ConsumeResult;
use raftmq_client::FilterExpression;
use raftmq_client::Message;
use raftmq_client::Producer;
use raftmq_client::PushConsumer;
use raftmq_client::StartFrom;
use raftmq_client::consumer::push::PushOptions;
use raftmq_client::consumer::push::QueueEvent;
use raftmq_proto::raftmq::admin::v1::MessageKind;
use raftmq_testkit::Cluster;

const TOPIC: &str = "start";
const QUEUES: usize = 2;

/// A running consumer and what it consumed: body → (queue id, offset).
struct Member {
    consumer: PushConsumer,
    got: Arc<Mutex<BTreeMap<String, (i32, i64)>>>,
    assigned: Arc<AtomicUsize>,
}

impl Member {
    async fn start(namesrv: &str, group: &str, from: StartFrom) -> anyhow::Result<Self> {
        let got: Arc<Mutex<BTreeMap<String, (i32, i64)>>> = Arc::default();
        let assigned = Arc::new(AtomicUsize::new(0));
        let (sink, count) = (got.clone(), assigned.clone());
        let consumer = PushConsumer::builder()
            .access_points([namesrv])
            .consumer_group(group)
            .subscribe(TOPIC, FilterExpression::all())
            // Short receives: shutdowns wait for the one running.
            .options(PushOptions {
                await_duration: Duration::from_secs(1),
                ..PushOptions::default()
            })
            .start_from(from)
            .on_queue_change(move |e| {
                if matches!(e, QueueEvent::Assigned { .. }) {
                    count.fetch_add(1, Ordering::SeqCst);
                }
            })
            .listener(move |m| {
                let sink = sink.clone();
                async move {
                    let body = String::from_utf8_lossy(&m.body).into_owned();
                    sink.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(body, (m.queue_id, m.queue_offset));
                    ConsumeResult::Success
                }
            })
            .start()
            .await?;
        Ok(Self {
            consumer,
            got,
            assigned,
        })
    }

    fn bodies(&self) -> BTreeSet<String> {
        self.got
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    fn offsets(&self) -> BTreeMap<String, (i32, i64)> {
        self.got.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

async fn wait_for(what: &str, cond: impl Fn() -> bool) -> anyhow::Result<()> {
    let start = Instant::now();
    while !cond() {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Sends `{prefix}-0..n` one by one (spread over the queues); returns body → (queue, offset).
async fn send(producer: &Producer, prefix: &str, n: usize) -> anyhow::Result<BTreeMap<String, (i32, i64)>> {
    let mut out = BTreeMap::new();
    for i in 0..n {
        let body = format!("{prefix}-{i}");
        let r = producer.send(Message::new(TOPIC, body.clone())).await?;
        out.insert(body, (r.queue_id.unwrap_or(-1), r.offset));
    }
    Ok(out)
}

fn keys(m: &BTreeMap<String, (i32, i64)>) -> BTreeSet<String> {
    m.keys().cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_groups_start_where_start_from_says() -> anyhow::Result<()> {
    let cluster = Cluster::start(1, &["g1"], 1_000, "").await?;
    cluster
        .create_topic(TOPIC, QUEUES as u32, MessageKind::Normal)
        .await?;
    let namesrv = cluster.access_points()[0].clone();
    let producer = Producer::builder()
        .access_points([namesrv.as_str()])
        .start()
        .await?;

    let early = send(&producer, "early", 10).await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mid = send(&producer, "mid", 10).await?;

    let started = Instant::now();
    let last = Member::start(&namesrv, "GID_last", StartFrom::Last).await?;
    let first = Member::start(&namesrv, "GID_first", StartFrom::First).await?;
    let since = Member::start(&namesrv, "GID_since", StartFrom::Timestamp(t)).await?;
    for m in [&last, &first, &since] {
        wait_for("every queue assigned", || {
            m.assigned.load(Ordering::SeqCst) == QUEUES
        })
        .await?;
    }
    println!("three groups polling every queue after {:?}", started.elapsed());
    let late = send(&producer, "late", 10).await?;

    let all: BTreeSet<String> = [&early, &mid, &late].into_iter().flat_map(keys).collect();
    let from_t: BTreeSet<String> = keys(&mid).into_iter().chain(keys(&late)).collect();
    wait_for("First: everything", || first.bodies() == all).await?;
    wait_for("Timestamp: from the time on", || {
        since.bodies().is_superset(&from_t)
    })
    .await?;
    wait_for("Last: what came after the start", || {
        last.bodies().is_superset(&keys(&late))
    })
    .await?;
    // Each queue is popped in offset order: had a group started earlier than it should,
    // the earlier messages would have come first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(last.bodies(), keys(&late), "Last skips what came before");
    assert_eq!(
        since.bodies(),
        from_t,
        "Timestamp skips what came before the time"
    );
    assert_eq!(first.bodies(), all);
    // Timestamp: each queue starts at its first message stored at or after the time.
    let mut first_after: BTreeMap<i32, i64> = BTreeMap::new();
    for (q, o) in mid.values() {
        let e = first_after.entry(*q).or_insert(*o);
        *e = (*e).min(*o);
    }
    let mut lowest: BTreeMap<i32, i64> = BTreeMap::new();
    for (q, o) in since.offsets().values() {
        let e = lowest.entry(*q).or_insert(*o);
        *e = (*e).min(*o);
    }
    assert_eq!(lowest, first_after, "the first offset consumed per queue");
    println!("starts checked after {:?}", started.elapsed());

    // A group that consumed the queues resumes at its committed offset, Last or not.
    last.consumer.shutdown().await;
    let again = send(&producer, "again", 6).await?;
    let resumed = Member::start(&namesrv, "GID_last", StartFrom::Last).await?;
    wait_for("the group resumes", || resumed.bodies() == keys(&again)).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        resumed.bodies(),
        keys(&again),
        "nothing before the commit comes again"
    );

    join_all([&resumed, &first, &since].map(|m| m.consumer.shutdown())).await;
    producer.shutdown().await;
    Ok(())
}
