//! Forwarding client calls from a follower to the leader (DESIGN decision 6): the follower
//! relays the whole RPC over a cached channel and relays the answer back, so a client with
//! a stale route still works. A forwarded call carries [`FORWARDED_HEADER`]; a node never
//! forwards such a call again (no loops while leadership moves), it answers with a leader
//! hint instead.
//!
//! One cache of channels serves both services of the client port: MessagingService calls
//! ([`crate::service`]) and AdminService calls ([`crate::admin::relay`]) to a leader share
//! its channel, and every client built over it has the same message-size limits as the
//! server ([`MAX_GRPC_MESSAGE`]), whether the channel was just made or cached.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use raftmq_proto::raftmq::admin::v1::admin_service_client::AdminServiceClient;
use raftmq_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use tonic::transport::Channel;
use tonic::transport::Endpoint;

use crate::context::Broker;
use crate::error::BrokerError;
use crate::error::BrokerResult;

/// Marks a call relayed by another member of the group.
pub const FORWARDED_HEADER: &str = "x-raftmq-forwarded";
/// Carried back on answers of a follower: the leader's client address.
pub const LEADER_HEADER: &str = "x-raftmq-leader";
/// Largest gRPC message on the client port, both ways: a full batch of maximal messages
/// fits. The server and every relaying client use it.
pub const MAX_GRPC_MESSAGE: usize = 64 << 20;
/// Most cached channels (one per leader address seen; a group has few members).
const MAX_CHANNELS: usize = 16;
/// How long connecting to the leader may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Cached channels to other members' client ports.
#[derive(Debug)]
pub struct Forwarder {
    timeout: Duration,
    channels: Mutex<HashMap<String, Channel>>,
    /// Leaders this node recently failed to connect to, and when.
    unreachable: Mutex<HashMap<String, Instant>>,
}

impl Forwarder {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            channels: Mutex::new(HashMap::new()),
            unreachable: Mutex::new(HashMap::new()),
        }
    }

    /// The channel to the member at `addr` (`host:port`), cached; connects lazily.
    pub fn channel(&self, addr: &str) -> BrokerResult<Channel> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| BrokerError::Internal(format!("bad leader address {addr}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .max_frame_size(raftmq_proto::H2_MAX_FRAME_BYTES)
            .timeout(self.timeout)
            .connect_lazy();
        if channels.len() >= MAX_CHANNELS {
            channels.clear();
        }
        channels.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }

    /// A MessagingService client for the member at `addr`.
    pub fn client(&self, addr: &str) -> BrokerResult<MessagingServiceClient<Channel>> {
        Ok(MessagingServiceClient::new(self.channel(addr)?)
            .max_decoding_message_size(MAX_GRPC_MESSAGE)
            .max_encoding_message_size(MAX_GRPC_MESSAGE))
    }

    /// An AdminService client for the member at `addr`.
    pub fn admin_client(&self, addr: &str) -> BrokerResult<AdminServiceClient<Channel>> {
        Ok(AdminServiceClient::new(self.channel(addr)?)
            .max_decoding_message_size(MAX_GRPC_MESSAGE)
            .max_encoding_message_size(MAX_GRPC_MESSAGE))
    }

    /// Forgets the channel to `addr` (after a transport failure).
    pub fn drop_channel(&self, addr: &str) {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        channels.remove(addr);
    }

    /// Notes that connecting to `addr` failed (the member is down or cut off) and forgets
    /// its channel.
    pub fn mark_unreachable(&self, addr: &str) {
        self.drop_channel(addr);
        let mut marks = self.unreachable.lock().unwrap_or_else(|p| p.into_inner());
        if marks.len() >= MAX_CHANNELS {
            marks.clear();
        }
        marks.insert(addr.to_owned(), Instant::now());
    }

    /// Notes that a call to `addr` went through.
    pub fn mark_reachable(&self, addr: &str) {
        let mut marks = self.unreachable.lock().unwrap_or_else(|p| p.into_inner());
        marks.remove(addr);
    }

    /// Whether connecting to `addr` failed within the last `within`.
    pub fn recently_unreachable(&self, addr: &str, within: Duration) -> bool {
        let marks = self.unreachable.lock().unwrap_or_else(|p| p.into_inner());
        marks.get(addr).is_some_and(|at| at.elapsed() < within)
    }

    /// Whether a channel to `addr` is cached.
    pub fn has_channel(&self, addr: &str) -> bool {
        let channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        channels.contains_key(addr)
    }
}

