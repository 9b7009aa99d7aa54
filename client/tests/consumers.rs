//! The consumers against real processes: one name server and two three-node broker groups.
//!
//! Two clusters, one per test (they run in parallel): a healthy one shared by the
//! scenarios that leave it healthy (each on its own topic and consumer groups, run at
//! once), and one where the leader of g1 is killed. Messages are sent with raw stubs.

use std::collections::BTreeMap;
use std::collections::HashSet;
use std::time::Duration;
use std::time::Instant;
use std::time::SystemTime;

use anyhow::Context;
use anyhow::bail;
use anyhow::ensure;
use futures_util::future::try_join_all;
use raftmq_client::ClientError;
use raftmq_client::FilterExpression;
use raftmq_client::PullConsumer;
use raftmq_client::ReceivedMessage;
use raftmq_client::SimpleConsumer;
use raftmq_client::StartFrom;
use raftmq_proto::raftmq::admin::v1 as admin;
use raftmq_proto::rocketmq::v2 as pb;
use raftmq_testkit::Cluster;

const GROUPS: [&str; 2] = ["g1", "g2"];
/// The shortest invisible duration brokers accept.
const INVISIBLE: Duration = Duration::from_secs(10);

/// Sends `n` messages `{prefix}-{i}` to `topic`, alternating between the groups in
/// `groups` (each group's messages in order), tagged by `tag(i)`; returns their ids.
async fn send(
    cluster: &Cluster,
    groups: &[&str],
    topic: &str,
    prefix: &str,
    n: usize,
    tag: fn(usize) -> &'static str,
) -> anyhow::Result<Vec<String>> {
    let per_group = groups.iter().enumerate().map(|(g, name)| async move {
        let mut stub = cluster.group(name).messaging(1).await?;
        let mut ids = Vec::new();
        for i in (g..n).step_by(groups.len()) {
            let id = format!("{prefix}-{i}");
            let mut m = raftmq_testkit::message(topic, &id, format!("body of {id}").as_bytes(), None);
            if let Some(s) = m.system_properties.as_mut() {
                s.tag = Some(tag(i).to_owned());
            }
            let (code, _) = raftmq_testkit::send(&mut stub, m).await?;
            ensure!(code == pb::Code::Ok as i32, "send {id} to {name}: code {code}");
            ids.push(id);
        }
        anyhow::Ok(ids)
    });
    Ok(try_join_all(per_group).await?.concat())
}

fn tag_a(_: usize) -> &'static str {
    "TagA"
}

fn tag_ab(i: usize) -> &'static str {
    if i.is_multiple_of(2) { "TagA" } else { "TagB" }
}

async fn simple(
    cluster: &Cluster,
    group: &str,
    topic: &str,
    wait: Duration,
) -> anyhow::Result<SimpleConsumer> {
    Ok(SimpleConsumer::builder()
        .access_points(cluster.access_points())
        .consumer_group(group)
        .subscribe(topic, FilterExpression::all())
        .await_duration(wait)
        .build()
        .await?)
}

async fn puller(cluster: &Cluster, group: &str, start: StartFrom) -> anyhow::Result<PullConsumer> {
    Ok(PullConsumer::builder()
        .access_points(cluster.access_points())
        .consumer_group(group)
        .start_from(start)
        .batch_size(8)
        .build()
        .await?)
}

/// Receives until every id of `expected` came once, acknowledging each.
async fn receive_all(c: &SimpleConsumer, expected: &[String]) -> anyhow::Result<()> {
    let expected: HashSet<&String> = expected.iter().collect();
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < expected.len() {
        ensure!(
            Instant::now() < deadline,
            "{}: {} of {} received",
            c.consumer_group(),
            seen.len(),
            expected.len()
        );
        for m in c.receive(32, Duration::from_secs(30)).await? {
            ensure!(expected.contains(&m.message_id), "unexpected {}", m.message_id);
            ensure!(
                seen.insert(m.message_id.clone()),
                "{} received twice",
                m.message_id
            );
            ensure!(m.body_str() == Some(format!("body of {}", m.message_id).as_str()) && !m.corrupted);
            ensure!(m.delivery_attempt == 1 && m.tag.as_deref() == Some("TagA"));
            c.ack(&m).await?;
        }
    }
    c.shutdown().await;
    Ok(())
}

