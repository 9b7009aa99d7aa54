//! [`PeerClient`]: the client openraft gets for one peer, its unary calls, and the
//! `RaftNetworkV2` implementation that routes each RPC to the right channel.

use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use openraft::OptionalSend;
use openraft::RPCTypes;
use openraft::base::BoxFuture;
use openraft::base::BoxStream;
use openraft::error::NetworkError;
use openraft::error::RPCError;
use openraft::error::ReplicationClosed;
use openraft::error::StreamingError;
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
use openraft::type_config::alias::SnapshotOf;
use openraft::type_config::alias::VoteOf;
use raftmq_proto::raftmq::raft::v1 as pb;
use tonic::Status;
use tonic::metadata::AsciiMetadataValue;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;

use super::C;
use super::NetworkConfig;
use super::PeerChannels;
use super::Shared;
use super::errors::ErrorContext;
use super::stats::Counters;
use crate::raft::append_wire;
use crate::raft::types::NodeId;
use crate::raft::types::SnapshotData;
use crate::raft::wire;
use crate::raft::wire::FORMAT;
use crate::raft::wire::FORMAT_KEY;
use crate::raft::wire::GROUP_KEY;
use crate::raft::wire::TARGET_KEY;

type RaftServiceClient = pb::raft_service_client::RaftServiceClient<Channel>;

/// What openraft uses a client for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Everything but heartbeats: the replication stream, snapshots, votes and leader
    /// transfers (each on the channel that suits it, see the module docs).
    Replication,
    /// Heartbeats: each is one unary call on the control channel.
    Heartbeat,
}

/// Sends Raft RPCs to one peer.
#[derive(Debug)]
pub struct PeerClient {
    pub(super) shared: Arc<Shared>,
    pub(super) target: NodeId,
    pub(super) target_header: AsciiMetadataValue,
    pub(super) channels: Result<PeerChannels, String>,
    pub(super) role: Role,
}

impl PeerClient {
    pub(super) fn ctx(&self) -> ErrorContext {
        ErrorContext {
            id: self.shared.id,
            target: self.target,
        }
    }

    pub(super) fn cfg(&self) -> &NetworkConfig {
        &self.shared.cfg
    }

    pub(super) fn channels(&self) -> Result<&PeerChannels, RPCError<C>> {
        self.channels
            .as_ref()
            .map_err(|e| RPCError::Unreachable(Unreachable::from_string(e)))
    }

    pub(super) fn grpc(&self, channel: &Channel) -> RaftServiceClient {
        let limit = self.cfg().max_message_size;
        RaftServiceClient::new(channel.clone())
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit)
    }

    pub(super) fn stamp(&self, md: &mut MetadataMap) {
        md.insert(GROUP_KEY, self.shared.group.clone());
        md.insert(TARGET_KEY, self.target_header.clone());
        md.insert(FORMAT_KEY, AsciiMetadataValue::from_static(FORMAT));
    }

    /// A unary request with our metadata and a deadline the server also sees.
    fn request<T>(&self, msg: T, deadline: Duration) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(deadline);
        self.stamp(r.metadata_mut());
        r
    }

    /// Runs a unary call under a local timeout as well.
    pub(super) async fn unary<R>(
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

    fn split(&self, rpc: AppendEntriesRequest<C>) -> Result<Vec<append_wire::Piece>, RPCError<C>> {
        let cfg = self.cfg();
        append_wire::split_append(rpc, cfg.append_piece_budget, cfg.max_message_size).map_err(|e| {
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
            let req = self.request(piece.message.clone(), ttl);
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
