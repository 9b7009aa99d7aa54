//! The push consumer: subscribe, give a listener, and the consumer receives, calls the
//! listener and acknowledges by itself.
//!
//! Clustering consumption: the members of a consumer group share the queues of its
//! topics, each queue owned by one member at a time. Every broker group decides for its
//! own queues (its leader keeps a lease per queue, `QueryAssignment`): the consumer asks
//! each group of each topic every `rebalance_interval` (1 s) — all of them at once, each
//! question bounded by the request timeout — telling it which of that group's queues it
//! still holds ([`rebalance`]). It polls the queues it was given ([`poller`]); a queue it
//! loses is drained — the running receive ends, the messages in flight are finished and
//! acknowledged — before it is let go, so the next owner never overlaps with it. A
//! poller whose queue no answer confirmed for [`rebalance::ANSWER_TTL`] (10 s, counted
//! from the question's send time) stops receiving by itself, before the broker's lease
//! (15 s) may run out. A member that dies leaves within seconds: its Telemetry streams
//! (one per broker address, [`crate::telemetry`]) close with its process, and the brokers
//! drop it 3 s later (a stream that breaks and is reopened keeps its member).
//!
//! Shutdown first stops every poller (no poller is started after it began) and goes on
//! asking for the queues still held while they drain, so that no lease runs out under a
//! draining poller; once every poller has ended it stops asking and tells the brokers
//! the member left.
//!
//! Delivery is at least once: a message whose ack was lost, or whose listener took
//! longer than the invisible duration, is delivered again.
//!
//! Where a new group starts ([`PushOptions::start_from`]): a broker pops a queue from the
//! group's committed offset, and a group that never consumed a queue from its beginning.
//! So before its first receive of a newly assigned queue, a poller reads the group's
//! committed offset (GetOffset) and, when there is none, commits the start the option
//! names (QueryOffset, then UpdateOffset); only then does it tell
//! [`QueueEvent::Assigned`] and receive. The queue's lease makes the poller its only
//! consumer, so nothing pops it meanwhile; and since a broker keeps the committed offset
//! in step with every pop (at the first unacknowledged message), a group with progress on
//! a queue always has a committed offset there, which is never moved. The default,
//! [`StartFrom::Last`], is RocketMQ's: its proxy pops for gRPC consumers with
//! `ConsumeInitMode.MAX` (the queue's end) and RocketMQ 4's push consumer defaults to
//! `CONSUME_FROM_LAST_OFFSET`. Unlike RocketMQ's broker, which starts a `MAX` group at
//! the last message stored (max offset - 1), or at 0 while the queue's first message is
//! still in memory (`initPopOffsetByCheckMsgInMem`), `Last` here is the queue's end,
//! whatever is cached.
//!
//! A failed receive (other than bad input) has the topic's route refreshed in the
//! background ([`crate::route::Routes::refresh_soon`]); the poller takes the queue's
//! addresses from the refreshed route on its next failure.

mod acker;
pub mod backoff;
mod dispatch;
pub mod flow;
pub mod options;
pub mod poller;
pub mod rebalance;

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use futures_util::future::join_all;
use raftmq_proto::rocketmq::v2 as pb;
use tokio::task::JoinHandle;
use tracing::Instrument;

pub use super::StartFrom;
pub use options::ConsumeMode;
pub use options::ConsumeResult;
pub use options::PushConsumerBuilder;
pub use options::PushOptions;
pub use options::QueueEvent;
use poller::Poller;
use poller::Shared;
use rebalance::QueueKey;
use rebalance::Rebalance;

use super::FilterExpression;
use super::Preferred;
use super::check_status;
use super::duration;
use super::leader_hint;
use super::resolve_config;
use crate::error::ClientError;
use crate::error::Result;
use crate::route::TopicRoute;
use crate::rpc::call_error;
use crate::session::ClientKind;
use crate::session::Session;
use crate::session::sleep_or_stop;

/// The request header listing the queue ids (of the asked broker group) still held.
pub const HOLDING_HEADER: &str = "x-raftmq-holding";

/// How often shutdown looks whether every poller has ended.
const SHUTDOWN_POLL: Duration = Duration::from_millis(20);

