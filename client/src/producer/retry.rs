//! When a send is tried again, and what it reports when it gives up; sans-IO.
//!
//! A send makes up to `max_attempts` attempts (RocketMQ: 1 + 2 retries); one attempt goes
//! to one broker group and walks that group's addresses ([`address_step`]). After a failed
//! attempt the plan ([`RetryPlan::on_failure`]) says whether to try again:
//!
//! - never after bad input or another refusal that no broker would accept (the error is
//!   not [retryable](ClientError::is_retryable));
//! - a topic the group does not know, or does not let us write to, only while another
//!   group is left to try (RocketMQ retries `TOPIC_NOT_EXIST` and `NO_PERMISSION` too);
//! - an attempt whose outcome is unknown (it timed out or lost its connection after the
//!   request left, e.g. during a leader change) is tried again, like RocketMQ does on a
//!   timeout: delivery is at least once, the retry carries the same message id, and the
//!   message may be stored twice. [`RetryPolicy::retry_unknown_outcome`] turns this off.
//! - When the plan gives up and any attempt's outcome was unknown, the send's error is
//!   [`ClientError::OutcomeUnknown`] whatever the last attempt's error was: the message
//!   may be stored.
//!
//! A retry to a group not yet tried starts at once; a retry to a group tried already (a
//! topic on one group, an ordered send) or after `TOO_MANY_REQUESTS` waits an exponential
//! backoff.

use std::time::Duration;

use raftmq_proto::rocketmq::v2 as pb;

use crate::error::ClientError;

/// How a send retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (RocketMQ's default: 3).
    pub max_attempts: u32,
    /// Whether an attempt whose outcome is unknown is tried again (at least once: the
    /// message may then be stored twice).
    pub retry_unknown_outcome: bool,
    /// The first backoff before retrying a group tried already; doubled each time.
    pub backoff: Duration,
    /// The longest backoff.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            retry_unknown_outcome: true,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Try again after `delay`.
    Retry {
        /// How long to wait first (zero: at once).
        delay: Duration,
    },
    /// Give up with this error.
    Fail(ClientError),
}

/// The retry state of one send.
#[derive(Debug, Clone)]
pub struct RetryPlan {
    policy: RetryPolicy,
    groups: usize,
    attempts: u32,
    tried: Vec<String>,
    unknown: bool,
}

impl RetryPlan {
    /// A plan for a send whose queues are on `groups` broker groups (1 for an ordered
    /// send: it never changes its queue).
    pub fn new(policy: RetryPolicy, groups: usize) -> Self {
        Self {
            policy,
            groups: groups.max(1),
            attempts: 0,
            tried: Vec::new(),
            unknown: false,
        }
    }

    /// An attempt to `broker` begins.
    pub fn start_attempt(&mut self, broker: &str) {
        self.attempts += 1;
        if !self.tried.iter().any(|t| t == broker) {
            self.tried.push(broker.to_owned());
        }
    }

    /// The groups tried so far, in order.
    pub fn tried(&self) -> &[String] {
        &self.tried
    }

    /// The attempts begun so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    fn untried_left(&self) -> bool {
        self.tried.len() < self.groups
    }

    /// The last attempt failed with `err`: try again, or the send's error.
    pub fn on_failure(&mut self, err: ClientError) -> Verdict {
        let unknown = matches!(err, ClientError::OutcomeUnknown(_));
        self.unknown |= unknown;
        let group_specific =
            matches!(err, ClientError::NotFound(_)) || err.code() == Some(pb::Code::Forbidden);
        let retry = if group_specific {
            self.untried_left()
        } else {
            err.is_retryable() && (!unknown || self.policy.retry_unknown_outcome)
        };
        if !retry || self.attempts >= self.policy.max_attempts {
            return Verdict::Fail(self.final_error(err));
        }
        let busy = err.code() == Some(pb::Code::TooManyRequests);
        let delay = if self.untried_left() && !busy {
            Duration::ZERO
        } else {
            let doublings = self.attempts.saturating_sub(1).min(16);
            (self.policy.backoff * 2u32.pow(doublings)).min(self.policy.max_backoff)
        };
        Verdict::Retry { delay }
    }

    /// The send's error when it gives up after `last`: outcome unknown if any attempt's
    /// outcome was.
    fn final_error(&self, last: ClientError) -> ClientError {
        match last {
            ClientError::OutcomeUnknown(_) => last,
            other if self.unknown => ClientError::OutcomeUnknown(format!(
                "an earlier attempt may have stored the message; the last of {} attempts failed: {other}",
                self.attempts
            )),
            other => other,
        }
    }
}

