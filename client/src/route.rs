//! Topic routes: which message queues a topic has, on which broker group, reached at which
//! addresses. Asked of the access points (name servers) in turn, cached, refreshed every
//! `route_refresh` and on demand; a failed refresh keeps the last route. [`Routes::get`]
//! waits for the access points only when nothing is cached: a route older than
//! `route_refresh` is answered at once and refreshed in the background.
//!
//! On demand: a producer whose send attempt failed, or a consumer whose receive or pull
//! failed, calls [`Routes::refresh_soon`] (the queue may have moved, its group may have
//! gained or lost an address). That starts one refresh in the background unless one of
//! the topic is running, or the route, or the last on-demand attempt, is younger than
//! [`ON_DEMAND_MIN_INTERVAL`] ([`OnDemand`]): a burst of failures costs one query per
//! topic and second at most. The caller goes on with the route it has; later calls see
//! the new one.

use std::collections::BTreeSet;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use raftmq_proto::rocketmq::v2 as pb;

use crate::access::AccessPoints;
use crate::error::ClientError;
use crate::error::Result;
use crate::rpc::ENDPOINTS_HEADER;
use crate::rpc::Rpc;

/// One message queue of a topic.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageQueue {
    /// The topic's name.
    pub topic: String,
    /// The broker group (RocketMQ's broker name).
    pub broker: String,
    /// The queue id within its broker group.
    pub id: i32,
    /// Addresses that reach the group, the leader first.
    pub endpoints: Vec<String>,
    /// Whether producers may write and consumers read.
    pub permission: pb::Permission,
    /// The message types the queue takes (normal, FIFO, ...).
    pub accept: Vec<pb::MessageType>,
    wire: pb::MessageQueue,
}

impl MessageQueue {
    /// Whether producers may send to it.
    pub fn writable(&self) -> bool {
        matches!(self.permission, pb::Permission::Write | pb::Permission::ReadWrite)
    }

    /// Whether consumers may receive from it.
    pub fn readable(&self) -> bool {
        matches!(self.permission, pb::Permission::Read | pb::Permission::ReadWrite)
    }

    /// The queue as the protocol names it.
    pub fn to_wire(&self) -> pb::MessageQueue {
        self.wire.clone()
    }

    /// The queue from the protocol's form; None without a broker or an address.
    pub fn from_wire(q: &pb::MessageQueue) -> Option<Self> {
        let broker = q.broker.as_ref()?;
        let endpoints = addresses(broker.endpoints.as_ref()?);
        if endpoints.is_empty() {
            return None;
        }
        Some(Self {
            topic: q.topic.as_ref().map(|t| t.name.clone()).unwrap_or_default(),
            broker: broker.name.clone(),
            id: q.id,
            endpoints,
            permission: pb::Permission::try_from(q.permission).unwrap_or(pb::Permission::None),
            accept: q
                .accept_message_types
                .iter()
                .filter_map(|t| pb::MessageType::try_from(*t).ok())
                .collect(),
            wire: q.clone(),
        })
    }

    /// `broker:id`, for logs and maps.
    pub fn key(&self) -> String {
        format!("{}:{}", self.broker, self.id)
    }
}

/// `host:port` of every address of `e` (IPv6 in brackets).
pub fn addresses(e: &pb::Endpoints) -> Vec<String> {
    e.addresses
        .iter()
        .map(|a| {
            if a.host.contains(':') {
                format!("[{}]:{}", a.host, a.port)
            } else {
                format!("{}:{}", a.host, a.port)
            }
        })
        .collect()
}

/// A topic's queues, in the order the route lists them.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicRoute {
    /// The topic's name.
    pub topic: String,
    /// Its queues on every broker group.
    pub queues: Vec<MessageQueue>,
}

impl TopicRoute {
    /// The broker groups, in order of first appearance.
    pub fn brokers(&self) -> Vec<&str> {
        let mut seen = BTreeSet::new();
        self.queues
            .iter()
            .filter(|q| seen.insert(q.broker.as_str()))
            .map(|q| q.broker.as_str())
            .collect()
    }
}

#[derive(Debug, Clone)]
struct Cached {
    route: Arc<TopicRoute>,
    fetched: Instant,
}

/// What [`Routes::get`] does with a topic's cache entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Freshness {
    /// Younger than the refresh interval: use it.
    Fresh,
    /// Older: use it, and refresh it in the background.
    Stale,
    /// Nothing cached: ask now.
    Missing,
}

/// The state of a route fetched at `fetched` (None: never), at `now`.
fn freshness(fetched: Option<Instant>, now: Instant, refresh_every: Duration) -> Freshness {
    match fetched {
        None => Freshness::Missing,
        Some(at) if now.saturating_duration_since(at) < refresh_every => Freshness::Fresh,
        Some(_) => Freshness::Stale,
    }
}

