//! The server side of the Raft network: `raftmq.raft.v1.RaftService` handed to the local
//! `openraft::Raft`.
//!
//! Every call is first checked against the group and node it was meant for (metadata
//! `raftmq-raft-group` / `raftmq-raft-target`). Payloads that do not decode are refused
//! with `INVALID_ARGUMENT`; a stopped Raft answers `UNAVAILABLE`; nothing a peer sends can
//! make this service panic. The service is generic over the state machine so that it
//! works with any state machine whose snapshots are files.

use std::io::Seek;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::vote_fence::VoteFence;
use openraft::Raft;
use openraft::error::Fatal;
use openraft::error::RaftError;
use openraft::raft::AppendEntriesRequest;
use openraft::storage::RaftStateMachine;
use openraft::type_config::alias::SnapshotMetaOf;
use openraft::type_config::alias::SnapshotOf;
use openraft::type_config::alias::VoteOf;
use raftmq_proto::raftmq::raft::v1 as pb;
use raftmq_proto::raftmq::raft::v1::install_snapshot_request::Part;
use raftmq_proto::raftmq::raft::v1::raft_service_server::RaftService;
use raftmq_proto::raftmq::raft::v1::raft_service_server::RaftServiceServer;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::Streaming;
use tonic::metadata::MetadataMap;

use crate::raft::append_wire;
use crate::raft::link::listener::LinkHandler;
use crate::raft::link::listener::MAX_LINKS;
use crate::raft::link::listener::split_incoming;
use crate::raft::network::NetworkConfig;
use crate::raft::types::NodeId;
use crate::raft::types::SnapshotData;
use crate::raft::types::TypeConfig;
use crate::raft::wire;
use crate::raft::wire::FORMAT;
use crate::raft::wire::FORMAT_KEY;
use crate::raft::wire::GROUP_KEY;
use crate::raft::wire::TARGET_KEY;

type C = TypeConfig;

/// How long a stopping server waits for its replication links to write their last answers
/// (the node gives the whole Raft server 2 s to stop).
const LINK_DRAIN: Duration = Duration::from_secs(1);

/// Serves the Raft RPCs of one group member.
pub struct RaftGrpcService<SM>
where
    SM: RaftStateMachine<C, SnapshotData = SnapshotData>,
{
    raft: Raft<C, SM>,
    id: NodeId,
    group: String,
    snapshot_dir: PathBuf,
    max_message_size: usize,
    seq: Arc<AtomicU64>,
    /// Set when the server stops: ends the open replication streams, which would otherwise
    /// wait for the leader's next request and hold up the graceful shutdown.
    stopping: tokio::sync::watch::Sender<bool>,
    /// Closed while this node's log lacks entries it had acknowledged (see `vote_fence`).
    fence: Arc<VoteFence>,
}

impl<SM> std::fmt::Debug for RaftGrpcService<SM>
where
    SM: RaftStateMachine<C, SnapshotData = SnapshotData>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftGrpcService")
            .field("id", &self.id)
            .field("group", &self.group)
            .field("snapshot_dir", &self.snapshot_dir)
            .finish()
    }
}

