//! The RocksDB state machine end to end: applying commands, reading the results back,
//! snapshots between state machines, and reopening.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use bytes::Bytes;
use openraft::Entry;
use openraft::EntryPayload;
use openraft::LogId;
use openraft::Membership;
use openraft::RaftSnapshotBuilder;
use openraft::impls::leader_id_adv::LeaderId;
use openraft::storage::RaftStateMachine;
use raftmq_broker::command::Command;
use raftmq_broker::command::CommandResult;
use raftmq_broker::command::Header;
use raftmq_broker::command::MessageKind;
use raftmq_broker::command::MessageMeta;
use raftmq_broker::command::Permission;
use raftmq_broker::command::Rejection;
use raftmq_broker::command::TopicConfig;
use raftmq_broker::raft::types::BrokerNode;
use raftmq_broker::sm::CqEntry;
use raftmq_broker::sm::Entry as SmEntry;
use raftmq_broker::sm::SmConfig;
use raftmq_broker::sm::StateMachine;

fn log_id(index: u64) -> LogId<LeaderId<u64, u64>> {
    LogId::new(LeaderId { term: 1, node_id: 1 }, index)
}

fn normal(index: u64, cmd: Command) -> SmEntry {
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(cmd),
    }
}

fn membership(index: u64) -> SmEntry {
    let nodes = [1, 2, 3].map(|id| {
        (
            id,
            BrokerNode {
                raft_addr: format!("n{id}:1"),
                client_addr: format!("n{id}:2"),
            },
        )
    });
    let m = Membership::new(vec![BTreeSet::from([1, 2, 3])], BTreeMap::from(nodes)).expect("membership");
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Membership(m),
    }
}

fn create(name: &str, queues: u32) -> Command {
    let config = TopicConfig {
        name: name.into(),
        queues,
        permission: Permission::ReadWrite,
        kind: MessageKind::Normal,
    };
    Command::control(Header::CreateTopic(config)).expect("command")
}

/// A send of one message per (topic, queue) target; message ids are `m<index>-<i>`.
fn send(index: u64, targets: &[(&str, u32)]) -> SmEntry {
    let messages: Vec<MessageMeta> = targets
        .iter()
        .enumerate()
        .map(|(i, (topic, queue_id))| MessageMeta {
            topic: (*topic).into(),
            queue_id: *queue_id,
            tag_hash: index * 100 + i as u64,
            msg_id: format!("m{index}-{i}"),
        })
        .collect();
    let records = (0..targets.len())
        .map(|i| Bytes::from(vec![b'r'; 100 + i]))
        .collect();
    let header = Header::Send {
        store_time_ms: 1_700_000_000_000 + index,
        messages,
    };
    normal(index, Command::new(header, records).expect("command"))
}

fn commit(index: u64, group: &str, queue_id: u32, offset: u64) -> SmEntry {
    let h = Header::CommitOffset {
        group: group.into(),
        topic: "orders".into(),
        queue_id,
        offset,
    };
    normal(index, Command::control(h).expect("command"))
}

fn config() -> SmConfig {
    SmConfig {
        block_cache_bytes: 4 << 20,
        ..SmConfig::default()
    }
}

/// Entries 1..=10: membership, a topic, three sends, two refused sends, offset commits.
fn history() -> Vec<SmEntry> {
    vec![
        membership(1),
        normal(2, create("orders", 4)),
        send(3, &[("orders", 0), ("orders", 1), ("orders", 0)]),
        send(4, &[("orders", 2), ("orders", 0)]),
        send(5, &[("orders", 1), ("orders", 1), ("orders", 3)]),
        send(6, &[("orders", 0), ("nowhere", 0)]),
        send(7, &[("orders", 4)]),
        Entry {
            log_id: log_id(8),
            payload: EntryPayload::Blank,
        },
        commit(9, "cg", 0, 2),
        commit(10, "cg", 1, 1),
    ]
}

fn sent(r: &CommandResult) -> Vec<(u32, u64)> {
    match r {
        CommandResult::Sent(p) => p.iter().map(|p| (p.queue_id, p.offset)).collect(),
        other => panic!("expected Sent, got {other:?}"),
    }
}