/// The least time between two on-demand refreshes of one topic, and the least age of the
/// route one replaces.
pub const ON_DEMAND_MIN_INTERVAL: Duration = Duration::from_secs(1);

/// When an on-demand route refresh may start, per topic. Sans-IO: fed with the time.
#[derive(Debug, Clone, Default)]
pub struct OnDemand {
    topics: HashMap<String, Attempt>,
}

#[derive(Debug, Clone, Copy)]
struct Attempt {
    started: Instant,
    running: bool,
}

impl OnDemand {
    /// Whether a refresh of `topic`, whose route was fetched at `fetched` (None: never),
    /// may start at `now`: none of the topic is running, and both the route and the last
    /// on-demand attempt are at least [`ON_DEMAND_MIN_INTERVAL`] old. If so, the refresh
    /// counts as running from `now` until [`OnDemand::finished`].
    pub fn try_start(&mut self, topic: &str, fetched: Option<Instant>, now: Instant) -> bool {
        let old_enough = |t: Instant| now.saturating_duration_since(t) >= ON_DEMAND_MIN_INTERVAL;
        if !fetched.is_none_or(old_enough) {
            return false;
        }
        if let Some(a) = self.topics.get(topic)
            && (a.running || !old_enough(a.started))
        {
            return false;
        }
        self.topics.insert(
            topic.to_owned(),
            Attempt {
                started: now,
                running: true,
            },
        );
        true
    }

    /// The refresh of `topic` ended (whatever its outcome).
    pub fn finished(&mut self, topic: &str) {
        if let Some(a) = self.topics.get_mut(topic) {
            a.running = false;
        }
    }
}

/// The route cache of one client.
#[derive(Debug)]
pub struct Routes {
    rpc: Arc<Rpc>,
    access: Mutex<AccessPoints>,
    cache: Mutex<HashMap<String, Cached>>,
    on_demand: Mutex<OnDemand>,
}

/// Marks an on-demand refresh finished when dropped (also when its task is aborted).
struct Finished(Arc<Routes>, String);

