//! The workloads, in the manner of the OpenMessaging Benchmark (sans-IO).
//!
//! One topic (raftmq: 8 queues; JetStream: one stream over 8 subjects), `producers`
//! clients sharing a window of `window` outstanding sends, either as fast as acks come
//! back ([`Rate::Max`]) or at a fixed rate, with a consumer reading at the same time; or
//! a catch-up case: a backlog is written with no consumer, then one consumer drains it.

use std::time::Duration;

/// How fast producers send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// As fast as the window allows.
    Max,
    /// This many messages per second in total (still capped by the window).
    Fixed(u64),
}

/// What a run does after (or while) producing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// A consumer reads while the producers send (end-to-end latency).
    Live,
    /// Producers write `messages` with no consumer; then one consumer reads them all.
    CatchUp { messages: u64 },
}

/// One benchmark case.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub size: usize,
    pub window: usize,
    pub producers: usize,
    pub rate: Rate,
    pub phase: Phase,
    /// Sends before this are not measured (connections, first segment, JIT of caches).
    pub warmup: Duration,
    /// How long the measured part of a [`Phase::Live`] run lasts.
    pub duration: Duration,
}

/// Producers for a window: up to 4, never more than the window.
pub fn producers_for(window: usize) -> usize {
    window.clamp(1, 4)
}

impl Workload {
    pub fn live(size: usize, window: usize, rate: Rate, warmup: Duration, duration: Duration) -> Self {
        Self {
            size,
            window,
            producers: producers_for(window),
            rate,
            phase: Phase::Live,
            warmup,
            duration,
        }
    }

    /// A short stable name, e.g. `1KiB-w1024-max` or `1KiB-w1024-rate5000`.
    pub fn name(&self) -> String {
        let rate = match self.rate {
            Rate::Max => "max".to_owned(),
            Rate::Fixed(r) => format!("rate{r}"),
        };
        let base = format!("{}-w{}-{rate}", size_name(self.size), self.window);
        match self.phase {
            Phase::Live => base,
            Phase::CatchUp { messages } => format!("{}-catchup{messages}", size_name(self.size)),
        }
    }

    /// The window each producer gets (the total split evenly, at least 1).
    pub fn window_per_producer(&self) -> usize {
        (self.window / self.producers.max(1)).max(1)
    }

    /// The rate each producer gets, messages per second.
    pub fn rate_per_producer(&self) -> Option<f64> {
        match self.rate {
            Rate::Max => None,
            Rate::Fixed(r) => Some(r as f64 / self.producers.max(1) as f64),
        }
    }
}

/// `100B`, `1KiB`, `16KiB`.
pub fn size_name(size: usize) -> String {
    if size >= 1024 && size.is_multiple_of(1024) {
        format!("{}KiB", size / 1024)
    } else {
        format!("{size}B")
    }
}

/// The suite: the 1 KiB window-1024 and window-64 cases first (the goals), then the rest.
pub fn suite(quick: bool) -> Vec<Workload> {
    if quick {
        // The full suite's warm-up: the first seconds of a fresh cluster are not its
        // steady state (docs/BENCHMARKS.md, "--quick against the full suite").
        let (w, d) = (Duration::from_secs(2), Duration::from_secs(4));
        return vec![
            Workload::live(1024, 1024, Rate::Max, w, d),
            Workload::live(1024, 64, Rate::Max, w, d),
        ];
    }
    let (w, d) = (Duration::from_secs(2), Duration::from_secs(8));
    let mut v = vec![
        Workload::live(1024, 1024, Rate::Max, w, d),
        Workload::live(1024, 64, Rate::Max, w, d),
        Workload::live(1024, 1, Rate::Max, w, d),
        Workload::live(100, 1024, Rate::Max, w, d),
        Workload::live(16 * 1024, 1024, Rate::Max, w, d),
        Workload::live(1024, 1024, Rate::Fixed(5_000), w, d),
    ];
    let mut catch_up = Workload::live(1024, 1024, Rate::Max, Duration::ZERO, Duration::ZERO);
    catch_up.phase = Phase::CatchUp { messages: 200_000 };
    v.push(catch_up);
    v
}

/// The send time embedded in the first 8 bytes of a body (µs since the run's start),
/// followed by filler; `size` is at least 8.
pub fn body(size: usize, sent_us: u64, filler: u8) -> Vec<u8> {
    let mut b = vec![filler; size.max(8)];
    b[..8].copy_from_slice(&sent_us.to_le_bytes());
    b
}

/// The send time a body carries, if it is long enough.
pub fn sent_us(body: &[u8]) -> Option<u64> {
    let head: [u8; 8] = body.get(..8)?.try_into().ok()?;
    Some(u64::from_le_bytes(head))
}

/// When the `n`th send (from 0) of a producer sending at `per_sec` is due, from its start.
pub fn due(n: u64, per_sec: f64) -> Duration {
    Duration::from_secs_f64(n as f64 / per_sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_split() {
        let s = Duration::from_secs(1);
        let w = Workload::live(1024, 1024, Rate::Max, s, s);
        assert_eq!(w.name(), "1KiB-w1024-max");
        assert_eq!((w.producers, w.window_per_producer()), (4, 256));
        let one = Workload::live(100, 1, Rate::Fixed(500), s, s);
        assert_eq!(one.name(), "100B-w1-rate500");
        assert_eq!((one.producers, one.window_per_producer()), (1, 1));
        assert_eq!(one.rate_per_producer(), Some(500.0));
        assert_eq!(size_name(16 * 1024), "16KiB");
    }

    #[test]
    fn suites_start_with_the_goal_cases() {
        for quick in [true, false] {
            let s = suite(quick);
            assert_eq!(s[0].name(), "1KiB-w1024-max");
            assert_eq!(s[1].name(), "1KiB-w64-max");
        }
        let full = suite(false);
        assert!(full.iter().any(|w| matches!(w.phase, Phase::CatchUp { .. })));
    }

    #[test]
    fn bodies_carry_their_send_time() {
        let b = body(1024, 123_456_789, b'x');
        assert_eq!(b.len(), 1024);
        assert_eq!(sent_us(&b), Some(123_456_789));
        assert_eq!(body(3, 7, 0).len(), 8);
        assert_eq!(sent_us(&[1, 2]), None);
    }

    #[test]
    fn fixed_rate_schedule() {
        assert_eq!(due(0, 1000.0), Duration::ZERO);
        assert_eq!(due(500, 1000.0), Duration::from_millis(500));
    }
}
