//! TODO: being written.

pub async fn update_offset(
    _broker: &std::sync::Arc<crate::context::Broker>,
    _req: tonic::Request<raftmq_proto::rocketmq::v2::UpdateOffsetRequest>,
) -> Result<tonic::Response<raftmq_proto::rocketmq::v2::UpdateOffsetResponse>, tonic::Status> {
    Err(tonic::Status::unimplemented("update_offset"))
}

pub async fn get_offset(
    _broker: &std::sync::Arc<crate::context::Broker>,
    _req: tonic::Request<raftmq_proto::rocketmq::v2::GetOffsetRequest>,
) -> Result<tonic::Response<raftmq_proto::rocketmq::v2::GetOffsetResponse>, tonic::Status> {
    Err(tonic::Status::unimplemented("get_offset"))
}

pub async fn query_offset(
    _broker: &std::sync::Arc<crate::context::Broker>,
    _req: tonic::Request<raftmq_proto::rocketmq::v2::QueryOffsetRequest>,
) -> Result<tonic::Response<raftmq_proto::rocketmq::v2::QueryOffsetResponse>, tonic::Status> {
    Err(tonic::Status::unimplemented("query_offset"))
}
