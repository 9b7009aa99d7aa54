//! What a run did and found, and its printed form.

use std::fmt;
use std::path::PathBuf;

use super::RunOptions;
use super::drain::Drained;
use super::nemesis::NemesisLog;
use crate::report::Report;

/// The result of [`run`](super::run).
#[derive(Debug)]
pub struct RunOutcome {
    /// The schedule's seed.
    pub seed: u64,
    /// When the run started, milliseconds since the Unix epoch.
    pub started_ms: u64,
    /// How to run the same schedule again.
    pub rerun: String,
    /// The history written.
    pub history: PathBuf,
    /// Where the processes' logs were kept, if they were.
    pub logs: Option<PathBuf>,
    /// What the nemesis did.
    pub nemesis: NemesisLog,
    /// Groups without a leader after healing.
    pub leaderless: Vec<String>,
    /// Producers whose last send was abandoned at the end.
    pub abandoned_sends: usize,
    /// How the drain ended (none when interrupted).
    pub drained: Option<Drained>,
    /// Whether the run was interrupted (then there is no report).
    pub interrupted: bool,
    /// The checker's report.
    pub report: Option<Report>,
}

impl RunOutcome {
    pub(super) fn new(options: &RunOptions) -> Self {
        let kinds: Vec<&str> = options.faults.iter().map(|k| k.name()).collect();
        let p = &options.producers;
        let mut rerun = format!(
            "raftmq-chaos run --seed {} --duration {}s --groups {} --producers {} --keys-per-producer {} --rate {} --consumers {} --faults {}",
            options.seed,
            options.duration.as_secs(),
            options.groups,
            p.producers,
            p.keys_per_producer,
            p.rate,
            options.consumers,
            if kinds.is_empty() {
                "none".to_owned()
            } else {
                kinds.join(",")
            },
        );
        if options.cycle {
            rerun.push_str(" --cycle");
        }
        Self {
            seed: options.seed,
            started_ms: super::recorder::now_ms(),
            rerun,
            history: options.history.clone(),
            logs: None,
            nemesis: NemesisLog::default(),
            leaderless: Vec::new(),
            abandoned_sends: 0,
            drained: None,
            interrupted: false,
            report: None,
        }
    }

    /// True when the check passed and no broker exited by itself.
    pub fn passed(&self) -> bool {
        !self.interrupted && self.nemesis.exits.is_empty() && self.report.as_ref().is_some_and(Report::passed)
    }
}

impl RunOutcome {
    /// One line per fault: when (since the run started), what, how long, recovery time.
    fn write_faults(&self, f: &mut fmt::Formatter<'_>, report: &Report) -> fmt::Result {
        // As the report's table: seconds with two decimals, truncated.
        let secs = |ms: u64| format!("{}.{:02}s", ms / 1000, ms % 1000 / 10);
        for fault in &report.faults {
            let held = fault
                .end_ms
                .map_or_else(|| "-".to_owned(), |end| secs(end.saturating_sub(fault.start_ms)));
            let rto = fault.rto_ms.map_or_else(|| "never".to_owned(), secs);
            writeln!(
                f,
                "fault at {:>8}  {:<13} {:<12} held {held:>6}  rto {rto:>6}",
                secs(fault.start_ms.saturating_sub(self.started_ms)),
                fault.kind,
                fault.target
            )?;
        }
        if !report.faults.is_empty() {
            writeln!(f)?;
        }
        Ok(())
    }
}

impl fmt::Display for RunOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(report) = &self.report {
            write!(f, "{report}")?;
            writeln!(f)?;
            self.write_faults(f, report)?;
        }
        let n = &self.nemesis;
        writeln!(
            f,
            "faults injected       {} ({} skipped)",
            n.injected,
            n.skipped.len()
        )?;
        for s in &n.skipped {
            writeln!(f, "skipped: {s}")?;
        }
        writeln!(f, "brokers that exited   {}", n.exits.len())?;
        for e in &n.exits {
            writeln!(f, "exited: {e}")?;
        }
        if !self.leaderless.is_empty() {
            writeln!(f, "no leader after heal  {}", self.leaderless.join(", "))?;
        }
        if self.abandoned_sends > 0 {
            writeln!(f, "abandoned sends       {}", self.abandoned_sends)?;
        }
        if let Some(d) = &self.drained {
            let how = if d.settled {
                "settled"
            } else {
                "cut at the deadline"
            };
            writeln!(
                f,
                "drain                 {:.1?}, {how}, {} acked messages unconsumed at its end",
                d.waited, d.acked_unconsumed
            )?;
        }
        if self.interrupted {
            writeln!(f, "INTERRUPTED: not drained, not checked")?;
        }
        writeln!(f, "history               {}", self.history.display())?;
        if let Some(logs) = &self.logs {
            writeln!(f, "logs                  {}", logs.display())?;
        }
        writeln!(f, "seed                  {}", self.seed)?;
        writeln!(f, "rerun                 {}", self.rerun)?;
        let verdict = match (self.interrupted, self.passed()) {
            (true, _) => "INTERRUPTED",
            (false, true) => "PASS",
            (false, false) => "FAIL",
        };
        writeln!(f, "verdict               {verdict}")
    }
}
