//! The push consumer: subscribe, give a listener, and the consumer receives, calls the
//! listener and acknowledges by itself.
//!
//! Clustering consumption: the members of a consumer group share the queues of its
//! topics, each queue owned by one member at a time. Every broker group decides for its
//! own queues (its leader keeps a lease per queue, `QueryAssignment`): the consumer asks
//! each group of each topic every `rebalance_interval` (1 s), telling it which of that
//! group's queues it still holds ([`rebalance`]). It polls the queues it was given
//! ([`poller`]); a queue it loses is drained — the running receive ends, the messages in
//! flight are finished and acknowledged — before it is let go, so the next owner never
//! overlaps with it. A member that dies leaves at once: its Telemetry streams (one per
//! broker address, [`crate::telemetry`]) close with its process.
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

pub mod backoff;
pub mod flow;
pub mod options;
pub mod poller;
pub mod rebalance;

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::Mutex;

use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
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
use super::resolve_config;
use crate::error::ClientError;
use crate::error::Result;
use crate::route::TopicRoute;
use crate::session::ClientKind;
use crate::session::Session;
use crate::session::sleep_or_stop;

/// The request header listing the queue ids (of the asked broker group) still held.
pub const HOLDING_HEADER: &str = "x-raftmq-holding";

/// A running push consumer; stop it with [`PushConsumer::shutdown`].
#[derive(Debug)]
pub struct PushConsumer {
    inner: Arc<Inner>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    subscriptions: BTreeMap<String, FilterExpression>,
    pollers: Mutex<BTreeMap<QueueKey, Poller>>,
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
            session.routes.get(topic).await?;
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
            pollers: Mutex::new(BTreeMap::new()),
        });
        let settings = settings(&session, &b);
        let client_id = session.config().client_id.clone();
        let telemetry = tokio::spawn(crate::telemetry::supervise(session.clone(), settings));
        let span = tracing::info_span!("push_consumer", group = %b.group, client_id);
        let rebalancer = tokio::spawn(rebalance_loop(inner.clone()).instrument(span));
        Ok(Self {
            inner,
            tasks: Mutex::new(vec![telemetry, rebalancer]),
        })
    }

    /// The queues being polled now.
    pub fn assigned(&self) -> Vec<(String, String, i32)> {
        lock(&self.inner.pollers)
            .keys()
            .map(|k| (k.topic.clone(), k.broker.clone(), k.id))
            .collect()
    }

    /// Stops: no more receives, every message in flight finished and acknowledged (up to
    /// the shutdown timeout), then the brokers are told the member left.
    pub async fn shutdown(&self) {
        let session = &self.inner.shared.session;
        if session.is_stopped() {
            return;
        }
        let rebalancer = lock(&self.tasks).pop();
        if let Some(t) = rebalancer {
            t.abort();
        }
        let pollers: Vec<Poller> = std::mem::take(&mut *lock(&self.inner.pollers))
            .into_values()
            .collect();
        for p in &pollers {
            p.stop();
        }
        for p in pollers {
            p.join().await;
        }
        session.shutdown().await;
        let rest: Vec<_> = lock(&self.tasks).drain(..).collect();
        for t in rest {
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
        plan.expire(std::time::Instant::now());
        for (topic, filter) in &inner.subscriptions {
            match session.routes.get(topic).await {
                Ok(route) => ask_groups(&inner, &route, &mut plan).await,
                Err(e) => tracing::warn!(topic, error = %e, "no route; keeping the current queues"),
            }
            apply(&inner, &plan, topic, filter, &session).await;
        }
        if sleep_or_stop(inner.shared.options.rebalance_interval, &mut stop).await {
            return;
        }
    }
}

/// Asks every broker group of `route` for this member's queues.
async fn ask_groups(inner: &Inner, route: &TopicRoute, plan: &mut Rebalance) {
    let brokers: Vec<&str> = route.brokers();
    plan.keep_brokers(&route.topic, &brokers);
    let held: BTreeSet<QueueKey> = lock(&inner.pollers)
        .iter()
        .filter(|(_, p)| !p.is_finished())
        .map(|(k, _)| k.clone())
        .collect();
    for broker in brokers {
        let Some(endpoints) = route
            .queues
            .iter()
            .find(|q| q.broker == broker)
            .map(|q| q.endpoints.clone())
        else {
            continue;
        };
        let holding = rebalance::holding_header(&held, &route.topic, broker);
        match query_assignment(inner, &route.topic, broker, &endpoints, &holding).await {
            Ok(ids) => plan.answered(&route.topic, broker, ids, std::time::Instant::now()),
            Err(e) => {
                tracing::debug!(broker, error = %e, "assignment not answered; keeping the last one");
                if e.suggests_route_refresh() {
                    inner.shared.session.routes.refresh_soon(&route.topic);
                }
            }
        }
    }
}

/// One QueryAssignment on a broker group (its addresses in turn).
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
    let call = move |mut c: MessagingServiceClient<Channel>,
                     mut r: tonic::Request<pb::QueryAssignmentRequest>| {
        r.metadata_mut().insert(HOLDING_HEADER, holding.clone());
        async move { c.query_assignment(r).await }
    };
    let answer = |resp: pb::QueryAssignmentResponse, addr: &str| {
        check_status(resp.status.as_ref(), addr)?;
        Ok(resp
            .assignments
            .iter()
            .filter_map(|a| a.message_queue.as_ref().map(|q| q.id))
            .collect::<Vec<_>>())
    };
    shared
        .ops()
        .calls
        .unary(broker, endpoints, false, req, call, answer)
        .await
}

/// Starts pollers for newly assigned queues of `topic` and stops the ones it lost.
async fn apply(
    inner: &Arc<Inner>,
    plan: &Rebalance,
    topic: &str,
    filter: &FilterExpression,
    session: &Session,
) {
    let Ok(route) = session.routes.get(topic).await else {
        return;
    };
    let mut pollers = lock(&inner.pollers);
    pollers.retain(|_, p| !p.is_finished());
    let running: BTreeSet<QueueKey> = pollers
        .iter()
        .filter(|(k, p)| k.topic == topic && !p.is_stopping())
        .map(|(k, _)| k.clone())
        .collect();
    let wanted: BTreeSet<QueueKey> = plan.assigned().into_iter().filter(|k| k.topic == topic).collect();
    for key in running.difference(&wanted) {
        if let Some(p) = pollers.get(key) {
            tracing::info!(queue = %format!("{}:{}", key.broker, key.id), "queue lost; draining");
            p.stop();
        }
    }
    for key in wanted.difference(&running) {
        if pollers.contains_key(key) {
            continue; // still draining from an earlier loss; started again once it ended
        }
        let Some(queue) = route
            .queues
            .iter()
            .find(|q| q.broker == key.broker && q.id == key.id)
        else {
            continue;
        };
        let p = poller::spawn(inner.shared.clone(), queue.clone(), filter.clone());
        pollers.insert(key.clone(), p);
    }
}
