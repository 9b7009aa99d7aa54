//! The one place where broker errors become the protocol's status codes.

use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::Code;

use crate::command::Rejection;
use crate::error::BrokerError;
use crate::error::InvalidCode;

/// `OK` with a message.
pub fn ok() -> pb::Status {
    pb::Status {
        code: Code::Ok as i32,
        message: "OK".into(),
    }
}

/// A status with `code` and `message`.
pub fn status(code: Code, message: impl Into<String>) -> pb::Status {
    pb::Status {
        code: code as i32,
        message: message.into(),
    }
}

/// The protocol code of an error.
pub fn code_of(e: &BrokerError) -> Code {
    match e {
        BrokerError::NotLeader { .. } | BrokerError::Unavailable(_) => Code::HaNotAvailable,
        BrokerError::Timeout(_) => Code::ProxyTimeout,
        BrokerError::Rejected(r) => rejection_code(r),
        BrokerError::Invalid { code, .. } => invalid_code(*code),
        BrokerError::Storage(_) => Code::InternalError,
        BrokerError::Internal(_) => Code::InternalServerError,
    }
}

/// The status of an error, its message being the error's text.
pub fn from_error(e: &BrokerError) -> pb::Status {
    status(code_of(e), e.to_string())
}

fn rejection_code(r: &Rejection) -> Code {
    match r {
        Rejection::UnknownTopic(_) | Rejection::NoSuchQueue { .. } => Code::TopicNotFound,
        Rejection::TopicExists(_) => Code::BadRequest,
        Rejection::NotWritable(_) | Rejection::NotReadable(_) => Code::Forbidden,
        Rejection::InvalidTopic(_) => Code::IllegalTopic,
        Rejection::InvalidGroup(_) => Code::IllegalConsumerGroup,
        Rejection::Malformed(_) => Code::BadRequest,
    }
}

fn invalid_code(c: InvalidCode) -> Code {
    match c {
        InvalidCode::BadRequest => Code::BadRequest,
        InvalidCode::IllegalTopic => Code::IllegalTopic,
        InvalidCode::IllegalGroup => Code::IllegalConsumerGroup,
        InvalidCode::IllegalTag => Code::IllegalMessageTag,
        InvalidCode::IllegalKey => Code::IllegalMessageKey,
        InvalidCode::IllegalMessageGroup => Code::IllegalMessageGroup,
        InvalidCode::IllegalPropertyKey => Code::IllegalMessagePropertyKey,
        InvalidCode::IllegalMessageId => Code::IllegalMessageId,
        InvalidCode::IllegalFilter => Code::IllegalFilterExpression,
        InvalidCode::IllegalInvisibleTime => Code::IllegalInvisibleTime,
        InvalidCode::IllegalDeliveryTime => Code::IllegalDeliveryTime,
        InvalidCode::IllegalPollingTime => Code::IllegalPollingTime,
        InvalidCode::IllegalOffset => Code::IllegalOffset,
        InvalidCode::InvalidReceiptHandle => Code::InvalidReceiptHandle,
        InvalidCode::ClientIdRequired => Code::ClientIdRequired,
        InvalidCode::BodyTooLarge => Code::MessageBodyTooLarge,
        InvalidCode::PayloadTooLarge => Code::PayloadTooLarge,
        InvalidCode::BodyEmpty => Code::MessageBodyEmpty,
        InvalidCode::PropertiesTooLarge => Code::MessagePropertiesTooLarge,
        InvalidCode::MessageNotFound => Code::MessageNotFound,
        InvalidCode::OffsetNotFound => Code::OffsetNotFound,
        InvalidCode::Unsupported => Code::Unsupported,
        InvalidCode::NotAssigned => Code::Forbidden,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_stable_codes() {
        let unknown = BrokerError::Rejected(Rejection::UnknownTopic("t".into()));
        assert_eq!(code_of(&unknown), Code::TopicNotFound);
        let big = BrokerError::invalid(InvalidCode::BodyTooLarge, "too big");
        assert_eq!(from_error(&big).code, Code::MessageBodyTooLarge as i32);
        assert_eq!(
            code_of(&BrokerError::NotLeader { leader: None }),
            Code::HaNotAvailable
        );
        assert_eq!(
            code_of(&BrokerError::Rejected(Rejection::InvalidGroup("g".into()))),
            Code::IllegalConsumerGroup
        );
        assert_eq!(ok().code, 20000);
    }
}
