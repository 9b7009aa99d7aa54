//! Throughput and latency of the commit log against the disk's own limit.
//!
//! Run with `cargo run --release -p raftmq-raft-log --example bench [-- --quick] [--dir PATH]`
//! (or set `RAFTMQ_BENCH_QUICK=1` / `RAFTMQ_BENCH_DIR=PATH`).
//!
//! For entry sizes 1 KiB, 16 KiB and 256 KiB and 1, 8 and 64 concurrent writers it opens a
//! fresh log (default config: 1 GiB preallocated segments) and lets every writer run a closed
//! loop on its own OS thread: append one entry, wait for its durability callback (the
//! flusher's group-commit `fdatasync`), record the latency from the `append` call to the
//! callback, repeat. Writers share a mutex holding the next index, so that picking the
//! index and calling `append` happen together; they release it before waiting. A case
//! stops at its byte budget or its time cap, whichever comes first.
//!
//! The machine limit it compares against is "large sequential writes, fdatasync'd": plain
//! `std::fs` writes of the same number of bytes into a new file in 1 MiB chunks (or the
//! entry size if larger) with `sync_data` after each chunk, i.e. what a perfect group
//! commit of 64 x 16 KiB would achieve. The disk's speed, and on this VM the cost of
//! faulting in fresh page-cache pages, swing several-fold from minute to minute, so every
//! case runs right after its own baseline, and the 16 KiB x 64 writers case is repeated
//! six more times, alternating with its baseline; its verdict is the median of the seven
//! pairwise ratios. The rate of small (4 KiB write + `fdatasync`) syncs is printed as
//! context.
//!
//! The last line is `ratio_16k_64w=<x>`: that median ratio.
//!
//! For profiling, `RAFTMQ_BENCH_ONLY=<KiB>:<writers>` runs one case five times, and
//! `RAFTMQ_BENCH_PREALLOC=0` turns segment preallocation off, and
//! `RAFTMQ_BENCH_PAGE_CACHE_WINDOW=<bytes>` sets the log's page-cache window (0: the
//! kernel keeps every page). The baseline never drops pages.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use anyhow::Result;
use anyhow::anyhow;
use anyhow::bail;
use raft_log::CommitLog;
use raft_log::EntryKind;
use raft_log::LogConfig;
use raft_log::RecordMeta;

const KIB: usize = 1024;
const MIB: u64 = 1 << 20;
const SIZES: [usize; 3] = [KIB, 16 * KIB, 256 * KIB];
const WRITERS: [usize; 3] = [1, 8, 64];
const MAX_WRITERS: usize = 64;
const RATIO_GOAL: f64 = 0.8;
const SCALING_GOAL: f64 = 10.0;
const HEADLINE_PAIRS: usize = 6;

struct Opts {
    quick: bool,
    dir: Option<PathBuf>,
}

impl Opts {
    fn parse() -> Result<Self> {
        let mut opts = Opts {
            quick: std::env::var("RAFTMQ_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0"),
            dir: std::env::var_os("RAFTMQ_BENCH_DIR").map(PathBuf::from),
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            match a.as_str() {
                "--quick" => opts.quick = true,
                "--dir" => opts.dir = Some(args.next().context("--dir needs a path")?.into()),
                other => bail!("unknown argument {other:?}; usage: bench [--quick] [--dir PATH]"),
            }
        }
        Ok(opts)
    }

    /// Payload bytes one case may write.
    fn budget(&self, size: usize) -> u64 {
        match (self.quick, size <= KIB) {
            (false, true) => 64 * MIB,
            (false, false) => 256 * MIB,
            (true, true) => 8 * MIB,
            (true, false) => 32 * MIB,
        }
    }

    /// Wall-clock cap of one case (and of one baseline measurement).
    fn cap(&self) -> Duration {
        Duration::from_secs(if self.quick { 2 } else { 5 })
    }
}

/// Outcome of one (entry size, writers) case.
struct Case {
    /// Appends per group commit (flusher round).
    per_round: f64,
    size: usize,
    writers: usize,
    entries: u64,
    secs: f64,
    p50_ns: u64,
    p99_ns: u64,
}

impl Case {
    fn entries_per_sec(&self) -> f64 {
        self.entries as f64 / self.secs
    }

    fn mb_per_sec(&self) -> f64 {
        (self.entries * self.size as u64) as f64 / 1e6 / self.secs
    }
}

