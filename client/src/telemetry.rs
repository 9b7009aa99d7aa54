//! The Telemetry streams a client keeps open: one per broker address of its routes, each
//! opened with the client's settings. For a push consumer the open stream is its
//! membership of the consumer group at that broker: when the process dies, its kernel
//! closes the connections and the brokers drop it at once.
//!
//! A supervisor looks at the routes every [`SUPERVISE_EVERY`], opens a stream to every new
//! address and closes the streams of addresses no route has named for [`KEEP_FOR`]; a
//! failed stream is opened again after a backoff. Everything closes when the session
//! stops. The grace keeps a member in its groups while a route misses an address for a
//! while (a restarted name server that not every broker has registered with yet): closing
//! the stream would make the broker drop the member and give its queues away.

use std::collections::BTreeSet;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

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
/// How long a stream stays open after the last route that named its address.
pub const KEEP_FOR: Duration = Duration::from_secs(60);

/// The addresses to keep a stream to: those a route named within [`KEEP_FOR`]. Sans-IO.
#[derive(Debug, Clone, Default)]
pub struct Wanted {
    last_named: HashMap<String, Instant>,
}

impl Wanted {
    /// The routes name `addresses` at `now`: the addresses to keep a stream to.
    pub fn update(&mut self, addresses: impl IntoIterator<Item = String>, now: Instant) -> BTreeSet<String> {
        for a in addresses {
            self.last_named.insert(a, now);
        }
        self.last_named
            .retain(|_, at| now.saturating_duration_since(*at) < KEEP_FOR);
        self.last_named.keys().cloned().collect()
    }
}

/// Keeps the streams open until the session stops.
pub async fn supervise(session: Arc<Session>, settings: pb::Settings) {
    let mut stop = session.stopped();
    let mut streams: HashMap<String, (JoinHandle<()>, watch::Sender<bool>)> = HashMap::new();
    let mut recent = Wanted::default();
    loop {
        let wanted = recent.update(session.routes.all_endpoints(), Instant::now());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn set(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn an_address_missing_from_the_routes_is_kept_for_a_while() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut w = Wanted::default();
        assert_eq!(w.update(set(&["a:1", "b:1"]), t0), set(&["a:1", "b:1"]));
        // A route refresh without b (a name server restarted): b's stream stays open.
        assert_eq!(w.update(set(&["a:1"]), at(1)), set(&["a:1", "b:1"]));
        // b is back before the grace ran out: it counts from now on.
        assert_eq!(w.update(set(&["a:1", "b:1"]), at(30)), set(&["a:1", "b:1"]));
        assert_eq!(w.update(set(&["a:1"]), at(31)), set(&["a:1", "b:1"]));
        assert_eq!(w.update(set(&["a:1"]), at(89)), set(&["a:1", "b:1"]));
        // Not named for 60 s: closed.
        assert_eq!(w.update(set(&["a:1"]), at(90)), set(&["a:1"]));
        assert_eq!(w.update(BTreeSet::new(), at(150)), BTreeSet::new());
    }
}
