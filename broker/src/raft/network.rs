//! The client side of the Raft network: how one member of a broker group reaches the
//! others over the `raftmq.raft.v1.RaftService` gRPC service.
//!
//! # Connections
//!
//! [`NetworkFactory`] keeps two lazily connected tonic channels per peer, created on first
//! use and shared by every client openraft asks for (`Endpoint::connect_lazy`: nothing is
//! dialled until a call needs it, and a broken connection is re-dialled by the next call):
//!
//! - the *data* channel carries the pipelined replication stream, AppendEntries requests
//!   that carry entries, and snapshots;
//! - the *control* channel carries heartbeats (AppendEntries without entries), votes,
//!   pre-votes and leader transfers, so that a large batch or a snapshot in flight never
//!   delays the messages that keep the leader's lease and decide elections.
//!
//! # Replication
//!
//! [`PeerClient::stream_append`] maps openraft's request stream onto the bidirectional
//! `Append` RPC. A pump task sends requests as fast as openraft produces them (bounded by
//! [`NetworkConfig::max_inflight_bytes`] unanswered bytes), while the returned stream
//! reads the follower's answers, which come back in order, one per message sent.
//!
//! A request whose encoding exceeds [`NetworkConfig::append_piece_budget`] is cut into
//! consecutive pieces (see [`wire::split_append`]). openraft still sees one answer per
//! request: the answer to its last piece. A piece that is refused (conflict, higher vote)
//! or only partly accepted ends the stream with that answer, exactly as the follower's
//! own stream ends after a refusal.
//!
//! # Timeouts
//!
//! Unary calls get openraft's `RPCOption::soft_ttl()` as both the gRPC deadline sent to
//! the server and a local timeout (plus transfer time for entry-carrying appends, see
//! [`NetworkConfig::min_throughput_bytes_per_sec`]). A replication stream uses the soft
//! TTL to set itself up, and then, while answers are outstanding, fails when the next one
//! takes longer than `max(soft_ttl, stream_response_timeout_floor)` plus transfer time: the
//! follower's answer includes an fdatasync, which can take longer than the 75 ms openraft
//! grants per heartbeat interval without anything being wrong, while the liveness that
//! elections depend on is carried by heartbeats on the control channel. A snapshot
//! transfer fails when no chunk moves (or no answer follows the last one) for the soft TTL.
//!
//! # Errors
//!
//! A peer that cannot be reached, whose Raft has stopped (`UNAVAILABLE`), or that is not
//! the node we want (`FAILED_PRECONDITION`) is reported as [`Unreachable`], which makes
//! openraft back off before retrying; a local or peer deadline is a [`Timeout`]; anything
//! else the peer answered (a malformed payload, an internal error) is a [`NetworkError`].

use std::collections::HashMap;
use std::io::Read;
use std::io::Seek;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use futures_util::Stream;
use futures_util::StreamExt;
use openraft::OptionalSend;
use openraft::RPCTypes;
use openraft::RaftNetworkFactory;
use openraft::StorageError;
use openraft::base::BoxFuture;
use openraft::base::BoxStream;
use openraft::error::NetworkError;
use openraft::error::RPCError;
use openraft::error::ReplicationClosed;
use openraft::error::StreamingError;
use openraft::error::Timeout;
use openraft::error::Unreachable;
use openraft::network::RPCOption;
use openraft::network::RaftNetworkV2;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::SnapshotResponse;
use openraft::raft::StreamAppendResult;
use openraft::raft::TransferLeaderRequest;
use openraft::raft::TransferLeaderResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use openraft::type_config::TypeConfigExt;
use openraft::type_config::alias::LogIdOf;
use openraft::type_config::alias::SnapshotOf;
use openraft::type_config::alias::VoteOf;
use raftmq_proto::raftmq::raft::v1 as pb;
use serde::Deserialize;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::sync::mpsc;
use tonic::Code;
use tonic::Status;
use tonic::metadata::AsciiMetadataValue;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::transport::Endpoint;

use crate::raft::types::BrokerNode;
use crate::raft::types::NodeId;
use crate::raft::types::SnapshotData;
use crate::raft::types::TypeConfig;
use crate::raft::wire;
use crate::raft::wire::GROUP_KEY;
use crate::raft::wire::TARGET_KEY;

