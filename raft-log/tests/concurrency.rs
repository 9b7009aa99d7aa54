//! Several readers (as replication tasks and consumers are) read random ranges and single
//! slots while writers append with group commit and the head is purged; every read
//! returns exactly what was written.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;
use std::time::Instant;

use bytes::Bytes;
use raft_log::Batch;
use raft_log::CommitLog;
use raft_log::EntryKind;
use raft_log::LogConfig;
use raft_log::LogError;
use raft_log::LogPos;
use raft_log::RecordMeta;
use raft_log::slots;
use rand::Rng;

fn slot(index: u64, i: usize) -> Bytes {
    Bytes::from(format!(
        "entry {index} slot {i} {}",
        "x".repeat((index % 500) as usize)
    ))
}

fn encoded(index: u64) -> Vec<u8> {
    let mut out = Vec::new();
    slots::encode(&Batch((0..3).map(|i| slot(index, i)).collect()), &mut out);
    out
}

fn write(log: &CommitLog, next: &Mutex<u64>, appended: &AtomicU64) {
    let (tx, rx) = mpsc::channel();
    {
        let mut n = next.lock().expect("next");
        let batch: Vec<_> = (*n..*n + 4)
            .map(|index| {
                (
                    RecordMeta {
                        index,
                        term: 1,
                        leader: 1,
                        kind: EntryKind::Normal,
                    },
                    encoded(index),
                )
            })
            .collect();
        log.append(batch, Box::new(move |r| drop(tx.send(r))))
            .expect("append");
        *n += 4;
        appended.fetch_max(*n - 1, Ordering::SeqCst);
    }
    rx.recv().expect("callback").expect("durable");
}

fn read(log: &CommitLog, rng: &mut impl Rng) -> u64 {
    let b = log.bounds();
    let Some(next) = b.next else { return 0 };
    if next <= b.first {
        return 0;
    }
    let from = rng.random_range(b.first..next);
    let to = (from + rng.random_range(1..50)).min(next);
    match log.read(from, to) {
        Ok(entries) => {
            for (e, i) in entries.iter().zip(from..) {
                assert_eq!(e.meta.index, i);
                assert_eq!(&e.payload[..], &encoded(i)[..], "entry {i}");
            }
            let s = rng.random_range(0..3);
            match log.read_slot(from, s as u32) {
                Ok(b) => assert_eq!(b, slot(from, s)),
                Err(LogError::Purged { .. }) => {}
                Err(e) => panic!("read_slot({from}, {s}): {e}"),
            }
            entries.len() as u64
        }
        // The purger may have moved the head between bounds() and read().
        Err(LogError::Purged { .. }) => 0,
        Err(e) => panic!("read {from}..{to}: {e}"),
    }
}

#[test]
fn readers_see_exact_data_while_writers_append_and_head_is_purged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        segment_size: 128 * 1024,
        ..LogConfig::default()
    };
    let (log, _) = CommitLog::open(dir.path(), cfg).expect("open");
    let next = Arc::new(Mutex::new(1u64));
    let appended = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let reads = AtomicU64::new(0);
    let deadline = Instant::now() + Duration::from_secs(3);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                while Instant::now() < deadline {
                    write(&log, &next, &appended);
                }
            });
        }
        for _ in 0..4 {
            s.spawn(|| {
                let mut rng = rand::rng();
                while !stop.load(Ordering::SeqCst) {
                    reads.fetch_add(read(&log, &mut rng), Ordering::SeqCst);
                }
            });
        }
        s.spawn(|| {
            while Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
                let upto = appended.load(Ordering::SeqCst).saturating_sub(2000);
                if upto > 0 {
                    log.purge(LogPos {
                        index: upto,
                        term: 1,
                        leader: 1,
                    })
                    .expect("purge");
                }
            }
        });
        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::SeqCst);
    });
    let total = appended.load(Ordering::SeqCst);
    let read_count = reads.load(Ordering::SeqCst);
    println!("appended {total} entries, verified {read_count} reads");
    assert!(
        total > 200 && read_count > 1000,
        "too little happened: {total} appended, {read_count} read"
    );
    assert!(log.bounds().first > 1, "the head was never purged");
}

#[test]
fn callbacks_complete_in_log_order_and_share_fsyncs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        segment_size: 256 * 1024,
        ..LogConfig::default()
    };
    let (log, _) = CommitLog::open(dir.path(), cfg).expect("open");
    let order = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    // 2,000 appends issued without waiting; they cross several segments.
    for index in 1..=2000u64 {
        let meta = RecordMeta {
            index,
            term: 1,
            leader: 1,
            kind: EntryKind::Normal,
        };
        let (order, tx) = (order.clone(), tx.clone());
        let done = move |r: Result<(), LogError>| {
            r.expect("durable");
            order.lock().expect("order").push(index);
            let _ = tx.send(());
        };
        log.append([(meta, encoded(index))], Box::new(done))
            .expect("append");
    }
    for _ in 0..2000 {
        rx.recv_timeout(Duration::from_secs(30))
            .expect("every callback completes");
    }
    let order = order.lock().expect("order");
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "callbacks out of log order"
    );
    let st = log.flush_stats();
    println!("{st:?}");
    assert_eq!(st.appends, 2000);
    assert!(st.rounds < 2000, "appends did not share fsyncs: {st:?}");
}
