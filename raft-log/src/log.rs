//! The commit log: appends with group commit, reads by index, truncation and purge.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::RwLock;
use std::sync::RwLockReadGuard;
use std::sync::RwLockWriteGuard;

use bytes::Bytes;
use serde::Deserialize;
use serde::Serialize;

use crate::config::LogConfig;
use crate::error::Corruption;
use crate::error::LogError;
use crate::error::Result;
use crate::flusher::FlushCallback;
use crate::flusher::Flusher;
use crate::flusher::Poison;
use crate::fsutil;
use crate::index::Index;
use crate::index::LogBounds;
use crate::index::LogPos;
use crate::meta::MetaFile;
use crate::record;
use crate::record::EntryKind;
use crate::record::HEADER_LEN;
use crate::record::RecordMeta;
use crate::segment;
use crate::segment::Segment;
use crate::slots;
use crate::staging;
use crate::synced;

/// Something that can be appended: its identity plus a way to write its payload.
pub trait LogRecord {
    fn meta(&self) -> RecordMeta;
    fn write_payload(&self, out: &mut Vec<u8>);
    /// The bytes [`Self::write_payload`] writes, if the record already holds them as one
    /// shared buffer: the read cache then keeps the entry from its append on, without a
    /// copy, and the first read of it (a follower's apply) finds it there.
    fn shared_payload(&self) -> Option<Bytes> {
        None
    }
}

impl<T: AsRef<[u8]>> LogRecord for (RecordMeta, T) {
    fn meta(&self) -> RecordMeta {
        self.0
    }
    fn write_payload(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.1.as_ref());
    }
}

/// An entry as stored: identity and payload (a zero-copy slice of the read buffer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    pub meta: RecordMeta,
    pub payload: Bytes,
}

/// The small durable state kept beside the segments.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct DurableMeta {
    pub vote: Option<Vec<u8>>,
    pub purged: Option<LogPos>,
    pub epoch: u64,
    /// Set when recovery found durable entries lost from this index on; cleared once the
    /// node holds everything committed again. Kept here so a restart before the repair
    /// does not forget it (the damage itself is gone after the first recovery's cut).
    #[serde(default)]
    pub vote_fence: Option<u64>,
}

pub(crate) struct Durable {
    pub file: MetaFile,
    pub state: DurableMeta,
}

pub(crate) struct Writer {
    pub epoch: u64,
    pub buf: Vec<u8>,
    pub recs: Vec<(RecordMeta, u32)>,
}

pub(crate) struct Inner {
    pub dir: PathBuf,
    pub config: LogConfig,
    pub writer: Mutex<Writer>,
    pub index: RwLock<Index>,
    pub poison: Arc<Poison>,
    pub meta: Mutex<Durable>,
    pub committed: Mutex<(MetaFile, Option<Vec<u8>>)>,
    pub flusher: Flusher,
    pub read_cache: crate::read_cache::ReadCache,
    pub _lock: File,
}

/// A handle to an open commit log. Clones share the log; any number of them may read
/// while one appends.
#[derive(Clone)]
pub struct CommitLog {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for CommitLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitLog")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read_lock<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

fn write_lock<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

/// A byte range of one segment file holding consecutive records from `first` on.
struct Chunk {
    file: Arc<File>,
    path: PathBuf,
    start: u64,
    end: u64,
    first: u64,
}

impl CommitLog {
    /// Directory holding the segments and metadata.
    pub fn dir(&self) -> &std::path::Path {
        &self.inner.dir
    }

    /// Current first/next index, last entry and purge point.
    pub fn bounds(&self) -> LogBounds {
        read_lock(&self.inner.index).bounds()
    }

    /// Group-commit counters since open.
    pub fn flush_stats(&self) -> crate::flusher::FlushStats {
        self.inner.flusher.stats()
    }

    /// Fails if an earlier I/O error poisoned the log.
    pub fn check(&self) -> Result<()> {
        self.inner.poison.check()
    }

