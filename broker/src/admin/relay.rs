//! Relaying admin calls from a follower to the leader over cached channels to the leader's
//! client port (which serves AdminService too). Relayed calls carry
//! [`crate::forward::FORWARDED_HEADER`], so the leader never relays them again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use raftmq_proto::raftmq::admin::v1::admin_service_client::AdminServiceClient;
use tonic::Code;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::transport::Channel;
use tonic::transport::Endpoint;

use super::errors::has_leader_hint;
use super::errors::leader_hint;
use crate::forward;
use crate::raft::types::BrokerNode;
use crate::raft::types::NodeId;
use crate::service::long_poll::grpc_timeout;

/// Most cached channels (one per leader address seen; a group has few members).
const MAX_CHANNELS: usize = 16;
/// How long connecting to the leader may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The leader a call goes to.
pub type Leader = (NodeId, BrokerNode);

/// Cached channels to leaders' client ports.
#[derive(Debug, Default)]
pub struct LeaderChannels {
    channels: Mutex<HashMap<String, Channel>>,
}

impl LeaderChannels {
    /// An admin client for the member at `addr` (`host:port`); connects lazily.
    fn client(&self, addr: &str) -> Result<AdminServiceClient<Channel>, Status> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = channels.get(addr) {
            return Ok(AdminServiceClient::new(c.clone()));
        }
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Status::unavailable(format!("bad leader address {addr}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy();
        if channels.len() >= MAX_CHANNELS {
            channels.clear();
        }
        channels.insert(addr.to_owned(), channel.clone());
        Ok(AdminServiceClient::new(channel))
    }

    fn drop_channel(&self, addr: &str) {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        channels.remove(addr);
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
        let addr = leader.1.client_addr.as_str();
        let client = self.client(addr)?;
        tracing::debug!(leader = leader.0, %addr, "relaying admin call to the leader");
        match tokio::time::timeout(timeout, call(client, forward::relay(req, timeout))).await {
            Ok(Ok(resp)) => Ok(with_leader_header(resp, addr)),
            Ok(Err(status)) => Err(self.relay_failure(leader, status)),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "the leader did not answer within {timeout:?}; a change may still take effect"
            ))),
        }
    }

    /// The status to answer when a relayed call failed: the leader's own answers pass
    /// through, transport failures become UNAVAILABLE naming the leader.
    fn relay_failure(&self, leader: &Leader, status: Status) -> Status {
        if status.code() != Code::Unavailable || has_leader_hint(status.message()) {
            return status;
        }
        self.drop_channel(&leader.1.client_addr);
        Status::unavailable(format!(
            "cannot reach the leader: {}; {}",
            status.message(),
            leader_hint(Some(leader))
        ))
    }
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

    #[test]
    fn transport_failures_name_the_leader() {
        let channels = LeaderChannels::default();
        let leader = (
            3,
            BrokerNode {
                raft_addr: "127.0.0.1:9003".into(),
                client_addr: "127.0.0.1:8083".into(),
            },
        );
        let s = channels.relay_failure(&leader, Status::unavailable("tcp connect error"));
        assert_eq!(s.code(), Code::Unavailable);
        assert!(
            s.message().ends_with("leader=3 at 127.0.0.1:8083"),
            "{}",
            s.message()
        );
        // The leader's own answers pass through unchanged.
        let own = Status::unavailable("this node is not the leader of the broker group; no leader known");
        assert_eq!(
            channels.relay_failure(&leader, own.clone()).message(),
            own.message()
        );
        let nf = Status::not_found("topic t does not exist");
        assert_eq!(channels.relay_failure(&leader, nf).code(), Code::NotFound);
    }
}
