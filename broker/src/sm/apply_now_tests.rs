//! Applying a small batch on the calling task: same outcome as the blocking pool, and
//! never a wait (a held writer or database lock, or a RocksDB write stall, sends the batch
//! back untouched).

use std::time::Duration;

use super::StateMachine;
use super::apply_now;
use super::inner::STALL_BACKOFF_MS;
use super::store::CF_CQ;
use super::watch_tests::blank;
use super::watch_tests::control;
use super::watch_tests::open;
use super::watch_tests::send;
use super::watch_tests::send_messages;
use super::watch_tests::send_to;
use super::watch_tests::topic;
use crate::command::Header;

/// The group's state after a topic `a` with 2 queues was created (entry 1).
async fn with_topic(dir: &tempfile::TempDir) -> StateMachine {
    let sm = open(dir);
    sm.apply_entries(vec![control(1, Header::CreateTopic(topic("a", 2)))])
        .await
        .expect("create topic");
    sm
}

#[tokio::test]
async fn a_small_batch_applied_now_ends_as_on_the_pool() {
    let (now_dir, pool_dir) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let (now, pool) = (with_topic(&now_dir).await, with_topic(&pool_dir).await);
    let batch = || vec![send(2, "a"), send_to(3, "a", 1), blank(4), send(5, "a")];
    assert!(apply_now(&batch()));

    let got = now
        .inner
        .try_apply_entries_now(&batch())
        .expect("nothing to wait for")
        .expect("apply");
    let inner = pool.inner.clone();
    let want = tokio::task::spawn_blocking(move || inner.apply_entries(&batch()))
        .await
        .expect("task")
        .expect("apply");
    assert_eq!(format!("{got:?}"), format!("{want:?}"));
    for sm in [&now, &pool] {
        assert_eq!(sm.next_offset("a", 0).expect("offset"), 2);
        assert_eq!(sm.next_offset("a", 1).expect("offset"), 1);
        assert_eq!(sm.applied().expect("applied").0.map(|l| l.index), Some(5));
    }
}

#[tokio::test]
async fn a_held_writer_lock_sends_the_batch_to_the_pool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sm = with_topic(&dir).await;
    {
        let _snapshot_running = sm.inner.writer();
        assert!(sm.inner.try_apply_entries_now(&[send(2, "a")]).is_none());
    }
    assert_eq!(sm.next_offset("a", 0).expect("offset"), 0, "nothing applied");
    assert_eq!(sm.applied().expect("applied").0.map(|l| l.index), Some(1));
    sm.apply_entries(vec![send(2, "a")]).await.expect("apply");
    assert_eq!(sm.next_offset("a", 0).expect("offset"), 1);
}

/// Sets RocksDB options of the consume-queue column family.
fn set_cq_options(sm: &StateMachine, opts: &[(&str, &str)]) {
    sm.inner
        .with_store(|s| {
            let db = s.db();
            let cf = s.cf(CF_CQ)?;
            db.set_options_cf(cf, opts)?;
            Ok(())
        })
        .expect("set options");
}

/// Flushes the consume-queue column family's memtable into a level-0 file.
fn flush_cq(sm: &StateMachine) {
    sm.inner
        .with_store(|s| Ok(s.db().flush_cf(s.cf(CF_CQ)?)?))
        .expect("flush");
}

#[tokio::test]
async fn a_write_stall_sends_the_batch_to_the_pool_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sm = with_topic(&dir).await;
    // Writes stop once the consume queues have two level-0 files, and no compaction
    // starts before eight.
    set_cq_options(
        &sm,
        &[
            ("level0_file_num_compaction_trigger", "8"),
            ("level0_slowdown_writes_trigger", "2"),
            ("level0_stop_writes_trigger", "2"),
        ],
    );
    for index in [2, 3] {
        let done = sm.inner.try_apply_entries_now(&[send(index, "a")]);
        assert!(matches!(done, Some(Ok(_))), "entry {index}: {done:?}");
        flush_cq(&sm);
    }

    assert!(sm.inner.try_apply_entries_now(&[send(4, "a")]).is_none());
    assert_eq!(sm.next_offset("a", 0).expect("offset"), 2, "nothing applied");
    assert_eq!(sm.applied().expect("applied").0.map(|l| l.index), Some(3));

    // Once the stall is over, and the back-off after a refusal, the same entry applies,
    // once.
    set_cq_options(
        &sm,
        &[
            ("level0_stop_writes_trigger", "36"),
            ("level0_slowdown_writes_trigger", "20"),
        ],
    );
    assert!(
        sm.inner.try_apply_entries_now(&[send(4, "a")]).is_none(),
        "within the back-off"
    );
    tokio::time::sleep(Duration::from_millis(STALL_BACKOFF_MS + 10)).await;
    let done = sm.inner.try_apply_entries_now(&[send(4, "a")]);
    assert!(matches!(done, Some(Ok(_))), "{done:?}");
    assert_eq!(sm.next_offset("a", 0).expect("offset"), 3);
}

#[tokio::test]
async fn a_database_being_replaced_sends_the_batch_to_the_pool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sm = with_topic(&dir).await;
    {
        let _installing = sm.inner.live_mut();
        assert!(sm.inner.try_apply_entries_now(&[send(2, "a")]).is_none());
    }
    assert_eq!(sm.next_offset("a", 0).expect("offset"), 0, "nothing applied");
}

#[tokio::test]
async fn apply_entries_takes_the_calling_task_for_sends_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sm = with_topic(&dir).await;
    let before = sm.batches_applied_now();
    sm.apply_entries(vec![send(2, "a"), blank(3)])
        .await
        .expect("apply");
    assert_eq!(sm.batches_applied_now(), before + 1);
    let commit = Header::CommitOffset {
        group: "g".into(),
        topic: "a".into(),
        queue_id: 0,
        offset: 1,
    };
    sm.apply_entries(vec![control(4, commit)]).await.expect("apply");
    assert_eq!(
        sm.batches_applied_now(),
        before + 1,
        "an offset commit goes to the pool"
    );
    assert_eq!(sm.next_offset("a", 0).expect("offset"), 1);
}

#[test]
fn only_small_batches_of_sends_are_applied_now() {
    let few: Vec<_> = (0..super::APPLY_NOW_MAX_ENTRIES as u64)
        .map(|i| send(i + 1, "a"))
        .collect();
    assert!(apply_now(&few));
    let many: Vec<_> = (0..=super::APPLY_NOW_MAX_ENTRIES as u64)
        .map(|i| send(i + 1, "a"))
        .collect();
    assert!(!apply_now(&many));

    let limit = super::APPLY_NOW_MAX_MESSAGES;
    assert!(apply_now(&[send_messages(1, "a", 0, limit)]));
    let big = [
        send_messages(1, "a", 0, limit / 2),
        send_messages(2, "a", 1, limit / 2 + 1),
    ];
    assert!(!apply_now(&big), "over the message limit");

    let create = control(2, Header::CreateTopic(topic("b", 1)));
    assert!(!apply_now(&[send(1, "a"), create]), "a topic change");
    assert!(apply_now(&[blank(1)]));
}
