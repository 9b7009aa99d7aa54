//! TLS on the client port. Java, Go, C# and C++ RocketMQ clients connect with TLS by
//! default, Python, Node.js and Rust ones in plaintext; the client port serves both (see
//! [`crate::client_listener`]). The certificate comes from `tls_cert_file` /
//! `tls_key_file` (PEM) when configured; otherwise the node generates a self-signed one
//! once and keeps it in `<data_dir>/tls/` (the official clients do not verify the
//! server's certificate by default).

use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use tokio_rustls::TlsAcceptor;

use crate::config::BrokerConfig;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {detail}")]
    Read { path: PathBuf, detail: String },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(String),
    #[error("invalid certificate or key: {0}")]
    Config(String),
}

/// Where the generated certificate and key live.
pub fn generated_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("tls");
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// The acceptor for the client port.
pub fn acceptor(config: &BrokerConfig) -> Result<TlsAcceptor, TlsError> {
    let (cert_path, key_path) = match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ => ensure_generated(config)?,
    };
    let read_err = |path: &Path, e: &dyn std::fmt::Display| TlsError::Read {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    let certs = CertificateDer::pem_file_iter(&cert_path)
        .map_err(|e| read_err(&cert_path, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_err(&cert_path, &e))?;
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| read_err(&key_path, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    // gRPC runs over HTTP/2 only.
    server.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// The generated certificate's paths, generating it on first use.
fn ensure_generated(config: &BrokerConfig) -> Result<(PathBuf, PathBuf), TlsError> {
    let (cert_path, key_path) = generated_paths(&config.data_dir);
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    let mut names = vec!["localhost".to_owned()];
    if let Some((host, _)) = config.client_addr.rsplit_once(':') {
        names.push(host.trim_matches(['[', ']']).to_owned());
    }
    let generated =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    let write = |path: &Path, text: String| -> Result<(), TlsError> {
        let err = |source| TlsError::Write {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    };
    write(&key_path, generated.key_pair.serialize_pem())?;
    write(&cert_path, generated.cert.pem())?;
    tracing::info!(cert = %cert_path.display(), "generated a self-signed TLS certificate");
    Ok((cert_path, key_path))
}
