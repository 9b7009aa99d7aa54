//! Crash test: a child process appends with group commit (several writer threads) and now
//! and then truncates its tail; it prints what the log reported durable and what it
//! truncated. The parent kills it with SIGKILL at a random moment, reopens the log and
//! checks that every entry reported durable is present and intact, and that no entry
//! removed by a completed truncation came back. Seeded: `RAFTLOG_CRASH_SEED` reproduces.
//!
//! The child is this test binary itself, re-run with `RAFTLOG_CRASH_CHILD` set.
//!
//! A second run does the same with `track_synced` on and simulates a power failure
//! (`cut_to_synced`, zeroed or torn) after every kill: entries reported durable must
//! survive that too, and nothing may survive past the synced lengths.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Duration;

use raft_log::CommitLog;
use raft_log::EntryKind;
use raft_log::LogConfig;
use raft_log::RecordMeta;
use raft_log::power_cut::PowerCutMode;
use raft_log::power_cut::cut_to_synced;
use rand::Rng;
use rand::SeedableRng;
use rand::rngs::StdRng;

const ROUNDS: u64 = 24;
const WRITERS: usize = 4;

fn config(track_synced: bool) -> LogConfig {
    LogConfig {
        segment_size: 256 * 1024,
        track_synced,
        ..LogConfig::default()
    }
}

