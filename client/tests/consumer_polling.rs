//! Pull and simple consumers against real processes (one name server, group g1): long
//! polling (a poll of an empty queue returns a message sent while it waits, not at its
//! timeout) and a pull consumer assigned single queues.

use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use anyhow::ensure;
use raftmq_client::FilterExpression;
use raftmq_client::Message;
use raftmq_client::Producer;
use raftmq_client::PullConsumer;
use raftmq_client::ReceivedMessage;
use raftmq_client::SimpleConsumer;
use raftmq_client::StartFrom;
use raftmq_client::route::MessageQueue;
use raftmq_proto::raftmq::admin::v1 as admin;
use raftmq_testkit::Cluster;
use raftmq_testkit::step;

/// How long after the poll starts the message is sent.
const SEND_AFTER: Duration = Duration::from_millis(300);
/// The poll's own wait: a client that did not long-poll would return (empty) at once,
/// one that waited out its timeout after this.
const POLL_WAIT: Duration = Duration::from_secs(5);
/// Well before the timeout.
const WELL_BEFORE: Duration = Duration::from_secs(2);

/// Sends `body` to `topic` `SEND_AFTER` from now, on a task of its own.
fn send_later(
    p: &Producer,
    topic: &'static str,
    body: &'static str,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let p = p.clone();
    tokio::spawn(async move {
        tokio::time::sleep(SEND_AFTER).await;
        p.send(Message::new(topic, body)).await?;
        Ok(())
    })
}

/// Checks that one poll, started on an empty queue, returned the message sent while it
/// waited, after it was sent and well before its timeout.
fn check_long_poll(what: &str, took: Duration, got: &[ReceivedMessage], body: &str) -> anyhow::Result<()> {
    eprintln!("{what}: the message sent {SEND_AFTER:?} after the poll began came after {took:?}");
    let bodies: Vec<Option<&str>> = got.iter().map(ReceivedMessage::body_str).collect();
    ensure!(bodies == [Some(body)], "{what}: got {bodies:?}");
    ensure!(
        took >= SEND_AFTER,
        "{what}: returned after {took:?}, before the send"
    );
    ensure!(took < WELL_BEFORE, "{what}: returned after {took:?}");
    Ok(())
}

/// `PullConsumer::poll(5 s)` on an empty queue returns a message sent 300 ms later.
async fn pull_long_polls(cluster: &Cluster, p: &Producer) -> anyhow::Result<()> {
    const TOPIC: &str = "long-pull";
    cluster.create_topic(TOPIC, 1, admin::MessageKind::Normal).await?;
    let mut c = PullConsumer::builder()
        .access_points(cluster.access_points())
        .consumer_group("long-pull")
        .start_from(StartFrom::Last)
        .build()
        .await?;
    c.subscribe(TOPIC, FilterExpression::all()).await?;
    // The first poll finds the queue's start (its end: it is empty).
    ensure!(c.poll(Duration::from_millis(100)).await?.is_empty());
    ensure!(c.position(&c.assignment()[0]) == Some(0));
    let sending = send_later(p, TOPIC, "late pull");
    let t = Instant::now();
    let got = c.poll(POLL_WAIT).await?;
    let took = t.elapsed();
    sending.await??;
    check_long_poll("pull", took, &got, "late pull")?;
    c.shutdown().await;
    Ok(())
}

/// `SimpleConsumer::receive` with a 5 s await duration on an empty queue returns a
/// message sent 300 ms later.
async fn simple_long_polls(cluster: &Cluster, p: &Producer) -> anyhow::Result<()> {
    const TOPIC: &str = "long-simple";
    cluster.create_topic(TOPIC, 1, admin::MessageKind::Normal).await?;
    let c = SimpleConsumer::builder()
        .access_points(cluster.access_points())
        .consumer_group("long-simple")
        .subscribe(TOPIC, FilterExpression::all())
        .await_duration(POLL_WAIT)
        .build()
        .await?;
    let sending = send_later(p, TOPIC, "late simple");
    let t = Instant::now();
    let got = c.receive(4, Duration::from_secs(10)).await?;
    let took = t.elapsed();
    sending.await??;
    check_long_poll("simple", took, &got, "late simple")?;
    for m in &got {
        c.ack(m).await?;
    }
    c.shutdown().await;
    Ok(())
}

/// A selector of the queue with id `id`.
fn queue_id(id: i32) -> impl Fn(&[MessageQueue], &Message) -> Option<usize> + Send + Sync {
    move |qs: &[MessageQueue], _: &Message| qs.iter().position(|q| q.id == id)
}

/// Polls `c` until `n` messages came, then once more briefly: nothing else comes.
async fn poll_exactly(c: &mut PullConsumer, n: usize) -> anyhow::Result<Vec<ReceivedMessage>> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while out.len() < n {
        ensure!(Instant::now() < deadline, "{} of {n} polled", out.len());
        out.extend(c.poll(Duration::from_secs(1)).await?);
    }
    out.extend(c.poll(Duration::from_millis(300)).await?);
    ensure!(out.len() == n, "{} polled, {n} expected", out.len());
    Ok(out)
}

/// Five messages on each of four queues; a pull consumer assigned queue 2 polls its five
/// alone, in order; assigned queue 0 instead, only queue 0's.
async fn assigned_queues_alone_are_polled(cluster: &Cluster, p: &Producer) -> anyhow::Result<()> {
    const TOPIC: &str = "assigned";
    cluster.create_topic(TOPIC, 4, admin::MessageKind::Normal).await?;
    for id in 0..4 {
        for j in 0..5 {
            p.send_with_selector(Message::new(TOPIC, format!("q{id}-{j}")), &queue_id(id))
                .await?;
        }
    }
    let mut c = PullConsumer::builder()
        .access_points(cluster.access_points())
        .consumer_group("assigned")
        .start_from(StartFrom::First)
        .build()
        .await?;
    let queues = c.fetch_queues(TOPIC).await?;
    ensure!(queues.len() == 4, "{queues:?}");
    for id in [2, 0] {
        let q = queues.iter().find(|q| q.id == id).context("queue")?.clone();
        c.assign(vec![q.clone()]);
        ensure!(c.assignment() == [q.clone()], "{:?}", c.assignment());
        let got = poll_exactly(&mut c, 5).await?;
        let seen: Vec<(i32, i64, &str)> = got
            .iter()
            .map(|m| (m.queue_id, m.queue_offset, m.body_str().unwrap_or("")))
            .collect();
        let bodies: Vec<String> = (0..5).map(|j| format!("q{id}-{j}")).collect();
        let want: Vec<(i32, i64, &str)> = (0..5).map(|j| (id, j as i64, bodies[j].as_str())).collect();
        ensure!(seen == want, "queue {id}: {seen:?}");
        ensure!(c.position(&q) == Some(5));
    }
    c.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn long_polls_and_assigned_queues() -> anyhow::Result<()> {
    let cluster = Cluster::start(1, &["g1"], 300, "").await?;
    let p = Producer::builder()
        .access_points(cluster.access_points())
        .start()
        .await?;
    tokio::try_join!(
        step("pull long poll", pull_long_polls(&cluster, &p)),
        step("simple long poll", simple_long_polls(&cluster, &p)),
        step("assign", assigned_queues_alone_are_polled(&cluster, &p)),
    )?;
    p.shutdown().await;
    Ok(())
}
