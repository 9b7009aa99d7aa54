//! What every request handler of a node shares: the Raft handle, the state machine, the
//! commit log, the registry of connected clients and the node's configuration.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use bytes::Bytes;

use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;
use openraft::errors::ClientWriteError;
use openraft::errors::ForwardReason;
use openraft::errors::RaftError;
use raft_log::CommitLog;

use crate::assignment::Consumers;
use crate::clients::ClientRegistry;
use crate::command::Command;
use crate::command::CommandResult;
use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::error::BrokerResult;
use crate::forward::Forwarder;
use crate::message::StoredMessage;
use crate::msg_index::MessageIndex;
use crate::raft::types::BrokerNode;
use crate::raft::types::NodeId;
use crate::raft::types::TypeConfig;
use crate::send_batcher::SendBatcher;
use crate::sm::StateMachine;

/// The broker group's Raft as a node runs it.
pub type BrokerRaft = openraft::Raft<TypeConfig, StateMachine>;

/// How long a write waits for a freshly elected leader to be confirmed by a quorum before it
/// gives up with `Unavailable`.
const LEADER_CONFIRM_WAIT: Duration = Duration::from_secs(3);

/// Shared state of a node's request handlers.
#[derive(Debug)]
pub struct Broker {
    pub id: NodeId,
    pub config: Arc<BrokerConfig>,
    pub raft: BrokerRaft,
    pub sm: StateMachine,
    pub log: CommitLog,
    pub clients: ClientRegistry,
    /// Push consumers' group membership and queue leases.
    pub consumers: Consumers,
    pub forwarder: Forwarder,
    /// Merges concurrent sends into shared Raft entries (leader only).
    pub sends: SendBatcher,
    /// This node's index of message ids and keys; `None` when `index.enabled` is off.
    pub index: Option<Arc<MessageIndex>>,
    /// Round-robin position for choosing queues.
    next_queue: AtomicU64,
    /// Turned true when the node starts shutting down: long polls and Telemetry streams
    /// end, so that open calls do not hold the shutdown up.
    stopping: tokio::sync::watch::Sender<bool>,
}

/// Room for the entry's own framing (log id, membership-free payload header, slot table)
/// besides the command's slots, per slot and in total.
const ENTRY_OVERHEAD_PER_SLOT: u64 = 16;
const ENTRY_OVERHEAD: u64 = 4096;

/// Refuses a command whose log entry would not fit one commit-log record.
pub fn check_entry_size(cmd: &Command, max_record: u64) -> BrokerResult<()> {
    use raft_log::SlottedPayload;
    let slots = cmd.slot_count() as u64;
    let bytes: u64 = (0..cmd.slot_count()).map(|i| cmd.slot(i).len() as u64).sum();
    let size = bytes + slots * ENTRY_OVERHEAD_PER_SLOT + ENTRY_OVERHEAD;
    if size > max_record {
        return Err(BrokerError::invalid(
            crate::error::InvalidCode::PayloadTooLarge,
            format!("the request needs a {size}-byte log entry, at most {max_record} bytes allowed"),
        ));
    }
    Ok(())
}

