//! The producer: sends messages to a topic's queues with RocketMQ's semantics.
//!
//! ```no_run
//! # async fn demo() -> raftmq_client::Result<()> {
//! use raftmq_client::Message;
//! use raftmq_client::producer::Producer;
//!
//! let producer = Producer::builder()
//!     .access_points(["127.0.0.1:9876"])
//!     .producer_group("orders-producer")
//!     .start()
//!     .await?;
//! let receipt = producer
//!     .send(Message::new("orders", "hello").with_tag("created").with_key("order-1"))
//!     .await?;
//! println!("{} stored on {} at offset {}", receipt.message_id, receipt.broker, receipt.offset);
//! producer.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! - **Sync** ([`Producer::send`], [`Producer::send_batch`]): waits for the receipt. A
//!   failed attempt is retried (by default twice), each time on another broker group when the
//!   topic has one ([`retry`]); groups that failed or answered slowly are avoided for a
//!   while ([`fault`]). Within one attempt the queue's addresses are tried in turn, the
//!   leader first: a follower forwards to the leader.
//! - **Async** ([`Producer::send_async`]): the same send, started at once; await the
//!   returned [`SendHandle`] for the receipt. Async sends started while many are in flight
//!   are merged into shared requests ([`coalesce`]).
//! - **Oneway** ([`Producer::send_oneway`]): one attempt, no answer awaited, no retry.
//! - **Ordered**: a message with a message group (its sharding key) always goes to the one
//!   queue of that key ([`select`]) and is never retried on another queue; retries stay
//!   on its group's addresses. Or the caller's [`QueueSelector`] picks the queue
//!   ([`Producer::send_with_selector`]), with the same rules.
//!
//! A failed attempt (other than bad input) also asks for the topic's route to be refreshed
//! in the background ([`crate::route::Routes::refresh_soon`], at most once a second per
//! topic): the retries of that send keep the route they started with, later sends use
//! the new one.
//!
//! Time: a call to one address has the request timeout (default 3 s). A timeout ends the
//! attempt (the group's other addresses would wait as long again), a refused connection
//! moves on to the next address at once; so a send takes about `attempts × timeout` plus
//! backoffs at worst, more only with addresses that neither answer nor refuse.
//!
//! Every message gets a client-made unique id ([`crate::message::new_message_id`]), kept
//! across retries, so a consumer can tell a message stored twice (after an unknown
//! outcome) by its id.

mod attempt;
mod builder;
pub mod coalesce;
pub mod fault;
mod prepared;
pub mod retry;
pub mod select;
pub mod selector;
pub mod wire;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::task::Context;
use std::task::Poll;
use std::time::Duration;
use std::time::Instant;

use tokio::sync::Notify;
use tokio::sync::mpsc;
use tokio::sync::oneshot;

pub use builder::ProducerBuilder;
pub use builder::ProducerOptions;
pub use coalesce::CoalesceOptions;
pub use prepared::check_batch;
pub use selector::QueueSelector;
pub use selector::SelectByHash;

use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::error::Result;
use crate::message::Message;
use crate::route::MessageQueue;
use crate::route::TopicRoute;
use crate::session::ClientKind;
use crate::session::Session;

use self::coalesce::AsyncReply;
use self::coalesce::Waiting;
use self::fault::FaultTracker;
use self::prepared::Prepared;
use self::prepared::receipts;
use self::prepared::writable_groups;
use self::retry::RetryPlan;
use self::retry::Verdict;

/// Where a message was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendReceipt {
    /// The client-made id of the message.
    pub message_id: String,
    /// Its topic.
    pub topic: String,
    /// The broker group that stored it.
    pub broker: String,
    /// The queue within the group: the one the producer chose (it tells the broker with
    /// the `x-raftmq-queue: client` header), or for an ordered message (with a message
    /// group) the queue its group's broker stores that key on. None only if unknown.
    pub queue_id: Option<i32>,
    /// The message's offset in its queue.
    pub offset: i64,
    /// The address that answered.
    pub endpoint: String,
    /// Attempts made, this one included (1 when the first attempt succeeded).
    pub attempts: u32,
}

