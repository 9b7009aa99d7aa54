//! The commit log's read path: entries by index range (read cache, staged bytes, then
//! the segment files, every record's checksum verified) and single slots of an entry.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::Corruption;
use crate::error::LogError;
use crate::error::Result;
use crate::log::CommitLog;
use crate::log::StoredEntry;
use crate::log::read_lock;
use crate::record;
use crate::record::EntryKind;
use crate::record::HEADER_LEN;
use crate::slots;

/// A byte range of one segment file holding consecutive records from `first` on.
struct Chunk {
    file: Arc<File>,
    path: PathBuf,
    start: u64,
    end: u64,
    first: u64,
}

impl CommitLog {
    /// Reads entries `from..to` (end exclusive). Every record's checksum is verified when
    /// it is read from the file; entries read recently come from the read cache (see
    /// `read_cache.rs`), and what is read from the file goes into it.
    pub fn read(&self, from: u64, to: u64) -> Result<Vec<StoredEntry>> {
        self.inner.poison.check()?;
        if from >= to {
            return Ok(Vec::new());
        }
        let cache = &self.inner.read_cache;
        let mut out = cache.get_run(from, to);
        let rest = from + out.len() as u64;
        if rest == to {
            return Ok(out);
        }
        let generation = cache.generation();
        let read = match self.read_once(rest, to) {
            // A truncation may have rewritten the bytes between lookup and read; look again.
            Err(LogError::Corrupt { .. }) => self.read_once(rest, to),
            r => r,
        }?;
        cache.insert(generation, &read);
        out.extend(read);
        Ok(out)
    }

    fn read_once(&self, from: u64, to: u64) -> Result<Vec<StoredEntry>> {
        let chunks = self.locate(from, to)?;
        let mut out = Vec::with_capacity((to - from) as usize);
        for c in chunks {
            // Staged bytes first: they leave the staging only once they are in the file.
            // Only what the staging did not hold is read from the file: the newest entries
            // (what replication asks for) are often all still staged, and a read of their
            // not yet written pages would make the kernel zero-fill pages for nothing.
            let mut buf = vec![0u8; (c.end - c.start) as usize];
            let staged = self.inner.flusher.overlay_into(&c.file, c.start, &mut buf);
            for gap in gaps(c.start..c.end, staged) {
                let at = (gap.start - c.start) as usize..(gap.end - c.start) as usize;
                read_upto(&c.file, &mut buf[at], gap.start)
                    .map_err(|e| LogError::io("read segment", &c.path, e))?;
            }
            parse_chunk(Bytes::from(buf), c.first, &c.path, &mut out)?;
        }
        Ok(out)
    }

    /// Maps `from..to` to byte ranges of segment files.
    fn locate(&self, from: u64, to: u64) -> Result<Vec<Chunk>> {
        let ix = read_lock(&self.inner.index);
        let b = ix.bounds();
        if from < b.first {
            return Err(LogError::Purged {
                index: from,
                first: b.first,
            });
        }
        if b.next.is_none_or(|n| to > n) {
            return Err(LogError::NotFound {
                index: to - 1,
                last: b.next.and_then(|n| n.checked_sub(1)),
            });
        }
        let mut chunks = Vec::new();
        let mut at = from;
        while at < to {
            let pos = ix.find(at).ok_or(LogError::NotFound {
                index: at,
                last: None,
            })?;
            let s = &ix.segments[pos];
            let last = (s.next_index() - 1).min(to - 1);
            let (start, end) = s.byte_range(at, last);
            chunks.push(Chunk {
                file: s.file.clone(),
                path: s.path.clone(),
                start,
                end,
                first: at,
            });
            at = last + 1;
        }
        Ok(chunks)
    }

    /// Reads slot `slot` of the normal entry at `index` (e.g. one message of a batch).
    pub fn read_slot(&self, index: u64, slot: u32) -> Result<Bytes> {
        let end = index
            .checked_add(1)
            .ok_or(LogError::NotFound { index, last: None })?;
        self.inner.poison.check()?;
        // A cache hit is every consumer read of an entry's later messages: no vector for it.
        let entry = match self.inner.read_cache.get(index) {
            Some(e) => e,
            None => self
                .read(index, end)?
                .pop()
                .ok_or(LogError::NotFound { index, last: None })?,
        };
        self.slot_of(index, entry, slot)
    }

