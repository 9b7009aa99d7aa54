//! A node's life cycle as a process: SIGTERM ends it promptly even with long polls open;
//! a node whose commit log fails stops serving and exits non-zero (so that a supervisor
//! restarts it from its data dir) instead of lingering as a member that cannot write.

mod process_common;

use std::path::Path;
use std::time::Duration;

use process_common::*;
use raftmq_proto::raftmq::admin::v1 as admin;

/// Sets or clears the immutable flag (ext4, needs root); whether it worked.
fn immutable(path: &Path, on: bool) -> bool {
    std::process::Command::new("chattr")
        .arg(if on { "+i" } else { "-i" })
        .arg(path)
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_log_fails_exits_non_zero() -> anyhow::Result<()> {
    let mut g = ProcGroup::start(1)?;
    g.create_topic("t", 1, admin::MessageKind::Normal).await?;
    let log_dir = g.dir.path().join("node-1/log");
    let segments: Vec<_> = std::fs::read_dir(&log_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    anyhow::ensure!(!segments.is_empty(), "no segment in {}", log_dir.display());
    if !segments.iter().all(|p| immutable(p, true)) {
        segments.iter().for_each(|p| {
            immutable(p, false);
        });
        eprintln!("SKIPPED: chattr +i needs root on ext4");
        return Ok(());
    }
    let mut c = g.messaging(1).await?;
    let sent = send(&mut c, message("t", "m-1", b"x", None)).await;
    let status = g.wait_exit(1, Duration::from_secs(20));
    segments.iter().for_each(|p| {
        immutable(p, false);
    });
    let status = status?.ok_or_else(|| anyhow::anyhow!("the node kept running with a failed log"))?;
    assert_eq!(status.code(), Some(2), "exit status {status:?}");
    // The write was never acknowledged.
    if let Ok((code, _)) = sent {
        assert_ne!(code, 20000, "a send must not be acknowledged when the log failed");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_open_long_polls_and_exits_cleanly() -> anyhow::Result<()> {
    let mut g = ProcGroup::start(1)?;
    g.create_topic("t", 1, admin::MessageKind::Normal).await?;
    let mut c = g.messaging(1).await?;
    let poll = tokio::spawn(async move { receive(&mut c, "t", "cg", 1, Duration::from_secs(20)).await });
    // Let the long poll start waiting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    assert!(g.terminate(1)?, "SIGTERM ends the node with exit status 0");
    let took = started.elapsed();
    eprintln!(
        "SIGTERM to exit: {:.2} s with a 20 s long poll open",
        took.as_secs_f64()
    );
    assert!(
        took < Duration::from_secs(4),
        "shutdown waited for the long poll: {took:?}"
    );
    let (code, msgs) = poll.await??;
    assert!(msgs.is_empty());
    assert_eq!(code, 40401, "the long poll ends with MESSAGE_NOT_FOUND");
    Ok(())
}

/// Leader-only work: the dead-letter sweep runs on the leader (and, after a failover, on
/// the new one) and moves a message that used up its deliveries to `%DLQ%<group>` without
/// anyone receiving again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_dead_letters_exhausted_messages_also_after_a_failover() -> anyhow::Result<()> {
    let mut g = ProcGroup::start_with(3, "max_delivery_attempts = 1")?;
    g.create_topic("t", 1, admin::MessageKind::Normal).await?;
    let leader = g.wait_leader(&[1, 2, 3]).await?;
    let mut c = g.messaging(leader).await?;
    for id in ["m-1", "m-2"] {
        let (code, _) = send(&mut c, message("t", id, b"x", None)).await?;
        anyhow::ensure!(code == 20000, "send answered {code}");
    }
    // Deliver m-1 once (its only attempt) and make it visible again at once.
    let (_, msgs) = receive(&mut c, "t", "cg", 1, Duration::from_secs(2)).await?;
    anyhow::ensure!(msgs.len() == 1, "received {}", msgs.len());
    change_invisible(&mut c, "t", "cg", &msgs[0], Duration::ZERO).await?;
    wait_dlq(&g, leader, 1).await?;

    // The new leader takes the duty over: m-2 is delivered, the leader killed, and the
    // message still reaches the dead-letter topic.
    let (_, msgs) = receive(&mut c, "t", "cg", 1, Duration::from_secs(2)).await?;
    anyhow::ensure!(msgs.len() == 1, "received {}", msgs.len());
    change_invisible(&mut c, "t", "cg", &msgs[0], Duration::ZERO).await?;
    g.kill(leader)?;
    let rest: Vec<u64> = [1, 2, 3].into_iter().filter(|i| *i != leader).collect();
    let new_leader = g.wait_leader(&rest).await?;
    wait_dlq(&g, new_leader, 2).await?;
    Ok(())
}

async fn change_invisible(
    c: &mut raftmq_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient<
        tonic::transport::Channel,
    >,
    topic: &str,
    group: &str,
    m: &raftmq_proto::rocketmq::v2::Message,
    invisible: Duration,
) -> anyhow::Result<()> {
    use raftmq_proto::rocketmq::v2 as pb;
    let res = |name: &str| pb::Resource {
        resource_namespace: String::new(),
        name: name.into(),
    };
    let handle = m
        .system_properties
        .as_ref()
        .and_then(|s| s.receipt_handle.clone())
        .unwrap_or_default();
    let resp = c
        .change_invisible_duration(pb::ChangeInvisibleDurationRequest {
            group: Some(res(group)),
            topic: Some(res(topic)),
            receipt_handle: handle,
            invisible_duration: Some(raftmq_proto::prost_types::Duration {
                seconds: invisible.as_secs() as i64,
                nanos: 0,
            }),
            message_id: msg_id(m),
            ..Default::default()
        })
        .await?
        .into_inner();
    let code = resp.status.map_or(0, |s| s.code);
    anyhow::ensure!(code == 20000, "change invisible answered {code}");
    Ok(())
}

/// Waits until the group's dead-letter topic holds `n` messages (read on `node`).
async fn wait_dlq(g: &ProcGroup, node: u64, n: u64) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let mut a = g.admin(node).await?;
        let topics = a.list_topics(admin::ListTopicsRequest {}).await?.into_inner();
        let held: u64 = topics
            .topics
            .iter()
            .filter(|t| t.spec.as_ref().is_some_and(|s| s.name == "%DLQ%cg"))
            .flat_map(|t| t.queues.iter().map(|q| q.max_offset))
            .sum();
        if held >= n {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the dead-letter topic holds {held} of {n}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