/// Refuses to go on unless this node leads; the error names the leader when another node
/// is known to lead.
pub fn ensure_leader(broker: &Broker) -> BrokerResult<()> {
    if broker.is_leader() {
        return Ok(());
    }
    let leader = broker.leader().filter(|(id, _)| *id != broker.id);
    Err(BrokerError::NotLeader { leader })
}

/// Whether a relayed call failed before reaching the member: no connection could be
/// made, so the call certainly did not take effect there.
pub fn is_connect_failure(status: &tonic::Status) -> bool {
    if status.code() != tonic::Code::Unavailable {
        return false;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    let mut texts = vec![status.message().to_owned()];
    while let Some(e) = source {
        texts.push(e.to_string());
        source = e.source();
    }
    texts
        .iter()
        .any(|t| t.contains("tcp connect error") || t.contains("Connection refused"))
}

/// Whether a relayed call failed in this node's transport without any answer from the
/// member, e.g. the connection broke mid-call because the member died. tonic reports that
/// as UNKNOWN with the transport error as its source; a status the member sent has no
/// source. Whether the call took effect there is unknown.
pub fn is_broken_transport(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unknown && std::error::Error::source(status).is_some()
}

/// Whether a request was relayed by another member.
pub fn is_forwarded<T>(req: &tonic::Request<T>) -> bool {
    req.metadata().contains_key(FORWARDED_HEADER)
}

/// The request to relay: the same message and client metadata, marked as forwarded. Its
/// deadline is the client's (so a relayed long poll still ends before the client gives
/// up), capped at `timeout`.
pub fn relay<T>(req: tonic::Request<T>, timeout: Duration) -> tonic::Request<T> {
    let client_deadline = crate::service::long_poll::grpc_timeout(req.metadata());
    let timeout = client_deadline.map_or(timeout, |d| d.min(timeout));
    let (mut metadata, _, message) = req.into_parts();
    metadata.remove("grpc-timeout");
    metadata.insert(FORWARDED_HEADER, tonic::metadata::MetadataValue::from_static("1"));
    let mut out = tonic::Request::from_parts(metadata, Default::default(), message);
    out.set_timeout(timeout);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_connection_is_told_from_the_members_own_answers() {
        let broke = tonic::Status::from_error(Box::new(std::io::Error::other("connection reset")));
        assert!(is_broken_transport(&broke));
        assert!(!is_broken_transport(&tonic::Status::unknown(
            "the leader's own answer"
        )));
        assert!(!is_broken_transport(&tonic::Status::unavailable("no leader")));
        assert!(!is_connect_failure(&broke));
    }

    #[tokio::test]
    async fn messaging_and_admin_share_one_channel_per_member() {
        let f = Forwarder::new(Duration::from_secs(1));
        assert!(!f.has_channel("127.0.0.1:9"));
        f.client("127.0.0.1:9").expect("client");
        assert!(f.has_channel("127.0.0.1:9"));
        // A cached channel gives clients with the same limits as a fresh one (the fields
        // are private; the debug output shows them).
        let limits = |debug: String| {
            for which in ["decoding", "encoding"] {
                let want = format!("max_{which}_message_size: Some({MAX_GRPC_MESSAGE})");
                assert!(debug.contains(&want), "{want} missing: {debug}");
            }
        };
        limits(format!("{:?}", f.client("127.0.0.1:9").expect("cached")));
        f.drop_channel("127.0.0.1:9");
        limits(format!("{:?}", f.client("127.0.0.1:9").expect("fresh")));
        limits(format!(
            "{:?}",
            f.admin_client("127.0.0.1:9").expect("admin, cached")
        ));
        f.admin_client("127.0.0.1:10").expect("admin");
        assert!(f.has_channel("127.0.0.1:10"));
        f.drop_channel("127.0.0.1:10");
        assert!(!f.has_channel("127.0.0.1:10"));
        assert!(f.channel("bad address with spaces").is_err());
    }
}
