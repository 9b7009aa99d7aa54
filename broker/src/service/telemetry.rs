//! Telemetry: the bidirectional stream on which a client announces its settings (and the
//! server could send it commands).
//!
//! The handler answers at once with its response stream — some clients wait for the
//! response headers before they send anything — and a task serves the inbound stream: each
//! Settings frame registers the client ([`crate::clients::ClientRegistry`]) and is answered
//! with the full server settings ([`super::settings`]). Other client frames (stack traces,
//! verify results) are logged. The stream stays open until the client closes it; the reply
//! channel is bounded.

use std::sync::Arc;

use futures_util::stream;
use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::Code;
use raftmq_proto::rocketmq::v2::telemetry_command::Command;
use tokio::sync::mpsc;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::Streaming;
use tracing::Instrument;

use super::BoxStream;
use super::heartbeat::CLIENT_ID_HEADER;
use super::heartbeat::client_id;
use super::status;
use crate::command::MessageKind;
use crate::context::Broker;
use raftmq_proto::settings;
use raftmq_proto::settings::ServerSettings;

/// Replies buffered for a slow client before the inbound side waits.
const REPLY_BUFFER: usize = 16;

pub async fn handle(
    broker: &Arc<Broker>,
    req: Request<Streaming<pb::TelemetryCommand>>,
) -> Result<Response<BoxStream<pb::TelemetryCommand>>, Status> {
    let client = client_id(req.metadata()).map(str::to_owned);
    let span = tracing::info_span!("telemetry", client_id = client.as_deref().unwrap_or(""));
    let inbound = req.into_inner();
    let (tx, rx) = mpsc::channel(REPLY_BUFFER);
    tokio::spawn(serve(broker.clone(), client, inbound, tx).instrument(span));
    let replies = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    Ok(Response::new(Box::pin(replies)))
}

type Reply = Result<pb::TelemetryCommand, Status>;

/// Reads the client's frames until it closes the stream (or stops reading replies).
async fn serve(
    broker: Arc<Broker>,
    client: Option<String>,
    mut inbound: Streaming<pb::TelemetryCommand>,
    tx: mpsc::Sender<Reply>,
) {
    tracing::debug!("telemetry stream opened");
    // The push-consumer group this stream keeps its client a member of.
    let mut joined: Option<String> = None;
    loop {
        let frame = tokio::select! {
            frame = inbound.message() => frame,
            () = tx.closed() => break,
            () = broker.stopped() => break,
        };
        let cmd = match frame {
            Ok(Some(cmd)) => cmd,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "telemetry stream failed");
                break;
            }
        };
        if let (Some(id), Some(Command::Settings(s))) = (client.as_deref(), &cmd.command) {
            join_group(&broker, id, s, &mut joined);
        }
        if let Some(reply) = on_command(&broker, client.as_deref(), cmd)
            && tx.send(Ok(reply)).await.is_err()
        {
            break;
        }
    }
    if let (Some(id), Some(group)) = (client.as_deref(), joined) {
        let now = std::time::Instant::now();
        broker.consumers.members_mut(|m| m.stream_closed(&group, id, now));
        tracing::info!(
            group,
            "push consumer's stream closed; it leaves the group unless it reconnects"
        );
    }
    tracing::debug!("telemetry stream closed");
}

/// A push consumer's settings make the stream hold its membership of the group.
fn join_group(broker: &Broker, client: &str, s: &pb::Settings, joined: &mut Option<String>) {
    let push = s.client_type == Some(pb::ClientType::PushConsumer as i32);
    let group = match &s.pub_sub {
        Some(pb::settings::PubSub::Subscription(sub)) => sub.group.as_ref().map(|g| g.name.clone()),
        _ => None,
    };
    let Some(group) = group.filter(|g| push && !g.is_empty()) else {
        return;
    };
    if joined.as_deref() == Some(group.as_str()) {
        return;
    }
    let now = std::time::Instant::now();
    let added = broker.consumers.members_mut(|m| {
        if let Some(old) = joined.as_deref() {
            m.stream_closed(old, client, now);
        }
        m.stream_opened(&group, client, now)
    });
    if added {
        tracing::info!(group, "push consumer joined through its stream");
        *joined = Some(group);
    } else {
        tracing::warn!(group, "too many consumers; this one is not a member");
        *joined = None;
    }
}

/// What to answer a client's frame with, if anything.
fn on_command(
    broker: &Broker,
    client: Option<&str>,
    cmd: pb::TelemetryCommand,
) -> Option<pb::TelemetryCommand> {
    match cmd.command {
        Some(Command::Settings(s)) => Some(on_settings(broker, client, &s)),
        Some(Command::ThreadStackTrace(t)) => {
            tracing::info!(nonce = %t.nonce, trace = t.thread_stack_trace.as_deref().unwrap_or(""), "client thread stacks");
            None
        }
        Some(Command::VerifyMessageResult(v)) => {
            tracing::info!(nonce = %v.nonce, status = ?cmd.status, "client verify-message result");
            None
        }
        Some(_) => {
            tracing::debug!("ignoring a server-to-client telemetry command sent by a client");
            None
        }
        None => {
            tracing::debug!(status = ?cmd.status, "empty telemetry frame");
            None
        }
    }
}

/// Registers the client's settings and answers with the server's values filled in.
fn on_settings(broker: &Broker, client: Option<&str>, s: &pb::Settings) -> pb::TelemetryCommand {
    let Some(client) = client else {
        return pb::TelemetryCommand {
            status: Some(status::status(
                Code::ClientIdRequired,
                format!("settings need the {CLIENT_ID_HEADER} header"),
            )),
            command: None,
        };
    };
    let reply = settings::reply(s, &server_settings(&broker.config), |t| is_fifo_topic(broker, t));
    broker.clients.update(client, reply.clone());
    tracing::debug!(client_type = ?reply.client_type, "client settings registered");
    pb::TelemetryCommand {
        status: Some(status::ok()),
        command: Some(Command::Settings(reply)),
    }
}

/// Whether `topic` exists here as a FIFO topic (unreadable state counts as not).
fn is_fifo_topic(broker: &Broker, topic: &str) -> bool {
    match broker.sm.topic(topic) {
        Ok(config) => config.is_some_and(|c| c.kind == MessageKind::Fifo),
        Err(e) => {
            tracing::warn!(error = %e, topic, "cannot read a subscribed topic's kind");
            false
        }
    }
}

/// The settings values a broker configuration implies.
pub fn server_settings(c: &crate::config::BrokerConfig) -> ServerSettings {
    ServerSettings {
        max_body_size: c.max_body_size,
        long_polling_timeout_ms: c.max_long_poll_ms,
        consumer_max_attempts: c.max_delivery_attempts,
    }
}
