//! Consume-queue rows that hold runs of entries.
//!
//! A row of the `cq` column family is keyed by its queue and its *first* offset, and its
//! value is one or more [`CqEntry`] encodings back to back: the entries of that offset and
//! the ones after it. A send stores its messages of one queue as one run, so applying it
//! costs one RocksDB put per queue it touches rather than one per message (format 2).
//! Format 1 wrote a row per entry, which reads as a run of one.
//!
//! Offsets only grow within a queue (a deleted topic's rows go with it), so rows never
//! overlap: the entry of offset `o` is in the last row whose first offset is at most `o`,
//! if that row reaches `o`.

use std::collections::HashMap;
use std::sync::Arc;

use super::error::SmError;
use super::error::SmResult;
use super::records::CqEntry;

/// Entries to store, gathered into runs of consecutive offsets per queue (sans-IO).
#[derive(Debug, Default)]
pub struct Runs {
    runs: Vec<Run>,
    /// The run each queue's next entry may extend, by position in `runs`.
    open: HashMap<(Arc<str>, u32), usize>,
}

/// Consecutive entries of one queue from `first` on, encoded.
#[derive(Debug, PartialEq, Eq)]
pub struct Run {
    pub topic: Arc<str>,
    pub queue_id: u32,
    pub first: u64,
    pub value: Vec<u8>,
}

impl Run {
    fn next(&self) -> u64 {
        self.first + (self.value.len() / CqEntry::LEN) as u64
    }
}

impl Runs {
    /// Adds `entries`, the first at `first` and the others after it: they extend their
    /// queue's open run if they follow it, else they start a new one.
    pub fn push(&mut self, topic: &Arc<str>, queue_id: u32, first: u64, entries: &[CqEntry]) {
        if entries.is_empty() {
            return;
        }
        let key = (topic.clone(), queue_id);
        let i = match self.open.get(&key) {
            Some(&i) if self.runs[i].next() == first => i,
            _ => {
                self.open.insert(key, self.runs.len());
                self.runs.push(Run {
                    topic: topic.clone(),
                    queue_id,
                    first,
                    value: Vec::with_capacity(entries.len() * CqEntry::LEN),
                });
                self.runs.len() - 1
            }
        };
        let value = &mut self.runs[i].value;
        for e in entries {
            value.extend_from_slice(&e.encode());
        }
    }

    /// The runs gathered so far, in the order they were started; leaves `self` empty.
    pub fn take(&mut self) -> Vec<Run> {
        self.open.clear();
        std::mem::take(&mut self.runs)
    }
}