/// Index assignment shared by the writers of one case.
struct Seq {
    next: u64,
    left: u64,
}

fn main() -> Result<()> {
    let opts = Opts::parse()?;
    let (_tmp, root) = data_dir(&opts)?;
    println!("data dir: {} ({})", root.display(), describe_fs(&root));
    println!(
        "mode: {} (budget {} MiB for 1 KiB, {} MiB otherwise; cap {} s per case)",
        if opts.quick { "quick" } else { "full" },
        opts.budget(KIB) / MIB,
        opts.budget(16 * KIB) / MIB,
        opts.cap().as_secs()
    );
    let (rate, mean_ms) = small_sync_rate(&root, Duration::from_secs(1))?;
    println!("small fdatasync (4 KiB write + sync_data): {rate:.0} syncs/s, {mean_ms:.3} ms each");

    if let Ok(only) = std::env::var("RAFTMQ_BENCH_ONLY") {
        return profile_one(&root, &only, &opts);
    }
    let mut rows = Vec::new();
    for size in SIZES {
        rows.extend(run_size(&root, size, &opts)?);
    }
    let pairs = headline_pairs(&root, &opts)?;
    print_report(&rows, &pairs)
}

/// Where the data goes: `--dir`, else a temporary directory under `./target` (or the
/// working directory), not the system temp dir, which may be a tmpfs.
fn data_dir(opts: &Opts) -> Result<(Option<tempfile::TempDir>, PathBuf)> {
    if let Some(d) = &opts.dir {
        std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
        return Ok((None, d.canonicalize()?));
    }
    let cwd = std::env::current_dir()?;
    let parent = if cwd.join("target").is_dir() {
        cwd.join("target")
    } else {
        cwd
    };
    let tmp = tempfile::Builder::new()
        .prefix("raftmq-bench-")
        .tempdir_in(&parent)
        .with_context(|| format!("create temp dir in {}", parent.display()))?;
    let path = tmp.path().canonicalize()?;
    Ok((Some(tmp), path))
}

/// Filesystem type and mount point of `path`, from /proc/mounts (best effort).
fn describe_fs(path: &Path) -> String {
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else {
        return "filesystem unknown".into();
    };
    let best = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && path.starts_with(f[1])).then(|| (f[0], f[1], f[2]))
        })
        .max_by_key(|(_, mnt, _)| mnt.len());
    match best {
        Some((_, mnt, "tmpfs")) => format!("tmpfs at {mnt}: WARNING, memory, not a disk"),
        Some((dev, mnt, fs)) => format!("{fs} on {dev} mounted at {mnt}"),
        None => "filesystem unknown".into(),
    }
}

/// All writer counts for one entry size; each case right after its own baseline of the
/// same size, so that the disk's (and this VM's page cache's) swings hit both alike.
fn run_size(root: &Path, size: usize, opts: &Opts) -> Result<Vec<(Case, f64)>> {
    let mut rows = Vec::new();
    for writers in WRITERS {
        rows.push(pair(root, size, writers, opts)?);
    }
    Ok(rows)
}

/// A baseline of the case's byte budget, then the case. Returns the case and baseline MB/s.
fn pair(root: &Path, size: usize, writers: usize, opts: &Opts) -> Result<(Case, f64)> {
    let chunk = size.max(MIB as usize);
    let base = fs_baseline(root, opts.budget(size), chunk, opts.cap())?;
    let c = run_case(root, size, writers, opts.budget(size), opts.cap())?;
    eprintln!(
        "{:>4} KiB x {:>2} writers: {:>9.1} entries/s {:>8.2} MB/s (baseline {base:.1} MB/s)",
        size / KIB,
        writers,
        c.entries_per_sec(),
        c.mb_per_sec()
    );
    Ok((c, base))
}

/// `RAFTMQ_BENCH_ONLY=<KiB>:<writers>` runs just that case five times (for profiling).
fn profile_one(root: &Path, only: &str, opts: &Opts) -> Result<()> {
    let (k, w) = only
        .split_once(':')
        .context("RAFTMQ_BENCH_ONLY=<KiB>:<writers>")?;
    let (size, writers) = (k.parse::<usize>()? * KIB, w.parse::<usize>()?);
    for _ in 0..5 {
        let c = run_case(root, size, writers, opts.budget(size), opts.cap())?;
        println!(
            "{} KiB x {writers}: {:.1} MB/s, {:.0} entries/s, {:.1} appends per fsync",
            size / KIB,
            c.mb_per_sec(),
            c.entries_per_sec(),
            c.per_round
        );
    }
    Ok(())
}

