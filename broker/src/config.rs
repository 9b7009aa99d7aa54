//! Configuration of a broker node: a TOML file, overridden by command-line flags, checked
//! by [`BrokerConfig::validate`] before anything starts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use raft_log::LogConfig;
use raftmq_transport::TlsSource;
use serde::Deserialize;
use serde::Serialize;

use crate::raft::NetworkConfig;
use crate::raft::RaftConfig;
use crate::raft::types::BrokerNode;
use crate::raft::types::NodeId;

/// Bytes of metadata one message may carry besides its body: properties, keys, tag and
/// message group (16 KiB, see `message.rs`) plus ids, names and framing.
pub const PER_MESSAGE_METADATA: u64 = 16 * 1024 + 1024;

/// A member of the broker group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub id: NodeId,
    pub raft_addr: String,
    pub client_addr: String,
}

impl PeerConfig {
    /// Parses `ID=RAFT_ADDR/CLIENT_ADDR` (the `--peer` flag).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (id, addrs) = s
            .split_once('=')
            .ok_or_else(|| format!("peer {s:?}: expected ID=RAFT_ADDR/CLIENT_ADDR"))?;
        let (raft_addr, client_addr) = addrs
            .split_once('/')
            .ok_or_else(|| format!("peer {s:?}: expected ID=RAFT_ADDR/CLIENT_ADDR"))?;
        let id = id
            .trim()
            .parse()
            .map_err(|_| format!("peer {s:?}: {id:?} is not a node id"))?;
        Ok(Self {
            id,
            raft_addr: raft_addr.trim().to_owned(),
            client_addr: client_addr.trim().to_owned(),
        })
    }

    pub fn node(&self) -> BrokerNode {
        BrokerNode {
            raft_addr: self.raft_addr.clone(),
            client_addr: self.client_addr.clone(),
        }
    }
}

/// Everything a broker node is configured with. Defaults follow RocketMQ where it has one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// Raft node id of this broker, unique in its group (≥ 1).
    pub node_id: NodeId,
    /// Name of the broker group (RocketMQ's broker name). Default `broker-a`.
    pub group: String,
    /// Where the commit log and the state machine live. Default `./data`.
    pub data_dir: PathBuf,
    /// Address of the client port (RocketMQ 5 gRPC + admin). Default `127.0.0.1:8081`.
    pub client_addr: String,
    /// Address of the internal Raft port. Default `127.0.0.1:9081`.
    pub raft_addr: String,
    /// All members of the group, this node included. The member with the lowest id
    /// initializes a fresh group.
    pub peers: Vec<PeerConfig>,
    /// Name servers to register with, each `host:port` (a host name or an IP address;
    /// IPv6 in brackets). Every node registers with every one of them. Default: none (the
    /// node registers nowhere).
    pub namesrv: Vec<String>,
    /// How often a node registers with each name server, ms; it also registers at once
    /// when its role, term, known leader or its group's topics change. Default 30 s
    /// (RocketMQ's registration interval).
    pub register_interval_ms: u64,
    /// Timeout of one registration call (connecting included), ms; below
    /// `register_interval_ms`. Default 3 s.
    pub register_timeout_ms: u64,
    /// Largest message body accepted, bytes. Default 4 MiB (RocketMQ's maxMessageSize).
    pub max_body_size: usize,
    /// Most messages in one send request. Default 1024.
    pub max_batch_messages: usize,
    /// Longest long poll of a receive, ms; a client asking for more gets this. Default 20 s.
    pub max_long_poll_ms: u64,
    /// How much earlier than the client's deadline a long poll ends, ms. Default 2 s.
    pub long_poll_margin_ms: u64,
    /// Deliveries of a popped message before it goes to the group's dead-letter topic,
    /// unless the client's settings say otherwise. Default 17 (RocketMQ: 16 retries).
    pub max_delivery_attempts: u32,
    /// Most clients remembered (Telemetry settings). Default 10,000.
    pub max_clients: usize,
    /// Timeout of a call forwarded to the leader, ms. Default 30 s.
    pub forward_timeout_ms: u64,
    /// How long a graceful shutdown waits for open calls, ms. Default 5 s.
    pub shutdown_grace_ms: u64,
    /// Most open client connections (plaintext and TLS together). Default 10,000.
    pub max_connections: usize,
    /// A push consumer with no open Telemetry stream and no heartbeat for this long
    /// leaves its group, ms. (A closed stream or a termination notice removes it at once.)
    /// Default 30 s.
    pub consumer_expiry_ms: u64,
    /// A push consumer that stops asking for its assignment loses its queues after this
    /// long, ms. Default 15 s.
    pub assignment_lease_ms: u64,

    /// PEM certificate chain for TLS on the client port; with `tls_key_file`. Unset: a
    /// self-signed certificate is generated into `<data_dir>/tls/`.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key for TLS on the client port.
    pub tls_key_file: Option<PathBuf>,
    pub raft: RaftConfig,
    /// Group commit of concurrent sends into shared Raft entries.
    pub send_batch: crate::send_batcher::SendBatchConfig,
    pub network: NetworkConfig,
    pub log: LogConfig,
    /// The message index (query by message id or key).
    pub index: crate::msg_index::IndexConfig,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            node_id: 1,
            group: "broker-a".into(),
            data_dir: PathBuf::from("./data"),
            client_addr: "127.0.0.1:8081".into(),
            raft_addr: "127.0.0.1:9081".into(),
            peers: Vec::new(),
            namesrv: Vec::new(),
            register_interval_ms: 30_000,
            register_timeout_ms: 3_000,
            max_body_size: 4 << 20,
            max_batch_messages: 1024,
            max_long_poll_ms: 20_000,
            long_poll_margin_ms: 2_000,
            max_delivery_attempts: 17,
            max_clients: 10_000,
            forward_timeout_ms: 30_000,
            shutdown_grace_ms: 5_000,
            max_connections: 10_000,
            consumer_expiry_ms: 30_000,
            assignment_lease_ms: 15_000,
            tls_cert_file: None,
            tls_key_file: None,
            raft: RaftConfig::default(),
            send_batch: Default::default(),
            index: Default::default(),
            network: NetworkConfig::default(),
            log: LogConfig::default(),
        }
    }
}

