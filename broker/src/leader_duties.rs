//! Work only the leader does, started when this node gains leadership and stopped when it
//! loses it (or shuts down).
//!
//! The one duty today is the dead-letter sweep: a popped message whose consumer never
//! acknowledges it, and that has used up its delivery attempts, must reach the group's
//! dead-letter topic even if nobody pops that queue again. Every
//! [`SWEEP_INTERVAL`] the leader scans the groups' pop states and, for each queue holding
//! such a message, proposes a pop of zero messages, which dead-letters exhausted messages
//! and hands out nothing (`sm::pop`). Expired messages with attempts left stay where they
//! are: the next receive of their group delivers them again.

use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;
use tokio::sync::watch;
use tracing::Instrument;

use crate::command::Command;
use crate::command::Header;
use crate::command::PopRequest;
use crate::command::TagFilter;
use crate::context::Broker;
use crate::context::now_ms;
use crate::sm::read::PopEntry;

/// How often the leader sweeps.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(5);
/// Pop states read per page of a sweep.
const SCAN_PAGE: usize = 256;
/// Most queues swept per round (bounds the Raft writes one round makes).
const MAX_SWEEPS_PER_ROUND: usize = 64;

/// Watches this node's role; runs the duties while it leads, until `stop` turns true.
///
/// The role comes from the server metrics, which change with role, vote and membership
/// only (the full metrics change several times per round).
pub async fn run(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let mut metrics = broker.raft.server_metrics();
    let mut leading = false;
    let mut ticker = tokio::time::interval(SWEEP_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (state, term) = {
            let m = metrics.borrow_watched();
            (m.state, m.vote.leader_id.term)
        };
        let now_leading = state == ServerState::Leader;
        if now_leading != leading {
            leading = now_leading;
            if leading {
                tracing::info!(term, "gained leadership; leader duties start");
            } else {
                tracing::info!(term, ?state, "leader duties stop");
            }
        }
        tokio::select! {
            _ = stopped(&mut stop) => return,
            changed = metrics.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = ticker.tick(), if leading => {
                sweep(&broker).instrument(tracing::info_span!("dead_letter_sweep", term)).await;
            }
        }
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Queues holding a message that is invisible no longer and out of attempts.
pub fn exhausted(entries: &[PopEntry], now_ms: u64, max_attempts: u32) -> Vec<(String, String, u32)> {
    entries
        .iter()
        .filter(|e| {
            e.state
                .inflight
                .values()
                .any(|i| i.visible_at_ms <= now_ms && i.attempt >= max_attempts)
        })
        .map(|e| (e.group.clone(), e.topic.clone(), e.queue_id))
        .collect()
}

/// One sweep round over all pop states.
async fn sweep(broker: &Broker) {
    let max_attempts = broker.config.max_delivery_attempts;
    let mut after: Option<Vec<u8>> = None;
    let mut swept = 0;
    loop {
        let page = match broker.sm.scan_pop_states(after.as_deref(), SCAN_PAGE) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "dead-letter sweep cannot read pop states");
                return;
            }
        };
        let (entries, last) = page;
        for (group, topic, queue_id) in exhausted(&entries, now_ms(), max_attempts) {
            if swept >= MAX_SWEEPS_PER_ROUND || !broker.is_leader() {
                return;
            }
            swept += 1;
            let req = PopRequest {
                group,
                topic,
                queue_ids: vec![queue_id],
                max: 0,
                invisible_ms: 0,
                now_ms: now_ms(),
                filter: TagFilter::All,
                fifo: false,
                max_attempts,
            };
            let cmd = match Command::control(Header::Pop(req)) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot build a sweep command");
                    continue;
                }
            };
            if let Err(e) = broker.write(cmd).await {
                tracing::info!(error = %e, "dead-letter sweep stopped");
                return;
            }
        }
        // A short page means the scan reached the end.
        if entries.len() < SCAN_PAGE || last.is_none() {
            return;
        }
        after = last;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sm::PopState;
    use crate::sm::records::Inflight;

    fn entry(queue_id: u32, inflight: &[(u64, u64, u32)]) -> PopEntry {
        let mut state = PopState::default();
        for &(offset, visible_at_ms, attempt) in inflight {
            state.inflight.insert(
                offset,
                Inflight {
                    visible_at_ms,
                    attempt,
                },
            );
        }
        PopEntry {
            group: "g".into(),
            topic: "t".into(),
            queue_id,
            state,
        }
    }

    #[test]
    fn only_expired_and_exhausted_messages_need_a_sweep() {
        let entries = vec![
            entry(0, &[(1, 100, 17)]), // expired, exhausted
            entry(1, &[(1, 300, 17)]), // exhausted but still invisible
            entry(2, &[(1, 100, 3)]),  // expired, attempts left
            entry(3, &[]),
        ];
        assert_eq!(exhausted(&entries, 200, 17), vec![("g".into(), "t".into(), 0)]);
        assert_eq!(exhausted(&entries, 300, 17).len(), 2);
    }
}
