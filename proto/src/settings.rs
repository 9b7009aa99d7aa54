//! The server's answer to the Settings a client sends on its Telemetry stream: the client's
//! settings echoed, with the values the server decides filled in.
//!
//! Several official clients wait for this full answer before they start: a producer needs
//! `publishing.max_body_size` and an *exponential* retry policy, a consumer a *customized*
//! one (RocketMQ's redelivery delays), its receive batch size and long-polling timeout.
//! Pure functions, so the reply is testable without a broker.

use crate::rocketmq::v2 as pb;
use crate::rocketmq::v2::settings::PubSub;

/// Attempts of a producer's send unless the client asked for another number.
pub const PRODUCER_MAX_ATTEMPTS: i32 = 3;
/// Messages per receive unless the consumer asked for another number.
pub const RECEIVE_BATCH_SIZE: i32 = 32;
/// RocketMQ's redelivery delays of a consumer group (its retry levels), in milliseconds.
pub const CONSUMER_RETRY_DELAYS_MS: [u64; 18] = [
    1_000, 5_000, 10_000, 30_000, 60_000, 120_000, 180_000, 240_000, 300_000, 360_000, 420_000, 480_000,
    540_000, 600_000, 1_200_000, 1_800_000, 3_600_000, 7_200_000,
];

/// The server's side of the settings exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerSettings {
    /// Largest message body accepted, bytes.
    pub max_body_size: usize,
    /// Long-polling timeout of a consumer that did not choose one, ms.
    pub long_polling_timeout_ms: u64,
    /// Deliveries of a message to a consumer that did not choose a number.
    pub consumer_max_attempts: u32,
}

impl Default for ServerSettings {
    /// RocketMQ's defaults: 4 MiB bodies, 20 s long polls, 17 deliveries (16 retries).
    fn default() -> Self {
        Self {
            max_body_size: 4 * 1024 * 1024,
            long_polling_timeout_ms: 20_000,
            consumer_max_attempts: 17,
        }
    }
}

/// A protobuf duration of `ms` milliseconds.
pub fn duration(ms: u64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
    }
}

/// The settings to send back to a client that announced `client`; `fifo_topic` says
/// whether a topic is a FIFO topic (a subscription to one is consumed in order).
pub fn reply(
    client: &pb::Settings,
    server: &ServerSettings,
    fifo_topic: impl Fn(&str) -> bool,
) -> pb::Settings {
    let mut out = client.clone();
    let client_attempts = client
        .backoff_policy
        .as_ref()
        .map(|p| p.max_attempts)
        .filter(|a| *a > 0);
    let pub_sub = client
        .pub_sub
        .clone()
        .or_else(|| implied_pub_sub(client.client_type));
    match pub_sub {
        Some(PubSub::Subscription(s)) => {
            let default_attempts = i32::try_from(server.consumer_max_attempts).unwrap_or(i32::MAX);
            out.backoff_policy = Some(consumer_backoff(client_attempts.unwrap_or(default_attempts)));
            out.pub_sub = Some(PubSub::Subscription(subscription(s, server, fifo_topic)));
        }
        Some(PubSub::Publishing(p)) => {
            out.backoff_policy = Some(producer_backoff(client_attempts.unwrap_or(PRODUCER_MAX_ATTEMPTS)));
            out.pub_sub = Some(PubSub::Publishing(publishing(p, server)));
        }
        None => {
            out.backoff_policy = Some(producer_backoff(client_attempts.unwrap_or(PRODUCER_MAX_ATTEMPTS)));
        }
    }
    out
}

/// The publishing or subscription part a client of `client_type` needs but did not send.
fn implied_pub_sub(client_type: Option<i32>) -> Option<PubSub> {
    match pb::ClientType::try_from(client_type?).ok()? {
        pb::ClientType::Producer => Some(PubSub::Publishing(pb::Publishing::default())),
        pb::ClientType::Unspecified => None,
        _ => Some(PubSub::Subscription(pb::Subscription::default())),
    }
}

fn publishing(mut p: pb::Publishing, server: &ServerSettings) -> pb::Publishing {
    p.max_body_size = i32::try_from(server.max_body_size).unwrap_or(i32::MAX);
    p.validate_message_type = false;
    p
}