type C = TypeConfig;
type RaftServiceClient = pb::raft_service_client::RaftServiceClient<Channel>;

const MIB: usize = 1 << 20;

/// Transport tunables of the Raft network; both ends of a group must agree on
/// `max_message_size`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// Largest gRPC message either end sends or accepts, in bytes. One log entry always
    /// travels in one message, so this must exceed the commit log's largest entry
    /// (`LogConfig::max_record_size`, 64 MiB by default). Default 68 MiB: it is a limit,
    /// not an allocation; requests are normally cut far below it.
    pub max_message_size: usize,
    /// AppendEntries requests whose encoding exceeds this many bytes are cut into
    /// several consecutive requests. Default 4 MiB: large enough to amortize per-message
    /// costs, small enough that one message does not hold a connection for long.
    pub append_piece_budget: usize,
    /// Unanswered bytes allowed on one replication stream before the sender waits.
    /// Default 32 MiB.
    pub max_inflight_bytes: usize,
    /// Time to establish a TCP connection, in ms. Default 1000.
    pub connect_timeout_ms: u64,
    /// HTTP/2 keep-alive ping interval on idle and busy connections, in ms; a connection
    /// whose ping is not answered within `keepalive_timeout_ms` is closed, which fails
    /// its calls (a silent peer is detected even without traffic). Default 1000.
    pub keepalive_interval_ms: u64,
    /// Default 2000.
    pub keepalive_timeout_ms: u64,
    /// Least time a replication stream waits for the next answer, in ms (see the module
    /// docs). Default 1000.
    pub stream_response_timeout_floor_ms: u64,
    /// Transfer rate assumed when granting extra time to large messages, in bytes/s: a
    /// message of `n` bytes gets `n / rate` on top of its timeout. Default 10 MiB/s.
    pub min_throughput_bytes_per_sec: u64,
    /// HTTP/2 flow-control window of one stream, in bytes. Default 8 MiB, so that a
    /// multi-MiB piece flows without waiting for window updates.
    pub stream_window_bytes: u32,
    /// HTTP/2 flow-control window of a connection, in bytes. Default 16 MiB.
    pub connection_window_bytes: u32,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            max_message_size: 68 * MIB,
            append_piece_budget: 4 * MIB,
            max_inflight_bytes: 32 * MIB,
            connect_timeout_ms: 1000,
            keepalive_interval_ms: 1000,
            keepalive_timeout_ms: 2000,
            stream_response_timeout_floor_ms: 1000,
            min_throughput_bytes_per_sec: 10 * MIB as u64,
            stream_window_bytes: 8 * MIB as u32,
            connection_window_bytes: 16 * MIB as u32,
        }
    }
}

/// A network configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid raft network config: {0}")]
pub struct NetworkConfigError(String);

/// Room for everything in an AppendEntries message but the entry itself.
const ENTRY_ENVELOPE: usize = 64 * 1024;

impl NetworkConfig {
    /// Checks the rules between fields and against what the network must carry: entries
    /// of up to `max_entry_size` bytes (the commit log's `max_record_size`) and snapshot
    /// chunks of `snapshot_chunk_size` bytes (`RaftConfig::snapshot_chunk_size`).
    pub fn validate(&self, max_entry_size: u64, snapshot_chunk_size: u64) -> Result<(), NetworkConfigError> {
        let fail = |m: String| Err(NetworkConfigError(m));
        let limit = self.max_message_size as u64;
        if max_entry_size + ENTRY_ENVELOPE as u64 > limit {
            return fail(format!(
                "max_message_size ({limit}) must exceed the largest log entry ({max_entry_size}) by at least {ENTRY_ENVELOPE} bytes"
            ));
        }
        if snapshot_chunk_size + ENTRY_ENVELOPE as u64 > limit {
            return fail(format!(
                "snapshot chunks of {snapshot_chunk_size} bytes do not fit max_message_size ({limit})"
            ));
        }
        if self.append_piece_budget < ENTRY_ENVELOPE || self.append_piece_budget > self.max_message_size {
            return fail(format!(
                "append_piece_budget ({}) must lie between {ENTRY_ENVELOPE} and max_message_size ({limit})",
                self.append_piece_budget
            ));
        }
        if self.max_inflight_bytes < self.append_piece_budget {
            return fail(format!(
                "max_inflight_bytes ({}) must be at least append_piece_budget ({})",
                self.max_inflight_bytes, self.append_piece_budget
            ));
        }
        if self.max_inflight_bytes > u32::MAX as usize {
            return fail(format!(
                "max_inflight_bytes ({}) must stay below 4 GiB",
                self.max_inflight_bytes
            ));
        }
        if self.connect_timeout_ms == 0 || self.keepalive_interval_ms == 0 || self.keepalive_timeout_ms == 0 {
            return fail("connect and keep-alive timeouts must be positive".into());
        }
        if self.min_throughput_bytes_per_sec == 0 {
            return fail("min_throughput_bytes_per_sec must be positive".into());
        }
        if self.stream_window_bytes < 65_535 || self.connection_window_bytes < self.stream_window_bytes {
            return fail(
                "HTTP/2 windows must be at least 65535 bytes, the connection's at least the stream's".into(),
            );
        }
        Ok(())
    }

