//! Consumers: [`simple::SimpleConsumer`] (receive, ack, change invisibility: the broker
//! tracks what each consumer group has consumed) and [`pull::PullConsumer`] (reads queues
//! from offsets the application moves and commits). Both hand out
//! [`received::ReceivedMessage`]s and filter with [`filter::FilterExpression`]s.
//!
//! Also the plumbing they share: a call to a broker group goes to its addresses in turn
//! ([`Failover`]): the one that answered last first (or the leader a follower named in its
//! answer), then the others — a follower relays calls to its leader — with a short backoff
//! after each full round, for at most `request_timeout` after the first failure.

/// The builder methods every consumer shares (`config`, `access_points`,
/// `consumer_group`), for a builder with fields `config: Option<ClientConfig>`,
/// `access_points: Vec<String>` and `group: String`.
macro_rules! consumer_builder_common {
    ($builder:ty) => {
        impl $builder {
            /// The whole client configuration (access points, timeouts, namespace).
            pub fn config(mut self, config: $crate::config::ClientConfig) -> Self {
                self.config = Some(config);
                self
            }

            /// Name servers (or broker addresses), `host:port`, tried in order (replacing
            /// those of [`Self::config`]).
            pub fn access_points<I, S>(mut self, points: I) -> Self
            where
                I: IntoIterator<Item = S>,
                S: AsRef<str>,
            {
                self.access_points = points.into_iter().map(|s| s.as_ref().to_owned()).collect();
                self
            }

            /// The consumer group (required).
            pub fn consumer_group(mut self, group: impl Into<String>) -> Self {
                self.group = group.into();
                self
            }
        }
    };
}

mod assignment;
pub mod filter;
mod ops;
pub mod pull;
mod pulls_in_flight;
pub mod push;
pub mod received;
pub mod simple;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;

use raftmq_proto::prost_types;
use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::error::Result;
use crate::rpc::Rpc;
use crate::rpc::call_error;

pub use filter::FilterExpression;
pub use pull::PullConsumer;
pub use pull::StartFrom;
pub use push::ConsumeMode;
pub use push::ConsumeResult;
pub use push::PushConsumer;
pub use received::ReceivedMessage;
pub use simple::SimpleConsumer;

/// The response header by which a broker that relayed a call names its leader.
pub const LEADER_HEADER: &str = "x-raftmq-leader";
/// Longest consumer group name.
pub const GROUP_MAX_LEN: usize = 255;
/// First backoff after a full round of failed addresses; it doubles per round.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest backoff between rounds.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// An attempt is not started with less time than this left.
const MIN_ATTEMPT: Duration = Duration::from_millis(50);

/// Checks a consumer group name: RocketMQ's alphabet `[A-Za-z0-9_%|-]`, 1..=255 bytes.
pub fn check_group(group: &str) -> Result<()> {
    if group.is_empty() {
        return Err(ClientError::InvalidArgument("consumer group is empty".into()));
    }
    if group.len() > GROUP_MAX_LEN {
        return Err(ClientError::InvalidArgument(format!(
            "consumer group is {} bytes long, at most {GROUP_MAX_LEN}",
            group.len()
        )));
    }
    if let Some(c) = group
        .bytes()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, b'_' | b'%' | b'|' | b'-')))
    {
        return Err(ClientError::InvalidArgument(format!(
            "consumer group {group:?} contains {:?}",
            c as char
        )));
    }
    Ok(())
}

/// The configuration a consumer builder was given: `config` (or the defaults) with
/// `access_points`, when given, in place of its own; checked.
pub(crate) fn resolve_config(config: Option<ClientConfig>, access_points: &[String]) -> Result<ClientConfig> {
    let mut config = match config {
        Some(c) => c,
        None => return ClientConfig::builder().access_points(access_points).build(),
    };
    if !access_points.is_empty() {
        config.access_points = ClientConfig::builder()
            .access_points(access_points)
            .build()?
            .access_points;
    }
    config.validate()?;
    Ok(config)
}

