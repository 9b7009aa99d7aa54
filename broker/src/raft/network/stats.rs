//! What the network did: [`NetworkStats`] and the atomic `Counters` behind them.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

/// Counters of what the network did, for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetworkStats {
    /// Tonic channels created (two per peer address while it stays the same).
    pub channels_created: u64,
    /// Replication streams opened (replication links set up).
    pub append_streams: u64,
    /// AppendEntries requests openraft handed over (stream or unary).
    pub append_requests: u64,
    /// Of those, requests that had to be cut into pieces.
    pub split_requests: u64,
    /// AppendEntries messages put on the wire (pieces included).
    pub append_messages: u64,
    /// Entry-less AppendEntries sent on the control channel (heartbeats, commit updates).
    pub heartbeats: u64,
    /// Snapshots fully sent and installed by the receiver.
    pub snapshots_sent: u64,
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) channels_created: AtomicU64,
    pub(super) append_streams: AtomicU64,
    pub(super) append_requests: AtomicU64,
    pub(super) split_requests: AtomicU64,
    pub(super) append_messages: AtomicU64,
    pub(super) heartbeats: AtomicU64,
    pub(super) snapshots_sent: AtomicU64,
}

impl Counters {
    pub(super) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn snapshot(&self) -> NetworkStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        NetworkStats {
            channels_created: g(&self.channels_created),
            append_streams: g(&self.append_streams),
            append_requests: g(&self.append_requests),
            split_requests: g(&self.split_requests),
            append_messages: g(&self.append_messages),
            heartbeats: g(&self.heartbeats),
            snapshots_sent: g(&self.snapshots_sent),
        }
    }

    pub(super) fn count_request(&self, pieces: usize) {
        Self::add(&self.append_requests, 1);
        Self::add(&self.append_messages, pieces as u64);
        if pieces > 1 {
            Self::add(&self.split_requests, 1);
        }
    }
}
