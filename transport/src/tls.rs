//! The TLS identity a port presents. The certificate comes from PEM files when configured;
//! otherwise it is self-signed, either generated once and kept in a directory (a broker
//! node keeps it in `<data_dir>/tls/`) or generated in memory at every start (a name
//! server keeps nothing on disk). The official RocketMQ clients do not verify the
//! server's certificate by default.

use std::fmt;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use tokio_rustls::TlsAcceptor;

use crate::TransportError;

/// Where the certificate and its key come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// PEM files: the certificate chain and its private key.
    Files { cert: PathBuf, key: PathBuf },
    /// A self-signed certificate for `hosts`, generated once into `dir` (see
    /// [`generated_paths`]) and read from there afterwards.
    Generated { dir: PathBuf, hosts: Vec<String> },
    /// A self-signed certificate for `hosts`, generated in memory; a new one at every start.
    Ephemeral { hosts: Vec<String> },
}

/// A port's TLS identity: the acceptor for [`crate::incoming`] and the certificate it
/// presents.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: TlsAcceptor,
    cert_pem: Arc<str>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads (or generates) the certificate and key and builds the server configuration.
    pub fn new(source: &TlsSource) -> Result<Self, TransportError> {
        let (certs, key, cert_pem) = match source {
            TlsSource::Files { cert, key } => load(cert, key)?,
            TlsSource::Generated { dir, hosts } => {
                let (cert, key) = ensure_generated(dir, hosts)?;
                load(&cert, &key)?
            }
            TlsSource::Ephemeral { hosts } => {
                let (cert_pem, key_pem) = generate(hosts)?;
                let bad = |e: String| TransportError::Generate(e);
                let certs = parse_certs(&cert_pem).map_err(bad)?;
                let key = parse_key(&key_pem).map_err(bad)?;
                (certs, key, cert_pem)
            }
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TransportError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| TransportError::Config(e.to_string()))?;
        // gRPC runs over HTTP/2 only.
        server.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            cert_pem: cert_pem.into(),
        })
    }

    /// The acceptor (cheap to clone).
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }

    /// The certificate chain presented, PEM: what a client that verifies has to trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }
}

/// The names a self-signed certificate for a port listening on `addr` (`host:port`)
/// covers: `localhost` and the address's host.
pub fn default_hosts(addr: &str) -> Vec<String> {
    let mut hosts = vec!["localhost".to_owned()];
    if let Some((host, _)) = addr.rsplit_once(':') {
        let host = host.trim_matches(['[', ']']);
        if !host.is_empty() && !hosts.iter().any(|h| h == host) {
            hosts.push(host.to_owned());
        }
    }
    hosts
}

/// Where a generated certificate and its key live in `dir`.
pub fn generated_paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("cert.pem"), dir.join("key.pem"))
}

fn load(
    cert_path: &Path,
    key_path: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, String), TransportError> {
    let read_err = |path: &Path, detail: String| TransportError::Read {
        path: path.to_path_buf(),
        detail,
    };
    let cert_pem = std::fs::read_to_string(cert_path).map_err(|e| read_err(cert_path, e.to_string()))?;
    let key_pem = std::fs::read_to_string(key_path).map_err(|e| read_err(key_path, e.to_string()))?;
    let certs = parse_certs(&cert_pem).map_err(|e| read_err(cert_path, e))?;
    let key = parse_key(&key_pem).map_err(|e| read_err(key_path, e))?;
    Ok((certs, key, cert_pem))
}

fn parse_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    Ok(certs)
}

fn parse_key(pem: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| e.to_string())
}

/// A self-signed certificate for `hosts` and its key, PEM.
fn generate(hosts: &[String]) -> Result<(String, String), TransportError> {
    let generated = rcgen::generate_simple_self_signed(hosts.to_vec())
        .map_err(|e| TransportError::Generate(e.to_string()))?;
    Ok((generated.cert.pem(), generated.key_pair.serialize_pem()))
}

/// The generated certificate's paths in `dir`, generating it on first use.
fn ensure_generated(dir: &Path, hosts: &[String]) -> Result<(PathBuf, PathBuf), TransportError> {
    let (cert_path, key_path) = generated_paths(dir);
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    let (cert_pem, key_pem) = generate(hosts)?;
    let write = |path: &Path, text: String| -> Result<(), TransportError> {
        let err = |source| TransportError::Write {
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
    write(&key_path, key_pem)?;
    write(&cert_path, cert_pem)?;
    tracing::info!(cert = %cert_path.display(), "generated a self-signed TLS certificate");
    Ok((cert_path, key_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> Vec<String> {
        default_hosts("127.0.0.1:8081")
    }

    #[test]
    fn default_hosts_are_localhost_and_the_listen_host() {
        assert_eq!(default_hosts("127.0.0.1:8081"), ["localhost", "127.0.0.1"]);
        assert_eq!(default_hosts("[::1]:9876"), ["localhost", "::1"]);
        assert_eq!(default_hosts("localhost:9876"), ["localhost"]);
        assert_eq!(default_hosts("nowhere"), ["localhost"]);
    }

    #[test]
    fn a_generated_certificate_is_kept_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tls_dir = dir.path().join("tls");
        let source = TlsSource::Generated {
            dir: tls_dir.clone(),
            hosts: hosts(),
        };
        let first = ServerTls::new(&source).expect("generate");
        let (cert, key) = generated_paths(&tls_dir);
        assert!(cert.exists() && key.exists());
        assert_eq!(std::fs::read_to_string(&cert).expect("read"), first.cert_pem());
        let second = ServerTls::new(&source).expect("reload");
        assert_eq!(first.cert_pem(), second.cert_pem(), "generated once");
    }

    #[test]
    fn an_ephemeral_certificate_writes_nothing_and_is_new_each_time() {
        let a = ServerTls::new(&TlsSource::Ephemeral { hosts: hosts() }).expect("generate");
        let b = ServerTls::new(&TlsSource::Ephemeral { hosts: hosts() }).expect("generate");
        assert!(a.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert_ne!(a.cert_pem(), b.cert_pem());
    }

    #[test]
    fn files_are_loaded_and_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert_pem, key_pem) = generate(&hosts()).expect("generate");
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert, &cert_pem).expect("write");
        std::fs::write(&key, &key_pem).expect("write");
        let tls = ServerTls::new(&TlsSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        })
        .expect("load");
        assert_eq!(tls.cert_pem(), cert_pem);

        let missing = dir.path().join("missing.pem");
        let e = ServerTls::new(&TlsSource::Files {
            cert: missing.clone(),
            key: key.clone(),
        })
        .expect_err("missing");
        assert!(
            matches!(&e, TransportError::Read { path, .. } if *path == missing),
            "{e}"
        );

        // A key where the certificate should be: no certificate in it.
        let e = ServerTls::new(&TlsSource::Files {
            cert: key.clone(),
            key: key.clone(),
        })
        .expect_err("not a certificate");
        assert!(
            matches!(&e, TransportError::Read { path, .. } if *path == key),
            "{e}"
        );

        // A key that does not belong to the certificate.
        let (_, other_key_pem) = generate(&hosts()).expect("generate");
        let other_key = dir.path().join("other.pem");
        std::fs::write(&other_key, other_key_pem).expect("write");
        let e = ServerTls::new(&TlsSource::Files { cert, key: other_key }).expect_err("mismatch");
        assert!(matches!(e, TransportError::Config(_)), "{e}");
    }
}