    /// Extra time for moving `bytes` at the assumed minimum rate.
    fn transfer_allowance(&self, bytes: usize) -> Duration {
        Duration::from_secs_f64(bytes as f64 / self.min_throughput_bytes_per_sec.max(1) as f64)
    }

    fn endpoint(&self, addr: &str) -> Result<Endpoint, tonic::transport::Error> {
        Ok(Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_millis(self.connect_timeout_ms))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_millis(self.keepalive_interval_ms))
            .keep_alive_timeout(Duration::from_millis(self.keepalive_timeout_ms))
            .keep_alive_while_idle(true)
            .initial_stream_window_size(self.stream_window_bytes)
            .initial_connection_window_size(self.connection_window_bytes))
    }
}

/// Counters of what the network did, for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetworkStats {
    /// Tonic channels created (two per peer address while it stays the same).
    pub channels_created: u64,
    /// Replication streams opened (`Append` calls).
    pub append_streams: u64,
    /// AppendEntries requests openraft handed over (stream or unary).
    pub append_requests: u64,
    /// Of those, requests that had to be cut into pieces.
    pub split_requests: u64,
    /// AppendEntries messages put on the wire (pieces included).
    pub append_messages: u64,
    /// Entry-less AppendEntries sent on the control channel (heartbeats, commit updates).
    pub heartbeats: u64,
    /// Snapshots fully sent and installed by the receiver.
    pub snapshots_sent: u64,
}

#[derive(Debug, Default)]
struct Counters {
    channels_created: AtomicU64,
    append_streams: AtomicU64,
    append_requests: AtomicU64,
    split_requests: AtomicU64,
    append_messages: AtomicU64,
    heartbeats: AtomicU64,
    snapshots_sent: AtomicU64,
}

