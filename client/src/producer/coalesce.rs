//! Merging of concurrent async sends ([`super::Producer::send_async`]) into shared requests.
//!
//! A SendMessage call costs the same fixed work whatever it carries (an HTTP/2 stream,
//! headers, a task on each side, a broker entry), so an application that keeps many
//! sends in flight pays that work per message. The producer keeps at most
//! [`CoalesceOptions::max_in_flight`] requests of async sends open; sends started while
//! all of them are taken wait in a queue, and the next request carries every waiting
//! message of one topic (up to [`CoalesceOptions::max_messages`] messages and
//! [`CoalesceOptions::max_bytes`] of bodies). A send started while a request slot is free
//! goes at once, alone: merging adds no wait of its own.
//!
//! A merged request is a batch send: its messages are stored together on one queue, or
//! the attempt fails for all of them and all of them are retried (each keeps its message
//! id, so a consumer can tell a message stored twice). Each send still gets its own
//! receipt. Ordered messages (with a message group) are never merged: each goes alone, so
//! it lands on its key's queue with the usual ordered-send rules.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Weak;

use tokio::sync::Semaphore;
use tokio::sync::mpsc;
use tokio::sync::oneshot;

use super::InFlight;
use super::Inner;
use super::Producer;
use super::SendReceipt;
use crate::error::ClientError;
use crate::error::Result;
use crate::message::Message;

/// Limits of merging; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoalesceOptions {
    /// Merge concurrent async sends at all. Default true.
    pub enabled: bool,
    /// Most requests of async sends open at once. Default 32.
    pub max_in_flight: usize,
    /// Most messages in one merged request. Default 256.
    pub max_messages: usize,
    /// Most body bytes in one merged request (a single larger message still goes, alone).
    /// Default 1 MiB.
    pub max_bytes: usize,
}

impl Default for CoalesceOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            max_in_flight: 32,
            max_messages: 256,
            max_bytes: 1 << 20,
        }
    }
}

/// What waits for its request: the message and where its receipt goes. `T` is whatever
/// travels with it (the reply channel, a guard); tests use plain values.
#[derive(Debug)]
pub struct Waiting<T> {
    /// The message to send.
    pub message: Message,
    /// What goes with it.
    pub with: T,
}

/// The sends waiting for a request slot, in the order they were started (sans-IO).
#[derive(Debug)]
pub struct Queue<T> {
    waiting: VecDeque<Waiting<T>>,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Self {
            waiting: VecDeque::new(),
        }
    }
}

impl<T> Queue<T> {
    /// Queues a send behind the others.
    pub fn push(&mut self, w: Waiting<T>) {
        self.waiting.push_back(w);
    }

    /// Sends waiting.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether no send waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// The next request's sends: the oldest waiting send, and — unless it is ordered —
    /// every later unordered send of its topic that fits the limits, in order. The others
    /// keep their places.
    pub fn next_batch(&mut self, limits: &CoalesceOptions) -> Vec<Waiting<T>> {
        let Some(first) = self.waiting.pop_front() else {
            return Vec::new();
        };
        if first.message.message_group.is_some() || !limits.enabled {
            return vec![first];
        }
        let topic = first.message.topic.clone();
        let mut bytes = first.message.body.len();
        let mut batch = Vec::with_capacity(self.waiting.len().min(limits.max_messages) + 1);
        batch.push(first);
        // Every other send is taken from the front once; those that stay go to the back in
        // their order, so the queue keeps its allocation.
        for _ in 0..self.waiting.len() {
            let Some(w) = self.waiting.pop_front() else {
                break;
            };
            let fits = batch.len() < limits.max_messages
                && bytes + w.message.body.len() <= limits.max_bytes
                && w.message.topic == topic
                && w.message.message_group.is_none();
            if fits {
                bytes += w.message.body.len();
                batch.push(w);
            } else {
                self.waiting.push_back(w);
            }
        }
        batch
    }
}

/// Hands each send of a batch (`replies`, in order) its receipt, or a copy of the
/// batch's error.
pub fn answer<T>(
    replies: Vec<T>,
    result: Result<Vec<SendReceipt>>,
    mut reply: impl FnMut(T, Result<SendReceipt>),
) {
    match result {
        Ok(receipts) if receipts.len() == replies.len() => {
            for (to, r) in replies.into_iter().zip(receipts) {
                reply(to, Ok(r));
            }
        }
        Ok(receipts) => {
            let e = ClientError::OutcomeUnknown(format!(
                "an answer with {} receipts for {} messages",
                receipts.len(),
                replies.len()
            ));
            for to in replies {
                reply(to, Err(e.clone()));
            }
        }
        Err(e) => {
            for to in replies {
                reply(to, Err(e.clone()));
            }
        }
    }
}

/// Where an async send's receipt goes, and its count in the sends in flight.
pub(super) type AsyncReply = (oneshot::Sender<Result<SendReceipt>>, InFlight);