/// Milliseconds since the Unix epoch by this machine's clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Broker {
    pub fn new(
        config: Arc<BrokerConfig>,
        raft: BrokerRaft,
        sm: StateMachine,
        log: CommitLog,
        index: Option<Arc<MessageIndex>>,
    ) -> Self {
        let forwarder = Forwarder::new(config.forward_timeout());
        Self {
            id: config.node_id,
            clients: ClientRegistry::new(config.max_clients),
            consumers: Consumers::new(
                Duration::from_millis(config.consumer_expiry_ms),
                config.max_clients,
                Duration::from_millis(config.assignment_lease_ms),
            ),
            forwarder,
            sends: SendBatcher::new(config.send_batch),
            index,
            config,
            raft,
            sm,
            log,
            next_queue: AtomicU64::new(0),
            stopping: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Tells long-lived calls that the node is shutting down.
    pub fn begin_shutdown(&self) {
        self.stopping.send_replace(true);
    }

    /// Turns true when the node starts shutting down.
    pub fn stop_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// Whether the node is shutting down.
    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Resolves once the node starts shutting down.
    pub async fn stopped(&self) {
        let mut rx = self.stopping.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// The leader as this node knows it (itself included).
    pub fn leader(&self) -> Option<(NodeId, BrokerNode)> {
        let m = self.raft.metrics().borrow_watched().clone();
        let id = m.current_leader?;
        let node = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, node))
    }

    /// The leader, waiting up to `max` while none is known (an election is under way) or
    /// while the known one's client address is `unreachable` (it died and the followers have
    /// not yet elected another). The leader known at the end otherwise (or `None`).
    pub async fn await_leader(
        &self,
        max: Duration,
        unreachable: Option<&str>,
    ) -> Option<(NodeId, BrokerNode)> {
        let usable = |node: &BrokerNode| Some(node.client_addr.as_str()) != unreachable;
        let _ = tokio::time::timeout(max, self.leader_where(usable)).await;
        self.leader()
    }

    /// Resolves once a leader other than the one at client address `addr` is known (this
    /// node included); not while an election is under way.
    pub async fn leader_moved_from(&self, addr: &str) {
        self.leader_where(|node| node.client_addr != addr).await;
    }

    /// Resolves once a leader is known and `wanted` holds for it; never if Raft stops.
    async fn leader_where(&self, wanted: impl Fn(&BrokerNode) -> bool) {
        let mut metrics = self.raft.metrics();
        while !self.leader().is_some_and(|(_, node)| wanted(&node)) {
            if metrics.changed().await.is_err() {
                // Raft stopped: nothing moves any more.
                return std::future::pending().await;
            }
        }
    }

    /// Waits until a read of the state machine sees every write committed before the call:
    /// confirms leadership with a quorum (read index) and waits for the apply to catch up.
    /// A new leader's applied state may lag what the group committed.
    pub async fn read_barrier(&self) -> BrokerResult<()> {
        self.raft
            .ensure_linearizable(openraft::ReadPolicy::ReadIndex)
            .await
            .map(|_| ())
            .map_err(|e| BrokerError::Unavailable(format!("cannot confirm a linearizable read: {e}")))
    }

    /// This node's current Raft term.
    pub fn current_term(&self) -> u64 {
        self.raft.metrics().borrow_watched().current_term
    }

    /// Whether this node is the leader right now.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow_watched().state == ServerState::Leader
    }

    /// The address clients use to reach this node.
    pub fn client_addr(&self) -> &str {
        &self.config.client_addr
    }

    /// Proposes a command and waits until it is committed and applied here (leader only).
    /// A leader not yet confirmed by a quorum is waited for briefly. A command whose entry
    /// would exceed the commit log's record limit is refused here: the log would refuse
    /// the append, and a refused append stops Raft on the leader.
    pub async fn write(&self, cmd: Command) -> BrokerResult<CommandResult> {
        check_entry_size(&cmd, u64::from(self.config.log.max_record_size))?;
        if self.quorum_silent() {
            return Err(BrokerError::Unavailable(
                "this leader has heard from no quorum lately (cut off from its peers?)".into(),
            ));
        }
        let deadline = Instant::now() + LEADER_CONFIRM_WAIT;
        let mut delay = Duration::from_millis(5);
        loop {
            let written = tokio::select! {
                written = self.raft.client_write(cmd.clone()) => written,
                () = self.quorum_lost() => {
                    // The entry stays in this leader's log: it commits if the peers come
                    // back in time, or a new leader truncates it.
                    return Err(BrokerError::Timeout(
                        "this leader lost its quorum while the write was in flight; its outcome is unknown".into(),
                    ));
                }
            };
            match written {
                Ok(resp) => return Ok(resp.data),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))
                    if f.reason == ForwardReason::LeaseExpired && Instant::now() < deadline =>
                {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(100));
                }
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    if f.reason == ForwardReason::LeaseExpired {
                        return Err(BrokerError::Unavailable(
                            "the leader is not yet confirmed by a quorum".into(),
                        ));
                    }
                    let leader = f.leader_id.zip(f.leader_node);
                    return Err(BrokerError::NotLeader { leader });
                }
                Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_))) => {
                    return Err(BrokerError::Timeout(
                        "leadership changed while the write was in flight; its outcome is unknown".into(),
                    ));
                }
                Err(RaftError::APIError(e)) => return Err(BrokerError::Internal(e.to_string())),
                Err(RaftError::Fatal(e)) => {
                    // The entry may have been appended before Raft stopped, and the next
                    // leader may commit it: the outcome is unknown, not a refusal.
                    return Err(BrokerError::Timeout(format!(
                        "raft stopped while the write was in flight; its outcome is unknown: {e}"
                    )));
                }
            }
        }
    }

    /// Whether this node leads but no quorum has acknowledged it for long enough that
    /// another leader may have been elected ([`crate::raft::config::RaftConfig::deposed_after`]).
    fn quorum_silent(&self) -> bool {
        self.until_quorum_silent().is_some_and(|left| left.is_zero())
    }

    /// How long until [`Self::quorum_silent`] would hold if no acknowledgement came:
    /// `None` while this node does not lead a group of several voters.
    fn until_quorum_silent(&self) -> Option<Duration> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        // A lone voter is its own quorum; its acknowledgement time never moves.
        if m.state != ServerState::Leader || m.membership_config.membership().voter_ids().nth(1).is_none() {
            return None;
        }
        let acked = m.last_quorum_acked.as_ref()?;
        Some(
            self.config
                .raft
                .deposed_after()
                .saturating_sub(openraft::Instant::elapsed(&**acked)),
        )
    }

    /// Resolves once [`Self::quorum_silent`] holds. One timer per call, set for the moment
    /// the silence would be long enough (a write normally completes long before).
    async fn quorum_lost(&self) {
        loop {
            match self.until_quorum_silent() {
                Some(left) if left.is_zero() => return,
                Some(left) => tokio::time::sleep(left + Duration::from_millis(10)).await,
                None => tokio::time::sleep(self.config.raft.deposed_after()).await,
            }
        }
    }

    /// Reads the message stored at (log index, slot).
    pub fn read_message(&self, log_index: u64, slot: u32) -> BrokerResult<StoredMessage> {
        StoredMessage::decode(&self.read_record(log_index, slot)?)
    }

    /// The record at `slot` of entry `log_index` (a pull encodes it straight to the wire).
    pub fn read_record(&self, log_index: u64, slot: u32) -> BrokerResult<Bytes> {
        Ok(self.log.read_slot(log_index, slot)?)
    }

    /// The record at `slot` of entry `log_index` if the commit log's read cache holds that
    /// entry, `None` if it does not; never reads a file (see `CommitLog::read_slot_cached`).
    pub fn read_cached_record(&self, log_index: u64, slot: u32) -> BrokerResult<Option<Bytes>> {
        Ok(self.log.read_slot_cached(log_index, slot)?)
    }

    /// The next round-robin position (callers take it modulo their queue count).
    pub fn next_round_robin(&self) -> u64 {
        self.next_queue.fetch_add(1, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::command::Header;
    use crate::command::MessageMeta;

    #[test]
    fn entries_beyond_the_record_limit_are_refused_before_raft_sees_them() {
        let meta = MessageMeta {
            topic: "t".into(),
            queue_id: 0,
            tag_hash: 0,
            msg_id: "m".into(),
        };
        let header = Header::Send {
            store_time_ms: 0,
            messages: vec![meta],
        };
        let cmd = Command::new(header, vec![Bytes::from(vec![0u8; 1 << 20])]).expect("command");
        assert!(check_entry_size(&cmd, 2 << 20).is_ok());
        match check_entry_size(&cmd, 1 << 20) {
            Err(BrokerError::Invalid { code, .. }) => {
                assert_eq!(code, crate::error::InvalidCode::PayloadTooLarge)
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}
