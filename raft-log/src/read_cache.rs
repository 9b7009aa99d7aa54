//! Recently read entries, kept for the next reads of the same entries.
//!
//! An entry is read several times soon after it is appended: by the replication to each
//! follower, by the apply, and by consumers, one slot at a time (a broker's entry holds
//! many messages, and sends are merged into shared entries). Without a cache each of
//! these reads would copy and checksum the whole entry again. The cache keeps the entries
//! read last, within a byte budget of payload, dropping the lowest index first (readers
//! move forward through the log).
//!
//! Truncation and purging remove the entries they discard. A read that loaded an entry
//! from disk before such a change finished must not put the old payload back: every
//! removal bumps a generation, and an entry is only inserted under the generation its
//! read started in.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::log::StoredEntry;

/// The cache's state (plain data; [`ReadCache`] adds the lock).
#[derive(Debug, Default)]
struct Entries {
    by_index: BTreeMap<u64, StoredEntry>,
    bytes: usize,
    generation: u64,
}

/// A byte-bounded map from log index to entry.
#[derive(Debug, Default)]
pub struct ReadCache {
    budget: usize,
    state: Mutex<Entries>,
}

impl ReadCache {
    /// A cache holding at most `budget` payload bytes (0: never holds anything).
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            state: Mutex::new(Entries::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Entry `index`, if cached.
    pub fn get(&self, index: u64) -> Option<StoredEntry> {
        if self.budget == 0 {
            return None;
        }
        self.lock().by_index.get(&index).cloned()
    }

    /// The cached entries `from, from + 1, …` before `to`, up to the first one missing.
    pub fn get_run(&self, from: u64, to: u64) -> Vec<StoredEntry> {
        if self.budget == 0 {
            return Vec::new();
        }
        let s = self.lock();
        let mut out = Vec::new();
        for (i, (&index, e)) in s.by_index.range(from..to).enumerate() {
            if index != from + i as u64 {
                break;
            }
            out.push(e.clone());
        }
        out
    }

    /// The generation a read starts in; pass it to [`Self::insert`].
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Keeps `entries` (each under its own index), unless something was removed since
    /// `generation`; an entry alone larger than the budget is skipped. Evicts the lowest
    /// indices to make room.
    pub fn insert(&self, generation: u64, entries: &[StoredEntry]) {
        if self.budget == 0 {
            return;
        }
        let mut s = self.lock();
        if s.generation != generation {
            return;
        }
        for e in entries {
            let len = e.payload.len();
            if len > self.budget || s.by_index.contains_key(&e.meta.index) {
                continue;
            }
            while s.bytes + len > self.budget {
                let Some((_, old)) = s.by_index.pop_first() else {
                    break;
                };
                s.bytes -= old.payload.len();
            }
            s.bytes += len;
            s.by_index.insert(e.meta.index, e.clone());
        }
    }

    /// Forgets entries from `from` on (a truncation).
    pub fn remove_from(&self, from: u64) {
        let mut s = self.lock();
        s.generation += 1;
        let gone = s.by_index.split_off(&from);
        s.bytes -= gone.values().map(|e| e.payload.len()).sum::<usize>();
    }

    /// Forgets entries up to and including `upto` (a purge).
    pub fn remove_upto(&self, upto: u64) {
        let mut s = self.lock();
        s.generation += 1;
        let kept = match upto.checked_add(1) {
            Some(k) => s.by_index.split_off(&k),
            None => BTreeMap::new(),
        };
        let gone = std::mem::replace(&mut s.by_index, kept);
        s.bytes -= gone.values().map(|e| e.payload.len()).sum::<usize>();
    }

    /// Payload bytes held.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::record::EntryKind;
    use crate::record::RecordMeta;

    fn entry(index: u64, n: usize) -> StoredEntry {
        StoredEntry {
            meta: RecordMeta {
                index,
                term: 1,
                leader: 1,
                kind: EntryKind::Normal,
            },
            payload: Bytes::from(vec![7u8; n]),
        }
    }

    fn len(e: Option<StoredEntry>) -> Option<usize> {
        e.map(|e| e.payload.len())
    }

    #[test]
    fn keeps_within_budget_dropping_the_lowest_index_first() {
        let c = ReadCache::new(100);
        let g = c.generation();
        c.insert(g, &[entry(5, 40), entry(6, 40)]);
        c.insert(g, &[entry(7, 40)]);
        assert_eq!(c.get(5), None, "lowest index evicted");
        assert_eq!(len(c.get(6)), Some(40));
        assert_eq!(len(c.get(7)), Some(40));
        assert_eq!(c.bytes(), 80);
        c.insert(g, &[entry(8, 101)]);
        assert_eq!(c.get(8), None, "larger than the budget");
        let none = ReadCache::new(0);
        none.insert(none.generation(), &[entry(1, 1)]);
        assert_eq!(none.get(1), None);
    }

    #[test]
    fn a_run_stops_at_the_first_entry_missing() {
        let c = ReadCache::new(1000);
        let g = c.generation();
        c.insert(g, &[entry(3, 1), entry(4, 1), entry(6, 1)]);
        let indices = |v: Vec<StoredEntry>| v.iter().map(|e| e.meta.index).collect::<Vec<_>>();
        assert_eq!(indices(c.get_run(3, 10)), vec![3, 4]);
        assert_eq!(indices(c.get_run(3, 4)), vec![3]);
        assert_eq!(indices(c.get_run(2, 10)), Vec::<u64>::new());
        assert_eq!(indices(c.get_run(6, 7)), vec![6]);
    }

    #[test]
    fn truncation_and_purge_remove_entries_and_stale_reads_stay_out() {
        let c = ReadCache::new(1000);
        let g = c.generation();
        c.insert(g, &(1..=5).map(|i| entry(i, 10)).collect::<Vec<_>>());
        c.remove_from(4);
        assert_eq!((c.get(3).is_some(), c.get(4), c.get(5)), (true, None, None));
        // A read that started before the truncation loaded the old entry 4.
        c.insert(g, &[entry(4, 10)]);
        assert_eq!(c.get(4), None, "stale entry not put back");
        let g = c.generation();
        c.insert(g, &[entry(4, 10)]);
        assert!(c.get(4).is_some());
        c.remove_upto(2);
        assert_eq!((c.get(1), c.get(2), c.get(3).is_some()), (None, None, true));
        assert_eq!(c.bytes(), 20);
        c.remove_upto(u64::MAX);
        assert_eq!(c.bytes(), 0);
    }
}
