use raftmq_proto::rocketmq::v2 as pb;

use super::*;
use crate::config::ClientConfig;
use crate::route::MessageQueue;

fn inner() -> Arc<Inner> {
    let config = ClientConfig::builder()
        .access_points(["127.0.0.1:1"])
        .request_timeout(Duration::from_millis(200))
        .build()
        .expect("config");
    let session = Session::start(config, ClientKind::PushConsumer { group: "g".into() }).expect("session");
    let listener: options::Listener = Arc::new(|_| Box::pin(async { ConsumeResult::Success }));
    let shared = Arc::new(Shared {
        session,
        group: "g".into(),
        preferred: Preferred::default(),
        listener,
        queue_listener: None,
        options: PushOptions::default(),
        workers: Arc::new(tokio::sync::Semaphore::new(1)),
    });
    Arc::new(Inner {
        shared,
        subscriptions: BTreeMap::from([("t".to_owned(), FilterExpression::All)]),
        pollers: Mutex::new(Pollers::default()),
        tasks: Mutex::new(Tasks::default()),
        runtime: tokio::runtime::Handle::current(),
    })
}

fn route() -> TopicRoute {
    let wire = |id| pb::MessageQueue {
        topic: Some(pb::Resource {
            resource_namespace: String::new(),
            name: "t".into(),
        }),
        id,
        permission: pb::Permission::ReadWrite as i32,
        broker: Some(pb::Broker {
            name: "g1".into(),
            id: 0,
            endpoints: Some(pb::Endpoints {
                scheme: pb::AddressScheme::IPv4 as i32,
                addresses: vec![pb::Address {
                    host: "127.0.0.1".into(),
                    port: 1,
                }],
            }),
        }),
        accept_message_types: vec![],
    };
    TopicRoute {
        topic: "t".into(),
        queues: (0..2)
            .map(|id| MessageQueue::from_wire(&wire(id)).expect("queue"))
            .collect(),
    }
}

#[tokio::test]
async fn no_poller_starts_once_shutdown_began() {
    let inner = inner();
    let mut plan = Rebalance::default();
    plan.answered("t", "g1", [0], Instant::now());
    let (topic, filter) = ("t", &FilterExpression::All);
    apply(&inner, &plan, topic, filter, Some(&route()));
    assert_eq!(lock(&inner.pollers).map.len(), 1, "queue 0 polled");
    assert!(inner.begin_close());
    assert!(!inner.begin_close(), "once");
    assert!(lock(&inner.pollers).map.values().all(Poller::is_stopping));
    // An answer that came after shutdown began (it gives queue 1 too) starts nothing.
    plan.answered("t", "g1", [0, 1], Instant::now());
    apply(&inner, &plan, topic, filter, Some(&route()));
    let keys: Vec<i32> = lock(&inner.pollers).map.keys().map(|k| k.id).collect();
    assert!(keys.iter().all(|id| *id == 0), "{keys:?}");
    // The stopped poller ends (it never got to poll: nothing answers here) and the
    // shutdown completes.
    tokio::time::timeout(Duration::from_secs(10), inner.finish_close())
        .await
        .expect("shutdown ends");
    assert!(lock(&inner.pollers).map.is_empty());
    assert!(inner.shared.session.is_stopped());
}

#[tokio::test]
async fn answers_extend_the_deadlines_of_the_pollers_they_confirm() {
    let inner = inner();
    let t0 = Instant::now();
    let mut plan = Rebalance::default();
    plan.answered("t", "g1", [0, 1], t0);
    apply(&inner, &plan, "t", &FilterExpression::All, Some(&route()));
    let later = t0 + Duration::from_secs(2);
    plan.answered("t", "g1", [0, 1], later);
    apply(&inner, &plan, "t", &FilterExpression::All, None);
    for p in lock(&inner.pollers).map.values() {
        assert_eq!(p.valid_until(), later + rebalance::ANSWER_TTL);
    }
    inner.begin_close();
    tokio::time::timeout(Duration::from_secs(10), inner.finish_close())
        .await
        .expect("shutdown ends");
}
