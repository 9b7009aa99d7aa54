//! One assigned queue's loop: first, on a queue the group never consumed, commit the start
//! [`PushOptions::start_from`] names (see [`super`]); then receive (long polling, within
//! flow control), hand the messages to the listener (a bounded worker pool, or one at a
//! time in ordered mode), and acknowledge the finished ones in batches. Stopping lets the
//! current receive end, finishes every message in flight, then ends: only then is the
//! queue released.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::sync::mpsc;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::backoff::retry_delay;
use super::flow::Flow;
use super::options::ConsumeMode;
use super::options::ConsumeResult;
use super::options::Listener;
use super::options::PushOptions;
use super::options::QueueEvent;
use super::options::QueueListener;
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
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Poller {
    /// Asks it to stop (it finishes what it has first).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    pub fn is_stopping(&self) -> bool {
        *self.stop.borrow()
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits for it to end.
    pub async fn join(self) {
        let _ = self.task.await;
    }
}

/// A finished message and what to do with it.
struct Finished {
    message: ReceivedMessage,
    result: ConsumeResult,
}

/// Starts polling `queue`.
pub(super) fn spawn(shared: Arc<Shared>, queue: MessageQueue, filter: FilterExpression) -> Poller {
    let (stop, stopped) = watch::channel(false);
    let span = tracing::info_span!("poller", queue = %queue.key(), topic = %queue.topic);
    let task = tokio::spawn(run(shared, queue, filter, stopped).instrument(span));
    Poller { stop, task }
}

async fn run(
    shared: Arc<Shared>,
    mut queue: MessageQueue,
    filter: FilterExpression,
    mut stop: watch::Receiver<bool>,
) {
    if !start_here(&shared, &mut queue, &mut stop).await {
        tracing::info!("queue let go before polling it");
        return;
    }
    let o = &shared.options;
    let flow = Arc::new(Flow::new(o.max_cached_messages, o.max_cached_bytes));
    let (tx, rx) = mpsc::channel(ACK_QUEUE);
    let acker = tokio::spawn(acker(shared.clone(), flow.clone(), rx).in_current_span());
    tracing::info!("queue assigned; polling");
    shared.tell(QueueEvent::Assigned {
        topic: queue.topic.clone(),
        broker: queue.broker.clone(),
        id: queue.id,
    });
    let mut failures = 0u32;
    loop {
        let n = tokio::select! {
            n = flow.wait_for_room(o.batch_size as usize) => n,
            _ = stop.wait_for(|s| *s) => break,
        };
        if *stop.borrow() {
            break;
        }
        let batch = u32::try_from(n).unwrap_or(o.batch_size);
        match shared
            .ops()
            .receive(&queue, &filter, batch, o.invisible_duration, o.await_duration)
            .await
        {
            Ok(messages) => {
                failures = 0;
                let bytes = messages.iter().map(|m| m.body.len()).sum();
                flow.taken(messages.len(), bytes);
                dispatch(&shared, messages, &tx).await;
            }
            Err(e) => {
                failures += 1;
                log_failure("receive", &e, failures);
                after_failure(&shared, &mut queue, &e);
                tokio::select! {
                    _ = tokio::time::sleep(pause(failures)) => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
        }
    }
    drain(&flow, o.shutdown_timeout).await;
    drop(tx);
    let _ = acker.await;
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
/// consumed it), commits the start the options name. Tries until it is done (true) or
/// the poller is stopped (false).
async fn start_here(shared: &Shared, queue: &mut MessageQueue, stop: &mut watch::Receiver<bool>) -> bool {
    let mut failures = 0u32;
    loop {
        if *stop.borrow() {
            return false;
        }
        let result = tokio::select! {
            r = commit_start(shared, queue) => r,
            _ = stop.wait_for(|s| *s) => return false,
        };
        let Err(e) = result else {
            return true;
        };
        failures += 1;
        log_failure("finding where to start", &e, failures);
        after_failure(shared, queue, &e);
        tokio::select! {
            _ = tokio::time::sleep(pause(failures)) => {}
            _ = stop.wait_for(|s| *s) => return false,
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

/// Waits until every received message is finished (or `timeout`).
async fn drain(flow: &Flow, timeout: Duration) {
    let until = tokio::time::Instant::now() + timeout;
    while flow.inflight() > 0 && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if flow.inflight() > 0 {
        tracing::warn!(
            inflight = flow.inflight(),
            "released with messages unfinished; they will be delivered again"
        );
    }
}

/// Hands `messages` to the listener as the mode says.
async fn dispatch(shared: &Arc<Shared>, messages: Vec<ReceivedMessage>, tx: &mpsc::Sender<Finished>) {
    match shared.options.mode {
        ConsumeMode::Concurrent => {
            for message in messages {
                let Ok(permit) = shared.workers.clone().acquire_owned().await else {
                    return;
                };
                let (listener, tx) = (shared.listener.clone(), tx.clone());
                tokio::spawn(async move {
                    let result = listener(message.clone()).await;
                    drop(permit);
                    let _ = tx.send(Finished { message, result }).await;
                });
            }
        }
        ConsumeMode::Ordered => {
            // A message group (or, without groups, the queue) whose message asked to be
            // retried stops here: its later messages must not overtake it.
            let mut held: HashSet<Option<String>> = HashSet::new();
            for message in messages {
                let key = message.message_group.clone();
                let result = if held.contains(&key) {
                    ConsumeResult::RetryLater
                } else {
                    (shared.listener)(message.clone()).await
                };
                if result == ConsumeResult::RetryLater {
                    held.insert(key);
                }
                let _ = tx.send(Finished { message, result }).await;
            }
        }
    }
}

/// Acknowledges finished messages in batches, hands retried ones back with their delay,
/// and frees their room in the flow.
async fn acker(shared: Arc<Shared>, flow: Arc<Flow>, mut rx: mpsc::Receiver<Finished>) {
    let mut batch = Vec::with_capacity(ACK_BATCH);
    while rx.recv_many(&mut batch, ACK_BATCH).await > 0 {
        let (done, retry): (Vec<Finished>, Vec<Finished>) =
            batch.drain(..).partition(|f| f.result == ConsumeResult::Success);
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
            let delay = retry_delay(u32::try_from(f.message.delivery_attempt).unwrap_or(1));
            if let Err(e) = ops.change_invisible(&f.message, delay).await {
                tracing::warn!(message_id = %f.message.message_id, error = %e, "retry-later not recorded; the message comes back after its invisible time");
            }
        }
        for f in done.iter().chain(&retry) {
            flow.done(f.message.body.len());
        }
    }
}
