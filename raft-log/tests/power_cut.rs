//! Simulated power failure: with `track_synced` on, `cut_to_synced` after a kill keeps
//! every entry that was reported durable and nothing that was not, torn or not; without
//! tracking nothing extra is written and the cut refuses to guess.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::Path;

use raft_log::CommitLog;
use raft_log::LogConfig;
use raft_log::LogPos;
use raft_log::RecordMeta;
use raft_log::power_cut::PowerCutMode;
use raft_log::power_cut::cut_to_synced;

mod common;
use common::meta;
use common::segments;
use common::tracked::Tracked;

fn body(index: u64, term: u64) -> Vec<u8> {
    vec![(index * 7 + term) as u8; 1000 + (index % 5) as usize * 300]
}

fn batch(from: u64, to: u64, term: u64) -> Vec<(RecordMeta, Vec<u8>)> {
    (from..to).map(|i| (meta(i, term), body(i, term))).collect()
}

fn append(log: &CommitLog, from: u64, to: u64, term: u64) {
    common::append_with(log, from, to, term, |i| body(i, term));
}

/// Checks that the log holds exactly entries `1..next` of the given terms.
fn holds_exactly(log: &CommitLog, next: u64, term_of: impl Fn(u64) -> u64) -> Result<(), String> {
    let b = log.bounds();
    if b.next != Some(next) {
        return Err(format!("next index {:?}, expected {next}", b.next));
    }
    let got = log.read(1, next).map_err(|e| e.to_string())?;
    for (e, i) in got.iter().zip(1..) {
        let t = term_of(i);
        if (e.meta.index, e.meta.term, &e.payload[..]) != (i, t, &body(i, t)[..]) {
            return Err(format!("entry {i} is not the one appended"));
        }
    }
    Ok(())
}

/// 1..=120 durable over several segments, then 121..=200 written but never synced.
fn killed_with_unsynced_tail() -> Tracked {
    let mut t = Tracked::new();
    append(t.log(), 1, 61, 1);
    append(t.log(), 61, 121, 1);
    assert!(segments(t.dir.path()).len() >= 3, "spans several segments");
    t.append_unsynced(vec![batch(121, 150, 1), batch(150, 201, 1)]);
    t.kill();
    t
}

#[test]
fn zero_cut_keeps_exactly_the_durable_prefix() {
    let mut t = killed_with_unsynced_tail();
    let cut = cut_to_synced(t.dir.path(), PowerCutMode::Zero).expect("cut");
    assert!(cut.segments.iter().any(|s| s.synced_len < s.file_len));
    assert!(cut.removed.is_empty() && cut.stale_ledgers.is_empty(), "{cut:?}");
    let report = t.reopen();
    assert_eq!(report.damage, None, "zeroes are a clean end: {report:?}");
    holds_exactly(t.log(), 121, |_| 1).expect("durable prefix, nothing more");
    // Re-appending the lost indexes works, and survives the next power failure.
    append(t.log(), 121, 131, 2);
    t.kill();
    cut_to_synced(t.dir.path(), PowerCutMode::Zero).expect("second cut");
    t.reopen();
    holds_exactly(t.log(), 131, |i| if i > 120 { 2 } else { 1 }).expect("after re-append");
}

#[test]
fn torn_page_is_damage_at_the_first_unsynced_entry() {
    for seed in 0..4 {
        let mut t = killed_with_unsynced_tail();
        let cut = cut_to_synced(t.dir.path(), PowerCutMode::Garbage { seed }).expect("cut");
        let torn = cut
            .segments
            .iter()
            .find(|s| s.garbage_len > 0)
            .expect("a torn page");
        let report = t.reopen();
        let damage = report.damage.expect("the torn page is reported");
        assert_eq!(
            (damage.index, damage.offset),
            (121, torn.synced_len),
            "seed {seed}"
        );
        assert_eq!(damage.path, torn.path);
        assert!(!damage.durable_lost, "a torn page lost only unsynced writes");
        assert_eq!(t.log().vote_fence(), None, "a torn tail does not fence votes");
        holds_exactly(t.log(), 121, |_| 1).expect("durable prefix, nothing more");
    }
}

#[test]
fn the_check_catches_a_missing_or_too_deep_cut() {
    // No cut at all: the unsynced tail is still in the files and comes back.
    let mut t = killed_with_unsynced_tail();
    t.reopen();
    assert!(
        holds_exactly(t.log(), 121, |_| 1).is_err(),
        "unsynced entries survived"
    );
    // A cut one record too deep: the last durable entry is gone.
    let mut t = killed_with_unsynced_tail();
    cut_to_synced(t.dir.path(), PowerCutMode::Zero).expect("cut");
    let recs = raft_log::damage::records(t.dir.path()).expect("records");
    let last = recs.last().expect("records");
    assert_eq!(last.index, 120);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&last.path)
        .expect("open");
    f.write_all_at(&[0u8; 48], last.offset).expect("zero the header");
    drop(f);
    t.reopen();
    assert!(
        holds_exactly(t.log(), 121, |_| 1).is_err(),
        "a durable entry was lost"
    );
}

