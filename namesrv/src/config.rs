//! The name server's configuration: a TOML file, overridden by flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use raftmq_proto::settings::ServerSettings;
use raftmq_transport::TlsSource;
use serde::Deserialize;
use serde::Serialize;

/// Everything a name server is configured with. Defaults follow RocketMQ where it has one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NamesrvConfig {
    /// Address of the gRPC port (registrations, admin reads and the RocketMQ 5 calls a
    /// client makes at its access point). Default `127.0.0.1:9876` (RocketMQ's namesrv port).
    pub listen: String,
    /// A broker node not heard from for this long leaves the routes, ms. Default 120 s
    /// (RocketMQ's broker channel expiry).
    pub expiry_ms: u64,
    /// How often expired nodes are removed, ms. Default 5 s. (Routes ignore an expired
    /// node at once; the scan frees its memory and logs it.)
    pub scan_interval_ms: u64,
    /// Most broker nodes registered at once. Default 4,096.
    pub max_members: usize,
    /// Most open connections (plaintext and TLS together). Default 10,000.
    pub max_connections: usize,
    /// PEM certificate chain for TLS on the port (which serves plaintext too); with
    /// `tls_key_file`. Unset: a self-signed certificate for `localhost` and the listen
    /// host is generated in memory at every start.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key for TLS on the port.
    pub tls_key_file: Option<PathBuf>,
    /// Largest message body clients are told brokers accept, bytes (Telemetry settings at
    /// the access point; brokers check for themselves). Default 4 MiB.
    pub max_body_size: usize,
    /// Long-polling timeout a consumer that chose none is told, ms. Default 20 s.
    pub long_polling_timeout_ms: u64,
    /// Deliveries of a message a consumer that chose none is told, Default 17.
    pub max_delivery_attempts: u32,
    /// How long a graceful shutdown waits for open calls, ms. Default 5 s.
    pub shutdown_grace_ms: u64,
}

impl Default for NamesrvConfig {
    fn default() -> Self {
        let s = ServerSettings::default();
        Self {
            listen: "127.0.0.1:9876".into(),
            expiry_ms: 120_000,
            scan_interval_ms: 5_000,
            max_members: 4_096,
            max_connections: 10_000,
            tls_cert_file: None,
            tls_key_file: None,
            max_body_size: s.max_body_size,
            long_polling_timeout_ms: s.long_polling_timeout_ms,
            max_delivery_attempts: s.consumer_max_attempts,
            shutdown_grace_ms: 5_000,
        }
    }
}

/// A configuration that cannot work, with what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid name server configuration: {0}")]
pub struct ConfigError(pub String);

fn bad(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

impl NamesrvConfig {
    /// Reads a TOML file.
    pub fn from_toml_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| bad(format!("{}: {e}", path.display())))
    }

    /// Checks the rules across fields; every problem names the setting to change.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen
            .parse::<SocketAddr>()
            .map_err(|e| bad(format!("listen {:?} is not IP:port: {e}", self.listen)))?;
        if self.expiry_ms == 0 || self.scan_interval_ms == 0 {
            return Err(bad("expiry_ms and scan_interval_ms must be positive"));
        }
        if self.scan_interval_ms > self.expiry_ms {
            return Err(bad("scan_interval_ms must not exceed expiry_ms"));
        }
        if self.max_members == 0 || self.max_connections == 0 {
            return Err(bad("max_members and max_connections must be positive"));
        }
        if self.max_body_size == 0 || self.max_delivery_attempts == 0 {
            return Err(bad("max_body_size and max_delivery_attempts must be positive"));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(bad(
                "tls_cert_file and tls_key_file go together: set both or neither",
            ));
        }
        Ok(())
    }

    /// The port's TLS certificate: the configured files, or an ephemeral self-signed one
    /// (a name server keeps nothing on disk).
    pub fn tls_source(&self) -> TlsSource {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => TlsSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            _ => TlsSource::Ephemeral {
                hosts: raftmq_transport::tls::default_hosts(&self.listen),
            },
        }
    }

    pub fn expiry(&self) -> Duration {
        Duration::from_millis(self.expiry_ms)
    }

    pub fn scan_interval(&self) -> Duration {
        Duration::from_millis(self.scan_interval_ms)
    }

    /// What Telemetry tells a client at its access point.
    pub fn settings(&self) -> ServerSettings {
        ServerSettings {
            max_body_size: self.max_body_size,
            long_polling_timeout_ms: self.long_polling_timeout_ms,
            consumer_max_attempts: self.max_delivery_attempts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_rocketmq() {
        let c = NamesrvConfig::default();
        c.validate().expect("valid");
        assert_eq!(c.listen, "127.0.0.1:9876");
        assert_eq!(c.expiry(), Duration::from_secs(120));
        assert_eq!(c.scan_interval(), Duration::from_secs(5));
    }

    #[test]
    fn bad_settings_name_the_key() {
        let c = NamesrvConfig {
            listen: "nowhere".into(),
            ..NamesrvConfig::default()
        };
        assert!(c.validate().expect_err("bad").0.contains("listen"));
        let c = NamesrvConfig {
            scan_interval_ms: 10,
            expiry_ms: 5,
            ..NamesrvConfig::default()
        };
        assert!(c.validate().expect_err("bad").0.contains("scan_interval_ms"));
        let parsed: NamesrvConfig = toml::from_str("expiry_ms = 3000\n").expect("toml");
        assert_eq!(parsed.expiry_ms, 3000);
        assert!(
            toml::from_str::<NamesrvConfig>("expiry = 3\n").is_err(),
            "unknown keys refused"
        );
    }

    #[test]
    fn tls_files_go_together_and_default_to_an_ephemeral_certificate() {
        let c = NamesrvConfig {
            listen: "10.0.0.5:9876".into(),
            ..NamesrvConfig::default()
        };
        assert_eq!(
            c.tls_source(),
            TlsSource::Ephemeral {
                hosts: vec!["localhost".into(), "10.0.0.5".into()]
            }
        );
        let half = NamesrvConfig {
            tls_cert_file: Some("cert.pem".into()),
            ..NamesrvConfig::default()
        };
        assert!(half.validate().expect_err("bad").0.contains("tls_key_file"));
        let parsed: NamesrvConfig =
            toml::from_str("tls_cert_file = \"c.pem\"\ntls_key_file = \"k.pem\"\n").expect("toml");
        parsed.validate().expect("valid");
        assert_eq!(
            parsed.tls_source(),
            TlsSource::Files {
                cert: "c.pem".into(),
                key: "k.pem".into()
            }
        );
    }
}
