//! TODO: being written.

pub async fn handle(
    _broker: &std::sync::Arc<crate::context::Broker>,
    _req: tonic::Request<tonic::Streaming<raftmq_proto::rocketmq::v2::TelemetryCommand>>,
) -> Result<tonic::Response<super::BoxStream<raftmq_proto::rocketmq::v2::TelemetryCommand>>, tonic::Status> {
    Err(tonic::Status::unimplemented("handle"))
}
