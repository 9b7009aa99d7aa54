//! The newest consume-queue entries of each queue, kept in memory.
//!
//! A consumer that keeps up reads each queue at its end, a few milliseconds behind the
//! producers, and every such pull read its entries from RocksDB: an iterator over the
//! memtables and files, a `seek_for_prev`, a row decoded (4.7 % of the leader's samples in a
//! profile at window 1024). The store hands every entry it writes to [`CqTails::push`]
//! after the write, under the same lock as the queue counters ([`super::meta_cache`]), so a
//! reader that saw a queue's end also finds the entries before it here unless they have
//! already left the tail.
//!
//! Bounded: the last [`TAIL_ENTRIES`] entries of at most [`MAX_QUEUES`] queues (32 bytes
//! an entry: 64 MiB at most). Queues past that bound, older offsets, and every read after a
//! restart or a snapshot install until new entries arrive are served from RocksDB, which
//! always holds the same entries.

use std::collections::VecDeque;

use super::queue_map::QueueMap;
use super::records::CqEntry;

/// Entries kept per queue: at 100k messages/s over 8 queues, the last ~80 ms.
pub const TAIL_ENTRIES: usize = 1024;

/// Queues that get a tail; further queues are read from RocksDB only.
pub const MAX_QUEUES: usize = 2048;

#[derive(Debug, Default)]
pub struct CqTails {
    queues: QueueMap<Tail>,
    held: usize,
}

/// Entries of offsets `first, first + 1, …` of one queue.
#[derive(Debug, Default)]
struct Tail {
    first: u64,
    entries: VecDeque<CqEntry>,
}

impl Tail {
    fn end(&self) -> u64 {
        self.first + self.entries.len() as u64
    }
}

impl CqTails {
    /// Records the entries written from offset `first` on of a queue. A `first` that does
    /// not follow the tail's last entry starts the tail afresh.
    pub fn push(&mut self, topic: &str, queue_id: u32, first: u64, entries: &[CqEntry]) {
        if entries.is_empty() {
            return;
        }
        if self.queues.get(topic, queue_id).is_none() {
            if self.held >= MAX_QUEUES {
                return;
            }
            self.held += 1;
        }
        let tail = self.queues.entry(topic, queue_id, Tail::default);
        if tail.end() != first {
            tail.entries.clear();
            tail.first = first;
        }
        // Only the newest TAIL_ENTRIES of a long run can stay.
        let skip = entries.len().saturating_sub(TAIL_ENTRIES);
        let kept = &entries[skip..];
        let over = (tail.entries.len() + kept.len()).saturating_sub(TAIL_ENTRIES);
        if over >= tail.entries.len() {
            tail.entries.clear();
            tail.first = first + skip as u64;
        } else {
            tail.entries.drain(..over);
            tail.first += over as u64;
        }
        tail.entries.extend(kept.iter().copied());
    }

    /// Forgets every queue of a deleted topic.
    pub fn remove_topic(&mut self, topic: &str) {
        if let Some(queues) = self.queues.remove_topic(topic) {
            self.held -= queues.len();
        }
    }

