//! The pull consumer: the application reads queues from offsets it moves itself, and
//! commits them to the broker group so that a consumer of the same group started later
//! resumes there.
//!
//! - [`PullConsumer::subscribe`] takes every readable queue of a topic,
//!   [`PullConsumer::assign`] exactly the queues given. Nothing is rebalanced: two pull
//!   consumers of one group that subscribe to one topic both read all of it. Sharing a
//!   topic's queues among a group's consumers (clustering) is the push consumer's job.
//! - A queue starts at the group's committed offset; a queue the group never committed
//!   starts where [`StartFrom`] says: the first message still held, the end, or the first
//!   message stored at or after a time (brokers answer QueryOffset by timestamp with a
//!   binary search of the queue).
//! - [`PullConsumer::poll`] long-polls every assigned queue at once (PullMessage, which
//!   any member of the broker group answers) and returns what the first queue(s) with
//!   messages gave, each queue's messages in offset order; it moves the positions past
//!   them. The other queues' pulls stay in flight and the next poll takes their answers
//!   (`pulls_in_flight.rs`). [`PullConsumer::commit`] writes the positions (UpdateOffset), and so does
//!   [`PullConsumer::shutdown`] (best effort, within the request timeout).
//!
//! A position is never moved backwards: an offset beyond a queue's end (a seek too far, or
//! a follower that is behind) stays until the queue reaches it.
//!
//! A message whose body does not match its digest is handed out with
//! [`ReceivedMessage::corrupted`] set (see [`super::received`]).

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::SystemTime;

use futures_util::future::join_all;
use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::pull_message_response::Content;
use tokio::time::Instant;

use super::FilterExpression;
use super::GroupCalls;
use super::Preferred;
use super::ReceivedMessage;
use super::assignment::Assignment;
use super::assignment::Pulled;
use super::assignment::queue_key;
use super::check_group;
use super::check_status;
use super::duration;
use super::leader_hint;
use super::ops::GroupOps;
use super::pulls_in_flight::PullsInFlight;
use super::resolve_config;
use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::error::Result;
use crate::message::check_topic;
use crate::route::MessageQueue;
use crate::rpc::call_error;
use crate::session::ClientKind;
use crate::session::Session;

/// Messages one pull of one queue asks for by default.
pub const DEFAULT_BATCH_SIZE: u32 = 32;
/// Most messages one pull may ask for (the broker's limit).
pub const MAX_BATCH_SIZE: u32 = 1024;

/// Where a consumer group starts on a queue it never consumed (no committed offset): for
/// the pull consumer ([`PullConsumerBuilder::start_from`]) and the push consumer
/// ([`super::push::PushOptions::start_from`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartFrom {
    /// The first message the queue still holds.
    First,
    /// The queue's end when the group first reads it: only messages stored from then on
    /// (RocketMQ's default, `CONSUME_FROM_LAST_OFFSET`).
    #[default]
    Last,
    /// The first message stored at or after this time (the end if there is none).
    Timestamp(SystemTime),
}

/// Builds a [`PullConsumer`].
#[derive(Debug, Clone)]
pub struct PullConsumerBuilder {
    config: Option<ClientConfig>,
    access_points: Vec<String>,
    group: String,
    start_from: StartFrom,
    batch_size: u32,
}

consumer_builder_common!(PullConsumerBuilder);

impl PullConsumerBuilder {
    /// Where queues start that the group never committed. Default [`StartFrom::Last`].
    pub fn start_from(mut self, start: StartFrom) -> Self {
        self.start_from = start;
        self
    }

    /// Most messages one pull of one queue returns (1..=1024). Default 32.
    pub fn batch_size(mut self, n: u32) -> Self {
        self.batch_size = n;
        self
    }

    /// Checks the settings and starts the client.
    pub async fn build(self) -> Result<PullConsumer> {
        check_group(&self.group)?;
        if !(1..=MAX_BATCH_SIZE).contains(&self.batch_size) {
            return Err(ClientError::InvalidArgument(format!(
                "batch size {} is not in 1..={MAX_BATCH_SIZE}",
                self.batch_size
            )));
        }
        let config = resolve_config(self.config, &self.access_points)?;
        let kind = ClientKind::PullConsumer {
            group: self.group.clone(),
        };
        let core = Arc::new(Core {
            session: Session::start(config, kind)?,
            group: self.group,
            batch_size: self.batch_size as i32,
            start_from: self.start_from,
            preferred: Preferred::default(),
            last_answer: AtomicUsize::new(0),
        });
        Ok(PullConsumer {
            core,
            assignment: Assignment::default(),
            pulls: PullsInFlight::default(),
        })
    }
}

