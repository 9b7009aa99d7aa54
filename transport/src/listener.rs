//! The listener of a client-facing port: accepts TCP connections and tells TLS from
//! plaintext by the first byte (0x16 starts a TLS handshake record; an HTTP/2 connection
//! preface starts with `P`), so one port serves clients of both kinds. The number of open
//! connections is bounded; connections beyond it are closed at once (and logged), so a
//! flood of clients cannot exhaust the server's memory.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Context;
use std::task::Poll;
use std::time::Duration;

use futures_util::Stream;
use tokio::io::AsyncRead;
use tokio::io::AsyncWrite;
use tokio::io::ReadBuf;
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::Semaphore;
use tokio::sync::mpsc;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;
use tonic::transport::server::TcpConnectInfo;

/// First byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;
/// How long a new connection may take to send its first byte and finish a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections classified but not yet taken by the server.
const ACCEPT_BACKLOG: usize = 64;

/// A client connection, plaintext or TLS. Holds its slot of the connection limit.
///
/// Its connect info is a [`TcpConnectInfo`] for both kinds, so a handler's
/// `Request::remote_addr()` gives the peer's address over TLS too.
#[derive(Debug)]
pub struct ClientConn {
    io: Io,
    info: TcpConnectInfo,
    _slot: OwnedSemaphorePermit,
}

#[derive(Debug)]
enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl ClientConn {
    /// Whether the connection speaks TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.io, Io::Tls(_))
    }
}

impl Connected for ClientConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for ClientConn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientConn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Whether a connection whose first byte is `first` speaks TLS.
pub fn is_tls_start(first: u8) -> bool {
    first == TLS_HANDSHAKE
}

/// Accepts connections on `listener` until `stop` turns true; yields them classified.
pub fn incoming(
    listener: TcpListener,
    tls: TlsAcceptor,
    max_connections: usize,
    mut stop: watch::Receiver<bool>,
) -> impl Stream<Item = io::Result<ClientConn>> + Send + 'static {
    let (tx, rx) = mpsc::channel(ACCEPT_BACKLOG);
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                a = listener.accept() => a,
            };
            let (stream, _) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::warn!(
                    max_connections,
                    "connection limit reached; closing a new connection"
                );
                continue;
            };
            let (tx, tls) = (tx.clone(), tls.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, classify(stream, tls, slot)).await {
                    Ok(Ok(conn)) => {
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "connection dropped before serving"),
                    Err(_) => tracing::debug!("connection sent nothing in time"),
                }
            });
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) })
}

async fn classify(stream: TcpStream, tls: TlsAcceptor, slot: OwnedSemaphorePermit) -> io::Result<ClientConn> {
    stream.set_nodelay(true)?;
    let info = TcpConnectInfo {
        local_addr: stream.local_addr().ok(),
        remote_addr: stream.peer_addr().ok(),
    };
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "closed before its first byte",
        ));
    }
    let io = if is_tls_start(first[0]) {
        Io::Tls(Box::new(tls.accept(stream).await?))
    } else {
        Io::Plain(stream)
    };
    Ok(ClientConn {
        io,
        info,
        _slot: slot,
    })
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use futures_util::StreamExt;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::ServerName;
    use rustls::pki_types::pem::PemObject;
    use tokio::io::AsyncReadExt;
    use tokio::io::AsyncWriteExt;
    use tokio_rustls::TlsConnector;

    use super::*;
    use crate::tls::ServerTls;
    use crate::tls::TlsSource;

    const WAIT: Duration = Duration::from_secs(5);

    struct Server {
        addr: SocketAddr,
        tls: ServerTls,
        stop: watch::Sender<bool>,
        conns: Pin<Box<dyn Stream<Item = io::Result<ClientConn>> + Send>>,
    }

    async fn serve(max_connections: usize) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let tls = ServerTls::new(&TlsSource::Ephemeral {
            hosts: vec!["localhost".into()],
        })
        .expect("tls");
        let stop = watch::Sender::new(false);
        let conns = Box::pin(incoming(
            listener,
            tls.acceptor(),
            max_connections,
            stop.subscribe(),
        ));
        Server {
            addr,
            tls,
            stop,
            conns,
        }
    }

    impl Server {
        async fn next(&mut self) -> ClientConn {
            tokio::time::timeout(WAIT, self.conns.next())
                .await
                .expect("a connection in time")
                .expect("stream open")
                .expect("connection")
        }
    }

    fn connector(cert_pem: &str) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(cert_pem.as_bytes()) {
            roots.add(cert.expect("pem")).expect("trust");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }

    /// Writes `ping` one way and `pong` the other.
    async fn round_trip<C, S>(client: &mut C, server: &mut S)
    where
        C: AsyncRead + AsyncWrite + Unpin,
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut buf = [0u8; 4];
        client.write_all(b"ping").await.expect("write");
        client.flush().await.expect("flush");
        server.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"ping");
        server.write_all(b"pong").await.expect("write");
        server.flush().await.expect("flush");
        client.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"pong");
    }

    #[test]
    fn the_first_byte_tells_tls_from_http2() {
        assert!(is_tls_start(0x16));
        assert!(!is_tls_start(b'P'));
    }

    #[tokio::test]
    async fn one_port_serves_plaintext_and_tls_with_the_peer_address() {
        let mut server = serve(16).await;

        let mut plain = TcpStream::connect(server.addr).await.expect("connect");
        plain.write_all(b"P").await.expect("first byte");
        let mut conn = server.next().await;
        assert!(!conn.is_tls());
        assert_eq!(
            conn.connect_info().remote_addr(),
            Some(plain.local_addr().expect("addr"))
        );
        let mut rest = [0u8; 1];
        conn.read_exact(&mut rest).await.expect("read");
        assert_eq!(&rest, b"P", "the sniffed byte is not consumed");
        round_trip(&mut plain, &mut conn).await;

        let tcp = TcpStream::connect(server.addr).await.expect("connect");
        let client_addr = tcp.local_addr().expect("addr");
        let name = ServerName::try_from("localhost").expect("name");
        let mut tls = connector(server.tls.cert_pem())
            .connect(name, tcp)
            .await
            .expect("handshake");
        let mut conn = server.next().await;
        assert!(conn.is_tls());
        assert_eq!(conn.connect_info().remote_addr(), Some(client_addr));
        round_trip(&mut tls, &mut conn).await;

        let _ = server.stop.send(true);
        let end = tokio::time::timeout(WAIT, server.conns.next())
            .await
            .expect("ends");
        assert!(end.is_none(), "the stream ends once stopped");
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_are_closed() {
        let mut server = serve(1).await;
        let mut first = TcpStream::connect(server.addr).await.expect("connect");
        first.write_all(b"P").await.expect("write");
        let held = server.next().await;

        let mut second = TcpStream::connect(server.addr).await.expect("connect");
        let _ = second.write_all(b"P").await;
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(WAIT, second.read(&mut buf))
            .await
            .expect("closed in time");
        assert!(matches!(read, Ok(0) | Err(_)), "closed: {read:?}");

        drop(held);
        let mut third = TcpStream::connect(server.addr).await.expect("connect");
        third.write_all(b"P").await.expect("write");
        let conn = server.next().await;
        assert!(!conn.is_tls(), "a freed slot takes a new connection");
    }
}