/// The entries of a stored row whose first offset is `first`, from offset `from` on
/// (none if the row ends before `from`), at most `max`.
pub fn entries_from(first: u64, value: &[u8], from: u64, max: usize) -> SmResult<Vec<CqEntry>> {
    if value.is_empty() || !value.len().is_multiple_of(CqEntry::LEN) {
        return Err(SmError::corrupt(
            "cq row",
            format!(
                "{} bytes, not a whole number of {}-byte entries",
                value.len(),
                CqEntry::LEN
            ),
        ));
    }
    let count = (value.len() / CqEntry::LEN) as u64;
    let Some(skip) = from.checked_sub(first).filter(|&s| s < count) else {
        return Ok(Vec::new());
    };
    value
        .chunks_exact(CqEntry::LEN)
        .skip(skip as usize)
        .take(max)
        .map(CqEntry::decode)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::Runs;
    use super::entries_from;
    use crate::sm::records::CqEntry;

    fn entry(n: u64) -> CqEntry {
        CqEntry {
            log_index: n,
            slot: n as u32,
            size: 10,
            tag_hash: 0,
            store_time_ms: 1,
        }
    }

    #[test]
    fn consecutive_offsets_of_a_queue_share_a_run() {
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let mut runs = Runs::default();
        runs.push(&a, 0, 5, &[entry(1)]);
        runs.push(&a, 1, 0, &[entry(2)]);
        runs.push(&a, 0, 6, &[entry(3), entry(7)]);
        runs.push(&b, 0, 7, &[entry(4)]);
        runs.push(&b, 1, 0, &[]);
        runs.push(&a, 0, 8, &[entry(5)]);
        runs.push(&a, 0, 10, &[entry(6)]);
        let got: Vec<_> = runs
            .take()
            .into_iter()
            .map(|r| {
                (
                    r.topic.to_string(),
                    r.queue_id,
                    r.first,
                    r.value.len() / CqEntry::LEN,
                )
            })
            .collect();
        let want = [("a", 0, 5, 4), ("a", 1, 0, 1), ("b", 0, 7, 1), ("a", 0, 10, 1)];
        let want: Vec<_> = want
            .iter()
            .map(|&(t, q, f, n)| (t.to_string(), q, f, n))
            .collect();
        assert_eq!(got, want);
        assert!(runs.take().is_empty());
    }

    #[test]
    fn a_row_answers_the_offsets_it_holds() {
        let value: Vec<u8> = (0..4).flat_map(|n| entry(n).encode()).collect();
        assert_eq!(
            entries_from(10, &value, 10, 9).expect("row"),
            (0..4).map(entry).collect::<Vec<_>>()
        );
        assert_eq!(entries_from(10, &value, 12, 1).expect("row"), vec![entry(2)]);
        assert_eq!(entries_from(10, &value, 13, 9).expect("row"), vec![entry(3)]);
        assert!(entries_from(10, &value, 14, 9).expect("row").is_empty());
        assert!(entries_from(10, &value, 9, 9).expect("row").is_empty());
        assert!(entries_from(10, &value[..40], 10, 9).is_err());
        assert!(entries_from(10, &[], 10, 9).is_err());
    }

    mod against_a_model {
        use std::sync::Arc;

        use proptest::prelude::*;

        use super::entry;
        use crate::sm::apply::Op;
        use crate::sm::records::CqEntry;
        use crate::sm::store::SmConfig;
        use crate::sm::store::Store;

        /// One applied batch: segments of consecutive messages to queue 0 or 1, and
        /// whether the topic is deleted (and its queues restart) after segment `n`.
        type Batch = (Vec<(u32, u64)>, Option<usize>);

        fn batches() -> impl Strategy<Value = Vec<Batch>> {
            let segment = (0u32..2, 1u64..6);
            let batch = (
                prop::collection::vec(segment, 1..6),
                prop::option::weighted(0.1, 0usize..6),
            );
            prop::collection::vec(batch, 1..8)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(48))]
            #[test]
            fn reads_give_what_a_row_per_entry_would(
                batches in batches(),
                reads in prop::collection::vec((0u32..2, 0u64..40, 0usize..12), 1..20),
            ) {
                let dir = tempfile::tempdir().expect("tempdir");
                let store = Store::open(dir.path(), &SmConfig::default()).expect("open");
                let topic: Arc<str> = "t".into();
                let mut model: [Vec<CqEntry>; 2] = [Vec::new(), Vec::new()];
                let mut n = 0;
                for (segments, delete_after) in batches {
                    let mut ops = Vec::new();
                    for (i, (q, count)) in segments.into_iter().enumerate() {
                        let first = model[q as usize].len() as u64;
                        let mut entries = Vec::new();
                        for _ in 0..count {
                            n += 1;
                            entries.push(entry(n));
                        }
                        model[q as usize].extend_from_slice(&entries);
                        ops.push(Op::PutCq { topic: topic.clone(), queue_id: q, first, entries });
                        if delete_after == Some(i) {
                            ops.push(Op::DeleteTopic("t".into()));
                            model = [Vec::new(), Vec::new()];
                        }
                    }
                    store.write(&ops, None, None).expect("write");
                }
                let want = |q: u32, from: u64, max: usize| -> Vec<CqEntry> {
                    model[q as usize].iter().skip(from as usize).take(max).copied().collect()
                };
                // From the tails in memory (`cq_tail`), then from the rows alone: a store
                // opened again starts with empty tails.
                for &(q, from, max) in &reads {
                    prop_assert_eq!(store.read_cq("t", q, from, max).expect("read"), want(q, from, max));
                }
                drop(store);
                let reopened = Store::open(dir.path(), &SmConfig::default()).expect("open again");
                for &(q, from, max) in &reads {
                    prop_assert_eq!(reopened.read_cq("t", q, from, max).expect("read rows"), want(q, from, max));
                }
            }
        }
    }
}