/// A running producer; cheap to clone (clones share everything). Call
/// [`Producer::shutdown`] when done.
#[derive(Debug, Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    session: Arc<Session>,
    options: ProducerOptions,
    faults: Mutex<FaultTracker>,
    /// The round-robin position per topic.
    next_queue: Mutex<HashMap<String, usize>>,
    /// Per broker group, the address that answered last (or the leader a follower named).
    preferred: Mutex<HashMap<String, String>>,
    in_flight: Arc<InFlightCount>,
    closing: AtomicBool,
    /// Async sends waiting to be merged into requests ([`coalesce`]).
    async_sends: mpsc::Sender<Waiting<AsyncReply>>,
}

/// Most async sends queued for merging; more wait for room on tasks of their own.
const ASYNC_QUEUE: usize = 65_536;

impl Drop for Inner {
    fn drop(&mut self) {
        // Without a shutdown, stop the session's loops (they hold the session, not us).
        if !self.session.is_stopped()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let session = self.session.clone();
            rt.spawn(async move { session.shutdown().await });
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An async send in flight ([`Producer::send_async`]); resolves to its receipt.
/// Dropping it does not cancel the send.
#[derive(Debug)]
pub struct SendHandle(oneshot::Receiver<Result<SendReceipt>>);

impl Future for SendHandle {
    type Output = Result<SendReceipt>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|answer| {
            answer.unwrap_or_else(|_| {
                Err(ClientError::OutcomeUnknown(
                    "the send ended without an answer".into(),
                ))
            })
        })
    }
}

/// How many background sends are running, and a wake-up for when none is left.
#[derive(Debug, Default)]
struct InFlightCount {
    running: AtomicUsize,
    /// Notified when `running` drops to 0 (not on every change: a send costs two atomic
    /// operations, not two wake-ups).
    idle: Notify,
}

impl InFlightCount {
    /// Waits until no background send is running.
    async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            // Registered before the check, so a drop to 0 right after it still wakes us.
            notified.as_mut().enable();
            if self.running.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Counts a background send while it runs.
struct InFlight(Arc<InFlightCount>);

impl InFlight {
    fn new(counter: &Arc<InFlightCount>) -> Self {
        counter.running.fetch_add(1, Ordering::AcqRel);
        Self(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Producer {
    /// A builder with RocketMQ's defaults: 3 s request timeout, 2 retries, 4 MiB messages,
    /// fault avoidance on.
    pub fn builder() -> ProducerBuilder {
        ProducerBuilder::new()
    }

    fn with(config: ClientConfig, options: ProducerOptions) -> Result<Self> {
        let session = Session::start(config, ClientKind::Producer)?;
        let (async_sends, queued) = mpsc::channel(ASYNC_QUEUE);
        let limits = options.coalesce;
        let inner = Arc::new(Inner {
            session,
            options,
            faults: Mutex::new(FaultTracker::new()),
            next_queue: Mutex::new(HashMap::new()),
            preferred: Mutex::new(HashMap::new()),
            in_flight: Arc::default(),
            closing: AtomicBool::new(false),
            async_sends,
        });
        tokio::spawn(coalesce::dispatch(Arc::downgrade(&inner), queued, limits));
        Ok(Self { inner })
    }

    /// The shared client core: configuration, RPC channels, routes.
    pub fn session(&self) -> &Arc<Session> {
        &self.inner.session
    }

    /// The producer's options.
    pub fn options(&self) -> &ProducerOptions {
        &self.inner.options
    }

    fn running(&self) -> Result<()> {
        if self.inner.closing.load(Ordering::Acquire) {
            return Err(ClientError::Shutdown);
        }
        Ok(())
    }

    /// Sends one message and waits for its receipt, retrying as the [`retry`] module
    /// says. A message with a message group is sent in order (see the module docs).
    pub async fn send(&self, message: Message) -> Result<SendReceipt> {
        self.running()?;
        let receipts = self.send_all(vec![message]).await?;
        receipts
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::OutcomeUnknown("an answer without a receipt".into()))
    }

    /// Sends a batch of messages of one topic (and one message group, or none) as one
    /// request: they are stored together, on one queue, at consecutive offsets, or not at
    /// all. The bodies may add up to [`ProducerOptions::max_message_size`].
    pub async fn send_batch(&self, messages: Vec<Message>) -> Result<Vec<SendReceipt>> {
        self.running()?;
        self.send_all(messages).await
    }

    /// Starts sending `message` on a task of its own, at once; the handle resolves to what
    /// [`Producer::send`] would return.
    pub fn send_async(&self, message: Message) -> SendHandle {
        let (reply, answer) = oneshot::channel();
        let checked = self
            .running()
            .and_then(|()| message.validate(self.options().max_message_size));
        if let Err(e) = checked {
            let _ = reply.send(Err(e));
            return SendHandle(answer);
        }
        let guard = InFlight::new(&self.inner.in_flight);
        if !self.options().coalesce.enabled {
            let this = self.clone();
            tokio::spawn(async move {
                let _guard = guard;
                let _ = reply.send(this.send(message).await);
            });
            return SendHandle(answer);
        }
        let waiting = Waiting {
            message,
            with: (reply, guard),
        };
        match self.inner.async_sends.try_send(waiting) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(waiting)) => {
                let queue = self.inner.async_sends.clone();
                tokio::spawn(async move {
                    if let Err(mpsc::error::SendError(w)) = queue.send(waiting).await {
                        let _ = w.with.0.send(Err(ClientError::Shutdown));
                    }
                });
            }
            Err(mpsc::error::TrySendError::Closed(w)) => {
                let _ = w.with.0.send(Err(ClientError::Shutdown));
            }
        }
        SendHandle(answer)
    }

