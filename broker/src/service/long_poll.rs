//! The sans-IO half of a long-polling receive: how long the poll may last (the requested
//! polling time, bounded by the node's maximum and by the client's gRPC deadline), whether
//! the group's state on some queues holds anything a pop would hand out, and when that can
//! change without any write (an in-flight message becoming visible again).
//!
//! Nothing here reads a clock or does I/O: callers pass the time and what they read from
//! the state machine, so every rule is unit-tested.

use std::time::Duration;

use raftmq_proto::prost_types;

use crate::command::TagFilter;
use crate::error::BrokerError;
use crate::error::BrokerResult;
use crate::error::InvalidCode;
use crate::sm::CqEntry;
use crate::sm::apply::pop::MAX_INFLIGHT_PER_QUEUE;
use crate::sm::apply::pop::MAX_SCAN_PER_QUEUE;

/// The request header that carries the client's deadline.
pub const GRPC_TIMEOUT_HEADER: &str = "grpc-timeout";
/// Most digits of a `grpc-timeout` value (gRPC over HTTP/2).
const MAX_TIMEOUT_DIGITS: usize = 8;

/// Parses a `grpc-timeout` value: 1 to 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || !value.is_ascii() {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if digits.len() > MAX_TIMEOUT_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The client's deadline as sent in the request metadata (`None` if absent or malformed).
pub fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let value = metadata.get(GRPC_TIMEOUT_HEADER)?.to_str().ok()?;
    parse_grpc_timeout(value)
}

/// The polling time a receive asked for, at most `max`; absent means `max`. A negative
/// one is `ILLEGAL_POLLING_TIME`.
pub fn poll_window(requested: Option<&prost_types::Duration>, max: Duration) -> BrokerResult<Duration> {
    let Some(d) = requested else {
        return Ok(max);
    };
    let ms = crate::message::duration_ms(d).ok_or_else(|| {
        BrokerError::invalid(
            InvalidCode::IllegalPollingTime,
            "long_polling_timeout must be a non-negative duration",
        )
    })?;
    Ok(Duration::from_millis(ms).min(max))
}

/// How long a poll may wait: its window, cut so that it ends `margin` before the client's
/// deadline. Zero when that is already too late (the receive then tries once, at once).
pub fn poll_budget(window: Duration, grpc_timeout: Option<Duration>, margin: Duration) -> Duration {
    match grpc_timeout {
        Some(t) => window.min(t.saturating_sub(margin)),
        None => window,
    }
}

/// What the state machine says about one queue for one consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueView {
    pub queue_id: u32,
    /// The group's next offset never handed out.
    pub next: u64,
    /// The queue's end (the offset the next message sent gets).
    pub end: u64,
    /// When each of the group's in-flight messages becomes visible again (ms since epoch).
    pub inflight: Vec<u64>,
    /// Whether the messages at `next..end` justify a pop under the receive's filter (see
    /// [`wants_new`]); always true without a filter.
    pub wanted_new: bool,
}

/// Whether a pop now would hand out something, and when that may change by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    pub poppable: bool,
    /// In-flight messages whose invisibility has expired (a pop redelivers them).
    pub expired: usize,
    /// The earliest time an in-flight message becomes visible again, if any is invisible.
    pub wake_at_ms: Option<u64>,
}

