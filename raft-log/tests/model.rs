//! Model test: random sequences of append / truncate_after / purge / reopen applied to the
//! commit log and to a plain in-memory model must agree after every step.

use std::collections::BTreeMap;
use std::sync::mpsc;

use proptest::prelude::*;
use raft_log::CommitLog;
use raft_log::EntryKind;
use raft_log::LogConfig;
use raft_log::LogPos;
use raft_log::RecordMeta;

#[derive(Debug, Clone)]
enum Op {
    /// Append `count` entries of about `size` bytes, optionally under a new term.
    Append {
        count: u8,
        size: u16,
        new_term: bool,
    },
    /// Truncate after `last - back` (everything if that is below the first entry).
    Truncate {
        back: u8,
    },
    /// Purge up to `first - 1 + fwd` (clamped to the last entry).
    Purge {
        fwd: u8,
    },
    /// Purge past the last entry, as openraft does after installing a snapshot.
    PurgeBeyond {
        gap: u8,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u8..12, 0u16..9000, any::<bool>()).prop_map(|(count, size, new_term)| Op::Append { count, size, new_term }),
        2 => (0u8..20).prop_map(|back| Op::Truncate { back }),
        2 => (0u8..20).prop_map(|fwd| Op::Purge { fwd }),
        1 => (0u8..5).prop_map(|gap| Op::PurgeBeyond { gap }),
        2 => Just(Op::Reopen),
    ]
}

/// The obviously-correct log: a map from index to (term, payload) and a purge point.
#[derive(Debug, Default)]
struct Model {
    entries: BTreeMap<u64, (u64, Vec<u8>)>,
    purged: Option<LogPos>,
    term: u64,
}

impl Model {
    fn next(&self) -> Option<u64> {
        let from_entries = self.entries.keys().next_back().map(|i| i + 1);
        let from_purge = self.purged.map(|p| p.index + 1);
        from_entries.max(from_purge)
    }

    fn first(&self) -> u64 {
        self.entries.keys().next().copied().or(self.next()).unwrap_or(0)
    }

    fn last(&self) -> Option<LogPos> {
        match self.entries.iter().next_back() {
            Some((&index, &(term, _))) => Some(LogPos {
                index,
                term,
                leader: 1,
            }),
            None => self.purged,
        }
    }
}

fn payload(index: u64, term: u64, size: u16) -> Vec<u8> {
    let seed = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ term;
    (0..size as u64)
        .map(|i| (seed.wrapping_add(i * 31) >> 3) as u8)
        .collect()
}

fn config() -> LogConfig {
    LogConfig {
        segment_size: 64 * 1024,
        ..LogConfig::default()
    }
}

struct Harness {
    dir: tempfile::TempDir,
    log: Option<CommitLog>,
    model: Model,
}

impl Harness {
    fn log(&self) -> &CommitLog {
        self.log.as_ref().expect("log is open")
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Append {
                count,
                size,
                new_term,
            } => self.append(count, size, new_term)?,
            Op::Truncate { back } => self.truncate(back)?,
            Op::Purge { fwd } => {
                let Some(last) = self.model.entries.keys().next_back().copied() else {
                    return Ok(());
                };
                let upto = (self.model.first() + u64::from(fwd)).saturating_sub(1).min(last);
                if upto < self.model.first() {
                    return Ok(());
                }
                let term = self.model.entries[&upto].0;
                self.purge(LogPos {
                    index: upto,
                    term,
                    leader: 1,
                })?;
            }
            Op::PurgeBeyond { gap } => {
                let Some(last) = self.model.last() else {
                    return Ok(());
                };
                let pos = LogPos {
                    index: last.index + 1 + u64::from(gap),
                    term: self.model.term.max(1),
                    leader: 1,
                };
                self.model.term = pos.term;
                self.purge(pos)?;
            }
            Op::Reopen => {
                self.log = None;
                let (log, report) = CommitLog::open(self.dir.path(), config()).map_err(fail)?;
                prop_assert_eq!(&report.damage, &None, "clean reopen found damage");
                prop_assert!(
                    report.dropped_segments.is_empty(),
                    "clean reopen dropped segments: {:?}",
                    report
                );
                self.log = Some(log);
            }
        }
        Ok(())
    }

    fn append(&mut self, count: u8, size: u16, new_term: bool) -> Result<(), TestCaseError> {
        if new_term || self.model.term == 0 {
            self.model.term += 1;
        }
        let term = self.model.term;
        let start = self.model.next().unwrap_or(1);
        let batch: Vec<(RecordMeta, Vec<u8>)> = (start..start + u64::from(count))
            .map(|index| {
                let meta = RecordMeta {
                    index,
                    term,
                    leader: 1,
                    kind: EntryKind::Normal,
                };
                (meta, payload(index, term, size))
            })
            .collect();
        let (tx, rx) = mpsc::channel();
        self.log()
            .append(batch.clone(), Box::new(move |r| drop(tx.send(r))))
            .map_err(fail)?;
        rx.recv().map_err(fail)?.map_err(fail)?;
        for (m, p) in batch {
            self.model.entries.insert(m.index, (m.term, p));
        }
        Ok(())
    }

    fn truncate(&mut self, back: u8) -> Result<(), TestCaseError> {
        let Some(last) = self.model.entries.keys().next_back().copied() else {
            return Ok(());
        };
        let keep = last.checked_sub(u64::from(back));
        let floor = self.model.purged.map(|p| p.index);
        let after = match (keep, floor) {
            (Some(k), Some(f)) => Some(k.max(f)),
            (Some(k), None) if k >= self.model.first() => Some(k),
            (_, f) => f,
        };
        self.log().truncate_after(after).map_err(fail)?;
        match after {
            Some(a) => self.model.entries.retain(|&i, _| i <= a),
            None => self.model.entries.clear(),
        }
        Ok(())
    }

    fn purge(&mut self, pos: LogPos) -> Result<(), TestCaseError> {
        self.log().purge(pos).map_err(fail)?;
        if self.model.purged.is_none_or(|p| p.index < pos.index) {
            self.model.purged = Some(pos);
            self.model.entries.retain(|&i, _| i > pos.index);
        }
        Ok(())
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let b = self.log().bounds();
        let m = &self.model;
        prop_assert_eq!(b.next, m.next(), "next index");
        prop_assert_eq!(b.last, m.last(), "last entry");
        prop_assert_eq!(b.purged, m.purged, "purge point");
        let Some(next) = b.next else { return Ok(()) };
        prop_assert_eq!(b.first, m.first(), "first index");
        let got = self.log().read(b.first, next).map_err(fail)?;
        prop_assert_eq!(got.len(), m.entries.len());
        for (e, (&index, (term, p))) in got.iter().zip(&m.entries) {
            prop_assert_eq!(e.meta.index, index);
            prop_assert_eq!(e.meta.term, *term);
            prop_assert_eq!(&e.payload[..], &p[..], "payload of {}", index);
        }
        if b.first > 0 {
            prop_assert!(
                self.log().read(b.first - 1, b.first).is_err(),
                "purged entry readable"
            );
        }
        Ok(())
    }
}

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn log_agrees_with_model(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().map_err(fail)?;
        let (log, _) = CommitLog::open(dir.path(), config()).map_err(fail)?;
        let mut h = Harness { dir, log: Some(log), model: Model::default() };
        for op in &ops {
            h.apply(op)?;
            h.check()?;
        }
        // Whatever the sequence, a final reopen sees exactly the same log.
        h.apply(&Op::Reopen)?;
        h.check()?;
    }
}
