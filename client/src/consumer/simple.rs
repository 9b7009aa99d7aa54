//! The simple consumer: the application receives messages, then acknowledges each one (or
//! changes how long it stays invisible); the broker keeps the consumer group's progress.
//!
//! One [`SimpleConsumer::receive`] long-polls one queue: the topics subscribed to in turn,
//! and within a topic its readable queues in turn ([`QueueCursor`]), as RocketMQ's
//! official clients do (the broker then pops that queue first, then any other queue of
//! the topic it holds). A received message stays invisible to the group for the
//! invisible duration asked; one not acknowledged by then is delivered again.
//!
//! Calls go to the addresses of the message's broker group in turn (see
//! [`super::Failover`]): a dead leader is passed over, a follower relays to the new one.
//! A failed receive also has the topic's route refreshed in the background
//! ([`crate::route::Routes::refresh_soon`]); the next receives use it.
//! An ack whose first try may have been applied before its answer was lost, and whose
//! retry then finds the handle stale, is [`ClientError::OutcomeUnknown`]: the message was
//! acknowledged, or it had been delivered again.
//!
//! Messages whose body does not match its digest are not handed out (see
//! [`super::received`]).

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use super::FilterExpression;
use super::GroupCalls;
use super::Preferred;
use super::ReceivedMessage;
use super::check_group;
use super::ops::GroupOps;
use super::ops::receipt_handle;
use super::resolve_config;
use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::error::Result;
use crate::message::check_topic;
use crate::route::MessageQueue;
use crate::session::ClientKind;
use crate::session::Session;

/// How long a receive waits for messages by default (RocketMQ: 20 s).
pub const DEFAULT_AWAIT_DURATION: Duration = Duration::from_secs(20);
/// Shortest invisible duration of a receive (RocketMQ: 10 s).
pub const MIN_INVISIBLE_DURATION: Duration = Duration::from_secs(10);
/// Longest invisible duration (RocketMQ: 12 h).
pub const MAX_INVISIBLE_DURATION: Duration = Duration::from_secs(12 * 3600);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Builds a [`SimpleConsumer`].
#[derive(Debug, Clone)]
pub struct SimpleConsumerBuilder {
    config: Option<ClientConfig>,
    access_points: Vec<String>,
    group: String,
    subscriptions: BTreeMap<String, FilterExpression>,
    await_duration: Duration,
}

consumer_builder_common!(SimpleConsumerBuilder);

impl SimpleConsumerBuilder {
    /// Receives the messages of `topic` that `filter` wants.
    pub fn subscribe(mut self, topic: impl Into<String>, filter: FilterExpression) -> Self {
        self.subscriptions.insert(topic.into(), filter);
        self
    }

    /// How long a receive waits for messages when there are none (the long-polling
    /// timeout). Default [`DEFAULT_AWAIT_DURATION`]; brokers cut it to their maximum.
    pub fn await_duration(mut self, d: Duration) -> Self {
        self.await_duration = d;
        self
    }

    /// Checks the settings, starts the client and fetches the routes of the topics
    /// subscribed to: an unknown topic is [`ClientError::NotFound`].
    pub async fn build(self) -> Result<SimpleConsumer> {
        check_group(&self.group)?;
        for topic in self.subscriptions.keys() {
            check_topic(topic)?;
        }
        let config = resolve_config(self.config, &self.access_points)?;
        let kind = ClientKind::SimpleConsumer {
            group: self.group.clone(),
        };
        let session = Session::start(config, kind)?;
        let consumer = SimpleConsumer {
            session,
            group: self.group,
            await_duration: self.await_duration,
            subscriptions: Mutex::new(self.subscriptions),
            cursor: Mutex::new(QueueCursor::new(rand::random::<u32>() as usize)),
            preferred: Preferred::default(),
        };
        let topics: Vec<String> = lock(&consumer.subscriptions).keys().cloned().collect();
        for topic in topics {
            if let Err(e) = consumer.session.routes.get(&topic).await {
                consumer.session.shutdown().await;
                return Err(e);
            }
        }
        consumer.session.heartbeat_once().await;
        Ok(consumer)
    }
}

