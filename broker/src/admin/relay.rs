//! Relaying admin calls from a follower to the leader over the node's cached channels to
//! members' client ports ([`crate::forward::Forwarder`], shared with MessagingService
//! forwarding; the leader's client port serves AdminService too). Relayed calls carry
//! [`crate::forward::FORWARDED_HEADER`], so the leader never relays them again.

use std::sync::Arc;
use std::time::Duration;

use raftmq_proto::raftmq::admin::v1::admin_service_client::AdminServiceClient;
use tonic::Code;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::transport::Channel;

use super::errors::has_leader_hint;
use super::errors::leader_hint;
use crate::context::Broker;
use crate::forward;
use crate::forward::Forwarder;
use crate::raft::types::BrokerNode;
use crate::raft::types::NodeId;
use crate::service::long_poll::grpc_timeout;

/// The leader a call goes to.
pub type Leader = (NodeId, BrokerNode);

/// Relays admin calls to the leader over the node's shared channels.
#[derive(Debug, Clone)]
pub struct LeaderRelay {
    broker: Arc<Broker>,
}

impl LeaderRelay {
    pub fn new(broker: Arc<Broker>) -> Self {
        Self { broker }
    }

    /// Relays `req` to `leader` with `call` (one method of the client), marked as forwarded,
    /// giving up after `timeout`. The leader's answer, success or status, is passed back;
    /// a failure to reach it becomes UNAVAILABLE with the leader hint.
    pub async fn call<Req, Resp, F, Fut>(
        &self,
        leader: &Leader,
        req: Request<Req>,
        timeout: Duration,
        call: F,
    ) -> Result<Response<Resp>, Status>
    where
        F: FnOnce(AdminServiceClient<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let forwarder = &self.broker.forwarder;
        let addr = leader.1.client_addr.as_str();
        let client = forwarder
            .admin_client(addr)
            .map_err(|e| Status::unavailable(e.to_string()))?;
        tracing::debug!(leader = leader.0, %addr, "relaying admin call to the leader");
        match tokio::time::timeout(timeout, call(client, forward::relay(req, timeout))).await {
            Ok(Ok(resp)) => Ok(with_leader_header(resp, addr)),
            Ok(Err(status)) => Err(relay_failure(forwarder, leader, status)),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "the leader did not answer within {timeout:?}; a change may still take effect"
            ))),
        }
    }
}

/// The status to answer when a relayed call failed: the leader's own answers pass
/// through, transport failures (a connection that could not be made or broke mid-call)
/// become UNAVAILABLE naming the leader (and the channel to it is dropped).
fn relay_failure(forwarder: &Forwarder, leader: &Leader, status: Status) -> Status {
    let transport = status.code() == Code::Unavailable || forward::is_broken_transport(&status);
    if !transport || has_leader_hint(status.message()) {
        return status;
    }
    forwarder.drop_channel(&leader.1.client_addr);
    Status::unavailable(format!(
        "cannot reach the leader: {}; {}",
        status.message(),
        leader_hint(Some(leader))
    ))
}

/// Tells the caller where the leader is, so it can go there directly.
fn with_leader_header<T>(mut resp: Response<T>, leader_addr: &str) -> Response<T> {
    if let Ok(v) = leader_addr.parse() {
        resp.metadata_mut().insert(forward::LEADER_HEADER, v);
    }
    resp
}

/// The time a relay may take: `limit`, or less when the caller is in a hurry.
pub fn relay_timeout<T>(req: &Request<T>, limit: Duration) -> Duration {
    grpc_timeout(req.metadata()).map_or(limit, |t| t.min(limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_timeout_respects_the_caller() {
        let limit = Duration::from_secs(30);
        assert_eq!(relay_timeout(&Request::new(()), limit), limit);
        let mut req = Request::new(());
        req.set_timeout(Duration::from_secs(5));
        assert_eq!(relay_timeout(&req, limit), Duration::from_secs(5));
    }

    #[tokio::test]
    async fn transport_failures_name_the_leader_and_drop_the_channel() {
        let channels = Forwarder::new(Duration::from_secs(1));
        let leader = (
            3,
            BrokerNode {
                raft_addr: "127.0.0.1:9003".into(),
                client_addr: "127.0.0.1:8083".into(),
            },
        );
        channels.channel("127.0.0.1:8083").expect("channel");
        let s = relay_failure(&channels, &leader, Status::unavailable("tcp connect error"));
        assert_eq!(s.code(), Code::Unavailable);
        assert!(!channels.has_channel("127.0.0.1:8083"), "dropped");
        assert!(
            s.message().ends_with("leader=3 at 127.0.0.1:8083"),
            "{}",
            s.message()
        );
        // The leader's own answers pass through unchanged.
        let own = Status::unavailable("this node is not the leader of the broker group; no leader known");
        assert_eq!(
            relay_failure(&channels, &leader, own.clone()).message(),
            own.message()
        );
        let nf = Status::not_found("topic t does not exist");
        assert_eq!(relay_failure(&channels, &leader, nf).code(), Code::NotFound);
        // A connection that broke mid-call (tonic: UNKNOWN, with the transport error as
        // its source) is a transport failure too.
        let broke = Status::from_error(Box::new(std::io::Error::other("connection reset")));
        assert_eq!(relay_failure(&channels, &leader, broke).code(), Code::Unavailable);
        let unknown = Status::unknown("the leader's own failure");
        assert_eq!(relay_failure(&channels, &leader, unknown).code(), Code::Unknown);
    }
}
