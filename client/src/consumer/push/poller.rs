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

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use tokio::sync::Semaphore;
use tokio::sync::mpsc;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::backoff::retry_delay;
use super::flow::Flow;
use super::options::ConsumeMode;
use super::options::ConsumeResult;
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
/// Most acks in one call.
const ACK_BATCH: usize = 64;

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

/// What to do with a finished message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Acknowledge it.
    Ack,
    /// The listener asked for it again: back after RocketMQ's delay for its attempt.
    Retry,
    /// Not handed to the listener (or given up on): visible again at once, for whoever
    /// holds the queue next.
    HandBack,
}

impl From<ConsumeResult> for Outcome {
    fn from(r: ConsumeResult) -> Self {
        match r {
            ConsumeResult::Success => Outcome::Ack,
            ConsumeResult::RetryLater => Outcome::Retry,
        }
    }
}

/// A finished message and what to do with it.
struct Finished {
    message: ReceivedMessage,
    outcome: Outcome,
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
enum End {
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
fn stopping(stop: &watch::Receiver<Option<Instant>>) -> bool {
    stop.borrow().is_some() || stop.has_changed().is_err()
}

/// Resolves once the poller is asked to stop (or its handle is gone).
async fn stopped(stop: &mut watch::Receiver<Option<Instant>>) {
    let _ = stop.wait_for(Option::is_some).await;
}

/// Resolves `grace` after the poller was asked to stop: how long a stopping poller waits
/// for a listener call (or a worker to call it) before it gives up on the message.
async fn given_up(stop: &mut watch::Receiver<Option<Instant>>, grace: Duration) {
    let asked = match stop.wait_for(Option::is_some).await {
        Ok(at) => at.unwrap_or_else(Instant::now),
        Err(_) => Instant::now(),
    };
    tokio::time::sleep_until((asked + grace).into()).await;
}

/// Resolves once `valid` has ended (it may be extended meanwhile).
async fn expiry(valid: &Validity) {
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
    let mut acker = AbortOnDrop(tokio::spawn(
        acker(shared.clone(), flow.clone(), rx).in_current_span(),
    ));
    let mut listeners = JoinSet::new();
    tracing::info!("queue assigned; polling");
    shared.tell(QueueEvent::Assigned {
        topic: queue.topic.clone(),
        broker: queue.broker.clone(),
        id: queue.id,
    });
    let mut failures = 0u32;
    let end = loop {
        let n = tokio::select! {
            n = flow.wait_for_room(o.batch_size as usize) => n,
            () = stopped(&mut stop) => break End::Stopped,
        };
        if stopping(&stop) {
            break End::Stopped;
        }
        // The receive ends by the deadline: nothing is popped after it.
        let Some(left) = valid.left(Instant::now()) else {
            break End::Expired;
        };
        let batch = u32::try_from(n).unwrap_or(o.batch_size);
        match shared
            .ops()
            .receive(
                &queue,
                &filter,
                batch,
                o.invisible_duration,
                o.await_duration.min(left),
            )
            .await
        {
            Ok(messages) => {
                failures = 0;
                let bytes = messages.iter().map(|m| m.body.len()).sum();
                flow.taken(messages.len(), bytes);
                if valid.expired(Instant::now()) {
                    hand_back(messages, &tx).await;
                    break End::Expired;
                }
                let ctx = Dispatch {
                    shared: &shared,
                    tx: &tx,
                    valid: &valid,
                };
                if dispatch(&ctx, messages, &mut stop, &mut listeners).await == Some(End::Expired) {
                    break End::Expired;
                }
                while listeners.try_join_next().is_some() {}
            }
            Err(e) => {
                failures += 1;
                log_failure("receive", &e, failures);
                after_failure(&shared, &mut queue, &e);
                tokio::select! {
                    () = tokio::time::sleep(pause(failures)) => {}
                    () = stopped(&mut stop) => break End::Stopped,
                }
            }
        }
    };
    if end == End::Expired {
        tracing::warn!(
            ttl = ?super::rebalance::ANSWER_TTL,
            "the queue's assignment was not confirmed in time; stopped receiving from it before \
             the broker's lease may run out (what is in flight is finished)"
        );
    }
    let until = tokio::time::Instant::now() + o.shutdown_timeout;
    if !drain(&flow, until).await {
        // Stuck listener calls: given up on (their messages come back after their
        // invisible duration); this also ends their hold on the ack channel.
        listeners.abort_all();
    }
    drop(tx);
    // The acks of what finished get at least the time of one ack call.
    let acks_until = until.max(tokio::time::Instant::now() + shared.session.config().request_timeout * 2);
    if tokio::time::timeout_at(acks_until, &mut acker.0).await.is_err() {
        tracing::warn!("acknowledgements not done within the shutdown timeout; the messages may come again");
    }
    drop(acker);
    drop(listeners);
    tracing::info!("queue released");
    shared.tell(QueueEvent::Released {
        topic: queue.topic.clone(),
        broker: queue.broker.clone(),
        id: queue.id,
    });
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

/// What handing a batch to the listener needs.
struct Dispatch<'a> {
    shared: &'a Arc<Shared>,
    tx: &'a mpsc::Sender<Finished>,
    valid: &'a Validity,
}

/// Hands `messages` back at once, unprocessed.
async fn hand_back(messages: impl IntoIterator<Item = ReceivedMessage>, tx: &mpsc::Sender<Finished>) {
    for message in messages {
        let _ = tx
            .send(Finished {
                message,
                outcome: Outcome::HandBack,
            })
            .await;
    }
}

/// Hands `messages` to the listener as the mode says. Once the queue's assignment runs
/// out (both modes), or in ordered mode once the poller is asked to stop, the messages
/// not yet handed to the listener are handed back at once; so are those still waiting, a
/// shutdown timeout after the stop, for a worker or for the listener call before them.
/// Some(why) when it stopped early.
async fn dispatch(
    ctx: &Dispatch<'_>,
    messages: Vec<ReceivedMessage>,
    stop: &mut watch::Receiver<Option<Instant>>,
    listeners: &mut JoinSet<()>,
) -> Option<End> {
    let shared = ctx.shared;
    let grace = shared.options.shutdown_timeout;
    let mut rest = messages.into_iter();
    match shared.options.mode {
        ConsumeMode::Concurrent => {
            while let Some(message) = rest.next() {
                let permit = if ctx.valid.expired(Instant::now()) {
                    None
                } else {
                    tokio::select! {
                        biased;
                        p = shared.workers.clone().acquire_owned() => p.ok(),
                        () = expiry(ctx.valid) => None,
                        () = given_up(stop, grace) => None,
                    }
                };
                let Some(permit) = permit else {
                    let why = if ctx.valid.expired(Instant::now()) {
                        End::Expired
                    } else {
                        End::Stopped
                    };
                    hand_back(std::iter::once(message).chain(rest), ctx.tx).await;
                    return Some(why);
                };
                let (listener, tx) = (shared.listener.clone(), ctx.tx.clone());
                listeners.spawn(
                    async move {
                        let result = listener(message.clone()).await;
                        drop(permit);
                        let outcome = result.into();
                        let _ = tx.send(Finished { message, outcome }).await;
                    }
                    .in_current_span(),
                );
            }
            None
        }
        ConsumeMode::Ordered => {
            // A message group (or, without groups, the queue) whose message asked to be
            // retried stops here: its later messages must not overtake it.
            let mut held: HashSet<Option<String>> = HashSet::new();
            while let Some(message) = rest.next() {
                let why = if ctx.valid.expired(Instant::now()) {
                    Some(End::Expired)
                } else {
                    stopping(stop).then_some(End::Stopped)
                };
                if let Some(why) = why {
                    hand_back(std::iter::once(message).chain(rest), ctx.tx).await;
                    return Some(why);
                }
                let key = message.message_group.clone();
                let result = if held.contains(&key) {
                    ConsumeResult::RetryLater
                } else {
                    tokio::select! {
                        r = (shared.listener)(message.clone()) => r,
                        () = given_up(stop, grace) => {
                            tracing::warn!(message_id = %message.message_id,
                                "the listener did not finish within the shutdown timeout; given up on");
                            hand_back(std::iter::once(message).chain(rest), ctx.tx).await;
                            return Some(End::Stopped);
                        }
                    }
                };
                if result == ConsumeResult::RetryLater {
                    held.insert(key);
                }
                let _ = ctx
                    .tx
                    .send(Finished {
                        message,
                        outcome: result.into(),
                    })
                    .await;
            }
            None
        }
    }
}

/// Acknowledges finished messages in batches, hands retried ones back with their delay,
/// and frees their room in the flow.
async fn acker(shared: Arc<Shared>, flow: Arc<Flow>, mut rx: mpsc::Receiver<Finished>) {
    let mut batch = Vec::with_capacity(ACK_BATCH);
    while rx.recv_many(&mut batch, ACK_BATCH).await > 0 {
        let (done, retry): (Vec<Finished>, Vec<Finished>) =
            batch.drain(..).partition(|f| f.outcome == Outcome::Ack);
        let ops = shared.ops();
        if !done.is_empty() {
            let refs: Vec<&ReceivedMessage> = done.iter().map(|f| &f.message).collect();
            match ops.ack(&refs).await {
                Ok(results) => {
                    for (r, f) in results.iter().zip(&done) {
                        if let Err(e) = r {
                            tracing::warn!(message_id = %f.message.message_id, error = %e, "ack refused; the message may come again");
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, count = done.len(), "ack failed; the messages may come again")
                }
            }
        }
        for f in &retry {
            let delay = match f.outcome {
                Outcome::HandBack => Duration::ZERO,
                _ => retry_delay(u32::try_from(f.message.delivery_attempt).unwrap_or(1)),
            };
            if let Err(e) = ops.change_invisible(&f.message, delay).await {
                tracing::warn!(message_id = %f.message.message_id, error = %e, "retry-later not recorded; the message comes back after its invisible time");
            }
        }
        for f in done.iter().chain(&retry) {
            flow.done(f.message.body.len());
        }
    }
}

#[cfg(test)]
#[path = "poller_tests.rs"]
mod tests;