/// A running push consumer; stop it with [`PushConsumer::shutdown`] (dropping it starts
/// the same shutdown in the background).
#[derive(Debug)]
pub struct PushConsumer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    subscriptions: BTreeMap<String, FilterExpression>,
    pollers: Mutex<Pollers>,
    tasks: Mutex<Tasks>,
    /// The runtime the consumer was started on (a drop outside it still shuts down there).
    runtime: tokio::runtime::Handle,
}

/// The pollers, and whether shutdown began: both under one lock, so that no poller is
/// started once it did.
#[derive(Debug, Default)]
struct Pollers {
    map: BTreeMap<QueueKey, Poller>,
    closing: bool,
}

#[derive(Debug, Default)]
struct Tasks {
    telemetry: Option<JoinHandle<()>>,
    rebalancer: Option<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PushConsumer {
    /// A builder with RocketMQ's defaults.
    pub fn builder() -> PushConsumerBuilder {
        PushConsumerBuilder {
            config: None,
            access_points: Vec::new(),
            group: String::new(),
            subscriptions: BTreeMap::new(),
            listener: None,
            queue_listener: None,
            options: PushOptions::default(),
        }
    }

    pub(super) async fn start(b: PushConsumerBuilder, listener: options::Listener) -> Result<Self> {
        let config = resolve_config(b.config.clone(), &b.access_points)?;
        let kind = ClientKind::PushConsumer {
            group: b.group.clone(),
        };
        let session = Session::start(config, kind)?;
        for topic in b.subscriptions.keys() {
            if let Err(e) = session.routes.get(topic).await {
                session.shutdown().await;
                return Err(e);
            }
        }
        let workers = Arc::new(tokio::sync::Semaphore::new(b.options.workers));
        let shared = Arc::new(Shared {
            session: session.clone(),
            group: b.group.clone(),
            preferred: Preferred::default(),
            listener,
            queue_listener: b.queue_listener.clone(),
            options: b.options.clone(),
            workers,
        });
        let inner = Arc::new(Inner {
            shared,
            subscriptions: b.subscriptions.clone(),
            pollers: Mutex::new(Pollers::default()),
            tasks: Mutex::new(Tasks::default()),
            runtime: tokio::runtime::Handle::current(),
        });
        let settings = settings(&session, &b);
        let client_id = session.rpc.client_id().to_owned();
        let telemetry = tokio::spawn(crate::telemetry::supervise(session.clone(), settings));
        let span = tracing::info_span!("push_consumer", group = %b.group, client_id);
        let rebalancer = tokio::spawn(rebalance_loop(inner.clone()).instrument(span));
        *lock(&inner.tasks) = Tasks {
            telemetry: Some(telemetry),
            rebalancer: Some(rebalancer),
        };
        Ok(Self { inner })
    }

    /// The queues being polled now.
    pub fn assigned(&self) -> Vec<(String, String, i32)> {
        lock(&self.inner.pollers)
            .map
            .keys()
            .map(|k| (k.topic.clone(), k.broker.clone(), k.id))
            .collect()
    }

    /// Stops: no more receives, every message in flight finished and acknowledged (up to
    /// the shutdown timeout), then the brokers are told the member left. Meanwhile the
    /// consumer goes on asking for its queues, saying which it still holds, so that no
    /// lease runs out while its pollers drain.
    pub async fn shutdown(&self) {
        if self.inner.begin_close() {
            self.inner.finish_close().await;
        }
    }
}

impl Drop for PushConsumer {
    fn drop(&mut self) {
        if self.inner.shared.session.is_stopped() {
            return;
        }
        // No new poller, none receiving any more; the rest (draining, then leaving the
        // group) in the background.
        self.inner.begin_close();
        let inner = self.inner.clone();
        self.inner
            .runtime
            .spawn(async move { inner.finish_close().await });
    }
}

impl Inner {
    /// Begins the shutdown: no poller is started any more, every poller is asked to stop.
    /// False if it had begun already.
    fn begin_close(&self) -> bool {
        let mut pollers = lock(&self.pollers);
        if pollers.closing {
            return false;
        }
        pollers.closing = true;
        for p in pollers.map.values() {
            p.stop();
        }
        true
    }

