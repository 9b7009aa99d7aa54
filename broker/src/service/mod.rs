//! The client protocol: `apache.rocketmq.v2.MessagingService`, one handler per file.
//!
//! [`Messaging`] implements the generated trait and routes each call: calls that change
//! state (sends, receives, acks, offset updates) go to the leader — a follower relays them
//! ([`crate::forward`]) unless they were relayed to it already — and every handler answers
//! in the protocol's way: gRPC OK with a `Status` inside the response, whose code says what
//! happened ([`status`]).

pub mod ack_message;
pub mod change_invisible;
pub mod filter;
pub mod forward_dlq;
pub mod heartbeat;
pub mod long_poll;
pub mod notify_termination;
pub mod offsets;
pub mod pull_message;
pub mod query_assignment;
pub mod query_route;
pub mod receipt;
pub mod receive_message;
pub mod send_message;
pub mod status;
pub mod telemetry;
pub mod unsupported;

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use raftmq_proto::rocketmq::v2::messaging_service_server::MessagingService;
use raftmq_proto::rocketmq::v2::messaging_service_server::MessagingServiceServer;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::transport::Channel;

use crate::context::Broker;
use crate::forward;

/// Longest wait for an election's outcome before a call is answered "no leader known"
/// (a failover takes about 1.5–2 s with the default Raft timings).
const ELECTION_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// A boxed response stream.
pub type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The MessagingService of one node.
#[derive(Debug, Clone)]
pub struct Messaging {
    broker: Arc<Broker>,
}

impl Messaging {
    pub fn new(broker: Arc<Broker>) -> Self {
        Self { broker }
    }

    pub fn into_server(self) -> MessagingServiceServer<Self> {
        MessagingServiceServer::new(self)
            .max_decoding_message_size(forward::MAX_GRPC_MESSAGE)
            .max_encoding_message_size(forward::MAX_GRPC_MESSAGE)
    }

    /// The leader's client address when this call must be relayed there. While an election
    /// is under way — no leader known, or the known one unreachable since a relay failed to
    /// connect — the call waits for its outcome (up to [`ELECTION_WAIT`] or half the
    /// client's deadline) rather than failing at once: a client retrying elsewhere would
    /// often land on the same leaderless group.
    fn forward_target<T>(&self, req: &Request<T>) -> impl Future<Output = Option<String>> + use<T> {
        let local = self.broker.is_leader() || forward::is_forwarded(req);
        let wait =
            long_poll::grpc_timeout(req.metadata()).map_or(ELECTION_WAIT, |d| (d / 2).min(ELECTION_WAIT));
        let broker = Arc::clone(&self.broker);
        async move {
            if local {
                return None;
            }
            let dead = broker
                .leader()
                .map(|(_, node)| node.client_addr)
                .filter(|addr| broker.forwarder.recently_unreachable(addr, 2 * ELECTION_WAIT));
            match broker.await_leader(wait, dead.as_deref()).await {
                Some((id, node)) if id != broker.id => Some(node.client_addr),
                _ => None,
            }
        }
    }

    /// Relays `req` to the leader at `addr` with `call` (one method of the client) and
    /// passes its answer back with a leader hint. A transport failure (UNAVAILABLE, or a
    /// connection that broke mid-call, passed on as UNAVAILABLE) drops the cached channel,
    /// so the next call connects afresh.
    async fn forwarded<Req, Resp, F, Fut>(
        &self,
        addr: &str,
        method: &'static str,
        req: Request<Req>,
        call: F,
    ) -> Result<Response<Resp>, Status>
    where
        F: FnOnce(MessagingServiceClient<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let forwarder = &self.broker.forwarder;
        let timeout = self.broker.config.forward_timeout();
        let client = forwarder
            .client(addr)
            .map_err(|e| Status::unavailable(e.to_string()))?;
        tracing::debug!(leader = %addr, method, "forwarding to the leader");
        // A leader cut off from this node swallows the call: when the group elects another
        // one meanwhile, the call is abandoned so that the client retries at once rather
        // than at its deadline.
        let relayed = tokio::select! {
            relayed = call(client, forward::relay(req, timeout)) => relayed,
            () = self.broker.leader_moved_from(addr) => {
                forwarder.drop_channel(addr);
                tracing::info!(leader = %addr, method, "leader replaced while a call was relayed to it");
                return Err(Status::unavailable(
                    "the leader was replaced while the call was relayed to it; its outcome is unknown",
                ));
            }
        };
        match relayed {
            Ok(resp) => {
                forwarder.mark_reachable(addr);
                Ok(with_leader_hint(resp, addr))
            }
            Err(e) if forward::is_broken_transport(&e) => {
                // Passed on as UNKNOWN, clients would not retry it; it is a failure of the
                // way to the leader, like the ones below.
                forwarder.drop_channel(addr);
                tracing::info!(leader = %addr, method, error = %e, "the connection to the leader broke during a relayed call");
                Err(Status::unavailable(format!(
                    "the connection to the leader broke during the relayed call ({}); its outcome is unknown",
                    e.message()
                )))
            }
            Err(e) => {
                if forward::is_connect_failure(&e) {
                    forwarder.mark_unreachable(addr);
                } else if e.code() == tonic::Code::Unavailable {
                    forwarder.drop_channel(addr);
                }
                Err(e)
            }
        }
    }
}