/// Which queue the next receive polls: the topics in turn, and within each topic its
/// readable queues in turn. Sans-IO: it picks indexes.
#[derive(Debug, Clone, Default)]
pub struct QueueCursor {
    topic: usize,
    queues: HashMap<String, usize>,
    start: usize,
}

impl QueueCursor {
    /// A cursor whose rounds begin at position `start` (consumers of one group spread
    /// over the queues by starting at random positions).
    pub fn new(start: usize) -> Self {
        Self {
            topic: start,
            queues: HashMap::new(),
            start,
        }
    }

    /// The index, among `n` subscribed topics, of the topic to poll next.
    pub fn next_topic(&mut self, n: usize) -> Option<usize> {
        let i = (n > 0).then(|| self.topic % n)?;
        self.topic = self.topic.wrapping_add(1);
        Some(i)
    }

    /// The index, among the `n` readable queues of `topic`, of the queue to poll next.
    pub fn next_queue(&mut self, topic: &str, n: usize) -> Option<usize> {
        let at = self.queues.entry(topic.to_owned()).or_insert(self.start);
        let i = (n > 0).then(|| *at % n)?;
        *at = at.wrapping_add(1);
        Some(i)
    }
}

/// A consumer that receives messages and acknowledges them one by one. Build it with
/// [`SimpleConsumer::builder`]; call [`SimpleConsumer::shutdown`] when done.
#[derive(Debug)]
pub struct SimpleConsumer {
    session: Arc<Session>,
    group: String,
    await_duration: Duration,
    subscriptions: Mutex<BTreeMap<String, FilterExpression>>,
    cursor: Mutex<QueueCursor>,
    preferred: Preferred,
}

impl SimpleConsumer {
    /// A builder with RocketMQ's defaults.
    pub fn builder() -> SimpleConsumerBuilder {
        SimpleConsumerBuilder {
            config: None,
            access_points: Vec::new(),
            group: String::new(),
            subscriptions: BTreeMap::new(),
            await_duration: DEFAULT_AWAIT_DURATION,
        }
    }

    /// The consumer group.
    pub fn consumer_group(&self) -> &str {
        &self.group
    }

    /// The topics subscribed to, with their filters.
    pub fn subscriptions(&self) -> BTreeMap<String, FilterExpression> {
        lock(&self.subscriptions).clone()
    }

    /// Subscribes to `topic` (or changes its filter). An unknown topic is
    /// [`ClientError::NotFound`].
    pub async fn subscribe(&self, topic: &str, filter: FilterExpression) -> Result<()> {
        self.check_running()?;
        check_topic(topic)?;
        self.session.routes.get(topic).await?;
        lock(&self.subscriptions).insert(topic.to_owned(), filter);
        Ok(())
    }

    /// Stops receiving from `topic`.
    pub fn unsubscribe(&self, topic: &str) {
        lock(&self.subscriptions).remove(topic);
    }

    fn check_running(&self) -> Result<()> {
        if self.session.is_stopped() {
            return Err(ClientError::Shutdown);
        }
        Ok(())
    }

