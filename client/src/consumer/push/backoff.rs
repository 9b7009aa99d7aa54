//! When a message its listener asked to retry comes back: RocketMQ's redelivery delays by
//! delivery attempt (1 s, 5 s, 10 s, 30 s, 1 min, 2 min, … 2 h).

use std::time::Duration;

/// RocketMQ's retry levels, in seconds.
const DELAYS_S: [u64; 18] = [
    1, 5, 10, 30, 60, 120, 180, 240, 300, 360, 420, 480, 540, 600, 1_200, 1_800, 3_600, 7_200,
];

/// The delay before delivery `attempt + 1` of a message delivered `attempt` times (≥ 1).
pub fn retry_delay(attempt: u32) -> Duration {
    let i = usize::try_from(attempt.saturating_sub(1)).unwrap_or(usize::MAX);
    Duration::from_secs(DELAYS_S[i.min(DELAYS_S.len() - 1)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_with_attempts_and_stop_at_two_hours() {
        assert_eq!(retry_delay(0), Duration::from_secs(1));
        assert_eq!(retry_delay(1), Duration::from_secs(1));
        assert_eq!(retry_delay(2), Duration::from_secs(5));
        assert_eq!(retry_delay(4), Duration::from_secs(30));
        assert_eq!(retry_delay(18), Duration::from_secs(7_200));
        assert_eq!(retry_delay(100), Duration::from_secs(7_200));
    }
}