impl Counters {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self) -> NetworkStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        NetworkStats {
            channels_created: g(&self.channels_created),
            append_streams: g(&self.append_streams),
            append_requests: g(&self.append_requests),
            split_requests: g(&self.split_requests),
            append_messages: g(&self.append_messages),
            heartbeats: g(&self.heartbeats),
            snapshots_sent: g(&self.snapshots_sent),
        }
    }

    fn count_request(&self, pieces: usize) {
        Self::add(&self.append_requests, 1);
        Self::add(&self.append_messages, pieces as u64);
        if pieces > 1 {
            Self::add(&self.split_requests, 1);
        }
    }
}

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
        let group = AsciiMetadataValue::try_from(group)
            .map_err(|_| NetworkConfigError(format!("group name {group:?} is not a valid metadata value")))?;
        Ok(Self {
            shared: Arc::new(Shared {
                id,
                group,
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

/// What openraft uses a client for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Everything but heartbeats: the replication stream, snapshots, votes and leader
    /// transfers (each on the channel that suits it, see the module docs).
    Replication,
    /// Heartbeats: each is one unary call on the control channel.
    Heartbeat,
}

/// Sends Raft RPCs to one peer.
#[derive(Debug)]
pub struct PeerClient {
    shared: Arc<Shared>,
    target: NodeId,
    target_header: AsciiMetadataValue,
    channels: Result<PeerChannels, String>,
    role: Role,
}

/// Aborts a spawned task when dropped.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How errors name the call they come from.
#[derive(Debug, Clone)]
struct ErrorContext {
    id: NodeId,
    target: NodeId,
}

impl ErrorContext {
    fn timeout(&self, action: RPCTypes, timeout: Duration) -> RPCError<C> {
        RPCError::Timeout(Timeout {
            action,
            id: self.id,
            target: self.target,
            timeout,
        })
    }

    /// Maps a failed call to what openraft should make of it (see the module docs).
    fn status(&self, action: RPCTypes, timeout: Duration, status: Status) -> RPCError<C> {
        tracing::debug!(target_node = self.target, %action, code = ?status.code(), message = status.message(), "Raft RPC failed");
        match status.code() {
            Code::DeadlineExceeded => self.timeout(action, timeout),
            // The channel enforces the deadline we put on the request itself.
            _ if caused_by::<tonic::TimeoutExpired>(&status) => self.timeout(action, timeout),
            Code::Unavailable | Code::FailedPrecondition => RPCError::Unreachable(Unreachable::new(&status)),
            // A status with a source was made locally from a transport failure (connection
            // refused or reset, HTTP/2 error): the peer never answered.
            _ if std::error::Error::source(&status).is_some() => {
                RPCError::Unreachable(Unreachable::new(&status))
            }
            _ => RPCError::Network(NetworkError::new(&status)),
        }
    }

    fn malformed(&self, what: &str, e: postcard::Error) -> RPCError<C> {
        RPCError::Network(NetworkError::from_string(format!(
            "node {} answered with a {what} that cannot be decoded: {e}",
            self.target
        )))
    }
}

/// Whether an error of type `E` is somewhere in `status`'s source chain.
fn caused_by<E: std::error::Error + 'static>(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<E>() {
            return true;
        }
        source = e.source();
    }
    false
}

impl PeerClient {
    fn ctx(&self) -> ErrorContext {
        ErrorContext {
            id: self.shared.id,
            target: self.target,
        }
    }

    fn cfg(&self) -> &NetworkConfig {
        &self.shared.cfg
    }

    fn channels(&self) -> Result<&PeerChannels, RPCError<C>> {
        self.channels
            .as_ref()
            .map_err(|e| RPCError::Unreachable(Unreachable::from_string(e)))
    }

