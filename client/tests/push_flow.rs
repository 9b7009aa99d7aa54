//! Push consumers in process against real brokers (one name server, group g1): flow
//! control bounds what one queue has in flight (by message count, and by body bytes),
//! and a shutdown during a listener call lets it finish and acknowledges its message.
//! Also the options start refuses, which needs no cluster.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use anyhow::ensure;
use raftmq_client::ClientError;
use raftmq_client::ConsumeResult;
use raftmq_client::FilterExpression;
use raftmq_client::Message;
use raftmq_client::Producer;
use raftmq_client::PullConsumer;
use raftmq_client::PushConsumer;
use raftmq_client::StartFrom;
use raftmq_client::consumer::push::PushOptions;
use raftmq_proto::raftmq::admin::v1 as admin;
use raftmq_testkit::Cluster;
use raftmq_testkit::step;

/// Messages each flow-control scenario consumes.
const FLOW_MESSAGES: usize = 12;
/// How long the slow listener of the flow-control scenarios takes per message.
const SLOW: Duration = Duration::from_millis(250);

/// Listener calls running now, the most seen at once, and calls finished.
#[derive(Debug, Default)]
struct Calls {
    running: AtomicUsize,
    most: AtomicUsize,
    finished: AtomicUsize,
}

impl Calls {
    async fn call(&self, took: Duration) {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(took).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.finished.fetch_add(1, Ordering::SeqCst);
    }
}

