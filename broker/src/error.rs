//! The broker's error type. Retryable conditions (`NotLeader`, `Unavailable`) are kept
//! apart from refusals of bad input and from fatal storage failures; the mapping to the
//! wire's status codes lives in one place ([`crate::service::status`]).

use crate::command::Rejection;
use crate::raft::types::BrokerNode;
use crate::raft::types::NodeId;

/// What can go wrong serving a request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// This node is not the leader; `leader` is who is, if known. Retryable there.
    #[error("not the leader of the broker group{}", leader_text(.leader))]
    NotLeader { leader: Option<(NodeId, BrokerNode)> },
    /// The group cannot serve right now (no leader, shutting down, election running).
    /// Retryable.
    #[error("broker group unavailable: {0}")]
    Unavailable(String),
    /// The request timed out inside the broker; the outcome of a write is unknown.
    #[error("timed out: {0}")]
    Timeout(String),
    /// Applying the command was refused, alike on every replica.
    #[error("{0}")]
    Rejected(Rejection),
    /// The request is invalid; `code` is the protocol's code for it.
    #[error("{message}")]
    Invalid { code: InvalidCode, message: String },
    /// Storage failed (commit log or state machine). Fatal for this node.
    #[error("storage failure: {0}")]
    Storage(String),
    /// A bug or an unexpected state.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Which kind of bad input a request carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidCode {
    BadRequest,
    IllegalTopic,
    IllegalGroup,
    IllegalTag,
    IllegalKey,
    IllegalMessageGroup,
    IllegalPropertyKey,
    IllegalMessageId,
    IllegalFilter,
    IllegalInvisibleTime,
    IllegalDeliveryTime,
    IllegalPollingTime,
    IllegalOffset,
    InvalidReceiptHandle,
    ClientIdRequired,
    BodyTooLarge,
    /// A request whose Raft entry would exceed the commit log's record limit.
    PayloadTooLarge,
    BodyEmpty,
    PropertiesTooLarge,
    MessageNotFound,
    OffsetNotFound,
    Unsupported,
    /// A push consumer's receive on a queue its group's leader has not granted it.
    NotAssigned,
}

fn leader_text(leader: &Option<(NodeId, BrokerNode)>) -> String {
    match leader {
        Some((id, node)) => format!("; the leader is node {id} at {}", node.client_addr),
        None => "; no leader known".to_owned(),
    }
}

impl BrokerError {
    pub fn invalid(code: InvalidCode, message: impl Into<String>) -> Self {
        Self::Invalid {
            code,
            message: message.into(),
        }
    }

    /// Whether trying again (here or at the hinted leader) may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::NotLeader { .. } | Self::Unavailable(_) | Self::Timeout(_)
        )
    }
}

impl From<crate::sm::SmError> for BrokerError {
    fn from(e: crate::sm::SmError) -> Self {
        Self::Storage(e.to_string())
    }
}

impl From<raft_log::LogError> for BrokerError {
    fn from(e: raft_log::LogError) -> Self {
        Self::Storage(e.to_string())
    }
}

pub type BrokerResult<T> = Result<T, BrokerError>;
