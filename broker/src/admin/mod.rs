//! raftmq's operator service, `raftmq.admin.v1.AdminService`, served on the client port
//! next to MessagingService.
//!
//! Topic changes go through the group's Raft log, so only the leader proposes them: a
//! follower relays them to the leader ([`relay`]) unless they were relayed to it already,
//! in which case it answers UNAVAILABLE naming the leader. Reads (ListTopics,
//! GroupProgress, QueryMessages) come from the answering node's applied state; ClusterStatus is this
//! node's view, completed with the leader's replication progress ([`cluster_status`]).
//! Every failure becomes a gRPC status in one place ([`errors::to_status`]).

pub mod cluster_status;
pub mod errors;
pub mod group_progress;
pub mod query_messages;
pub mod relay;
pub mod topics;

use std::sync::Arc;

use raftmq_proto::raftmq::admin::v1 as pb;
use raftmq_proto::raftmq::admin::v1::admin_service_server::AdminService;
use raftmq_proto::raftmq::admin::v1::admin_service_server::AdminServiceServer;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use self::errors::AdminError;
use self::relay::Leader;
use self::relay::LeaderRelay;
use crate::context::Broker;
use crate::forward;

/// The AdminService of one node.
#[derive(Debug, Clone)]
pub struct Admin {
    broker: Arc<Broker>,
    leaders: LeaderRelay,
}

impl Admin {
    pub fn new(broker: Arc<Broker>) -> Self {
        Self {
            leaders: LeaderRelay::new(broker.clone()),
            broker,
        }
    }

    pub fn into_server(self) -> AdminServiceServer<Self> {
        AdminServiceServer::new(self)
    }

    /// The leader to relay a call to: set when this node does not lead, knows who does,
    /// and the call was not relayed to it already.
    fn leader_to_relay<T>(&self, req: &Request<T>) -> Option<Leader> {
        if forward::is_forwarded(req) || self.broker.is_leader() {
            return None;
        }
        self.broker.leader().filter(|(id, _)| *id != self.broker.id)
    }

    /// The status of a failure, with this node's idea of the leader as hint.
    fn status(&self, e: &AdminError) -> Status {
        let status = errors::to_status(e, self.broker.leader().as_ref());
        tracing::debug!(code = ?status.code(), message = status.message(), "admin call failed");
        status
    }

    fn answer<T>(&self, result: Result<T, AdminError>) -> Result<Response<T>, Status> {
        result.map(Response::new).map_err(|e| self.status(&e))
    }

    /// How long a relayed topic change may take.
    fn write_relay_timeout<T>(&self, req: &Request<T>) -> std::time::Duration {
        relay::relay_timeout(req, self.broker.config.forward_timeout())
    }
}

#[tonic::async_trait]
impl AdminService for Admin {
    #[tracing::instrument(level = "info", skip_all, fields(forwarded = forward::is_forwarded(&req)))]
    async fn create_topic(
        &self,
        req: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::CreateTopicResponse>, Status> {
        if let Some(leader) = self.leader_to_relay(&req) {
            let timeout = self.write_relay_timeout(&req);
            let call = |mut c: Client, r| async move { c.create_topic(r).await };
            return self.leaders.call(&leader, req, timeout, call).await;
        }
        self.answer(topics::create(&self.broker, req.into_inner()).await)
    }

    #[tracing::instrument(level = "info", skip_all, fields(forwarded = forward::is_forwarded(&req)))]
    async fn update_topic(
        &self,
        req: Request<pb::UpdateTopicRequest>,
    ) -> Result<Response<pb::UpdateTopicResponse>, Status> {
        if let Some(leader) = self.leader_to_relay(&req) {
            let timeout = self.write_relay_timeout(&req);
            let call = |mut c: Client, r| async move { c.update_topic(r).await };
            return self.leaders.call(&leader, req, timeout, call).await;
        }
        self.answer(topics::update(&self.broker, req.into_inner()).await)
    }

    #[tracing::instrument(level = "info", skip_all, fields(forwarded = forward::is_forwarded(&req)))]
    async fn delete_topic(
        &self,
        req: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        if let Some(leader) = self.leader_to_relay(&req) {
            let timeout = self.write_relay_timeout(&req);
            let call = |mut c: Client, r| async move { c.delete_topic(r).await };
            return self.leaders.call(&leader, req, timeout, call).await;
        }
        self.answer(topics::delete(&self.broker, req.into_inner()).await)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_topics(
        &self,
        _req: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        self.answer(topics::list(&self.broker.sm))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(forwarded = forward::is_forwarded(&req)))]
    async fn cluster_status(
        &self,
        req: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        cluster_status::handle(self, req).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(group = %req.get_ref().group))]
    async fn group_progress(
        &self,
        req: Request<pb::GroupProgressRequest>,
    ) -> Result<Response<pb::GroupProgressResponse>, Status> {
        self.answer(group_progress::handle(&self.broker.sm, req.get_ref()))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(topic = %req.get_ref().topic))]
    async fn query_messages(
        &self,
        req: Request<pb::QueryMessagesRequest>,
    ) -> Result<Response<pb::QueryMessagesResponse>, Status> {
        self.answer(query_messages::handle(&self.broker, req.get_ref()).await)
    }
}

/// The client type relayed calls use.
type Client =
    raftmq_proto::raftmq::admin::v1::admin_service_client::AdminServiceClient<tonic::transport::Channel>;
