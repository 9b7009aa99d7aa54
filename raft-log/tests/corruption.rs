//! Damaged files: garbage, half-written records, bit flips and out-of-order records at the
//! tail are cut on reopen, keeping exactly the valid prefix; damage found while running
//! is reported, never served.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use raft_log::CommitLog;
use raft_log::Corruption;
use raft_log::LogError;
use raft_log::record;

mod common;
use common::config;
use common::meta;
use common::segments;

const SEGMENT_HEADER: u64 = 64;
const PAYLOAD: usize = 100;
const RECORD: u64 = (record::HEADER_LEN + PAYLOAD) as u64;

fn body(index: u64) -> Vec<u8> {
    vec![(index % 251) as u8; PAYLOAD]
}

fn append(log: &CommitLog, from: u64, to: u64, term: u64) {
    common::append_with(log, from, to, term, body);
}

fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    let f = OpenOptions::new().write(true).open(path).expect("open segment");
    f.write_all_at(bytes, offset).expect("write");
    f.sync_all().expect("sync");
}

/// A log with entries 1..=n in one segment, closed again.
fn closed_log(n: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _) = CommitLog::open(dir.path(), config()).expect("open");
    append(&log, 1, n + 1, 1);
    dir
}

/// `lost`: whether valid records followed the damage, so that durable entries were lost
/// (not a torn tail) and the node must not vote until repaired.
fn reopen_expect(dir: &Path, entries: u64, what: Option<Corruption>, lost: bool) -> CommitLog {
    let (log, report) = CommitLog::open(dir, config()).expect("reopen");
    assert_eq!(report.damage.as_ref().map(|d| d.what), what, "report: {report:?}");
    assert_eq!(
        report.damage.as_ref().is_some_and(|d| d.durable_lost),
        lost,
        "{report:?}"
    );
    assert_eq!(log.vote_fence().is_some(), lost, "vote fence");
    assert_eq!(log.bounds().next, Some(entries + 1), "entries kept");
    let got = log.read(1, entries + 1).expect("read prefix");
    for (e, i) in got.iter().zip(1..) {
        assert_eq!((e.meta.index, &e.payload[..]), (i, &body(i)[..]));
    }
    log
}

/// After the cut the log accepts the next index and reopens cleanly.
fn continues_cleanly(log: CommitLog, dir: &Path, next: u64) {
    append(&log, next, next + 3, 2);
    drop(log);
    let (log, report) = CommitLog::open(dir, config()).expect("reopen");
    assert_eq!(report.damage, None);
    assert_eq!(log.bounds().next, Some(next + 3));
}

#[test]
fn garbage_after_the_last_record_is_cut() {
    let dir = closed_log(10);
    let seg = &segments(dir.path())[0];
    write_at(
        seg,
        SEGMENT_HEADER + 10 * RECORD,
        b"\xde\xad\xbe\xef garbage that is not a record",
    );
    let log = reopen_expect(dir.path(), 10, Some(Corruption::BadMagic), false);
    continues_cleanly(log, dir.path(), 11);
}

#[test]
fn half_written_record_is_cut() {
    let dir = closed_log(10);
    let mut rec = Vec::new();
    record::encode(&mut rec, &meta(11, 1), 1, &body(11));
    let seg = &segments(dir.path())[0];
    write_at(seg, SEGMENT_HEADER + 10 * RECORD, &rec[..rec.len() / 2]);
    let log = reopen_expect(dir.path(), 10, Some(Corruption::Checksum), false);
    continues_cleanly(log, dir.path(), 11);
}

#[test]
fn bit_flip_in_the_middle_keeps_the_prefix_before_it() {
    let dir = closed_log(10);
    let seg = &segments(dir.path())[0];
    let off = SEGMENT_HEADER + 6 * RECORD + 70;
    let f = OpenOptions::new().read(true).write(true).open(seg).expect("open");
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, off).expect("read");
    f.write_all_at(&[b[0] ^ 0x10], off).expect("flip");
    drop(f);
    let log = reopen_expect(dir.path(), 6, Some(Corruption::Checksum), true);
    continues_cleanly(log, dir.path(), 7);
}

#[test]
fn valid_records_that_do_not_continue_the_log_are_cut() {
    let cases = [
        (
            meta(15, 1),
            1,
            Corruption::IndexGap {
                expected: 11,
                found: 15,
            },
        ),
        (meta(11, 0), 1, Corruption::TermDecrease { prev: 1, found: 0 }),
        (meta(11, 1), 0, Corruption::StaleEpoch { prev: 1, found: 0 }),
    ];
    for (m, epoch, what) in cases {
        let dir = closed_log(10);
        let mut rec = Vec::new();
        record::encode(&mut rec, &m, epoch, &body(11));
        write_at(&segments(dir.path())[0], SEGMENT_HEADER + 10 * RECORD, &rec);
        let log = reopen_expect(dir.path(), 10, Some(what), false);
        continues_cleanly(log, dir.path(), 11);
    }
}

#[test]
fn damage_in_an_earlier_segment_drops_all_later_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _) = CommitLog::open(dir.path(), config()).expect("open");
    // ~440 records fill one 64 KiB segment; 1200 records span three segments.
    append(&log, 1, 1201, 1);
    drop(log);
    let segs = segments(dir.path());
    assert!(segs.len() >= 3, "{segs:?}");
    write_at(&segs[0], SEGMENT_HEADER + 100 * RECORD + 60, b"XX");
    let (log, report) = CommitLog::open(dir.path(), config()).expect("reopen");
    assert_eq!(
        report.damage.map(|d| (d.index, d.what, d.durable_lost)),
        Some((101, Corruption::Checksum, true))
    );
    assert_eq!(log.vote_fence(), Some(101));
    assert_eq!(report.dropped_segments.len(), segs.len() - 1);
    assert_eq!(log.bounds().next, Some(101));
    assert_eq!(segments(dir.path()).len(), 1);
    continues_cleanly(log, dir.path(), 101);
}

#[test]
fn corruption_while_running_is_reported_not_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _) = CommitLog::open(dir.path(), config()).expect("open");
    append(&log, 1, 11, 1);
    write_at(
        &segments(dir.path())[0],
        SEGMENT_HEADER + 3 * RECORD + 50,
        b"\x00\x01",
    );
    match log.read(1, 11) {
        Err(LogError::Corrupt {
            index: 4,
            what: Corruption::Checksum,
            ..
        }) => {}
        other => panic!("expected a checksum error at index 4, got {other:?}"),
    }
    assert_eq!(log.read(1, 4).expect("entries before the damage").len(), 3);
    assert!(log.read_slot(4, 0).is_err());
}

#[test]
fn a_second_process_cannot_open_the_same_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_log, _) = CommitLog::open(dir.path(), config()).expect("open");
    let err = CommitLog::open(dir.path(), config()).expect_err("second open must fail");
    assert!(err.to_string().contains("lock"), "{err}");
}