/// A protocol duration.
pub(crate) fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// Ok for an OK status, else its error.
pub(crate) fn check_status(status: Option<&pb::Status>, endpoint: &str) -> Result<()> {
    let status = status.cloned().unwrap_or_default();
    if status.code == pb::Code::Ok as i32 {
        Ok(())
    } else {
        Err(ClientError::from_status(&status, endpoint))
    }
}

/// The leader a relaying broker named in its answer.
pub(crate) fn leader_hint(md: &tonic::metadata::MetadataMap) -> Option<String> {
    md.get(LEADER_HEADER)?.to_str().ok().map(str::to_owned)
}

/// The order in which one call tries the addresses of a broker group, and when to stop.
/// Sans-IO: fed with the time of each failure.
#[derive(Debug, Clone)]
pub struct Failover {
    order: Vec<String>,
    pos: usize,
    failures: u32,
    first_failure: Option<Instant>,
    budget: Duration,
}

impl Failover {
    /// Tries `preferred` first (if it is one of `endpoints`), then `endpoints` in order;
    /// retries for at most `budget` after the first failure.
    pub fn new(endpoints: &[String], preferred: Option<&str>, budget: Duration) -> Self {
        let mut order = endpoints.to_vec();
        if let Some(i) = preferred.and_then(|p| order.iter().position(|e| e == p)) {
            let p = order.remove(i);
            order.insert(0, p);
        }
        Self {
            order,
            pos: 0,
            failures: 0,
            first_failure: None,
            budget,
        }
    }

    /// The address to call now; None without any.
    pub fn current(&self) -> Option<&str> {
        self.order.get(self.pos).map(String::as_str)
    }

    /// A retryable failure of the current address at `now`: moves to the next address and
    /// says how long to wait before calling it (nothing within a round, a doubling backoff
    /// after each full round), or None once the budget is spent.
    pub fn failed(&mut self, now: Instant) -> Option<Duration> {
        let first = *self.first_failure.get_or_insert(now);
        self.failures += 1;
        let n = self.order.len().max(1) as u32;
        self.pos = (self.failures % n) as usize;
        let delay = if self.failures.is_multiple_of(n) {
            let rounds = (self.failures / n).min(16);
            FIRST_BACKOFF.saturating_mul(1 << (rounds - 1)).min(MAX_BACKOFF)
        } else {
            Duration::ZERO
        };
        (now + delay < first + self.budget).then_some(delay)
    }
}

/// The address of each broker group that answered last (or the leader it named).
#[derive(Debug, Default)]
pub(crate) struct Preferred {
    by_group: Mutex<HashMap<String, String>>,
}

impl Preferred {
    fn get(&self, broker: &str) -> Option<String> {
        self.lock().get(broker).cloned()
    }

    fn answered(&self, broker: &str, addr: &str, hint: Option<&str>, endpoints: &[String]) {
        let best = hint.filter(|h| endpoints.iter().any(|e| e == h)).unwrap_or(addr);
        self.lock().insert(broker.to_owned(), best.to_owned());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.by_group.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a call to a broker group needs: channels and the preferred addresses.
#[derive(Debug)]
pub(crate) struct GroupCalls<'a> {
    pub rpc: &'a Rpc,
    pub preferred: &'a Preferred,
}

impl GroupCalls<'_> {
    /// Runs `attempt(address, time left)` on the addresses of broker group `broker` until
    /// one answers, an error is not retryable, the retry budget (`request_timeout` after
    /// the first failure) is spent or `deadline` is near. The attempt answers its value and
    /// the leader hint of the response.
    pub async fn call<T, F, Fut>(
        &self,
        broker: &str,
        endpoints: &[String],
        deadline: Instant,
        mut attempt: F,
    ) -> Result<T>
    where
        F: FnMut(String, Duration) -> Fut,
        Fut: Future<Output = Result<(T, Option<String>)>>,
    {
        let budget = self.rpc.config().request_timeout;
        let preferred = self.preferred.get(broker);
        let mut failover = Failover::new(endpoints, preferred.as_deref(), budget);
        loop {
            let addr = failover
                .current()
                .ok_or_else(|| ClientError::Unreachable(format!("broker group {broker} has no address")))?
                .to_owned();
            let left = deadline.saturating_duration_since(Instant::now());
            let err = match attempt(addr.clone(), left).await {
                Ok((value, hint)) => {
                    self.preferred.answered(broker, &addr, hint.as_deref(), endpoints);
                    return Ok(value);
                }
                Err(e) if e.is_retryable() => e,
                Err(e) => return Err(e),
            };
            if !matches!(err, ClientError::Broker { .. }) {
                self.rpc.drop_channel(&addr);
            }
            let now = Instant::now();
            match failover.failed(now) {
                Some(delay) if now + delay + MIN_ATTEMPT < deadline => {
                    tracing::debug!(broker, %addr, error = %err, ?delay, "trying the next address");
                    tokio::time::sleep(delay).await;
                }
                _ => return Err(err),
            }
        }
    }
}

