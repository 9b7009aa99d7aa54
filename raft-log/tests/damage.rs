//! Storage damage on a node that is down: `raft_log::damage` flips bits in or truncates a
//! segment file; the next open must report exactly that damage, keep exactly the entries
//! before it, never serve a corrupt payload, and accept the lost entries again, as Raft's
//! re-replication would send them.

use std::fs::OpenOptions;
use std::path::Path;

use raft_log::CommitLog;
use raft_log::Corruption;
use raft_log::LogConfig;
use raft_log::LogError;
use raft_log::LogPos;
use raft_log::RecoveryReport;
use raft_log::damage;
use raft_log::damage::RecordLocation;
use raft_log::damage::TruncateAt;

mod common;
use common::config;
use common::segments;

const LAST: u64 = 150;

fn body(index: u64) -> Vec<u8> {
    vec![(index % 251) as u8; 900 + (index * 37 % 1300) as usize]
}

/// A closed log holding 1..=LAST over several segments, optionally purged up to `purge`.
fn closed_log(cfg: LogConfig, purge: Option<u64>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _) = CommitLog::open(dir.path(), cfg).expect("open");
    common::append_with(&log, 1, LAST + 1, 1, body);
    if let Some(index) = purge {
        log.purge(LogPos {
            index,
            term: 1,
            leader: 1,
        })
        .expect("purge");
    }
    assert!(segments(dir.path()).len() >= 4, "several segments");
    dir
}

/// Opens the damaged log; checks the report names `hit` and that exactly the entries
/// before it are there, intact; then re-appends the rest and reopens cleanly.
fn recovers_from(
    dir: &Path,
    hit: &RecordLocation,
    first: u64,
    cfg: impl Fn() -> LogConfig,
) -> RecoveryReport {
    let (log, report) = CommitLog::open(dir, cfg()).expect("open damaged log");
    let d = report.damage.clone().expect("damage reported");
    assert_eq!(
        (&d.path, d.offset, d.index),
        (&hit.path, hit.offset, hit.index),
        "{report:?}"
    );
    assert!(d.durable_lost, "valid data followed the damage: {report:?}");
    assert_eq!(log.vote_fence(), Some(hit.index), "the node may not vote");
    assert_eq!(
        log.bounds().next,
        Some(hit.index),
        "entries after the damage are gone"
    );
    let kept = log.read(first, hit.index).expect("kept entries read back");
    for (e, i) in kept.iter().zip(first..) {
        assert_eq!((e.meta.index, &e.payload[..]), (i, &body(i)[..]), "entry {i}");
    }
    assert!(matches!(
        log.read(hit.index, hit.index + 1),
        Err(LogError::NotFound { .. })
    ));
    common::append_with(&log, hit.index, LAST + 1, 1, body);
    drop(log);
    let (log, again) = CommitLog::open(dir, cfg()).expect("reopen");
    assert_eq!(again.damage, None, "re-replicated log is clean");
    assert_eq!(log.vote_fence(), Some(hit.index), "the fence outlives a restart");
    log.clear_vote_fence().expect("clear the fence");
    drop(log);
    let (log, _) = CommitLog::open(dir, cfg()).expect("reopen");
    assert_eq!(log.vote_fence(), None, "cleared for good");
    let all = log.read(first, LAST + 1).expect("everything again");
    assert!(all.iter().zip(first..).all(|(e, i)| e.payload[..] == body(i)[..]));
    report
}

#[test]
fn flipped_bits_are_found_where_they_were_flipped() {
    for seed in 0..12 {
        let dir = closed_log(config(), None);
        let flip = damage::flip_bits(dir.path(), seed).expect("flip");
        assert!(flip.record.index < LAST, "never the last record");
        let r = &flip.record;
        assert!((r.offset..r.offset + r.len).contains(&flip.byte_offset));
        assert_ne!(flip.mask, 0);
        recovers_from(dir.path(), r, 1, config);
    }
}

#[test]
fn truncated_segments_are_found_at_the_cut_record() {
    for at in [TruncateAt::Boundary, TruncateAt::MidRecord] {
        for seed in 0..12 {
            let dir = closed_log(config(), None);
            let cut = damage::truncate_segment(dir.path(), seed, at).expect("truncate");
            let r = &cut.record;
            assert!(r.index < LAST, "never the last record");
            match at {
                TruncateAt::Boundary => assert_eq!(cut.new_len, r.offset),
                TruncateAt::MidRecord => assert!(cut.new_len > r.offset && cut.new_len < r.offset + r.len),
            }
            assert!(cut.new_len < cut.old_len);
            recovers_from(dir.path(), r, 1, config);
        }
    }
}

#[test]
fn the_choice_is_seeded_and_spares_purged_records() {
    let (a, b) = (closed_log(config(), Some(40)), closed_log(config(), Some(40)));
    let (fa, fb) = (
        damage::flip_bits(a.path(), 99).expect("flip a"),
        damage::flip_bits(b.path(), 99).expect("flip b"),
    );
    assert_eq!(
        (fa.record.index, fa.record.offset, fa.byte_offset, fa.mask),
        (fb.record.index, fb.record.offset, fb.byte_offset, fb.mask)
    );
    for seed in 0..8 {
        let dir = closed_log(config(), Some(40));
        let flip = damage::flip_bits(dir.path(), seed).expect("flip");
        assert!((41..LAST).contains(&flip.record.index), "{flip:?}");
        recovers_from(dir.path(), &flip.record, 41, config);
    }
}

