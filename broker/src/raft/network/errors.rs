//! How a failed call becomes an openraft error: [`ErrorContext`] names the call, and a gRPC
//! status maps to `Unreachable`, `Timeout` or `NetworkError` (see the module docs of
//! `raft::network`).

use std::time::Duration;

use openraft::RPCTypes;
use openraft::error::NetworkError;
use openraft::error::RPCError;
use openraft::error::Timeout;
use openraft::error::Unreachable;
use tonic::Code;
use tonic::Status;

use super::C;
use crate::raft::types::NodeId;

/// How errors name the call they come from.
#[derive(Debug, Clone)]
pub(super) struct ErrorContext {
    pub(super) id: NodeId,
    pub(super) target: NodeId,
}

impl ErrorContext {
    pub(super) fn timeout(&self, action: RPCTypes, timeout: Duration) -> RPCError<C> {
        RPCError::Timeout(Timeout {
            action,
            id: self.id,
            target: self.target,
            timeout,
        })
    }

    /// Maps a failed call to what openraft should make of it (see the module docs).
    pub(super) fn status(&self, action: RPCTypes, timeout: Duration, status: Status) -> RPCError<C> {
        tracing::debug!(target_node = self.target, %action, code = ?status.code(), message = status.message(), "Raft RPC failed");
        match status.code() {
            Code::DeadlineExceeded => self.timeout(action, timeout),
            // The channel enforces the deadline we put on the request itself.
            _ if caused_by::<tonic::TimeoutExpired>(&status) => self.timeout(action, timeout),
            Code::Unavailable | Code::FailedPrecondition => RPCError::Unreachable(Unreachable::new(&status)),
            // A status with a source was made locally from a transport failure (connection
            // refused or reset, HTTP/2 error): the peer never answered.
            _ if std::error::Error::source(&status).is_some() => {
                RPCError::Unreachable(Unreachable::new(&status))
            }
            _ => RPCError::Network(NetworkError::new(&status)),
        }
    }

    pub(super) fn malformed(&self, what: &str, e: postcard::Error) -> RPCError<C> {
        RPCError::Network(NetworkError::from_string(format!(
            "node {} answered with a {what} that cannot be decoded: {e}",
            self.target
        )))
    }
}

/// Whether an error of type `E` is somewhere in `status`'s source chain.
fn caused_by<E: std::error::Error + 'static>(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<E>() {
            return true;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_map_to_what_openraft_backs_off_on() {
        let ctx = ErrorContext { id: 1, target: 2 };
        let t = Duration::from_millis(75);
        assert!(matches!(
            ctx.status(RPCTypes::Vote, t, Status::unavailable("down")),
            RPCError::Unreachable(_)
        ));
        assert!(matches!(
            ctx.status(RPCTypes::Vote, t, Status::failed_precondition("wrong node")),
            RPCError::Unreachable(_)
        ));
        assert!(matches!(
            ctx.status(RPCTypes::Vote, t, Status::deadline_exceeded("late")),
            RPCError::Timeout(_)
        ));
        assert!(matches!(
            ctx.status(RPCTypes::Vote, t, Status::invalid_argument("bad")),
            RPCError::Network(_)
        ));
        let transport = Status::from_error(Box::new(std::io::Error::other("reset")));
        assert!(matches!(
            ctx.status(RPCTypes::Vote, t, transport),
            RPCError::Unreachable(_)
        ));
        let expired = Status::from_error(Box::new(tonic::TimeoutExpired(())));
        assert_eq!(expired.code(), Code::Cancelled);
        assert!(matches!(
            ctx.status(RPCTypes::Vote, t, expired),
            RPCError::Timeout(_)
        ));
    }
}
