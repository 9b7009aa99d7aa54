//! Helpers shared by the commit log's integration tests.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::Path;
use std::path::PathBuf;
use std::sync::mpsc;

use raft_log::CommitLog;
use raft_log::EntryKind;
use raft_log::LogConfig;
use raft_log::RecordMeta;

/// Small segments, so that a few hundred entries span several files.
pub fn config() -> LogConfig {
    LogConfig {
        segment_size: 64 * 1024,
        ..LogConfig::default()
    }
}

pub fn meta(index: u64, term: u64) -> RecordMeta {
    RecordMeta {
        index,
        term,
        leader: 1,
        kind: EntryKind::Normal,
    }
}

/// Appends entries `from..to` of `term` with payloads from `body` and waits until durable.
pub fn append_with(log: &CommitLog, from: u64, to: u64, term: u64, body: impl Fn(u64) -> Vec<u8>) {
    let batch: Vec<_> = (from..to).map(|i| (meta(i, term), body(i))).collect();
    let (tx, rx) = mpsc::channel();
    log.append(batch, Box::new(move |r| drop(tx.send(r))))
        .expect("append");
    rx.recv().expect("callback").expect("durable");
}

/// The segment files of a log directory, in index order.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

pub mod tracked;
