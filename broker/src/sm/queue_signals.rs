//! Per-queue wake-ups for long polls.
//!
//! A pull that reached the end of its queue waits for that queue to grow. Waking every
//! waiting pull of the broker on every applied batch (one broker-wide counter) made each
//! of them read its queue again, on the blocking pool, to find nothing: with one
//! consumer on 8 queues that was 8 reads per batch, and it grows with every queue and
//! consumer. Here each queue with a waiter has its own counter, bumped only by a batch
//! that appended to it.
//!
//! Entries exist only while someone waits: a queue's counter is created by the first
//! subscriber and dropped at the first bump (or [`QueueSignals::bump_all`]) that finds no
//! receiver left, so the map is bounded by the queues that have waiters.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

/// Counters of queues that have (or recently had) a waiting long poll.
#[derive(Debug, Default)]
pub struct QueueSignals {
    topics: Mutex<HashMap<String, HashMap<u32, watch::Sender<u64>>>>,
}

impl QueueSignals {
    /// A receiver that changes whenever a batch appends to `topic`'s queue `queue_id`
    /// (and on [`Self::bump_all`]).
    pub fn subscribe(&self, topic: &str, queue_id: u32) -> watch::Receiver<u64> {
        let mut topics = self.lock();
        if let Some(queues) = topics.get_mut(topic) {
            return queues
                .entry(queue_id)
                .or_insert_with(|| watch::Sender::new(0))
                .subscribe();
        }
        let tx = watch::Sender::new(0);
        let rx = tx.subscribe();
        topics.insert(topic.to_owned(), HashMap::from([(queue_id, tx)]));
        rx
    }

    /// Wakes the waiters of one queue, if it has any; forgets it if it has none left.
    pub fn bump(&self, topic: &str, queue_id: u32) {
        let mut topics = self.lock();
        let Some(queues) = topics.get_mut(topic) else {
            return;
        };
        if let Some(tx) = queues.get(&queue_id) {
            if tx.receiver_count() == 0 {
                queues.remove(&queue_id);
                if queues.is_empty() {
                    topics.remove(topic);
                }
            } else {
                tx.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    }

    /// Wakes every waiter (a topic was deleted or changed, a snapshot replaced the state)
    /// and forgets the queues nobody waits on.
    pub fn bump_all(&self) {
        let mut topics = self.lock();
        for queues in topics.values_mut() {
            queues.retain(|_, tx| tx.receiver_count() > 0);
            for tx in queues.values() {
                tx.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
        topics.retain(|_, queues| !queues.is_empty());
    }

    /// Queues with a counter.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.lock().values().map(HashMap::len).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<u32, watch::Sender<u64>>>> {
        self.topics.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::QueueSignals;

    #[test]
    fn a_bump_wakes_only_the_queue_it_names() {
        let s = QueueSignals::default();
        let a0 = s.subscribe("a", 0);
        let mut a1 = s.subscribe("a", 1);
        let b0 = s.subscribe("b", 0);
        s.bump("a", 1);
        assert!(!a0.has_changed().expect("open"));
        assert!(a1.has_changed().expect("open"));
        assert!(!b0.has_changed().expect("open"));
        a1.borrow_and_update();
        s.bump_all();
        assert!(a0.has_changed().expect("open"));
        assert!(a1.has_changed().expect("open"));
        assert!(b0.has_changed().expect("open"));
    }

    #[test]
    fn queues_without_waiters_are_forgotten() {
        let s = QueueSignals::default();
        let a0 = s.subscribe("a", 0);
        let a0_again = s.subscribe("a", 0);
        let b0 = s.subscribe("b", 0);
        assert_eq!(s.tracked(), 2);
        s.bump("nobody", 3);
        assert_eq!(s.tracked(), 2);
        drop((a0, a0_again));
        s.bump("a", 0);
        assert_eq!(s.tracked(), 1);
        drop(b0);
        s.bump_all();
        assert_eq!(s.tracked(), 0);
    }
}
