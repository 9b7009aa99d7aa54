//! Calls of the protocol raftmq does not serve yet: each answers `NOT_IMPLEMENTED` with a
//! clear message, never an empty or OK response.

use std::sync::Arc;

use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::Code;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use super::status;
use crate::context::Broker;

fn not_implemented(what: &str) -> Option<pb::Status> {
    Some(status::status(
        Code::NotImplemented,
        format!("{what} is not supported by raftmq yet"),
    ))
}

pub async fn end_transaction(
    _broker: &Arc<Broker>,
    _req: Request<pb::EndTransactionRequest>,
) -> Result<Response<pb::EndTransactionResponse>, Status> {
    Ok(Response::new(pb::EndTransactionResponse {
        status: not_implemented("EndTransaction (transaction messages)"),
    }))
}

pub async fn recall_message(
    _broker: &Arc<Broker>,
    _req: Request<pb::RecallMessageRequest>,
) -> Result<Response<pb::RecallMessageResponse>, Status> {
    Ok(Response::new(pb::RecallMessageResponse {
        status: not_implemented("RecallMessage"),
        ..Default::default()
    }))
}

pub async fn sync_lite_subscription(
    _broker: &Arc<Broker>,
    _req: Request<pb::SyncLiteSubscriptionRequest>,
) -> Result<Response<pb::SyncLiteSubscriptionResponse>, Status> {
    Ok(Response::new(pb::SyncLiteSubscriptionResponse {
        status: not_implemented("SyncLiteSubscription (lite topics)"),
    }))
}
