//! Flow control of one queue's poller: at most `max_messages` messages and `max_bytes`
//! body bytes received and not yet finished (acknowledged or handed back). The poller
//! asks for room before each receive and every finished message gives its share back.

use std::sync::Mutex;

use tokio::sync::Notify;

/// How many messages a receive may ask for, given what is in flight: 0 while full.
pub fn room(inflight: usize, bytes: usize, max_messages: usize, max_bytes: usize, batch: usize) -> usize {
    if bytes >= max_bytes {
        return 0;
    }
    max_messages.saturating_sub(inflight).min(batch)
}

/// The counters of one queue.
#[derive(Debug)]
pub struct Flow {
    max_messages: usize,
    max_bytes: usize,
    state: Mutex<(usize, usize)>,
    freed: Notify,
}

impl Flow {
    /// Counters bounded by `max_messages` messages and `max_bytes` body bytes.
    pub fn new(max_messages: usize, max_bytes: usize) -> Self {
        Self {
            max_messages: max_messages.max(1),
            max_bytes: max_bytes.max(1),
            state: Mutex::new((0, 0)),
            freed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, usize)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until a receive may ask for at least one message; returns how many.
    pub async fn wait_for_room(&self, batch: usize) -> usize {
        loop {
            let freed = self.freed.notified();
            let (inflight, bytes) = *self.lock();
            let n = room(inflight, bytes, self.max_messages, self.max_bytes, batch);
            if n > 0 {
                return n;
            }
            freed.await;
        }
    }

    /// `count` messages of `bytes` body bytes arrived.
    pub fn taken(&self, count: usize, bytes: usize) {
        let mut s = self.lock();
        s.0 += count;
        s.1 += bytes;
    }

    /// One message of `bytes` body bytes is finished.
    pub fn done(&self, bytes: usize) {
        {
            let mut s = self.lock();
            s.0 = s.0.saturating_sub(1);
            s.1 = s.1.saturating_sub(bytes);
        }
        self.freed.notify_waiters();
    }

    /// Messages in flight.
    pub fn inflight(&self) -> usize {
        self.lock().0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn room_is_bounded_by_count_bytes_and_batch() {
        assert_eq!(room(0, 0, 100, 1 << 20, 32), 32);
        assert_eq!(room(90, 0, 100, 1 << 20, 32), 10);
        assert_eq!(room(100, 0, 100, 1 << 20, 32), 0);
        assert_eq!(room(1, 1 << 20, 100, 1 << 20, 32), 0, "bytes full");
    }

    #[tokio::test]
    async fn a_full_queue_waits_until_a_message_is_done() {
        let f = Arc::new(Flow::new(2, 1 << 20));
        assert_eq!(f.wait_for_room(8).await, 2);
        f.taken(2, 10);
        let waiter = tokio::spawn({
            let f = f.clone();
            async move { f.wait_for_room(8).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "no room while 2 are in flight");
        f.done(5);
        let n = tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("woken")
            .expect("task");
        assert_eq!(n, 1);
        assert_eq!(f.inflight(), 1);
    }
}
