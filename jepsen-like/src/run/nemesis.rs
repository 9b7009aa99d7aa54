//! The nemesis: carries out a [`schedule`](super::schedule) against the cluster, one
//! fault at a time, recording each as a `fault` start and end in the history.
//!
//! A fault's start is recorded just before it is applied (a cut of links: just after,
//! see [`run`]) and its end just after it is healed, so its window covers its effect. When the run's time is up or it is
//! interrupted, the fault being held is healed at once and no other starts.

use std::time::Duration;

use raft_log::damage::TruncateAt;
use raftmq_testkit::netns::Direction;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Clock;
use super::cluster::ChaosCluster;
use super::cluster::LogDamage;
use super::cluster::NAMESRVS;
use super::cluster::NodeRef;
use super::recorder::Recorder;
use super::schedule::FaultKind;
use super::schedule::Step;
use super::sleep_or_stop;
use crate::error::ChaosError;
use crate::history::Event;
use crate::history::Fault;
use crate::history::FaultPhase;
use crate::history::ProcessId;

/// The nemesis's process id in the history.
pub const NEMESIS: ProcessId = 0;
/// How long the nemesis looks for a leader to strike before it skips the step.
const FIND_LEADER: Duration = Duration::from_secs(5);

/// A fault being held.
#[derive(Debug, Clone, Copy)]
enum Applied {
    Killed(NodeRef),
    Paused(NodeRef),
    NamesrvDown(usize),
    Cut(NodeRef, Direction),
    PowerFailure(usize, u64),
    /// Killed, and its log damaged while it is down, by `damage` with a seed.
    Damaged(NodeRef, LogDamage, u64),
}

/// What the nemesis did.
#[derive(Debug, Default)]
pub struct NemesisLog {
    /// Faults injected (and healed).
    pub injected: usize,
    /// Steps skipped, with the reason (e.g. no leader to strike).
    pub skipped: Vec<String>,
    /// Broker nodes that exited although nobody killed them.
    pub exits: Vec<String>,
}

/// Runs `steps` until `until` or until `stop` is raised.
pub async fn run(
    cluster: &mut ChaosCluster,
    recorder: &Recorder,
    steps: &[Step],
    until: Instant,
    stop: &mut watch::Receiver<bool>,
    clock: &Clock,
) -> Result<NemesisLog, ChaosError> {
    let mut log = NemesisLog::default();
    for step in steps {
        if Instant::now() + step.gap >= until || sleep_or_stop(step.gap, stop).await {
            break;
        }
        let Some((applied, target)) = pick(cluster, step).await else {
            let why = format!("{}: no target (no leader within {FIND_LEADER:?})", step.kind);
            clock.say(format!("skipped {why}"));
            log.skipped.push(why);
            continue;
        };
        // A cut takes effect rule by rule, tens of milliseconds after it starts, and a power
        // failure once the group's last node is down: they are recorded once in place, so
        // that sends completing meanwhile do not count as the recovery. A kill or a stop of
        // one process takes effect at once.
        let cut = step.kind.cuts_links() || step.kind == FaultKind::PowerFailure;
        if !cut {
            fault(recorder, step.kind, &target, FaultPhase::Start);
        }
        clock.say(format!("{} {target} for {:?}", step.kind, step.hold));
        let result = apply(cluster, applied);
        if cut {
            fault(recorder, step.kind, &target, FaultPhase::Start);
        }
        let hold = step.hold.min(until.saturating_duration_since(Instant::now()));
        if result.is_ok() {
            sleep_or_stop(hold, stop).await;
        }
        let healed = heal(cluster, applied);
        fault(recorder, step.kind, &target, FaultPhase::End);
        clock.say(format!("healed {} {target}", step.kind));
        result.and(healed)?;
        log.injected += 1;
        if *stop.borrow() {
            // Interrupted from a terminal, the brokers got the SIGINT too: not a crash.
            break;
        }
        for exit in cluster.reap_exited() {
            clock.say(format!("UNEXPECTED: {exit}"));
            log.exits.push(exit);
        }
    }
    Ok(log)
}

fn fault(recorder: &Recorder, kind: FaultKind, target: &str, phase: FaultPhase) {
    recorder.record(
        NEMESIS,
        Event::Fault(Fault {
            kind: kind.name().to_owned(),
            target: target.to_owned(),
            phase,
        }),
    );
}

