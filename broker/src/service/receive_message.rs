//! TODO: being written.

pub async fn handle(
    _broker: &std::sync::Arc<crate::context::Broker>,
    _req: tonic::Request<raftmq_proto::rocketmq::v2::ReceiveMessageRequest>,
) -> Result<tonic::Response<super::BoxStream<raftmq_proto::rocketmq::v2::ReceiveMessageResponse>>, tonic::Status> {
    Err(tonic::Status::unimplemented("handle"))
}