#[test]
fn a_truncated_tail_does_not_come_back_and_its_replacement_is_not_durable() {
    let mut t = Tracked::new();
    append(t.log(), 1, 100, 1);
    t.log().truncate_after(Some(40)).expect("truncate");
    t.append_unsynced(vec![batch(41, 90, 2)]);
    t.kill();
    cut_to_synced(t.dir.path(), PowerCutMode::Zero).expect("cut");
    t.reopen();
    holds_exactly(t.log(), 41, |_| 1).expect("cut at the truncation point");
    // The same after a durable append on top of the truncation.
    append(t.log(), 41, 50, 2);
    t.log().truncate_after(Some(45)).expect("truncate");
    t.append_unsynced(vec![batch(46, 90, 3)]);
    t.kill();
    cut_to_synced(t.dir.path(), PowerCutMode::Zero).expect("cut");
    t.reopen();
    holds_exactly(t.log(), 46, |i| if i > 40 { 2 } else { 1 }).expect("cut at the new tail");
}

#[test]
fn undurable_segments_and_stale_ledgers_are_removed() {
    let mut t = Tracked::new();
    append(t.log(), 1, 40, 1);
    t.log()
        .purge(LogPos {
            index: 20,
            term: 1,
            leader: 1,
        })
        .expect("purge");
    t.kill();
    let dir = t.dir.path();
    let last = segments(dir).pop().expect("a segment");
    // A segment whose creation was never made durable has no ledger.
    let ghost = dir.join("00000000000000009999.seg");
    std::fs::copy(&last, &ghost).expect("copy");
    let orphan = dir.join("00000000000000000007.seg.synced");
    std::fs::write(&orphan, "64\n").expect("orphan ledger");
    let cut = cut_to_synced(dir, PowerCutMode::Zero).expect("cut");
    assert_eq!(cut.removed, vec![ghost.clone()]);
    assert_eq!(cut.stale_ledgers, vec![orphan.clone()]);
    assert!(!ghost.exists() && !orphan.exists());
    t.reopen();
    assert_eq!(t.log().bounds().first, 21);
    assert_eq!(t.log().bounds().next, Some(40));
}

#[test]
fn vote_survives_and_the_unsynced_commit_point_is_forgotten() {
    let mut t = Tracked::new();
    append(t.log(), 1, 5, 1);
    t.log().save_vote(b"vote-3").expect("vote");
    t.log().save_committed(b"commit-4").expect("committed");
    t.kill();
    let cut = cut_to_synced(t.dir.path(), PowerCutMode::Zero).expect("cut");
    assert!(cut.committed_reset);
    t.reopen();
    assert_eq!(
        t.log().read_vote().expect("vote").as_deref(),
        Some(&b"vote-3"[..])
    );
    assert_eq!(t.log().read_committed().expect("committed"), None);
}

#[test]
fn an_open_log_is_not_cut() {
    let t = Tracked::new();
    let err = cut_to_synced(t.dir.path(), PowerCutMode::Zero).expect_err("log is open");
    assert!(err.to_string().contains("lock"), "{err}");
}

fn file_names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".seg"))
        .collect()
}

#[test]
fn without_tracking_no_side_files_are_written_and_the_cut_refuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = || LogConfig {
        segment_size: 64 * 1024,
        ..LogConfig::default()
    };
    let (log, _) = CommitLog::open(dir.path(), plain()).expect("open");
    append(&log, 1, 100, 1);
    log.truncate_after(Some(80)).expect("truncate");
    log.purge(LogPos {
        index: 10,
        term: 1,
        leader: 1,
    })
    .expect("purge");
    drop(log);
    CommitLog::open(dir.path(), plain()).expect("reopen");
    let expected: BTreeSet<String> = ["LOCK", "committed", "meta"].map(String::from).into();
    assert_eq!(file_names(dir.path()), expected);
    let err = cut_to_synced(dir.path(), PowerCutMode::Zero).expect_err("untracked");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[test]
fn turning_tracking_off_removes_the_side_files() {
    let mut t = Tracked::new();
    append(t.log(), 1, 100, 1);
    assert!(file_names(t.dir.path()).iter().any(|n| n.ends_with(".synced")));
    t.log = None;
    let plain = LogConfig {
        segment_size: 64 * 1024,
        ..LogConfig::default()
    };
    CommitLog::open(t.dir.path(), plain).expect("open untracked");
    let expected: BTreeSet<String> = ["LOCK", "committed", "meta"].map(String::from).into();
    assert_eq!(file_names(t.dir.path()), expected);
}
