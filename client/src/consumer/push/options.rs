//! What a push consumer is configured with, and its builder.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use super::super::FilterExpression;
use super::super::ReceivedMessage;
use super::super::StartFrom;
use super::super::check_group;
use super::PushConsumer;
use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::error::Result;
use crate::message::check_topic;

/// What the listener says about one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeResult {
    /// Done: the message is acknowledged.
    Success,
    /// Not now: the message comes back after RocketMQ's retry delay for its attempt
    /// (1 s, 5 s, 10 s, 30 s, …), up to the group's maximum, then the dead-letter queue.
    RetryLater,
}

/// How messages are handed to the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeMode {
    /// Several messages at once, on a bounded pool of workers, in no particular order.
    Concurrent,
    /// One queue's messages one at a time, in queue order.
    ///
    /// On a FIFO topic the broker keeps each message group's order: a message handed back
    /// for retry ([`ConsumeResult::RetryLater`]) holds its group back — the group's later
    /// messages are not delivered before it — so a group's messages are consumed in the
    /// order they were sent. On other topics the broker keeps no such order: a message
    /// handed back for retry comes back after its retry delay and may be overtaken by
    /// later messages of its queue (within one received batch the consumer holds them
    /// back; across batches it cannot). A stopping consumer hands the messages of a batch
    /// it has not handed to the listener yet back at once.
    Ordered,
}

/// A queue this member starts or stops consuming (RocketMQ's message-queue listener).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueEvent {
    /// Polling of `topic`'s queue `id` on broker group `broker` starts (on a queue the
    /// group never consumed, once its start is committed: see [`PushOptions::start_from`]).
    Assigned {
        /// The topic.
        topic: String,
        /// The broker group.
        broker: String,
        /// The queue id within the group.
        id: i32,
    },
    /// The queue is let go: every message received from it is finished.
    Released {
        /// The topic.
        topic: String,
        /// The broker group.
        broker: String,
        /// The queue id within the group.
        id: i32,
    },
}

/// Called on every [`QueueEvent`].
pub type QueueListener = Arc<dyn Fn(QueueEvent) + Send + Sync>;

/// The listener: called once per delivery of a message.
pub type Listener =
    Arc<dyn Fn(ReceivedMessage) -> Pin<Box<dyn Future<Output = ConsumeResult> + Send>> + Send + Sync>;

/// Tuning of a push consumer (RocketMQ's defaults where it has one).
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Concurrent (default) or ordered consumption.
    pub mode: ConsumeMode,
    /// Listener calls running at once in concurrent mode. Default 20.
    pub workers: usize,
    /// Messages received and not yet finished (acknowledged or handed back), per queue: a
    /// receive asks for no more than the room left. Positive; default 1024.
    pub max_cached_messages: usize,
    /// Body bytes received and not yet finished, per queue: no receive starts while this
    /// many or more are in flight (so one receive may go over it by up to a batch).
    /// Positive; default 64 MiB.
    pub max_cached_bytes: usize,
    /// Messages asked for per receive (the broker gives at most 32). Default 32.
    pub batch_size: u32,
    /// How long a received message stays invisible to the group while it is processed.
    /// Default 30 s.
    pub invisible_duration: Duration,
    /// How long one receive waits for messages. Default 5 s (it also bounds how long a
    /// released queue takes to hand over).
    pub await_duration: Duration,
    /// How often the consumer asks the broker groups for its queues. Default 1 s.
    pub rebalance_interval: Duration,
    /// How long shutdown (or a queue's release) waits for messages being processed;
    /// listener calls still running then are given up on (their messages come back after
    /// their invisible duration). Default 30 s.
    pub shutdown_timeout: Duration,
    /// Where the group starts on a queue it never consumed (no committed offset): the
    /// first message the queue holds, its end, or the first message stored at or after a
    /// time. Default [`StartFrom::Last`], as RocketMQ (see [the module docs](super)). The
    /// start is fixed when a member is first assigned the queue, so with `Last` the
    /// messages stored before that are skipped: start the group before producing, or
    /// choose `First` or a `Timestamp`. A queue the group consumed before resumes at its
    /// committed offset whatever this says.
    pub start_from: StartFrom,
}

