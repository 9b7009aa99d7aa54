//! The Raft port's listener: a connection that starts with the link's magic byte is a
//! replication link and is served by the link's handler; any other (an HTTP/2 preface
//! starts with `P`) goes to the gRPC server. Links are bounded in number; one beyond the
//! bound is closed at once.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::sync::mpsc;
use tokio::sync::watch;

use super::frame::MAGIC;
use super::frame::put_refusal;

/// How long a new connection may take to send its first byte.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);
/// gRPC connections classified but not yet taken by the server.
const ACCEPT_BACKLOG: usize = 64;
/// Replication links served at once: a leader opens one per follower, and a new one only
/// after the old one ended; the slack covers a few leaders in quick succession.
pub const MAX_LINKS: usize = 32;

/// Serves one link connection.
pub type LinkHandler = Arc<dyn Fn(TcpStream) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Accepts connections on `listener` until `stop` turns true: links go to `link`, in tasks
/// of their own, each holding one of `slots`; the rest are yielded for the gRPC server.
pub fn split_incoming(
    listener: TcpListener,
    link: LinkHandler,
    slots: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) -> impl Stream<Item = io::Result<TcpStream>> + Send + 'static {
    let (tx, rx) = mpsc::channel(ACCEPT_BACKLOG);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                a = listener.accept() => a,
            };
            let stream = match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept on the Raft port failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (tx, link, slots) = (tx.clone(), link.clone(), slots.clone());
            tokio::spawn(async move {
                let mut first = [0u8; 1];
                match tokio::time::timeout(FIRST_BYTE_TIMEOUT, stream.peek(&mut first)).await {
                    Ok(Ok(1)) if first[0] == MAGIC[0] => {
                        let Ok(slot) = slots.try_acquire_owned() else {
                            tracing::warn!(
                                max = MAX_LINKS,
                                "replication link limit reached; refusing a new link"
                            );
                            let mut out = bytes::BytesMut::new();
                            let message = format!("this node serves at most {MAX_LINKS} replication links");
                            put_refusal(&mut out, tonic::Code::Unavailable as i32, &message);
                            // Best effort: the socket's buffer is empty, so it takes it all.
                            let _ = stream.try_write(&out);
                            return;
                        };
                        link(stream).await;
                        drop(slot);
                    }
                    Ok(Ok(1)) => {
                        let _ = stream.set_nodelay(true);
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(_) => tracing::debug!("Raft connection closed before its first byte"),
                    Err(_) => tracing::debug!("Raft connection sent nothing in time"),
                }
            });
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) })
}