/// 200 messages over both groups: two consumer groups each receive every one once.
async fn every_group_receives_everything_once(cluster: &Cluster) -> anyhow::Result<()> {
    cluster.create_topic("TS", 4, admin::MessageKind::Normal).await?;
    let ids = send(cluster, &GROUPS, "TS", "s", 200, tag_a).await?;
    let started = Instant::now();
    let a = simple(cluster, "GA", "TS", Duration::from_secs(2)).await?;
    let b = simple(cluster, "GB", "TS", Duration::from_secs(2)).await?;
    tokio::try_join!(receive_all(&a, &ids), receive_all(&b, &ids))?;
    eprintln!(
        "two groups received and acked 200 messages each in {:?}",
        started.elapsed()
    );
    Ok(())
}

/// Receives from `c` until each id of `want` was delivered again; returns when.
async fn wait_redelivered(
    c: &SimpleConsumer,
    want: &[&str],
    first: &BTreeMap<String, ReceivedMessage>,
) -> anyhow::Result<BTreeMap<String, Instant>> {
    let mut back = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(25);
    while back.len() < want.len() {
        ensure!(Instant::now() < deadline, "only {back:?} delivered again");
        for m in c.receive(4, INVISIBLE).await? {
            ensure!(
                m.delivery_attempt == 2,
                "{} attempt {}",
                m.message_id,
                m.delivery_attempt
            );
            back.insert(m.message_id.clone(), Instant::now());
            let old = &first[&m.message_id];
            match c.ack(old).await {
                Err(ClientError::Broker {
                    code: pb::Code::InvalidReceiptHandle,
                    ..
                }) => {}
                other => bail!("ack with the handle of the first delivery: {other:?}"),
            }
            c.ack(&m).await?;
        }
    }
    Ok(back)
}

/// A message not acked reappears after its invisible duration; changing the duration
/// brings it back sooner or later.
async fn invisible_durations_are_kept_and_changed(cluster: &Cluster) -> anyhow::Result<()> {
    cluster.create_topic("TV", 1, admin::MessageKind::Normal).await?;
    send(cluster, &["g1"], "TV", "v", 3, tag_a).await?;
    let c = simple(cluster, "GV", "TV", Duration::from_secs(1)).await?;
    let t0 = Instant::now();
    let mut first = BTreeMap::new();
    while first.len() < 3 {
        ensure!(t0.elapsed() < Duration::from_secs(8), "got {:?}", first.keys());
        for m in c.receive(3, INVISIBLE).await? {
            first.insert(m.message_id.clone(), m);
        }
    }
    let mut sooner = first["v-0"].clone();
    let t_sooner = Instant::now();
    c.change_invisible_duration(&mut sooner, Duration::from_secs(2))
        .await?;
    let mut later = first["v-1"].clone();
    let t_later = Instant::now();
    let handle = c
        .change_invisible_duration(&mut later, Duration::from_secs(13))
        .await?;
    ensure!(later.receipt_handle.as_deref() == Some(handle.as_str()));
    let back = wait_redelivered(&c, &["v-0", "v-1", "v-2"], &first).await?;
    let (a, b, untouched) = (back["v-0"] - t_sooner, back["v-1"] - t_later, back["v-2"] - t0);
    eprintln!("redelivered after: shortened to 2 s {a:?}, extended to 13 s {b:?}, kept 10 s {untouched:?}");
    ensure!(
        a >= Duration::from_secs(2) && back["v-0"] < back["v-2"],
        "shortened: {a:?}"
    );
    ensure!(untouched >= INVISIBLE, "untouched: {untouched:?}");
    ensure!(
        b >= Duration::from_secs(13) && back["v-1"] > back["v-2"],
        "extended: {b:?}"
    );
    c.shutdown().await;
    Ok(())
}

/// Polls until `n` messages came (then once more, briefly, to see nothing else does).
async fn poll_n(c: &mut PullConsumer, n: usize) -> anyhow::Result<Vec<ReceivedMessage>> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while out.len() < n {
        ensure!(
            Instant::now() < deadline,
            "{}: {} of {n} pulled",
            c.consumer_group(),
            out.len()
        );
        out.extend(c.poll(Duration::from_secs(1)).await?);
    }
    let extra = c.poll(Duration::from_millis(300)).await?;
    ensure!(
        extra.is_empty() && out.len() == n,
        "{} pulled, {n} expected",
        out.len() + extra.len()
    );
    Ok(out)
}

