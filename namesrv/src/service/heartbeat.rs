//! Heartbeat and NotifyClientTermination at the access point. A name server keeps no
//! client state, so both only answer OK (a client's consumer group name, when given, must
//! still be well-formed, as a broker would insist).

use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::Code;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use crate::error;
use crate::registration::check_consumer_group;

#[tracing::instrument(name = "heartbeat", skip_all)]
pub async fn heartbeat(
    req: Request<pb::HeartbeatRequest>,
) -> Result<Response<pb::HeartbeatResponse>, Status> {
    let status = check_group(req.get_ref().group.as_ref());
    Ok(Response::new(pb::HeartbeatResponse { status: Some(status) }))
}

#[tracing::instrument(name = "notify_client_termination", skip_all)]
pub async fn notify_termination(
    req: Request<pb::NotifyClientTerminationRequest>,
) -> Result<Response<pb::NotifyClientTerminationResponse>, Status> {
    let status = check_group(req.get_ref().group.as_ref());
    Ok(Response::new(pb::NotifyClientTerminationResponse {
        status: Some(status),
    }))
}

fn check_group(group: Option<&pb::Resource>) -> pb::Status {
    match group.map(|g| check_consumer_group(&g.name)) {
        Some(Err(e)) => error::status(Code::IllegalConsumerGroup, e),
        _ => error::ok(),
    }
}
