//! ChangeInvisibleDuration: moves the time a popped message becomes visible again to
//! `now + invisible_duration` (consumers extend a long processing, or nack with a retry
//! delay). The leader stamps `now`. The receipt handle names the delivery, which this
//! does not change, so the answer returns the same handle; a handle of an earlier delivery
//! or of an acknowledged message gets `INVALID_RECEIPT_HANDLE`.

use std::sync::Arc;

use raftmq_proto::prost_types;
use raftmq_proto::rocketmq::v2 as pb;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use super::ack_message::STALE_RECEIPT;
use super::ack_message::consumer_names;
use super::ack_message::require_topic;
use super::receipt;
use super::status;
use crate::command::Command;
use crate::command::CommandResult;
use crate::command::Header;
use crate::context::Broker;
use crate::context::now_ms;
use crate::error::BrokerError;
use crate::error::BrokerResult;
use crate::error::InvalidCode;

/// Longest invisibility (RocketMQ: 12 h). Unlike a receive, there is no minimum: a nack
/// may ask for a redelivery at once.
pub const MAX_INVISIBLE_MS: u64 = 12 * 3600 * 1000;

#[tracing::instrument(name = "change_invisible_duration", skip_all)]
pub async fn handle(
    broker: &Arc<Broker>,
    req: Request<pb::ChangeInvisibleDurationRequest>,
) -> Result<Response<pb::ChangeInvisibleDurationResponse>, Status> {
    let req = req.into_inner();
    let resp = match change(broker, &req).await {
        Ok(()) => pb::ChangeInvisibleDurationResponse {
            status: Some(status::ok()),
            receipt_handle: req.receipt_handle,
        },
        Err(e) => {
            tracing::debug!(error = %e, "change of invisibility refused");
            pb::ChangeInvisibleDurationResponse {
                status: Some(status::from_error(&e)),
                receipt_handle: String::new(),
            }
        }
    };
    Ok(Response::new(resp))
}

async fn change(broker: &Broker, req: &pb::ChangeInvisibleDurationRequest) -> BrokerResult<()> {
    let (group, topic) = consumer_names(req.group.as_ref(), req.topic.as_ref())?;
    let receipt = receipt::decode(&req.receipt_handle)?;
    let invisible_ms = invisible_ms(req.invisible_duration.as_ref())?;
    require_topic(broker, &topic)?;
    let header = Header::ChangeInvisible {
        group,
        topic,
        receipt,
        invisible_ms,
        now_ms: now_ms(),
    };
    let cmd = Command::control(header).map_err(|e| BrokerError::Internal(e.to_string()))?;
    match broker.write(cmd).await? {
        CommandResult::Acked(a) if a.as_slice() == [true] => Ok(()),
        CommandResult::Acked(_) => Err(BrokerError::invalid(
            InvalidCode::InvalidReceiptHandle,
            STALE_RECEIPT,
        )),
        CommandResult::Rejected(r) => Err(BrokerError::Rejected(r)),
        other => Err(BrokerError::Internal(format!("unexpected result {other:?}"))),
    }
}

/// The requested invisibility: required, 0 ..= 12 h.
fn invisible_ms(d: Option<&prost_types::Duration>) -> BrokerResult<u64> {
    let bad = |m: &str| BrokerError::invalid(InvalidCode::IllegalInvisibleTime, m);
    let d = d.ok_or_else(|| bad("invisible_duration is required"))?;
    match crate::message::duration_ms(d) {
        Some(ms) if ms <= MAX_INVISIBLE_MS => Ok(ms),
        _ => Err(bad("invisible_duration must be between 0 and 12 hours")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invisibility_is_required_and_bounded() {
        let d = |seconds| prost_types::Duration { seconds, nanos: 0 };
        assert_eq!(invisible_ms(Some(&d(0))).expect("0"), 0);
        assert_eq!(invisible_ms(Some(&d(5))).expect("5s"), 5_000);
        assert_eq!(invisible_ms(Some(&d(12 * 3600))).expect("12h"), MAX_INVISIBLE_MS);
        for bad in [None, Some(d(-1)), Some(d(12 * 3600 + 1))] {
            match invisible_ms(bad.as_ref()) {
                Err(BrokerError::Invalid { code, .. }) => assert_eq!(code, InvalidCode::IllegalInvisibleTime),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}
