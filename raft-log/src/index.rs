//! The in-memory map from log index to (segment, byte offset), and the arithmetic of
//! bounds, purge and truncation over it. No I/O happens here.

use std::collections::VecDeque;

use serde::Deserialize;
use serde::Serialize;

use crate::segment::Segment;

/// Identity of one entry: its index and the leader (term, node id) that wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPos {
    pub index: u64,
    pub term: u64,
    pub leader: u64,
}

/// What the log holds right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBounds {
    /// First readable index (above the purge point).
    pub first: u64,
    /// Index the next append must use; `None` while the log has never held or purged
    /// anything, when any starting index is accepted.
    pub next: Option<u64>,
    /// Last entry, or the purge point when everything was purged.
    pub last: Option<LogPos>,
    pub purged: Option<LogPos>,
}

/// Segments in index order; none of them is empty.
#[derive(Debug, Default)]
pub(crate) struct Index {
    pub segments: VecDeque<Segment>,
    pub purged: Option<LogPos>,
}

impl Index {
    pub fn bounds(&self) -> LogBounds {
        let purged_next = self.purged.map(|p| p.index + 1);
        let Some(back) = self.segments.back() else {
            return LogBounds {
                first: purged_next.unwrap_or(0),
                next: purged_next,
                last: self.purged,
                purged: self.purged,
            };
        };
        let next = back.next_index().max(purged_next.unwrap_or(0));
        let first = self
            .segments
            .front()
            .map_or(next, |s| s.base)
            .max(purged_next.unwrap_or(0));
        let last = match (back.last, self.purged) {
            (_, Some(p)) if p.index + 1 >= next => Some(p),
            (Some((term, leader)), _) => Some(LogPos {
                index: next - 1,
                term,
                leader,
            }),
            (None, p) => p,
        };
        LogBounds {
            first,
            next: Some(next),
            last,
            purged: self.purged,
        }
    }

    /// Position in `segments` of the segment holding `index`, if it is stored.
    pub fn find(&self, index: u64) -> Option<usize> {
        let i = self.segments.partition_point(|s| s.base <= index);
        let pos = i.checked_sub(1)?;
        (index < self.segments[pos].next_index()).then_some(pos)
    }

    /// How many leading segments hold only entries at or below `upto`.
    pub fn purgeable(&self, upto: u64) -> usize {
        self.segments
            .iter()
            .take_while(|s| s.next_index() <= upto + 1)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::sync::Arc;

    use super::*;

    fn seg(base: u64, n: usize, term: u64) -> Segment {
        let file = Arc::new(File::open("/dev/null").expect("/dev/null"));
        let mut s = Segment {
            base,
            path: "x".into(),
            file,
            offsets: Vec::new(),
            end: 64,
            last: None,
        };
        s.push_records(&vec![100; n], (term, 1));
        s
    }

    #[test]
    fn empty_and_unanchored() {
        let ix = Index::default();
        let b = ix.bounds();
        assert_eq!((b.first, b.next, b.last), (0, None, None));
    }

    #[test]
    fn bounds_with_purge_inside_and_beyond() {
        let mut ix = Index::default();
        ix.segments.push_back(seg(1, 10, 2));
        ix.segments.push_back(seg(11, 5, 3));
        let b = ix.bounds();
        assert_eq!((b.first, b.next), (1, Some(16)));
        assert_eq!(
            b.last,
            Some(LogPos {
                index: 15,
                term: 3,
                leader: 1
            })
        );

        ix.purged = Some(LogPos {
            index: 4,
            term: 2,
            leader: 1,
        });
        assert_eq!(ix.bounds().first, 5);
        assert_eq!(ix.purgeable(4), 0);
        assert_eq!(ix.purgeable(10), 1);
        assert_eq!(ix.purgeable(15), 2);

        let far = LogPos {
            index: 20,
            term: 4,
            leader: 1,
        };
        ix.purged = Some(far);
        let b = ix.bounds();
        assert_eq!(b.last, Some(far));
    }

    #[test]
    fn find_maps_index_to_segment() {
        let mut ix = Index::default();
        ix.segments.push_back(seg(1, 10, 1));
        ix.segments.push_back(seg(11, 5, 1));
        assert_eq!(ix.find(0), None);
        assert_eq!(ix.find(1), Some(0));
        assert_eq!(ix.find(10), Some(0));
        assert_eq!(ix.find(11), Some(1));
        assert_eq!(ix.find(15), Some(1));
        assert_eq!(ix.find(16), None);
    }
}
