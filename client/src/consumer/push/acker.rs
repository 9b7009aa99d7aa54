//! Acknowledging what the listener finished: in batches, retried messages handed back
//! with RocketMQ's delay for their attempt, and their room freed in the flow.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::backoff::retry_delay;
use super::dispatch::Finished;
use super::dispatch::Outcome;
use super::flow::Flow;
use super::poller::Shared;
use crate::consumer::ReceivedMessage;

/// Most acks in one call.
const ACK_BATCH: usize = 64;

/// Acknowledges finished messages in batches, hands retried ones back with their delay,
/// and frees their room in the flow.
pub(super) async fn acker(shared: Arc<Shared>, flow: Arc<Flow>, mut rx: mpsc::Receiver<Finished>) {
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