    /// Sends `message` without waiting for the broker's answer and without retrying: one
    /// attempt on one queue (whose addresses are still tried in turn while none can be
    /// reached). Returns once the message is checked, its route known and the request
    /// started; its errors are bad input, an unknown topic, or a shut-down producer.
    pub async fn send_oneway(&self, message: Message) -> Result<()> {
        self.running()?;
        let prepared = self.prepare(vec![message])?;
        let route = self.session().routes.get(&prepared.topic).await?;
        let index = self.pick(&route, &prepared, &[])?;
        let queue = route.queues[index].clone();
        let this = self.clone();
        let guard = InFlight::new(&self.inner.in_flight);
        tokio::spawn(async move {
            let _guard = guard;
            if let Err(e) = this.attempt_on(&queue, &prepared).await {
                tracing::debug!(queue = %queue.key(), error = %e, "oneway send failed");
            }
        });
        Ok(())
    }

    /// Refuses new sends, waits (a bounded time) for async and oneway sends in flight,
    /// then stops the session and tells the brokers the client is gone.
    pub async fn shutdown(&self) {
        self.inner.closing.store(true, Ordering::Release);
        let per_attempt = self.session().config().request_timeout;
        let budget = per_attempt * self.options().retry.max_attempts.saturating_add(1);
        if tokio::time::timeout(budget, self.inner.in_flight.idle())
            .await
            .is_err()
        {
            tracing::warn!("shutting down with sends still in flight");
        }
        self.session().shutdown().await;
    }

    fn prepare(&self, messages: Vec<Message>) -> Result<Prepared> {
        Prepared::new(messages, self.options().max_message_size)
    }

    /// The sync send of checked messages: attempts as the retry plan allows.
    async fn send_all(&self, messages: Vec<Message>) -> Result<Vec<SendReceipt>> {
        let prepared = self.prepare(messages)?;
        let route = self.session().routes.get(&prepared.topic).await?;
        self.send_prepared(&prepared, &route).await
    }

    /// Sends `prepared` on `route` (kept by every retry), attempts as the retry plan
    /// allows: a send placed on one queue ([`select::Placement::is_fixed`]) retries only
    /// there.
    async fn send_prepared(&self, prepared: &Prepared, route: &TopicRoute) -> Result<Vec<SendReceipt>> {
        let groups = if prepared.placement.is_fixed() {
            1
        } else {
            writable_groups(route)
        };
        let mut plan = RetryPlan::new(self.options().retry.clone(), groups);
        loop {
            let queue = &route.queues[self.pick(route, prepared, plan.tried())?];
            plan.start_attempt(&queue.broker);
            match self.attempt_on(queue, prepared).await {
                Ok(stored) => return Ok(receipts(prepared, route, queue, stored, plan.attempts())),
                Err(e) => match plan.on_failure(e) {
                    Verdict::Retry { delay } => {
                        let attempts = plan.attempts();
                        tracing::debug!(queue = %queue.key(), attempts, ?delay, "retrying the send");
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                    }
                    Verdict::Fail(e) => return Err(e),
                },
            }
        }
    }