impl Drop for Finished {
    fn drop(&mut self) {
        lock(&self.0.on_demand).finished(&self.1);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Routes {
    /// An empty cache asking the access points of `rpc`'s configuration.
    pub fn new(rpc: Arc<Rpc>) -> Self {
        let access = AccessPoints::new(rpc.config().access_points.clone());
        Self {
            rpc,
            access: Mutex::new(access),
            cache: Mutex::new(HashMap::new()),
            on_demand: Mutex::new(OnDemand::default()),
        }
    }

    /// The cached route of `topic`, however old; never asks anyone.
    pub fn cached(&self, topic: &str) -> Option<Arc<TopicRoute>> {
        lock(&self.cache).get(topic).map(|c| c.route.clone())
    }

    /// Refreshes the route of `topic` in the background, soon, after a call on one of its
    /// queues failed; rate-limited by [`OnDemand`]. Returns whether a refresh started.
    /// Needs a Tokio runtime (without one it does nothing).
    pub fn refresh_soon(self: &Arc<Self>, topic: &str) -> bool {
        if topic.is_empty() {
            return false;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        let fetched = lock(&self.cache).get(topic).map(|c| c.fetched);
        if !lock(&self.on_demand).try_start(topic, fetched, Instant::now()) {
            return false;
        }
        let guard = Finished(self.clone(), topic.to_owned());
        rt.spawn(async move {
            let topic = guard.1.clone();
            match guard.0.refresh(&topic).await {
                Ok(_) => tracing::debug!(topic, "route refreshed after a failed call"),
                Err(e) => tracing::debug!(topic, error = %e, "on-demand route refresh failed"),
            }
            drop(guard);
        });
        true
    }

    /// The route of `topic`: the cached one (when it is older than the refresh interval
    /// — the periodic refresh failed — a refresh starts in the background, as by
    /// [`Routes::refresh_soon`], and the caller goes on with it at once: access points
    /// that are down do not hold up a client that has a route); a fresh one only when
    /// none is cached.
    pub async fn get(self: &Arc<Self>, topic: &str) -> Result<Arc<TopicRoute>> {
        let cached = lock(&self.cache).get(topic).cloned();
        let every = self.rpc.config().route_refresh;
        match (
            freshness(cached.as_ref().map(|c| c.fetched), Instant::now(), every),
            cached,
        ) {
            (Freshness::Stale, Some(c)) => {
                if self.refresh_soon(topic) {
                    tracing::debug!(
                        topic,
                        "the cached route is stale; refreshing it in the background"
                    );
                }
                Ok(c.route)
            }
            (_, Some(c)) => Ok(c.route),
            (_, None) => self.refresh(topic).await,
        }
    }

    /// Asks the access points, in turn, for the route of `topic`.
    pub async fn refresh(&self, topic: &str) -> Result<Arc<TopicRoute>> {
        if topic.is_empty() {
            return Err(ClientError::InvalidArgument("empty topic".into()));
        }
        let order = lock(&self.access).order();
        let mut last = ClientError::Unreachable("no access point".into());
        for point in order {
            match self.query(&point, topic).await {
                Ok(route) => {
                    lock(&self.access).answered(&point);
                    let route = Arc::new(route);
                    let entry = Cached {
                        route: route.clone(),
                        fetched: Instant::now(),
                    };
                    lock(&self.cache).insert(topic.to_owned(), entry);
                    return Ok(route);
                }
                Err(e) if e.is_retryable() => {
                    tracing::debug!(access_point = %point, error = %e, "access point failed; trying the next");
                    last = e;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    async fn query(&self, point: &str, topic: &str) -> Result<TopicRoute> {
        let mut client = self.rpc.messaging(point)?;
        let msg = pb::QueryRouteRequest {
            topic: Some(pb::Resource {
                resource_namespace: self.rpc.config().namespace.clone(),
                name: topic.to_owned(),
            }),
            endpoints: access_endpoints(point),
        };
        let mut req = self.rpc.request(msg, self.rpc.config().request_timeout);
        req.metadata_mut().insert(
            ENDPOINTS_HEADER,
            tonic::metadata::MetadataValue::from_static("all"),
        );
        let resp = client.query_route(req).await.map_err(|s| {
            self.rpc.drop_channel(point);
            crate::rpc::call_error(&s, point, false)
        })?;
        let resp = resp.into_inner();
        let status = resp.status.unwrap_or_default();
        if status.code != pb::Code::Ok as i32 {
            return Err(ClientError::from_status(&status, point));
        }
        let queues: Vec<MessageQueue> = resp
            .message_queues
            .iter()
            .filter_map(MessageQueue::from_wire)
            .collect();
        if queues.is_empty() {
            return Err(ClientError::NotFound(format!(
                "topic {topic} has no usable queue"
            )));
        }
        Ok(TopicRoute {
            topic: topic.to_owned(),
            queues,
        })
    }

    /// Topics with a cached route.
    pub fn topics(&self) -> Vec<String> {
        lock(&self.cache).keys().cloned().collect()
    }

    /// Every address of every cached route.
    pub fn all_endpoints(&self) -> BTreeSet<String> {
        lock(&self.cache)
            .values()
            .flat_map(|c| c.route.queues.iter().flat_map(|q| q.endpoints.iter().cloned()))
            .collect()
    }
}

/// The access point as protocol endpoints (a broker answering QueryRoute advertises it
/// when it listens on every interface).
fn access_endpoints(point: &str) -> Option<pb::Endpoints> {
    let (host, port) = point.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let scheme = match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => pb::AddressScheme::IPv4,
        Ok(std::net::IpAddr::V6(_)) => pb::AddressScheme::IPv6,
        Err(_) => pb::AddressScheme::DomainName,
    };
    Some(pb::Endpoints {
        scheme: scheme as i32,
        addresses: vec![pb::Address {
            host: host.to_owned(),
            port: port.parse().ok()?,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(broker: &str, id: i32, ports: &[i32]) -> pb::MessageQueue {
        pb::MessageQueue {
            topic: Some(pb::Resource {
                resource_namespace: String::new(),
                name: "t".into(),
            }),
            id,
            permission: pb::Permission::ReadWrite as i32,
            broker: Some(pb::Broker {
                name: broker.into(),
                id: 0,
                endpoints: Some(pb::Endpoints {
                    scheme: pb::AddressScheme::IPv4 as i32,
                    addresses: ports
                        .iter()
                        .map(|p| pb::Address {
                            host: "127.0.0.1".into(),
                            port: *p,
                        })
                        .collect(),
                }),
            }),
            accept_message_types: vec![pb::MessageType::Normal as i32],
        }
    }

    #[test]
    fn queues_keep_their_group_addresses_and_permission() {
        let q = MessageQueue::from_wire(&wire("g1", 3, &[8082, 8081])).expect("queue");
        assert_eq!(q.key(), "g1:3");
        assert_eq!(q.endpoints, ["127.0.0.1:8082", "127.0.0.1:8081"]);
        assert!(q.writable() && q.readable());
        assert_eq!(q.accept, [pb::MessageType::Normal]);
        assert_eq!(q.to_wire(), wire("g1", 3, &[8082, 8081]));
        assert!(MessageQueue::from_wire(&wire("g1", 0, &[])).is_none());
        let route = TopicRoute {
            topic: "t".into(),
            queues: vec![
                q.clone(),
                MessageQueue::from_wire(&wire("g2", 0, &[8091])).expect("queue"),
                q,
            ],
        };
        assert_eq!(route.brokers(), ["g1", "g2"]);
        let v6 = pb::Endpoints {
            scheme: pb::AddressScheme::IPv6 as i32,
            addresses: vec![pb::Address {
                host: "::1".into(),
                port: 1,
            }],
        };
        assert_eq!(addresses(&v6), ["[::1]:1"]);
        assert_eq!(
            access_endpoints("10.0.0.1:9876").map(|e| e.scheme),
            Some(pb::AddressScheme::IPv4 as i32)
        );
    }

    #[test]
    fn on_demand_refreshes_are_one_at_a_time_and_at_most_one_per_second() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut d = OnDemand::default();
        assert!(
            !d.try_start("t", Some(t0), ms(999)),
            "the route is younger than 1 s"
        );
        assert!(d.try_start("t", Some(t0), ms(1_000)));
        assert!(!d.try_start("t", Some(t0), ms(5_000)), "one is running");
        assert!(
            d.try_start("u", None, ms(1_000)),
            "topics are independent; no route yet"
        );
        d.finished("t");
        assert!(
            !d.try_start("t", Some(t0), ms(1_500)),
            "it failed (the route is as old), but the last attempt is younger than 1 s"
        );
        assert!(d.try_start("t", Some(t0), ms(2_000)));
        d.finished("t");
        // It succeeded: the fresh route holds the next one back for a second.
        assert!(!d.try_start("t", Some(ms(2_100)), ms(3_000)));
        assert!(d.try_start("t", Some(ms(2_100)), ms(3_100)));
        d.finished("never-started");
    }

    #[test]
    fn a_stale_route_is_used_and_only_a_missing_one_is_waited_for() {
        let t0 = Instant::now();
        let every = Duration::from_secs(30);
        assert_eq!(freshness(None, t0, every), Freshness::Missing);
        assert_eq!(
            freshness(Some(t0), t0 + Duration::from_secs(29), every),
            Freshness::Fresh
        );
        assert_eq!(freshness(Some(t0), t0 + every, every), Freshness::Stale);
    }

    #[tokio::test]
    async fn get_answers_a_stale_route_at_once_while_the_access_points_are_down() {
        // An access point that accepts connections and never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = silent.local_addr().expect("addr").to_string();
        let rpc = Arc::new(Rpc::new(
            crate::config::ClientConfig::builder()
                .access_points([addr.as_str()])
                .request_timeout(Duration::from_secs(3))
                .route_refresh(Duration::from_secs(30))
                .build()
                .expect("config"),
        ));
        let routes = Arc::new(Routes::new(rpc));
        let route = Arc::new(TopicRoute {
            topic: "t".into(),
            queues: vec![MessageQueue::from_wire(&wire("g1", 0, &[8081])).expect("queue")],
        });
        let old = Instant::now()
            .checked_sub(Duration::from_secs(60))
            .expect("a minute after boot");
        lock(&routes.cache).insert(
            "t".into(),
            Cached {
                route: route.clone(),
                fetched: old,
            },
        );
        let got = tokio::time::timeout(Duration::from_millis(500), routes.get("t"))
            .await
            .expect("no wait for the access point")
            .expect("the cached route");
        assert_eq!(got, route);
        assert!(
            lock(&routes.on_demand).topics.get("t").is_some_and(|a| a.running),
            "a background refresh runs"
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(300), routes.get("u"))
                .await
                .is_err(),
            "nothing cached: the caller waits for the access point"
        );
    }

    #[tokio::test]
    async fn refresh_soon_starts_one_background_refresh() {
        let rpc = Arc::new(Rpc::new(
            crate::config::ClientConfig::builder()
                .access_points(["127.0.0.1:1"])
                .request_timeout(Duration::from_millis(200))
                .build()
                .expect("config"),
        ));
        let routes = Arc::new(Routes::new(rpc));
        assert!(!routes.refresh_soon(""));
        assert!(routes.refresh_soon("t"));
        assert!(!routes.refresh_soon("t"), "rate-limited");
        // The refresh fails (nothing listens) and is marked finished.
        tokio::time::timeout(Duration::from_secs(5), async {
            while lock(&routes.on_demand).topics.get("t").is_some_and(|a| a.running) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the refresh ends");
        assert!(routes.cached("t").is_none(), "a failed refresh caches nothing");
    }
}
