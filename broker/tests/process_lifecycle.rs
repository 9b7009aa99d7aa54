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