    /// Appends `entries` (which must continue the log without gaps and with non-decreasing
    /// terms) and calls `done` once they are durable. Written data is readable at once.
    pub fn append<R: LogRecord>(
        &self,
        entries: impl IntoIterator<Item = R>,
        done: FlushCallback,
    ) -> Result<()> {
        let mut w = lock(&self.inner.writer);
        self.inner.poison.check()?;
        let w = &mut *w;
        w.recs.clear();
        // Appends, truncations and purges all hold the writer lock: nothing removes
        // entries between this and the insert below.
        let generation = self.inner.read_cache.generation();
        let mut shared = Vec::new();
        let (bounds, tail) = {
            let ix = read_lock(&self.inner.index);
            let tail = ix.segments.back().map_or(segment::SEGMENT_HEADER_LEN, |s| s.end);
            (ix.bounds(), tail)
        };
        // Encoded where the records will most likely go: the active segment's end.
        let start = staging::lay_out(&mut w.buf, tail, 0);
        let mut next = bounds.next;
        let mut last_term = bounds.last.map_or(0, |p| p.term);
        let max = self.inner.config.max_record_size as usize;
        for e in entries {
            let m = e.meta();
            if let Some(n) = next
                && m.index != n
            {
                return Err(LogError::OutOfOrder {
                    expected: n,
                    got: m.index,
                });
            }
            if m.index == u64::MAX {
                return Err(LogError::OutOfOrder {
                    expected: next.unwrap_or(0),
                    got: m.index,
                });
            }
            if m.term < last_term {
                return Err(LogError::TermRegression {
                    index: m.index,
                    term: m.term,
                    last_term,
                });
            }
            let start = record::begin(&mut w.buf, &m, w.epoch);
            e.write_payload(&mut w.buf);
            let len = record::finish(&mut w.buf, start);
            if len > max {
                return Err(LogError::TooLarge {
                    size: len,
                    limit: max,
                });
            }
            w.recs.push((m, (HEADER_LEN + len) as u32));
            if let Some(payload) = e.shared_payload() {
                shared.push(StoredEntry { meta: m, payload });
            }
            next = Some(m.index + 1);
            last_term = m.term;
        }
        if let Err(e) = self.stage_runs(w, start) {
            self.inner.poison.set(e.to_string());
            return Err(e);
        }
        self.inner.read_cache.insert(generation, &shared);
        self.inner.flusher.enqueue(done);
        Ok(())
    }

    /// Stages the records encoded in `w.buf[start..]` for the flusher, starting new
    /// segments where the active one is full, and publishes them in the index (readable
    /// from then on). Records that all go to one run are handed over in their buffer.
    fn stage_runs(&self, w: &mut Writer, start: usize) -> Result<()> {
        let seg_size = self.inner.config.segment_size;
        let Writer { buf, recs, .. } = w;
        let (mut i, mut off) = (0usize, start);
        while i < recs.len() {
            let active = {
                let ix = read_lock(&self.inner.index);
                ix.segments
                    .back()
                    .filter(|s| s.end + u64::from(recs[i].1) <= seg_size)
                    .map(|s| (s.file.clone(), s.path.clone(), s.end))
            };
            let (file, path, end, fresh) = match active {
                Some((f, p, e)) => (f, p, e, None),
                None => {
                    let s = self.create_segment(recs[i].0.index)?;
                    (s.file.clone(), s.path.clone(), s.end, Some(s))
                }
            };
            let mut j = i + 1;
            let mut bytes = u64::from(recs[i].1);
            while j < recs.len() && end + bytes + u64::from(recs[j].1) <= seg_size {
                bytes += u64::from(recs[j].1);
                j += 1;
            }
            let flusher = &self.inner.flusher;
            if i == 0 && j == recs.len() {
                *buf = flusher.stage_encoded(&file, &path, end, std::mem::take(buf), start);
            } else {
                flusher.stage(&file, &path, end, &buf[off..off + bytes as usize]);
            }
            let lens: Vec<u32> = recs[i..j].iter().map(|r| r.1).collect();
            let lastm = recs[j - 1].0;
            let mut ix = write_lock(&self.inner.index);
            if let Some(s) = fresh {
                if let Some(sealed) = ix.segments.back() {
                    fsutil::advise_random(&sealed.file, false);
                }
                ix.segments.push_back(s);
            }
            if let Some(s) = ix.segments.back_mut() {
                s.push_records(&lens, (lastm.term, lastm.leader));
            }
            drop(ix);
            off += bytes as usize;
            i = j;
        }
        Ok(())
    }

    fn create_segment(&self, base: u64) -> Result<Segment> {
        let cfg = &self.inner.config;
        let s = Segment::create(&self.inner.dir, base, cfg.segment_size, cfg.preallocate)?;
        fsutil::sync_dir(&self.inner.dir).map_err(|e| LogError::io("fsync directory", &self.inner.dir, e))?;
        if cfg.track_synced {
            synced::record(&s.path, segment::SEGMENT_HEADER_LEN)
                .map_err(|e| LogError::io("record synced length", &s.path, e))?;
        }
        tracing::debug!(base, path = %s.path.display(), "created segment");
        Ok(s)
    }

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