/// The subscription echoed with the server's defaults. `fifo` is set whenever the client
/// asked for it or subscribes to a FIFO topic: the Java push consumer consumes in order
/// only when the server says so.
fn subscription(
    mut s: pb::Subscription,
    server: &ServerSettings,
    fifo_topic: impl Fn(&str) -> bool,
) -> pb::Subscription {
    let fifo_subscribed = s
        .subscriptions
        .iter()
        .filter_map(|e| e.topic.as_ref())
        .any(|t| fifo_topic(&t.name));
    s.fifo = Some(s.fifo.unwrap_or(false) || fifo_subscribed);
    if s.receive_batch_size.is_none_or(|b| b <= 0) {
        s.receive_batch_size = Some(RECEIVE_BATCH_SIZE);
    }
    if s.long_polling_timeout.is_none() {
        s.long_polling_timeout = Some(duration(server.long_polling_timeout_ms));
    }
    s
}

/// A producer's retry policy: 10 ms, doubling, at most 1 s between attempts.
pub fn producer_backoff(max_attempts: i32) -> pb::RetryPolicy {
    pb::RetryPolicy {
        max_attempts,
        strategy: Some(pb::retry_policy::Strategy::ExponentialBackoff(
            pb::ExponentialBackoff {
                initial: Some(duration(10)),
                max: Some(duration(1_000)),
                multiplier: 2.0,
            },
        )),
    }
}