/// A configuration that cannot work, with what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid broker configuration: {0}")]
pub struct ConfigError(pub String);

fn bad(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

fn check_addr(what: &str, addr: &str) -> Result<(), ConfigError> {
    addr.parse::<SocketAddr>()
        .map(|_| ())
        .map_err(|_| bad(format!("{what} {addr:?} is not an IP:port address")))
}

/// Checks a `host:port` address: a port from 1 to 65535 and a host that is an IP address
/// (IPv6 in brackets) or a DNS name (letters, digits, '-' and '.').
fn check_host_port(what: &str, addr: &str) -> Result<(), ConfigError> {
    let refuse = |why: &str| bad(format!("{what} {addr:?} is not a host:port address: {why}"));
    if addr.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| refuse("no port"))?;
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(refuse("the port must be a number from 1 to 65535")),
    }
    let name_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
    if host.is_empty() || host.len() > 253 || !host.chars().all(name_char) {
        return Err(refuse(
            "the host must be an IP address ([...] for IPv6) or a DNS name",
        ));
    }
    Ok(())
}

impl BrokerConfig {
    /// Reads a TOML file.
    pub fn from_toml_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| bad(format!("{}: {e}", path.display())))
    }

    /// Checks the rules across fields; every problem names the setting to change.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id == 0 {
            return Err(bad("node_id must be at least 1"));
        }
        crate::sm::keys::validate_topic_name(&self.group).map_err(|e| bad(format!("group: {e}")))?;
        check_addr("client_addr", &self.client_addr)?;
        check_addr("raft_addr", &self.raft_addr)?;
        self.validate_peers()?;
        self.validate_registration()?;
        if self.max_body_size == 0 {
            return Err(bad("max_body_size must be positive"));
        }
        if self.max_batch_messages == 0 {
            return Err(bad("max_batch_messages must be positive"));
        }
        self.send_batch.validate().map_err(bad)?;
        self.index.validate().map_err(bad)?;
        let merged =
            self.send_batch.max_bytes as u64 + self.send_batch.max_messages as u64 * PER_MESSAGE_METADATA;
        if merged > u64::from(self.log.max_record_size) {
            return Err(bad(format!(
                "a merged send entry needs up to {merged} bytes (send_batch.max_bytes plus {PER_MESSAGE_METADATA} \
                 bytes of metadata per message × send_batch.max_messages), more than log.max_record_size {}",
                self.log.max_record_size
            )));
        }
        // A full batch (bodies up to 4 × max_body_size, every message with maximal
        // metadata) must fit one commit-log record.
        let record_room = u64::from(self.log.max_record_size);
        let batch = self.max_batch_bytes();
        if batch > record_room {
            return Err(bad(format!(
                "a full send batch needs up to {batch} bytes (4 × max_body_size plus {} bytes of \
                 metadata per message × max_batch_messages), more than log.max_record_size {record_room}",
                PER_MESSAGE_METADATA
            )));
        }
        if self.long_poll_margin_ms >= self.max_long_poll_ms {
            return Err(bad("long_poll_margin_ms must be below max_long_poll_ms"));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(bad(
                "tls_cert_file and tls_key_file go together: set both or neither",
            ));
        }
        if self.max_connections == 0 {
            return Err(bad("max_connections must be positive"));
        }
        if self.consumer_expiry_ms == 0 || self.assignment_lease_ms == 0 {
            return Err(bad("consumer_expiry_ms and assignment_lease_ms must be positive"));
        }
        if self.max_delivery_attempts == 0 {
            return Err(bad("max_delivery_attempts must be at least 1"));
        }
        self.network
            .validate(record_room, self.raft.snapshot_chunk_size)
            .map_err(|e| bad(format!("network: {e}")))?;
        self.raft
            .build(&self.group)
            .map_err(|e| bad(format!("raft: {e}")))?;
        Ok(())
    }

    fn validate_peers(&self) -> Result<(), ConfigError> {
        if self.peers.is_empty() {
            return Err(bad(
                "peers is empty: list every member of the group, this node included",
            ));
        }
        let mut ids = std::collections::BTreeSet::new();
        for p in &self.peers {
            if p.id == 0 {
                return Err(bad("peer ids must be at least 1"));
            }
            if !ids.insert(p.id) {
                return Err(bad(format!("peer id {} is listed twice", p.id)));
            }
            check_addr(&format!("peer {} raft address", p.id), &p.raft_addr)?;
            check_addr(&format!("peer {} client address", p.id), &p.client_addr)?;
        }
        let me = self
            .peers
            .iter()
            .find(|p| p.id == self.node_id)
            .ok_or_else(|| bad(format!("node_id {} is not among the peers", self.node_id)))?;
        if me.raft_addr != self.raft_addr || me.client_addr != self.client_addr {
            return Err(bad(format!(
                "peer {} is listed as {}/{}, but this node's raft_addr/client_addr are {}/{}",
                me.id, me.raft_addr, me.client_addr, self.raft_addr, self.client_addr
            )));
        }
        Ok(())
    }

    fn validate_registration(&self) -> Result<(), ConfigError> {
        if self.register_interval_ms == 0 {
            return Err(bad("register_interval_ms must be positive"));
        }
        if self.register_timeout_ms == 0 {
            return Err(bad("register_timeout_ms must be positive"));
        }
        if self.register_timeout_ms >= self.register_interval_ms {
            return Err(bad("register_timeout_ms must be below register_interval_ms"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for addr in &self.namesrv {
            check_host_port("namesrv", addr)?;
            if !seen.insert(addr.as_str()) {
                return Err(bad(format!("namesrv {addr:?} is listed twice")));
            }
        }
        Ok(())
    }

    /// The most bytes one send batch may put into a log entry.
    pub fn max_batch_bytes(&self) -> u64 {
        4 * self.max_body_size as u64 + self.max_batch_messages as u64 * PER_MESSAGE_METADATA + (1 << 20)
    }

    /// Whether this node initializes a fresh group (the member with the lowest id does).
    pub fn is_initializer(&self) -> bool {
        self.peers.iter().map(|p| p.id).min() == Some(self.node_id)
    }

    pub fn register_interval(&self) -> Duration {
        Duration::from_millis(self.register_interval_ms)
    }

    pub fn register_timeout(&self) -> Duration {
        Duration::from_millis(self.register_timeout_ms)
    }

    pub fn forward_timeout(&self) -> Duration {
        Duration::from_millis(self.forward_timeout_ms)
    }

    pub fn log_dir(&self) -> PathBuf {
        self.data_dir.join("log")
    }

    pub fn sm_dir(&self) -> PathBuf {
        self.data_dir.join("sm")
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.data_dir.join("incoming")
    }

    pub fn index_dir(&self) -> PathBuf {
        self.data_dir.join("index")
    }

    /// The client port's TLS certificate: `tls_cert_file` / `tls_key_file` when set,
    /// otherwise a self-signed one for `localhost` and the client address's host,
    /// generated once into `<data_dir>/tls/`.
    pub fn tls_source(&self) -> TlsSource {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => TlsSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            _ => TlsSource::Generated {
                dir: self.data_dir.join("tls"),
                hosts: raftmq_transport::tls::default_hosts(&self.client_addr),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> BrokerConfig {
        let peers = (1..=3)
            .map(|i| PeerConfig::parse(&format!("{i}=127.0.0.1:{}/127.0.0.1:{}", 9080 + i, 8080 + i)))
            .collect::<Result<Vec<_>, _>>()
            .expect("peers");
        BrokerConfig {
            node_id: 2,
            client_addr: "127.0.0.1:8082".into(),
            raft_addr: "127.0.0.1:9082".into(),
            peers,
            ..Default::default()
        }
    }

    #[test]
    fn a_three_node_config_is_valid_and_the_lowest_id_initializes() {
        let c = three();
        c.validate().expect("valid");
        assert!(!c.is_initializer());
        let first = BrokerConfig {
            node_id: 1,
            client_addr: "127.0.0.1:8081".into(),
            raft_addr: "127.0.0.1:9081".into(),
            ..three()
        };
        assert!(first.is_initializer());
    }

    #[test]
    fn mistakes_are_named() {
        let err = |c: BrokerConfig| c.validate().expect_err("invalid").0;
        assert!(
            err(BrokerConfig {
                node_id: 7,
                ..three()
            })
            .contains("not among the peers")
        );
        assert!(
            err(BrokerConfig {
                client_addr: "nowhere".into(),
                ..three()
            })
            .contains("client_addr")
        );
        let mut c = three();
        c.peers[0].id = 2;
        assert!(err(c).contains("listed twice"));
        assert!(
            err(BrokerConfig {
                peers: vec![],
                ..three()
            })
            .contains("peers is empty")
        );
        assert!(
            err(BrokerConfig {
                group: "a b".into(),
                ..three()
            })
            .contains("group")
        );
        let mut c = three();
        c.log.max_record_size = 1 << 20;
        assert!(err(c).contains("max_record_size"));
        assert!(PeerConfig::parse("1=a").is_err());
        assert!(
            err(BrokerConfig {
                register_timeout_ms: 30_000,
                ..three()
            })
            .contains("register_timeout_ms")
        );
        assert!(
            err(BrokerConfig {
                register_interval_ms: 0,
                ..three()
            })
            .contains("register_interval_ms")
        );
        let c = BrokerConfig {
            namesrv: vec![
                "ns-1.example:9876".into(),
                "10.0.0.1:9876".into(),
                "[::1]:9876".into(),
            ],
            ..three()
        };
        c.validate().expect("valid namesrv addresses");
        for wrong in [
            "ns-1",
            "ns-1:0",
            "ns-1:x",
            ":9876",
            "http://ns:9876",
            "a b:1",
            "::1:9876x",
        ] {
            let c = BrokerConfig {
                namesrv: vec![wrong.into()],
                ..three()
            };
            assert!(err(c).contains("namesrv"), "{wrong} accepted");
        }
        let twice = BrokerConfig {
            namesrv: vec!["ns:1".into(), "ns:1".into()],
            ..three()
        };
        assert!(err(twice).contains("listed twice"));
        assert!(PeerConfig::parse("x=a/b").is_err());
    }

    #[test]
    fn toml_files_parse_with_defaults_and_refuse_unknown_keys() {
        let c: BrokerConfig = toml::from_str(
            "node_id = 3\ngroup = \"g1\"\n[[peers]]\nid = 3\nraft_addr = \"127.0.0.1:1\"\nclient_addr = \"127.0.0.1:2\"\n",
        )
        .expect("parse");
        assert_eq!((c.node_id, c.group.as_str(), c.max_body_size), (3, "g1", 4 << 20));
        assert!(toml::from_str::<BrokerConfig>("nodeid = 3").is_err());
    }

    #[test]
    fn registration_defaults_match_rocketmq() {
        // RocketMQ brokers register every 30 s; name servers drop them after 120 s of
        // silence (see the name server's config), four missed registrations.
        let c = BrokerConfig::default();
        assert_eq!(c.register_interval(), Duration::from_secs(30));
        assert_eq!(c.register_timeout(), Duration::from_secs(3));
        assert!(c.namesrv.is_empty(), "registers nowhere unless told");
        // A file that lists name servers but no interval gets the same defaults.
        let c: BrokerConfig = toml::from_str("namesrv = [\"127.0.0.1:9876\"]\n").expect("parse");
        assert_eq!(c.namesrv, ["127.0.0.1:9876"]);
        assert_eq!(c.register_interval(), Duration::from_secs(30));
        assert_eq!(c.register_timeout(), Duration::from_secs(3));
        let c: BrokerConfig = toml::from_str("register_interval_ms = 1000\n").expect("parse");
        assert_eq!(c.register_interval(), Duration::from_secs(1));
    }

    #[test]
    fn tls_comes_from_the_files_or_is_generated_into_the_data_dir() {
        let c = BrokerConfig {
            data_dir: "/var/lib/raftmq".into(),
            ..three()
        };
        assert_eq!(
            c.tls_source(),
            TlsSource::Generated {
                dir: "/var/lib/raftmq/tls".into(),
                hosts: vec!["localhost".into(), "127.0.0.1".into()],
            }
        );
        let files = BrokerConfig {
            tls_cert_file: Some("c.pem".into()),
            tls_key_file: Some("k.pem".into()),
            ..three()
        };
        assert_eq!(
            files.tls_source(),
            TlsSource::Files {
                cert: "c.pem".into(),
                key: "k.pem".into(),
            }
        );
    }
}
