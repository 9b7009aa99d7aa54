//! Keeping the log's share of the page cache bounded.
//!
//! Every byte appended to a segment lands in a page-cache page. Left alone, the page cache
//! grows with the log until memory is full, and each new page is one the kernel has to
//! find, and (in a virtual machine that hands free memory back to its host) one the host
//! has to back again on first touch. On the machine of `docs/BENCHMARKS.md` that first
//! touch cost more kernel CPU than the write itself: writing 2 GiB in 1 MiB fdatasync'd
//! appends took 2.2–6.9 s of system time, against 0.6–0.8 s when the pages more than
//! 64 MiB behind the end were dropped as it went, so that the same pages came back
//! (`scripts/page_cache_probe.py`).
//!
//! So once data is durable, the sync thread drops the pages of everything but the newest
//! [`crate::LogConfig::page_cache_window`] bytes of the log (`POSIX_FADV_DONTNEED`, which
//! only drops clean pages: it never loses data). Readers of the recent tail (replication,
//! apply, consumers near the end) find it in the page cache, and in the log's own read
//! cache; readers further behind read from the disk.
//!
//! [`Trim`] decides what to drop: plain state fed the durable end of each file, tested
//! without files.

use std::fs::File;
use std::sync::Arc;

/// Ranges are cut at page boundaries; the kernel keeps partial pages anyway.
const PAGE: u64 = 4096;
/// Smallest range worth a syscall in the newest file (older files are dropped whole).
const MIN_DROP: u64 = 4 << 20;
/// Most files tracked; older ones are dropped whole and forgotten.
const MAX_FILES: usize = 8;

/// A file as the trimmer knows it: by identity, not by content.
#[derive(Debug, Clone)]
pub(crate) struct FileRef(pub Arc<File>);

impl PartialEq for FileRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

#[derive(Debug)]
struct Tracked<F> {
    file: F,
    /// Pages before this offset were dropped already.
    dropped: u64,
    /// Where the durable data of the file ends.
    end: u64,
}

/// Which ranges of which files to drop from the page cache, given `window` bytes to keep.
#[derive(Debug)]
pub(crate) struct Trim<F> {
    window: u64,
    /// Files in the order they were first synced (log order), oldest first.
    files: Vec<Tracked<F>>,
}

/// `(file, start, end)`: drop the pages of `[start, end)`.
pub(crate) type DropRange<F> = (F, u64, u64);

impl<F: Clone + PartialEq> Trim<F> {
    /// Keeps the newest `window` bytes; `window == 0` keeps everything (never drops).
    pub fn new(window: u64) -> Self {
        Self {
            window,
            files: Vec::new(),
        }
    }

    /// Records that `file` is durable up to `end` and returns the ranges to drop now.
    pub fn synced(&mut self, file: &F, end: u64) -> Vec<DropRange<F>> {
        if self.window == 0 {
            return Vec::new();
        }
        let mut drops = Vec::new();
        match self.files.iter().position(|t| t.file == *file) {
            Some(i) => {
                // Appends go in log order: writing to an earlier file again means the files
                // after it were truncated away, and a truncation may move the end back.
                for gone in self.files.drain(i + 1..) {
                    if gone.dropped < gone.end {
                        drops.push((gone.file, gone.dropped, gone.end));
                    }
                }
                let t = &mut self.files[i];
                t.end = end;
                t.dropped = t.dropped.min(end);
            }
            None => self.files.push(Tracked {
                file: file.clone(),
                dropped: 0,
                end,
            }),
        }
        drops.extend(self.plan());
        drops
    }