impl Default for PushOptions {
    fn default() -> Self {
        Self {
            mode: ConsumeMode::Concurrent,
            workers: 20,
            max_cached_messages: 1024,
            max_cached_bytes: 64 << 20,
            batch_size: 32,
            invisible_duration: Duration::from_secs(30),
            await_duration: Duration::from_secs(5),
            rebalance_interval: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(30),
            start_from: StartFrom::Last,
        }
    }
}

/// Builds a [`PushConsumer`].
pub struct PushConsumerBuilder {
    pub(super) config: Option<ClientConfig>,
    pub(super) access_points: Vec<String>,
    pub(super) group: String,
    pub(super) subscriptions: BTreeMap<String, FilterExpression>,
    pub(super) listener: Option<Listener>,
    pub(super) queue_listener: Option<QueueListener>,
    pub(super) options: PushOptions,
}

impl std::fmt::Debug for PushConsumerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushConsumerBuilder")
            .field("group", &self.group)
            .field("subscriptions", &self.subscriptions)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

consumer_builder_common!(PushConsumerBuilder);

impl PushConsumerBuilder {
    /// Consumes `topic`'s messages that match `filter`.
    pub fn subscribe(mut self, topic: impl Into<String>, filter: FilterExpression) -> Self {
        self.subscriptions.insert(topic.into(), filter);
        self
    }

    /// The listener, called once per delivery.
    pub fn listener<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(ReceivedMessage) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ConsumeResult> + Send + 'static,
    {
        self.listener = Some(Arc::new(move |m| Box::pin(f(m))));
        self
    }

    /// Told when a queue is assigned to this member and when it is let go.
    pub fn on_queue_change<F>(mut self, f: F) -> Self
    where
        F: Fn(QueueEvent) + Send + Sync + 'static,
    {
        self.queue_listener = Some(Arc::new(f));
        self
    }

    /// Concurrent (default) or ordered consumption.
    pub fn mode(mut self, mode: ConsumeMode) -> Self {
        self.options.mode = mode;
        self
    }

    /// Where the group starts on queues it never consumed ([`PushOptions::start_from`]).
    pub fn start_from(mut self, start: StartFrom) -> Self {
        self.options.start_from = start;
        self
    }

    /// All tuning at once (replacing what [`Self::mode`] and [`Self::start_from`] set
    /// before).
    pub fn options(mut self, options: PushOptions) -> Self {
        self.options = options;
        self
    }

    /// Checks everything and starts consuming.
    pub async fn start(self) -> Result<PushConsumer> {
        check_group(&self.group)?;
        if self.subscriptions.is_empty() {
            return Err(ClientError::InvalidArgument("no subscription".into()));
        }
        for topic in self.subscriptions.keys() {
            check_topic(topic)?;
        }
        let o = &self.options;
        if o.workers == 0
            || o.max_cached_messages == 0
            || o.max_cached_bytes == 0
            || o.batch_size == 0
            || o.await_duration.is_zero()
        {
            return Err(ClientError::InvalidArgument(
                "workers, max_cached_messages, max_cached_bytes, batch_size and await_duration must be positive"
                    .into(),
            ));
        }
        if !(Duration::from_secs(10)..=Duration::from_secs(12 * 3600)).contains(&o.invisible_duration) {
            return Err(ClientError::InvalidArgument(
                "invisible_duration must be between 10 s and 12 h".into(),
            ));
        }
        let listener = self
            .listener
            .clone()
            .ok_or_else(|| ClientError::InvalidArgument("no listener".into()))?;
        PushConsumer::start(self, listener).await
    }
}