impl GroupCalls<'_> {
    /// A unary call on broker group `broker`, through [`GroupCalls::call`]: each try
    /// lasts at most `request_timeout`, all of them twice that. `call` sends the request
    /// with a stub, `answer` reads the response (a retryable status is tried again).
    /// With `changes_state`, a refused receipt handle after a try that may have been
    /// applied (its answer was lost) is [`ClientError::OutcomeUnknown`]: that try may
    /// have used the handle up.
    pub async fn unary<Req, Resp, T, C, CF, A>(
        &self,
        broker: &str,
        endpoints: &[String],
        changes_state: bool,
        req: Req,
        call: C,
        answer: A,
    ) -> Result<T>
    where
        Req: Clone,
        C: Fn(MessagingServiceClient<Channel>, tonic::Request<Req>) -> CF,
        CF: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
        A: Fn(Resp, &str) -> Result<T>,
    {
        let timeout = self.rpc.config().request_timeout;
        let deadline = Instant::now() + timeout * 2;
        let uncertain = AtomicBool::new(false);
        let (req, call, answer, flag) = (&req, &call, &answer, &uncertain);
        let note = move |e: &ClientError| {
            if changes_state && maybe_applied(e) {
                flag.store(true, Ordering::Relaxed);
            }
        };
        let result = self
            .call(broker, endpoints, deadline, move |addr, left| {
                let request = self.rpc.request(req.clone(), left.min(timeout));
                let stub = self.rpc.messaging(&addr);
                async move {
                    let resp = call(stub?, request).await.map_err(|s| {
                        let e = call_error(&s, &addr, changes_state);
                        note(&e);
                        e
                    })?;
                    let hint = leader_hint(resp.metadata());
                    let value = answer(resp.into_inner(), &addr).inspect_err(note)?;
                    Ok((value, hint))
                }
            })
            .await;
        let uncertain = uncertain.load(Ordering::Relaxed);
        match result {
            Err(ClientError::Broker {
                code: pb::Code::InvalidReceiptHandle,
                message,
                ..
            }) if uncertain => Err(ClientError::OutcomeUnknown(format!(
                "an earlier try may have been applied before its answer was lost, and the receipt \
                 handle is now refused ({message})"
            ))),
            r => r,
        }
    }
}

