//! Recently read entries, kept for reads of their other slots.
//!
//! A broker's entry holds many messages (sends are merged into shared entries), and a
//! consumer reads them one slot at a time, queue by queue. Without a cache each such read
//! would load and checksum the whole entry again. The cache keeps the payloads of the
//! entries read last, within a byte budget, dropping the lowest index first (consumers
//! move forward through the log).
//!
//! Truncation and purging remove the entries they discard. A read that loaded an entry
//! from disk before such a change finished must not put the old payload back: every
//! removal bumps a generation, and an entry is only inserted under the generation its
//! read started in.

use std::collections::BTreeMap;
use std::sync::Mutex;

use bytes::Bytes;

/// The cache's state (plain data; [`ReadCache`] adds the lock).
#[derive(Debug, Default)]
struct Entries {
    by_index: BTreeMap<u64, Bytes>,
    bytes: usize,
    generation: u64,
}

/// A byte-bounded map from log index to entry payload.
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

    /// The payload of entry `index`, if cached.
    pub fn get(&self, index: u64) -> Option<Bytes> {
        if self.budget == 0 {
            return None;
        }
        self.lock().by_index.get(&index).cloned()
    }

    /// The generation a read starts in; pass it to [`Self::insert`].
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Keeps `payload` as entry `index`, unless something was removed since `generation`
    /// or it alone exceeds the budget; evicts the lowest indices to make room.
    pub fn insert(&self, generation: u64, index: u64, payload: Bytes) {
        if payload.len() > self.budget {
            return;
        }
        let mut s = self.lock();
        if s.generation != generation || s.by_index.contains_key(&index) {
            return;
        }
        while s.bytes + payload.len() > self.budget {
            let Some((_, old)) = s.by_index.pop_first() else {
                break;
            };
            s.bytes -= old.len();
        }
        s.bytes += payload.len();
        s.by_index.insert(index, payload);
    }

    /// Forgets entries from `from` on (a truncation).
    pub fn remove_from(&self, from: u64) {
        let mut s = self.lock();
        s.generation += 1;
        let gone = s.by_index.split_off(&from);
        s.bytes -= gone.values().map(Bytes::len).sum::<usize>();
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
        s.bytes -= gone.values().map(Bytes::len).sum::<usize>();
    }

    /// Payload bytes held.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(n: usize) -> Bytes {
        Bytes::from(vec![7u8; n])
    }

    #[test]
    fn keeps_within_budget_dropping_the_lowest_index_first() {
        let c = ReadCache::new(100);
        let g = c.generation();
        c.insert(g, 5, payload(40));
        c.insert(g, 6, payload(40));
        c.insert(g, 7, payload(40));
        assert_eq!(c.get(5), None, "lowest index evicted");
        assert_eq!(c.get(6).map(|b| b.len()), Some(40));
        assert_eq!(c.get(7).map(|b| b.len()), Some(40));
        assert_eq!(c.bytes(), 80);
        c.insert(g, 8, payload(101));
        assert_eq!(c.get(8), None, "larger than the budget");
        assert_eq!(ReadCache::new(0).get(1), None);
    }

    #[test]
    fn truncation_and_purge_remove_entries_and_stale_reads_stay_out() {
        let c = ReadCache::new(1000);
        let g = c.generation();
        for i in 1..=5 {
            c.insert(g, i, payload(10));
        }
        c.remove_from(4);
        assert_eq!((c.get(3).is_some(), c.get(4), c.get(5)), (true, None, None));
        // A read that started before the truncation loaded the old entry 4.
        c.insert(g, 4, payload(10));
        assert_eq!(c.get(4), None, "stale payload not put back");
        let g = c.generation();
        c.insert(g, 4, payload(10));
        assert!(c.get(4).is_some());
        c.remove_upto(2);
        assert_eq!((c.get(1), c.get(2), c.get(3).is_some()), (None, None, true));
        assert_eq!(c.bytes(), 20);
        c.remove_upto(u64::MAX);
        assert_eq!(c.bytes(), 0);
    }
}
