//! Handing a received batch to the listener: in concurrent mode each message to a worker
//! of the consumer's pool, in ordered mode one at a time, a retried message holding back
//! the rest of its message group. What is not handed over (the assignment ran out, the
//! poller stops) goes back at once. Every message ends as a [`Finished`] on the acker's
//! channel.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::options::ConsumeMode;
use super::options::ConsumeResult;
use super::poller::End;
use super::poller::Shared;
use super::poller::expiry;
use super::poller::given_up;
use super::poller::stopping;
use super::rebalance::Validity;
use crate::consumer::ReceivedMessage;

/// What to do with a finished message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
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
pub(super) struct Finished {
    pub message: ReceivedMessage,
    pub outcome: Outcome,
}

/// What handing a batch to the listener needs.
pub(super) struct Dispatch<'a> {
    pub shared: &'a Arc<Shared>,
    pub tx: &'a mpsc::Sender<Finished>,
    pub valid: &'a Validity,
}

/// Hands `messages` back at once, unprocessed.
pub(super) async fn hand_back(
    messages: impl IntoIterator<Item = ReceivedMessage>,
    tx: &mpsc::Sender<Finished>,
) {
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
pub(super) async fn dispatch(
    ctx: &Dispatch<'_>,
    messages: Vec<ReceivedMessage>,
    stop: &mut watch::Receiver<Option<Instant>>,
    listeners: &mut JoinSet<()>,
) -> Option<End> {
    match ctx.shared.options.mode {
        ConsumeMode::Concurrent => concurrent(ctx, messages, stop, listeners).await,
        ConsumeMode::Ordered => ordered(ctx, messages, stop).await,
    }
}

/// Each message to a worker of the pool, as one comes free.
async fn concurrent(
    ctx: &Dispatch<'_>,
    messages: Vec<ReceivedMessage>,
    stop: &mut watch::Receiver<Option<Instant>>,
    listeners: &mut JoinSet<()>,
) -> Option<End> {
    let shared = ctx.shared;
    let grace = shared.options.shutdown_timeout;
    let mut rest = messages.into_iter();
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

/// One message at a time, in order. A message group (or, without groups, the queue)
/// whose message asked to be retried stops there: its later messages must not overtake it.
async fn ordered(
    ctx: &Dispatch<'_>,
    messages: Vec<ReceivedMessage>,
    stop: &mut watch::Receiver<Option<Instant>>,
) -> Option<End> {
    let grace = ctx.shared.options.shutdown_timeout;
    let mut held: HashSet<Option<String>> = HashSet::new();
    let mut rest = messages.into_iter();
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
                r = (ctx.shared.listener)(message.clone()) => r,
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
        let outcome = result.into();
        let _ = ctx.tx.send(Finished { message, outcome }).await;
    }
    None
}

#[cfg(test)]
#[path = "dispatch_tests.rs"]
mod tests;
