//! Opening a log directory: scan every segment, keep the longest valid prefix, cut the
//! rest, and say (via tracing and the returned report) what was dropped.

use std::collections::VecDeque;
use std::fs::File;
use std::fs::OpenOptions;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::RwLock;

use crate::config::LogConfig;
use crate::error::Corruption;
use crate::error::LogError;
use crate::error::Result;
use crate::flusher::Flusher;
use crate::flusher::Poison;
use crate::fsutil;
use crate::index::Index;
use crate::index::LogPos;
use crate::log::CommitLog;
use crate::log::Durable;
use crate::log::DurableMeta;
use crate::log::Inner;
use crate::log::Writer;
use crate::lookahead;
use crate::meta::MetaFile;
use crate::segment;
use crate::segment::ScanContext;
use crate::segment::ScanEnd;
use crate::segment::Segment;
use crate::synced;

/// Where recovery cut the log and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub path: PathBuf,
    pub offset: u64,
    /// Index the damaged record should have had.
    pub index: u64,
    pub what: Corruption,
    /// Entries from `index` on had been made durable and are now lost: valid records
    /// follow the damage, or the file was cut short. Not so for a torn tail, which only
    /// loses writes that were never fsynced (and so never acknowledged).
    pub durable_lost: bool,
}

/// What `open` found.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    pub segments: usize,
    pub entries: u64,
    /// The first invalid record, if the data did not simply end.
    pub damage: Option<Damage>,
    /// Segment files deleted because they lay behind a cut, a gap or the purge point.
    pub dropped_segments: Vec<PathBuf>,
}

impl CommitLog {
    /// Opens (or creates) the log in `dir`, recovering from any crash.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<(Self, RecoveryReport)> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let io = |op, e| LogError::io(op, &dir, e);
        if !dir.exists() {
            std::fs::create_dir_all(&dir).map_err(|e| io("create log directory", e))?;
            if let Some(parent) = dir.parent() {
                fsutil::sync_dir(parent).map_err(|e| io("fsync parent directory", e))?;
            }
        }
        let lock = lock_dir(&dir)?;
        let (meta_file, state) = load_meta(&dir)?;
        let (committed_file, committed) = MetaFile::open(&dir.join("committed"), false)?;
        let mut durable = Durable {
            file: meta_file,
            state,
        };

        let (segments, max_epoch, mut report) = recover_segments(&dir, &config, &mut durable)?;

        durable.state.epoch = durable.state.epoch.max(max_epoch) + 1;
        crate::durable::persist(&mut durable)?;

        let index = Index {
            segments,
            purged: durable.state.purged,
        };
        report.segments = index.segments.len();
        if let Some(active) = index.segments.back() {
            crate::fsutil::advise_random(&active.file, true);
        }
        let b = index.bounds();
        report.entries = b.next.map_or(0, |n| n - b.first);
        tracing::info!(
            dir = %dir.display(), segments = report.segments, entries = report.entries,
            first = b.first, next = ?b.next, epoch = durable.state.epoch,
            vote_fence = ?durable.state.vote_fence, "opened commit log"
        );
        let poison = Arc::new(Poison::default());
        let flusher = Flusher::start(
            poison.clone(),
            config.faults.clone(),
            config.track_synced,
            config.page_cache_window,
            config.direct_io,
        )
        .map_err(|e| io("start flusher", e))?;
        let writer = Writer {
            epoch: durable.state.epoch,
            buf: Vec::new(),
            recs: Vec::new(),
        };
        let read_cache = crate::read_cache::ReadCache::new(config.read_cache_bytes);
        let inner = Inner {
            dir,
            read_cache,
            config,
            writer: Mutex::new(writer),
            index: RwLock::new(index),
            poison,
            meta: Mutex::new(durable),
            committed: Mutex::new((committed_file, committed)),
            flusher,
            _lock: lock,
        };
        Ok((
            CommitLog {
                inner: Arc::new(inner),
            },
            report,
        ))
    }
}