    fn calls(&self) -> GroupCalls<'_> {
        GroupCalls {
            rpc: &self.session.rpc,
            preferred: &self.preferred,
        }
    }

    fn ops(&self) -> GroupOps<'_> {
        GroupOps {
            calls: self.calls(),
            group: self.session.resource(&self.group),
            namespace: &self.session.config().namespace,
            only_requested: false,
        }
    }

    /// Long-polls the next queue for up to `max_messages` messages (brokers hand out at
    /// most 32 at once), which then stay invisible to the group for `invisible_duration`
    /// (10 s to 12 h) unless acknowledged. Waits at most the await duration; an empty
    /// poll is `Ok(vec![])`.
    pub async fn receive(
        &self,
        max_messages: u32,
        invisible_duration: Duration,
    ) -> Result<Vec<ReceivedMessage>> {
        self.check_running()?;
        if max_messages == 0 {
            return Err(ClientError::InvalidArgument(
                "max_messages must be positive".into(),
            ));
        }
        if !(MIN_INVISIBLE_DURATION..=MAX_INVISIBLE_DURATION).contains(&invisible_duration) {
            return Err(ClientError::InvalidArgument(format!(
                "invisible duration {invisible_duration:?} is not between 10 s and 12 h"
            )));
        }
        let (queue, filter) = self.next_queue().await?;
        self.ops()
            .receive(
                &queue,
                &filter,
                max_messages,
                invisible_duration,
                self.await_duration,
            )
            .await
            .inspect_err(|e| {
                if e.suggests_route_refresh() {
                    self.session.routes.refresh_soon(&queue.topic);
                }
            })
    }

    /// The queue to poll next and the filter of its topic.
    async fn next_queue(&self) -> Result<(MessageQueue, FilterExpression)> {
        let subs: Vec<(String, FilterExpression)> = lock(&self.subscriptions)
            .iter()
            .map(|(t, f)| (t.clone(), f.clone()))
            .collect();
        let i = lock(&self.cursor).next_topic(subs.len()).ok_or_else(|| {
            ClientError::InvalidArgument("no subscription: subscribe to a topic first".into())
        })?;
        let (topic, filter) = subs.into_iter().nth(i).unwrap_or_default();
        let route = self.session.routes.get(&topic).await?;
        let readable: Vec<&MessageQueue> = route.queues.iter().filter(|q| q.readable()).collect();
        let q = lock(&self.cursor)
            .next_queue(&topic, readable.len())
            .and_then(|i| readable.get(i).copied())
            .ok_or_else(|| ClientError::NotFound(format!("topic {topic} has no readable queue")))?;
        Ok((q.clone(), filter))
    }

    /// Acknowledges `message`: the group is done with it and it is not delivered again.
    /// A handle that is no longer current (the message was delivered again since, or
    /// acknowledged already) is a broker error with `INVALID_RECEIPT_HANDLE`.
    pub async fn ack(&self, message: &ReceivedMessage) -> Result<()> {
        self.check_running()?;
        let mut answers = self.ops().ack(&[message]).await?;
        answers.pop().unwrap_or(Ok(()))
    }

    /// Makes `message` invisible for `d` from now (up to 12 h; zero makes it visible at
    /// once, a negative acknowledgement), and returns its new receipt handle, which is
    /// also stored in `message` for the next ack or change.
    pub async fn change_invisible_duration(
        &self,
        message: &mut ReceivedMessage,
        d: Duration,
    ) -> Result<String> {
        self.check_running()?;
        if d > MAX_INVISIBLE_DURATION {
            return Err(ClientError::InvalidArgument(format!(
                "invisible duration {d:?} is over 12 h"
            )));
        }
        let old = receipt_handle(message)?.to_owned();
        let handle = self.ops().change_invisible(message, d).await?.unwrap_or(old);
        message.receipt_handle = Some(handle.clone());
        message.invisible_duration = Some(d);
        Ok(handle)
    }

    /// Stops the client: background loops end and brokers are told it is gone. Later
    /// calls are [`ClientError::Shutdown`].
    pub async fn shutdown(&self) {
        self.session.shutdown().await;
    }
}

impl Drop for SimpleConsumer {
    fn drop(&mut self) {
        if !self.session.is_stopped()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let session = self.session.clone();
            rt.spawn(async move { session.shutdown().await });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_takes_topics_and_their_queues_in_turn() {
        let mut c = QueueCursor::new(0);
        let picks: Vec<(usize, usize)> = (0..6)
            .map(|_| {
                let t = c.next_topic(2).expect("topic");
                let q = c.next_queue(["a", "b"][t], [3, 2][t]).expect("queue");
                (t, q)
            })
            .collect();
        assert_eq!(picks, [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 0)]);
        assert_eq!(c.next_topic(0), None);
        assert_eq!(c.next_queue("a", 0), None);
        // Fewer queues than before: still within range.
        assert_eq!(c.next_queue("a", 1), Some(0));
        let mut late = QueueCursor::new(5);
        assert_eq!(late.next_topic(2), Some(1));
        assert_eq!(late.next_queue("x", 4), Some(1));
        assert_eq!(late.next_queue("x", 4), Some(2));
        let mut wrap = QueueCursor::new(usize::MAX);
        assert_eq!(wrap.next_topic(3), Some(usize::MAX % 3));
        assert_eq!(wrap.next_topic(3), Some(0));
    }
}
