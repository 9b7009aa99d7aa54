//! TODO: being written.

pub async fn handle(
    _broker: &std::sync::Arc<crate::context::Broker>,
    _req: tonic::Request<raftmq_proto::rocketmq::v2::NotifyClientTerminationRequest>,
) -> Result<tonic::Response<raftmq_proto::rocketmq::v2::NotifyClientTerminationResponse>, tonic::Status> {
    Err(tonic::Status::unimplemented("handle"))
}
