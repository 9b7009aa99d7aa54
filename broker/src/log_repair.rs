//! Starting on a commit log that lost entries it had made durable (bit flips, a truncated
//! segment), and lifting the vote fence (see `raft::vote_fence`) once the node holds
//! everything committed again.
//!
//! Evidence of such a loss, any one of which fences the node:
//! - recovery found valid data after the damage, or a preallocated file cut short
//!   (`RecoveryReport::damage.durable_lost`; the log keeps it as `CommitLog::vote_fence`
//!   until cleared, across restarts);
//! - the recorded commit point lies beyond the cut: entries known committed are gone;
//! - the state machine applied entries the log no longer holds.
//!
//! In the last case the state machine also starts afresh: message bodies live only in the
//! log, so positions it recorded for lost entries would point at nothing. It is rebuilt
//! from the kept log (openraft re-applies it) and from the leader.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use openraft::async_runtime::WatchReceiver;
use raft_log::CommitLog;
use raft_log::RecoveryReport;
use tokio::sync::watch;

use crate::context::BrokerRaft;
use crate::node::StartError;
use crate::raft::vote_fence::VoteFence;
use crate::sm::SmConfig;
use crate::sm::StateMachine;

/// The first lost index if this node must not vote, recorded durably in the log.
pub(crate) fn lost_from(
    log: &CommitLog,
    report: &RecoveryReport,
    sm_applied: Option<u64>,
) -> Result<Option<u64>, StartError> {
    let mut lost = log.vote_fence();
    let mut note = |from: u64| lost = Some(lost.map_or(from, |l| l.min(from)));
    if let Some(d) = &report.damage {
        let committed = raft_log::storage::stored_committed_index(log)
            .map_err(|e| StartError::Raft(format!("read commit point: {e}")))?;
        if committed.is_some_and(|c| c >= d.index) {
            tracing::warn!(
                committed,
                cut = d.index,
                "recovery cut the log below its commit point"
            );
            note(d.index);
        }
    }
    let next = log.bounds().last.map_or(1, |p| p.index + 1);
    if sm_applied.is_some_and(|a| a >= next) {
        note(next);
    }
    if let Some(from) = lost
        && log.vote_fence() != Some(from)
    {
        log.set_vote_fence(from)?;
    }
    if let Some(from) = lost {
        tracing::warn!(
            lost_from = from,
            "commit log lost entries it had made durable: this node takes no part in elections until it holds everything committed again"
        );
    }
    Ok(lost)
}

/// Opens the state machine; starts it afresh if it applied entries the log no longer holds.
/// Also returns the index it had applied before any such restart.
pub(crate) async fn open_state_machine(
    dir: &Path,
    log: &CommitLog,
) -> Result<(StateMachine, Option<u64>), StartError> {
    let sm = open_sm(dir).await?;
    let applied = sm.applied()?.0.map(|l| l.index);
    let bounds = log.bounds();
    let next = bounds.last.map_or(1, |p| p.index + 1);
    if applied.is_none_or(|a| a < next) {
        return Ok((sm, applied));
    }
    if bounds.purged.is_some() {
        // The kept log does not start at the beginning, so the state machine cannot be
        // rebuilt from it; the node needs a full copy from its peers.
        return Err(StartError::Raft(format!(
            "the state machine applied up to index {applied:?} but the commit log ends before index {next} and was purged, so the state cannot be rebuilt here; move this node's data directory away and restart it to copy everything from its peers"
        )));
    }
    tracing::warn!(
        applied,
        log_next = next,
        dir = %dir.display(),
        "state machine is ahead of the recovered commit log; rebuilding it from the log and the leader"
    );
    drop(sm);
    std::fs::remove_dir_all(dir).map_err(|source| StartError::DataDir {
        path: dir.display().to_string(),
        source,
    })?;
    Ok((open_sm(dir).await?, applied))
}

async fn open_sm(dir: &Path) -> Result<StateMachine, StartError> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || StateMachine::open(dir, SmConfig::default()))
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?
        .map_err(StartError::from)
}

/// Waits until the fenced node has applied a commit point a leader announced for its own
/// term, then clears the fence (durably first) and lets the node vote and campaign again.
pub(crate) async fn lift_when_repaired(
    raft: BrokerRaft,
    log: CommitLog,
    fence: Arc<VoteFence>,
    mut stop: watch::Receiver<bool>,
) {
    let started = Instant::now();
    let mut metrics = raft.metrics();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        let applied = metrics.borrow_watched().last_applied.as_ref().map(|l| l.index);
        let target = fence.target();
        if fence.applied(applied) {
            let cleared = tokio::task::spawn_blocking(move || log.clear_vote_fence()).await;
            if !matches!(cleared, Ok(Ok(()))) {
                // The log is poisoned and Raft stops; a restart finds the fence still set.
                tracing::error!(?cleared, "could not clear the vote fence");
                return;
            }
            raft.runtime_config().elect(true);
            tracing::info!(
                applied,
                target,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "vote fence lifted: the log holds everything committed again"
            );
            return;
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
