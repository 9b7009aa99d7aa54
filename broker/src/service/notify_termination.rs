//! NotifyClientTermination: a client shutting down; the node forgets its settings.

use std::sync::Arc;

use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::Code;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use super::heartbeat::CLIENT_ID_HEADER;
use super::heartbeat::client_id;
use super::status;
use crate::context::Broker;

#[tracing::instrument(name = "notify_client_termination", skip_all, fields(client_id))]
pub async fn handle(
    broker: &Arc<Broker>,
    req: Request<pb::NotifyClientTerminationRequest>,
) -> Result<Response<pb::NotifyClientTerminationResponse>, Status> {
    let st = match client_id(req.metadata()) {
        Some(id) => {
            tracing::Span::current().record("client_id", id);
            broker.clients.remove(id);
            let group = req
                .get_ref()
                .group
                .as_ref()
                .map(|g| g.name.as_str())
                .filter(|g| !g.is_empty());
            broker.consumers.members_mut(|m| m.left(group, id));
            tracing::debug!("client terminated");
            status::ok()
        }
        None => status::status(
            Code::ClientIdRequired,
            format!("a termination notice needs the {CLIENT_ID_HEADER} header"),
        ),
    };
    Ok(Response::new(pb::NotifyClientTerminationResponse {
        status: Some(st),
    }))
}
