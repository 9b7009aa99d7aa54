//! The client side of the Raft network: how one member of a broker group reaches the
//! others over the `raftmq.raft.v1.RaftService` gRPC service, and replicates to them over
//! replication links ([`crate::raft::link`]).
//!
//! # Connections
//!
//! [`NetworkFactory`] keeps two lazily connected tonic channels per peer, created on first
//! use and shared by every client openraft asks for (`Endpoint::connect_lazy`: nothing is
//! dialled until a call needs it, and a broken connection is re-dialled by the next call):
//!
//! - the *data* channel carries unary AppendEntries requests that carry entries, and
//!   snapshots;
//! - the *control* channel carries heartbeats (AppendEntries without entries), votes,
//!   pre-votes and leader transfers, so that a large batch or a snapshot in flight never
//!   delays the messages that keep the leader's lease and decide elections.
//!
//! # Replication
//!
//! [`PeerClient::stream_append`] maps openraft's request stream onto a replication link,
//! dialled to the peer's Raft port for each stream (the gRPC channels are not involved).
//! A pump task writes requests as fast as openraft produces them (bounded by
//! [`NetworkConfig::max_inflight_bytes`] unanswered bytes), while the returned stream
//! reads the follower's answers, which come back in order, one per message sent.
//!
//! A request whose encoding exceeds [`NetworkConfig::append_piece_budget`] is cut into
//! consecutive pieces (see [`crate::raft::append_wire::split_append`]). openraft still
//! sees one answer per request: the answer to its last piece. A piece that is refused
//! (conflict, higher vote) or only partly accepted ends the stream with that answer,
//! exactly as the follower's own stream ends after a refusal.
//!
//! # Timeouts
//!
//! Unary calls get openraft's `RPCOption::soft_ttl()` as both the gRPC deadline sent to
//! the server and a local timeout (plus transfer time for entry-carrying appends, see
//! [`NetworkConfig::min_throughput_bytes_per_sec`]). A replication stream uses the soft
//! TTL to dial its link and get the follower's accept, and then, while answers are outstanding, fails when the next one
//! takes longer than `max(soft_ttl, stream_response_timeout_floor)` plus transfer time: the
//! follower's answer includes an fdatasync, which can take longer than the 75 ms openraft
//! grants per heartbeat interval without anything being wrong, while the liveness that
//! elections depend on is carried by heartbeats on the control channel. A snapshot
//! transfer fails when no chunk moves (or no answer follows the last one) for the soft TTL.
//!
//! # Errors
//!
//! A peer that cannot be reached (a failed connection or link I/O), whose Raft has stopped
//! (`UNAVAILABLE`), or that is not the node we want (`FAILED_PRECONDITION`; a link's
//! refusal carries the same codes) is reported as [`Unreachable`], which makes
//! openraft back off before retrying; a local or peer deadline is a [`Timeout`]; anything
//! else the peer answered (a malformed payload, an internal error) is a [`NetworkError`].

mod client;
mod config;
mod errors;
mod snapshot_send;
mod stats;
mod stream;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;

use openraft::RaftNetworkFactory;
#[cfg(doc)] // named by the module docs
use openraft::error::NetworkError;
#[cfg(doc)] // named by the module docs
use openraft::error::Timeout;
#[cfg(doc)] // named by the module docs
use openraft::error::Unreachable;
#[cfg(doc)] // named by the module docs
use openraft::network::RaftNetworkV2;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

pub use self::client::PeerClient;
use self::client::Role;
pub use self::config::NetworkConfig;
pub use self::config::NetworkConfigError;
use self::stats::Counters;
pub use self::stats::NetworkStats;
use crate::raft::types::BrokerNode;
use crate::raft::types::NodeId;
use crate::raft::types::TypeConfig;
#[cfg(doc)] // named by the module docs
use crate::raft::wire;

type C = TypeConfig;

/// The two channels to one peer.
#[derive(Debug, Clone)]
struct PeerChannels {
    addr: String,
    data: Channel,
    control: Channel,
}

#[derive(Debug)]
struct Shared {
    id: NodeId,
    group: AsciiMetadataValue,
    /// The same, as a replication link's hello names it.
    group_name: String,
    cfg: NetworkConfig,
    peers: Mutex<HashMap<NodeId, PeerChannels>>,
    counters: Counters,
}

impl Shared {
    /// The cached channels to `target`, created on first use or when its address changed.
    fn channels(&self, target: NodeId, addr: &str) -> Result<PeerChannels, String> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = peers.get(&target)
            && p.addr == addr
        {
            return Ok(p.clone());
        }
        let endpoint = self
            .cfg
            .endpoint(addr)
            .map_err(|e| format!("invalid Raft address {addr:?} of node {target}: {e}"))?;
        let channels = PeerChannels {
            addr: addr.to_string(),
            data: endpoint.connect_lazy(),
            control: endpoint.connect_lazy(),
        };
        Counters::add(&self.counters.channels_created, 2);
        peers.insert(target, channels.clone());
        Ok(channels)
    }
}

/// Creates the per-peer clients openraft uses; cheap to clone (clones share channels).
#[derive(Debug, Clone)]
pub struct NetworkFactory {
    shared: Arc<Shared>,
}

impl NetworkFactory {
    /// The network of node `id` in broker group `group` (the openraft cluster name).
    pub fn new(id: NodeId, group: &str, cfg: NetworkConfig) -> Result<Self, NetworkConfigError> {
        let metadata = AsciiMetadataValue::try_from(group)
            .map_err(|_| NetworkConfigError(format!("group name {group:?} is not a valid metadata value")))?;
        Ok(Self {
            shared: Arc::new(Shared {
                id,
                group: metadata,
                group_name: group.to_owned(),
                cfg,
                peers: Mutex::new(HashMap::new()),
                counters: Counters::default(),
            }),
        })
    }

    /// What the network has done so far.
    pub fn stats(&self) -> NetworkStats {
        self.shared.counters.snapshot()
    }

    fn client(&self, target: NodeId, node: &BrokerNode, role: Role) -> PeerClient {
        let channels = self.shared.channels(target, &node.raft_addr);
        if let Err(e) = &channels {
            tracing::error!(target_node = target, error = %e, "cannot create Raft channels");
        }
        PeerClient {
            shared: self.shared.clone(),
            target,
            target_header: AsciiMetadataValue::from(target),
            channels,
            role,
        }
    }
}

impl RaftNetworkFactory<C> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BrokerNode) -> PeerClient {
        self.client(target, node, Role::Replication)
    }

    async fn new_heartbeat_client(&mut self, target: NodeId, node: &BrokerNode) -> PeerClient {
        self.client(target, node, Role::Heartbeat)
    }
}