/// What one address's answer means for the attempt.
#[derive(Debug, Clone)]
pub enum AddressStep {
    /// Try the next address of the same group (the request certainly did not reach the
    /// leader, or the connection broke — a follower forwards to the leader).
    NextAddress(ClientError),
    /// The attempt failed; the retry plan decides.
    EndAttempt(ClientError),
}

/// How a failed call to one address of a group continues. A timeout ends the attempt: the
/// group is slow or electing, and another address would only wait as long again.
pub fn address_step(err: ClientError, timed_out: bool) -> AddressStep {
    let next = match &err {
        ClientError::Unreachable(_) => true,
        ClientError::OutcomeUnknown(_) => !timed_out,
        ClientError::Broker { code, .. } => *code == pb::Code::HaNotAvailable,
        _ => false,
    };
    if next {
        AddressStep::NextAddress(err)
    } else {
        AddressStep::EndAttempt(err)
    }
}

/// The error of a broker's non-OK answer to a send: the codes of a write that may have
/// happened (a leader change during the write, a timeout behind the broker) are
/// [`ClientError::OutcomeUnknown`].
pub fn send_status_error(status: &pb::Status, endpoint: &str) -> ClientError {
    let code = pb::Code::try_from(status.code).unwrap_or(pb::Code::Unspecified);
    match code {
        pb::Code::ProxyTimeout
        | pb::Code::RequestTimeout
        | pb::Code::MasterPersistenceTimeout
        | pb::Code::SlavePersistenceTimeout => {
            ClientError::OutcomeUnknown(format!("{endpoint}: {code:?}: {}", status.message))
        }
        _ => ClientError::from_status(status, endpoint),
    }
}

