//! Snapshots over the Raft network: once the leader has purged the entries a node lacks,
//! that node can only catch up by installing a snapshot streamed in chunks. Covered for a
//! new node joining and for a follower that was down while the log was purged.

mod raft_net_common;

use futures_util::future::join_all;
use raft_net_common::*;
use raftmq_broker::raft::types::NodeId;

async fn write_range(g: &Group, leader: NodeId, range: std::ops::Range<usize>) -> anyhow::Result<u64> {
    let raft = &g.node(leader).raft;
    let mut last = 0;
    for r in join_all(range.map(|i| raft.client_write(create_topic(i)))).await {
        last = last.max(r?.log_id.index);
    }
    Ok(last)
}

/// Has the leader snapshot everything up to `index` and purge its log up to there.
async fn snapshot_and_purge(g: &Group, leader: NodeId, index: u64) -> anyhow::Result<()> {
    let raft = &g.node(leader).raft;
    raft.trigger().snapshot().await?;
    raft.wait(Some(WAIT))
        .metrics(
            |m| m.snapshot.as_ref().is_some_and(|s| s.index >= index),
            "snapshot built",
        )
        .await?;
    raft.trigger().purge_log(index).await?;
    raft.wait(Some(WAIT))
        .metrics(
            |m| m.purged.as_ref().is_some_and(|p| p.index >= index),
            "log purged",
        )
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_behind_the_purged_log_catch_up_by_snapshot() -> anyhow::Result<()> {
    init_tracing();
    let mut setup = Setup::default();
    // Small chunks, so that a snapshot of a few hundred commands takes several messages.
    setup.raft.snapshot_chunk_size = 4096;
    let mut g = Group::start(&[1, 2], setup).await?;
    g.initialize(&[1, 2]).await?;
    let leader = g.wait_leader(&[1, 2], None).await?;

    let last = write_range(&g, leader, 0..200).await?;
    g.wait_applied(&[1, 2], last).await?;
    snapshot_and_purge(&g, leader, last).await?;

    // A new node joins: the entries it needs are gone, so it gets the snapshot.
    g.start_node(3).await?;
    let node3 = g.node(3).node.clone();
    g.node(leader).raft.add_learner(3, node3, true).await?;
    g.wait_applied(&[3], last).await?;
    assert!(
        g.node(3).sm.installed_snapshots() >= 1,
        "node 3 must have installed a snapshot"
    );
    g.node(leader).raft.change_membership([1, 2, 3], false).await?;
    let last = write_range(&g, leader, 200..250).await?;
    g.wait_applied(&[1, 2, 3], last).await?;
    // Log replication to node 3 resumed, so the snapshot call has returned on the leader.
    let sent = g.node(leader).net.stats().snapshots_sent;
    assert!(sent >= 1, "the leader must have sent a snapshot");
    let applied = g.assert_same_applied(&[1, 2, 3]);
    assert_eq!(applied.len(), 250);

    // A follower is down while the group moves on and the leader purges past its log.
    let follower = [1, 2, 3]
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    let addr = g.node(follower).node.raft_addr.clone();
    let installed_before = g.node(follower).sm.installed_snapshots();
    g.nodes.get_mut(&follower).expect("runs").stop().await;
    g.nodes.remove(&follower);
    let live: Vec<NodeId> = [1, 2, 3].into_iter().filter(|id| *id != follower).collect();
    let last = write_range(&g, leader, 250..400).await?;
    g.wait_applied(&live, last).await?;
    snapshot_and_purge(&g, leader, last).await?;

    // Back on its old address, with its old log: too far behind for the purged log.
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    g.start_node_on(follower, listener).await?;
    g.wait_applied(&[follower], last).await?;
    let m = g.node(follower).metrics();
    assert!(
        m.snapshot.as_ref().is_some_and(|s| s.index >= last)
            && g.node(follower).sm.installed_snapshots() >= 1,
        "follower {follower} caught up without the snapshot: {m:?}"
    );
    let last = write_range(&g, leader, 400..420).await?;
    g.wait_applied(&[1, 2, 3], last).await?;
    let applied = g.assert_same_applied(&[1, 2, 3]);
    assert_eq!(applied.len(), 420);
    assert!(
        g.node(leader).net.stats().snapshots_sent > sent,
        "the restarted follower got a snapshot too"
    );
    println!(
        "snapshots sent by leader {leader}: {}; installed by node 3: {}; by follower {follower} after its restart: {} (before: {installed_before})",
        g.node(leader).net.stats().snapshots_sent,
        g.node(3).sm.installed_snapshots(),
        g.node(follower).sm.installed_snapshots(),
    );

    g.shutdown().await;
    Ok(())
}
