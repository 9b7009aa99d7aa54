//! One assigned queue's loop: first, on a queue the group never consumed, commit the start
//! [`PushOptions::start_from`] names (see [`super`]); then receive (long polling, within
//! flow control), hand the messages to the listener (a bounded worker pool, or one at a
//! time in ordered mode), and acknowledge the finished ones in batches. Stopping lets the
//! current receive end, finishes every message in flight, then ends: only then is the
//! queue released. (In ordered mode the messages of a batch not yet handed to the
//! listener are handed back at once instead: they would wait behind each other.)
//!
//! A poller consumes only while its [`Validity`] lasts — until the send time of the last
//! question whose answer confirmed the queue + [`super::rebalance::ANSWER_TTL`] (10 s,
//! shorter than the broker's 15 s lease). Its receives end by then; past it, it hands
//! back what it has not handed to the listener yet, finishes what is in flight and ends,
//! as if it had lost the queue.
//!
//! Everything a stopping poller waits for is bounded by the shutdown timeout: a listener
//! call (or a worker for it) not come by then is given up on, and so is an ack left then
//! (after at least one ack call's time); those messages come back after their invisible
//! duration.

use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use tokio::sync::Semaphore;
use tokio::sync::mpsc;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::acker::acker;
use super::dispatch::Dispatch;
use super::dispatch::Finished;
use super::dispatch::dispatch;
use super::dispatch::hand_back;
use super::flow::Flow;
use super::options::Listener;
use super::options::PushOptions;
use super::options::QueueEvent;
use super::options::QueueListener;
use super::rebalance::Validity;
use crate::consumer::FilterExpression;
use crate::consumer::Preferred;
use crate::consumer::ReceivedMessage;
use crate::consumer::ops::GroupOps;
use crate::error::ClientError;
use crate::error::Result;
use crate::route::MessageQueue;
use crate::session::Session;

/// Finished messages waiting for their ack.
const ACK_QUEUE: usize = 1024;

/// What every poller of one consumer shares.
pub(super) struct Shared {
    pub session: Arc<Session>,
    pub group: String,
    pub preferred: Preferred,
    pub listener: Listener,
    pub queue_listener: Option<QueueListener>,
    pub options: PushOptions,
    pub workers: Arc<Semaphore>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn tell(&self, event: QueueEvent) {
        if let Some(l) = &self.queue_listener {
            l(event);
        }
    }

    pub fn ops(&self) -> GroupOps<'_> {
        GroupOps {
            calls: crate::consumer::GroupCalls {
                rpc: &self.session.rpc,
                preferred: &self.preferred,
            },
            group: self.session.resource(&self.group),
            namespace: &self.session.config().namespace,
            only_requested: true,
        }
    }
}

/// A running poller.
#[derive(Debug)]
pub(super) struct Poller {
    /// When it was asked to stop (None while it runs on).
    stop: watch::Sender<Option<Instant>>,
    valid: Arc<Validity>,
    task: JoinHandle<()>,
}

impl Poller {
    /// Asks it to stop (it finishes what it has first).
    pub fn stop(&self) {
        self.stop.send_if_modified(|s| {
            let first = s.is_none();
            if first {
                *s = Some(Instant::now());
            }
            first
        });
    }

    pub fn is_stopping(&self) -> bool {
        self.stop.borrow().is_some()
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// A later answer confirmed the queue: it may be consumed until `until`.
    pub fn extend(&self, until: Instant) {
        self.valid.extend(until);
    }

    /// Until when it may consume its queue.
    #[cfg(test)]
    pub fn valid_until(&self) -> Instant {
        self.valid.until()
    }

    /// Ends it at once, whatever it is doing (its listener calls and acks too).
    pub fn abort(&self) {
        self.task.abort();
    }

    /// Waits for it to end.
    pub async fn join(self) {
        let _ = self.task.await;
    }
}

/// A task that is aborted when dropped (the acker: a poller aborted by shutdown takes it
/// along).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why the receive loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// Asked to stop (queue lost, or shutdown).
    Stopped,
    /// The assignment was not confirmed in time.
    Expired,
}

/// Starts polling `queue`, which an answer lets it consume until `valid_until`.
pub(super) fn spawn(
    shared: Arc<Shared>,
    queue: MessageQueue,
    filter: FilterExpression,
    valid_until: Instant,
) -> Poller {
    let (stop, stopped) = watch::channel(None);
    let valid = Arc::new(Validity::new(valid_until));
    let span = tracing::info_span!("poller", queue = %queue.key(), topic = %queue.topic);
    let task = tokio::spawn(run(shared, queue, filter, stopped, valid.clone()).instrument(span));
    Poller { stop, valid, task }
}

/// Whether the poller was asked to stop (or its handle is gone).
pub(super) fn stopping(stop: &watch::Receiver<Option<Instant>>) -> bool {
    stop.borrow().is_some() || stop.has_changed().is_err()
}

