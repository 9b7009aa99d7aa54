//! The runner: starts a cluster, drives the workload, injects faults, heals, drains,
//! and checks the history it wrote.
//!
//! 1. [`cluster`]: two name servers and `groups` broker groups of three processes on
//!    loopback (the test kit), a FIFO topic with 8 queues on each group;
//! 2. [`consumers`] (an ordered push-consumer group) and [`producers`] (sequenced sends
//!    per sharding key) record into one history ([`recorder`]);
//! 3. the [`nemesis`] carries out a seeded [`schedule`] for the run's duration;
//! 4. then it heals everything, stops the producers, [`drain`]s the consumers, tears the
//!    cluster down (keeping the processes' logs) and runs the [`check`](crate::check).
//!
//! Everything after the duration is bounded by [`END_BUDGET`]. Raising the `stop`
//! signal (Ctrl-C) ends the nemesis at once (healing its fault), skips the drain and
//! the check, and tears down.

pub mod cluster;
pub mod consumers;
pub mod drain;
pub mod nemesis;
pub mod procs;
pub mod producers;
pub mod recorder;
pub mod schedule;

mod outcome;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

pub use outcome::RunOutcome;

use self::cluster::ChaosCluster;
use self::consumers::Consumers;
use self::producers::ProducerPlan;
use self::producers::Producers;
use self::recorder::Recorder;
use self::schedule::FaultKind;
use crate::error::ChaosError;

/// Longest time from the end of the run's duration to the end of the drain.
pub const END_BUDGET: Duration = Duration::from_secs(50);
/// Longest wait for every group to have a leader again after healing.
const HEAL_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest wait for the producers' last sends.
const PRODUCERS_STOP: Duration = Duration::from_secs(12);
/// Longest wait for the consumers to stop.
const CONSUMERS_STOP: Duration = Duration::from_secs(8);

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptions {
    /// How long the workload and the nemesis run (healing and draining come after).
    pub duration: Duration,
    /// Seed of the fault schedule.
    pub seed: u64,
    /// Broker groups of three nodes.
    pub groups: usize,
    /// The history file to write (must not exist; its folder is created).
    pub history: PathBuf,
    /// How the producers work.
    pub producers: ProducerPlan,
    /// Members of the consumer group.
    pub consumers: usize,
    /// The fault kinds the nemesis draws from (none: no faults).
    pub faults: Vec<FaultKind>,
    /// Take the kinds in turn instead of drawing them.
    pub cycle: bool,
}

impl RunOptions {
    fn validate(&self) -> Result<(), ChaosError> {
        let p = &self.producers;
        let bad = |what: &str| Err(ChaosError::Setup(what.to_owned()));
        if self.duration < Duration::from_secs(1) {
            return bad("the duration must be at least 1 s");
        }
        if !(1..=4).contains(&self.groups) {
            return bad("groups must be 1 to 4");
        }
        if p.producers == 0 || p.keys_per_producer == 0 || p.rate == 0 || self.consumers == 0 {
            return bad("producers, keys per producer, rate and consumers must be positive");
        }
        Ok(())
    }

    /// Where the processes' logs are kept: `<history stem>-logs/` next to the history.
    pub fn logs_dir(&self) -> PathBuf {
        let stem = self
            .history
            .file_stem()
            .map_or_else(|| "history".into(), |s| s.to_string_lossy().into_owned());
        self.history.with_file_name(format!("{stem}-logs"))
    }
}