/// Waits (20 ms steps) until `cond` holds, at most `limit`.
async fn wait_until(what: &str, limit: Duration, cond: impl Fn() -> bool) -> anyhow::Result<()> {
    let start = Instant::now();
    while !cond() {
        ensure!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The messages of `group` on `topic`'s queue 0 delivered and not acknowledged, as g1's
/// leader reports.
async fn broker_inflight(cluster: &Cluster, group: &str, topic: &str) -> anyhow::Result<u32> {
    let g = cluster.group("g1");
    let ids: Vec<u64> = g.nodes.keys().copied().collect();
    let mut a = g.admin(g.wait_leader(&ids).await?).await?;
    let req = admin::GroupProgressRequest {
        group: group.into(),
        topic: topic.into(),
    };
    let queues = a.group_progress(req).await?.into_inner().queues;
    Ok(queues.iter().map(|q| q.inflight).max().unwrap_or(0))
}

/// Sends `FLOW_MESSAGES` bodies of `size` bytes to `topic`, then consumes them with a
/// listener taking `SLOW` each, 20 workers and `options`' limits, sampling the broker's
/// count of messages in flight meanwhile; returns the most listener calls at once and
/// the most messages in flight the broker saw.
async fn consume_slowly(
    cluster: &Cluster,
    p: &Producer,
    topic: &str,
    size: usize,
    options: PushOptions,
) -> anyhow::Result<(usize, u32)> {
    cluster.create_topic(topic, 1, admin::MessageKind::Normal).await?;
    for i in 0..FLOW_MESSAGES {
        let mut body = format!("{i}-").into_bytes();
        body.resize(size, b'.');
        p.send(Message::new(topic, body)).await?;
    }
    let calls = Arc::new(Calls::default());
    let listener_calls = calls.clone();
    let c = PushConsumer::builder()
        .access_points(cluster.access_points())
        .consumer_group(topic)
        .subscribe(topic, FilterExpression::all())
        .options(PushOptions {
            workers: 20,
            await_duration: Duration::from_secs(1),
            ..options
        })
        .start_from(StartFrom::First)
        .listener(move |_| {
            let calls = listener_calls.clone();
            async move {
                calls.call(SLOW).await;
                ConsumeResult::Success
            }
        })
        .start()
        .await?;
    let mut broker_most = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while calls.finished.load(Ordering::SeqCst) < FLOW_MESSAGES {
        ensure!(Instant::now() < deadline, "{calls:?}");
        broker_most = broker_most.max(broker_inflight(cluster, topic, topic).await?);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.shutdown().await;
    Ok((calls.most.load(Ordering::SeqCst), broker_most))
}

/// `max_cached_messages = 2`: never more than 2 messages of the queue in flight, though
/// 20 workers could take more; and 2 are (the limit, not the listener, bounds it).
async fn at_most_max_cached_messages_in_flight(cluster: &Cluster, p: &Producer) -> anyhow::Result<()> {
    let options = PushOptions {
        max_cached_messages: 2,
        ..PushOptions::default()
    };
    let (most, broker) = consume_slowly(cluster, p, "flow-count", 16, options).await?;
    eprintln!(
        "max_cached_messages 2: at most {most} listener calls at once, {broker} in flight at the broker"
    );
    ensure!(most == 2, "{most} listener calls at once");
    ensure!(broker <= 2, "{broker} messages in flight at the broker");
    Ok(())
}

/// `max_cached_bytes = 2,500` with 1,000-byte bodies, one message per receive: a receive
/// waits while 2,500 bytes or more are in flight, so at most 3 messages are.
async fn at_most_max_cached_bytes_in_flight(cluster: &Cluster, p: &Producer) -> anyhow::Result<()> {
    let options = PushOptions {
        max_cached_bytes: 2_500,
        batch_size: 1,
        ..PushOptions::default()
    };
    let (most, broker) = consume_slowly(cluster, p, "flow-bytes", 1_000, options).await?;
    eprintln!(
        "max_cached_bytes 2,500: at most {most} listener calls at once, {broker} in flight at the broker"
    );
    ensure!(most == 3, "{most} listener calls at once");
    ensure!(broker <= 3, "{broker} messages in flight at the broker");
    Ok(())
}

/// What a member of the drain group consumed: bodies, in order.
type Seen = Arc<std::sync::Mutex<Vec<String>>>;

/// A member of `group` on `topic` whose listener takes `slow` for the body "slow".
async fn drain_member(
    cluster: &Cluster,
    topic: &str,
    slow: Duration,
    seen: Seen,
    finished: Arc<AtomicBool>,
) -> anyhow::Result<PushConsumer> {
    Ok(PushConsumer::builder()
        .access_points(cluster.access_points())
        .consumer_group(topic)
        .subscribe(topic, FilterExpression::all())
        .options(PushOptions {
            await_duration: Duration::from_secs(1),
            invisible_duration: Duration::from_secs(10),
            ..PushOptions::default()
        })
        .start_from(StartFrom::First)
        .listener(move |m| {
            let (seen, finished) = (seen.clone(), finished.clone());
            async move {
                let body = m.body_str().unwrap_or("").to_owned();
                seen.lock().unwrap_or_else(|p| p.into_inner()).push(body.clone());
                if body == "slow" {
                    tokio::time::sleep(slow).await;
                    finished.store(true, Ordering::SeqCst);
                }
                ConsumeResult::Success
            }
        })
        .start()
        .await?)
}

fn seen(s: &Seen) -> Vec<String> {
    s.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// A shutdown while the listener works on a message (1.5 s) waits for the call, and
/// acknowledges the message: the group's committed offset is past it, and a new member
/// of the group never gets it, even after its invisible duration (10 s) ran out.
async fn shutdown_finishes_and_acks_the_call_in_flight(
    cluster: &Cluster,
    p: &Producer,
) -> anyhow::Result<()> {
    const TOPIC: &str = "drain";
    cluster.create_topic(TOPIC, 1, admin::MessageKind::Normal).await?;
    let (first, finished) = (Seen::default(), Arc::new(AtomicBool::new(false)));
    let a = drain_member(
        cluster,
        TOPIC,
        Duration::from_millis(1500),
        first.clone(),
        finished.clone(),
    )
    .await?;
    p.send(Message::new(TOPIC, "slow")).await?;
    wait_until("the slow call", Duration::from_secs(20), || {
        !seen(&first).is_empty()
    })
    .await?;
    let received = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    ensure!(
        !finished.load(Ordering::SeqCst),
        "the call ended before the shutdown"
    );
    a.shutdown().await;
    eprintln!(
        "shutdown 300 ms into a 1.5 s listener call returned {:?} after the call began",
        received.elapsed()
    );
    ensure!(
        finished.load(Ordering::SeqCst),
        "shutdown returned before the call ended"
    );

    let reader = PullConsumer::builder()
        .access_points(cluster.access_points())
        .consumer_group(TOPIC)
        .build()
        .await?;
    let q = reader
        .fetch_queues(TOPIC)
        .await?
        .into_iter()
        .next()
        .context("queue")?;
    ensure!(reader.committed(&q).await? == Some(1), "not acknowledged");
    reader.shutdown().await;

    let second = Seen::default();
    let b = drain_member(cluster, TOPIC, Duration::ZERO, second.clone(), Arc::default()).await?;
    p.send(Message::new(TOPIC, "after")).await?;
    let invisible_until = received + Duration::from_secs(11);
    wait_until("the new member", Duration::from_secs(30), || {
        seen(&second).contains(&"after".to_owned()) && Instant::now() >= invisible_until
    })
    .await?;
    b.shutdown().await;
    ensure!(seen(&first) == ["slow"], "{:?}", seen(&first));
    ensure!(seen(&second) == ["after"], "delivered again: {:?}", seen(&second));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flow_control_and_graceful_shutdown() -> anyhow::Result<()> {
    let cluster = Cluster::start(1, &["g1"], 300, "").await?;
    let p = Producer::builder()
        .access_points(cluster.access_points())
        .start()
        .await?;
    tokio::try_join!(
        step("messages", at_most_max_cached_messages_in_flight(&cluster, &p)),
        step("bytes", at_most_max_cached_bytes_in_flight(&cluster, &p)),
        step(
            "shutdown",
            shutdown_finishes_and_acks_the_call_in_flight(&cluster, &p)
        ),
    )?;
    p.shutdown().await;
    Ok(())
}

/// Limits of zero are refused at start with the typed error (nothing is called: no
/// name server listens).
#[tokio::test]
async fn zero_limits_are_refused_at_start() -> anyhow::Result<()> {
    let zeros = [
        PushOptions {
            max_cached_messages: 0,
            ..PushOptions::default()
        },
        PushOptions {
            max_cached_bytes: 0,
            ..PushOptions::default()
        },
    ];
    for options in zeros {
        let r = PushConsumer::builder()
            .access_points(["127.0.0.1:1"])
            .consumer_group("G")
            .subscribe("T", FilterExpression::all())
            .options(options.clone())
            .listener(|_| async { ConsumeResult::Success })
            .start()
            .await;
        match r {
            Err(ClientError::InvalidArgument(m)) => ensure!(m.contains("max_cached"), "{m}"),
            other => anyhow::bail!("{options:?}: {other:?}"),
        }
    }
    Ok(())
}
