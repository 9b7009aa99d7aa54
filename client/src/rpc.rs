//! Calls on the wire: one lazily connected channel per address, the metadata headers the
//! RocketMQ 5 clients send, and the mapping of transport failures to [`ClientError`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

use raftmq_proto::codec::BulkCodec;
use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use raftmq_proto::send_request::EncodedSendRequest;
use raftmq_proto::send_request::SEND_MESSAGE_PATH;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::transport::Endpoint;

use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::error::Result;

/// Largest gRPC message either way (a batch of 4 MiB messages fits).
pub const MAX_GRPC_MESSAGE: usize = 64 << 20;
/// Most cached channels; the least recently added is dropped beyond it.
const MAX_CHANNELS: usize = 1024;

/// The header by which raftmq's route servers list every address of a group per queue.
pub use raftmq_proto::route_headers::ENDPOINTS_HEADER;

/// Clients created in this process so far (each client's id ends with its number).
static CLIENTS: AtomicU64 = AtomicU64::new(0);

/// Channels and request building, shared by a client's components.
#[derive(Debug)]
pub struct Rpc {
    config: ClientConfig,
    client_id: String,
    channels: Mutex<HashMap<String, Channel>>,
}

impl Rpc {
    /// Channels for a client with `config`; none is opened yet. The client gets its own
    /// id, `<config.client_id>@<n>`, n counting the clients of the process: two clients
    /// built from one configuration are two members to the brokers, not one.
    pub fn new(config: ClientConfig) -> Self {
        let n = CLIENTS.fetch_add(1, Ordering::Relaxed);
        Self {
            client_id: format!("{}@{n}", config.client_id),
            config,
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// The client's configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// This client's id (`x-mq-client-id`), unique in the process.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    fn channels(&self) -> std::sync::MutexGuard<'_, HashMap<String, Channel>> {
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The channel to `addr` (`host:port`), connected on first use.
    pub fn channel(&self, addr: &str) -> Result<Channel> {
        if let Some(c) = self.channels().get(addr) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| ClientError::InvalidArgument(format!("address {addr:?}: {e}")))?
            .connect_timeout(self.config.request_timeout)
            .tcp_nodelay(true)
            .max_frame_size(raftmq_proto::H2_MAX_FRAME_BYTES)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        let channel = endpoint.connect_lazy();
        let mut channels = self.channels();
        if channels.len() >= MAX_CHANNELS
            && let Some(k) = channels.keys().next().cloned()
        {
            channels.remove(&k);
        }
        channels.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }

    /// Forgets the channel to `addr` (after a transport failure), so the next call
    /// connects afresh.
    pub fn drop_channel(&self, addr: &str) {
        self.channels().remove(addr);
    }

    /// A MessagingService stub for `addr`.
    pub fn messaging(&self, addr: &str) -> Result<MessagingServiceClient<Channel>> {
        Ok(MessagingServiceClient::new(self.channel(addr)?)
            .max_decoding_message_size(MAX_GRPC_MESSAGE)
            .max_encoding_message_size(MAX_GRPC_MESSAGE))
    }

    /// `msg` with a deadline and the RocketMQ 5 client headers.
    pub fn request<T>(&self, msg: T, timeout: Duration) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.set_timeout(timeout);
        let md = req.metadata_mut();
        let headers = [
            ("x-mq-client-id", self.client_id.clone()),
            ("x-mq-language", "RUST".to_owned()),
            ("x-mq-protocol", "v2".to_owned()),
            ("x-mq-client-version", env!("CARGO_PKG_VERSION").to_owned()),
            ("x-mq-request-id", format!("{:032x}", rand::random::<u128>())),
            ("x-mq-namespace", self.config.namespace.clone()),
        ];
        for (key, value) in headers {
            if let Ok(v) = MetadataValue::try_from(value.as_str()) {
                md.insert(key, v);
            }
        }
        req
    }
}

/// The messaging service's SendMessage on `channel`, with a request of messages encoded
/// ahead (the generated stub, [`Rpc::messaging`], takes the generated request type only).
pub async fn send_encoded(
    channel: Channel,
    mut request: tonic::Request<EncodedSendRequest>,
) -> std::result::Result<tonic::Response<pb::SendMessageResponse>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_decoding_message_size(MAX_GRPC_MESSAGE)
        .max_encoding_message_size(MAX_GRPC_MESSAGE);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unknown(format!("Service was not ready: {e}")))?;
    request.extensions_mut().insert(tonic::GrpcMethod::new(
        "apache.rocketmq.v2.MessagingService",
        "SendMessage",
    ));
    let codec = BulkCodec::<EncodedSendRequest, pb::SendMessageResponse>::default();
    grpc.unary(request, PathAndQuery::from_static(SEND_MESSAGE_PATH), codec)
        .await
}

