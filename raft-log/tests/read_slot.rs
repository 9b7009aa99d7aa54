//! Reading single slots goes through a cache of recently read entries: it must never serve
//! an entry that a truncation or a purge removed.

mod common;

use bytes::Bytes;
use raft_log::Batch;
use raft_log::CommitLog;
use raft_log::LogConfig;
use raft_log::LogError;
use raft_log::LogPos;
use raft_log::slots;

fn entry(tag: &str, index: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let parts = (0..3)
        .map(|s| Bytes::from(format!("{tag} {index}/{s}")))
        .collect();
    slots::encode(&Batch(parts), &mut out);
    out
}

fn open(cache: usize) -> (tempfile::TempDir, CommitLog) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        read_cache_bytes: cache,
        ..common::config()
    };
    let (log, _) = CommitLog::open(dir.path(), cfg).expect("open");
    (dir, log)
}

#[test]
fn a_truncated_entry_is_not_served_from_the_cache() {
    for cache in [0, 1 << 20] {
        let (_dir, log) = open(cache);
        common::append_with(&log, 1, 6, 1, |i| entry("old", i));
        for i in 1..6 {
            assert_eq!(log.read_slot(i, 1).expect("read"), format!("old {i}/1"));
        }
        log.truncate_after(Some(3)).expect("truncate");
        assert!(
            matches!(log.read_slot(4, 1), Err(LogError::NotFound { .. })),
            "cache {cache}"
        );
        common::append_with(&log, 4, 6, 2, |i| entry("new", i));
        for i in 4..6 {
            assert_eq!(
                log.read_slot(i, 2).expect("read"),
                format!("new {i}/2"),
                "cache {cache}"
            );
        }
        assert_eq!(log.read_slot(3, 0).expect("read"), "old 3/0");
        assert!(matches!(
            log.read_slot(3, 3),
            Err(LogError::NoSuchSlot { count: 3, .. })
        ));
    }
}

#[test]
fn a_purged_entry_is_not_served_from_the_cache() {
    let (_dir, log) = open(1 << 20);
    common::append_with(&log, 1, 6, 1, |i| entry("e", i));
    assert_eq!(log.read_slot(2, 0).expect("read"), "e 2/0");
    log.purge(LogPos {
        index: 2,
        term: 1,
        leader: 1,
    })
    .expect("purge");
    assert!(matches!(log.read_slot(2, 0), Err(LogError::Purged { .. })));
    assert_eq!(log.read_slot(3, 0).expect("read"), "e 3/0");
}

#[test]
fn whole_entries_read_again_after_a_truncation_are_the_new_ones() {
    let (_dir, log) = open(1 << 20);
    common::append_with(&log, 1, 6, 1, |i| entry("old", i));
    // Replication and the apply read whole ranges; the second read is a cache hit.
    let first = log.read(1, 6).expect("read");
    assert_eq!(log.read(2, 6).expect("read"), first[1..]);
    log.truncate_after(Some(3)).expect("truncate");
    assert!(matches!(log.read(3, 6), Err(LogError::NotFound { .. })));
    common::append_with(&log, 4, 6, 2, |i| entry("new", i));
    let again = log.read(1, 6).expect("read");
    assert_eq!(again[..3], first[..3]);
    for e in &again[3..] {
        assert_eq!(e.meta.term, 2);
        assert_eq!(e.payload, entry("new", e.meta.index));
    }
}

#[test]
fn a_cache_only_read_answers_from_the_cache_or_not_at_all() {
    let (_dir, log) = open(1 << 20);
    common::append_with(&log, 1, 6, 1, |i| entry("e", i));
    // Appended but not read yet: not cached, so a cache-only read has no answer.
    assert_eq!(log.read_slot_cached(2, 1).expect("cached read"), None);
    assert_eq!(log.read_slot(2, 1).expect("read"), "e 2/1");
    assert_eq!(
        log.read_slot_cached(2, 2).expect("cached read").as_deref(),
        Some(&b"e 2/2"[..])
    );
    assert!(matches!(
        log.read_slot_cached(2, 3),
        Err(LogError::NoSuchSlot { count: 3, .. })
    ));
    // What a truncation removed is not answered from the cache either.
    log.truncate_after(Some(1)).expect("truncate");
    assert_eq!(log.read_slot_cached(2, 1).expect("cached read"), None);
    // Without a cache nothing is ever answered.
    let (_dir, uncached) = open(0);
    common::append_with(&uncached, 1, 3, 1, |i| entry("e", i));
    assert_eq!(uncached.read_slot(1, 0).expect("read"), "e 1/0");
    assert_eq!(uncached.read_slot_cached(1, 0).expect("cached read"), None);
}

/// A record that holds its payload as one shared buffer (as a follower's received
/// command does).
struct Shared(raft_log::RecordMeta, Bytes);

impl raft_log::LogRecord for Shared {
    fn meta(&self) -> raft_log::RecordMeta {
        self.0
    }
    fn write_payload(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.1);
    }
    fn shared_payload(&self) -> Option<Bytes> {
        Some(self.1.clone())
    }
}

#[test]
fn an_entry_appended_with_a_shared_payload_is_cached_from_the_append_on() {
    let (dir, log) = open(1 << 20);
    common::append_with(&log, 1, 3, 1, |i| entry("copied", i));
    let shared: Vec<_> = (3..6)
        .map(|i| Shared(common::meta(i, 1), Bytes::from(entry("shared", i))))
        .collect();
    let (tx, rx) = std::sync::mpsc::channel();
    log.append(shared, Box::new(move |r| drop(tx.send(r))))
        .expect("append");
    rx.recv().expect("callback").expect("durable");
    // Not read yet: only the records that shared their payload are cached.
    assert_eq!(log.read_slot_cached(2, 0).expect("cached read"), None);
    for i in 3..6 {
        assert_eq!(
            log.read_slot_cached(i, 1).expect("cached read").as_deref(),
            Some(format!("shared {i}/1").as_bytes())
        );
    }
    // A truncation removes them from the cache too.
    log.truncate_after(Some(4)).expect("truncate");
    assert_eq!(log.read_slot_cached(5, 1).expect("cached read"), None);
    assert!(log.read_slot_cached(4, 1).expect("cached read").is_some());
    // The file holds what the cache held.
    drop(log);
    let (reopened, _) = CommitLog::open(dir.path(), common::config()).expect("reopen");
    assert_eq!(reopened.read_slot(4, 2).expect("read"), "shared 4/2");
    assert!(matches!(reopened.read_slot(5, 0), Err(LogError::NotFound { .. })));
}