/// A consumer that reads queues from offsets it keeps and commits. Build it with
/// [`PullConsumer::builder`]; call [`PullConsumer::shutdown`] when done.
#[derive(Debug)]
pub struct PullConsumer {
    core: Arc<Core>,
    assignment: Assignment,
    /// Pulls started by earlier polls and not yet taken.
    pulls: PullsInFlight,
}

impl PullConsumer {
    /// A builder with the defaults.
    pub fn builder() -> PullConsumerBuilder {
        PullConsumerBuilder {
            config: None,
            access_points: Vec::new(),
            group: String::new(),
            start_from: StartFrom::default(),
            batch_size: DEFAULT_BATCH_SIZE,
        }
    }

    /// The consumer group.
    pub fn consumer_group(&self) -> &str {
        &self.core.group
    }

    /// The readable queues of `topic`; an unknown topic is [`ClientError::NotFound`].
    pub async fn fetch_queues(&self, topic: &str) -> Result<Vec<MessageQueue>> {
        self.core.check_running()?;
        check_topic(topic)?;
        let route = self.core.session.routes.get(topic).await?;
        Ok(route.queues.iter().filter(|q| q.readable()).cloned().collect())
    }

    /// Reads every readable queue of `topic` with `filter` (added to what is assigned;
    /// subscribing again replaces the topic's queues and filter, keeping positions).
    pub async fn subscribe(&mut self, topic: &str, filter: FilterExpression) -> Result<()> {
        let queues = self.fetch_queues(topic).await?;
        self.assignment.set_topic(topic, queues, &filter);
        Ok(())
    }

    /// Stops reading `topic`.
    pub fn unsubscribe(&mut self, topic: &str) {
        self.assignment.remove_topic(topic);
    }

    /// Reads exactly `queues` (every message), replacing the whole assignment. Positions
    /// of queues assigned before are kept.
    pub fn assign(&mut self, queues: Vec<MessageQueue>) {
        self.assignment.replace(queues, &FilterExpression::All);
    }

    /// The queues assigned.
    pub fn assignment(&self) -> Vec<MessageQueue> {
        self.assignment.queues()
    }

    /// The offset the next poll reads `queue` from; None before it is known (the first
    /// poll finds it) or for a queue not assigned.
    pub fn position(&self, queue: &MessageQueue) -> Option<i64> {
        self.assignment.position(queue)
    }

    /// Reads `queue` from `offset` on. The queue must be assigned.
    pub fn seek(&mut self, queue: &MessageQueue, offset: i64) -> Result<()> {
        self.assignment.seek(queue, offset)
    }

    /// Reads `queue` from the first message it still holds.
    pub async fn seek_to_begin(&mut self, queue: &MessageQueue) -> Result<()> {
        self.seek_to(queue, StartFrom::First).await
    }

    /// Reads `queue` from its end: only messages sent from now on.
    pub async fn seek_to_end(&mut self, queue: &MessageQueue) -> Result<()> {
        self.seek_to(queue, StartFrom::Last).await
    }

    /// Reads `queue` from the first message stored at or after `time`.
    pub async fn seek_to_timestamp(&mut self, queue: &MessageQueue, time: SystemTime) -> Result<()> {
        self.seek_to(queue, StartFrom::Timestamp(time)).await
    }

    async fn seek_to(&mut self, queue: &MessageQueue, at: StartFrom) -> Result<()> {
        self.core.check_running()?;
        self.assignment.check_assigned(queue)?;
        let offset = self.core.query_offset(queue, at).await?;
        self.assignment.seek(queue, offset)
    }