/// Mirrors what a pop does (`sm::apply::pop`): it redelivers expired in-flight messages,
/// then hands out new ones from queues below the in-flight limit; with `fifo`, a queue with
/// an invisible in-flight message hands out nothing new.
pub fn readiness(queues: &[QueueView], now_ms: u64, fifo: bool) -> Readiness {
    let mut r = Readiness {
        poppable: false,
        expired: 0,
        wake_at_ms: None,
    };
    for q in queues {
        // FIFO redelivers in offset order only up to the first message still invisible.
        let expired = if fifo {
            q.inflight.iter().take_while(|&&v| v <= now_ms).count()
        } else {
            q.inflight.iter().filter(|&&v| v <= now_ms).count()
        };
        let earliest = q.inflight.iter().copied().filter(|&v| v > now_ms).min();
        let locked = fifo && earliest.is_some();
        let room = q.inflight.len() < MAX_INFLIGHT_PER_QUEUE;
        let new = q.end > q.next && q.wanted_new && room && !locked;
        r.poppable |= expired > 0 || new;
        r.expired += expired;
        r.wake_at_ms = match (r.wake_at_ms, earliest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    r
}

/// How many consume-queue entries to read from the group's next offset to decide
/// [`QueueView::wanted_new`] under a tag filter (a pop scans at most as many).
pub fn scan_len(next: u64, end: u64) -> usize {
    end.saturating_sub(next).min(MAX_SCAN_PER_QUEUE as u64) as usize
}

/// Whether the entries read from the group's next offset (up to [`scan_len`]) justify a
/// pop under `filter`: one of them matches, or the backlog goes on beyond what was read
/// and a pop's scan would move the group past the unwanted ones.
pub fn wants_new(filter: &TagFilter, entries: &[CqEntry], backlog: u64) -> bool {
    let cut_off = entries.len() >= MAX_SCAN_PER_QUEUE && backlog > entries.len() as u64;
    cut_off || entries.iter().any(|e| filter.matches(e.tag_hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit_and_garbage_is_ignored() {
        let ok = |s: &str| parse_grpc_timeout(s).expect(s);
        assert_eq!(ok("30S"), Duration::from_secs(30));
        assert_eq!(ok("29999m"), Duration::from_millis(29_999));
        assert_eq!(ok("100000u"), Duration::from_millis(100));
        assert_eq!(ok("5000000n"), Duration::from_millis(5));
        assert_eq!(ok("2M"), Duration::from_secs(120));
        assert_eq!(ok("1H"), Duration::from_secs(3600));
        assert_eq!(ok("99999999H"), Duration::from_secs(99_999_999 * 3600));
        for bad in [
            "",
            "S",
            "30",
            "30s",
            "123456789S",
            "-1S",
            "+1S",
            "1.5S",
            "3 S",
            "é1S",
            "1SS",
        ] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_header_is_read_from_request_metadata() {
        let mut req = tonic::Request::new(());
        assert_eq!(grpc_timeout(req.metadata()), None);
        req.set_timeout(Duration::from_millis(1500));
        assert_eq!(grpc_timeout(req.metadata()), Some(Duration::from_millis(1500)));
        req.metadata_mut().insert(
            GRPC_TIMEOUT_HEADER,
            tonic::metadata::MetadataValue::from_static("soon"),
        );
        assert_eq!(grpc_timeout(req.metadata()), None);
    }

    #[test]
    fn the_window_is_bounded_and_negative_is_refused() {
        let max = Duration::from_secs(20);
        let d = |seconds, nanos| prost_types::Duration { seconds, nanos };
        assert_eq!(poll_window(None, max).expect("absent"), max);
        assert_eq!(
            poll_window(Some(&d(5, 0)), max).expect("5s"),
            Duration::from_secs(5)
        );
        assert_eq!(poll_window(Some(&d(60, 0)), max).expect("60s"), max);
        assert_eq!(poll_window(Some(&d(0, 0)), max).expect("0"), Duration::ZERO);
        for bad in [d(-1, 0), d(0, -5_000_000), d(i64::MAX, 0)] {
            match poll_window(Some(&bad), max) {
                Err(BrokerError::Invalid { code, .. }) => assert_eq!(code, InvalidCode::IllegalPollingTime),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_poll_ends_before_the_clients_deadline() {
        let s = Duration::from_secs;
        let margin = s(2);
        assert_eq!(poll_budget(s(20), None, margin), s(20));
        assert_eq!(poll_budget(s(20), Some(s(30)), margin), s(20));
        assert_eq!(poll_budget(s(20), Some(s(10)), margin), s(8));
        assert_eq!(
            poll_budget(s(20), Some(s(1)), margin),
            Duration::ZERO,
            "too late: try once"
        );
        assert_eq!(poll_budget(Duration::ZERO, Some(s(30)), margin), Duration::ZERO);
    }

    fn view(next: u64, end: u64, inflight: &[u64]) -> QueueView {
        QueueView {
            queue_id: 0,
            next,
            end,
            inflight: inflight.to_vec(),
            wanted_new: true,
        }
    }

    #[test]
    fn new_messages_and_expired_ones_are_poppable() {
        let now = 1_000;
        let r = readiness(&[view(3, 3, &[])], now, false);
        assert_eq!(
            (r.poppable, r.expired, r.wake_at_ms),
            (false, 0, None),
            "caught up"
        );
        assert!(
            readiness(&[view(3, 3, &[]), view(0, 1, &[])], now, false).poppable,
            "any queue"
        );
        let r = readiness(&[view(3, 3, &[1_000, 1_500])], now, false);
        assert_eq!(
            (r.poppable, r.expired, r.wake_at_ms),
            (true, 1, Some(1_500)),
            "expired"
        );
        let r = readiness(&[view(3, 3, &[2_000]), view(5, 5, &[1_200])], now, false);
        assert_eq!(
            (r.poppable, r.wake_at_ms),
            (false, Some(1_200)),
            "wake for the earliest"
        );
        let filtered = QueueView {
            wanted_new: false,
            ..view(0, 9, &[])
        };
        assert!(
            !readiness(&[filtered], now, false).poppable,
            "nothing the filter wants"
        );
    }

    #[test]
    fn the_inflight_limit_and_the_fifo_lock_stop_new_messages_only() {
        let now = 1_000;
        let full = vec![5_000; MAX_INFLIGHT_PER_QUEUE];
        assert!(!readiness(&[view(0, 1 << 20, &full)], now, false).poppable);
        let mut full_expired = full.clone();
        full_expired[0] = 10;
        assert!(readiness(&[view(0, 1 << 20, &full_expired)], now, false).poppable);

        let locked = view(1, 5, &[5_000]);
        assert!(
            readiness(std::slice::from_ref(&locked), now, false).poppable,
            "not fifo"
        );
        let r = readiness(std::slice::from_ref(&locked), now, true);
        assert_eq!(
            (r.poppable, r.wake_at_ms),
            (false, Some(5_000)),
            "fifo: wait for the lock"
        );
        assert!(
            readiness(&[view(1, 5, &[900])], now, true).poppable,
            "expired lock: redeliver"
        );
        assert!(
            readiness(&[view(1, 5, &[])], now, true).poppable,
            "fifo without lock"
        );
        // In offset order, a later expired message waits behind an earlier invisible one.
        let r = readiness(&[view(5, 5, &[5_000, 900])], now, true);
        assert_eq!(
            (r.poppable, r.expired),
            (false, 0),
            "fifo: redelivery in order only"
        );
        assert!(readiness(&[view(5, 5, &[5_000, 900])], now, false).poppable);
    }

    fn entry(tag: &str) -> CqEntry {
        CqEntry {
            log_index: 1,
            slot: 1,
            size: 10,
            tag_hash: crate::command::tag_hash(tag),
            store_time_ms: 0,
        }
    }

    #[test]
    fn a_tag_filter_pops_only_for_a_match_or_to_skip_a_long_backlog() {
        let f = TagFilter::Hashes(vec![crate::command::tag_hash("A")]);
        assert!(wants_new(&f, &[entry("B"), entry("A")], 2));
        assert!(!wants_new(&f, &[entry("B"), entry("C")], 2));
        assert!(wants_new(&TagFilter::All, &[entry("B")], 1));
        let many = vec![entry("B"); MAX_SCAN_PER_QUEUE];
        assert!(
            wants_new(&f, &many, MAX_SCAN_PER_QUEUE as u64 + 1),
            "skip past a long backlog"
        );
        assert!(
            !wants_new(&f, &many, MAX_SCAN_PER_QUEUE as u64),
            "all read, none wanted"
        );
        assert_eq!(scan_len(5, 3), 0);
        assert_eq!(scan_len(5, 8), 3);
        assert_eq!(scan_len(0, u64::MAX), MAX_SCAN_PER_QUEUE);
    }
}