/// Prints progress lines stamped with the time since the run started.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }

    /// Prints `what` on stderr with the elapsed time.
    pub fn say(&self, what: impl std::fmt::Display) {
        eprintln!("[{:>7.1}s] {what}", self.start.elapsed().as_secs_f64());
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs a chaos test; see the module documentation. `stop` interrupts it.
pub async fn run(options: &RunOptions, mut stop: watch::Receiver<bool>) -> Result<RunOutcome, ChaosError> {
    options.validate()?;
    let mut outcome = RunOutcome::new(options);
    let clock = Clock::new();
    let steps = schedule::schedule(options.seed, options.duration, &options.faults, options.cycle);
    clock.say(format!("seed {}; {} faults planned", options.seed, steps.len()));
    for s in &steps {
        clock.say(format!("  after {:?}: {} for {:?}", s.gap, s.kind, s.hold));
    }
    if let Some(dir) = options.history.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let recorder = Arc::new(Recorder::create(&options.history)?);
    let mut cluster = tokio::select! {
        c = ChaosCluster::start(options.groups, options.faults.iter().any(|k| k.cuts_links())) => c?,
        () = stopped(&mut stop) => return Err(ChaosError::Setup("interrupted while starting".into())),
    };
    clock.say(format!("cluster up; name servers {:?}", cluster.access_points()));
    let aps = cluster.access_points();
    let consumers = Consumers::start(&aps, options.consumers, recorder.clone()).await?;
    let producers = Producers::start(&aps, options.producers, recorder.clone()).await?;
    let ticker = tokio::spawn(report_progress(recorder.clone(), clock));
    let until = Instant::now() + options.duration;
    let main = nemesis::run(&mut cluster, &recorder, &steps, until, &mut stop, &clock).await;
    ticker.abort();
    outcome.nemesis = main?;
    sleep_or_stop(until.saturating_duration_since(Instant::now()), &mut stop).await;
    outcome.interrupted = *stop.borrow();
    finish(
        &mut cluster,
        &recorder,
        producers,
        consumers,
        &mut stop,
        &clock,
        &mut outcome,
    )
    .await?;
    recorder.close()?;
    match cluster.copy_logs(&options.logs_dir()) {
        Ok(_) => outcome.logs = Some(options.logs_dir()),
        Err(e) => clock.say(format!("could not keep the logs: {e}")),
    }
    drop(cluster);
    clock.say("cluster torn down");
    if !outcome.interrupted {
        let history = crate::history::read_history_file(&options.history)?;
        outcome.report = Some(crate::check(&history.records)?);
    }
    Ok(outcome)
}

/// Heals, stops the producers, drains and stops the consumers, within [`END_BUDGET`].
async fn finish(
    cluster: &mut ChaosCluster,
    recorder: &Recorder,
    producers: Producers,
    consumers: Consumers,
    stop: &mut watch::Receiver<bool>,
    clock: &Clock,
    outcome: &mut RunOutcome,
) -> Result<(), ChaosError> {
    let finish_by = Instant::now() + END_BUDGET;
    if !outcome.interrupted {
        outcome.nemesis.exits.extend(cluster.reap_exited());
    }
    clock.say("healing: every node and name server up, nothing paused");
    outcome.leaderless = cluster.heal(HEAL_TIMEOUT).await?;
    clock.say("stopping the producers");
    outcome.abandoned_sends = producers.stop(PRODUCERS_STOP).await;
    if !outcome.interrupted {
        clock.say("draining");
        let drain_until = finish_by - CONSUMERS_STOP;
        let drained = drain::drain(recorder, drain_until, stop, clock).await;
        clock.say(format!("drained in {:.1?}", drained.waited));
        outcome.drained = Some(drained);
        // Interrupted while draining: the drain is incomplete, so is the check.
        outcome.interrupted = *stop.borrow();
    }
    consumers.shutdown(CONSUMERS_STOP).await;
    if !outcome.interrupted {
        outcome.nemesis.exits.extend(cluster.reap_exited());
    }
    Ok(())
}

/// Completes once `stop` is raised (never if it cannot be any more).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Waits `d`; true if `stop` was raised meanwhile (or before).
pub(crate) async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        () = tokio::time::sleep(d) => false,
        () = stopped(stop) => true,
    }
}

/// Prints the history's counts every 10 s.
async fn report_progress(recorder: Arc<Recorder>, clock: Clock) {
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let p = recorder.progress();
        clock.say(format!(
            "sends {} (acked {}), deliveries {}, acked not yet consumed {}, faults {}",
            p.sends, p.acked, p.deliveries, p.acked_unconsumed, p.faults
        ));
    }
}
