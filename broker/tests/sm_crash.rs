//! Crash test of the state machine's WAL-less writes: a child process applies a
//! deterministic history with tiny memtables (so RocksDB flushes in the background while it
//! applies), reports one explicit flush point, and aborts at a fixed point, losing its
//! memtables. The parent reopens the directory and checks that the state on disk is exactly
//! the state at the applied log id it reports (never a mix of two points), that it is not
//! older than the flush point, and that re-applying the rest (what openraft does) ends in
//! the same state as an uninterrupted run.
//!
//! The child is this test binary itself, re-run with `RAFTMQ_SM_CRASH_CHILD` set.

use std::path::Path;
use std::process::Stdio;

use bytes::Bytes;
use openraft::Entry;
use openraft::EntryPayload;
use openraft::LogId;
use openraft::impls::leader_id_adv::LeaderId;
use raftmq_broker::command::Command;
use raftmq_broker::command::Header;
use raftmq_broker::command::MessageKind;
use raftmq_broker::command::MessageMeta;
use raftmq_broker::command::Permission;
use raftmq_broker::command::TopicConfig;
use raftmq_broker::sm::Entry as SmEntry;
use raftmq_broker::sm::SmConfig;
use raftmq_broker::sm::StateMachine;

const LAST: u64 = 3000;
const FLUSH_AT: u64 = 1200;
const QUEUES: u32 = 8;

fn config() -> SmConfig {
    SmConfig {
        block_cache_bytes: 1 << 20,
        write_buffer_bytes: 64 << 10,
        total_write_buffer_bytes: 256 << 10,
        ..SmConfig::default()
    }
}

/// The queues entry `index` sends to (entry 1 creates the topic).
fn targets(index: u64) -> Vec<u32> {
    (0..1 + index % 5)
        .map(|j| ((index * 7 + j) % u64::from(QUEUES)) as u32)
        .collect()
}

fn entry(index: u64) -> SmEntry {
    let log_id = LogId::new(LeaderId { term: 1, node_id: 1 }, index);
    let cmd = if index == 1 {
        let config = TopicConfig {
            name: "t".into(),
            queues: QUEUES,
            permission: Permission::ReadWrite,
            kind: MessageKind::Normal,
        };
        Command::control(Header::CreateTopic(config))
    } else {
        let messages: Vec<MessageMeta> = targets(index)
            .into_iter()
            .enumerate()
            .map(|(i, queue_id)| MessageMeta {
                topic: "t".into(),
                queue_id,
                tag_hash: index,
                msg_id: format!("m{index}-{i}"),
            })
            .collect();
        let records = messages.iter().map(|_| Bytes::from_static(b"body")).collect();
        Command::new(
            Header::Send {
                store_time_ms: index,
                messages,
            },
            records,
        )
    };
    Entry {
        log_id,
        payload: EntryPayload::Normal(cmd.expect("command")),
    }
}

/// Applies entries `from..=to` in batches of varying size (1 to 16 entries).
async fn apply_range(sm: &StateMachine, from: u64, to: u64) -> anyhow::Result<()> {
    let mut next = from;
    while next <= to {
        let end = (next + next % 16).min(to);
        sm.apply_entries((next..=end).map(entry).collect()).await?;
        next = end + 1;
    }
    Ok(())
}

/// Child mode: apply up to `FLUSH_AT`, flush, apply the rest, abort (losing the memtables).
#[test]
#[ignore = "child process of the crash test; the parent runs it with --ignored"]
fn crash_child() -> anyhow::Result<()> {
    let Ok(dir) = std::env::var("RAFTMQ_SM_CRASH_CHILD") else {
        return Ok(());
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // The state machine stays open: dropping it would flush (RocksDB flushes on close).
    let _sm = rt.block_on(async {
        let sm = StateMachine::open(&dir, config())?;
        apply_range(&sm, 1, FLUSH_AT).await?;
        sm.flush()?;
        apply_range(&sm, FLUSH_AT + 1, LAST).await?;
        anyhow::Ok(sm)
    })?;
    std::process::abort()
}

/// How many messages each queue holds at applied index `at`.
fn expected(at: u64) -> Vec<u64> {
    let mut counts = vec![0u64; QUEUES as usize];
    for index in 2..=at {
        for q in targets(index) {
            counts[q as usize] += 1;
        }
    }
    counts
}

fn check_consistent(sm: &StateMachine) -> anyhow::Result<u64> {
    let applied = sm.applied()?.0.map_or(0, |l| l.index);
    let counts = expected(applied);
    for q in 0..QUEUES {
        let want = counts[q as usize];
        assert_eq!(sm.next_offset("t", q)?, want, "queue {q} at applied {applied}");
        let cq = sm.read_cq("t", q, 0, usize::MAX)?;
        assert_eq!(cq.len() as u64, want, "cq {q} at applied {applied}");
        assert!(cq.iter().all(|e| e.log_index <= applied));
    }
    Ok(applied)
}

fn run_child(dir: &Path) -> anyhow::Result<()> {
    let status = std::process::Command::new(std::env::current_exe()?)
        .args([
            "crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("RAFTMQ_SM_CRASH_CHILD", dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    assert!(!status.success(), "the child must die by abort, got {status}");
    Ok(())
}

#[test]
fn state_on_disk_after_a_crash_is_the_state_at_its_applied_id() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let crashed = dir.path().join("crashed");
    run_child(&crashed)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let sm = StateMachine::open(&crashed, config())?;
        let applied = check_consistent(&sm)?;
        assert!(
            (FLUSH_AT..=LAST).contains(&applied),
            "applied {applied}, flushed at {FLUSH_AT}"
        );
        // Re-apply what was lost, as openraft would from the log.
        apply_range(&sm, applied + 1, LAST).await?;
        assert_eq!(check_consistent(&sm)?, LAST);
        let reference = StateMachine::open(dir.path().join("reference"), config())?;
        apply_range(&reference, 1, LAST).await?;
        for q in 0..QUEUES {
            assert_eq!(
                sm.read_cq("t", q, 0, usize::MAX)?,
                reference.read_cq("t", q, 0, usize::MAX)?
            );
        }
        anyhow::Ok(())
    })
}