/// The headline case (16 KiB x 64 writers) six more times, alternating with its
/// baseline; the verdict uses the median of the pairwise ratios.
fn headline_pairs(root: &Path, opts: &Opts) -> Result<Vec<(Case, f64)>> {
    (0..HEADLINE_PAIRS)
        .map(|_| pair(root, 16 * KIB, MAX_WRITERS, opts))
        .collect()
}

/// One case in a fresh log directory, deleted afterwards. Writers are tokio tasks on a
/// two-thread runtime, as the broker drives the log, rather than 64 OS threads whose
/// context switches would dominate on a 2-core machine.
fn run_case(root: &Path, size: usize, writers: usize, budget: u64, cap: Duration) -> Result<Case> {
    let dir = root.join(format!("log-{}k-{writers}w", size / KIB));
    let prealloc = std::env::var("RAFTMQ_BENCH_PREALLOC").map_or(true, |v| v != "0");
    let defaults = LogConfig::default();
    let page_cache_window = match std::env::var("RAFTMQ_BENCH_PAGE_CACHE_WINDOW") {
        Ok(v) => v.parse().context("RAFTMQ_BENCH_PAGE_CACHE_WINDOW: bytes")?,
        Err(_) => defaults.page_cache_window,
    };
    let cfg = LogConfig {
        preallocate: prealloc,
        page_cache_window,
        ..defaults
    };
    let (log, _report) = CommitLog::open(&dir, cfg)?;
    let payload: Arc<[u8]> = vec![0xA5u8; size].into();
    let seq = Arc::new(Mutex::new(Seq {
        next: log.bounds().next.unwrap_or(1),
        left: (budget / size as u64).max(1),
    }));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()?;
    let start = Instant::now();
    let deadline = start + cap;
    let per_writer = rt.block_on(async {
        let tasks: Vec<_> = (0..writers)
            .map(|_| tokio::spawn(writer(log.clone(), seq.clone(), payload.clone(), deadline)))
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.push(t.await.map_err(|e| anyhow!("writer task failed: {e}"))??);
        }
        anyhow::Ok(all)
    })?;
    let secs = start.elapsed().as_secs_f64();
    let st = log.flush_stats();
    drop(log);
    std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
    let mut lat: Vec<u64> = per_writer.into_iter().flatten().collect();
    lat.sort_unstable();
    Ok(Case {
        per_round: st.appends as f64 / st.rounds.max(1) as f64,
        size,
        writers,
        entries: lat.len() as u64,
        secs,
        p50_ns: percentile(&lat, 50.0),
        p99_ns: percentile(&lat, 99.0),
    })
}

/// Closed loop of one writer; returns its append-to-durable latencies in nanoseconds.
/// Taking the next index and calling `append` happen under one lock, so entries stay
/// contiguous; the wait for durability happens outside it.
async fn writer(
    log: CommitLog,
    seq: Arc<Mutex<Seq>>,
    payload: Arc<[u8]>,
    deadline: Instant,
) -> Result<Vec<u64>> {
    let mut lat = Vec::new();
    loop {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let t0 = {
            let mut s = seq.lock().unwrap_or_else(PoisonError::into_inner);
            if s.left == 0 || Instant::now() >= deadline {
                break;
            }
            let meta = RecordMeta {
                index: s.next,
                term: 1,
                leader: 1,
                kind: EntryKind::Normal,
            };
            let t0 = Instant::now();
            log.append([(meta, &payload[..])], Box::new(move |r| drop(tx.send(r))))?;
            s.next += 1;
            s.left -= 1;
            t0
        };
        rx.await.context("flusher dropped a durability callback")??;
        lat.push(t0.elapsed().as_nanos() as u64);
    }
    Ok(lat)
}