    fn grpc(&self, channel: &Channel) -> RaftServiceClient {
        let limit = self.cfg().max_message_size;
        RaftServiceClient::new(channel.clone())
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit)
    }

    fn stamp(&self, md: &mut MetadataMap) {
        md.insert(GROUP_KEY, self.shared.group.clone());
        md.insert(TARGET_KEY, self.target_header.clone());
    }

    /// A unary request with our metadata and a deadline the server also sees.
    fn request<T>(&self, msg: T, deadline: Duration) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(deadline);
        self.stamp(r.metadata_mut());
        r
    }

    /// Runs a unary call under a local timeout as well.
    async fn unary<R>(
        &self,
        action: RPCTypes,
        ttl: Duration,
        call: impl Future<Output = Result<tonic::Response<R>, Status>>,
    ) -> Result<R, RPCError<C>> {
        match tokio::time::timeout(ttl, call).await {
            Err(_) => Err(self.ctx().timeout(action, ttl)),
            Ok(Err(status)) => Err(self.ctx().status(action, ttl, status)),
            Ok(Ok(resp)) => Ok(resp.into_inner()),
        }
    }

    fn split(&self, rpc: AppendEntriesRequest<C>) -> Result<Vec<wire::Piece>, RPCError<C>> {
        let cfg = self.cfg();
        wire::split_append(rpc, cfg.append_piece_budget, cfg.max_message_size).map_err(|e| {
            tracing::error!(target_node = self.target, error = %e, "cannot send AppendEntries");
            RPCError::Network(NetworkError::new(&e))
        })
    }

    async fn vote_call(
        &self,
        rpc: VoteRequest<C>,
        option: RPCOption,
        pre_vote: bool,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        let ttl = option.soft_ttl();
        let payload = wire::encode(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut client = self.grpc(&self.channels()?.control);
        let req = self.request(pb::VoteRequest { payload }, ttl);
        let resp = if pre_vote {
            self.unary(RPCTypes::Vote, ttl, client.pre_vote(req)).await?
        } else {
            self.unary(RPCTypes::Vote, ttl, client.vote(req)).await?
        };
        wire::decode(&resp.payload).map_err(|e| self.ctx().malformed("VoteResponse", e))
    }

    /// The pipelined replication stream (see the module docs).
    async fn open_append_stream<S>(
        &self,
        mut input: S,
        option: RPCOption,
    ) -> Result<BoxStream<'static, Result<StreamAppendResult<C>, RPCError<C>>>, RPCError<C>>
    where
        S: Stream<Item = AppendEntriesRequest<C>> + OptionalSend + Unpin + 'static,
    {
        // Take the first request before dialling: openraft applies its backoff after an
        // `Unreachable` while producing the next request, so connecting first would retry
        // a dead peer in a tight loop. And an empty input needs no stream at all.
        let Some(first) = input.next().await else {
            return Ok(Box::pin(futures_util::stream::empty()));
        };
        let input = futures_util::stream::iter([first]).chain(input);

        let cfg = self.cfg().clone();
        let setup_ttl = option.soft_ttl();
        let (tx, mut rx) = mpsc::channel::<pb::AppendRequest>(OUTBOUND_QUEUE);
        let outbound = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let mut request = tonic::Request::new(outbound);
        self.stamp(request.metadata_mut());
        let mut client = self.grpc(&self.channels()?.data);
        let inbound = self
            .unary(RPCTypes::AppendEntries, setup_ttl, client.append(request))
            .await?;
        Counters::add(&self.shared.counters.append_streams, 1);

        let window = Arc::new(Semaphore::new(cfg.max_inflight_bytes));
        let (pending_tx, pending_rx) = mpsc::unbounded_channel();
        let pump = Pump {
            shared: self.shared.clone(),
            target: self.target,
            outbound: tx,
            pending: pending_tx,
            window: window.clone(),
        };
        let pump = AbortOnDrop(tokio::spawn(pump.run(input)));

        let answers = Answers {
            inbound,
            pending: pending_rx,
            window,
            wait: option
                .soft_ttl()
                .max(Duration::from_millis(cfg.stream_response_timeout_floor_ms)),
            cfg,
            ctx: self.ctx(),
            done: false,
            _pump: pump,
        };
        let out = futures_util::stream::unfold(answers, |mut a| async move {
            let item = a.next_answer().await?;
            Some((item, a))
        });
        Ok(Box::pin(out))
    }

    /// Streams a snapshot file: meta, chunks, end marker (see `raft.proto`).
    async fn send_snapshot(
        &self,
        vote: VoteOf<C>,
        snapshot: SnapshotOf<C, SnapshotData>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        let cfg = self.cfg();
        let idle_ttl = option.soft_ttl();
        let chunk_size = option.snapshot_chunk_size().unwrap_or(MIB).clamp(
            4096,
            cfg.max_message_size.saturating_sub(ENTRY_ENVELOPE).max(4096),
        );
        let signature = snapshot.meta.signature();
        let meta = wire::encode(&(vote, snapshot.meta))
            .map_err(|e| RPCError::<C>::Network(NetworkError::new(&e)))?;

        let started = Instant::now();
        let progress = Arc::new(AtomicU64::new(0));
        let read_error: Arc<Mutex<Option<std::io::Error>>> = Arc::new(Mutex::new(None));
        let (chunk_tx, chunk_rx) = mpsc::channel(SNAPSHOT_READ_AHEAD);
        let file = snapshot.snapshot;
        tokio::task::spawn_blocking(move || read_snapshot_file(file, chunk_size, chunk_tx));

        let data = futures_util::stream::unfold(
            (chunk_rx, read_error.clone(), progress.clone()),
            move |(mut rx, slot, progress)| async move {
                match rx.recv().await {
                    Some(Ok(part)) => {
                        progress.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                        Some((
                            pb::InstallSnapshotRequest { part: Some(part) },
                            (rx, slot, progress),
                        ))
                    }
                    Some(Err(e)) => {
                        // Ending without the end marker makes the receiver refuse the snapshot.
                        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        None
                    }
                    None => None,
                }
            },
        );
        let first = pb::InstallSnapshotRequest {
            part: Some(pb::install_snapshot_request::Part::Meta(meta)),
        };
        let mut request = tonic::Request::new(futures_util::stream::iter([first]).chain(data));
        self.stamp(request.metadata_mut());
        let mut client = self.grpc(&self.channels()?.data);

        let watchdog = async {
            let tick = (idle_ttl / 4).max(Duration::from_millis(10));
            loop {
                tokio::time::sleep(tick).await;
                let last = Duration::from_millis(progress.load(Ordering::Relaxed));
                if started.elapsed().saturating_sub(last) > idle_ttl {
                    return;
                }
            }
        };

        let ctx = self.ctx();
        let result = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            _ = watchdog => return Err(ctx.timeout(RPCTypes::InstallSnapshot, idle_ttl).into()),
            r = client.install_snapshot(request) => r,
        };
        if let Some(e) = read_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
            tracing::error!(target_node = self.target, error = %e, "cannot read the snapshot to send");
            return Err(StreamingError::StorageError(StorageError::read_snapshot(
                Some(signature),
                C::err_from_error(&e),
            )));
        }
        let resp = result.map_err(|status| ctx.status(RPCTypes::InstallSnapshot, idle_ttl, status))?;
        let resp =
            wire::decode(&resp.into_inner().payload).map_err(|e| ctx.malformed("SnapshotResponse", e))?;
        Counters::add(&self.shared.counters.snapshots_sent, 1);
        Ok(resp)
    }
}