    /// The index in the route of the next attempt's queue.
    fn pick(&self, route: &TopicRoute, prepared: &Prepared, tried: &[String]) -> Result<usize> {
        let placement = &prepared.placement;
        let start = if placement.is_fixed() {
            0
        } else {
            self.next_start(&route.topic)
        };
        let now = Instant::now();
        let picked = if self.options().fault_avoidance {
            let faults = lock(&self.inner.faults);
            select::attempt_queue(&route.queues, placement, start, tried, &faults, now)
        } else {
            select::attempt_queue(&route.queues, placement, start, tried, &FaultTracker::new(), now)
        };
        picked.ok_or_else(|| ClientError::NotFound(format!("topic {} has no writable queue", route.topic)))
    }

    fn next_start(&self, topic: &str) -> usize {
        let mut next = lock(&self.inner.next_queue);
        let n = next
            .entry(topic.to_owned())
            .or_insert_with(|| rand::random::<u32>() as usize);
        *n = n.wrapping_add(1);
        *n
    }

    /// One attempt on `queue`'s group; feeds the fault tracker and the preferred address.
    async fn attempt_on(&self, queue: &MessageQueue, prepared: &Prepared) -> Result<attempt::Stored> {
        let config = self.session().config();
        let req = prepared.request(&config.namespace, queue.id);
        let addrs = self.addresses(queue);
        let started = Instant::now();
        let client_queue = prepared.client_queue();
        let timeout = config.request_timeout;
        let result = attempt::attempt(&self.session().rpc, &addrs, &req, client_queue, timeout).await;
        self.observe(queue, &addrs, started.elapsed(), &result);
        if let Err(e) = &result
            && e.suggests_route_refresh()
        {
            // The queue may have moved: later attempts and sends use the new route.
            self.session().routes.refresh_soon(&queue.topic);
        }
        result
    }

    /// The queue's addresses, the one that answered last (or the one after an address
    /// that just failed) for its group first.
    fn addresses(&self, queue: &MessageQueue) -> Vec<String> {
        let mut addrs = queue.endpoints.clone();
        if let Some(p) = lock(&self.inner.preferred).get(&queue.broker)
            && let Some(i) = addrs.iter().position(|a| a == p)
        {
            addrs[..=i].rotate_right(1);
        }
        addrs
    }

    fn observe(
        &self,
        queue: &MessageQueue,
        addrs: &[String],
        latency: Duration,
        result: &Result<attempt::Stored>,
    ) {
        let now = Instant::now();
        match result {
            Ok(stored) => {
                let answered = stored
                    .leader
                    .as_ref()
                    .filter(|l| queue.endpoints.contains(l))
                    .unwrap_or(&stored.endpoint);
                lock(&self.inner.preferred).insert(queue.broker.clone(), answered.clone());
                lock(&self.inner.faults).record_success(&queue.broker, latency, now);
            }
            Err(e) if e.is_retryable() => {
                // The first address tried failed (a timeout ends an attempt there): the next
                // attempt starts at the one after it, so that a hung leader is not asked
                // again while the group elects another (a follower relays to the new one).
                let mut preferred = lock(&self.inner.preferred);
                match next_address(addrs) {
                    Some(next) => preferred.insert(queue.broker.clone(), next),
                    None => preferred.remove(&queue.broker),
                };
                drop(preferred);
                lock(&self.inner.faults).record_failure(&queue.broker, latency, now);
            }
            Err(_) => {}
        }
    }
}

/// The address to try first after an attempt that began at `tried[0]` failed.
fn next_address(tried: &[String]) -> Option<String> {
    tried.get(1).or(tried.first()).cloned()
}

#[cfg(test)]
mod next_address_tests {
    use super::next_address;

    #[test]
    fn after_a_failure_the_next_address_goes_first() {
        let addrs = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(next_address(&addrs(&["a:1", "b:1", "c:1"])), Some("b:1".into()));
        assert_eq!(next_address(&addrs(&["a:1"])), Some("a:1".into()));
        assert_eq!(next_address(&[]), None);
    }
}

#[cfg(test)]
mod in_flight_tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::InFlight;
    use super::InFlightCount;

    #[tokio::test]
    async fn idle_waits_for_the_last_send_in_flight() {
        let count = Arc::new(InFlightCount::default());
        tokio::time::timeout(Duration::from_secs(5), count.idle())
            .await
            .expect("idle at once with nothing in flight");
        let (a, b) = (InFlight::new(&count), InFlight::new(&count));
        let waiter = tokio::spawn({
            let count = count.clone();
            async move { count.idle().await }
        });
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one send is still in flight");
        drop(b);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken when the last send ends")
            .expect("waiter task");
    }
}