/// Resolves once the poller is asked to stop (or its handle is gone).
async fn stopped(stop: &mut watch::Receiver<Option<Instant>>) {
    let _ = stop.wait_for(Option::is_some).await;
}

/// Resolves `grace` after the poller was asked to stop: how long a stopping poller waits
/// for a listener call (or a worker to call it) before it gives up on the message.
pub(super) async fn given_up(stop: &mut watch::Receiver<Option<Instant>>, grace: Duration) {
    let asked = match stop.wait_for(Option::is_some).await {
        Ok(at) => at.unwrap_or_else(Instant::now),
        Err(_) => Instant::now(),
    };
    tokio::time::sleep_until((asked + grace).into()).await;
}

/// Resolves once `valid` has ended (it may be extended meanwhile).
pub(super) async fn expiry(valid: &Validity) {
    loop {
        tokio::time::sleep_until(valid.until().into()).await;
        if valid.expired(Instant::now()) {
            return;
        }
    }
}

async fn run(
    shared: Arc<Shared>,
    mut queue: MessageQueue,
    filter: FilterExpression,
    mut stop: watch::Receiver<Option<Instant>>,
    valid: Arc<Validity>,
) {
    if !start_here(&shared, &mut queue, &mut stop, &valid).await {
        tracing::info!("queue let go before polling it");
        return;
    }
    let o = &shared.options;
    let flow = Arc::new(Flow::new(o.max_cached_messages, o.max_cached_bytes));
    let (tx, rx) = mpsc::channel(ACK_QUEUE);
    let acker = AbortOnDrop(tokio::spawn(
        acker(shared.clone(), flow.clone(), rx).in_current_span(),
    ));
    let mut listeners = JoinSet::new();
    tracing::info!("queue assigned; polling");
    shared.tell(QueueEvent::Assigned {
        topic: queue.topic.clone(),
        broker: queue.broker.clone(),
        id: queue.id,
    });
    let mut polling = Polling {
        shared: &shared,
        queue: &mut queue,
        filter: &filter,
        stop: &mut stop,
        valid: &valid,
        flow: &flow,
        tx: &tx,
        listeners: &mut listeners,
    };
    let end = polling.receive_loop().await;
    if end == End::Expired {
        tracing::warn!(
            ttl = ?super::rebalance::ANSWER_TTL,
            "the queue's assignment was not confirmed in time; stopped receiving from it before \
             the broker's lease may run out (what is in flight is finished)"
        );
    }
    wind_down(&shared, &flow, tx, acker, listeners).await;
    tracing::info!("queue released");
    shared.tell(QueueEvent::Released {
        topic: queue.topic.clone(),
        broker: queue.broker.clone(),
        id: queue.id,
    });
}

/// What the receive loop of one queue works with.
struct Polling<'a> {
    shared: &'a Arc<Shared>,
    queue: &'a mut MessageQueue,
    filter: &'a FilterExpression,
    stop: &'a mut watch::Receiver<Option<Instant>>,
    valid: &'a Validity,
    flow: &'a Flow,
    tx: &'a mpsc::Sender<Finished>,
    listeners: &'a mut JoinSet<()>,
}

impl Polling<'_> {
    /// Receives within flow control and hands the batches on, until asked to stop or
    /// the assignment runs out; failed receives are retried after a growing pause.
    async fn receive_loop(&mut self) -> End {
        let o = &self.shared.options;
        let mut failures = 0u32;
        loop {
            let n = tokio::select! {
                n = self.flow.wait_for_room(o.batch_size as usize) => n,
                () = stopped(self.stop) => return End::Stopped,
            };
            if stopping(self.stop) {
                return End::Stopped;
            }
            // The receive ends by the deadline: nothing is popped after it.
            let Some(left) = self.valid.left(Instant::now()) else {
                return End::Expired;
            };
            let batch = u32::try_from(n).unwrap_or(o.batch_size);
            let wait = o.await_duration.min(left);
            let received = self
                .shared
                .ops()
                .receive(self.queue, self.filter, batch, o.invisible_duration, wait)
                .await;
            match received {
                Ok(messages) => {
                    failures = 0;
                    if let Some(end) = self.hand_on(messages).await {
                        return end;
                    }
                }
                Err(e) => {
                    failures += 1;
                    log_failure("receive", &e, failures);
                    after_failure(self.shared, self.queue, &e);
                    tokio::select! {
                        () = tokio::time::sleep(pause(failures)) => {}
                        () = stopped(self.stop) => return End::Stopped,
                    }
                }
            }
        }
    }

    /// Takes a received batch into the flow and hands it to the listener; Some(why)
    /// when the loop is to end.
    async fn hand_on(&mut self, messages: Vec<ReceivedMessage>) -> Option<End> {
        let bytes = messages.iter().map(|m| m.body.len()).sum();
        self.flow.taken(messages.len(), bytes);
        if self.valid.expired(Instant::now()) {
            hand_back(messages, self.tx).await;
            return Some(End::Expired);
        }
        let ctx = Dispatch {
            shared: self.shared,
            tx: self.tx,
            valid: self.valid,
        };
        if dispatch(&ctx, messages, self.stop, self.listeners).await == Some(End::Expired) {
            return Some(End::Expired);
        }
        while self.listeners.try_join_next().is_some() {}
        None
    }
}