/// Of the errors of several addresses of one attempt, the one to report: an unknown
/// outcome stays unknown.
pub fn worse(previous: Option<ClientError>, new: ClientError) -> ClientError {
    match previous {
        Some(p @ ClientError::OutcomeUnknown(_)) if !matches!(new, ClientError::OutcomeUnknown(_)) => {
            ClientError::OutcomeUnknown(format!("{p}; then {new}"))
        }
        _ => new,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreachable() -> ClientError {
        ClientError::Unreachable("a:1 refused".into())
    }

    fn unknown() -> ClientError {
        ClientError::OutcomeUnknown("a:1 deadline".into())
    }

    fn broker(code: pb::Code) -> ClientError {
        send_status_error(
            &pb::Status {
                code: code as i32,
                message: "m".into(),
            },
            "a:1",
        )
    }

    fn plan(groups: usize) -> RetryPlan {
        RetryPlan::new(RetryPolicy::default(), groups)
    }

    /// The delay of a retry; None when the plan gives up.
    fn delay(v: Verdict) -> Option<Duration> {
        match v {
            Verdict::Retry { delay } => Some(delay),
            Verdict::Fail(_) => None,
        }
    }

    #[test]
    fn failures_are_retried_twice_at_once_on_other_groups() {
        let mut p = plan(3);
        p.start_attempt("g1");
        assert_eq!(delay(p.on_failure(unreachable())), Some(Duration::ZERO));
        p.start_attempt("g2");
        assert_eq!(
            delay(p.on_failure(broker(pb::Code::HaNotAvailable))),
            Some(Duration::ZERO)
        );
        p.start_attempt("g3");
        assert_eq!(p.tried(), ["g1", "g2", "g3"]);
        match p.on_failure(unreachable()) {
            Verdict::Fail(ClientError::Unreachable(_)) => {}
            other => panic!("gives up with the last error, got {other:?}"),
        }
        assert_eq!(p.attempts(), 3);
    }

    #[test]
    fn one_group_is_retried_with_backoff() {
        let ms = |n| Some(Duration::from_millis(n));
        let mut p = plan(1);
        p.start_attempt("g1");
        assert_eq!(delay(p.on_failure(unreachable())), ms(100));
        p.start_attempt("g1");
        assert_eq!(delay(p.on_failure(broker(pb::Code::InternalError))), ms(200));
        p.start_attempt("g1");
        assert_eq!(delay(p.on_failure(broker(pb::Code::InternalError))), None);
        let mut p = RetryPlan::new(
            RetryPolicy {
                max_attempts: 10,
                ..RetryPolicy::default()
            },
            2,
        );
        p.start_attempt("g1");
        assert_eq!(
            delay(p.on_failure(broker(pb::Code::TooManyRequests))),
            ms(100),
            "busy: backoff"
        );
        for _ in 0..6 {
            p.start_attempt("g2");
        }
        assert_eq!(delay(p.on_failure(unreachable())), ms(1_000), "capped");
    }

    #[test]
    fn bad_input_is_never_retried_and_missing_topics_only_on_other_groups() {
        let mut p = plan(2);
        p.start_attempt("g1");
        assert!(matches!(
            p.on_failure(broker(pb::Code::MessageBodyTooLarge)),
            Verdict::Fail(ClientError::Broker { .. })
        ));
        let mut p = plan(2);
        p.start_attempt("g1");
        assert!(matches!(
            p.on_failure(broker(pb::Code::TopicNotFound)),
            Verdict::Retry { .. }
        ));
        p.start_attempt("g2");
        assert!(matches!(
            p.on_failure(broker(pb::Code::TopicNotFound)),
            Verdict::Fail(ClientError::NotFound(_))
        ));
        let mut p = plan(1);
        p.start_attempt("g1");
        assert!(matches!(
            p.on_failure(broker(pb::Code::Forbidden)),
            Verdict::Fail(_)
        ));
    }

    #[test]
    fn an_unknown_outcome_is_retried_and_reported_if_all_attempts_fail() {
        let mut p = plan(2);
        p.start_attempt("g1");
        assert!(matches!(p.on_failure(unknown()), Verdict::Retry { .. }));
        p.start_attempt("g2");
        assert!(matches!(p.on_failure(unreachable()), Verdict::Retry { .. }));
        p.start_attempt("g1");
        match p.on_failure(broker(pb::Code::BadRequest)) {
            Verdict::Fail(ClientError::OutcomeUnknown(m)) => assert!(m.contains("3 attempts"), "{m}"),
            other => panic!("expected an unknown outcome, got {other:?}"),
        }
        // With retries of unknown outcomes off, the first one ends the send.
        let mut p = RetryPlan::new(
            RetryPolicy {
                retry_unknown_outcome: false,
                ..RetryPolicy::default()
            },
            2,
        );
        p.start_attempt("g1");
        assert!(matches!(
            p.on_failure(unknown()),
            Verdict::Fail(ClientError::OutcomeUnknown(_))
        ));
    }

    #[test]
    fn addresses_are_walked_on_transport_failures_but_not_after_a_timeout() {
        assert!(matches!(
            address_step(unreachable(), false),
            AddressStep::NextAddress(_)
        ));
        assert!(matches!(
            address_step(unknown(), false),
            AddressStep::NextAddress(_)
        ));
        assert!(matches!(
            address_step(unknown(), true),
            AddressStep::EndAttempt(_)
        ));
        assert!(matches!(
            address_step(broker(pb::Code::HaNotAvailable), false),
            AddressStep::NextAddress(_)
        ));
        assert!(matches!(
            address_step(broker(pb::Code::TooManyRequests), false),
            AddressStep::EndAttempt(_)
        ));
        assert!(matches!(
            broker(pb::Code::ProxyTimeout),
            ClientError::OutcomeUnknown(_)
        ));
        assert!(matches!(
            broker(pb::Code::TopicNotFound),
            ClientError::NotFound(_)
        ));
        let w = worse(Some(unknown()), unreachable());
        assert!(matches!(w, ClientError::OutcomeUnknown(_)));
        assert!(matches!(
            worse(Some(unreachable()), unknown()),
            ClientError::OutcomeUnknown(_)
        ));
        assert!(matches!(worse(None, unreachable()), ClientError::Unreachable(_)));
    }
}
