//! The client's one error type. [`ClientError::is_retryable`] separates what may succeed
//! when tried again (another endpoint, later) from what never will.

use raftmq_proto::rocketmq::v2 as pb;

/// What can go wrong in a client call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// Bad input caught before anything was sent (empty topic, body over the limit,
    /// illegal tag expression, ...). Never retryable.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The topic (or consumer group) does not exist on any reachable broker group.
    #[error("not found: {0}")]
    NotFound(String),
    /// The broker refused the call with a protocol code.
    #[error("broker {endpoint} answered {code:?} ({}): {message}", *code as i32)]
    Broker {
        /// The protocol code.
        code: pb::Code,
        /// The broker's explanation.
        message: String,
        /// The address that answered.
        endpoint: String,
    },
    /// No endpoint could be reached (connection refused, reset, unavailable).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The call did not finish within its deadline and it changed nothing that matters
    /// (a read, a route query).
    #[error("timed out: {0}")]
    Timeout(String),
    /// A change whose outcome is unknown: it timed out or its connection failed after the
    /// request left, for example during a leader change. A send may or may not have stored
    /// the message (sending it again may store it twice); an ack or a change of
    /// invisibility may or may not have taken effect.
    #[error("outcome unknown (the message may have been stored): {0}")]
    OutcomeUnknown(String),
    /// The client (or the component) was shut down.
    #[error("shut down")]
    Shutdown,
}

/// A result with [`ClientError`].
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

impl ClientError {
    /// Whether trying again (another endpoint, another broker group, later) may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Unreachable(_) | ClientError::Timeout(_) | ClientError::OutcomeUnknown(_) => true,
            ClientError::Broker { code, .. } => retryable_code(*code),
            ClientError::InvalidArgument(_) | ClientError::NotFound(_) | ClientError::Shutdown => false,
        }
    }

    /// Whether the topic's route may have changed under a call that failed so (an address
    /// gone, a group without a leader or without the topic): worth refreshing the route.
    /// Bad input and a shut-down client are not.
    pub fn suggests_route_refresh(&self) -> bool {
        self.is_retryable() || matches!(self, ClientError::NotFound(_))
    }

    /// The protocol code, for a broker error.
    pub fn code(&self) -> Option<pb::Code> {
        match self {
            ClientError::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The error of a non-OK protocol status from `endpoint`.
    pub fn from_status(status: &pb::Status, endpoint: &str) -> Self {
        let code = pb::Code::try_from(status.code).unwrap_or(pb::Code::Unspecified);
        match code {
            pb::Code::TopicNotFound | pb::Code::ConsumerGroupNotFound | pb::Code::NotFound => {
                ClientError::NotFound(status.message.clone())
            }
            _ => ClientError::Broker {
                code,
                message: status.message.clone(),
                endpoint: endpoint.to_owned(),
            },
        }
    }
}

/// Codes that may go away on another try: the leader is changing, the broker is busy or
/// timed out internally.
pub fn retryable_code(code: pb::Code) -> bool {
    matches!(
        code,
        pb::Code::HaNotAvailable
            | pb::Code::TooManyRequests
            | pb::Code::InternalServerError
            | pb::Code::InternalError
            | pb::Code::ProxyTimeout
            | pb::Code::MasterPersistenceTimeout
            | pb::Code::SlavePersistenceTimeout
            | pb::Code::RequestTimeout
    )
}

/// Whether a gRPC status means the request may never have reached the server
/// (nothing happened) rather than an unknown outcome.
pub fn not_sent(status: &tonic::Status) -> bool {
    // tonic reports a failed connect as UNAVAILABLE with a "tcp connect error" source.
    if status.code() != tonic::Code::Unavailable {
        return false;
    }
    let text = format!("{status:?}");
    text.contains("connect error")
        || text.contains("trying to connect")
        || text.contains("Connection refused")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_and_fatal_errors_are_told_apart() {
        assert!(ClientError::Unreachable("x".into()).is_retryable());
        assert!(ClientError::OutcomeUnknown("x".into()).is_retryable());
        assert!(!ClientError::InvalidArgument("x".into()).is_retryable());
        assert!(!ClientError::NotFound("x".into()).is_retryable());
        assert!(ClientError::NotFound("x".into()).suggests_route_refresh());
        assert!(ClientError::Timeout("x".into()).suggests_route_refresh());
        assert!(!ClientError::InvalidArgument("x".into()).suggests_route_refresh());
        assert!(!ClientError::Shutdown.suggests_route_refresh());
        let busy = ClientError::from_status(
            &pb::Status {
                code: pb::Code::HaNotAvailable as i32,
                message: "no leader".into(),
            },
            "a:1",
        );
        assert!(busy.is_retryable());
        assert_eq!(busy.code(), Some(pb::Code::HaNotAvailable));
        let big = ClientError::from_status(
            &pb::Status {
                code: pb::Code::MessageBodyTooLarge as i32,
                message: "too big".into(),
            },
            "a:1",
        );
        assert!(!big.is_retryable());
        let nf = ClientError::from_status(
            &pb::Status {
                code: pb::Code::TopicNotFound as i32,
                message: "t".into(),
            },
            "a:1",
        );
        assert!(matches!(nf, ClientError::NotFound(_)));
    }
}
