//! The one place where admin failures become gRPC status codes (the table at the top of
//! `proto/raftmq/admin/v1/admin.proto`).

use tonic::Code;
use tonic::Status;

use crate::command::CommandResult;
use crate::command::Rejection;
use crate::error::BrokerError;
use crate::raft::types::BrokerNode;
use crate::raft::types::NodeId;

/// What an admin handler can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AdminError {
    /// A failure of the broker (Raft, storage) or a refusal by the state machine.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The request itself is bad (empty name, unknown enum value, shrinking queues).
    #[error("{0}")]
    Invalid(String),
    /// The request is well-formed but the current state forbids it.
    #[error("{0}")]
    Precondition(String),
}

impl From<crate::sm::SmError> for AdminError {
    fn from(e: crate::sm::SmError) -> Self {
        Self::Broker(e.into())
    }
}

/// `Ok` for a command the state machine applied, the refusal otherwise.
pub fn expect_done(result: CommandResult) -> Result<(), AdminError> {
    match result {
        CommandResult::Done => Ok(()),
        CommandResult::Rejected(r) => Err(BrokerError::Rejected(r).into()),
        other => Err(BrokerError::Internal(format!("unexpected result of a topic change: {other:?}")).into()),
    }
}

/// The suffix naming the leader, as the protocol wants it at the end of an UNAVAILABLE
/// message: `leader=<node id> at <client address>`.
pub fn leader_hint(leader: Option<&(NodeId, BrokerNode)>) -> String {
    match leader {
        Some((id, node)) => format!("leader={id} at {}", node.client_addr),
        None => "no leader known".to_owned(),
    }
}

/// Whether an UNAVAILABLE message already says where the leader is (or that none is known),
/// i.e. whether it came from a member's admin service rather than from the transport.
pub fn has_leader_hint(message: &str) -> bool {
    message.ends_with("no leader known")
        || message
            .rsplit_once("leader=")
            .is_some_and(|(_, tail)| tail.contains(" at "))
}

/// The gRPC status of a failure. `leader` is this node's idea of the leader, used for the
/// hint of an UNAVAILABLE answer when the error does not carry its own.
pub fn to_status(e: &AdminError, leader: Option<&(NodeId, BrokerNode)>) -> Status {
    let code = match e {
        AdminError::Invalid(_) => Code::InvalidArgument,
        AdminError::Precondition(_) => Code::FailedPrecondition,
        AdminError::Broker(b) => match b {
            BrokerError::Rejected(Rejection::TopicExists(_)) => Code::AlreadyExists,
            BrokerError::Rejected(Rejection::UnknownTopic(_) | Rejection::NoSuchQueue { .. }) => {
                Code::NotFound
            }
            BrokerError::Rejected(
                Rejection::InvalidTopic(_) | Rejection::InvalidGroup(_) | Rejection::Malformed(_),
            )
            | BrokerError::Invalid { .. } => Code::InvalidArgument,
            BrokerError::Rejected(Rejection::NotWritable(_) | Rejection::NotReadable(_)) => {
                Code::FailedPrecondition
            }
            BrokerError::NotLeader { .. } | BrokerError::Unavailable(_) => Code::Unavailable,
            BrokerError::Timeout(_) => Code::DeadlineExceeded,
            BrokerError::Storage(_) | BrokerError::Internal(_) => Code::Internal,
        },
    };
    let message = match e {
        AdminError::Broker(BrokerError::NotLeader { leader: known }) => format!(
            "this node is not the leader of the broker group; {}",
            leader_hint(known.as_ref().or(leader))
        ),
        AdminError::Broker(BrokerError::Unavailable(_)) => format!("{e}; {}", leader_hint(leader)),
        _ => e.to_string(),
    };
    Status::new(code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(addr: &str) -> BrokerNode {
        BrokerNode {
            raft_addr: "127.0.0.1:9000".into(),
            client_addr: addr.into(),
        }
    }

    fn code(e: impl Into<AdminError>) -> Code {
        to_status(&e.into(), None).code()
    }

    #[test]
    fn rejections_map_to_their_codes() {
        let r = |r: Rejection| BrokerError::Rejected(r);
        assert_eq!(code(r(Rejection::TopicExists("t".into()))), Code::AlreadyExists);
        assert_eq!(code(r(Rejection::UnknownTopic("t".into()))), Code::NotFound);
        let no_queue = Rejection::NoSuchQueue {
            topic: "t".into(),
            queue_id: 9,
        };
        assert_eq!(code(r(no_queue)), Code::NotFound);
        assert_eq!(
            code(r(Rejection::InvalidTopic("x".into()))),
            Code::InvalidArgument
        );
        assert_eq!(
            code(r(Rejection::InvalidGroup("x".into()))),
            Code::InvalidArgument
        );
        assert_eq!(code(r(Rejection::Malformed("x".into()))), Code::InvalidArgument);
        assert_eq!(
            code(r(Rejection::NotWritable("t".into()))),
            Code::FailedPrecondition
        );
        assert_eq!(
            code(r(Rejection::NotReadable("t".into()))),
            Code::FailedPrecondition
        );
    }

    #[test]
    fn broker_errors_map_to_their_codes() {
        assert_eq!(code(BrokerError::Timeout("x".into())), Code::DeadlineExceeded);
        assert_eq!(code(BrokerError::Storage("x".into())), Code::Internal);
        assert_eq!(code(BrokerError::Internal("x".into())), Code::Internal);
        assert_eq!(code(BrokerError::Unavailable("x".into())), Code::Unavailable);
        assert_eq!(code(BrokerError::NotLeader { leader: None }), Code::Unavailable);
        let invalid = BrokerError::invalid(crate::error::InvalidCode::IllegalTopic, "bad");
        assert_eq!(code(invalid), Code::InvalidArgument);
        assert_eq!(code(AdminError::Invalid("x".into())), Code::InvalidArgument);
        assert_eq!(
            code(AdminError::Precondition("x".into())),
            Code::FailedPrecondition
        );
    }

    #[test]
    fn unavailable_ends_with_the_leader_hint() {
        let known = (2, node("10.0.0.2:8081"));
        let e = AdminError::Broker(BrokerError::NotLeader {
            leader: Some(known.clone()),
        });
        let s = to_status(&e, None);
        assert!(
            s.message().ends_with("leader=2 at 10.0.0.2:8081"),
            "{}",
            s.message()
        );
        assert!(has_leader_hint(s.message()));

        let e = AdminError::Broker(BrokerError::Unavailable("electing".into()));
        let s = to_status(&e, Some(&known));
        assert!(
            s.message().ends_with("; leader=2 at 10.0.0.2:8081"),
            "{}",
            s.message()
        );

        let e = AdminError::Broker(BrokerError::NotLeader { leader: None });
        let s = to_status(&e, None);
        assert!(s.message().ends_with("no leader known"), "{}", s.message());
        assert!(has_leader_hint(s.message()));
        assert!(!has_leader_hint("tcp connect error: connection refused"));
    }

    #[test]
    fn command_results() {
        assert!(expect_done(CommandResult::Done).is_ok());
        let rejected = expect_done(CommandResult::Rejected(Rejection::TopicExists("t".into())));
        assert!(matches!(
            rejected,
            Err(AdminError::Broker(BrokerError::Rejected(Rejection::TopicExists(
                _
            ))))
        ));
        let odd = expect_done(CommandResult::Acked(vec![true]));
        assert!(matches!(odd, Err(AdminError::Broker(BrokerError::Internal(_)))));
    }
}
