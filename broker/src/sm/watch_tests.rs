//! The state machine's change watches: which applied batches bump the topic watch and
//! which bump a queue's watch.

use bytes::Bytes;
use openraft::EntryPayload;
use openraft::LogId;
use openraft::RaftSnapshotBuilder;
use openraft::impls::leader_id_adv::LeaderId;
use openraft::storage::RaftStateMachine;
use tokio::sync::watch;

use super::Entry;
use super::SmConfig;
use super::StateMachine;
use crate::command::Command;
use crate::command::Header;
use crate::command::MessageKind;
use crate::command::MessageMeta;
use crate::command::Permission;
use crate::command::TopicConfig;

fn normal(index: u64, cmd: Command) -> Entry {
    Entry {
        log_id: LogId::new(LeaderId { term: 1, node_id: 1 }, index),
        payload: EntryPayload::Normal(cmd),
    }
}

pub(super) fn blank(index: u64) -> Entry {
    Entry {
        log_id: LogId::new(LeaderId { term: 1, node_id: 1 }, index),
        payload: EntryPayload::Blank,
    }
}

pub(super) fn control(index: u64, header: Header) -> Entry {
    normal(index, Command::control(header).expect("command"))
}

pub(super) fn topic(name: &str, queues: u32) -> TopicConfig {
    TopicConfig {
        name: name.into(),
        queues,
        permission: Permission::ReadWrite,
        kind: MessageKind::Normal,
    }
}

pub(super) fn send(index: u64, topic: &str) -> Entry {
    send_to(index, topic, 0)
}

pub(super) fn send_to(index: u64, topic: &str, queue_id: u32) -> Entry {
    send_messages(index, topic, queue_id, 1)
}

/// A send of `n` messages to `topic`'s queue `queue_id`.
pub(super) fn send_messages(index: u64, topic: &str, queue_id: u32, n: usize) -> Entry {
    let meta = |i: usize| MessageMeta {
        topic: topic.into(),
        queue_id,
        tag_hash: 0,
        msg_id: if i == 0 {
            format!("m{index}")
        } else {
            format!("m{index}.{i}")
        },
    };
    let header = Header::Send {
        store_time_ms: 1_700_000_000_000,
        messages: (0..n).map(meta).collect(),
    };
    let cmd = Command::new(header, vec![Bytes::from_static(b"body"); n]).expect("command");
    normal(index, cmd)
}

/// Whether the watch moved since last asked (and marks it seen).
fn moved(rx: &mut watch::Receiver<u64>) -> bool {
    let moved = rx.has_changed().expect("sender alive");
    rx.borrow_and_update();
    moved
}

pub(super) fn open(dir: &tempfile::TempDir) -> StateMachine {
    let cfg = SmConfig {
        block_cache_bytes: 4 << 20,
        ..SmConfig::default()
    };
    StateMachine::open(dir.path(), cfg).expect("open")
}

#[tokio::test]
async fn topic_watch_moves_on_topic_changes_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sm = open(&dir);
    let mut topics = sm.subscribe_topic_changes();
    let mut changes = sm.subscribe_changes();

    sm.apply_entries(vec![blank(1)]).await.expect("apply");
    assert!(!moved(&mut topics), "a blank entry changes no topic");

    let batch = vec![control(2, Header::CreateTopic(topic("a", 2))), send(3, "a")];
    sm.apply_entries(batch).await.expect("apply");
    assert!(moved(&mut topics), "a created topic");
    assert!(moved(&mut changes));

    sm.apply_entries(vec![send(4, "a")]).await.expect("apply");
    assert!(!moved(&mut topics), "a send changes no topic");
    assert!(moved(&mut changes), "a send is consumable");

    let refused = control(5, Header::CreateTopic(topic("a", 8)));
    sm.apply_entries(vec![refused]).await.expect("apply");
    assert!(!moved(&mut topics), "a refused create writes nothing");

    sm.apply_entries(vec![control(6, Header::UpdateTopic(topic("a", 4)))])
        .await
        .expect("apply");
    assert!(moved(&mut topics), "an updated topic");

    let delete = Header::DeleteTopic { name: "a".into() };
    sm.apply_entries(vec![control(7, delete)]).await.expect("apply");
    assert!(moved(&mut topics), "a deleted topic");
}

#[tokio::test]
async fn topic_watch_moves_on_snapshot_install() {
    let (a_dir, b_dir) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let (mut a, mut b) = (open(&a_dir), open(&b_dir));
    a.apply_entries(vec![control(1, Header::CreateTopic(topic("a", 2)))])
        .await
        .expect("apply");
    let snap = a
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("snapshot");
    let mut topics = b.subscribe_topic_changes();
    b.install_snapshot(&snap.meta, snap.snapshot)
        .await
        .expect("install");
    assert!(moved(&mut topics), "an installed snapshot replaces the topics");
    assert_eq!(b.topics().expect("topics").len(), 1);
}

#[tokio::test]
async fn a_send_wakes_only_its_own_queue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sm = open(&dir);
    sm.apply_entries(vec![control(1, Header::CreateTopic(topic("a", 2)))])
        .await
        .expect("apply");
    sm.apply_entries(vec![control(2, Header::CreateTopic(topic("b", 1)))])
        .await
        .expect("apply");
    let (mut a0, mut a1, mut b0) = (
        sm.subscribe_queue("a", 0),
        sm.subscribe_queue("a", 1),
        sm.subscribe_queue("b", 0),
    );

    sm.apply_entries(vec![send_to(3, "a", 1)]).await.expect("apply");
    assert!(!moved(&mut a0), "another queue of the topic");
    assert!(moved(&mut a1), "the queue sent to");
    assert!(!moved(&mut b0), "another topic");

    sm.apply_entries(vec![send_to(4, "a", 0), send_to(5, "b", 0)])
        .await
        .expect("apply");
    assert!(moved(&mut a0) && moved(&mut b0), "every queue of a batch");
    assert!(!moved(&mut a1));

    // A deleted topic wakes every waiter: they read again and report it gone.
    let delete = Header::DeleteTopic { name: "b".into() };
    sm.apply_entries(vec![control(6, delete)]).await.expect("apply");
    assert!(moved(&mut a0) && moved(&mut a1) && moved(&mut b0));
}