    /// Long-polls every assigned queue from its position for up to `timeout` and returns
    /// the messages of the first queue(s) that had any (empty when none had), each
    /// queue's in offset order, moving their positions past them. Queues whose pull (or
    /// whose start) failed are logged and skipped; only when all fail is it an error.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ReceivedMessage>> {
        self.core.check_running()?;
        if self.assignment.is_empty() {
            return Err(ClientError::InvalidArgument(
                "nothing to poll: subscribe to a topic or assign queues first".into(),
            ));
        }
        self.refresh_routes().await;
        let mut errors = self.resolve_positions().await;
        for (queue, filter, offset) in self.assignment.targets() {
            let key = queue_key(&queue);
            if !self.pulls.has(&key) {
                let core = Arc::clone(&self.core);
                self.pulls.start(
                    key,
                    async move { core.pull(queue, filter, offset, timeout).await },
                );
            }
        }
        let mut total = errors.len();
        let mut out = Vec::new();
        while let Some((_, result)) = self.pulls.next().await {
            total += 1;
            let found = self.assignment.apply(result, &mut out, &mut errors);
            if found {
                // Take what other queues have ready, without waiting for them; the rest
                // stay in flight for the next poll.
                while let Some((_, result)) = self.pulls.ready() {
                    total += 1;
                    self.assignment.apply(result, &mut out, &mut errors);
                }
                break;
            }
        }
        if errors.len() == total
            && let Some(e) = errors.into_iter().next()
        {
            return Err(e);
        }
        Ok(out)
    }

    /// Updates the assigned queues from the (cached) routes: their addresses, and the
    /// new queues of topics subscribed to.
    async fn refresh_routes(&mut self) {
        for topic in self.assignment.topics() {
            if let Ok(route) = self.core.session.routes.get(&topic).await {
                self.assignment.update_route(&route);
            }
        }
    }

    /// Finds the start of every assigned queue without a position: the group's committed
    /// offset, else where [`StartFrom`] says. Returns the errors of the queues whose
    /// start could not be found (they are skipped until it can).
    async fn resolve_positions(&mut self) -> Vec<ClientError> {
        let unresolved = self.assignment.unresolved();
        let core = &self.core;
        let found = join_all(
            unresolved
                .iter()
                .map(|q| async move { core.ops().start_position(q, core.start_from).await }),
        )
        .await;
        let mut errors = Vec::new();
        for (queue, found) in unresolved.iter().zip(found) {
            match found {
                Ok((committed, position)) => self.assignment.resolved(queue, committed, position),
                Err(e) => {
                    tracing::warn!(queue = %queue.key(), topic = %queue.topic, error = %e, "cannot find where to start");
                    self.core.refresh_route_on(&queue.topic, &e);
                    errors.push(e);
                }
            }
        }
        errors
    }

    /// Commits the position of every assigned queue that moved since its last commit.
    pub async fn commit(&mut self) -> Result<()> {
        self.core.check_running()?;
        let pending = self.assignment.to_commit();
        let core = &self.core;
        let results = join_all(pending.iter().map(|(q, o)| core.update_offset(q, *o))).await;
        let mut first_error = None;
        for ((queue, offset), r) in pending.iter().zip(results) {
            match r {
                Ok(()) => self.assignment.committed(queue, *offset),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Commits `offset` (the next message to read) for `queue`, assigned or not.
    pub async fn commit_queue(&mut self, queue: &MessageQueue, offset: i64) -> Result<()> {
        self.core.check_running()?;
        if offset < 0 {
            return Err(ClientError::InvalidArgument(format!(
                "offset {offset} is negative"
            )));
        }
        self.core.update_offset(queue, offset).await?;
        self.assignment.committed(queue, offset);
        Ok(())
    }

    /// The group's committed offset of `queue`, read from its broker group; None when
    /// it never committed one.
    pub async fn committed(&self, queue: &MessageQueue) -> Result<Option<i64>> {
        self.core.check_running()?;
        self.core.get_offset(queue).await
    }

    /// Commits the position of every assigned queue that moved since its last commit (as
    /// [`PullConsumer::commit`] would: messages polled count as consumed), then stops the
    /// client. The commit is best effort: it gets at most the request timeout, and a queue
    /// whose commit fails (or does not finish in time) is logged and keeps its last
    /// committed offset, so a consumer of the group started later reads its messages
    /// again. Later calls are [`ClientError::Shutdown`]; a second shutdown does nothing.
    /// Dropping the consumer without a shutdown commits nothing.
    pub async fn shutdown(&self) {
        if self.core.session.is_stopped() {
            return;
        }
        let pending = self.assignment.to_commit();
        if !pending.is_empty() {
            let core = &self.core;
            let commits = join_all(pending.iter().map(|(q, o)| async move {
                if let Err(e) = core.update_offset(q, *o).await {
                    tracing::warn!(queue = %q.key(), topic = %q.topic, offset = o, error = %e,
                        "offset not committed at shutdown; its messages will be read again");
                }
            }));
            if tokio::time::timeout(self.core.timeout(), commits).await.is_err() {
                tracing::warn!(
                    queues = pending.len(),
                    "offsets not all committed within the request timeout at shutdown; \
                     messages may be read again"
                );
            }
        }
        self.core.session.shutdown().await;
    }
}

impl Drop for PullConsumer {
    fn drop(&mut self) {
        let session = &self.core.session;
        if !session.is_stopped()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let session = session.clone();
            rt.spawn(async move { session.shutdown().await });
        }
    }
}

/// The calls of a pull consumer (everything but its assignment).
#[derive(Debug)]
struct Core {
    session: Arc<Session>,
    group: String,
    batch_size: i32,
    start_from: StartFrom,
    preferred: Preferred,
    /// Messages in the last pull answer: room reserved for the next one's, so that a busy
    /// queue's answers do not grow their vectors step by step.
    last_answer: AtomicUsize,
}

impl Core {
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

    fn group(&self) -> Option<pb::Resource> {
        Some(self.session.resource(&self.group))
    }

    /// The offset calls, shared with the push consumer.
    fn ops(&self) -> GroupOps<'_> {
        GroupOps {
            calls: self.calls(),
            group: self.session.resource(&self.group),
            namespace: &self.session.config().namespace,
            only_requested: false,
        }
    }

    /// After a failed call on one of `topic`'s queues: the route may have changed.
    fn refresh_route_on(&self, topic: &str, e: &ClientError) {
        if e.suggests_route_refresh() {
            self.session.routes.refresh_soon(topic);
        }
    }

    async fn get_offset(&self, queue: &MessageQueue) -> Result<Option<i64>> {
        self.ops().committed_offset(queue).await
    }

    async fn query_offset(&self, queue: &MessageQueue, at: StartFrom) -> Result<i64> {
        self.ops().query_offset(queue, at).await
    }

    async fn update_offset(&self, queue: &MessageQueue, offset: i64) -> Result<()> {
        self.ops().commit_offset(queue, offset).await
    }

    fn timeout(&self) -> Duration {
        self.session.config().request_timeout
    }

    /// Pulls `queue` from `offset`, waiting up to `wait` for messages; keeps those
    /// `filter` wants (the broker matches tag hashes only).
    async fn pull(
        &self,
        queue: MessageQueue,
        filter: FilterExpression,
        offset: i64,
        wait: Duration,
    ) -> Result<Pulled> {
        let timeout = self.timeout();
        let req = pb::PullMessageRequest {
            group: self.group(),
            message_queue: Some(queue.to_wire()),
            offset,
            batch_size: self.batch_size,
            filter_expression: Some(filter.to_wire()),
            long_polling_timeout: None,
        };
        let deadline = Instant::now() + timeout + wait;
        let (wire, next) = self
            .calls()
            .call(&queue.broker, &queue.endpoints, deadline, |addr, left| {
                let mut req = req.clone();
                req.long_polling_timeout = Some(duration(left.saturating_sub(timeout)));
                self.pull_at(addr, req, left)
            })
            .await
            .inspect_err(|e| self.refresh_route_on(&queue.topic, e))?;
        let endpoints: Arc<[String]> = Arc::from(queue.endpoints.as_slice());
        let mut messages = Vec::with_capacity(wire.len());
        messages.extend(
            wire.into_iter()
                .map(|m| ReceivedMessage::from_wire(m, &queue.broker, &endpoints))
                .filter(|m| filter.matches(m.tag.as_deref())),
        );
        Ok(Pulled {
            queue,
            from: offset,
            messages,
            next,
        })
    }

    /// One pull at `addr`: the messages and the offset to pull next.
    async fn pull_at(
        &self,
        addr: String,
        req: pb::PullMessageRequest,
        left: Duration,
    ) -> Result<((Vec<pb::Message>, i64), Option<String>)> {
        let rpc = &self.session.rpc;
        let from = req.offset;
        let resp = rpc
            .messaging(&addr)?
            .pull_message(rpc.request(req, left))
            .await
            .map_err(|s| call_error(&s, &addr, false))?;
        let hint = leader_hint(resp.metadata());
        let mut stream = resp.into_inner();
        let room = self.last_answer.load(Ordering::Relaxed);
        let (mut status, mut messages, mut next) = (None, Vec::with_capacity(room), None);
        while let Some(item) = stream.message().await.map_err(|s| call_error(&s, &addr, false))? {
            match item.content {
                Some(Content::Status(s)) => status = Some(s),
                Some(Content::Message(m)) => messages.push(m),
                Some(Content::NextOffset(n)) => next = Some(n),
                // `Encoded` is only ever sent; decoding gives `Message`.
                Some(Content::Encoded(_)) | None => {}
            }
        }
        self.last_answer.store(messages.len(), Ordering::Relaxed);
        let code = status.as_ref().map_or(pb::Code::Unspecified as i32, |s| s.code);
        if code == pb::Code::IllegalOffset as i32 {
            // A seek past the end, or a follower behind: read the queue once it gets there.
            tracing::debug!(%addr, from, end = ?next, "offset beyond the queue's end");
        } else if code != pb::Code::MessageNotFound as i32 {
            check_status(status.as_ref(), &addr)?;
        }
        let last = messages
            .last()
            .and_then(|m| m.system_properties.as_ref()?.queue_offset)
            .map(|o| o + 1);
        // Never backwards: that would deliver messages again.
        let next = next.or(last).unwrap_or(from).max(from);
        Ok(((messages, next), hint))
    }
}
