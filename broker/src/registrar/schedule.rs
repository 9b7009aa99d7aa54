//! The registrar's decisions, free of I/O and of the clock: when to register with one name
//! server ([`Schedule`]) and what to log about it ([`Health`]). Callers pass the time in,
//! so tests run on simulated time.

use std::time::Duration;

use raftmq_proto::raftmq::namesrv::v1::Role;
use tokio::time::Instant;

/// The first wait after a failed registration; it doubles with every further failure, up
/// to the registration interval.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// While registrations keep failing, a warning at most this often (the first failure of a
/// streak always warns).
pub const WARN_EVERY: Duration = Duration::from_secs(60);

/// What a node announces that, when it changes, calls for an immediate registration. The
/// applied index is not part of it: it moves with every entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announce {
    pub role: Role,
    pub term: u64,
    /// The leader this node knows (itself included), if any.
    pub leader: Option<u64>,
    /// The state machine's topic-change counter.
    pub topics: u64,
}

/// How often to register, and how soon to retry after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub interval: Duration,
    pub first_backoff: Duration,
}

impl Timing {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            first_backoff: FIRST_BACKOFF.min(interval),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Attempt {
    key: Announce,
    at: Instant,
    ok: bool,
}

/// When to register with one name server.
///
/// Due at once when nothing was tried yet, or when the announcement differs from the one
/// last tried (so a change goes out at once even while the name server is failing, once
/// per change). Otherwise due an interval after the last success, or a backoff after the
/// last failure (500 ms, doubling up to the interval).
#[derive(Debug, Clone)]
pub struct Schedule {
    timing: Timing,
    last: Option<Attempt>,
    /// The wait after the last failure; zero after a success.
    backoff: Duration,
}

impl Schedule {
    pub fn new(timing: Timing) -> Self {
        Self {
            timing,
            last: None,
            backoff: Duration::ZERO,
        }
    }

    /// When the next registration of `key` is due; `None`: at once.
    pub fn next_at(&self, key: &Announce) -> Option<Instant> {
        let last = self.last.filter(|l| l.key == *key)?;
        let wait = if last.ok {
            self.timing.interval
        } else {
            self.backoff
        };
        Some(last.at + wait)
    }

    /// Whether `key` is to be registered now.
    pub fn is_due(&self, key: &Announce, now: Instant) -> bool {
        self.next_at(key).is_none_or(|at| at <= now)
    }

    /// Records a registration of `key` that the name server accepted at `now`.
    pub fn succeeded(&mut self, key: Announce, now: Instant) {
        self.last = Some(Attempt {
            key,
            at: now,
            ok: true,
        });
        self.backoff = Duration::ZERO;
    }

    /// Records a failed registration of `key` (ended at `now`); returns the wait before
    /// the next try of the same announcement.
    pub fn failed(&mut self, key: Announce, now: Instant) -> Duration {
        self.backoff = if self.backoff.is_zero() {
            self.timing.first_backoff
        } else {
            self.backoff.saturating_mul(2).min(self.timing.interval)
        };
        self.last = Some(Attempt {
            key,
            at: now,
            ok: false,
        });
        self.backoff
    }
}

/// What to log after a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// Nothing worth more than a debug line.
    Quiet,
    /// Info: the first success, or the first after failures (`failures` of them, the
    /// first `down_for` ago).
    Up {
        first: bool,
        failures: u64,
        down_for: Duration,
    },
    /// Warn: the first failure of a streak, then at most every [`WARN_EVERY`].
    Down { failures: u64, down_for: Duration },
}

#[derive(Debug, Clone, Copy)]
struct Streak {
    since: Instant,
    failures: u64,
    warned_at: Instant,
}

/// One name server's registration health, for rate-limited logging.
#[derive(Debug, Clone, Default)]
pub struct Health {
    ever_up: bool,
    failing: Option<Streak>,
}

impl Health {
    pub fn succeeded(&mut self, now: Instant) -> Notice {
        let first = !self.ever_up;
        self.ever_up = true;
        match self.failing.take() {
            Some(s) => Notice::Up {
                first,
                failures: s.failures,
                down_for: now.saturating_duration_since(s.since),
            },
            None if first => Notice::Up {
                first,
                failures: 0,
                down_for: Duration::ZERO,
            },
            None => Notice::Quiet,
        }
    }

