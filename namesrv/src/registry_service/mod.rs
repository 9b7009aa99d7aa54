//! `raftmq.namesrv.v1.NamesrvService`: registrations in, the registry out. One handler
//! per file; errors are gRPC status codes ([`crate::error::NamesrvError::to_status`]).

pub mod list_groups;
pub mod register;
pub mod topic_route;

use std::sync::Arc;

use raftmq_proto::raftmq::namesrv::v1 as pb;
use raftmq_proto::raftmq::namesrv::v1::namesrv_service_server::NamesrvService;
use raftmq_proto::raftmq::namesrv::v1::namesrv_service_server::NamesrvServiceServer;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use crate::registry::Registry;

/// Largest registration accepted (a group hosting tens of thousands of topics fits).
pub const MAX_REGISTRATION_BYTES: usize = 16 << 20;

/// The name server's own service.
#[derive(Debug, Clone)]
pub struct Registrar {
    registry: Arc<Registry>,
}

impl Registrar {
    pub fn new(registry: Arc<Registry>) -> Self {
        Self { registry }
    }

    pub fn into_server(self) -> NamesrvServiceServer<Self> {
        NamesrvServiceServer::new(self).max_decoding_message_size(MAX_REGISTRATION_BYTES)
    }
}

#[tonic::async_trait]
impl NamesrvService for Registrar {
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        register::handle(&self.registry, req).await
    }

    async fn list_groups(
        &self,
        req: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        list_groups::handle(&self.registry, req).await
    }

    async fn topic_route(
        &self,
        req: Request<pb::TopicRouteRequest>,
    ) -> Result<Response<pb::TopicRouteResponse>, Status> {
        topic_route::handle(&self.registry, req).await
    }
}