    /// Slot `slot` of the entry at `index` if the read cache holds that entry; `None`
    /// otherwise. Never touches a file, so a caller that must not block (an async task)
    /// can try it first and hand only the misses to a thread that may wait for the disk.
    pub fn read_slot_cached(&self, index: u64, slot: u32) -> Result<Option<Bytes>> {
        self.inner.poison.check()?;
        match self.inner.read_cache.get(index) {
            Some(entry) => self.slot_of(index, entry, slot).map(Some),
            None => Ok(None),
        }
    }

    fn slot_of(&self, index: u64, entry: StoredEntry, slot: u32) -> Result<Bytes> {
        if entry.meta.kind != EntryKind::Normal {
            return Err(LogError::NoSuchSlot {
                index,
                slot,
                count: 0,
            });
        }
        let payload = entry.payload;
        let corrupt = |what| LogError::Corrupt {
            index,
            path: self.inner.dir.clone(),
            what,
        };
        match slots::get(&payload, slot as usize).map_err(corrupt)? {
            Some(b) => Ok(b),
            None => {
                let count = slots::count(&payload).map_err(corrupt)? as u32;
                Err(LogError::NoSuchSlot { index, slot, count })
            }
        }
    }
}

/// The parts of `whole` that none of `filled` covers, in order.
fn gaps(whole: Range<u64>, mut filled: Vec<Range<u64>>) -> Vec<Range<u64>> {
    filled.sort_by_key(|r| r.start);
    let mut out = Vec::new();
    let mut at = whole.start;
    for r in filled {
        if at >= whole.end {
            break;
        }
        if r.start > at {
            out.push(at..r.start.min(whole.end));
        }
        at = at.max(r.end);
    }
    if at < whole.end {
        out.push(at..whole.end);
    }
    out
}

/// Reads as much of `buf` as the file holds at `offset`; the rest stays zero (the file
/// ends early, which parsing then reports as damage).
fn read_upto(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Splits a chunk of consecutive records starting at index `first`, verifying each: its
/// checksum, its index, and that terms do not decrease (a read racing a truncation and a
/// re-append could otherwise mix two incarnations of the tail).
fn parse_chunk(buf: Bytes, first: u64, path: &std::path::Path, out: &mut Vec<StoredEntry>) -> Result<()> {
    let mut at = 0usize;
    let mut index = first;
    let mut prev_term = 0;
    while at < buf.len() {
        let corrupt = |what| LogError::Corrupt {
            index,
            path: path.to_path_buf(),
            what,
        };
        let room = (buf.len() - at).saturating_sub(HEADER_LEN).min(u32::MAX as usize) as u32;
        let h = match record::decode_header(&buf[at..], room) {
            Ok(h) => h,
            Err(record::HeaderError::Corrupt(c)) => return Err(corrupt(c)),
            Err(record::HeaderError::Zeroed) => return Err(corrupt(Corruption::BadMagic)),
        };
        record::verify(&h, &buf[at..]).map_err(corrupt)?;
        if h.meta.index != index {
            return Err(corrupt(Corruption::IndexGap {
                expected: index,
                found: h.meta.index,
            }));
        }
        if h.meta.term < prev_term {
            return Err(corrupt(Corruption::TermDecrease {
                prev: prev_term,
                found: h.meta.term,
            }));
        }
        prev_term = h.meta.term;
        let payload = buf.slice(at + HEADER_LEN..at + h.record_len());
        out.push(StoredEntry {
            meta: h.meta,
            payload,
        });
        at += h.record_len();
        index += 1;
    }
    Ok(())
}

#[cfg(test)]
#[expect(clippy::single_range_in_vec_init, reason = "lists of ranges, some of one")]
mod tests {
    use super::gaps;

    #[test]
    fn gaps_are_what_the_staging_did_not_fill() {
        assert_eq!(gaps(0..100, vec![]), vec![0..100]);
        assert_eq!(gaps(0..100, vec![0..100]), vec![]);
        // The usual case: the newest bytes are staged, the older ones are in the file.
        assert_eq!(gaps(0..100, vec![60..100]), vec![0..60]);
        // In flight and staged runs side by side, given out of order and overlapping.
        assert_eq!(gaps(10..100, vec![70..100, 40..75, 20..30]), vec![10..20, 30..40]);
        assert_eq!(gaps(10..100, vec![10..20, 50..60]), vec![20..50, 60..100]);
    }
}