/// Each queue's messages came in offset order, from `from` on, without gaps.
fn check_queue_order(msgs: &[ReceivedMessage], from: i64) -> anyhow::Result<BTreeMap<String, i64>> {
    let mut next: BTreeMap<String, i64> = BTreeMap::new();
    for m in msgs {
        let at = next.entry(format!("{}:{}", m.broker, m.queue_id)).or_insert(from);
        ensure!(
            m.queue_offset == *at,
            "{}:{} offset {} after {}",
            m.broker,
            m.queue_id,
            m.queue_offset,
            *at
        );
        *at += 1;
    }
    Ok(next)
}

fn ids(msgs: &[ReceivedMessage]) -> HashSet<String> {
    msgs.iter().map(|m| m.message_id.clone()).collect()
}

/// Pull: everything in per-queue order, commit, resume in a new consumer, seek; then
/// [`late_starts_and_filters`].
async fn pull_consumers_resume_seek_and_filter(cluster: &Cluster) -> anyhow::Result<()> {
    cluster.create_topic("TP", 2, admin::MessageKind::Normal).await?;
    let sent = send(cluster, &GROUPS, "TP", "p", 40, tag_ab).await?;
    let mut c1 = puller(cluster, "GP", StartFrom::First).await?;
    c1.subscribe("TP", FilterExpression::all()).await?;
    ensure!(c1.assignment().len() == 4, "{:?}", c1.assignment());
    let got = poll_n(&mut c1, 40).await?;
    ensure!(
        ids(&got) == sent.iter().cloned().collect(),
        "pulled other messages"
    );
    let ends = check_queue_order(&got, 0)?;
    c1.commit().await?;
    for q in c1.assignment() {
        ensure!(
            c1.committed(&q).await? == c1.position(&q),
            "{} committed",
            q.key()
        );
    }
    c1.shutdown().await;
    let t_mid = SystemTime::now();

    let mut c2 = puller(cluster, "GP", StartFrom::Last).await?;
    c2.subscribe("TP", FilterExpression::all()).await?;
    ensure!(
        c2.poll(Duration::from_millis(300)).await?.is_empty(),
        "resumed at the commit"
    );
    let extra = send(cluster, &GROUPS, "TP", "x", 4, tag_a).await?;
    let got = poll_n(&mut c2, 4).await?;
    ensure!(ids(&got) == extra.iter().cloned().collect());
    seek_around(&mut c2, &ends, t_mid).await?;
    c2.shutdown().await;
    late_starts_and_filters(cluster, t_mid, extra).await
}

/// Pull: a consumer that polled some messages and shut down without committing them has
/// its positions committed by the shutdown; the next consumer of the group reads the rest.
async fn pull_shutdown_commits_positions(cluster: &Cluster) -> anyhow::Result<()> {
    cluster.create_topic("TPS", 2, admin::MessageKind::Normal).await?;
    let sent = send(cluster, &GROUPS, "TPS", "ps", 40, tag_a).await?;
    let mut c1 = puller(cluster, "GPS", StartFrom::First).await?;
    c1.subscribe("TPS", FilterExpression::all()).await?;
    let mut first = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while first.is_empty() {
        ensure!(Instant::now() < deadline, "nothing pulled");
        first = c1.poll(Duration::from_secs(1)).await?;
    }
    ensure!(first.len() < sent.len(), "one poll took everything");
    let positions: Vec<_> = c1
        .assignment()
        .iter()
        .map(|q| (q.clone(), c1.position(q)))
        .collect();
    c1.shutdown().await;

    let mut c2 = puller(cluster, "GPS", StartFrom::Last).await?;
    c2.subscribe("TPS", FilterExpression::all()).await?;
    for (q, at) in &positions {
        ensure!(c2.committed(q).await? == *at, "{} committed at shutdown", q.key());
    }
    let rest = poll_n(&mut c2, sent.len() - first.len()).await?;
    let want: HashSet<String> = sent
        .iter()
        .cloned()
        .collect::<HashSet<_>>()
        .difference(&ids(&first))
        .cloned()
        .collect();
    ensure!(ids(&rest) == want, "resumed after what the first consumer polled");
    c2.shutdown().await;
    Ok(())
}

