//! Telemetry at the access point: a client announcing its settings gets the server's
//! values back (RocketMQ's retry policies, the body limit, the long-polling timeout), as a
//! broker would answer. Brokers still check everything for themselves.
//!
//! The response stream is returned at once (some clients wait for its headers before they
//! write); a task reads the client's frames until it closes the stream, the name server
//! stops, or the client stops reading. The reply channel is bounded.

use std::sync::Arc;
use std::time::Instant;

use futures_util::stream;
use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::telemetry_command::Command;
use raftmq_proto::settings;
use tokio::sync::mpsc;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::Streaming;
use tracing::Instrument;

use super::BoxStream;
use super::Ctx;
use crate::error;

/// Replies buffered for a slow client before the reader waits.
const REPLY_BUFFER: usize = 8;

pub async fn handle(
    ctx: &Arc<Ctx>,
    req: Request<Streaming<pb::TelemetryCommand>>,
) -> Result<Response<BoxStream<pb::TelemetryCommand>>, Status> {
    let client = super::client_id(req.metadata()).unwrap_or_default().to_owned();
    let span = tracing::info_span!("telemetry", client_id = client.as_str());
    let (tx, rx) = mpsc::channel(REPLY_BUFFER);
    tokio::spawn(serve(ctx.clone(), req.into_inner(), tx).instrument(span));
    let replies = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    Ok(Response::new(Box::pin(replies)))
}

async fn serve(
    ctx: Arc<Ctx>,
    mut inbound: Streaming<pb::TelemetryCommand>,
    tx: mpsc::Sender<Result<pb::TelemetryCommand, Status>>,
) {
    let mut stop = ctx.stop.clone();
    loop {
        let frame = tokio::select! {
            frame = inbound.message() => frame,
            () = tx.closed() => break,
            _ = stop.wait_for(|s| *s) => break,
        };
        let cmd = match frame {
            Ok(Some(cmd)) => cmd,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "telemetry stream failed");
                break;
            }
        };
        let Some(Command::Settings(s)) = cmd.command else {
            tracing::debug!("ignoring a telemetry frame without settings");
            continue;
        };
        let reply = reply_to(&ctx, &s);
        if tx.send(Ok(reply)).await.is_err() {
            break;
        }
    }
    tracing::debug!("telemetry stream closed");
}

/// The client's settings with the server's values filled in.
pub fn reply_to(ctx: &Ctx, client: &pb::Settings) -> pb::TelemetryCommand {
    let now = Instant::now();
    let reply = settings::reply(client, &ctx.config.settings(), |t| ctx.registry.is_fifo(t, now));
    pb::TelemetryCommand {
        status: Some(error::ok()),
        command: Some(Command::Settings(reply)),
    }
}