    /// Entries of offsets `from, from + 1, …`, at most `max`, ending at the tail's end;
    /// `None` when the tail does not hold `from` (read the database instead).
    pub fn read(&self, topic: &str, queue_id: u32, from: u64, max: usize) -> Option<Vec<CqEntry>> {
        let tail = self.queues.get(topic, queue_id)?;
        if from < tail.first || from >= tail.end() {
            return None;
        }
        let skip = usize::try_from(from - tail.first).ok()?;
        Some(tail.entries.iter().skip(skip).take(max).copied().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(log_index: u64) -> CqEntry {
        CqEntry {
            log_index,
            slot: 0,
            size: 100,
            tag_hash: 0,
            store_time_ms: 1,
        }
    }

    fn indexes(v: Option<Vec<CqEntry>>) -> Option<Vec<u64>> {
        v.map(|v| v.into_iter().map(|e| e.log_index).collect())
    }

    #[test]
    fn reads_inside_the_tail_and_refuses_outside_it() {
        let mut t = CqTails::default();
        for o in 5..10 {
            t.push("a", 1, o, &[entry(o * 10)]);
        }
        assert_eq!(indexes(t.read("a", 1, 5, 2)), Some(vec![50, 60]));
        assert_eq!(
            indexes(t.read("a", 1, 8, 100)),
            Some(vec![80, 90]),
            "ends at the tail's end"
        );
        assert_eq!(t.read("a", 1, 4, 1), None, "before the tail");
        assert_eq!(
            t.read("a", 1, 10, 1),
            None,
            "at the end: the database may hold more"
        );
        assert_eq!(t.read("a", 2, 5, 1), None, "another queue");
        assert_eq!(t.read("b", 1, 5, 1), None, "another topic");
    }

    #[test]
    fn keeps_the_newest_entries_only() {
        let mut t = CqTails::default();
        let n = TAIL_ENTRIES as u64 + 10;
        for o in 0..n {
            t.push("a", 0, o, &[entry(o)]);
        }
        assert_eq!(t.read("a", 0, 9, 1), None);
        assert_eq!(indexes(t.read("a", 0, 10, 1)), Some(vec![10]));
        assert_eq!(indexes(t.read("a", 0, n - 1, 5)), Some(vec![n - 1]));
    }

    #[test]
    fn runs_keep_the_newest_entries_of_the_queue() {
        let run = |from: u64, n: u64| (from..from + n).map(entry).collect::<Vec<_>>();
        let t_len = TAIL_ENTRIES as u64;
        let mut t = CqTails::default();
        t.push("a", 0, 0, &run(0, 10));
        t.push("a", 0, 10, &run(10, t_len - 4));
        assert_eq!(t.read("a", 0, 5, 1), None, "pushed out by the second run");
        assert_eq!(indexes(t.read("a", 0, 6, 2)), Some(vec![6, 7]));
        t.push("a", 0, t_len + 6, &run(t_len + 6, t_len + 3));
        assert_eq!(
            t.read("a", 0, t_len + 8, 1),
            None,
            "a run longer than the tail keeps its end"
        );
        let end = 2 * t_len + 9;
        assert_eq!(indexes(t.read("a", 0, t_len + 9, 1)), Some(vec![t_len + 9]));
        assert_eq!(indexes(t.read("a", 0, end - 1, 5)), Some(vec![end - 1]));
        t.push("a", 0, end + 5, &run(end + 5, 2));
        assert_eq!(t.read("a", 0, end - 1, 1), None, "a gap starts afresh");
        assert_eq!(indexes(t.read("a", 0, end + 5, 9)), Some(vec![end + 5, end + 6]));
    }

    #[test]
    fn a_gap_starts_the_tail_afresh() {
        let mut t = CqTails::default();
        t.push("a", 0, 0, &[entry(0)]);
        t.push("a", 0, 1, &[entry(1)]);
        t.push("a", 0, 7, &[entry(7)]);
        assert_eq!(t.read("a", 0, 1, 1), None, "entries before the gap are gone");
        assert_eq!(indexes(t.read("a", 0, 7, 3)), Some(vec![7]));
    }

    #[test]
    fn a_deleted_topic_loses_its_tails_and_frees_their_places() {
        let mut t = CqTails::default();
        for q in 0..MAX_QUEUES as u32 {
            t.push("a", q, 0, &[entry(1)]);
        }
        t.push("b", 0, 0, &[entry(2)]);
        assert_eq!(t.read("b", 0, 0, 1), None, "over the bound: not held");
        t.remove_topic("a");
        assert_eq!(t.read("a", 0, 0, 1), None);
        t.push("b", 0, 0, &[entry(2)]);
        assert_eq!(indexes(t.read("b", 0, 0, 1)), Some(vec![2]));
    }
}
