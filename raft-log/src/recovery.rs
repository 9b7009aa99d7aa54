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
use crate::meta::MetaFile;
use crate::segment;
use crate::segment::ScanContext;
use crate::segment::ScanEnd;
use crate::segment::Segment;

/// Where recovery cut the log and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub path: PathBuf,
    pub offset: u64,
    /// Index the damaged record should have had.
    pub index: u64,
    pub what: Corruption,
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
        let (meta_file, raw) = MetaFile::open(&dir.join("meta"), true)?;
        let mut state: DurableMeta = match raw {
            Some(b) => serde_json::from_slice(&b).map_err(|e| LogError::Decode {
                index: 0,
                what: e.to_string(),
            })?,
            None => DurableMeta::default(),
        };
        let (committed_file, committed) = MetaFile::open(&dir.join("committed"), false)?;

        let mut report = RecoveryReport::default();
        let (segments, max_epoch) = scan_all(&dir, state.purged, &mut report)?;
        for p in &report.dropped_segments {
            std::fs::remove_file(p).map_err(|e| LogError::io("delete dropped segment", p, e))?;
        }
        if !report.dropped_segments.is_empty() {
            fsutil::sync_dir(&dir).map_err(|e| io("fsync directory", e))?;
        }

        state.epoch = state.epoch.max(max_epoch) + 1;
        let mut durable = Durable {
            file: meta_file,
            state,
        };
        crate::durable::persist(&mut durable)?;

        let index = Index {
            segments,
            purged: durable.state.purged,
        };
        report.segments = index.segments.len();
        let b = index.bounds();
        report.entries = b.next.map_or(0, |n| n - b.first);
        tracing::info!(
            dir = %dir.display(), segments = report.segments, entries = report.entries,
            first = b.first, next = ?b.next, epoch = durable.state.epoch, "opened commit log"
        );
        let poison = Arc::new(Poison::default());
        let flusher =
            Flusher::start(poison.clone(), config.faults.clone()).map_err(|e| io("start flusher", e))?;
        let writer = Writer {
            epoch: durable.state.epoch,
            buf: Vec::new(),
            recs: Vec::new(),
        };
        let inner = Inner {
            dir,
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
fn lock_dir(dir: &Path) -> Result<File> {
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

fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
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

/// Scans segments in order and keeps the valid, gap-free prefix above the purge point.
fn scan_all(
    dir: &Path,
    purged: Option<LogPos>,
    report: &mut RecoveryReport,
) -> Result<(VecDeque<Segment>, u64)> {
    let mut files = list_segments(dir)?;
    // Segments followed by one that starts at or below the purge point hold only purged
    // entries: they are dropped unscanned, so that damage in them, or a leftover file
    // whose deletion failed, cannot cut the retained log.
    if let Some(p) = purged {
        let first_needed = files
            .iter()
            .rposition(|(base, _)| *base <= p.index + 1)
            .unwrap_or(0);
        report
            .dropped_segments
            .extend(files.drain(..first_needed).map(|(_, path)| path));
    }
    let mut kept: VecDeque<Segment> = VecDeque::new();
    let mut cx = ScanContext {
        prev_term: 0,
        prev_epoch: 0,
    };
    let mut stopped = false;
    for (base, path) in files {
        let expected = kept.back().map(|s| s.next_index());
        if stopped || expected.is_some_and(|e| e != base) {
            if !stopped {
                tracing::warn!(path = %path.display(), base, expected = ?expected, "gap before segment; dropping it and all later ones");
            }
            stopped = true;
            report.dropped_segments.push(path);
            continue;
        }
        let scanned = segment::open_and_scan(&path, base, cx)?;
        let seg = scanned.segment;
        if let ScanEnd::Damaged { offset, what } = scanned.end {
            cut_damage(&seg, &path, offset, what, report)?;
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

/// Logs and reports the first invalid record and zeroes the rest of its segment.
fn cut_damage(
    seg: &Segment,
    path: &Path,
    offset: u64,
    what: Corruption,
    report: &mut RecoveryReport,
) -> Result<()> {
    let index = seg.next_index();
    tracing::warn!(
        path = %path.display(), offset, index, reason = %what,
        "invalid record; cutting the log here and dropping everything after it"
    );
    report.damage = Some(Damage {
        path: path.to_path_buf(),
        offset,
        index,
        what,
    });
    if !seg.is_empty() {
        let len = seg
            .file
            .metadata()
            .map_err(|e| LogError::io("stat segment", path, e))?
            .len();
        segment::erase_at(&seg.file, path, offset, len.saturating_sub(offset))?;
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
