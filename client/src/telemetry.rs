//! The Telemetry streams a client keeps open: one per broker address of its routes, each
//! opened with the client's settings. For a push consumer the open stream is its
//! membership of the consumer group at that broker: when the process dies, its kernel
//! closes the connections and the brokers drop it at once.
//!
//! A supervisor looks at the routes every [`SUPERVISE_EVERY`], opens a stream to every new
//! address and closes the streams of addresses no route names any more; a failed stream
//! is opened again after a backoff. Everything closes when the session stops.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use raftmq_proto::rocketmq::v2 as pb;
use tokio::sync::mpsc;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::session::Session;
use crate::session::sleep_or_stop;

/// How often the supervisor compares the streams with the routes.
pub const SUPERVISE_EVERY: Duration = Duration::from_millis(500);
/// Wait before opening a failed stream again.
const REOPEN_AFTER: Duration = Duration::from_secs(1);

/// Keeps the streams open until the session stops.
pub async fn supervise(session: Arc<Session>, settings: pb::Settings) {
    let mut stop = session.stopped();
    let mut streams: HashMap<String, (JoinHandle<()>, watch::Sender<bool>)> = HashMap::new();
    loop {
        let wanted = session.routes.all_endpoints();
        streams.retain(|addr, (task, close)| {
            let keep = wanted.contains(addr) && !task.is_finished();
            if !keep {
                let _ = close.send(true);
            }
            keep
        });
        for addr in wanted {
            if streams.contains_key(&addr) {
                continue;
            }
            let (close, closed) = watch::channel(false);
            let span = tracing::debug_span!("telemetry", %addr);
            let task = tokio::spawn(
                keep_open(session.clone(), addr.clone(), settings.clone(), closed).instrument(span),
            );
            streams.insert(addr, (task, close));
        }
        if sleep_or_stop(SUPERVISE_EVERY, &mut stop).await {
            break;
        }
    }
    for (_, (task, close)) in streams {
        let _ = close.send(true);
        let _ = task.await;
    }
}

/// One address's stream, reopened after failures, until `closed` (or the session stops).
async fn keep_open(
    session: Arc<Session>,
    addr: String,
    settings: pb::Settings,
    mut closed: watch::Receiver<bool>,
) {
    let mut stop = session.stopped();
    loop {
        match open_once(&session, &addr, &settings, &mut closed, &mut stop).await {
            Ok(()) => return,
            Err(e) => tracing::debug!(error = %e, "telemetry stream ended; reopening"),
        }
        tokio::select! {
            _ = tokio::time::sleep(REOPEN_AFTER) => {}
            _ = closed.wait_for(|c| *c) => return,
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Opens the stream, sends the settings, reads replies until told to close (Ok) or the
/// stream fails (Err).
async fn open_once(
    session: &Session,
    addr: &str,
    settings: &pb::Settings,
    closed: &mut watch::Receiver<bool>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), String> {
    let mut client = session.rpc.messaging(addr).map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::channel::<pb::TelemetryCommand>(4);
    let first = pb::TelemetryCommand {
        status: None,
        command: Some(pb::telemetry_command::Command::Settings(settings.clone())),
    };
    tx.send(first).await.map_err(|e| e.to_string())?;
    let outbound = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    // A stream lives as long as the client: no deadline.
    let mut req = session.rpc.request(outbound, Duration::from_secs(1));
    req.metadata_mut().remove("grpc-timeout");
    let mut replies = client
        .telemetry(req)
        .await
        .map_err(|e| {
            session.rpc.drop_channel(addr);
            e.to_string()
        })?
        .into_inner();
    loop {
        tokio::select! {
            _ = closed.wait_for(|c| *c) => return Ok(()),
            _ = stop.wait_for(|s| *s) => return Ok(()),
            reply = replies.message() => match reply {
                Ok(Some(_)) => {}
                Ok(None) => return Err("closed by the broker".into()),
                Err(e) => return Err(e.to_string()),
            },
        }
    }
}
