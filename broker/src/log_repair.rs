//! Starting on a commit log that lost entries it had made durable (bit flips, a truncated
//! segment), and lifting the vote fence (see `raft::vote_fence`) once the node holds
//! everything committed again.
//!
//! Only the log's own evidence fences the node: recovery found valid data after the
//! damage, or a preallocated file cut short (`RecoveryReport::damage.durable_lost`), and
//! recorded the fence in its meta file before cutting anything (`CommitLog::vote_fence`).
//! A recorded commit point beyond the recovered log, or a state machine ahead of it, is
//! no such evidence: openraft lets a follower commit and apply entries it has handed to
//! the log but not yet fsynced, and a plain SIGKILL loses those — entries the node never
//! acknowledged.
//!
//! A state machine ahead of the log does start afresh, though: message bodies live only in
//! the log, so positions it recorded for entries the log no longer holds would point at
//! nothing. It is rebuilt from the kept log (openraft re-applies it) and from the leader.

use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use openraft::async_runtime::WatchReceiver;
use raft_log::CommitLog;
use tokio::sync::watch;

use crate::context::BrokerRaft;
use crate::node::StartError;
use crate::raft::vote_fence::VoteFence;
use crate::sm::SmConfig;
use crate::sm::StateMachine;

/// The first lost index if this node must not vote (recorded by the log's recovery).
pub(crate) fn lost_from(log: &CommitLog) -> Option<u64> {
    let lost = log.vote_fence();
    if let Some(from) = lost {
        tracing::warn!(
            lost_from = from,
            "commit log lost entries it had made durable: this node takes no part in elections until it holds everything committed again"
        );
    }
    lost
}

/// Opens the state machine; starts it afresh if it applied entries the log no longer holds.
pub(crate) async fn open_state_machine(dir: &Path, log: &CommitLog) -> Result<StateMachine, StartError> {
    let discarded = discarded_path(dir);
    if discarded.exists() {
        remove_dir(&discarded)?;
    }
    let sm = open_sm(dir).await?;
    let applied = sm.applied()?.0.map(|l| l.index);
    let bounds = log.bounds();
    let next = bounds.last.map_or(1, |p| p.index + 1);
    if applied.is_none_or(|a| a < next) {
        return Ok(sm);
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
    // Renamed first (atomic, made durable), then deleted: a crash midway leaves either the
    // whole old state machine or none of it.
    let io = |source| StartError::DataDir {
        path: dir.display().to_string(),
        source,
    };
    std::fs::rename(dir, &discarded).map_err(io)?;
    if let Some(parent) = dir.parent() {
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    remove_dir(&discarded)?;
    open_sm(dir).await
}

fn discarded_path(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".discarded");
    dir.with_file_name(name)
}

fn remove_dir(dir: &Path) -> Result<(), StartError> {
    std::fs::remove_dir_all(dir).map_err(|source| StartError::DataDir {
        path: dir.display().to_string(),
        source,
    })
}

async fn open_sm(dir: &Path) -> Result<StateMachine, StartError> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || StateMachine::open(dir, SmConfig::default()))
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?
        .map_err(StartError::from)
}

/// Waits until the fenced node has applied the commit point `fence` waits for, then
/// clears the fence (durably first) and lets the node vote and campaign again.
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