/// After the loop: waits for what is in flight (up to the shutdown timeout), then for
/// the acks of what finished (at least one ack call's time).
async fn wind_down(
    shared: &Shared,
    flow: &Flow,
    tx: mpsc::Sender<Finished>,
    mut acker: AbortOnDrop,
    mut listeners: JoinSet<()>,
) {
    let until = tokio::time::Instant::now() + shared.options.shutdown_timeout;
    if !drain(flow, until).await {
        // Stuck listener calls: given up on (their messages come back after their
        // invisible duration); this also ends their hold on the ack channel.
        listeners.abort_all();
    }
    drop(tx);
    let acks_until = until.max(tokio::time::Instant::now() + shared.session.config().request_timeout * 2);
    if tokio::time::timeout_at(acks_until, &mut acker.0).await.is_err() {
        tracing::warn!("acknowledgements not done within the shutdown timeout; the messages may come again");
    }
}

/// The pause after `failures` failed calls in a row: 200 ms, doubling, at most 2 s.
fn pause(failures: u32) -> Duration {
    Duration::from_millis(100u64 << failures.min(5)).min(Duration::from_secs(2))
}

fn log_failure(what: &str, e: &ClientError, failures: u32) {
    if failures == 1 || failures.is_multiple_of(50) {
        tracing::warn!(error = %e, failures, "{what} failed; retrying");
    } else {
        tracing::debug!(error = %e, failures, "{what} failed; retrying");
    }
}

/// After a failed call on `queue`: has the topic's route refreshed soon, and takes the
/// queue's current addresses from the cached route (refreshed by an earlier failure).
fn after_failure(shared: &Shared, queue: &mut MessageQueue, e: &ClientError) {
    if !e.suggests_route_refresh() {
        return;
    }
    let routes = &shared.session.routes;
    routes.refresh_soon(&queue.topic);
    if let Some(route) = routes.cached(&queue.topic)
        && let Some(now) = route
            .queues
            .iter()
            .find(|q| q.broker == queue.broker && q.id == queue.id)
        && now.endpoints != queue.endpoints
    {
        tracing::info!(endpoints = ?now.endpoints, "the queue's addresses changed");
        *queue = now.clone();
    }
}

/// Before the first receive: if the group has no committed offset on `queue` (it never
/// consumed it), commits the start the options name. Tries until it is done (true), or
/// the poller is stopped or its assignment not confirmed in time (false).
async fn start_here(
    shared: &Shared,
    queue: &mut MessageQueue,
    stop: &mut watch::Receiver<Option<Instant>>,
    valid: &Validity,
) -> bool {
    let mut failures = 0u32;
    loop {
        if stopping(stop) {
            return false;
        }
        if valid.expired(Instant::now()) {
            tracing::warn!("the queue's assignment was not confirmed in time; not starting on it");
            return false;
        }
        let result = tokio::select! {
            r = commit_start(shared, queue) => r,
            () = stopped(stop) => return false,
        };
        let Err(e) = result else {
            return true;
        };
        failures += 1;
        log_failure("finding where to start", &e, failures);
        after_failure(shared, queue, &e);
        tokio::select! {
            () = tokio::time::sleep(pause(failures)) => {}
            () = stopped(stop) => return false,
        }
    }
}

/// Commits where the group starts on `queue` unless it has a committed offset there.
/// Nothing else pops the queue for the group meanwhile (this member holds its lease), and
/// a group that popped it has a committed offset, which is left as it is.
async fn commit_start(shared: &Shared, queue: &MessageQueue) -> Result<()> {
    let ops = shared.ops();
    let from = shared.options.start_from;
    let (committed, start) = ops.start_position(queue, from).await?;
    if committed.is_none() {
        ops.commit_offset(queue, start).await?;
        tracing::info!(
            offset = start,
            ?from,
            "the group never consumed the queue; it starts here"
        );
    }
    Ok(())
}

/// Waits until every received message is finished (true) or `until` (false).
async fn drain(flow: &Flow, until: tokio::time::Instant) -> bool {
    while flow.inflight() > 0 && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if flow.inflight() > 0 {
        tracing::warn!(
            inflight = flow.inflight(),
            "released with messages unfinished; they will be delivered again"
        );
        return false;
    }
    true
}