/// Deterministic content of entry (index, term); its length varies with the index.
fn body(index: u64, term: u64) -> Vec<u8> {
    let len = 64 + (index * 37 % 3000) as usize;
    let seed = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ term.rotate_left(17);
    (0..len as u64)
        .map(|i| (seed.wrapping_add(i.wrapping_mul(0x2545_F491)) >> 11) as u8)
        .collect()
}

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Child mode: append and truncate until killed.
#[test]
#[ignore = "child process of the crash test; the parent runs it with --ignored"]
fn crash_child() {
    let Ok(dir) = std::env::var("RAFTLOG_CRASH_CHILD") else {
        return;
    };
    let seed: u64 = std::env::var("RAFTLOG_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let track = std::env::var("RAFTLOG_CRASH_TRACK").is_ok();
    let (log, _) = CommitLog::open(&dir, config(track)).expect("child open");
    let b = log.bounds();
    // Above every term an earlier child used, as a new Raft leader's term would be.
    let floor: u64 = std::env::var("RAFTLOG_CRASH_TERM")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let term = b.last.map_or(1, |l| l.term + 1).max(floor);
    let state = Arc::new(Mutex::new((b.next.unwrap_or(1), term)));
    let mut rng = StdRng::seed_from_u64(seed);
    say("\nREADY".into());
    loop {
        std::thread::scope(|s| {
            for w in 0..WRITERS {
                let (log, state) = (&log, state.clone());
                let (n, seed) = (rng.random_range(5..40), rng.random::<u64>() ^ w as u64);
                s.spawn(move || writer(log, &state, n, seed));
            }
        });
        if rng.random_bool(0.3) {
            truncate(&log, &state, rng.random_range(0..25));
        }
    }
}

/// Appends `n` batches, each waiting until durable, and reports the durable entries.
fn writer(log: &CommitLog, state: &Mutex<(u64, u64)>, n: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..n {
        let (tx, rx) = mpsc::channel();
        {
            let mut st = state.lock().expect("state");
            let (next, term) = *st;
            let count = rng.random_range(1..6u64);
            let batch: Vec<_> = (next..next + count)
                .map(|index| {
                    (
                        RecordMeta {
                            index,
                            term,
                            leader: 1,
                            kind: EntryKind::Normal,
                        },
                        body(index, term),
                    )
                })
                .collect();
            let done = move |r: Result<(), raft_log::LogError>| {
                r.expect("durable");
                say(format!("D {next} {} {term}", next + count));
                let _ = tx.send(());
            };
            log.append(batch, Box::new(done)).expect("append");
            st.0 = next + count;
        }
        let _ = rx.recv();
    }
}

/// Truncates the last `back` entries (never below the first) and starts a new term.
fn truncate(log: &CommitLog, state: &Mutex<(u64, u64)>, back: u64) {
    let mut st = state.lock().expect("state");
    let first = log.bounds().first;
    let after = st.0.saturating_sub(1 + back).max(first);
    say(format!("t {after}"));
    log.truncate_after(Some(after)).expect("truncate");
    st.0 = after + 1;
    st.1 += 1;
    say(format!("T {after} {}", st.1));
}

/// What the parent learned from one child's output.
#[derive(Debug, Default)]
struct Expect {
    /// index -> term of entries reported durable and not truncated since.
    durable: BTreeMap<u64, u64>,
    /// Completed truncations: entries after `.0` must have at least term `.1`.
    truncations: Vec<(u64, u64)>,
    /// A truncation that started but did not report completion.
    pending_cut: Option<u64>,
    /// Highest term any child used.
    max_term: u64,
}

impl Expect {
    fn feed(&mut self, line: &str) {
        let f: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        match (line.as_bytes().first(), f.as_slice()) {
            (Some(b'D'), &[from, to, term]) => {
                self.max_term = self.max_term.max(term);
                self.durable.extend((from..to).map(|i| (i, term)));
            }
            (Some(b't'), &[after]) => self.pending_cut = Some(after),
            (Some(b'T'), &[after, term]) => {
                self.durable.retain(|&i, _| i <= after);
                self.truncations.push((after, term));
                self.max_term = self.max_term.max(term);
                self.pending_cut = None;
            }
            _ => {}
        }
    }
}

fn run_child(
    dir: &Path,
    seed: u64,
    kill_after: Duration,
    expect: &mut Expect,
    track: bool,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    if track {
        cmd.env("RAFTLOG_CRASH_TRACK", "1");
    }
    let mut child = cmd
        .args([
            "crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("RAFTLOG_CRASH_CHILD", dir)
        .env("RAFTLOG_CRASH_SEED", seed.to_string())
        .env("RAFTLOG_CRASH_TERM", (expect.max_term + 1).to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // libtest prints its own lines before the child's.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut ready = Err(mpsc::RecvTimeoutError::Timeout);
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        ready = rx.recv_timeout(left);
        if ready.as_deref().map_or(true, |l| l.ends_with("READY")) {
            break;
        }
    }
    if !ready.as_deref().is_ok_and(|l| l.ends_with("READY")) {
        let _ = child.kill();
        let _ = child.wait();
        anyhow::bail!("child did not start: {ready:?}");
    }
    std::thread::sleep(kill_after);
    child.kill()?; // SIGKILL
    child.wait()?;
    let _ = reader.join();
    for line in rx.try_iter() {
        expect.feed(&line);
    }
    Ok(())
}

fn verify(
    dir: &Path,
    expect: &Expect,
    round: u64,
    track: bool,
) -> anyhow::Result<(u64, Option<raft_log::Damage>)> {
    let (log, report) = CommitLog::open(dir, config(track))?;
    let b = log.bounds();
    let next = b.next.unwrap_or(1);
    let entries = log.read(b.first, next)?;
    let present: BTreeMap<u64, u64> = entries.iter().map(|e| (e.meta.index, e.meta.term)).collect();
    for e in &entries {
        let (i, t) = (e.meta.index, e.meta.term);
        anyhow::ensure!(
            e.payload[..] == body(i, t)[..],
            "round {round}: entry {i} term {t} has wrong content"
        );
        for &(after, min_term) in &expect.truncations {
            anyhow::ensure!(
                i <= after || t >= min_term,
                "round {round}: truncated entry {i} (term {t}) came back"
            );
        }
    }
    for (&i, &t) in &expect.durable {
        if expect.pending_cut.is_some_and(|cut| i > cut) {
            continue;
        }
        anyhow::ensure!(
            present.get(&i) == Some(&t),
            "round {round}: durable entry {i} term {t} missing"
        );
    }
    Ok((next - 1, report.damage))
}

#[test]
fn sigkill_during_group_commit_loses_nothing_durable() -> anyhow::Result<()> {
    crash_rounds(ROUNDS, false)
}

#[test]
fn power_failure_after_sigkill_loses_nothing_durable() -> anyhow::Result<()> {
    crash_rounds(ROUNDS / 2, true)
}

/// The bytes each segment may keep after a power cut: its recorded synced length.
fn synced_lengths(dir: &Path) -> anyhow::Result<BTreeMap<std::path::PathBuf, u64>> {
    let mut out = BTreeMap::new();
    for ent in std::fs::read_dir(dir)? {
        let path = ent?.path();
        if path.extension().is_some_and(|x| x == "synced") {
            let len = std::fs::read_to_string(&path)?.trim().parse()?;
            out.insert(path.with_extension(""), len);
        }
    }
    Ok(out)
}

/// Cuts the log back to its synced lengths; afterwards no record may end past them.
fn power_cut(dir: &Path, round: u64) -> anyhow::Result<()> {
    let synced = synced_lengths(dir)?;
    let mode = match round % 2 {
        0 => PowerCutMode::Zero,
        _ => PowerCutMode::Garbage { seed: round },
    };
    let cut = cut_to_synced(dir, mode)?;
    let torn: Vec<_> = cut.segments.iter().filter(|s| s.garbage_len > 0).collect();
    println!("round {round}: power cut {mode:?}, torn pages {torn:?}");
    for r in raft_log::damage::records(dir)? {
        let limit = synced.get(&r.path).copied().unwrap_or(0);
        anyhow::ensure!(
            r.offset + r.len <= limit,
            "round {round}: entry {} survived past the synced length {limit}",
            r.index
        );
    }
    Ok(())
}

fn crash_rounds(rounds: u64, track: bool) -> anyhow::Result<()> {
    if std::env::var("RAFTLOG_CRASH_CHILD").is_ok() {
        return Ok(());
    }
    let seed = std::env::var("RAFTLOG_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_c0de);
    println!("crash test seed {seed} (set RAFTLOG_CRASH_SEED to reproduce)");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir()?;
    let mut expect = Expect::default();
    let mut damaged = 0;
    for round in 0..rounds {
        let kill_after = Duration::from_millis(rng.random_range(20..400));
        run_child(dir.path(), rng.random(), kill_after, &mut expect, track)?;
        if track {
            power_cut(dir.path(), round)?;
        }
        let (last, damage) = verify(dir.path(), &expect, round, track)?;
        damaged += u64::from(damage.is_some());
        println!("round {round}: killed after {kill_after:?}, last index {last}, damage {damage:?}");
        // What survived is the new baseline: the next child continues from it.
        expect.durable.retain(|&i, _| i <= last);
        expect.pending_cut = None;
    }
    println!("{rounds} rounds, {damaged} recoveries cut a torn tail");
    let durable = expect.durable.len();
    anyhow::ensure!(
        durable > 100,
        "too little work was done to mean anything: {durable} entries"
    );
    Ok(())
}
