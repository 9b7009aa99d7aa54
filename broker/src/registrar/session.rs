//! Registration with one name server: a lazily connected channel, the [`Schedule`] that
//! says when, and the call itself. Each name server has its own task, so a dead one never
//! delays registration with the others.

use std::sync::Arc;
use std::time::Duration;

use raftmq_proto::raftmq::namesrv::v1::RegisterRequest;
use raftmq_proto::raftmq::namesrv::v1::RegisterResponse;
use raftmq_proto::raftmq::namesrv::v1::namesrv_service_client::NamesrvServiceClient;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::transport::Endpoint;

use super::schedule::Announce;
use super::schedule::Health;
use super::schedule::Notice;
use super::schedule::Schedule;
use super::schedule::Timing;
use crate::admin::topics::config_to_spec;
use crate::context::Broker;
use crate::sm::SmResult;

/// Why one registration failed.
#[derive(Debug, thiserror::Error)]
enum RegisterError {
    #[error("cannot read the state machine: {0}")]
    Read(#[from] crate::sm::SmError),
    #[error("registration task failed: {0}")]
    Task(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{:?}: {}", .0.code(), .0.message())]
    Rpc(#[from] tonic::Status),
}

/// The registration `key` announces, with the applied index and the topics read now.
pub fn registration(broker: &Broker, key: &Announce) -> SmResult<RegisterRequest> {
    // The applied index first: the topics read after it are at least that recent, which
    // is what the name server assumes when it prefers the member with the highest index.
    let applied_index = broker.sm.applied()?.0.map_or(0, |id| id.index);
    let topics = broker.sm.topics()?.iter().map(config_to_spec).collect();
    Ok(RegisterRequest {
        group: broker.config.group.clone(),
        node_id: broker.id,
        role: key.role as i32,
        term: key.term,
        leader_id: key.leader,
        client_addr: broker.config.client_addr.clone(),
        applied_index,
        topics,
    })
}

/// A channel to `addr` (`host:port`) that connects on first use and reconnects as needed.
fn channel(addr: &str, timeout: Duration) -> Result<Channel, tonic::transport::Error> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(timeout)
        .tcp_nodelay(true)
        .connect_lazy())
}

/// One name server's registration state.
struct Session {
    broker: Arc<Broker>,
    client: NamesrvServiceClient<Channel>,
    timeout: Duration,
    schedule: Schedule,
    health: Health,
}

/// Registers with the name server at `addr` whenever `announce` or the schedule says so,
/// until `stop` turns true. Runs inside a span naming the name server.
pub async fn run(
    broker: Arc<Broker>,
    addr: String,
    mut announce: watch::Receiver<Option<Announce>>,
    mut stop: watch::Receiver<bool>,
) {
    let timeout = broker.config.register_timeout();
    let client = match channel(&addr, timeout) {
        Ok(c) => NamesrvServiceClient::new(c),
        Err(e) => {
            tracing::error!(error = %e, "bad name server address; not registering with it");
            return;
        }
    };
    let timing = Timing::new(broker.config.register_interval());
    let mut session = Session {
        broker,
        client,
        timeout,
        schedule: Schedule::new(timing),
        health: Health::default(),
    };
    loop {
        let key = *announce.borrow_and_update();
        if let Some(key) = key
            && session.schedule.is_due(&key, Instant::now())
        {
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => return,
                () = session.attempt(key) => continue,
            }
        }
        let wake = key.and_then(|k| session.schedule.next_at(&k));
        let announcer_gone = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            changed = announce.changed() => changed.is_err(),
            () = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => false,
        };
        if announcer_gone {
            // Nothing more to announce.
            let _ = stop.wait_for(|s| *s).await;
            return;
        }
    }
}

impl Session {
    /// Registers `key` once and records the outcome.
    async fn attempt(&mut self, key: Announce) {
        let result = self.call(key).await;
        let now = Instant::now();
        match result {
            Ok(resp) => {
                self.schedule.succeeded(key, now);
                let notice = self.health.succeeded(now);
                self.report_success(&key, &resp, notice);
            }
            Err(e) => {
                let retry_in = self.schedule.failed(key, now);
                let notice = self.health.failed(now);
                report_failure(&e, retry_in, notice);
            }
        }
    }

    async fn call(&mut self, key: Announce) -> Result<RegisterResponse, RegisterError> {
        let broker = self.broker.clone();
        let req = tokio::task::spawn_blocking(move || registration(&broker, &key))
            .await
            .map_err(|e| RegisterError::Task(e.to_string()))??;
        let mut request = tonic::Request::new(req);
        request.set_timeout(self.timeout);
        let call = self.client.register(request);
        match tokio::time::timeout(self.timeout, call).await {
            Ok(resp) => Ok(resp?.into_inner()),
            Err(_) => Err(RegisterError::Timeout(self.timeout)),
        }
    }

    fn report_success(&self, key: &Announce, resp: &RegisterResponse, notice: Notice) {
        let role = key.role.as_str_name();
        let interval_ms = self.broker.config.register_interval_ms;
        if let Notice::Up {
            first,
            failures,
            down_for,
        } = notice
        {
            let down_for_ms = down_for.as_millis() as u64;
            let expiry_ms = resp.expiry_ms;
            if first {
                tracing::info!(
                    role,
                    term = key.term,
                    expiry_ms,
                    failures,
                    "registered with name server"
                );
            } else {
                tracing::info!(
                    role,
                    term = key.term,
                    failures,
                    down_for_ms,
                    "name server reachable again"
                );
            }
            if expiry_ms != 0 && expiry_ms <= interval_ms {
                tracing::warn!(
                    expiry_ms,
                    interval_ms,
                    "the name server expires registrations faster than this node renews them"
                );
            }
        } else {
            tracing::debug!(role, term = key.term, leader = ?key.leader, "registered");
        }
    }
}

fn report_failure(error: &RegisterError, retry_in: Duration, notice: Notice) {
    let retry_in_ms = retry_in.as_millis() as u64;
    match notice {
        Notice::Down { failures, down_for } => {
            let failing_for_ms = down_for.as_millis() as u64;
            tracing::warn!(%error, failures, failing_for_ms, retry_in_ms, "registration with name server failed");
        }
        _ => tracing::debug!(%error, retry_in_ms, "registration with name server failed"),
    }
}