/// Nearest-rank percentile of sorted samples (0 when empty).
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The fair machine limit: large sequential writes, each `fdatasync`'d, into a new file
/// with plain `std::fs`. Writes `total` bytes (or until `cap`) in `chunk`-sized writes,
/// calling `sync_data` after every chunk, as a perfect group commit would. Pages 16 MiB
/// behind the end are dropped as it goes, as the log drops those behind its page-cache
/// window: on this VM a page-cache page the kernel has to find afresh costs more than the
/// write, and a baseline that grew the page cache would measure that. Returns MB/s.
fn fs_baseline(root: &Path, total: u64, chunk: usize, cap: Duration) -> Result<f64> {
    let path = root.join("baseline.dat");
    let mut f = File::create(&path).with_context(|| format!("create {}", path.display()))?;
    let buf = vec![0x5Au8; chunk];
    let start = Instant::now();
    let mut written = 0u64;
    while written < total && start.elapsed() < cap {
        f.write_all(&buf)?;
        f.sync_data()?;
        written += chunk as u64;
        if written > BASELINE_CACHED + chunk as u64 {
            drop_pages(&f, written - BASELINE_CACHED - chunk as u64, chunk as u64);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(written as f64 / 1e6 / secs)
}

/// How far behind its end the baseline drops its pages.
const BASELINE_CACHED: u64 = 16 << 20;

/// Drops the clean pages of `[offset, offset + len)` of `f`; advice only.
#[allow(unsafe_code)]
fn drop_pages(f: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    if let (Ok(off), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) {
        // SAFETY: plain syscall on an open fd; no pointers involved.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), off, len, libc::POSIX_FADV_DONTNEED) };
    }
}

/// Rate of small appends each followed by `fdatasync`, for `dur`. Returns (syncs/s, mean ms).
fn small_sync_rate(root: &Path, dur: Duration) -> Result<(f64, f64)> {
    let path = root.join("small-sync.dat");
    let mut f = File::create(&path).with_context(|| format!("create {}", path.display()))?;
    let buf = [0x3Cu8; 4096];
    let start = Instant::now();
    let mut n = 0u64;
    while n == 0 || start.elapsed() < dur {
        f.write_all(&buf)?;
        f.sync_data()?;
        n += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&path)?;
    Ok((n as f64 / secs, secs * 1e3 / n as f64))
}

fn print_report(rows: &[(Case, f64)], pairs: &[(Case, f64)]) -> Result<()> {
    println!();
    println!(
        "{:>8} {:>7} {:>11} {:>9} {:>9} {:>9} {:>9} {:>13} {:>6}",
        "size", "writers", "entries/s", "MB/s", "p50_ms", "p99_ms", "per_fsync", "baseline_MB/s", "ratio"
    );
    for (c, base) in rows.iter().chain(pairs) {
        println!(
            "{:>4} KiB {:>7} {:>11.1} {:>9.2} {:>9.3} {:>9.3} {:>9.1} {:>13.1} {:>6.2}",
            c.size / KIB,
            c.writers,
            c.entries_per_sec(),
            c.mb_per_sec(),
            c.p50_ns as f64 / 1e6,
            c.p99_ns as f64 / 1e6,
            c.per_round,
            base,
            c.mb_per_sec() / base
        );
    }
    println!(
        "(baseline: the same bytes written with std::fs in 1 MiB chunks, fdatasync after each, just before the case)"
    );
    let find = |size: usize, writers: usize| {
        rows.iter()
            .find(|(c, _)| c.size == size && c.writers == writers)
            .with_context(|| format!("no result for {size} B x {writers} writers"))
    };
    let scaling = find(KIB, MAX_WRITERS)?.0.entries_per_sec() / find(KIB, 1)?.0.entries_per_sec();
    let mut ratios: Vec<f64> = rows
        .iter()
        .chain(pairs)
        .filter(|(c, _)| c.size == 16 * KIB && c.writers == MAX_WRITERS)
        .map(|(c, base)| c.mb_per_sec() / base)
        .collect();
    ratios.sort_by(f64::total_cmp);
    let ratio = ratios[ratios.len() / 2];
    let listed: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    println!(
        "16 KiB x 64 writers, pairwise ratios: {} (median {ratio:.2})",
        listed.join(" ")
    );
    println!("scaling_1k_64w_vs_1w={scaling:.2}");
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    println!(
        "{} ratio_16k_64w >= {RATIO_GOAL:.2} (got {ratio:.2})",
        verdict(ratio >= RATIO_GOAL)
    );
    println!(
        "{} scaling_1k_64w_vs_1w >= {SCALING_GOAL:.0} (got {scaling:.2})",
        verdict(scaling >= SCALING_GOAL)
    );
    println!("ratio_16k_64w={ratio:.2}");
    Ok(())
}