/// Everything readable about topic `orders`, for comparing state machines.
fn dump(sm: &StateMachine) -> anyhow::Result<String> {
    let mut out = format!("applied {:?}\ntopics {:?}\n", sm.applied()?, sm.topics()?);
    for q in 0..4 {
        let cq = sm.read_cq("orders", q, 0, 1000)?;
        out += &format!(
            "q{q} next {} cq {cq:?} cg {:?}\n",
            sm.next_offset("orders", q)?,
            sm.committed_offset("cg", "orders", q)?
        );
    }
    Ok(out)
}

#[tokio::test]
async fn sends_get_queue_offsets_and_index_entries() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let sm = StateMachine::open(dir.path(), config())?;
    let r = sm.apply_entries(history()).await?;
    assert_eq!(r[1], CommandResult::Done);
    assert_eq!(sent(&r[2]), vec![(0, 0), (1, 0), (0, 1)]);
    assert_eq!(sent(&r[3]), vec![(2, 0), (0, 2)]);
    assert_eq!(sent(&r[4]), vec![(1, 1), (1, 2), (3, 0)]);
    assert_eq!(
        r[5],
        CommandResult::Rejected(Rejection::UnknownTopic("nowhere".into()))
    );
    assert_eq!(
        r[6],
        CommandResult::Rejected(Rejection::NoSuchQueue {
            topic: "orders".into(),
            queue_id: 4
        })
    );
    assert_eq!(
        (r[7].clone(), r[8].clone()),
        (CommandResult::Done, CommandResult::Done)
    );

    let next: Vec<u64> = (0..4)
        .map(|q| sm.next_offset("orders", q))
        .collect::<Result<_, _>>()?;
    assert_eq!(next, vec![3, 3, 1, 1], "the refused send at 6 took no offset");
    let at = |e: &CqEntry| {
        (
            e.log_index,
            e.slot,
            e.size,
            e.tag_hash,
            e.store_time_ms - 1_700_000_000_000,
        )
    };
    let q0: Vec<_> = sm.read_cq("orders", 0, 0, 10)?.iter().map(at).collect();
    assert_eq!(
        q0,
        vec![(3, 1, 100, 300, 3), (3, 3, 102, 302, 3), (4, 2, 101, 401, 4)]
    );
    let q1: Vec<_> = sm
        .read_cq("orders", 1, 1, 1)?
        .iter()
        .map(|e| (e.log_index, e.slot))
        .collect();
    assert_eq!(
        q1,
        vec![(5, 1)],
        "reads start at the asked offset and stop at max"
    );
    assert!(sm.read_cq("orders", 1, 3, 10)?.is_empty());
    assert!(sm.read_cq("nowhere", 0, 0, 10)?.is_empty());

    assert_eq!(sm.committed_offset("cg", "orders", 0)?, Some(2));
    assert_eq!(sm.committed_offset("cg", "orders", 2)?, None);
    let (applied, m) = sm.applied()?;
    assert_eq!(
        (applied, m.log_id().map(|l| l.index)),
        (Some(log_id(10)), Some(1))
    );
    Ok(())
}

#[tokio::test]
async fn results_do_not_depend_on_how_entries_are_batched() -> anyhow::Result<()> {
    let (a_dir, b_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let a = StateMachine::open(a_dir.path(), config())?;
    let b = StateMachine::open(b_dir.path(), config())?;
    let all_at_once = a.apply_entries(history()).await?;
    let mut one_by_one = Vec::new();
    for e in history() {
        one_by_one.extend(b.apply_entries(vec![e]).await?);
    }
    assert_eq!(all_at_once, one_by_one);
    assert_eq!(dump(&a)?, dump(&b)?);
    Ok(())
}

#[tokio::test]
async fn deleting_a_topic_drops_its_queues_and_a_new_one_starts_fresh() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let sm = StateMachine::open(dir.path(), config())?;
    sm.apply_entries(history()).await?;
    let delete = Command::control(Header::DeleteTopic {
        name: "orders".into(),
    })?;
    let r = sm
        .apply_entries(vec![
            normal(11, delete),
            normal(12, create("orders", 2)),
            send(13, &[("orders", 0)]),
        ])
        .await?;
    assert_eq!(sent(&r[2]), vec![(0, 0)]);
    assert_eq!(sm.read_cq("orders", 0, 0, 10)?.len(), 1);
    assert!(sm.read_cq("orders", 1, 0, 10)?.is_empty());
    assert_eq!(
        sm.committed_offset("cg", "orders", 0)?,
        None,
        "offsets of the old incarnation are gone"
    );
    Ok(())
}

