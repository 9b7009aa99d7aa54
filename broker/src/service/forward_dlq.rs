//! ForwardMessageToDeadLetterQueue: a consumer gives up on a popped message (Java FIFO push
//! consumers call this when a message exhausted its delivery attempts locally) and asks for
//! it to go to the group's dead-letter topic `%DLQ%<group>`. If the receipt handle names the
//! current delivery, the message is indexed in the dead-letter topic and leaves the group's
//! in-flight set, in one Raft entry; otherwise the answer is `INVALID_RECEIPT_HANDLE`. The
//! request's delivery counts are the client's own (a FIFO push consumer retries locally
//! without popping again), so they are only logged.

use std::sync::Arc;

use raftmq_proto::rocketmq::v2 as pb;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use crate::command::Command;
use crate::command::CommandResult;
use crate::command::Header;
use crate::context::Broker;
use crate::error::BrokerError;
use crate::error::BrokerResult;
use crate::error::InvalidCode;
use crate::service::ack_message::STALE_RECEIPT;
use crate::service::ack_message::consumer_names;
use crate::service::ack_message::require_topic;
use crate::service::receipt;
use crate::service::status;
use crate::sm::apply::pop::validate_receiving_group;

#[tracing::instrument(
    name = "forward_to_dlq",
    skip_all,
    fields(
        message_id = %req.get_ref().message_id,
        delivery_attempt = req.get_ref().delivery_attempt,
        max_delivery_attempts = req.get_ref().max_delivery_attempts,
    )
)]
pub async fn handle(
    broker: &Arc<Broker>,
    req: Request<pb::ForwardMessageToDeadLetterQueueRequest>,
) -> Result<Response<pb::ForwardMessageToDeadLetterQueueResponse>, Status> {
    let req = req.into_inner();
    let status = match forward(broker, &req).await {
        Ok(()) => status::ok(),
        Err(e) => {
            tracing::debug!(error = %e, "forward to the dead-letter queue refused");
            status::from_error(&e)
        }
    };
    Ok(Response::new(pb::ForwardMessageToDeadLetterQueueResponse {
        status: Some(status),
    }))
}

async fn forward(broker: &Broker, req: &pb::ForwardMessageToDeadLetterQueueRequest) -> BrokerResult<()> {
    let header = check(req)?;
    if let Header::DeadLetter { topic, .. } = &header {
        require_topic(broker, topic)?;
    }
    let cmd = Command::control(header).map_err(|e| BrokerError::Internal(e.to_string()))?;
    answer(broker.write(cmd).await?)
}

/// Validates the request (names as for acks, then the receipt handle) into the command.
fn check(req: &pb::ForwardMessageToDeadLetterQueueRequest) -> BrokerResult<Header> {
    let (group, topic) = consumer_names(req.group.as_ref(), req.topic.as_ref())?;
    validate_receiving_group(&group).map_err(BrokerError::Rejected)?;
    let receipt = receipt::decode(&req.receipt_handle)?;
    Ok(Header::DeadLetter {
        group,
        topic,
        receipt,
    })
}

/// What applying the command says: moved, or the receipt was not current.
fn answer(result: CommandResult) -> BrokerResult<()> {
    match result {
        CommandResult::Acked(a) if a.as_slice() == [true] => Ok(()),
        CommandResult::Acked(_) => Err(BrokerError::invalid(
            InvalidCode::InvalidReceiptHandle,
            STALE_RECEIPT,
        )),
        CommandResult::Rejected(r) => Err(BrokerError::Rejected(r)),
        other => Err(BrokerError::Internal(format!("unexpected result {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use raftmq_proto::rocketmq::v2::Code;

    use super::*;
    use crate::command::Receipt;
    use crate::command::Rejection;

    fn res(name: &str) -> Option<pb::Resource> {
        Some(pb::Resource {
            resource_namespace: String::new(),
            name: name.into(),
        })
    }

    fn req(group: &str, topic: &str, handle: &str) -> pb::ForwardMessageToDeadLetterQueueRequest {
        pb::ForwardMessageToDeadLetterQueueRequest {
            group: res(group),
            topic: res(topic),
            receipt_handle: handle.into(),
            message_id: "m".into(),
            delivery_attempt: 16,
            max_delivery_attempts: 16,
            lite_topic: None,
        }
    }

    fn code<T: std::fmt::Debug>(r: BrokerResult<T>) -> Code {
        match r {
            Err(e) => status::code_of(&e),
            Ok(v) => panic!("expected an error, got {v:?}"),
        }
    }

    #[test]
    fn a_valid_request_becomes_a_dead_letter_command() {
        let r = Receipt {
            queue_id: 1,
            offset: 2,
            attempt: 3,
            topic_created_at: 4,
        };
        let header = check(&req("g", "t", &receipt::encode(&r))).expect("valid");
        assert_eq!(
            header,
            Header::DeadLetter {
                group: "g".into(),
                topic: "t".into(),
                receipt: r,
            }
        );
    }

    #[test]
    fn bad_names_and_handles_get_their_codes() {
        let handle = "r2.1.2.3.4";
        assert_eq!(code(check(&req("a b", "t", handle))), Code::IllegalConsumerGroup);
        let long = "g".repeat(123);
        assert_eq!(code(check(&req(&long, "t", handle))), Code::IllegalConsumerGroup);
        assert_eq!(code(check(&req("g", "", handle))), Code::IllegalTopic);
        assert_eq!(
            code(check(&req("g", "t", "r1.1.2.3"))),
            Code::InvalidReceiptHandle
        );
        let mut no_group = req("g", "t", handle);
        no_group.group = None;
        assert_eq!(code(check(&no_group)), Code::IllegalConsumerGroup);
    }

    #[test]
    fn results_map_to_ok_or_invalid_receipt_handle() {
        assert!(answer(CommandResult::Acked(vec![true])).is_ok());
        assert_eq!(
            code(answer(CommandResult::Acked(vec![false]))),
            Code::InvalidReceiptHandle
        );
        let unknown = CommandResult::Rejected(Rejection::UnknownTopic("t".into()));
        assert_eq!(code(answer(unknown)), Code::TopicNotFound);
        assert_eq!(code(answer(CommandResult::Done)), Code::InternalServerError);
    }
}
