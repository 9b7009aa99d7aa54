//! A node whose commit log was damaged while it was down (a truncated segment) detects
//! it, takes no part in elections until it holds everything committed again, and is then
//! repaired from its peers — so a second fault right after cannot lose an acknowledged
//! send. Real processes.

mod process_common;

use std::collections::BTreeSet;
use std::time::Duration;
use std::time::Instant;

use process_common::*;
use raft_log::damage;
use raft_log::damage::TruncateAt;
use raftmq_proto::raftmq::admin::v1 as admin;

const OK: i32 = 20000;
const NOT_FOUND: i32 = 40401;
const TOPIC: &str = "damage";

/// Receives and acks through `node` until every id in `want` was seen.
async fn drain(g: &ProcGroup, node: u64, group: &str, want: &BTreeSet<String>) -> anyhow::Result<()> {
    let mut c = g.messaging(node).await?;
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + WAIT;
    while !want.is_subset(&seen) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "received {} of {} acknowledged sends; missing e.g. {:?}",
            want.intersection(&seen).count(),
            want.len(),
            want.difference(&seen).next()
        );
        let (code, msgs) = receive(&mut c, TOPIC, group, 64, Duration::from_secs(2)).await?;
        anyhow::ensure!(code == OK || code == NOT_FOUND, "receive answered code {code}");
        seen.extend(msgs.iter().map(msg_id));
        if !msgs.is_empty() {
            let code = ack(&mut c, TOPIC, group, &msgs).await?;
            anyhow::ensure!(code == OK, "ack answered code {code}");
        }
    }
    Ok(())
}

/// The leader any of `among` reports, if it is one of them.
async fn leader_among(g: &ProcGroup, among: &[u64]) -> Option<u64> {
    for &id in among {
        let Ok(mut a) = g.admin(id).await else { continue };
        let Ok(s) = a.cluster_status(admin::ClusterStatusRequest {}).await else {
            continue;
        };
        if let Some(l) = s.into_inner().leader_id
            && among.contains(&l)
        {
            return Some(l);
        }
    }
    None
}

/// Waits until node `id`'s output contains `text`.
async fn wait_log(g: &ProcGroup, id: u64, text: &str) -> anyhow::Result<Duration> {
    let start = Instant::now();
    while !g.node_log(id).contains(text) {
        anyhow::ensure!(start.elapsed() < WAIT, "node {id} never logged {text:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_node_stays_out_of_elections_until_repaired() -> anyhow::Result<()> {
    let mut g = ProcGroup::start(3)?;
    g.create_topic(TOPIC, 4, admin::MessageKind::Normal).await?;
    let leader = g.wait_leader(&[1, 2, 3]).await?;
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|i| *i != leader).collect();
    let (damaged, lagging) = (others[0], others[1]);

    // `lagging` misses the sends: only the leader and `damaged` acknowledge them.
    g.kill(lagging)?;
    let mut c = g.messaging(leader).await?;
    let mut acked = BTreeSet::new();
    for i in 0..120 {
        let id = format!("m-{i}");
        let (code, _) = send(&mut c, message(TOPIC, &id, b"acknowledged by two", None)).await?;
        anyhow::ensure!(code == OK, "send {i} answered {code}");
        acked.insert(id);
    }

    // `damaged` loses the tail of its log while it is down; then the leader dies too.
    g.kill(damaged)?;
    let cut = damage::truncate_segment(&g.data_dir(damaged).join("log"), 7, TruncateAt::Boundary)?;
    eprintln!("truncated node {damaged}'s log at index {}", cut.record.index);
    g.kill(leader)?;

    // Neither survivor holds the last sends. Without the fence they would elect one of
    // themselves and overwrite acknowledged entries; with it `damaged` refuses to vote.
    g.start_node(damaged)?;
    g.start_node(lagging)?;
    wait_log(&g, damaged, "takes no part in elections").await?;
    let pair = [damaged, lagging];
    let watch_until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < watch_until {
        let l = leader_among(&g, &pair).await;
        anyhow::ensure!(
            l.is_none(),
            "node {l:?} was elected without the fenced node's log"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The old leader returns and leads; the damaged node is repaired from it.
    g.start_node(leader)?;
    let new_leader = g.wait_leader(&[1, 2, 3]).await?;
    let repaired_in = wait_log(&g, damaged, "vote fence lifted").await?;
    eprintln!("node {new_leader} leads; node {damaged} repaired {repaired_in:?} after the leader came back");
    drain(&g, new_leader, "cg-1", &acked).await?;

    // Repaired, it votes again: with the leader gone, it and `lagging` elect one of
    // themselves, and every acknowledged send is still there.
    g.kill(new_leader)?;
    let survivors: Vec<u64> = [1, 2, 3].into_iter().filter(|i| *i != new_leader).collect();
    let next = g.wait_leader(&survivors).await?;
    drain(&g, next, "cg-2", &acked).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_damaged_under_a_running_leader_is_repaired() -> anyhow::Result<()> {
    let mut g = ProcGroup::start(3)?;
    g.create_topic(TOPIC, 4, admin::MessageKind::Normal).await?;
    let leader = g.wait_leader(&[1, 2, 3]).await?;
    let follower = [1, 2, 3].into_iter().find(|i| *i != leader).unwrap_or(1);
    let mut c = g.messaging(leader).await?;
    let mut acked = BTreeSet::new();
    let mut send_some = async |from: usize, acked: &mut BTreeSet<String>| -> anyhow::Result<()> {
        for i in from..from + 60 {
            let id = format!("m-{i}");
            let (code, _) = send(&mut c, message(TOPIC, &id, b"body", None)).await?;
            anyhow::ensure!(code == OK, "send {i} answered {code}");
            acked.insert(id);
        }
        Ok(())
    };
    send_some(0, &mut acked).await?;

    // The leader has seen the follower accept entries its log no longer holds when it
    // comes back: it must replicate them again, not stop on a "reverted" log.
    g.kill(follower)?;
    let flip = damage::flip_bits(&g.data_dir(follower).join("log"), 11)?;
    eprintln!("flipped bits of node {follower}'s entry {}", flip.record.index);
    g.start_node(follower)?;
    let repaired_in = wait_log(&g, follower, "vote fence lifted").await?;
    eprintln!("node {follower} repaired {repaired_in:?} after its restart");
    send_some(60, &mut acked).await?;

    g.kill(leader)?;
    let survivors: Vec<u64> = [1, 2, 3].into_iter().filter(|i| *i != leader).collect();
    let next = g.wait_leader(&survivors).await?;
    drain(&g, next, "cg", &acked).await?;
    Ok(())
}
