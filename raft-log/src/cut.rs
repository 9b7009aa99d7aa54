//! Removing entries: truncation of the tail (conflicting entries) and purge of the head
//! (entries already applied and snapshotted).
//!
//! Truncation is crash-safe in this order: (1) a new write epoch is persisted, (2) the
//! removed records of the segment holding the cut are zeroed and fsynced, so a scan stops
//! there, (3) later segments are unlinked last-first, the directory fsynced after each. A
//! crash during (3) leaves a prefix of them that recovery drops (an erased first record or
//! an index gap stops the scan); stale records after the cut inside the segment carry an
//! older epoch than anything appended later, so they never come back. Any failure after
//! (2) poisons the log.

use std::path::PathBuf;

use crate::error::LogError;
use crate::error::Result;
use crate::fsutil;
use crate::index::LogPos;
use crate::log::CommitLog;
use crate::log::lock;
use crate::segment;
use crate::synced;

impl CommitLog {
    /// Removes every entry after `after` (all entries if `None`). Durable on return.
    pub fn truncate_after(&self, after: Option<u64>) -> Result<()> {
        let mut w = lock(&self.inner.writer);
        self.inner.poison.check()?;
        // Staged records must be in the file before it is cut.
        self.inner.flusher.drain()?;
        let b = self.bounds();
        let Some(next) = b.next else { return Ok(()) };
        let cut = match after {
            Some(a) if a.saturating_add(1) < b.first => {
                return Err(LogError::BelowPurged {
                    after: a,
                    purged: b.first.saturating_sub(1),
                });
            }
            Some(a) => a.saturating_add(1),
            None => b.first,
        };
        if cut >= next {
            return Ok(());
        }
        self.inner.read_cache.remove_from(cut);
        w.epoch = self.bump_epoch()?;
        let (file, path, offset, pos) = {
            let ix = self.inner.index.read().unwrap_or_else(|p| p.into_inner());
            let pos = ix.find(cut).ok_or(LogError::NotFound {
                index: cut,
                last: Some(next - 1),
            })?;
            let s = &ix.segments[pos];
            let off = u64::from(s.offsets[(cut - s.base) as usize]);
            (s.file.clone(), s.path.clone(), (off, s.end - off), pos)
        };
        // From the erase on, a failure leaves disk and index disagreeing: poison.
        let r = segment::erase_at(&file, &path, offset.0, offset.1)
            .and_then(|()| self.lower_synced(&path, offset.0))
            .and_then(|()| self.forget_from(cut, pos))
            .and_then(|doomed| self.unlink_truncated(&doomed).map(|()| doomed));
        // Once more now that the index no longer has them: a read that started after the
        // first removal may have loaded the old entries, and must not cache them.
        self.inner.read_cache.remove_from(cut);
        let doomed = self.poison_on_err(r)?;
        tracing::info!(after = ?after, removed = next - cut, segments_removed = doomed.len(), "truncated log");
        Ok(())
    }

    /// With tracking on: the erased tail from `offset` is zeroes on disk, and what is
    /// appended there next is not durable until its own fsync.
    fn lower_synced(&self, path: &std::path::Path, offset: u64) -> Result<()> {
        if !self.inner.config.track_synced {
            return Ok(());
        }
        synced::record(path, offset).map_err(|e| LogError::io("record synced length", path, e))
    }

    /// Removes the ledger of a deleted segment (tracking only).
    fn forget_synced(&self, path: &std::path::Path) -> Result<()> {
        if !self.inner.config.track_synced {
            return Ok(());
        }
        synced::forget(path).map_err(|e| LogError::io("delete synced-length ledger", path, e))
    }

    /// Drops index entries from `cut` on; returns the segment files to delete.
    fn forget_from(&self, cut: u64, pos: usize) -> Result<Vec<PathBuf>> {
        let mut ix = self.inner.index.write().unwrap_or_else(|p| p.into_inner());
        // The segment holding the cut goes too if nothing readable stays in it.
        let only_purged = ix.purged.is_some_and(|p| p.index + 1 >= cut);
        let keep = if ix.segments[pos].base == cut || only_purged {
            pos
        } else {
            pos + 1
        };
        let doomed: Vec<PathBuf> = ix.segments.drain(keep..).map(|s| s.path).collect();
        if let Some(s) = ix.segments.back_mut()
            && s.next_index() > cut
        {
            s.forget_from(cut);
            let m = s.read_meta(cut - 1)?;
            s.last = Some((m.term, m.leader));
        }
        Ok(doomed)
    }

    /// Discards entries up to and including `upto`. The purge point is persisted first;
    /// whole segments below it are then deleted.
    pub fn purge(&self, upto: LogPos) -> Result<()> {
        let _w = lock(&self.inner.writer);
        self.inner.poison.check()?;
        // Staged records must not be written into a file after it is deleted.
        self.inner.flusher.drain()?;
        let b = self.bounds();
        if b.purged.is_some_and(|p| p.index >= upto.index) {
            return Ok(());
        }
        self.inner.read_cache.remove_upto(upto.index);
        self.persist_purged(upto)?;
        let doomed: Vec<PathBuf> = {
            let mut ix = self.inner.index.write().unwrap_or_else(|p| p.into_inner());
            ix.purged = Some(upto);
            let n = ix.purgeable(upto.index);
            ix.segments.drain(..n).map(|s| s.path).collect()
        };
        // Once more now that the index no longer has them (see truncate_after).
        self.inner.read_cache.remove_upto(upto.index);
        self.unlink_purged(&doomed)?;
        tracing::debug!(upto = upto.index, segments_removed = doomed.len(), "purged log");
        Ok(())
    }

    /// Deletes segment files after a truncation: the last first, each deletion made
    /// durable before the next, so a crash leaves a prefix of them whose first is erased
    /// (or ends before the cut), which stops the next open's scan. Any failure is an error.
    fn unlink_truncated(&self, paths: &[PathBuf]) -> Result<()> {
        let dir = &self.inner.dir;
        for p in paths.iter().rev() {
            match std::fs::remove_file(p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(LogError::io("delete truncated segment", p, e));
                }
                _ => fsutil::sync_dir(dir).map_err(|e| LogError::io("fsync directory", dir, e))?,
            }
            self.forget_synced(p)?;
        }
        Ok(())
    }

    /// Deletes segments wholly behind the purge point. One left behind is harmless: the
    /// next open skips segments below the purge point without reading them.
    fn unlink_purged(&self, paths: &[PathBuf]) -> Result<()> {
        if paths.is_empty() {
            return Ok(());
        }
        for p in paths {
            if let Err(e) = std::fs::remove_file(p)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %p.display(), error = %e, "could not delete purged segment");
            }
        }
        let r = fsutil::sync_dir(&self.inner.dir)
            .map_err(|e| LogError::io("fsync directory", &self.inner.dir, e));
        let r = r.and_then(|()| paths.iter().try_for_each(|p| self.forget_synced(p)));
        self.poison_on_err(r)
    }
}