/// Messages queued for the outbound half of a replication stream.
const OUTBOUND_QUEUE: usize = 16;
/// Snapshot chunks read ahead of the network.
const SNAPSHOT_READ_AHEAD: usize = 4;

/// Reads the snapshot from its start in chunks and hands them to the sender; stops early
/// when the sender is gone.
fn read_snapshot_file(
    mut file: std::fs::File,
    chunk_size: usize,
    tx: mpsc::Sender<Result<pb::install_snapshot_request::Part, std::io::Error>>,
) {
    use pb::install_snapshot_request::Part;
    let res = (|| -> std::io::Result<()> {
        file.rewind()?;
        let (mut size, mut crc) = (0u64, 0u32);
        loop {
            let mut buf = vec![0u8; chunk_size];
            let mut n = 0;
            while n < chunk_size {
                match file.read(&mut buf[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if n == 0 {
                break;
            }
            buf.truncate(n);
            crc = crc32c::crc32c_append(crc, &buf);
            size += n as u64;
            if tx.blocking_send(Ok(Part::Data(buf.into()))).is_err() {
                return Ok(());
            }
            if n < chunk_size {
                break;
            }
        }
        let _ = tx.blocking_send(Ok(Part::End(pb::SnapshotEnd { size, crc32c: crc })));
        Ok(())
    })();
    if let Err(e) = res {
        let _ = tx.blocking_send(Err(e));
    }
}

/// What the answer side of a replication stream expects for one openraft request.
#[derive(Debug)]
enum Pending {
    Request(Vec<PieceInFlight>),
    /// The request could not be sent; reported in its place.
    Failed(RPCError<C>),
}

#[derive(Debug)]
struct PieceInFlight {
    last: Option<LogIdOf<C>>,
    wire_size: usize,
    permits: u32,
}

/// Sends openraft's requests down a replication stream without waiting for answers.
struct Pump {
    shared: Arc<Shared>,
    target: NodeId,
    outbound: mpsc::Sender<pb::AppendRequest>,
    pending: mpsc::UnboundedSender<Pending>,
    window: Arc<Semaphore>,
}

impl Pump {
    async fn run<S>(self, mut input: S)
    where
        S: Stream<Item = AppendEntriesRequest<C>> + Unpin,
    {
        let cfg = &self.shared.cfg;
        let window_cap = cfg.max_inflight_bytes;
        while let Some(req) = input.next().await {
            let pieces = match wire::split_append(req, cfg.append_piece_budget, cfg.max_message_size) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(target_node = self.target, error = %e, "cannot send AppendEntries");
                    let _ = self
                        .pending
                        .send(Pending::Failed(RPCError::Network(NetworkError::new(&e))));
                    return;
                }
            };
            self.shared.counters.count_request(pieces.len());
            let mut in_flight = Vec::with_capacity(pieces.len());
            let mut payloads = Vec::with_capacity(pieces.len());
            for p in pieces {
                let wire_size = p.wire_size();
                in_flight.push(PieceInFlight {
                    last: p.last,
                    wire_size,
                    permits: wire_size.min(window_cap) as u32,
                });
                payloads.push(p.payload);
            }
            let permits: Vec<u32> = in_flight.iter().map(|p| p.permits).collect();
            // Announce before sending, so that the answer side always knows what comes.
            if self.pending.send(Pending::Request(in_flight)).is_err() {
                return;
            }
            for (payload, n) in payloads.into_iter().zip(permits) {
                let Ok(permit) = self.window.clone().acquire_many_owned(n).await else {
                    return;
                };
                // Given back by the answer side when this piece is answered.
                permit.forget();
                if self.outbound.send(pb::AppendRequest { payload }).await.is_err() {
                    return;
                }
            }
        }
        // Input exhausted: dropping the sender half-closes the call; the follower answers
        // what is outstanding and ends its side.
    }
}

/// Reads a replication stream's answers, one openraft answer per openraft request.
struct Answers {
    inbound: tonic::Streaming<pb::AppendResponse>,
    pending: mpsc::UnboundedReceiver<Pending>,
    window: Arc<Semaphore>,
    wait: Duration,
    cfg: NetworkConfig,
    ctx: ErrorContext,
    done: bool,
    _pump: AbortOnDrop,
}

impl Answers {
    /// The answer to the next request, or `None` when the stream is over (input
    /// exhausted, or after an answer that ends it).
    async fn next_answer(&mut self) -> Option<Result<StreamAppendResult<C>, RPCError<C>>> {
        if self.done {
            return None;
        }
        let pieces = match self.pending.recv().await? {
            Pending::Failed(e) => return Some(self.finish(Err(e))),
            Pending::Request(p) => p,
        };
        let n = pieces.len();
        for (i, piece) in pieces.into_iter().enumerate() {
            let wait = self.wait + self.cfg.transfer_allowance(piece.wire_size);
            let got = tokio::time::timeout(wait, self.inbound.message()).await;
            self.window.add_permits(piece.permits as usize);
            let msg = match got {
                Err(_) => return Some(self.finish(Err(self.ctx.timeout(RPCTypes::AppendEntries, wait)))),
                Ok(Err(status)) => {
                    let e = self.ctx.status(RPCTypes::AppendEntries, wait, status);
                    return Some(self.finish(Err(e)));
                }
                Ok(Ok(None)) => {
                    let e = NetworkError::from_string(format!(
                        "node {} ended the replication stream with requests unanswered",
                        self.ctx.target
                    ));
                    return Some(self.finish(Err(RPCError::Network(e))));
                }
                Ok(Ok(Some(msg))) => msg,
            };
            let res: StreamAppendResult<C> = match wire::decode(&msg.payload) {
                Ok(r) => r,
                Err(e) => return Some(self.finish(Err(self.ctx.malformed("StreamAppendResult", e)))),
            };
            match res {
                // A piece fully accepted: on to the next one, or done with this request.
                Ok(matched) if matched == piece.last => {
                    if i + 1 == n {
                        return Some(Ok(Ok(matched)));
                    }
                }
                // Partly accepted or refused: report it for the whole request and stop,
                // as the follower's own stream does.
                other => return Some(self.finish(Ok(other))),
            }
        }
        None
    }

    fn finish(
        &mut self,
        item: Result<StreamAppendResult<C>, RPCError<C>>,
    ) -> Result<StreamAppendResult<C>, RPCError<C>> {
        self.done = true;
        item
    }
}

impl RaftNetworkV2<C> for PeerClient {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError<C>> {
        let pieces = self.split(rpc)?;
        self.shared.counters.count_request(pieces.len());
        let n = pieces.len();
        for (i, piece) in pieces.into_iter().enumerate() {
            let channels = self.channels()?;
            let (channel, ttl) = if piece.has_entries {
                (
                    &channels.data,
                    option.soft_ttl() + self.cfg().transfer_allowance(piece.wire_size()),
                )
            } else {
                Counters::add(&self.shared.counters.heartbeats, 1);
                (&channels.control, option.soft_ttl())
            };
            let mut client = self.grpc(channel);
            let req = self.request(
                pb::AppendRequest {
                    payload: piece.payload.clone(),
                },
                ttl,
            );
            let resp = self
                .unary(RPCTypes::AppendEntries, ttl, client.append_entries(req))
                .await?;
            let resp: AppendEntriesResponse<C> =
                wire::decode(&resp.payload).map_err(|e| self.ctx().malformed("AppendEntriesResponse", e))?;
            match resp {
                AppendEntriesResponse::Success if i + 1 < n => {}
                // Earlier pieces were accepted: everything up to this piece's start matches.
                AppendEntriesResponse::Conflict if i > 0 => {
                    return Ok(AppendEntriesResponse::PartialSuccess(piece.prev));
                }
                other => return Ok(other),
            }
        }
        Err(RPCError::Network(NetworkError::from_string(
            "AppendEntries request produced no message to send",
        )))
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, Result<StreamAppendResult<C>, RPCError<C>>>, RPCError<C>>>
    where
        S: Stream<Item = AppendEntriesRequest<C>> + OptionalSend + Unpin + 'static,
    {
        if self.role == Role::Heartbeat {
            // One entry-less request per heartbeat: a unary call on the control channel is
            // cheaper than setting up a stream for it.
            return openraft::network::stream_append_sequential(self, input, option);
        }
        Box::pin(async move {
            let s: BoxStream<'s, _> = self.open_append_stream(input, option).await?;
            Ok(s)
        })
    }

    async fn vote(&mut self, rpc: VoteRequest<C>, option: RPCOption) -> Result<VoteResponse<C>, RPCError<C>> {
        self.vote_call(rpc, option, false).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<C>,
        option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        self.vote_call(rpc, option, true).await
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<C>,
        snapshot: SnapshotOf<C, SnapshotData>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        self.send_snapshot(vote, snapshot, cancel, option).await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<C>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<C>, RPCError<C>> {
        let ttl = option.soft_ttl();
        let payload = wire::encode(&req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut client = self.grpc(&self.channels()?.control);
        let req = self.request(pb::TransferLeaderRequest { payload }, ttl);
        let resp = self
            .unary(RPCTypes::TransferLeader, ttl, client.transfer_leader(req))
            .await?;
        wire::decode(&resp.payload).map_err(|e| self.ctx().malformed("TransferLeaderResponse", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_carries_the_commit_logs_largest_entry_and_one_chunk() {
        let cfg = NetworkConfig::default();
        cfg.validate(64 << 20, 1 << 20).expect("defaults are valid");
        let e = cfg
            .validate(70 << 20, 1 << 20)
            .expect_err("entry above the message limit");
        assert!(e.to_string().contains("largest log entry"), "{e}");
        let small = NetworkConfig {
            append_piece_budget: 100 << 20,
            ..NetworkConfig::default()
        };
        assert!(small.validate(1 << 20, 1 << 20).is_err());
    }

    #[test]
    fn transfer_allowance_scales_with_size() {
        let cfg = NetworkConfig::default();
        assert_eq!(cfg.transfer_allowance(0), Duration::ZERO);
        assert_eq!(cfg.transfer_allowance(10 * MIB), Duration::from_secs(1));
    }

    #[test]
    fn status_codes_map_to_what_openraft_backs_off_on() {
        let ctx = ErrorContext { id: 1, target: 2 };
        let t = Duration::from_millis(75);
        assert!(matches!(
            ctx.status(RPCTypes::Vote, t, Status::unavailable("down")),
            RPCError::Unreachable(_)
        ));
        assert!(matches!(
            ctx.status(RPCTypes::Vote, t, Status::failed_precondition("wrong node")),
            RPCError::Unreachable(_)
        ));
        assert!(matches!(
            ctx.status(RPCTypes::Vote, t, Status::deadline_exceeded("late")),
            RPCError::Timeout(_)
        ));
        assert!(matches!(
            ctx.status(RPCTypes::Vote, t, Status::invalid_argument("bad")),
            RPCError::Network(_)
        ));
        let transport = Status::from_error(Box::new(std::io::Error::other("reset")));
        assert!(matches!(
            ctx.status(RPCTypes::Vote, t, transport),
            RPCError::Unreachable(_)
        ));
        let expired = Status::from_error(Box::new(tonic::TimeoutExpired(())));
        assert_eq!(expired.code(), Code::Cancelled);
        assert!(matches!(
            ctx.status(RPCTypes::Vote, t, expired),
            RPCError::Timeout(_)
        ));
    }
}
