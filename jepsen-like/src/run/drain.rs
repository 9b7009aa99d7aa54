//! The drain: after the producers stopped, wait until the consumers have taken what they
//! will take.
//!
//! Deliveries are counted; the drain ends once they have stopped growing for
//! [`QUIET`], or for the shorter [`QUIET_COMPLETE`] when every acknowledged message has
//! been consumed (only redeliveries and sends of unknown outcome may still come), or at
//! the deadline.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::Clock;
use super::recorder::Recorder;
use super::sleep_or_stop;

/// Quiet time that ends the drain while acknowledged messages are still missing.
pub const QUIET: Duration = Duration::from_secs(10);
/// Quiet time that ends the drain once every acknowledged message was consumed.
pub const QUIET_COMPLETE: Duration = Duration::from_secs(3);
/// How often deliveries are counted.
const POLL: Duration = Duration::from_millis(250);

/// Whether the drain is over: deliveries have not grown for `quiet`, and
/// `acked_unconsumed` acknowledged messages are still missing.
pub fn settled(acked_unconsumed: u64, quiet: Duration) -> bool {
    quiet >= QUIET || (acked_unconsumed == 0 && quiet >= QUIET_COMPLETE)
}

/// How the drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Time spent draining.
    pub waited: Duration,
    /// Whether deliveries settled (false: the deadline or an interruption ended it).
    pub settled: bool,
    /// Acknowledged messages still not consumed at its end.
    pub acked_unconsumed: u64,
}

/// Waits for the deliveries to settle, until `until` at most.
pub async fn drain(
    recorder: &Recorder,
    until: Instant,
    stop: &mut watch::Receiver<bool>,
    clock: &Clock,
) -> Drained {
    let started = Instant::now();
    let mut last = recorder.progress();
    let mut changed = started;
    let mut said = started;
    loop {
        let now = Instant::now();
        let progress = recorder.progress();
        if progress.deliveries != last.deliveries {
            changed = now;
        }
        last = progress;
        let done = settled(progress.acked_unconsumed, now - changed);
        if done || now >= until || sleep_or_stop(POLL, stop).await {
            return Drained {
                waited: now - started,
                settled: done,
                acked_unconsumed: progress.acked_unconsumed,
            };
        }
        if now - said >= Duration::from_secs(5) {
            said = now;
            clock.say(format!(
                "draining: {} deliveries, {} acknowledged messages not consumed yet",
                progress.deliveries, progress.acked_unconsumed
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drain_waits_longer_while_messages_are_missing() {
        assert!(!settled(0, Duration::from_secs(2)));
        assert!(settled(0, QUIET_COMPLETE));
        assert!(!settled(5, QUIET_COMPLETE));
        assert!(!settled(5, Duration::from_secs(9)));
        assert!(settled(5, QUIET));
    }
}