/// Pull consumers of new groups: starting at the end, at `t_mid` (after which `extra`
/// came), or filtering by tag.
async fn late_starts_and_filters(
    cluster: &Cluster,
    t_mid: SystemTime,
    extra: Vec<String>,
) -> anyhow::Result<()> {
    let mut late = puller(cluster, "GP-late", StartFrom::Last).await?;
    late.subscribe("TP", FilterExpression::all()).await?;
    ensure!(
        late.poll(Duration::from_millis(300)).await?.is_empty(),
        "starts at the end"
    );
    let newer = send(cluster, &GROUPS, "TP", "y", 4, tag_a).await?;
    ensure!(ids(&poll_n(&mut late, 4).await?) == newer.iter().cloned().collect());
    late.shutdown().await;

    let mut since = puller(cluster, "GP-since", StartFrom::Timestamp(t_mid)).await?;
    since.subscribe("TP", FilterExpression::all()).await?;
    let want: HashSet<String> = extra.into_iter().chain(newer).collect();
    ensure!(ids(&poll_n(&mut since, 8).await?) == want, "starts at the time");
    since.shutdown().await;

    let mut tagged = puller(cluster, "GP-tagged", StartFrom::First).await?;
    tagged.subscribe("TP", FilterExpression::tag("TagB")?).await?;
    let got = poll_n(&mut tagged, 20).await?;
    ensure!(
        got.iter().all(|m| m.tag.as_deref() == Some("TagB")),
        "filtered by tag"
    );
    tagged.shutdown().await;
    Ok(())
}

/// Seeks on one queue of `c2`, which read everything: `ends` are the queues' ends before
/// `t_mid`, after which more came.
async fn seek_around(
    c2: &mut PullConsumer,
    ends: &BTreeMap<String, i64>,
    t_mid: SystemTime,
) -> anyhow::Result<()> {
    let q = c2
        .assignment()
        .into_iter()
        .max_by_key(|q| ends[&q.key()])
        .context("no queue")?;
    let end = c2.position(&q).context("position")?;
    c2.seek(&q, 1)?;
    let again = c2.poll(Duration::from_secs(1)).await?;
    ensure!(!again.is_empty() && again.iter().all(|m| m.broker == q.broker && m.queue_id == q.id));
    check_queue_order(&again, 1)?;
    c2.seek_to_begin(&q).await?;
    ensure!(c2.position(&q) == Some(0));
    c2.seek_to_timestamp(&q, t_mid).await?;
    ensure!(
        c2.position(&q) == Some(ends[&q.key()]),
        "first message after the time"
    );
    c2.seek_to_end(&q).await?;
    ensure!(c2.position(&q) == Some(end));
    Ok(())
}