/// Machine `a` with the common history, machine `b` with a different, shorter one.
async fn two_machines() -> anyhow::Result<(tempfile::TempDir, tempfile::TempDir, StateMachine, StateMachine)>
{
    let (a_dir, b_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let a = StateMachine::open(a_dir.path(), config())?;
    let b = StateMachine::open(b_dir.path(), config())?;
    a.apply_entries(history()).await?;
    b.apply_entries(vec![membership(1), normal(2, create("other", 1))])
        .await?;
    Ok((a_dir, b_dir, a, b))
}

#[tokio::test]
async fn a_snapshot_installed_elsewhere_reads_the_same() -> anyhow::Result<()> {
    let (_a_dir, b_dir, mut a, mut b) = two_machines().await?;
    let snap = a.get_snapshot_builder().await.build_snapshot().await?;
    assert_eq!(snap.meta.last_log_id, Some(log_id(10)));
    // Entries after the snapshot must not leak into it.
    a.apply_entries(vec![send(11, &[("orders", 3)])]).await?;

    b.install_snapshot(&snap.meta, snap.snapshot).await?;
    assert_eq!(b.topic("other")?, None, "the install replaced the state");
    let current = b.get_current_snapshot().await?.expect("current snapshot");
    assert_eq!(current.meta, snap.meta);
    b.apply_entries(vec![send(11, &[("orders", 3)])]).await?;
    assert_eq!(dump(&a)?, dump(&b)?);
    assert_eq!(b.next_offset("orders", 3)?, 2);
    let leftovers: Vec<_> = std::fs::read_dir(b_dir.path().join("tmp"))?.collect();
    assert!(
        leftovers.is_empty(),
        "temporary files are cleaned up: {leftovers:?}"
    );
    Ok(())
}

#[tokio::test]
async fn reopening_keeps_applied_state_data_and_the_current_snapshot() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (before, snap_meta) = {
        let mut sm = StateMachine::open(dir.path(), config())?;
        sm.apply_entries(history()).await?;
        let snap = sm.get_snapshot_builder().await.build_snapshot().await?;
        sm.apply_entries(vec![send(11, &[("orders", 2)])]).await?;
        (dump(&sm)?, snap.meta)
    };
    let mut sm = StateMachine::open(dir.path(), config())?;
    assert_eq!(dump(&sm)?, before);
    assert_eq!(sm.applied()?.0, Some(log_id(11)));
    let current = sm
        .get_current_snapshot()
        .await?
        .expect("snapshot survives reopen");
    assert_eq!(current.meta, snap_meta);
    // Restoring from our own current snapshot (what openraft does for a state machine that is
    // behind its snapshot) works and rewinds to it.
    sm.install_snapshot(&current.meta, current.snapshot).await?;
    assert_eq!(sm.applied()?.0, Some(log_id(10)));
    assert_eq!(sm.next_offset("orders", 2)?, 1);
    drop(sm);
    let sm = StateMachine::open(dir.path(), config())?;
    assert_eq!(
        sm.applied()?.0,
        Some(log_id(10)),
        "the installed database is the live one after reopen"
    );
    Ok(())
}

#[tokio::test]
async fn a_damaged_snapshot_is_refused_and_the_state_kept() -> anyhow::Result<()> {
    let (a_dir, _b_dir, mut a, mut b) = two_machines().await?;
    let snap = a.get_snapshot_builder().await.build_snapshot().await?;
    let mut bytes = std::fs::read(a_dir.path().join("snapshot"))?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    let damaged = a_dir.path().join("damaged");
    std::fs::write(&damaged, &bytes)?;
    let err = b
        .install_snapshot(&snap.meta, std::fs::File::open(&damaged)?)
        .await
        .expect_err("damaged");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
    assert!(b.topic("other")?.is_some(), "the old state stays");
    assert!(b.get_current_snapshot().await?.is_none());
    Ok(())
}
