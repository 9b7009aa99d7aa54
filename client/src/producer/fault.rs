//! Latency fault avoidance, RocketMQ's `LatencyFaultTolerance`, sans-IO: fed with each
//! attempt's broker group, latency, outcome and `now`; it answers which groups to avoid.
//!
//! A send that took `latency` makes its group unavailable for the duration that RocketMQ's
//! table gives ([`LATENCY_MAX`] → [`NOT_AVAILABLE`]: under 550 ms nothing, 550 ms → 30 s,
//! 1 s → 60 s, 2 s → 120 s, 3 s → 180 s, 15 s → 600 s); a failed attempt makes it
//! unavailable for [`FAILURE_ISOLATION`] (30 s). A later success clears an isolation early
//! only as far as its own latency allows.

use std::collections::HashMap;
use std::time::Duration;
use std::time::Instant;

/// RocketMQ's latency thresholds (`latencyMax`).
pub const LATENCY_MAX: [Duration; 7] = [
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(550),
    Duration::from_millis(1_000),
    Duration::from_millis(2_000),
    Duration::from_millis(3_000),
    Duration::from_millis(15_000),
];

/// How long a group is avoided after a send as slow as the matching [`LATENCY_MAX`]
/// (RocketMQ's `notAvailableDuration`).
pub const NOT_AVAILABLE: [Duration; 7] = [
    Duration::ZERO,
    Duration::ZERO,
    Duration::from_secs(30),
    Duration::from_secs(60),
    Duration::from_secs(120),
    Duration::from_secs(180),
    Duration::from_secs(600),
];

/// How long a group is avoided after a failed attempt.
pub const FAILURE_ISOLATION: Duration = Duration::from_secs(30);

/// What is known of one broker group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultItem {
    /// The latency of the last attempt.
    pub latency: Duration,
    /// When the group may be chosen again.
    pub available_at: Instant,
}

/// The fault state of every broker group a producer sent to.
#[derive(Debug, Clone, Default)]
pub struct FaultTracker {
    items: HashMap<String, FaultItem>,
}

/// How long a group is avoided after a send that took `latency`.
pub fn not_available_for(latency: Duration) -> Duration {
    LATENCY_MAX
        .iter()
        .zip(NOT_AVAILABLE)
        .rev()
        .find(|(max, _)| latency >= **max)
        .map_or(Duration::ZERO, |(_, d)| d)
}

impl FaultTracker {
    /// A tracker that knows no group.
    pub fn new() -> Self {
        Self::default()
    }

    /// An attempt to `broker` succeeded after `latency`.
    pub fn record_success(&mut self, broker: &str, latency: Duration, now: Instant) {
        self.set(broker, latency, now + not_available_for(latency));
    }

    /// An attempt to `broker` failed (after `latency`): it is avoided for at least
    /// [`FAILURE_ISOLATION`], longer if the attempt itself was slower than that.
    pub fn record_failure(&mut self, broker: &str, latency: Duration, now: Instant) {
        let avoid = not_available_for(latency).max(FAILURE_ISOLATION);
        self.set(broker, latency, now + avoid);
    }

    fn set(&mut self, broker: &str, latency: Duration, available_at: Instant) {
        match self.items.get_mut(broker) {
            Some(item) => {
                *item = FaultItem {
                    latency,
                    available_at,
                }
            }
            None => {
                self.items.insert(
                    broker.to_owned(),
                    FaultItem {
                        latency,
                        available_at,
                    },
                );
            }
        }
    }

    /// Whether `broker` may be chosen at `now` (an unknown group may).
    pub fn is_available(&self, broker: &str, now: Instant) -> bool {
        self.items.get(broker).is_none_or(|i| i.available_at <= now)
    }

    /// What is known of `broker`.
    pub fn item(&self, broker: &str) -> Option<FaultItem> {
        self.items.get(broker).copied()
    }

    /// When `broker` may be chosen again; None for a group never sent to.
    pub fn available_at(&self, broker: &str) -> Option<Instant> {
        self.items.get(broker).map(|i| i.available_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn latencies_map_to_rocketmqs_unavailable_durations() {
        let cases = [
            (0, 0),
            (49, 0),
            (100, 0),
            (549, 0),
            (550, 30_000),
            (999, 30_000),
            (1_000, 60_000),
            (2_500, 120_000),
            (3_000, 180_000),
            (14_999, 180_000),
            (15_000, 600_000),
            (90_000, 600_000),
        ];
        for (latency, avoid) in cases {
            assert_eq!(not_available_for(MS(latency)), MS(avoid), "latency {latency} ms");
        }
    }

    #[test]
    fn a_failed_group_is_avoided_for_30_s_then_chosen_again() {
        let t0 = Instant::now();
        let mut f = FaultTracker::new();
        assert!(f.is_available("g1", t0), "unknown groups are available");
        f.record_failure("g1", MS(3), t0);
        assert!(!f.is_available("g1", t0));
        assert!(!f.is_available("g1", t0 + MS(29_999)));
        assert!(f.is_available("g1", t0 + MS(30_000)));
        assert_eq!(f.available_at("g1"), Some(t0 + MS(30_000)));
        assert_eq!(f.available_at("g3"), None);
        assert!(f.is_available("g2", t0));
        // A failure that itself took 16 s (a slow timeout) is avoided for 600 s.
        f.record_failure("g2", MS(16_000), t0);
        assert!(!f.is_available("g2", t0 + MS(599_000)));
        assert!(f.is_available("g2", t0 + MS(600_000)));
    }

    #[test]
    fn slow_successes_are_avoided_and_fast_ones_clear_the_state() {
        let t0 = Instant::now();
        let mut f = FaultTracker::new();
        f.record_success("g1", MS(40), t0);
        assert!(f.is_available("g1", t0));
        f.record_success("g1", MS(1_200), t0);
        assert!(!f.is_available("g1", t0 + MS(59_000)));
        assert!(f.is_available("g1", t0 + MS(60_000)));
        // A fast success (when it was chosen anyway, e.g. as the only group) clears it.
        f.record_success("g1", MS(5), t0 + MS(1_000));
        assert!(f.is_available("g1", t0 + MS(1_000)));
        assert_eq!(f.item("g1").map(|i| i.latency), Some(MS(5)));
    }
}