    fn plan(&mut self) -> Vec<DropRange<F>> {
        let mut drops = Vec::new();
        let mut keep = self.window;
        let Some(newest) = self.files.len().checked_sub(1) else {
            return drops;
        };
        // Beyond MAX_FILES the oldest go whole, window or not.
        let too_old = self.files.len().saturating_sub(MAX_FILES);
        for (i, t) in self.files.iter_mut().enumerate().rev() {
            let kept_here = if i < too_old { 0 } else { keep.min(t.end) };
            keep -= kept_here;
            let mut target = t.end - kept_here;
            if target < t.end {
                target -= target % PAGE;
            }
            let worth = if i == newest { MIN_DROP } else { 1 };
            if target >= t.dropped + worth {
                drops.push((t.file.clone(), t.dropped, target));
                t.dropped = target;
            }
        }
        // Forget older files whose pages are all dropped.
        let mut i = 0;
        self.files.retain(|t| {
            let keep = i == newest || t.dropped < t.end;
            i += 1;
            keep
        });
        drops.reverse();
        drops
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.files.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn window_zero_never_drops() {
        let mut t = Trim::new(0);
        assert!(t.synced(&1, 10 << 30).is_empty());
    }

    #[test]
    fn drops_all_but_the_window_in_chunks_of_at_least_min_drop() {
        let mut t = Trim::new(64 * MIB);
        assert!(t.synced(&1, 64 * MIB).is_empty(), "all of it is in the window");
        assert!(
            t.synced(&1, 66 * MIB).is_empty(),
            "2 MiB beyond: not worth a call yet"
        );
        assert_eq!(t.synced(&1, 68 * MIB), vec![(1, 0, 4 * MIB)]);
        assert!(t.synced(&1, 70 * MIB).is_empty());
        assert_eq!(t.synced(&1, 72 * MIB + 100), vec![(1, 4 * MIB, 8 * MIB)]);
    }

    #[test]
    fn ranges_end_on_a_page_boundary() {
        let mut t = Trim::new(MIB);
        let d = t.synced(&1, 6 * MIB + 5000);
        assert_eq!(d, vec![(1, 0, 5 * MIB + 4096)]);
    }

    #[test]
    fn the_window_spans_files_and_older_files_go_whole() {
        let mut t = Trim::new(64 * MIB);
        assert_eq!(t.synced(&1, 100 * MIB), vec![(1, 0, 36 * MIB)]);
        // A new segment: 10 MiB in it, so 54 MiB of the old one stay.
        assert_eq!(t.synced(&2, 10 * MIB), vec![(1, 36 * MIB, 46 * MIB)]);
        // The new one fills the window: the old one goes whole and is forgotten.
        assert_eq!(t.synced(&2, 64 * MIB), vec![(1, 46 * MIB, 100 * MIB)]);
        assert_eq!(t.tracked(), 1);
        assert_eq!(t.synced(&2, 70 * MIB), vec![(2, 0, 6 * MIB)]);
    }

    #[test]
    fn a_truncation_moves_the_end_back() {
        let mut t = Trim::new(MIB);
        assert_eq!(t.synced(&1, 20 * MIB), vec![(1, 0, 19 * MIB)]);
        assert!(t.synced(&1, 10 * MIB).is_empty(), "nothing new to drop");
        // Dropping resumes from the truncation point once the end passes it again.
        assert_eq!(t.synced(&1, 16 * MIB), vec![(1, 10 * MIB, 15 * MIB)]);
    }

    #[test]
    fn syncing_an_earlier_file_again_forgets_the_later_ones() {
        let mut t = Trim::new(64 * MIB);
        assert!(t.synced(&1, 50 * MIB).is_empty());
        assert!(t.synced(&2, 10 * MIB).is_empty());
        // Segment 2 was truncated away and appends continue in segment 1.
        assert_eq!(t.synced(&1, 40 * MIB), vec![(2, 0, 10 * MIB)]);
        assert_eq!(t.tracked(), 1);
        assert_eq!(t.synced(&1, 70 * MIB), vec![(1, 0, 6 * MIB)]);
    }

    #[test]
    fn tracks_a_bounded_number_of_files() {
        let mut t = Trim::new(u64::MAX / 2);
        for f in 0..20 {
            t.synced(&f, MIB);
        }
        assert!(t.tracked() <= MAX_FILES + 1, "tracked {}", t.tracked());
    }
}
