//! The commit log: appends with group commit, reads by index, truncation and purge.

use std::fs::File;
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
use crate::record::HEADER_LEN;
use crate::record::RecordMeta;
use crate::segment;
use crate::segment::Segment;
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

pub(crate) fn read_lock<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

fn write_lock<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
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
            check_order(next, last_term, &m)?;
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
}

/// Whether an entry with `m` may follow the log's last entry: its index is `next` (any,
/// for an empty log, but never `u64::MAX`) and its term is not below `last_term`.
fn check_order(next: Option<u64>, last_term: u64, m: &RecordMeta) -> Result<()> {
    if next.is_some_and(|n| m.index != n) || m.index == u64::MAX {
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::EntryKind;

    fn meta(index: u64, term: u64) -> RecordMeta {
        RecordMeta {
            index,
            term,
            leader: 1,
            kind: EntryKind::Normal,
        }
    }

    #[test]
    fn an_entry_follows_the_last_one_without_a_gap_or_an_older_term() {
        assert!(check_order(Some(5), 2, &meta(5, 2)).is_ok());
        assert!(check_order(Some(5), 2, &meta(5, 3)).is_ok());
        assert!(
            check_order(None, 0, &meta(42, 1)).is_ok(),
            "an empty log takes any index"
        );
        assert!(matches!(
            check_order(Some(5), 2, &meta(6, 2)),
            Err(LogError::OutOfOrder { expected: 5, got: 6 })
        ));
        assert!(matches!(
            check_order(Some(5), 2, &meta(4, 2)),
            Err(LogError::OutOfOrder { expected: 5, got: 4 })
        ));
        assert!(matches!(
            check_order(None, 0, &meta(u64::MAX, 1)),
            Err(LogError::OutOfOrder { got: u64::MAX, .. })
        ));
        assert!(matches!(
            check_order(Some(5), 3, &meta(5, 2)),
            Err(LogError::TermRegression {
                index: 5,
                term: 2,
                last_term: 3
            })
        ));
    }
}