/// Whether a failed try may still have been applied (it reached a broker, which may have
/// proposed it).
pub(crate) fn maybe_applied(e: &ClientError) -> bool {
    match e {
        ClientError::Unreachable(_) => false,
        ClientError::Broker { code, .. } => *code != pb::Code::HaNotAvailable && e.is_retryable(),
        other => other.is_retryable(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn group_names_are_checked() {
        check_group("GID_orders-1").expect("valid");
        for bad in ["", "a b", "g/1", &"g".repeat(256)] {
            assert!(
                matches!(check_group(bad), Err(ClientError::InvalidArgument(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn failover_goes_round_the_addresses_with_backoff_between_rounds() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut f = Failover::new(&eps(&["a", "b", "c"]), Some("b"), ms(3_000));
        assert_eq!(f.current(), Some("b"), "the preferred one first");
        assert_eq!(f.failed(t0), Some(Duration::ZERO));
        assert_eq!(f.current(), Some("a"));
        assert_eq!(f.failed(t0), Some(Duration::ZERO));
        assert_eq!(f.current(), Some("c"));
        assert_eq!(f.failed(t0), Some(ms(100)), "a full round: back off");
        assert_eq!(f.current(), Some("b"));
        f.failed(t0);
        f.failed(t0);
        assert_eq!(f.failed(t0), Some(ms(200)));
        assert_eq!(f.failed(t0 + ms(2_999)), Some(Duration::ZERO));
        assert_eq!(f.failed(t0 + ms(3_000)), None, "budget spent");
    }

    #[test]
    fn failover_without_a_known_preference_follows_the_route() {
        let t0 = Instant::now();
        let mut f = Failover::new(&eps(&["a", "b"]), Some("zz"), Duration::from_secs(10));
        assert_eq!(f.current(), Some("a"));
        f.failed(t0);
        assert_eq!(f.current(), Some("b"));
        let mut backoffs = Vec::new();
        for _ in 0..20 {
            if let Some(d) = f.failed(t0)
                && !d.is_zero()
            {
                backoffs.push(d.as_millis());
            }
        }
        assert_eq!(backoffs[..5], [100, 200, 400, 800, 1000]);
        assert!(Failover::new(&[], None, Duration::ZERO).current().is_none());
    }

    #[test]
    fn the_preferred_address_follows_answers_and_hints() {
        let p = Preferred::default();
        let group = eps(&["a", "b", "c"]);
        assert_eq!(p.get("g1"), None);
        p.answered("g1", "b", None, &group);
        assert_eq!(p.get("g1").as_deref(), Some("b"));
        p.answered("g1", "b", Some("c"), &group);
        assert_eq!(p.get("g1").as_deref(), Some("c"), "the leader a follower named");
        p.answered("g1", "a", Some("elsewhere"), &group);
        assert_eq!(p.get("g1").as_deref(), Some("a"), "an unknown hint is ignored");
    }

    #[test]
    fn only_tries_that_reached_a_broker_may_have_been_applied() {
        let broker = |code| ClientError::Broker {
            code,
            message: String::new(),
            endpoint: String::new(),
        };
        assert!(!maybe_applied(&ClientError::Unreachable("refused".into())));
        assert!(!maybe_applied(&broker(pb::Code::HaNotAvailable)));
        assert!(!maybe_applied(&broker(pb::Code::InvalidReceiptHandle)));
        assert!(maybe_applied(&broker(pb::Code::ProxyTimeout)));
        assert!(maybe_applied(&ClientError::OutcomeUnknown("reset".into())));
        assert!(maybe_applied(&ClientError::Timeout("slow".into())));
    }

    /// Compiles only if the consumers' futures can move between threads (`tokio::spawn`).
    #[allow(dead_code)]
    fn futures_are_send(
        c: &SimpleConsumer,
        p: &mut PullConsumer,
        m: &mut ReceivedMessage,
        q: &crate::route::MessageQueue,
    ) {
        fn send<T: Send>(_: T) {}
        send(c.receive(1, Duration::ZERO));
        send(c.ack(m));
        send(c.change_invisible_duration(m, Duration::ZERO));
        send(c.subscribe("t", FilterExpression::All));
        send(p.subscribe("t", FilterExpression::All));
        send(p.poll(Duration::ZERO));
        send(p.commit());
        send(p.seek_to_end(q));
    }

    #[test]
    fn configs_take_the_given_access_points() {
        let c = resolve_config(None, &eps(&["n1:9876;n2:9876"])).expect("config");
        assert_eq!(c.access_points, ["n1:9876", "n2:9876"]);
        let base = ClientConfig::builder()
            .access_points(["x:1"])
            .request_timeout(Duration::from_secs(7))
            .build()
            .expect("base");
        let c = resolve_config(Some(base.clone()), &eps(&["y:2"])).expect("config");
        assert_eq!(
            (c.access_points[0].as_str(), c.request_timeout.as_secs()),
            ("y:2", 7)
        );
        assert_eq!(
            resolve_config(Some(base), &[]).expect("kept").access_points,
            ["x:1"]
        );
        assert!(resolve_config(None, &[]).is_err());
        assert_eq!(duration(Duration::from_millis(1_500)).nanos, 500_000_000);
    }
}
