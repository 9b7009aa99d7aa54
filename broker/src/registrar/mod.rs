//! Registration with the name servers (`raftmq.namesrv.v1.NamesrvService/Register`).
//!
//! Every node of a group, leader or not, registers with every configured name server:
//! its group, node id, Raft role, term, the leader it knows, its client address, its last
//! applied log index and every topic of the group. It registers every
//! `register_interval_ms` (30 s) and at once when its [`Announce`] changes: role, term,
//! known leader, or the group's topics (the state machine's topic watch, bumped when a
//! topic is created, updated or deleted and when a snapshot is installed). The applied
//! index moves with every entry and triggers nothing.
//!
//! One task follows Raft's server metrics and the topic watch and publishes the current
//! [`Announce`] on a watch channel; one task per name server ([`session`]) decides with its
//! own sans-IO [`Schedule`] when to register, reads the registration from the state
//! machine only when about to send, and retries a failure after 500 ms, doubling up to the
//! interval.

pub mod schedule;
pub mod session;

use std::sync::Arc;

use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;
use raftmq_proto::raftmq::namesrv::v1::Role;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

pub use self::schedule::Announce;
pub use self::schedule::Schedule;
pub use self::schedule::Timing;
use crate::context::Broker;
use crate::raft::types::TypeConfig;

/// The wire role of a Raft state; `None` for a Raft that is shutting down.
pub fn role_of(state: ServerState) -> Option<Role> {
    match state {
        ServerState::Leader => Some(Role::Leader),
        ServerState::Follower => Some(Role::Follower),
        ServerState::Candidate => Some(Role::Candidate),
        ServerState::Learner => Some(Role::Learner),
        ServerState::Shutdown => None,
    }
}

/// What a node with these server metrics and this topic-change count announces.
pub fn announce_of(
    metrics: &openraft::metrics::RaftServerMetrics<TypeConfig>,
    topics: u64,
) -> Option<Announce> {
    Some(Announce {
        role: role_of(metrics.state)?,
        term: metrics.vote.leader_id.term,
        leader: metrics.current_leader,
        topics,
    })
}

/// Registers this node with every name server of its configuration until `stop` turns
/// true; returns at once when there is none.
pub async fn run(broker: Arc<Broker>, stop: watch::Receiver<bool>) {
    let announce = watch::Sender::new(None);
    let mut sessions = JoinSet::new();
    for addr in &broker.config.namesrv {
        let span = tracing::info_span!("namesrv_registration", namesrv = %addr);
        let task = session::run(broker.clone(), addr.clone(), announce.subscribe(), stop.clone());
        sessions.spawn(task.instrument(span));
    }
    if sessions.is_empty() {
        return;
    }
    tracing::info!(
        namesrv = ?broker.config.namesrv,
        interval_ms = broker.config.register_interval_ms,
        "registering with name servers"
    );
    follow(&broker, &announce, stop).await;
    while sessions.join_next().await.is_some() {}
}

/// Publishes this node's [`Announce`] whenever it changes, until `stop` turns true.
async fn follow(
    broker: &Broker,
    announce: &watch::Sender<Option<Announce>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut server = broker.raft.server_metrics();
    let mut topics = broker.sm.subscribe_topic_changes();
    loop {
        let version = *topics.borrow_and_update();
        let key = announce_of(&server.borrow_watched(), version);
        announce.send_if_modified(|current| {
            let changed = *current != key;
            if changed {
                tracing::debug!(?key, "announcement changed");
                *current = key;
            }
            changed
        });
        let open = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            changed = server.changed() => changed.is_ok(),
            changed = topics.changed() => changed.is_ok(),
        };
        if !open {
            // Raft or the state machine is gone: keep the last announcement until stopped.
            let _ = stop.wait_for(|s| *s).await;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_running_raft_state_has_a_wire_role() {
        assert_eq!(role_of(ServerState::Leader), Some(Role::Leader));
        assert_eq!(role_of(ServerState::Follower), Some(Role::Follower));
        assert_eq!(role_of(ServerState::Candidate), Some(Role::Candidate));
        assert_eq!(role_of(ServerState::Learner), Some(Role::Learner));
        assert_eq!(role_of(ServerState::Shutdown), None);
    }
}