impl<SM> RaftGrpcService<SM>
where
    SM: RaftStateMachine<C, SnapshotData = SnapshotData>,
{
    /// Serves `raft`; received snapshots are spooled to anonymous files in `snapshot_dir`
    /// (created when first needed) before they are handed to the state machine.
    pub fn new(raft: Raft<C, SM>, snapshot_dir: impl Into<PathBuf>, net: &NetworkConfig) -> Self {
        let id = *raft.node_id();
        let group = raft.config().cluster_name.clone();
        Self {
            raft,
            id,
            group,
            snapshot_dir: snapshot_dir.into(),
            max_message_size: net.max_message_size,
            seq: Arc::new(AtomicU64::new(0)),
            stopping: tokio::sync::watch::Sender::new(false),
            fence: Arc::new(VoteFence::new(None, 0)),
        }
    }

    /// Refuses votes, pre-votes and leadership transfers while `fence` is closed, and
    /// feeds it the commit points leaders announce.
    pub fn with_vote_fence(mut self, fence: Arc<VoteFence>) -> Self {
        self.fence = fence;
        self
    }

    /// Refuses a call that would let this node help elect a leader (or become one) while
    /// its log may lack entries it acknowledged.
    fn check_fence(&self) -> Result<(), Status> {
        match self.fence.fenced_from() {
            Some(from) => Err(Status::unavailable(format!(
                "raft node {} lost log entries from index {from} on and takes no part in elections until it holds everything committed again",
                self.id
            ))),
            None => Ok(()),
        }
    }

    /// The tonic service, with the message size limit both ends agree on.
    pub fn into_server(self) -> RaftServiceServer<Self> {
        let limit = self.max_message_size;
        RaftServiceServer::new(self)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit)
    }

    /// Refuses a call meant for another group or node, or encoded by another build.
    fn check_target(&self, md: &MetadataMap) -> Result<(), Status> {
        let format = md.get(FORMAT_KEY).and_then(|v| v.to_str().ok());
        check_format(self.id, format)?;
        let group = md
            .get(GROUP_KEY)
            .ok_or_else(|| Status::invalid_argument(format!("missing {GROUP_KEY} metadata")))?
            .to_str()
            .map_err(|_| Status::invalid_argument(format!("{GROUP_KEY} metadata is not ASCII")))?;
        let target: NodeId = md
            .get(TARGET_KEY)
            .ok_or_else(|| Status::invalid_argument(format!("missing {TARGET_KEY} metadata")))?
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Status::invalid_argument(format!("{TARGET_KEY} metadata is not a node id")))?;
        check_addressee(self.id, &self.group, group, target)
    }

    /// What the replication link's follower end needs of this service.
    pub(crate) fn link_service(&self) -> crate::raft::link::LinkService<SM> {
        crate::raft::link::LinkService {
            raft: self.raft.clone(),
            id: self.id,
            group: self.group.clone(),
            max_body: self.max_message_size,
            stopping: self.stopping.subscribe(),
            fence: self.fence.clone(),
        }
    }

    fn fatal(&self, f: Fatal<C>) -> Status {
        Status::unavailable(format!("raft node {} is not serving: {f}", self.id))
    }

    fn raft_error(&self, e: RaftError<C>) -> Status {
        match e {
            RaftError::Fatal(f) => self.fatal(f),
            RaftError::APIError(never) => match never {},
        }
    }

    /// Creates an anonymous file in the snapshot directory to receive a snapshot into.
    async fn spool_file(&self) -> Result<std::fs::File, Status> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let path = self.snapshot_dir.join(format!(
            ".incoming-snapshot-{}-{}-{n}",
            self.id,
            std::process::id()
        ));
        let dir = self.snapshot_dir.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
            std::fs::create_dir_all(&dir)?;
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)?;
            // Unlinked at once: nothing is left behind if the transfer or the node dies.
            std::fs::remove_file(&path)?;
            Ok(f)
        })
        .await
        .map_err(|e| Status::internal(format!("snapshot spool task failed: {e}")))?
        .map_err(|e| Status::internal(format!("cannot create a snapshot spool file: {e}")))
    }

    /// Receives a snapshot stream: meta, data chunks, end marker.
    async fn receive_snapshot(
        &self,
        mut inbound: Streaming<pb::InstallSnapshotRequest>,
    ) -> Result<(VoteOf<C>, SnapshotOf<C, SnapshotData>), Status> {
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let Some(Part::Meta(meta)) = first.part else {
            return Err(Status::invalid_argument(
                "a snapshot stream must start with its meta message",
            ));
        };
        let (vote, meta): (VoteOf<C>, SnapshotMetaOf<C>) = decode(&meta, "snapshot meta")?;
        // openraft refuses (by panicking) a snapshot whose last log id lies beyond the
        // sender's leadership; no protocol-following leader sends one, so refuse it here.
        if let Some(last) = &meta.last_log_id
            && last.leader_id > vote.leader_id
        {
            return Err(Status::invalid_argument(format!(
                "snapshot up to {last} cannot come from a leader with vote {vote}"
            )));
        }

        let mut file = tokio::fs::File::from_std(self.spool_file().await?);
        let (mut size, mut crc) = (0u64, 0u32);
        loop {
            let msg = inbound.message().await?.ok_or_else(|| {
                Status::invalid_argument(format!(
                    "snapshot stream ended after {size} bytes without its end message"
                ))
            })?;
            match msg.part {
                Some(Part::Data(chunk)) => {
                    crc = crc32c::crc32c_append(crc, &chunk);
                    size += chunk.len() as u64;
                    file.write_all(&chunk)
                        .await
                        .map_err(|e| Status::internal(format!("cannot spool snapshot: {e}")))?;
                }
                Some(Part::End(end)) => {
                    if end.size != size || end.crc32c != crc {
                        return Err(Status::data_loss(format!(
                            "snapshot data does not match its end message: received {size} bytes with crc32c {crc:#010x}, sender sent {} bytes with crc32c {:#010x}",
                            end.size, end.crc32c
                        )));
                    }
                    break;
                }
                Some(Part::Meta(_)) => {
                    return Err(Status::invalid_argument(
                        "second meta message in a snapshot stream",
                    ));
                }
                None => return Err(Status::invalid_argument("snapshot stream message without a part")),
            }
        }
        file.flush()
            .await
            .map_err(|e| Status::internal(format!("cannot spool snapshot: {e}")))?;
        let mut file = file.into_std().await;
        file.rewind()
            .map_err(|e| Status::internal(format!("cannot rewind snapshot spool file: {e}")))?;
        Ok((vote, SnapshotOf::<C, SnapshotData> { meta, snapshot: file }))
    }
}

