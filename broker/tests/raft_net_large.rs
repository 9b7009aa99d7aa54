//! Large entries cross the Raft network: entries of several MiB, submitted together so
//! that one AppendEntries request holds more than a gRPC message may carry, replicate
//! intact to every node (the network cuts the request into pieces below the limit).

mod raft_net_common;

use futures_util::StreamExt;
use raft_net_common::*;
use raftmq_broker::raft::NetworkConfig;
use raftmq_broker::raft::types::NodeId;

const MIB: usize = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn multi_mib_entries_replicate_below_the_message_limit() -> anyhow::Result<()> {
    init_tracing();
    let defaults = Setup::default();
    let setup = Setup {
        // An 8 MiB message limit and a 1 MiB piece budget: five 6 MiB entries (30 MiB in
        // one request) only get through if the request is cut.
        net: NetworkConfig {
            max_message_size: 8 * MIB,
            append_piece_budget: MIB,
            max_inflight_bytes: 16 * MIB,
            ..NetworkConfig::default()
        },
        log: raft_log::LogConfig {
            max_record_size: 7 * MIB as u32,
            ..defaults.log.clone()
        },
        ..defaults
    };
    let ids: [NodeId; 3] = [1, 2, 3];
    let g = Group::start(&ids, setup).await?;
    g.initialize(&ids).await?;
    let leader = g.wait_leader(&ids, None).await?;
    let raft = &g.node(leader).raft;

    // A few small entries first, then the large ones in one batch (one log append, so
    // replication sees them all at once and builds one request).
    for i in 0..5 {
        raft.client_write(create_topic(i)).await?;
    }
    let large: Vec<_> = (0..5u64).map(|seed| send(seed, 6, MIB - 4096)).collect();
    let mut results = raft.client_write_many(large).await?;
    let mut last = 0;
    while let Some(r) = results.next().await {
        last = last.max(r??.log_id.index);
    }
    // And one entry far above the piece budget on its own.
    last = last.max(raft.client_write(send(99, 7, MIB - 4096)).await?.log_id.index);

    g.wait_applied(&ids, last).await?;
    let applied = g.assert_same_applied(&ids);
    assert_eq!(applied.len(), 11, "5 topics + 6 sends: {applied:?}");
    let sends: Vec<_> = applied.iter().filter(|(_, s)| s.starts_with("Send")).collect();
    assert_eq!(sends.len(), 6);
    assert!(
        sends
            .iter()
            .all(|(_, s)| s.contains("bytes=6266880") || s.contains("bytes=7311360")),
        "{sends:?}"
    );

    let stats = g.node(leader).net.stats();
    println!("leader network stats: {stats:?}");
    assert!(
        stats.split_requests >= 1,
        "a request of several large entries must have been cut: {stats:?}"
    );
    assert!(stats.append_messages > stats.append_requests, "{stats:?}");

    g.shutdown().await;
    Ok(())
}
