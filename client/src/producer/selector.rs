//! Ordered sends to a queue the caller picks ([`Producer::send_with_selector`]), as
//! RocketMQ's `send(message, MessageQueueSelector, arg)`.
//!
//! The selector is given the topic's writable queues, in the order of its route, and the
//! message (the first of a batch); the index it returns names the queue. Every attempt
//! of the send goes to that queue: a failed attempt is retried (with the producer's
//! retries, after the backoff of a group tried already) on the same queue, its broker
//! group's addresses in turn, never on another queue. So the messages a selector sends
//! to one queue, one sync send after the other, are stored in that order — with at
//! least once delivery: a retry after an unknown outcome may store a message twice
//! under one message id.
//!
//! The queue is the one chosen even for a message with a message group: the broker is
//! told the producer chose it (`x-raftmq-queue: client`).
//!
//! ```no_run
//! # async fn demo(producer: raftmq_client::Producer) -> raftmq_client::Result<()> {
//! use raftmq_client::Message;
//! use raftmq_client::producer::SelectByHash;
//!
//! // Every message of order 42 to one queue, in order.
//! for step in ["created", "paid", "shipped"] {
//!     let m = Message::new("orders", step).with_key("order-42");
//!     producer.send_with_selector(m, &SelectByHash::new("order-42")).await?;
//! }
//! // Or a closure: queue 0 of broker group g1.
//! let first = |queues: &[raftmq_client::route::MessageQueue], _: &Message| {
//!     queues.iter().position(|q| q.broker == "g1" && q.id == 0)
//! };
//! producer.send_with_selector(Message::new("orders", "audit"), &first).await?;
//! # Ok(()) }
//! ```

use crate::error::ClientError;
use crate::error::Result;
use crate::message::Message;
use crate::route::MessageQueue;

use super::Producer;
use super::SendReceipt;
use super::select::Placement;
use super::select::fnv1a64;

/// Picks the queue of an ordered send: given the topic's writable queues (in route order)
/// and the message, the index of its queue among them, or None to refuse the send
/// ([`ClientError::InvalidArgument`]). Closures
/// `Fn(&[MessageQueue], &Message) -> Option<usize>` are selectors.
pub trait QueueSelector: Send + Sync {
    /// The index in `queues` of the queue `message` goes to.
    fn select(&self, queues: &[MessageQueue], message: &Message) -> Option<usize>;
}

impl<F> QueueSelector for F
where
    F: Fn(&[MessageQueue], &Message) -> Option<usize> + Send + Sync,
{
    fn select(&self, queues: &[MessageQueue], message: &Message) -> Option<usize> {
        self(queues, message)
    }
}

/// A selector by a sharding key: the queue at `fnv1a64(key) mod queues` (RocketMQ's
/// `SelectMessageQueueByHash`). One key keeps one queue while the topic's writable queues
/// stay the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectByHash(String);

impl SelectByHash {
    /// The selector of sharding key `key`.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }
}

impl QueueSelector for SelectByHash {
    fn select(&self, queues: &[MessageQueue], _: &Message) -> Option<usize> {
        let n = u64::try_from(queues.len()).ok().filter(|n| *n > 0)?;
        usize::try_from(fnv1a64(&self.0) % n).ok()
    }
}

/// The index in `queues` (a route's) of the queue `selector` picks for `message` among
/// the writable ones.
pub fn choose<S: QueueSelector + ?Sized>(
    queues: &[MessageQueue],
    message: &Message,
    selector: &S,
) -> Result<usize> {
    let writable: Vec<usize> = (0..queues.len()).filter(|&i| queues[i].writable()).collect();
    if writable.is_empty() {
        return Err(ClientError::NotFound(format!(
            "topic {} has no writable queue",
            message.topic
        )));
    }
    let candidates: Vec<MessageQueue> = writable.iter().map(|&i| queues[i].clone()).collect();
    let Some(picked) = selector.select(&candidates, message) else {
        return Err(ClientError::InvalidArgument(
            "the queue selector chose no queue".into(),
        ));
    };
    writable.get(picked).copied().ok_or_else(|| {
        ClientError::InvalidArgument(format!(
            "the queue selector chose queue {picked} of {} writable queues",
            writable.len()
        ))
    })
}

impl Producer {
    /// Sends `message` to the queue `selector` picks among the topic's writable queues
    /// and waits for its receipt; failed attempts are retried on that queue alone (see
    /// [`super::selector`]).
    pub async fn send_with_selector<S: QueueSelector + ?Sized>(
        &self,
        message: Message,
        selector: &S,
    ) -> Result<SendReceipt> {
        let receipts = self.send_batch_with_selector(vec![message], selector).await?;
        receipts
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::OutcomeUnknown("an answer without a receipt".into()))
    }

    /// Sends a batch (as [`Producer::send_batch`]) to the queue `selector` picks for its
    /// first message, retried on that queue alone.
    pub async fn send_batch_with_selector<S: QueueSelector + ?Sized>(
        &self,
        messages: Vec<Message>,
        selector: &S,
    ) -> Result<Vec<SendReceipt>> {
        self.running()?;
        let mut prepared = self.prepare(messages)?;
        let route = self.session().routes.get(&prepared.topic).await?;
        let first = prepared
            .messages
            .first()
            .ok_or_else(|| ClientError::InvalidArgument("a send needs a message".into()))?;
        let index = choose(&route.queues, first, selector)?;
        prepared.placement = Placement::Chosen(index);
        self.send_prepared(&prepared, &route).await
    }
}

#[cfg(test)]
#[path = "selector_tests.rs"]
mod tests;
