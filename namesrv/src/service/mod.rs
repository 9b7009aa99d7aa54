//! The RocketMQ 5 calls a client makes at its access point
//! (`apache.rocketmq.v2.MessagingService`): QueryRoute, Telemetry, Heartbeat and
//! NotifyClientTermination, one handler per file. Every other call belongs to a broker
//! and is answered NOT_IMPLEMENTED with a pointer to the route's endpoints.

pub mod heartbeat;
pub mod query_route;
pub mod telemetry;
pub mod unsupported;

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::messaging_service_server::MessagingService;
use raftmq_proto::rocketmq::v2::messaging_service_server::MessagingServiceServer;
use tokio::sync::watch;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::config::NamesrvConfig;
use crate::registry::Registry;

/// A boxed response stream.
pub type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// What every handler may use.
#[derive(Debug)]
pub struct Ctx {
    pub registry: Arc<Registry>,
    pub config: NamesrvConfig,
    /// Turns true when the name server stops (open streams end).
    pub stop: watch::Receiver<bool>,
}

/// The calling client's id (the `x-mq-client-id` header), if it sent one.
pub fn client_id(meta: &MetadataMap) -> Option<&str> {
    meta.get("x-mq-client-id")?.to_str().ok().map(str::trim)
}

/// The MessagingService of a name server.
#[derive(Debug, Clone)]
pub struct Messaging {
    ctx: Arc<Ctx>,
}

impl Messaging {
    pub fn new(ctx: Arc<Ctx>) -> Self {
        Self { ctx }
    }

    pub fn into_server(self) -> MessagingServiceServer<Self> {
        MessagingServiceServer::new(self)
    }
}

/// A stream that yields one item: how the broker-only streaming calls answer.
fn once<T: Send + 'static>(item: T) -> Response<BoxStream<T>> {
    Response::new(Box::pin(futures_util::stream::iter([Ok(item)])))
}

#[tonic::async_trait]
impl MessagingService for Messaging {
    async fn query_route(
        &self,
        req: Request<pb::QueryRouteRequest>,
    ) -> Result<Response<pb::QueryRouteResponse>, Status> {
        query_route::handle(&self.ctx.registry, req).await
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        heartbeat::heartbeat(req).await
    }

    async fn send_message(
        &self,
        _req: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        Ok(Response::new(pb::SendMessageResponse {
            status: unsupported::broker_call("SendMessage"),
            entries: Vec::new(),
        }))
    }

    async fn query_assignment(
        &self,
        _req: Request<pb::QueryAssignmentRequest>,
    ) -> Result<Response<pb::QueryAssignmentResponse>, Status> {
        Ok(Response::new(pb::QueryAssignmentResponse {
            status: unsupported::broker_call("QueryAssignment"),
            assignments: Vec::new(),
        }))
    }

    type ReceiveMessageStream = BoxStream<pb::ReceiveMessageResponse>;

    async fn receive_message(
        &self,
        _req: Request<pb::ReceiveMessageRequest>,
    ) -> Result<Response<Self::ReceiveMessageStream>, Status> {
        Ok(once(pb::ReceiveMessageResponse {
            content: Some(pb::receive_message_response::Content::Status(
                unsupported::broker_call("ReceiveMessage").unwrap_or_default(),
            )),
        }))
    }

    async fn ack_message(
        &self,
        _req: Request<pb::AckMessageRequest>,
    ) -> Result<Response<pb::AckMessageResponse>, Status> {
        Ok(Response::new(pb::AckMessageResponse {
            status: unsupported::broker_call("AckMessage"),
            entries: Vec::new(),
        }))
    }

    async fn forward_message_to_dead_letter_queue(
        &self,
        _req: Request<pb::ForwardMessageToDeadLetterQueueRequest>,
    ) -> Result<Response<pb::ForwardMessageToDeadLetterQueueResponse>, Status> {
        Ok(Response::new(pb::ForwardMessageToDeadLetterQueueResponse {
            status: unsupported::broker_call("ForwardMessageToDeadLetterQueue"),
        }))
    }

    type PullMessageStream = BoxStream<pb::PullMessageResponse>;

    async fn pull_message(
        &self,
        _req: Request<pb::PullMessageRequest>,
    ) -> Result<Response<Self::PullMessageStream>, Status> {
        Ok(once(pb::PullMessageResponse {
            content: Some(pb::pull_message_response::Content::Status(
                unsupported::broker_call("PullMessage").unwrap_or_default(),
            )),
        }))
    }

    async fn update_offset(
        &self,
        _req: Request<pb::UpdateOffsetRequest>,
    ) -> Result<Response<pb::UpdateOffsetResponse>, Status> {
        Ok(Response::new(pb::UpdateOffsetResponse {
            status: unsupported::broker_call("UpdateOffset"),
        }))
    }

    async fn get_offset(
        &self,
        _req: Request<pb::GetOffsetRequest>,
    ) -> Result<Response<pb::GetOffsetResponse>, Status> {
        Ok(Response::new(pb::GetOffsetResponse {
            status: unsupported::broker_call("GetOffset"),
            ..Default::default()
        }))
    }

    async fn query_offset(
        &self,
        _req: Request<pb::QueryOffsetRequest>,
    ) -> Result<Response<pb::QueryOffsetResponse>, Status> {
        Ok(Response::new(pb::QueryOffsetResponse {
            status: unsupported::broker_call("QueryOffset"),
            ..Default::default()
        }))
    }

    async fn end_transaction(
        &self,
        _req: Request<pb::EndTransactionRequest>,
    ) -> Result<Response<pb::EndTransactionResponse>, Status> {
        Ok(Response::new(pb::EndTransactionResponse {
            status: unsupported::broker_call("EndTransaction"),
        }))
    }

    type TelemetryStream = BoxStream<pb::TelemetryCommand>;

    async fn telemetry(
        &self,
        req: Request<tonic::Streaming<pb::TelemetryCommand>>,
    ) -> Result<Response<Self::TelemetryStream>, Status> {
        telemetry::handle(&self.ctx, req).await
    }

    async fn notify_client_termination(
        &self,
        req: Request<pb::NotifyClientTerminationRequest>,
    ) -> Result<Response<pb::NotifyClientTerminationResponse>, Status> {
        heartbeat::notify_termination(req).await
    }

    async fn change_invisible_duration(
        &self,
        _req: Request<pb::ChangeInvisibleDurationRequest>,
    ) -> Result<Response<pb::ChangeInvisibleDurationResponse>, Status> {
        Ok(Response::new(pb::ChangeInvisibleDurationResponse {
            status: unsupported::broker_call("ChangeInvisibleDuration"),
            ..Default::default()
        }))
    }

    async fn recall_message(
        &self,
        _req: Request<pb::RecallMessageRequest>,
    ) -> Result<Response<pb::RecallMessageResponse>, Status> {
        Ok(Response::new(pb::RecallMessageResponse {
            status: unsupported::broker_call("RecallMessage"),
            ..Default::default()
        }))
    }

    async fn sync_lite_subscription(
        &self,
        _req: Request<pb::SyncLiteSubscriptionRequest>,
    ) -> Result<Response<pb::SyncLiteSubscriptionResponse>, Status> {
        Ok(Response::new(pb::SyncLiteSubscriptionResponse {
            status: unsupported::broker_call("SyncLiteSubscription"),
        }))
    }
}