/// The loop behind [`Producer::send_async`]: takes queued sends and sends them in merged
/// requests, at most `limits.max_in_flight` at a time ([`coalesce`]). Ends when the
/// producer is gone; sends still queued then fail with [`ClientError::Shutdown`].
pub(super) async fn dispatch(
    producer: Weak<Inner>,
    mut queued: mpsc::Receiver<Waiting<AsyncReply>>,
    limits: CoalesceOptions,
) {
    /// Most sends taken from the channel at once.
    const TAKE: usize = 4096;
    let slots = Arc::new(Semaphore::new(limits.max_in_flight.max(1)));
    let mut queue = Queue::default();
    loop {
        if queue.is_empty() {
            match queued.recv().await {
                Some(w) => queue.push(w),
                None => return,
            }
        }
        // Sends started while every slot is taken join the next request.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        while queue.len() < TAKE {
            match queued.try_recv() {
                Ok(w) => queue.push(w),
                Err(_) => break,
            }
        }
        let batch = queue.next_batch(&limits);
        let Some(inner) = producer.upgrade() else {
            // The producer is gone: nothing queued was sent, so say so to every send.
            queued.close();
            let mut unsent: Vec<AsyncReply> = batch.into_iter().map(|w| w.with).collect();
            while !queue.is_empty() {
                unsent.extend(queue.next_batch(&limits).into_iter().map(|w| w.with));
            }
            while let Ok(w) = queued.try_recv() {
                unsent.push(w.with);
            }
            answer(unsent, Err(ClientError::Shutdown), reply);
            return;
        };
        let this = Producer { inner };
        tokio::spawn(async move {
            let _slot = slot;
            let (messages, replies): (Vec<Message>, Vec<AsyncReply>) =
                batch.into_iter().map(|w| (w.message, w.with)).unzip();
            let result = this.send_all(messages).await;
            answer(replies, result, reply);
        });
    }
}

fn reply((tx, _in_flight): AsyncReply, result: Result<SendReceipt>) {
    let _ = tx.send(result);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(topic: &str, group: Option<&str>, size: usize, id: u32) -> Waiting<u32> {
        let mut message = Message::new(topic, vec![b'x'; size]);
        message.message_group = group.map(str::to_owned);
        Waiting { message, with: id }
    }

    fn ids(batch: &[Waiting<u32>]) -> Vec<u32> {
        batch.iter().map(|w| w.with).collect()
    }

    #[test]
    fn one_topic_within_the_limits_goes_together_the_rest_keeps_its_order() {
        let limits = CoalesceOptions {
            max_messages: 3,
            max_bytes: 100,
            ..CoalesceOptions::default()
        };
        let mut q = Queue::default();
        q.push(waiting("a", None, 10, 1));
        q.push(waiting("b", None, 10, 2));
        q.push(waiting("a", Some("k"), 10, 3));
        q.push(waiting("a", None, 95, 4));
        q.push(waiting("a", None, 10, 5));
        q.push(waiting("a", None, 10, 6));
        q.push(waiting("a", None, 10, 7));
        assert_eq!(
            ids(&q.next_batch(&limits)),
            vec![1, 5, 6],
            "3 messages at most, 95 bytes do not fit"
        );
        assert_eq!(ids(&q.next_batch(&limits)), vec![2]);
        assert_eq!(ids(&q.next_batch(&limits)), vec![3], "an ordered send goes alone");
        assert_eq!(
            ids(&q.next_batch(&limits)),
            vec![4],
            "95 + 10 bytes do not fit 100"
        );
        assert_eq!(ids(&q.next_batch(&limits)), vec![7]);
        assert!(q.next_batch(&limits).is_empty());
        assert!(q.is_empty());
    }

    #[test]
    fn an_oversized_first_send_goes_alone_and_merging_can_be_off() {
        let limits = CoalesceOptions {
            max_bytes: 100,
            ..CoalesceOptions::default()
        };
        let mut q = Queue::default();
        q.push(waiting("a", None, 500, 1));
        q.push(waiting("a", None, 10, 2));
        assert_eq!(ids(&q.next_batch(&limits)), vec![1]);
        assert_eq!(q.len(), 1);
        let off = CoalesceOptions {
            enabled: false,
            ..CoalesceOptions::default()
        };
        q.push(waiting("a", None, 10, 3));
        assert_eq!(ids(&q.next_batch(&off)), vec![2]);
        assert_eq!(ids(&q.next_batch(&off)), vec![3]);
    }

    #[test]
    fn receipts_and_errors_reach_every_send() {
        let receipt = |id: &str| SendReceipt {
            message_id: id.into(),
            topic: "a".into(),
            broker: "g".into(),
            queue_id: Some(0),
            offset: 0,
            endpoint: "e".into(),
            attempts: 1,
        };
        let mut got = Vec::new();
        answer(vec![1, 2], Ok(vec![receipt("x"), receipt("y")]), |id, r| {
            got.push((id, r.ok().map(|r| r.message_id)))
        });
        assert_eq!(got, vec![(1, Some("x".into())), (2, Some("y".into()))]);

        let mut failed = Vec::new();
        answer(vec![1, 2], Ok(vec![receipt("x")]), |id, r| {
            failed.push((id, r.is_err()))
        });
        assert_eq!(failed, vec![(1, true), (2, true)]);

        let mut failed = Vec::new();
        answer(vec![1], Err(ClientError::Shutdown), |id, r| {
            failed.push((id, matches!(r, Err(ClientError::Shutdown))))
        });
        assert_eq!(failed, vec![(1, true)]);
    }
}
