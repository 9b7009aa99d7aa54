//! A failed fsync poisons the log: the waiting appends learn it, every later call fails
//! with a clear error, and nothing is retried silently. A fresh open recovers.

use std::sync::Arc;
use std::sync::mpsc;

use openraft::entry::RaftEntry;
use openraft::storage::IOFlushed;
use openraft::storage::RaftLogStorage;
use openraft::type_config::TypeConfigExt;
use raft_log::Batch;
use raft_log::CommitLog;
use raft_log::EntryKind;
use raft_log::LogConfig;
use raft_log::LogError;
use raft_log::LogPos;
use raft_log::RecordMeta;
use raft_log::fault::FaultInjector;
use raft_log::storage::RaftLogStore;

openraft::declare_raft_types!(
    pub TestConfig:
        D = Batch,
        R = (),
        Node = openraft::BasicNode,
);

fn entries(from: u64, to: u64) -> Vec<(RecordMeta, Vec<u8>)> {
    (from..to)
        .map(|index| {
            (
                RecordMeta {
                    index,
                    term: 1,
                    leader: 1,
                    kind: EntryKind::Normal,
                },
                vec![7; 64],
            )
        })
        .collect()
}

fn append_wait(log: &CommitLog, from: u64, to: u64) -> Result<(), LogError> {
    let (tx, rx) = mpsc::channel();
    log.append(entries(from, to), Box::new(move |r| drop(tx.send(r))))?;
    rx.recv().map_err(|e| LogError::Poisoned(e.to_string()))?
}

fn assert_poisoned<T: std::fmt::Debug>(r: Result<T, LogError>, what: &str) {
    match r {
        Err(LogError::Poisoned(why)) => assert!(why.contains("injected fsync failure"), "{what}: {why}"),
        other => panic!("{what}: expected Poisoned, got {other:?}"),
    }
}

#[test]
fn failed_fsync_poisons_every_later_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let faults = Arc::new(FaultInjector::default());
    let cfg = LogConfig {
        segment_size: 1 << 20,
        faults: Some(faults.clone()),
        ..LogConfig::default()
    };
    let (log, _) = CommitLog::open(dir.path(), cfg).expect("open");
    append_wait(&log, 1, 11).expect("healthy append");

    faults.fail_next_syncs(1);
    assert_poisoned(append_wait(&log, 11, 21), "append whose fsync failed");

    // The fault is gone, but the log must not pretend nothing happened.
    assert_poisoned(append_wait(&log, 21, 31), "later append");
    assert_poisoned(log.read(1, 11), "read");
    assert_poisoned(log.read_slot(1, 0), "read_slot");
    assert_poisoned(log.truncate_after(Some(5)), "truncate");
    assert_poisoned(
        log.purge(LogPos {
            index: 3,
            term: 1,
            leader: 1,
        }),
        "purge",
    );
    assert_poisoned(log.save_vote(b"vote"), "save_vote");
    assert_poisoned(log.read_vote(), "read_vote");
    drop(log);

    // A new open re-verifies the files; entries acknowledged before the failure survive.
    let (log, _) = CommitLog::open(dir.path(), LogConfig::default()).expect("reopen");
    let b = log.bounds();
    assert!(b.next >= Some(11), "{b:?}");
    assert_eq!(log.read(1, 11).expect("acknowledged entries").len(), 10);
}

#[test]
fn openraft_sees_the_failure_through_its_callback() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let faults = Arc::new(FaultInjector::default());
        let cfg = LogConfig {
            segment_size: 1 << 20,
            faults: Some(faults.clone()),
            ..LogConfig::default()
        };
        let (log, _) = CommitLog::open(dir.path(), cfg).expect("open");
        let mut store = RaftLogStore::<TestConfig>::new(log);
        let entry = |i| {
            openraft::Entry::<_, _>::new_blank(openraft::LogId::new(
                openraft::impls::leader_id_adv::LeaderId {
                    term: 1u64,
                    node_id: 1u64,
                },
                i,
            ))
        };
        faults.fail_next_syncs(1);
        let (tx, rx) = TestConfig::oneshot();
        store
            .append([entry(1)], IOFlushed::signal(tx))
            .await
            .expect("append is accepted");
        let flushed = rx.await.expect("callback completed");
        let err = flushed.expect_err("flush must report the failure");
        assert!(err.to_string().contains("poisoned"), "{err}");
        let (tx, _rx) = TestConfig::oneshot();
        let again = store.append([entry(2)], IOFlushed::signal(tx)).await;
        assert!(again.is_err(), "append after poison must fail at once");
    });
}