/// Refuses a caller whose build speaks another payload format (`None`: it named none).
pub(crate) fn check_format(id: NodeId, format: Option<&str>) -> Result<(), Status> {
    if format == Some(FORMAT) {
        return Ok(());
    }
    Err(Status::failed_precondition(format!(
        "node {id} speaks Raft payload format {FORMAT}, the caller {}: all nodes of a group must run the same version",
        format.map_or_else(|| "none (an older build)".to_owned(), |f| format!("{f:?}"))
    )))
}

/// Refuses a call for another group, or for another node than `id`.
pub(crate) fn check_addressee(
    id: NodeId,
    own_group: &str,
    group: &str,
    target: NodeId,
) -> Result<(), Status> {
    if group != own_group {
        return Err(Status::failed_precondition(format!(
            "this is node {id} of broker group {own_group:?}, not of group {group:?}"
        )));
    }
    if target != id {
        return Err(Status::failed_precondition(format!(
            "request for node {target} reached node {id} of group {own_group:?}"
        )));
    }
    Ok(())
}

/// Tells the vote fence what a leader announced: its term and commit point.
pub(crate) fn observe_leader(fence: &VoteFence, req: &AppendEntriesRequest<C>) {
    let commit = req.leader_commit.as_ref().map(|c| (c.leader_id.term, c.index));
    let named = req
        .entries
        .last()
        .map(|e| e.log_id.index)
        .or(req.prev_log_id.as_ref().map(|p| p.index));
    fence.leader_said(req.vote.leader_id.term, commit, named);
}

fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, Status> {
    wire::decode(bytes).map_err(|e| Status::invalid_argument(format!("cannot decode {what}: {e}")))
}

fn decode_append(msg: pb::AppendRequest) -> Result<AppendEntriesRequest<C>, Status> {
    append_wire::from_message(msg)
        .map_err(|e| Status::invalid_argument(format!("cannot decode AppendEntries request: {e}")))
}

fn encode<T: Serialize>(value: &T, what: &str) -> Result<bytes::Bytes, Status> {
    wire::encode(value).map_err(|e| Status::internal(format!("cannot encode {what}: {e}")))
}

