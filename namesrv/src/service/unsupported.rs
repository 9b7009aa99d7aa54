//! Calls a name server does not serve: they belong to brokers. Each answers with a status
//! that says where to go, never an empty OK.

use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::Code;

use crate::error;

/// The status of a broker call made at a name server.
pub fn broker_call(method: &str) -> Option<pb::Status> {
    Some(error::status(
        Code::NotImplemented,
        format!(
            "{method} is a broker call and this is a name server: send it to the endpoints \
             QueryRoute returns for the queue"
        ),
    ))
}