/// Takes an exclusive lock on the directory so two processes never share one log.
#[allow(unsafe_code)]
pub(crate) fn lock_dir(dir: &Path) -> Result<File> {
    use std::os::fd::AsRawFd;
    let path = dir.join("LOCK");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| LogError::io("open lock file", &path, e))?;
    // SAFETY: plain syscall on a valid fd.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(LogError::io(
            "lock log directory (is another process using it?)",
            &path,
            e,
        ));
    }
    Ok(f)
}

/// Opens `meta` and decodes the durable state in it.
pub(crate) fn load_meta(dir: &Path) -> Result<(MetaFile, DurableMeta)> {
    let (meta_file, raw) = MetaFile::open(&dir.join("meta"), true)?;
    let state = match raw {
        Some(b) => serde_json::from_slice(&b).map_err(|e| LogError::Decode {
            index: 0,
            what: e.to_string(),
        })?,
        None => DurableMeta::default(),
    };
    Ok((meta_file, state))
}

/// Scans the segments, deletes those recovery dropped, and updates the synced-length
/// ledger. Returns the kept segments and the highest write epoch found.
fn recover_segments(
    dir: &Path,
    config: &LogConfig,
    durable: &mut Durable,
) -> Result<(VecDeque<Segment>, u64, RecoveryReport)> {
    let mut report = RecoveryReport::default();
    let min_len = config.preallocate.then_some(config.segment_size);
    let limits = ScanLimits {
        purged: durable.state.purged,
        min_len,
        max_record: config.max_record_size,
    };
    let (segments, max_epoch) = scan_all(dir, limits, durable, &mut report)?;
    for p in &report.dropped_segments {
        std::fs::remove_file(p).map_err(|e| LogError::io("delete dropped segment", p, e))?;
    }
    if !report.dropped_segments.is_empty() {
        fsutil::sync_dir(dir).map_err(|e| LogError::io("fsync directory", dir, e))?;
    }
    track_synced(dir, config.track_synced, &segments, &report.dropped_segments)?;
    Ok((segments, max_epoch, report))
}

/// Brings the synced-length ledger (test only, see `synced.rs`) in line with what recovery
/// kept: every kept segment was fsynced whole, dropped ones are gone.
fn track_synced(dir: &Path, track: bool, kept: &VecDeque<Segment>, dropped: &[PathBuf]) -> Result<()> {
    let io = |e| LogError::io("record synced lengths", dir, e);
    if track {
        for p in dropped {
            synced::forget(p).map_err(io)?;
        }
    }
    let kept: Vec<(PathBuf, u64)> = kept.iter().map(|s| (s.path.clone(), s.end)).collect();
    synced::at_open(dir, track, &kept).map_err(io)
}

pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| LogError::io("list log directory", dir, e))?;
    for ent in rd {
        let ent = ent.map_err(|e| LogError::io("list log directory", dir, e))?;
        if let Some(base) = ent.file_name().to_str().and_then(segment::parse_name) {
            found.push((base, ent.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// What `scan_all` needs to know of the configuration and the durable state.
#[derive(Debug, Clone, Copy)]
struct ScanLimits {
    purged: Option<LogPos>,
    /// The size every segment file has when segments are preallocated.
    min_len: Option<u64>,
    /// The largest record the log writes.
    max_record: u32,
}

/// Scans segments in order and keeps the valid, gap-free prefix above the purge point.
/// Damage that lost durable entries sets the vote fence in `durable` (persisted) before
/// anything is cut, so that a crash during the cut cannot lose the evidence.
fn scan_all(
    dir: &Path,
    limits: ScanLimits,
    durable: &mut Durable,
    report: &mut RecoveryReport,
) -> Result<(VecDeque<Segment>, u64)> {
    let ScanLimits { purged, min_len, .. } = limits;
    let mut files = list_segments(dir)?;
    skip_purged(&mut files, purged, report);
    let mut kept: VecDeque<Segment> = VecDeque::new();
    let mut cx = ScanContext {
        prev_term: 0,
        prev_epoch: 0,
    };
    let mut stopped = false;
    let nexts: Vec<Option<(u64, PathBuf)>> = (0..files.len()).map(|i| files.get(i + 1).cloned()).collect();
    for ((base, path), next) in files.into_iter().zip(nexts) {
        let expected = kept.back().map(|s| s.next_index());
        if stopped || expected.is_some_and(|e| e != base) {
            // Only after a segment that ends in zeroes (one ending exactly at its end of
            // file is damage, see `cut_short`): a truncation interrupted between its
            // unlinks leaves this, and it is no loss.
            if !stopped {
                tracing::warn!(path = %path.display(), base, expected = ?expected, "gap before segment; dropping it and all later ones");
            }
            stopped = true;
            report.dropped_segments.push(path);
            continue;
        }
        let scanned = segment::open_and_scan(&path, base, cx)?;
        let seg = scanned.segment;
        let next_base = next.as_ref().map(|n| n.0);
        let end = cut_short(scanned.end, &seg, next_base, min_len);
        if let ScanEnd::Damaged { offset, what } = end {
            let damage = Damage {
                path: path.clone(),
                offset,
                index: seg.next_index(),
                what,
                // A clean end that `cut_short` judged damage: the file was cut short.
                durable_lost: end != scanned.end,
            };
            handle_damage(&seg, damage, next.as_ref().map(|n| &n.1), limits, durable, report)?;
            stopped = true;
        }
        if seg.is_empty() {
            // Nothing valid here, so nothing after it can continue the log either.
            stopped = true;
            report.dropped_segments.push(path);
            continue;
        }
        // What is kept may so far live only in the page cache (a killed process's
        // writes survive it); make it durable before anyone is told it exists.
        seg.file
            .sync_data()
            .map_err(|e| LogError::io("fsync kept segment", &path, e))?;
        if let Some((term, _)) = seg.last {
            cx.prev_term = term;
        }
        cx.prev_epoch = scanned.last_epoch;
        kept.push_back(seg);
    }
    let max_epoch = cx.prev_epoch;
    drop_purged(&mut kept, purged, report);
    Ok((kept, max_epoch))
}

/// `damage` found in `seg`: judges whether durable entries were lost (besides a cut by
/// size: the file is shorter than preallocated, or valid data follows the damage), sets
/// and persists the vote fence first if so, then cuts the segment there and restores its
/// preallocated length.
fn handle_damage(
    seg: &Segment,
    mut damage: Damage,
    next_path: Option<&PathBuf>,
    limits: ScanLimits,
    durable: &mut Durable,
    report: &mut RecoveryReport,
) -> Result<()> {
    damage.durable_lost = damage.durable_lost
        || shorter_than_preallocated(seg, limits.min_len)?
        || data_follows(seg, damage.offset, next_path, limits.max_record)?;
    if damage.durable_lost {
        let st = &mut durable.state;
        st.vote_fence = Some(st.vote_fence.map_or(damage.index, |f| f.min(damage.index)));
        crate::durable::persist(durable)?;
    }
    cut_damage(seg, damage, report)?;
    restore_preallocation(seg, limits.min_len)
}

/// Segments followed by one that starts at or below the purge point hold only purged
/// entries: they are dropped unscanned, so that damage in them, or a leftover file whose
/// deletion failed, cannot cut the retained log.
fn skip_purged(files: &mut Vec<(u64, PathBuf)>, purged: Option<LogPos>, report: &mut RecoveryReport) {
    if let Some(p) = purged {
        let first_needed = files
            .iter()
            .rposition(|(base, _)| *base <= p.index + 1)
            .unwrap_or(0);
        report
            .dropped_segments
            .extend(files.drain(..first_needed).map(|(_, path)| path));
    }
}

/// Turns a clean end exactly at the end of the file into damage where the file must have
/// been cut short: a later segment does not continue it (appends never leave a gap, and a
/// truncation zeroes its cut instead of shortening the file), or it is the last segment and
/// smaller than preallocation makes every segment. Only the report changes: the cut is
/// where it would be anyway. (A last segment written unpreallocated by an earlier run is
/// reported too, harmlessly.)
fn cut_short(end: ScanEnd, seg: &Segment, next_base: Option<u64>, min_len: Option<u64>) -> ScanEnd {
    if end != (ScanEnd::Clean { at_eof: true }) {
        return end;
    }
    let expected = seg.next_index();
    match next_base {
        Some(found) if found != expected => ScanEnd::Damaged {
            offset: seg.end,
            what: Corruption::IndexGap { expected, found },
        },
        None if min_len.is_some_and(|m| seg.end < m) => ScanEnd::Damaged {
            offset: seg.end,
            what: Corruption::Truncated,
        },
        _ => end,
    }
}

/// Grows a cut-short segment, which appends go on to fill, back to its preallocated size,
/// so that appends never grow the file and the next open does not take it for damage.
fn restore_preallocation(seg: &Segment, min_len: Option<u64>) -> Result<()> {
    let Some(len) = min_len else { return Ok(()) };
    let io = |e| LogError::io("preallocate segment", &seg.path, e);
    if !seg.is_empty() && seg.file.metadata().map_err(io)?.len() < len {
        fsutil::preallocate(&seg.file, len).map_err(io)?;
    }
    Ok(())
}

/// A preallocated segment file is created at its full size before its header is written,
/// and never shrinks: a shorter one with a header was cut short after the fact. (One
/// without a whole header is a creation that a crash interrupted: it never held a record.)
fn shorter_than_preallocated(seg: &Segment, min_len: Option<u64>) -> Result<bool> {
    let Some(min_len) = min_len else { return Ok(false) };
    let len = seg
        .file
        .metadata()
        .map_err(|e| LogError::io("stat segment", &seg.path, e))?
        .len();
    Ok((segment::SEGMENT_HEADER_LEN..min_len).contains(&len))
}

/// Whether a valid record follows damage at `offset` of `seg`, in it or in the next
/// segment file: then the damage is not a torn tail (see `lookahead.rs`).
fn data_follows(seg: &Segment, offset: u64, next: Option<&PathBuf>, max_record: u32) -> Result<bool> {
    let min_index = seg.next_index();
    let after = lookahead::valid_record_after(&seg.file, &seg.path, offset + 1, min_index, max_record)?;
    if after.is_some() {
        return Ok(true);
    }
    let Some(next) = next else { return Ok(false) };
    let file = File::open(next).map_err(|e| LogError::io("open segment after damage", next, e))?;
    Ok(lookahead::valid_record_after(&file, next, 0, min_index, max_record)?.is_some())
}

/// Logs and reports the first invalid record and zeroes the rest of its segment.
fn cut_damage(seg: &Segment, damage: Damage, report: &mut RecoveryReport) -> Result<()> {
    let (path, offset) = (&seg.path, damage.offset);
    tracing::warn!(
        path = %path.display(), offset, index = damage.index, reason = %damage.what,
        durable_lost = damage.durable_lost,
        "invalid record; cutting the log here and dropping everything after it"
    );
    report.damage = Some(damage);
    if !seg.is_empty() {
        let len = seg
            .file
            .metadata()
            .map_err(|e| LogError::io("stat segment", path, e))?
            .len();
        if offset < len {
            segment::erase_at(&seg.file, path, offset, len - offset)?;
        }
    }
    Ok(())
}

/// Removes segments wholly at or below the purge point, and everything if the retained
/// log does not start right after it.
fn drop_purged(kept: &mut VecDeque<Segment>, purged: Option<LogPos>, report: &mut RecoveryReport) {
    let Some(p) = purged else { return };
    while kept.front().is_some_and(|s| s.next_index() <= p.index + 1) {
        if let Some(s) = kept.pop_front() {
            report.dropped_segments.push(s.path);
        }
    }
    if kept.front().is_some_and(|s| s.base > p.index + 1) {
        tracing::warn!(
            purged = p.index,
            "log does not continue after the purge point; dropping it"
        );
        report.dropped_segments.extend(kept.drain(..).map(|s| s.path));
    }
}