/// A consumer's retry policy: RocketMQ's redelivery delays.
pub fn consumer_backoff(max_attempts: i32) -> pb::RetryPolicy {
    pb::RetryPolicy {
        max_attempts,
        strategy: Some(pb::retry_policy::Strategy::CustomizedBackoff(
            pb::CustomizedBackoff {
                next: CONSUMER_RETRY_DELAYS_MS.iter().map(|ms| duration(*ms)).collect(),
            },
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn duration_ms(d: &prost_types::Duration) -> Option<u64> {
        u64::try_from(d.seconds * 1000 + i64::from(d.nanos / 1_000_000)).ok()
    }

    fn no_fifo(_: &str) -> bool {
        false
    }

    const SERVER: ServerSettings = ServerSettings {
        max_body_size: 4 << 20,
        long_polling_timeout_ms: 20_000,
        consumer_max_attempts: 17,
    };

    fn client(client_type: pb::ClientType, pub_sub: Option<PubSub>) -> pb::Settings {
        pb::Settings {
            client_type: Some(client_type as i32),
            access_point: Some(pb::Endpoints {
                scheme: pb::AddressScheme::IPv4 as i32,
                addresses: vec![pb::Address {
                    host: "127.0.0.1".into(),
                    port: 8081,
                }],
            }),
            request_timeout: Some(duration(3_000)),
            user_agent: Some(pb::Ua {
                language: pb::Language::Java as i32,
                version: "5.0.7".into(),
                ..Default::default()
            }),
            pub_sub,
            ..Default::default()
        }
    }

    #[test]
    fn a_producer_gets_the_body_limit_and_an_exponential_backoff() {
        let topics = vec![pb::Resource {
            resource_namespace: String::new(),
            name: "orders".into(),
        }];
        let c = client(
            pb::ClientType::Producer,
            Some(PubSub::Publishing(pb::Publishing {
                topics: topics.clone(),
                validate_message_type: true,
                ..Default::default()
            })),
        );
        let r = reply(&c, &SERVER, no_fifo);
        assert_eq!(
            (r.client_type, &r.access_point, &r.user_agent),
            (c.client_type, &c.access_point, &c.user_agent)
        );
        assert_eq!(r.request_timeout, c.request_timeout);
        let Some(PubSub::Publishing(p)) = &r.pub_sub else {
            panic!("publishing expected, got {:?}", r.pub_sub);
        };
        assert_eq!(
            (p.max_body_size, p.validate_message_type, &p.topics),
            (4 << 20, false, &topics)
        );
        let policy = r.backoff_policy.expect("backoff");
        assert_eq!(policy.max_attempts, PRODUCER_MAX_ATTEMPTS);
        let Some(pb::retry_policy::Strategy::ExponentialBackoff(e)) = policy.strategy else {
            panic!("exponential backoff expected");
        };
        assert_eq!(e.initial.as_ref().and_then(duration_ms), Some(10));
        assert_eq!(e.max.as_ref().and_then(duration_ms), Some(1_000));
        assert_eq!(e.multiplier, 2.0);
    }

    #[test]
    fn a_producer_keeps_its_own_attempts() {
        let mut c = client(pb::ClientType::Producer, None);
        c.backoff_policy = Some(pb::RetryPolicy {
            max_attempts: 5,
            strategy: None,
        });
        let r = reply(&c, &SERVER, no_fifo);
        assert_eq!(r.backoff_policy.map(|p| p.max_attempts), Some(5));
        assert!(
            matches!(r.pub_sub, Some(PubSub::Publishing(_))),
            "implied by the client type"
        );
    }

    #[test]
    fn a_consumer_gets_defaults_and_rocketmq_retry_delays() {
        let c = client(
            pb::ClientType::SimpleConsumer,
            Some(PubSub::Subscription(pb::Subscription {
                fifo: Some(true),
                ..Default::default()
            })),
        );
        let r = reply(&c, &SERVER, no_fifo);
        let Some(PubSub::Subscription(s)) = &r.pub_sub else {
            panic!("subscription expected");
        };
        assert_eq!(s.fifo, Some(true));
        assert_eq!(s.receive_batch_size, Some(RECEIVE_BATCH_SIZE));
        assert_eq!(
            s.long_polling_timeout.as_ref().and_then(duration_ms),
            Some(20_000)
        );
        let policy = r.backoff_policy.expect("backoff");
        assert_eq!(policy.max_attempts, 17);
        let Some(pb::retry_policy::Strategy::CustomizedBackoff(b)) = policy.strategy else {
            panic!("customized backoff expected");
        };
        let delays: Vec<u64> = b.next.iter().filter_map(duration_ms).collect();
        assert_eq!(delays, CONSUMER_RETRY_DELAYS_MS);
    }

    #[test]
    fn a_consumer_keeps_what_it_chose() {
        let mut c = client(
            pb::ClientType::PushConsumer,
            Some(PubSub::Subscription(pb::Subscription {
                receive_batch_size: Some(8),
                long_polling_timeout: Some(duration(5_000)),
                ..Default::default()
            })),
        );
        c.backoff_policy = Some(pb::RetryPolicy {
            max_attempts: 4,
            strategy: None,
        });
        let r = reply(&c, &SERVER, no_fifo);
        let Some(PubSub::Subscription(s)) = &r.pub_sub else {
            panic!("subscription expected");
        };
        assert_eq!(s.receive_batch_size, Some(8));
        assert_eq!(s.long_polling_timeout.as_ref().and_then(duration_ms), Some(5_000));
        assert_eq!(s.fifo, Some(false));
        assert_eq!(r.backoff_policy.map(|p| p.max_attempts), Some(4));
    }

    #[test]
    fn a_subscription_to_a_fifo_topic_is_consumed_in_order() {
        let entry = |topic: &str| pb::SubscriptionEntry {
            topic: Some(pb::Resource {
                resource_namespace: String::new(),
                name: topic.into(),
            }),
            expression: None,
        };
        let fifo_of = |subscribed: &[&str], client_fifo: Option<bool>| {
            let c = client(
                pb::ClientType::PushConsumer,
                Some(PubSub::Subscription(pb::Subscription {
                    subscriptions: subscribed.iter().map(|t| entry(t)).collect(),
                    fifo: client_fifo,
                    ..Default::default()
                })),
            );
            match reply(&c, &SERVER, |t| t.starts_with("fifo")).pub_sub {
                Some(PubSub::Subscription(s)) => s.fifo,
                other => panic!("subscription expected, got {other:?}"),
            }
        };
        assert_eq!(fifo_of(&["orders"], None), Some(false));
        assert_eq!(fifo_of(&["fifo-orders"], None), Some(true));
        assert_eq!(fifo_of(&["orders", "fifo-orders"], Some(false)), Some(true));
        assert_eq!(
            fifo_of(&["orders"], Some(true)),
            Some(true),
            "the client's choice stays"
        );
        assert_eq!(fifo_of(&[], None), Some(false));
    }
}