/// A fresh client id, `host@pid@random`, as RocketMQ clients form theirs.
pub fn new_client_id() -> String {
    format!(
        "{}@{}@{:08x}",
        host_name(),
        std::process::id(),
        rand::random::<u32>()
    )
}

/// The machine's host name, or "localhost".
pub(crate) fn host_name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "localhost".to_owned())
    })
}

/// The error of a failed gRPC call to `endpoint`. `changes_state` says whether the call
/// may have changed something (a send): then a failure after the request may have left is
/// [`ClientError::OutcomeUnknown`], not a plain failure.
pub fn call_error(status: &tonic::Status, endpoint: &str, changes_state: bool) -> ClientError {
    let detail = format!("{endpoint}: {} {}", status.code(), status.message());
    let never_sent = crate::error::not_sent(status);
    match status.code() {
        tonic::Code::Unavailable if never_sent => ClientError::Unreachable(detail),
        tonic::Code::InvalidArgument | tonic::Code::OutOfRange => ClientError::InvalidArgument(detail),
        tonic::Code::ResourceExhausted => ClientError::InvalidArgument(detail),
        tonic::Code::NotFound => ClientError::NotFound(detail),
        _ if changes_state => ClientError::OutcomeUnknown(detail),
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => ClientError::Timeout(detail),
        _ => ClientError::Unreachable(detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rpc() -> Rpc {
        Rpc::new(
            ClientConfig::builder()
                .access_points(["127.0.0.1:1"])
                .namespace("ns")
                .build()
                .expect("config"),
        )
    }

    #[test]
    fn requests_carry_the_client_headers_and_deadline() {
        let rpc = rpc();
        let req = rpc.request((), Duration::from_secs(2));
        let md = req.metadata();
        assert_eq!(
            md.get("x-mq-language").and_then(|v| v.to_str().ok()),
            Some("RUST")
        );
        assert_eq!(md.get("x-mq-namespace").and_then(|v| v.to_str().ok()), Some("ns"));
        let id = md
            .get("x-mq-client-id")
            .and_then(|v| v.to_str().ok())
            .expect("id");
        assert_eq!(id, rpc.client_id());
        assert!(id.starts_with(&format!("{}@", rpc.config().client_id)));
        assert_eq!(id.matches('@').count(), 3);
        assert_eq!(
            md.get("grpc-timeout").and_then(|v| v.to_str().ok()),
            Some("2000000u")
        );
    }

    #[test]
    fn clients_of_one_config_have_their_own_ids() {
        let config = ClientConfig::builder()
            .access_points(["127.0.0.1:1"])
            .client_id("app")
            .build()
            .expect("config");
        let (a, b) = (Rpc::new(config.clone()), Rpc::new(config));
        assert_ne!(a.client_id(), b.client_id());
        for rpc in [&a, &b] {
            let req = rpc.request((), Duration::from_secs(1));
            let sent = req.metadata().get("x-mq-client-id").and_then(|v| v.to_str().ok());
            assert_eq!(sent, Some(rpc.client_id()));
            assert!(rpc.client_id().starts_with("app@"));
        }
    }

    #[tokio::test]
    async fn channels_are_cached_and_dropped() {
        let rpc = rpc();
        rpc.channel("127.0.0.1:1").expect("lazy");
        assert_eq!(rpc.channels().len(), 1);
        rpc.channel("127.0.0.1:1").expect("cached");
        assert_eq!(rpc.channels().len(), 1);
        rpc.drop_channel("127.0.0.1:1");
        assert!(rpc.channels().is_empty());
    }

    #[test]
    fn failed_sends_are_outcome_unknown_unless_never_sent() {
        let timeout = tonic::Status::deadline_exceeded("slow");
        assert!(matches!(
            call_error(&timeout, "a:1", true),
            ClientError::OutcomeUnknown(_)
        ));
        assert!(matches!(
            call_error(&timeout, "a:1", false),
            ClientError::Timeout(_)
        ));
        let refused = tonic::Status::unavailable("tcp connect error");
        assert!(matches!(
            call_error(&refused, "a:1", true),
            ClientError::Unreachable(_)
        ));
        let reset = tonic::Status::unavailable("connection reset");
        assert!(matches!(
            call_error(&reset, "a:1", true),
            ClientError::OutcomeUnknown(_)
        ));
    }
}