#[tonic::async_trait]
impl<SM> RaftService for RaftGrpcService<SM>
where
    SM: RaftStateMachine<C, SnapshotData = SnapshotData>,
{
    async fn append_entries(
        &self,
        request: Request<pb::AppendRequest>,
    ) -> Result<Response<pb::AppendResponse>, Status> {
        self.check_target(request.metadata())?;
        let req = decode_append(request.into_inner())?;
        observe_leader(&self.fence, &req);
        let resp = self
            .raft
            .append_entries(req)
            .await
            .map_err(|e| self.raft_error(e))?;
        Ok(Response::new(pb::AppendResponse {
            payload: encode(&resp, "AppendEntriesResponse")?,
        }))
    }

    async fn vote(&self, request: Request<pb::VoteRequest>) -> Result<Response<pb::VoteResponse>, Status> {
        self.check_target(request.metadata())?;
        self.check_fence()?;
        let req = decode(&request.get_ref().payload, "VoteRequest")?;
        let resp = self.raft.vote(req).await.map_err(|e| self.raft_error(e))?;
        Ok(Response::new(pb::VoteResponse {
            payload: encode(&resp, "VoteResponse")?,
        }))
    }

    async fn pre_vote(
        &self,
        request: Request<pb::VoteRequest>,
    ) -> Result<Response<pb::VoteResponse>, Status> {
        self.check_target(request.metadata())?;
        self.check_fence()?;
        let req = decode(&request.get_ref().payload, "pre-vote VoteRequest")?;
        let resp = self.raft.pre_vote(req).await.map_err(|e| self.raft_error(e))?;
        Ok(Response::new(pb::VoteResponse {
            payload: encode(&resp, "VoteResponse")?,
        }))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<pb::InstallSnapshotRequest>>,
    ) -> Result<Response<pb::InstallSnapshotResponse>, Status> {
        self.check_target(request.metadata())?;
        let (vote, snapshot) = self.receive_snapshot(request.into_inner()).await?;
        tracing::info!(node = self.id, meta = %snapshot.meta, "installing a snapshot received from the leader");
        let resp = self
            .raft
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(|f| self.fatal(f))?;
        Ok(Response::new(pb::InstallSnapshotResponse {
            payload: encode(&resp, "SnapshotResponse")?,
        }))
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        self.check_target(request.metadata())?;
        self.check_fence()?;
        let req = decode(&request.get_ref().payload, "TransferLeaderRequest")?;
        let resp = self
            .raft
            .handle_transfer_leader(req)
            .await
            .map_err(|f| self.fatal(f))?;
        Ok(Response::new(pb::TransferLeaderResponse {
            payload: encode(&resp, "TransferLeaderResponse")?,
        }))
    }
}

/// Serves `service` on `listener` until `shutdown` completes: the gRPC calls, and the
/// replication links that share the port (see [`crate::raft::link`]). Then it stops
/// accepting, ends the open replication links (after answering what they already
/// received), asks gRPC connections to close (HTTP/2 GOAWAY) and waits for both.
pub async fn serve<SM>(
    listener: tokio::net::TcpListener,
    service: RaftGrpcService<SM>,
    net: &NetworkConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error>
where
    SM: RaftStateMachine<C, SnapshotData = SnapshotData>,
{
    let stopping = service.stopping.clone();
    let links = Arc::new(service.link_service());
    let keepalive = Duration::from_millis(net.keepalive_interval_ms);
    let handler: LinkHandler = Arc::new(move |stream| Box::pin(links.clone().run(stream, keepalive)));
    let slots = Arc::new(Semaphore::new(MAX_LINKS));
    let incoming = split_incoming(listener, handler, slots.clone(), stopping.subscribe());
    let shutdown = async move {
        shutdown.await;
        stopping.send_replace(true);
    };
    let served = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .max_frame_size(raftmq_proto::H2_MAX_FRAME_BYTES)
        .initial_stream_window_size(net.stream_window_bytes)
        .initial_connection_window_size(net.connection_window_bytes)
        .http2_keepalive_interval(Some(Duration::from_millis(net.keepalive_interval_ms)))
        .http2_keepalive_timeout(Some(Duration::from_millis(net.keepalive_timeout_ms)))
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    // Every link holds a slot until its last answer is written.
    if tokio::time::timeout(LINK_DRAIN, slots.acquire_many(MAX_LINKS as u32))
        .await
        .is_err()
    {
        tracing::warn!("replication links still open {LINK_DRAIN:?} after the Raft server stopped");
    }
    served
}