    pub fn failed(&mut self, now: Instant) -> Notice {
        let Some(s) = self.failing.as_mut() else {
            self.failing = Some(Streak {
                since: now,
                failures: 1,
                warned_at: now,
            });
            return Notice::Down {
                failures: 1,
                down_for: Duration::ZERO,
            };
        };
        s.failures += 1;
        if now.saturating_duration_since(s.warned_at) < WARN_EVERY {
            return Notice::Quiet;
        }
        s.warned_at = now;
        Notice::Down {
            failures: s.failures,
            down_for: now.saturating_duration_since(s.since),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(30);

    fn key(role: Role, term: u64, leader: Option<u64>, topics: u64) -> Announce {
        Announce {
            role,
            term,
            leader,
            topics,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn registers_at_once_then_every_interval() {
        let t0 = Instant::now();
        let k = key(Role::Leader, 3, Some(1), 0);
        let mut s = Schedule::new(Timing::new(INTERVAL));
        assert!(s.is_due(&k, t0), "nothing registered yet");
        s.succeeded(k, t0 + ms(5));
        assert_eq!(s.next_at(&k), Some(t0 + ms(5) + INTERVAL));
        assert!(!s.is_due(&k, t0 + ms(5) + INTERVAL - ms(1)));
        assert!(s.is_due(&k, t0 + ms(5) + INTERVAL));
    }

    #[test]
    fn any_change_of_the_announcement_is_due_at_once() {
        let t0 = Instant::now();
        let k = key(Role::Follower, 3, Some(2), 0);
        let mut s = Schedule::new(Timing::new(INTERVAL));
        s.succeeded(k, t0);
        let t = t0 + ms(10);
        for changed in [
            key(Role::Leader, 3, Some(2), 0),   // role
            key(Role::Follower, 4, Some(2), 0), // term
            key(Role::Follower, 3, None, 0),    // leader lost
            key(Role::Follower, 3, Some(3), 0), // leader moved
            key(Role::Follower, 3, Some(2), 1), // topics
        ] {
            assert!(s.is_due(&changed, t), "{changed:?}");
        }
        assert!(!s.is_due(&k, t));
    }

    #[test]
    fn failures_back_off_doubling_up_to_the_interval() {
        let mut now = Instant::now();
        let k = key(Role::Leader, 1, Some(1), 0);
        let mut s = Schedule::new(Timing::new(ms(5_000)));
        let mut waits = Vec::new();
        for _ in 0..6 {
            assert!(s.is_due(&k, now));
            let wait = s.failed(k, now);
            assert_eq!(s.next_at(&k), Some(now + wait));
            assert!(!s.is_due(&k, now + wait - ms(1)));
            waits.push(wait.as_millis());
            now += wait;
        }
        assert_eq!(waits, [500, 1_000, 2_000, 4_000, 5_000, 5_000]);
        // A success resets the backoff; the next failure waits 500 ms again.
        s.succeeded(k, now);
        assert_eq!(s.next_at(&k), Some(now + ms(5_000)));
        now += ms(5_000);
        assert_eq!(s.failed(k, now), ms(500));
    }

    #[test]
    fn a_change_while_failing_is_tried_at_once_and_keeps_the_backoff() {
        let t0 = Instant::now();
        let k = key(Role::Follower, 1, Some(1), 0);
        let mut s = Schedule::new(Timing::new(INTERVAL));
        assert_eq!(s.failed(k, t0), ms(500));
        assert_eq!(s.failed(k, t0 + ms(500)), ms(1_000));
        let leader = key(Role::Leader, 2, Some(2), 0);
        assert!(s.is_due(&leader, t0 + ms(600)), "the new role goes out at once");
        assert_eq!(s.failed(leader, t0 + ms(600)), ms(2_000));
        assert!(!s.is_due(&leader, t0 + ms(2_000)), "retries of it back off");
        assert!(s.is_due(&leader, t0 + ms(2_600)));
    }

    #[test]
    fn a_short_interval_bounds_the_first_backoff() {
        let k = key(Role::Leader, 1, Some(1), 0);
        let mut s = Schedule::new(Timing::new(ms(200)));
        assert_eq!(s.failed(k, Instant::now()), ms(200));
    }

    #[test]
    fn health_reports_first_success_failures_rate_limited_and_recovery() {
        let t0 = Instant::now();
        let mut h = Health::default();
        let up = |first, failures, down_for| Notice::Up {
            first,
            failures,
            down_for,
        };
        assert_eq!(h.succeeded(t0), up(true, 0, Duration::ZERO));
        assert_eq!(h.succeeded(t0 + INTERVAL), Notice::Quiet);
        let down = t0 + ms(40_000);
        let warn = |failures, down_for| Notice::Down { failures, down_for };
        assert_eq!(h.failed(down), warn(1, Duration::ZERO));
        assert_eq!(h.failed(down + ms(500)), Notice::Quiet);
        assert_eq!(h.failed(down + ms(30_000)), Notice::Quiet);
        assert_eq!(h.failed(down + WARN_EVERY), warn(4, WARN_EVERY));
        assert_eq!(h.failed(down + WARN_EVERY + ms(30_000)), Notice::Quiet);
        let back = down + ms(100_000);
        assert_eq!(h.succeeded(back), up(false, 5, ms(100_000)));
        assert_eq!(
            h.failed(back + ms(1)),
            warn(1, Duration::ZERO),
            "a new streak warns"
        );
    }

    #[test]
    fn failing_from_the_start_then_up_is_a_first_success() {
        let t0 = Instant::now();
        let mut h = Health::default();
        assert!(matches!(h.failed(t0), Notice::Down { failures: 1, .. }));
        assert_eq!(
            h.succeeded(t0 + ms(700)),
            Notice::Up {
                first: true,
                failures: 1,
                down_for: ms(700)
            }
        );
    }
}