/// The step's target among the candidates of the moment, and its name.
async fn pick(cluster: &ChaosCluster, step: &Step) -> Option<(Applied, String)> {
    let groups = cluster.groups() as u64;
    let g = usize::try_from(step.pick.checked_rem(groups)?).ok()?;
    let node = |id: u64| (g, id);
    let applied = match step.kind {
        FaultKind::KillLeader => Applied::Killed(node(cluster.wait_leader(g, FIND_LEADER).await?)),
        FaultKind::PauseLeader => Applied::Paused(node(cluster.wait_leader(g, FIND_LEADER).await?)),
        FaultKind::KillNode => Applied::Killed(node(any_node(cluster, g, step.pick / groups)?)),
        FaultKind::KillNamesrv => Applied::NamesrvDown(usize::try_from(step.pick % NAMESRVS as u64).ok()?),
        FaultKind::PartitionLeader => {
            Applied::Cut(node(cluster.wait_leader(g, FIND_LEADER).await?), Direction::Both)
        }
        FaultKind::PartitionLeaderIn => Applied::Cut(
            node(cluster.wait_leader(g, FIND_LEADER).await?),
            Direction::Inbound,
        ),
        FaultKind::PartitionLeaderOut => Applied::Cut(
            node(cluster.wait_leader(g, FIND_LEADER).await?),
            Direction::Outbound,
        ),
        FaultKind::PartitionFollower => {
            let leader = cluster.wait_leader(g, FIND_LEADER).await?;
            let followers: Vec<u64> = cluster
                .node_ids(g)
                .into_iter()
                .filter(|&id| id != leader)
                .collect();
            let ix = (step.pick / groups).checked_rem(followers.len() as u64)?;
            Applied::Cut(node(*followers.get(usize::try_from(ix).ok()?)?), Direction::Both)
        }
        FaultKind::PowerFailure => Applied::PowerFailure(g, step.pick),
        FaultKind::FlipBits | FaultKind::TruncateSegment => {
            let how = match (step.kind, step.pick % 2) {
                (FaultKind::FlipBits, _) => LogDamage::FlipBits,
                (_, 0) => LogDamage::Truncate(TruncateAt::Boundary),
                _ => LogDamage::Truncate(TruncateAt::MidRecord),
            };
            Applied::Damaged(node(any_node(cluster, g, step.pick / groups)?), how, step.pick)
        }
    };
    let target = match applied {
        Applied::PowerFailure(g, _) => cluster.group_name(g).to_owned(),
        Applied::Killed(n) | Applied::Paused(n) | Applied::Cut(n, _) | Applied::Damaged(n, ..) => {
            cluster.node_name(n)
        }
        Applied::NamesrvDown(i) => format!("namesrv-{i}"),
    };
    Some((applied, target))
}

/// The node of group `g` that `pick` names, leader or follower.
fn any_node(cluster: &ChaosCluster, g: usize, pick: u64) -> Option<u64> {
    let ids = cluster.node_ids(g);
    let ix = pick.checked_rem(ids.len() as u64)?;
    ids.get(usize::try_from(ix).ok()?).copied()
}

fn apply(cluster: &mut ChaosCluster, applied: Applied) -> Result<(), ChaosError> {
    match applied {
        Applied::Killed(n) => cluster.kill_node(n),
        Applied::Paused(n) => cluster.pause_node(n),
        Applied::NamesrvDown(i) => cluster.kill_namesrv(i),
        Applied::Cut(n, direction) => cluster.partition(n, direction),
        Applied::Damaged(n, how, seed) => cluster.damage_log(n, how, seed).map(|what| {
            println!(
                "damaged the log of {} while it was down: {what}",
                cluster.node_name(n)
            );
        }),
        Applied::PowerFailure(g, seed) => cluster.power_failure(g, seed).map(|torn| {
            println!(
                "power failure of {}: logs cut back to what they had fsynced, {torn} torn pages",
                cluster.group_name(g)
            );
        }),
    }
}

fn heal(cluster: &mut ChaosCluster, applied: Applied) -> Result<(), ChaosError> {
    match applied {
        Applied::Killed(n) | Applied::Damaged(n, ..) => cluster.start_node(n),
        Applied::Paused(n) => cluster.resume_node(n),
        Applied::NamesrvDown(i) => cluster.restart_namesrv(i),
        Applied::Cut(n, _) => cluster.reconnect(n),
        Applied::PowerFailure(g, _) => cluster.power_on(g),
    }
}
