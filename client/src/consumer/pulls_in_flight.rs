//! The pull consumer's pulls in flight, kept from one poll to the next.
//!
//! A poll returns as soon as one queue brings messages. The pulls of the other queues
//! are not dropped with it: the broker has already read and sent their messages, so
//! dropping them would throw that work away and make the next poll ask for the same
//! messages again. Each pull runs on a task of its own (so its answer is received and
//! checked while the application works); the next poll takes whatever has arrived and
//! starts pulls only for queues without one. Dropping the set aborts its pulls.

use std::collections::HashSet;
use std::pin::Pin;
use std::task::Context;
use std::task::Poll;

use futures_util::FutureExt;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::task::JoinHandle;

use super::assignment::Pulled;
use crate::error::ClientError;
use crate::error::Result;

/// One queue's pull on its task; aborted when dropped.
struct Pull {
    key: String,
    task: JoinHandle<Result<Pulled>>,
}

impl Future for Pull {
    type Output = (String, Result<Pulled>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.task.poll_unpin(cx).map(|joined| {
            let result = joined
                .unwrap_or_else(|e| Err(ClientError::Unreachable(format!("the pull ended early: {e}"))));
            (self.key.clone(), result)
        })
    }
}

impl Drop for Pull {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Pulls in flight, at most one per queue (by queue key).
#[derive(Default)]
pub(super) struct PullsInFlight {
    pulls: FuturesUnordered<Pull>,
    queues: HashSet<String>,
}

impl std::fmt::Debug for PullsInFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullsInFlight")
            .field("queues", &self.queues)
            .finish()
    }
}

impl PullsInFlight {
    /// Whether queue `key` has a pull in flight.
    pub fn has(&self, key: &str) -> bool {
        self.queues.contains(key)
    }

    /// Starts `pull` for queue `key` on a task of its own.
    pub fn start(&mut self, key: String, pull: impl Future<Output = Result<Pulled>> + Send + 'static) {
        self.queues.insert(key.clone());
        self.pulls.push(Pull {
            key,
            task: tokio::spawn(pull),
        });
    }

    /// The next pull to finish (None when none is in flight).
    pub async fn next(&mut self) -> Option<(String, Result<Pulled>)> {
        let done = self.pulls.next().await?;
        self.queues.remove(&done.0);
        Some(done)
    }

    /// A pull that has already finished, without waiting.
    pub fn ready(&mut self) -> Option<(String, Result<Pulled>)> {
        let done = self.pulls.next().now_or_never()??;
        self.queues.remove(&done.0);
        Some(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pulls_are_taken_as_they_finish_and_aborted_when_dropped() {
        let mut set = PullsInFlight::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        set.start("slow".into(), async move {
            let _ = rx.await;
            Err(ClientError::Timeout("slow".into()))
        });
        set.start("fast".into(), async { Err(ClientError::Timeout("fast".into())) });
        assert!(set.has("slow") && set.has("fast"));
        let (key, _) = set.next().await.expect("one finishes");
        assert_eq!(key, "fast");
        assert!(!set.has("fast") && set.has("slow"));
        assert!(set.ready().is_none(), "the slow one is still waiting");
        drop(set);
        // The slow pull's task was aborted: its receiver is gone.
        tokio::task::yield_now().await;
        assert!(tx.send(()).is_err());
    }
}
