//! The name server's errors, and the one place they become wire codes.

use raftmq_proto::rocketmq::v2 as rmq;

/// What can go wrong answering a call.
#[derive(Debug, thiserror::Error)]
pub enum NamesrvError {
    /// A registration that breaks the protocol's rules; the table is left as it was.
    #[error("malformed registration: {0}")]
    InvalidRegistration(String),
    /// An illegal topic name in a query.
    #[error("illegal topic: {0}")]
    InvalidTopic(String),
    /// No live broker group hosts the topic.
    #[error("topic {0} is not hosted by any live broker group")]
    TopicNotFound(String),
    /// The registry holds its maximum number of members; retryable once some expire.
    #[error("the registry is full ({0} members); the registration was refused")]
    Full(usize),
    /// The name server cannot listen on its address.
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    /// A configuration that cannot work.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// TLS cannot be set up (certificate or key files).
    #[error("tls: {0}")]
    Tls(#[from] raftmq_transport::TransportError),
}

impl NamesrvError {
    /// Whether the caller may succeed by trying again later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, NamesrvError::Full(_))
    }

    /// The gRPC status of raftmq's own name server service.
    pub fn to_status(&self) -> tonic::Status {
        match self {
            NamesrvError::InvalidRegistration(_) | NamesrvError::InvalidTopic(_) => {
                tonic::Status::invalid_argument(self.to_string())
            }
            NamesrvError::TopicNotFound(_) => tonic::Status::not_found(self.to_string()),
            NamesrvError::Full(_) => tonic::Status::resource_exhausted(self.to_string()),
            NamesrvError::Listen { .. } | NamesrvError::Config(_) | NamesrvError::Tls(_) => {
                tonic::Status::internal(self.to_string())
            }
        }
    }

    /// The status inside a RocketMQ 5 response.
    pub fn to_rocketmq(&self) -> rmq::Status {
        let code = match self {
            NamesrvError::InvalidRegistration(_) => rmq::Code::BadRequest,
            NamesrvError::InvalidTopic(_) => rmq::Code::IllegalTopic,
            NamesrvError::TopicNotFound(_) => rmq::Code::TopicNotFound,
            NamesrvError::Full(_) => rmq::Code::TooManyRequests,
            NamesrvError::Listen { .. } | NamesrvError::Config(_) | NamesrvError::Tls(_) => {
                rmq::Code::InternalServerError
            }
        };
        status(code, self.to_string())
    }
}

/// A RocketMQ 5 status.
pub fn status(code: rmq::Code, message: impl Into<String>) -> rmq::Status {
    rmq::Status {
        code: code as i32,
        message: message.into(),
    }
}

/// `OK`.
pub fn ok() -> rmq::Status {
    status(rmq::Code::Ok, "OK")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_one_grpc_and_one_protocol_code() {
        let nf = NamesrvError::TopicNotFound("t".into());
        assert_eq!(nf.to_status().code(), tonic::Code::NotFound);
        assert_eq!(nf.to_rocketmq().code, rmq::Code::TopicNotFound as i32);
        let bad = NamesrvError::InvalidRegistration("x".into());
        assert_eq!(bad.to_status().code(), tonic::Code::InvalidArgument);
        assert!(!bad.is_retryable());
        let full = NamesrvError::Full(3);
        assert!(full.is_retryable());
        assert_eq!(full.to_status().code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            NamesrvError::InvalidTopic("a b".into()).to_rocketmq().code,
            rmq::Code::IllegalTopic as i32
        );
    }
}
