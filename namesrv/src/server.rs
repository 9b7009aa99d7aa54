//! A running name server: one gRPC port serving the registry service and the client calls
//! of an access point, in TLS and plaintext alike (RocketMQ's Java, Go, C# and C++ clients
//! use TLS by default), and the loop that drops silent broker nodes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use raftmq_transport::ServerTls;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::config::NamesrvConfig;
use crate::error::NamesrvError;
use crate::registry::Registry;
use crate::registry_service::Registrar;
use crate::route_table::RouteTable;
use crate::service::Ctx;
use crate::service::Messaging;

/// Concurrent HTTP/2 streams per connection (Telemetry streams stay open).
const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// A started name server.
#[derive(Debug)]
pub struct Namesrv {
    addr: SocketAddr,
    tls: ServerTls,
    registry: Arc<Registry>,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
    scanner: JoinHandle<()>,
}

impl Namesrv {
    /// Validates `config`, loads (or generates) its TLS certificate, binds its port and
    /// starts serving.
    pub async fn start(config: NamesrvConfig) -> Result<Self, NamesrvError> {
        config.validate()?;
        let tls = ServerTls::new(&config.tls_source())?;
        let listener = TcpListener::bind(&config.listen)
            .await
            .map_err(|source| NamesrvError::Listen {
                addr: config.listen.clone(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| NamesrvError::Listen {
            addr: config.listen.clone(),
            source,
        })?;
        let registry = Arc::new(Registry::new(RouteTable::new(
            config.expiry(),
            config.max_members,
        )));
        let (stop, stop_rx) = watch::channel(false);
        let scanner = tokio::spawn(
            scan(registry.clone(), config.scan_interval(), stop_rx.clone())
                .instrument(tracing::info_span!("expiry_scan")),
        );
        let ctx = Arc::new(Ctx {
            registry: registry.clone(),
            config: config.clone(),
            stop: stop_rx.clone(),
        });
        let incoming =
            raftmq_transport::incoming(listener, tls.acceptor(), config.max_connections, stop_rx.clone());
        let mut done = stop_rx;
        let server = tokio::spawn(async move {
            let result = tonic::transport::Server::builder()
                .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
                .http2_keepalive_interval(Some(Duration::from_secs(30)))
                .add_service(Registrar::new(ctx.registry.clone()).into_server())
                .add_service(Messaging::new(ctx).into_server())
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = done.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "name server stopped serving");
            }
        });
        tracing::info!(
            %addr,
            expiry_ms = config.expiry_ms,
            tls_cert = ?config.tls_cert_file,
            "name server listening (TLS and plaintext)"
        );
        Ok(Self {
            addr,
            tls,
            registry,
            stop,
            server,
            scanner,
        })
    }

    /// The address the port is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The certificate the port presents to TLS clients, PEM (with no files configured, the
    /// self-signed one generated at start).
    pub fn tls_cert_pem(&self) -> &str {
        self.tls.cert_pem()
    }

    /// The registry (for tests and tools in the same process).
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Stops accepting, ends open streams, waits up to `grace` for open calls.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        let mut server = self.server;
        if tokio::time::timeout(grace, &mut server).await.is_err() {
            tracing::warn!(?grace, "open calls outlived the grace period; aborting them");
            server.abort();
        }
        self.scanner.abort();
        tracing::info!("name server stopped");
    }
}

/// Drops expired members every `interval` until `stop`.
async fn scan(registry: Arc<Registry>, interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = ticker.tick() => {}
        }
        for (group, node_id) in registry.expire(Instant::now()) {
            tracing::warn!(
                group,
                node_id,
                "broker node silent for too long; dropped from the routes"
            );
        }
    }
}
