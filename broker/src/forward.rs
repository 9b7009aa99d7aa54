//! Forwarding client calls from a follower to the leader (DESIGN decision 6): the follower
//! relays the whole RPC over a cached channel and relays the answer back, so a client with
//! a stale route still works. A forwarded call carries [`FORWARDED_HEADER`]; a node never
//! forwards such a call again (no loops while leadership moves), it answers with a leader
//! hint instead.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use raftmq_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use tonic::transport::Channel;
use tonic::transport::Endpoint;

use crate::error::BrokerError;
use crate::error::BrokerResult;

/// Marks a call relayed by another member of the group.
pub const FORWARDED_HEADER: &str = "x-raftmq-forwarded";
/// Carried back on answers of a follower: the leader's client address.
pub const LEADER_HEADER: &str = "x-raftmq-leader";
/// Most cached channels (one per leader address seen; a group has few members).
const MAX_CHANNELS: usize = 16;

/// Cached channels to other members' client ports.
#[derive(Debug)]
pub struct Forwarder {
    timeout: Duration,
    channels: Mutex<HashMap<String, Channel>>,
}

impl Forwarder {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// A client for the member at `addr` (`host:port`); connects lazily.
    pub fn client(&self, addr: &str) -> BrokerResult<MessagingServiceClient<Channel>> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = channels.get(addr) {
            return Ok(MessagingServiceClient::new(c.clone()));
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| BrokerError::Internal(format!("bad leader address {addr}: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .timeout(self.timeout);
        let channel = endpoint.connect_lazy();
        if channels.len() >= MAX_CHANNELS {
            channels.clear();
        }
        channels.insert(addr.to_owned(), channel.clone());
        Ok(MessagingServiceClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX))
    }

    /// Forgets the channel to `addr` (after a transport failure).
    pub fn drop_channel(&self, addr: &str) {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        channels.remove(addr);
    }
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