/// Bad input is refused before any call (the access point does not listen, so a call
/// would fail otherwise); an unknown topic is NotFound.
async fn bad_input_is_refused(cluster: &Cluster) -> anyhow::Result<()> {
    let invalid = |r: Result<(), ClientError>, what: &str| match r {
        Err(ClientError::InvalidArgument(_)) => Ok(()),
        other => Err(anyhow::anyhow!("{what}: {other:?}")),
    };
    let nowhere = ["127.0.0.1:1"];
    let b = || SimpleConsumer::builder().access_points(nowhere);
    invalid(
        b().subscribe("T", FilterExpression::all())
            .build()
            .await
            .map(drop),
        "empty group",
    )?;
    invalid(b().consumer_group("a b").build().await.map(drop), "illegal group")?;
    let topic = b()
        .consumer_group("G")
        .subscribe("a topic", FilterExpression::all());
    invalid(topic.build().await.map(drop), "illegal topic")?;
    for bad in ["", "|", "a |", "a || || b", "a | b"] {
        invalid(FilterExpression::tag(bad).map(drop), bad)?;
    }
    invalid(FilterExpression::sql92("a > 1").map(drop), "sql92")?;
    let p = PullConsumer::builder().access_points(nowhere);
    invalid(p.clone().build().await.map(drop), "empty pull group")?;
    invalid(
        p.consumer_group("G").batch_size(0).build().await.map(drop),
        "batch 0",
    )?;
    let idle = b().consumer_group("G").build().await?;
    invalid(idle.receive(1, INVISIBLE).await.map(drop), "no subscription")?;
    idle.shutdown().await;

    let unknown = simple(cluster, "GX", "NoSuchTopic", Duration::from_secs(1)).await;
    ensure!(
        matches!(unknown, Err(ref e) if e.downcast_ref::<ClientError>().is_some_and(|e| matches!(e, ClientError::NotFound(_)))),
        "{unknown:?}"
    );
    let mut pull = puller(cluster, "GX", StartFrom::First).await?;
    ensure!(
        matches!(
            pull.poll(Duration::ZERO).await,
            Err(ClientError::InvalidArgument(_))
        ),
        "nothing assigned"
    );
    let r = pull.subscribe("NoSuchTopic", FilterExpression::all()).await;
    ensure!(matches!(r, Err(ClientError::NotFound(_))), "{r:?}");
    pull.shutdown().await;
    ensure!(matches!(
        pull.poll(Duration::ZERO).await,
        Err(ClientError::Shutdown)
    ));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_on_a_healthy_cluster() -> anyhow::Result<()> {
    let started = Instant::now();
    let cluster = Cluster::start(1, &GROUPS, 1000, "").await?;
    eprintln!("cluster up in {:?}", started.elapsed());
    tokio::try_join!(
        every_group_receives_everything_once(&cluster),
        invisible_durations_are_kept_and_changed(&cluster),
        pull_consumers_resume_seek_and_filter(&cluster),
        pull_shutdown_commits_positions(&cluster),
        bad_input_is_refused(&cluster),
    )?;
    Ok(())
}

/// What a consumer saw across the kill.
#[derive(Debug, Default)]
struct Tally {
    acked: HashSet<String>,
    maybe_acked: HashSet<String>,
    receive_errors: usize,
    ack_errors: usize,
    first_g1_ack_after_kill: Option<Duration>,
}

impl Tally {
    /// Acknowledges what `c` received; an ack that answered OK must never be delivered again.
    async fn take(
        &mut self,
        c: &SimpleConsumer,
        msgs: Vec<ReceivedMessage>,
        killed: Option<Instant>,
    ) -> anyhow::Result<()> {
        for m in msgs {
            ensure!(
                !self.acked.contains(&m.message_id),
                "{} acked, then delivered again",
                m.message_id
            );
            match c.ack(&m).await {
                Ok(()) => {
                    if let Some(k) = killed.filter(|_| m.broker == "g1") {
                        self.first_g1_ack_after_kill.get_or_insert(k.elapsed());
                    }
                    self.maybe_acked.remove(&m.message_id);
                    self.acked.insert(m.message_id);
                }
                Err(e) if e.is_retryable() || e.code() == Some(pb::Code::InvalidReceiptHandle) => {
                    eprintln!("ack {}: {e}", m.message_id);
                    self.ack_errors += 1;
                    if matches!(e, ClientError::OutcomeUnknown(_)) {
                        self.maybe_acked.insert(m.message_id);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// Receives and acks go on across the kill of g1's leader (the client moves to the next
/// address; followers relay to the new leader), and nothing acked comes back, even once
/// every invisible duration has run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receives_and_acks_survive_a_leader_kill() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(1, &GROUPS, 1000, "").await?;
    cluster.create_topic("TK", 2, admin::MessageKind::Normal).await?;
    let ids = send(&cluster, &GROUPS, "TK", "k", 100, tag_a).await?;
    let c = simple(&cluster, "GK", "TK", Duration::from_secs(1)).await?;
    let mut t = Tally::default();
    let mut killed: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(40);
    while t.acked.len() + t.maybe_acked.len() < ids.len() {
        ensure!(Instant::now() < deadline, "{} acked: {t:?}", t.acked.len());
        if killed.is_none() && t.acked.len() >= 30 {
            let g1 = cluster.group_mut("g1");
            let leader = g1.wait_leader(&[1, 2, 3]).await?;
            g1.kill(leader)?;
            killed = Some(Instant::now());
        }
        match c.receive(8, INVISIBLE).await {
            Ok(msgs) => t.take(&c, msgs, killed).await?,
            Err(e) if e.is_retryable() => {
                eprintln!("receive: {e}");
                t.receive_errors += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
    // Every invisible duration runs out: only what was never acked may come back.
    let tail = Instant::now();
    while tail.elapsed() < INVISIBLE + Duration::from_secs(1) {
        if let Ok(msgs) = c.receive(8, INVISIBLE).await {
            t.take(&c, msgs, killed).await?;
        }
    }
    eprintln!(
        "leader kill: first g1 ack {:?} after it; {} receive and {} ack errors; {} acked, {} maybe",
        t.first_g1_ack_after_kill,
        t.receive_errors,
        t.ack_errors,
        t.acked.len(),
        t.maybe_acked.len()
    );
    ensure!(
        t.first_g1_ack_after_kill.is_some(),
        "nothing of g1 acked after the kill"
    );
    c.shutdown().await;
    Ok(())
}