/// Relays a call to the leader, or runs the local handler. `wrap` converts the leader's
/// response into this service's (streams are boxed).
macro_rules! routed {
    ($self:ident, $req:ident, $method:ident, $local:expr) => {
        routed!($self, $req, $method, wrap = std::convert::identity, $local)
    };
    ($self:ident, $req:ident, $method:ident, wrap = $wrap:expr, $local:expr) => {{
        if let Some(addr) = $self.forward_target(&$req).await {
            let call =
                |mut c: MessagingServiceClient<Channel>, r| async move { c.$method(r).await.map($wrap) };
            $self.forwarded(&addr, stringify!($method), $req, call).await
        } else {
            $local
        }
    }};
}

/// Tells the client where the leader is, so it can go there directly.
fn with_leader_hint<T>(mut resp: Response<T>, leader: &str) -> Response<T> {
    if let Ok(v) = leader.parse() {
        resp.metadata_mut().insert(forward::LEADER_HEADER, v);
    }
    resp
}

/// Converts a relayed stream into this service's stream type.
fn boxed<T: Send + 'static>(resp: Response<tonic::Streaming<T>>) -> Response<BoxStream<T>> {
    let (meta, stream, ext) = resp.into_parts();
    Response::from_parts(meta, Box::pin(stream) as BoxStream<T>, ext)
}

#[tonic::async_trait]
impl MessagingService for Messaging {
    async fn query_route(
        &self,
        req: Request<pb::QueryRouteRequest>,
    ) -> Result<Response<pb::QueryRouteResponse>, Status> {
        query_route::handle(&self.broker, req).await
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        heartbeat::handle(&self.broker, req).await
    }

    async fn send_message(
        &self,
        req: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        routed!(
            self,
            req,
            send_message,
            send_message::handle(&self.broker, req).await
        )
    }

    async fn query_assignment(
        &self,
        req: Request<pb::QueryAssignmentRequest>,
    ) -> Result<Response<pb::QueryAssignmentResponse>, Status> {
        routed!(
            self,
            req,
            query_assignment,
            query_assignment::handle(&self.broker, req).await
        )
    }

    type ReceiveMessageStream = BoxStream<pb::ReceiveMessageResponse>;

    async fn receive_message(
        &self,
        req: Request<pb::ReceiveMessageRequest>,
    ) -> Result<Response<Self::ReceiveMessageStream>, Status> {
        routed!(
            self,
            req,
            receive_message,
            wrap = boxed,
            receive_message::handle(&self.broker, req).await
        )
    }

    async fn ack_message(
        &self,
        req: Request<pb::AckMessageRequest>,
    ) -> Result<Response<pb::AckMessageResponse>, Status> {
        routed!(
            self,
            req,
            ack_message,
            ack_message::handle(&self.broker, req).await
        )
    }

    async fn forward_message_to_dead_letter_queue(
        &self,
        req: Request<pb::ForwardMessageToDeadLetterQueueRequest>,
    ) -> Result<Response<pb::ForwardMessageToDeadLetterQueueResponse>, Status> {
        routed!(self, req, forward_message_to_dead_letter_queue, {
            forward_dlq::handle(&self.broker, req).await
        })
    }

    type PullMessageStream = BoxStream<pb::PullMessageResponse>;

    async fn pull_message(
        &self,
        req: Request<pb::PullMessageRequest>,
    ) -> Result<Response<Self::PullMessageStream>, Status> {
        pull_message::handle(&self.broker, req).await
    }

    async fn update_offset(
        &self,
        req: Request<pb::UpdateOffsetRequest>,
    ) -> Result<Response<pb::UpdateOffsetResponse>, Status> {
        routed!(
            self,
            req,
            update_offset,
            offsets::update_offset(&self.broker, req).await
        )
    }

    async fn get_offset(
        &self,
        req: Request<pb::GetOffsetRequest>,
    ) -> Result<Response<pb::GetOffsetResponse>, Status> {
        routed!(
            self,
            req,
            get_offset,
            offsets::get_offset(&self.broker, req).await
        )
    }

    async fn query_offset(
        &self,
        req: Request<pb::QueryOffsetRequest>,
    ) -> Result<Response<pb::QueryOffsetResponse>, Status> {
        offsets::query_offset(&self.broker, req).await
    }

    async fn end_transaction(
        &self,
        req: Request<pb::EndTransactionRequest>,
    ) -> Result<Response<pb::EndTransactionResponse>, Status> {
        unsupported::end_transaction(&self.broker, req).await
    }

    type TelemetryStream = BoxStream<pb::TelemetryCommand>;

    async fn telemetry(
        &self,
        req: Request<tonic::Streaming<pb::TelemetryCommand>>,
    ) -> Result<Response<Self::TelemetryStream>, Status> {
        telemetry::handle(&self.broker, req).await
    }

    async fn notify_client_termination(
        &self,
        req: Request<pb::NotifyClientTerminationRequest>,
    ) -> Result<Response<pb::NotifyClientTerminationResponse>, Status> {
        notify_termination::handle(&self.broker, req).await
    }

    async fn change_invisible_duration(
        &self,
        req: Request<pb::ChangeInvisibleDurationRequest>,
    ) -> Result<Response<pb::ChangeInvisibleDurationResponse>, Status> {
        routed!(self, req, change_invisible_duration, {
            change_invisible::handle(&self.broker, req).await
        })
    }

    async fn recall_message(
        &self,
        req: Request<pb::RecallMessageRequest>,
    ) -> Result<Response<pb::RecallMessageResponse>, Status> {
        unsupported::recall_message(&self.broker, req).await
    }

    async fn sync_lite_subscription(
        &self,
        req: Request<pb::SyncLiteSubscriptionRequest>,
    ) -> Result<Response<pb::SyncLiteSubscriptionResponse>, Status> {
        unsupported::sync_lite_subscription(&self.broker, req).await
    }
}