    /// Waits for every poller to end while the rebalancer goes on renewing the leases of
    /// what they still hold; then stops the rebalancer and the session.
    async fn finish_close(&self) {
        let o = &self.shared.options;
        let session = &self.shared.session;
        // Pollers bound what they wait for by the shutdown timeout; this is the backstop.
        let bound = o.shutdown_timeout * 2 + o.await_duration + session.config().request_timeout * 4;
        let until = tokio::time::Instant::now() + bound;
        loop {
            let left = lock(&self.pollers)
                .map
                .values()
                .filter(|p| !p.is_finished())
                .count();
            if left == 0 {
                break;
            }
            if tokio::time::Instant::now() >= until {
                tracing::warn!(pollers = left, "pollers did not end in time; aborted");
                for p in lock(&self.pollers).map.values() {
                    p.abort();
                }
                break;
            }
            tokio::time::sleep(SHUTDOWN_POLL).await;
        }
        let pollers = std::mem::take(&mut lock(&self.pollers).map);
        for p in pollers.into_values() {
            p.join().await;
        }
        let (rebalancer, telemetry) = {
            let mut t = lock(&self.tasks);
            (t.rebalancer.take(), t.telemetry.take())
        };
        if let Some(t) = rebalancer {
            t.abort();
            let _ = t.await;
        }
        session.shutdown().await;
        if let Some(t) = telemetry {
            let _ = t.await;
        }
    }
}

/// The settings the consumer announces on its Telemetry streams.
fn settings(session: &Session, b: &PushConsumerBuilder) -> pb::Settings {
    let entries = b
        .subscriptions
        .iter()
        .map(|(topic, filter)| pb::SubscriptionEntry {
            topic: Some(session.resource(topic)),
            expression: Some(filter.to_wire()),
        })
        .collect();
    pb::Settings {
        client_type: Some(pb::ClientType::PushConsumer as i32),
        request_timeout: Some(duration(session.config().request_timeout)),
        pub_sub: Some(pb::settings::PubSub::Subscription(pb::Subscription {
            group: Some(session.resource(&b.group)),
            subscriptions: entries,
            fifo: Some(b.options.mode == ConsumeMode::Ordered),
            receive_batch_size: i32::try_from(b.options.batch_size).ok(),
            long_polling_timeout: Some(duration(b.options.await_duration)),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// Asks for the assignment every interval and starts and stops pollers to match.
async fn rebalance_loop(inner: Arc<Inner>) {
    let session = inner.shared.session.clone();
    let mut stop = session.stopped();
    let mut plan = Rebalance::default();
    loop {
        // Each topic's route once per round (the cached one: a stale one is refreshed in
        // the background).
        let topics: Vec<&String> = inner.subscriptions.keys().collect();
        let routes: BTreeMap<&str, Arc<TopicRoute>> = join_all(topics.iter().map(|t| session.routes.get(t)))
            .await
            .into_iter()
            .zip(&topics)
            .filter_map(|(r, topic)| match r {
                Ok(route) => Some((topic.as_str(), route)),
                Err(e) => {
                    tracing::warn!(topic = %topic, error = %e, "no route; keeping the current queues");
                    None
                }
            })
            .collect();
        ask_groups(&inner, &routes, &mut plan).await;
        // Asking took time: what ran out meanwhile starts nothing.
        plan.expire(Instant::now());
        for (topic, filter) in &inner.subscriptions {
            apply(
                &inner,
                &plan,
                topic,
                filter,
                routes.get(topic.as_str()).map(|r| &**r),
            );
        }
        if sleep_or_stop(inner.shared.options.rebalance_interval, &mut stop).await {
            return;
        }
    }
}

/// Asks every broker group of every route, all at once, for this member's queues; each
/// question is bounded by the request timeout, and each answer counts from the time its
/// question was sent.
async fn ask_groups(inner: &Inner, routes: &BTreeMap<&str, Arc<TopicRoute>>, plan: &mut Rebalance) {
    let held: BTreeSet<QueueKey> = lock(&inner.pollers)
        .map
        .iter()
        .filter(|(_, p)| !p.is_finished())
        .map(|(k, _)| k.clone())
        .collect();
    let timeout = inner.shared.session.config().request_timeout;
    let mut questions = Vec::new();
    for route in routes.values() {
        let brokers: Vec<&str> = route.brokers();
        plan.keep_brokers(&route.topic, &brokers);
        for broker in brokers {
            let Some(endpoints) = route
                .queues
                .iter()
                .find(|q| q.broker == broker)
                .map(|q| q.endpoints.as_slice())
            else {
                continue;
            };
            let holding = rebalance::holding_header(&held, &route.topic, broker);
            let topic = route.topic.as_str();
            questions.push(async move {
                let sent = Instant::now();
                let asked = query_assignment(inner, topic, broker, endpoints, &holding);
                let answer = tokio::time::timeout(timeout, asked).await.unwrap_or_else(|_| {
                    Err(ClientError::Timeout(format!(
                        "QueryAssignment on broker group {broker}: no answer within {timeout:?}"
                    )))
                });
                (topic, broker, sent, answer)
            });
        }
    }
    for (topic, broker, sent, answer) in join_all(questions).await {
        match answer {
            Ok(ids) => plan.answered(topic, broker, ids, sent),
            Err(e) => {
                tracing::debug!(topic, broker, error = %e, "assignment not answered; keeping the last one");
                if e.suggests_route_refresh() {
                    inner.shared.session.routes.refresh_soon(topic);
                }
            }
        }
    }
}

/// One QueryAssignment on a broker group, its addresses in turn, within the request
/// timeout: each try gets half of it when there is another address to try.
async fn query_assignment(
    inner: &Inner,
    topic: &str,
    broker: &str,
    endpoints: &[String],
    holding: &str,
) -> Result<Vec<i32>> {
    let shared = &inner.shared;
    let session = &shared.session;
    let req = pb::QueryAssignmentRequest {
        topic: Some(session.resource(topic)),
        group: Some(session.resource(&shared.group)),
        endpoints: None,
    };
    let holding = tonic::metadata::MetadataValue::try_from(holding)
        .map_err(|e| ClientError::InvalidArgument(e.to_string()))?;
    let timeout = session.config().request_timeout;
    let per_try = if endpoints.len() > 1 { timeout / 2 } else { timeout };
    let deadline = tokio::time::Instant::now() + timeout;
    let rpc = &session.rpc;
    let ops = shared.ops();
    ops.calls
        .call(broker, endpoints, deadline, |addr, left| {
            let mut request = rpc.request(req.clone(), left.min(per_try));
            request.metadata_mut().insert(HOLDING_HEADER, holding.clone());
            async move {
                let resp = rpc
                    .messaging(&addr)?
                    .query_assignment(request)
                    .await
                    .map_err(|s| call_error(&s, &addr, false))?;
                let hint = leader_hint(resp.metadata());
                let resp = resp.into_inner();
                check_status(resp.status.as_ref(), &addr)?;
                let ids = resp
                    .assignments
                    .iter()
                    .filter_map(|a| a.message_queue.as_ref().map(|q| q.id))
                    .collect();
                Ok((ids, hint))
            }
        })
        .await
}

/// Extends the pollers of `topic` the plan confirms, stops the ones it lost and (unless
/// shutting down, and given the topic's route) starts pollers for newly assigned queues.
fn apply(
    inner: &Arc<Inner>,
    plan: &Rebalance,
    topic: &str,
    filter: &FilterExpression,
    route: Option<&TopicRoute>,
) {
    let mut guard = lock(&inner.pollers);
    let pollers = &mut *guard;
    pollers.map.retain(|_, p| !p.is_finished());
    for (key, p) in pollers.map.iter().filter(|(k, _)| k.topic == topic) {
        if let Some(until) = plan.valid_until(key) {
            p.extend(until);
        }
    }
    if pollers.closing {
        return; // every poller is stopping; none is started
    }
    let running: BTreeSet<QueueKey> = pollers
        .map
        .iter()
        .filter(|(k, p)| k.topic == topic && !p.is_stopping())
        .map(|(k, _)| k.clone())
        .collect();
    let wanted: BTreeSet<QueueKey> = plan.assigned().into_iter().filter(|k| k.topic == topic).collect();
    for key in running.difference(&wanted) {
        if let Some(p) = pollers.map.get(key) {
            tracing::info!(queue = %format!("{}:{}", key.broker, key.id), "queue lost; draining");
            p.stop();
        }
    }
    let Some(route) = route else {
        return;
    };
    for key in wanted.difference(&running) {
        if pollers.map.contains_key(key) {
            continue; // still draining from an earlier loss; started again once it ended
        }
        let (Some(queue), Some(until)) = (
            route
                .queues
                .iter()
                .find(|q| q.broker == key.broker && q.id == key.id),
            plan.valid_until(key),
        ) else {
            continue;
        };
        let p = poller::spawn(inner.shared.clone(), queue.clone(), filter.clone(), until);
        pollers.map.insert(key.clone(), p);
    }
}

#[cfg(test)]
#[path = "mod_tests.rs"]
mod tests;
