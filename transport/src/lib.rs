//! raftmq's client-facing transport, shared by the broker's client port and the name
//! server: one TCP port serving gRPC in TLS and plaintext alike ([`listener`]: the first
//! byte tells them apart; the number of open connections is bounded), and the TLS
//! identity it presents ([`tls`]: PEM files, or a self-signed certificate kept in a
//! directory or generated in memory), and the signals that stop a server ([`signals`]).
//!
//! Java, Go, C# and C++ RocketMQ clients connect with TLS by default, Python, Node.js and
//! Rust ones in plaintext; whatever is their access point has to serve both.

pub mod listener;
pub mod signals;
pub mod tls;

pub use listener::ClientConn;
pub use listener::incoming;
pub use signals::Signals;
pub use tls::ServerTls;
pub use tls::TlsSource;

/// Why the transport could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A certificate or key file cannot be read or holds no valid PEM.
    #[error("cannot read {path}: {detail}")]
    Read {
        path: std::path::PathBuf,
        detail: String,
    },
    /// A generated certificate or key cannot be written.
    #[error("cannot write {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// A self-signed certificate cannot be generated.
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(String),
    /// The certificate and key do not make a TLS server configuration.
    #[error("invalid certificate or key: {0}")]
    Config(String),
}
