//! A simulated power failure, for chaos tests: throw away every byte the log had not
//! fsynced.
//!
//! Run the log with [`crate::LogConfig::track_synced`] on (a broker sets
//! `[log] track_synced = true`), kill the process with SIGKILL (its writes stay in the page
//! cache, as after any crash), then call [`cut_to_synced`] on the log directory before
//! restarting. Per file of the directory, the model is:
//! - segments: bytes up to the synced length recorded after the last data `fdatasync` (or
//!   truncation, or open) survive; everything after it reads as zeroes, as in preallocated
//!   space that was never written ([`PowerCutMode::Zero`]), or additionally as a torn page
//!   of random bytes right after the synced length when unsynced data was written there
//!   ([`PowerCutMode::Garbage`]). A segment without a synced length was created but its
//!   directory entry never fsynced: it is deleted. Deletions of segments are made durable
//!   (directory fsync) before the log reports them, so deleted files stay deleted.
//! - `meta` (vote, purge point, write epoch) is fdatasync'ed on every write and written
//!   to alternating checksummed slots: it is kept as it is.
//! - `committed` is written *without* fsync (it is advisory): it reverts to its last
//!   fsynced state, the empty file it was created as. openraft then re-learns the commit
//!   point from the state machine and the leader.
//! - `LOCK` holds no data.
//!
//! The side files themselves are not fsynced and need not be: they only have to survive
//! the SIGKILL, and the power failure is simulated afterwards, with the page cache intact.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::path::PathBuf;

use crate::damage::SplitMix;
use crate::fsutil;
use crate::recovery;
use crate::segment;
use crate::synced;

/// Size of the torn page written by [`PowerCutMode::Garbage`].
const PAGE: u64 = 4096;

/// What the bytes after the synced length of a segment become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerCutMode {
    /// Zeroes up to the end of the file.
    Zero,
    /// Where unsynced data had been written: random bytes (from `seed`) up to the end of
    /// the 4 KiB page holding the synced length, a torn write; zeroes after that.
    Garbage { seed: u64 },
}

/// What happened to one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentCut {
    pub path: PathBuf,
    /// Bytes kept (the recorded synced length, at most the file length).
    pub synced_len: u64,
    pub file_len: u64,
    /// Bytes of random garbage written after `synced_len`.
    pub garbage_len: u64,
}

/// What [`cut_to_synced`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PowerCutReport {
    /// Segments cut back to their synced length, in index order.
    pub segments: Vec<SegmentCut>,
    /// Segments deleted because their creation was never made durable.
    pub removed: Vec<PathBuf>,
    /// Synced-length files deleted because their segment is gone, or left half-written.
    pub stale_ledgers: Vec<PathBuf>,
    /// Whether the unsynced `committed` file was reset.
    pub committed_reset: bool,
}

/// Simulates a power failure on the log in `dir`, which no process may have open: every
/// byte not known durable is thrown away (see the module docs for the model). Fails with
/// `InvalidInput` if the log was not written with `track_synced`, since then nothing says
/// what was durable. Changes are left in the page cache, like the rest of the simulation.
pub fn cut_to_synced(dir: &Path, mode: PowerCutMode) -> io::Result<PowerCutReport> {
    let _lock = recovery::lock_dir(dir)?;
    if !dir.join(synced::MARKER).exists() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} was not written with track_synced: its synced lengths are unknown",
                dir.display()
            ),
        ));
    }
    let mut rng = match mode {
        PowerCutMode::Zero => None,
        PowerCutMode::Garbage { seed } => Some(SplitMix::new(seed)),
    };
    let mut report = PowerCutReport::default();
    let segments = recovery::list_segments(dir)?;
    for (_, path) in &segments {
        match synced::read(&synced::ledger_path(path))? {
            Some(len) => report.segments.push(cut_segment(path, len, rng.as_mut())?),
            None => {
                std::fs::remove_file(path)?;
                report.removed.push(path.clone());
            }
        }
    }
    report.stale_ledgers = remove_stale_ledgers(dir)?;
    report.committed_reset = reset_committed(dir)?;
    tracing::info!(dir = %dir.display(), ?report, "simulated power failure");
    Ok(report)
}

/// Cuts one segment back to `synced` bytes.
fn cut_segment(path: &Path, synced: u64, rng: Option<&mut SplitMix>) -> io::Result<SegmentCut> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let file_len = file.metadata()?.len();
    let synced_len = synced.min(file_len);
    let torn_end = ((synced_len / PAGE + 1) * PAGE).min(file_len);
    let mut garbage_len = 0;
    if let Some(rng) = rng {
        let mut page = vec![0u8; (torn_end - synced_len) as usize];
        file.read_exact_at(&mut page, synced_len)?;
        // Only a page that unsynced data was written to can be torn; an untouched one
        // stays zeroes (and a full segment's zero slack must not turn into damage).
        if page.iter().any(|&b| b != 0) {
            rng.fill(&mut page);
            file.write_all_at(&page, synced_len)?;
            garbage_len = page.len() as u64;
        }
    }
    let zero_from = synced_len + garbage_len;
    fsutil::zero_range(&file, zero_from, file_len - zero_from)?;
    Ok(SegmentCut {
        path: path.to_path_buf(),
        synced_len,
        file_len,
        garbage_len,
    })
}

/// Deletes ledgers whose segment is gone (a kill between the two deletions) and leftover
/// temp files of ledger writes.
fn remove_stale_ledgers(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut stale = Vec::new();
    for ent in std::fs::read_dir(dir)? {
        let path = ent?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !synced::is_ledger_name(name) {
            continue;
        }
        let segment_exists = name
            .strip_suffix(synced::SUFFIX)
            .and_then(segment::parse_name)
            .is_some_and(|_| path.with_extension("").exists());
        if !segment_exists {
            std::fs::remove_file(&path)?;
            stale.push(path);
        }
    }
    stale.sort();
    Ok(stale)
}

/// Resets `committed` (never fsynced after creation) to zeroes, its durable state.
fn reset_committed(dir: &Path) -> io::Result<bool> {
    let path = dir.join("committed");
    let file = match OpenOptions::new().write(true).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    fsutil::zero_range(&file, 0, len)?;
    Ok(true)
}