#[test]
fn a_log_too_short_to_damage_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _) = CommitLog::open(dir.path(), config()).expect("open");
    common::append_with(&log, 1, 2, 1, body);
    let err = damage::flip_bits(dir.path(), 1).expect_err("log is open");
    assert!(err.to_string().contains("lock"), "{err}");
    drop(log);
    let err = damage::flip_bits(dir.path(), 1).expect_err("one record only");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

fn set_len(path: &Path, len: u64) {
    let f = OpenOptions::new().write(true).open(path).expect("open");
    f.set_len(len).expect("set_len");
}

fn record_at(dir: &Path, index: u64) -> RecordLocation {
    let recs = damage::records(dir).expect("records");
    recs.into_iter().find(|r| r.index == index).expect("record")
}

/// The first record of the last segment (not the last record of the log).
fn first_of_last_segment(dir: &Path) -> RecordLocation {
    let recs = damage::records(dir).expect("records");
    let last = recs.last().expect("records").path.clone();
    let hit = recs.into_iter().find(|r| r.path == last).expect("record");
    assert!(hit.index < LAST);
    hit
}

/// The first record of the second segment: a cut there leaves just the segment header.
fn first_of_second_segment(dir: &Path) -> RecordLocation {
    let recs = damage::records(dir).expect("records");
    let first = recs[0].path.clone();
    recs.into_iter()
        .find(|r| r.path != first)
        .expect("second segment")
}

#[test]
fn every_kind_of_short_file_is_reported() {
    type Pick = fn(&Path) -> RecordLocation;
    // (which record, how far into it the file is cut, whether a later segment is cut off)
    let cases: [(Pick, u64, bool); 5] = [
        (first_of_last_segment, 0, false),
        (first_of_last_segment, 20, false),
        (|d| record_at(d, 3), 0, true),
        (|d| record_at(d, 3), 47, true),
        (first_of_second_segment, 0, true),
    ];
    for (pick, into, gap) in cases {
        let dir = closed_log(config(), None);
        let hit = pick(dir.path());
        set_len(&hit.path, hit.offset + into);
        let report = recovers_from(dir.path(), &hit, 1, config);
        let what = report.damage.expect("damage").what;
        match (into, gap) {
            (0, true) => assert!(
                matches!(what, Corruption::IndexGap { expected, .. } if expected == hit.index),
                "{what:?}"
            ),
            _ => assert_eq!(what, Corruption::Truncated),
        }
    }
}

#[test]
fn a_segment_whose_creation_a_crash_interrupted_does_not_fence() {
    // Created, but killed before its preallocation and header: an empty file next in line.
    let dir = closed_log(config(), None);
    let next = format!("{:020}.seg", LAST + 1);
    std::fs::write(dir.path().join(&next), b"").expect("empty segment file");
    let (log, report) = CommitLog::open(dir.path(), config()).expect("open");
    let d = report.damage.expect("the empty segment is reported");
    assert!(!d.durable_lost, "it never held a record: {d:?}");
    assert_eq!(log.vote_fence(), None);
    assert_eq!(log.bounds().next, Some(LAST + 1), "every entry kept");
}

#[test]
fn legitimate_short_ends_are_not_damage() {
    // Without preallocation a cut at a record boundary of the last segment is just a
    // shorter log: recovery cannot know, and does not claim damage.
    let plain = || LogConfig {
        preallocate: false,
        ..config()
    };
    let dir = closed_log(plain(), None);
    let hit = record_at(dir.path(), LAST - 1);
    set_len(&hit.path, hit.offset);
    let (log, report) = CommitLog::open(dir.path(), plain()).expect("open");
    assert_eq!((report.damage, log.bounds().next), (None, Some(LAST - 1)));
    drop(log);
    // A truncation interrupted between its unlinks leaves a gap behind the erased cut:
    // those segments are dropped, but that is no damage.
    let dir = closed_log(config(), None);
    let segs = segments(dir.path());
    let leftover = std::fs::read(segs.last().expect("segment")).expect("read");
    let (log, _) = CommitLog::open(dir.path(), config()).expect("open");
    log.truncate_after(Some(5)).expect("truncate");
    drop(log);
    std::fs::write(segs.last().expect("segment"), leftover).expect("restore");
    let (log, report) = CommitLog::open(dir.path(), config()).expect("open");
    assert_eq!(report.damage, None, "{report:?}");
    assert_eq!(report.dropped_segments.len(), 1);
    assert_eq!(log.bounds().next, Some(6));
}

openraft::declare_raft_types!(
    pub TestConfig:
        D = raft_log::Batch,
        R = (),
        Node = openraft::BasicNode,
);

#[test]
fn a_commit_point_recorded_beyond_the_damage_is_lowered() -> anyhow::Result<()> {
    use openraft::storage::RaftLogStorage;
    use raft_log::storage::RaftLogStore;
    let log_id = |index| {
        openraft::LogId::new(
            openraft::impls::leader_id_adv::LeaderId { term: 1, node_id: 1 },
            index,
        )
    };
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let dir = closed_log(config(), None);
    rt.block_on(async {
        let (log, _) = CommitLog::open(dir.path(), config())?;
        RaftLogStore::<TestConfig>::new(log)
            .save_committed(Some(log_id(LAST)))
            .await?;
        anyhow::Ok(())
    })?;
    let cut = damage::truncate_segment(dir.path(), 5, TruncateAt::MidRecord)?;
    rt.block_on(async {
        let (log, _) = CommitLog::open(dir.path(), config())?;
        let mut store = RaftLogStore::<TestConfig>::new(log);
        let committed = store.read_committed().await?;
        anyhow::ensure!(
            committed == Some(log_id(cut.record.index - 1)),
            "{committed:?} after {cut:?}"
        );
        Ok(())
    })
}
