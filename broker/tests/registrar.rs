//! Registration with name servers: a real single-node broker group (client port on
//! loopback, ports chosen at run time) registering with in-test name servers that record
//! what they receive.

mod node_common;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use openraft::ServerState;
use raftmq_broker::config::BrokerConfig;
use raftmq_broker::node::Node;
use raftmq_proto::raftmq::admin::v1 as admin;
use raftmq_proto::raftmq::admin::v1::admin_service_client::AdminServiceClient;
use raftmq_proto::raftmq::namesrv::v1 as pb;
use raftmq_proto::raftmq::namesrv::v1::namesrv_service_server::NamesrvService;
use raftmq_proto::raftmq::namesrv::v1::namesrv_service_server::NamesrvServiceServer;
use tokio::sync::mpsc;
use tonic::Request;
use tonic::Response;
use tonic::Status;

const GROUP: &str = "broker-reg";

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A name server that records registrations; it refuses the next `refuse` ones.
#[derive(Debug)]
struct Recorder {
    seen: mpsc::UnboundedSender<pb::RegisterRequest>,
    refuse: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl NamesrvService for Recorder {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let refuse = self
            .refuse
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if refuse {
            return Err(Status::unavailable("not yet"));
        }
        let _ = self.seen.send(request.into_inner());
        Ok(Response::new(pb::RegisterResponse { expiry_ms: 120_000 }))
    }

    async fn list_groups(
        &self,
        _: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        Err(Status::unimplemented("test name server"))
    }

    async fn topic_route(
        &self,
        _: Request<pb::TopicRouteRequest>,
    ) -> Result<Response<pb::TopicRouteResponse>, Status> {
        Err(Status::unimplemented("test name server"))
    }
}

/// A recording name server on loopback.
struct FakeNamesrv {
    addr: String,
    seen: mpsc::UnboundedReceiver<pb::RegisterRequest>,
    refuse: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeNamesrv {
    async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let (tx, seen) = mpsc::unbounded_channel();
        let refuse = Arc::new(AtomicUsize::new(0));
        let recorder = Recorder {
            seen: tx,
            refuse: refuse.clone(),
        };
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let server = tonic::transport::Server::builder()
            .add_service(NamesrvServiceServer::new(recorder))
            .serve_with_incoming(incoming);
        let task = tokio::spawn(async move {
            let _ = server.await;
        });
        Ok(Self {
            addr,
            seen,
            refuse,
            task,
        })
    }

    /// Refuses the next `n` registrations (`UNAVAILABLE`).
    fn refuse_next(&self, n: usize) {
        self.refuse.store(n, Ordering::SeqCst);
    }

    /// The first registration within `within` that satisfies `want`.
    async fn expect(
        &mut self,
        within: Duration,
        what: &str,
        want: impl Fn(&pb::RegisterRequest) -> bool,
    ) -> anyhow::Result<pb::RegisterRequest> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.seen.recv()).await {
                Ok(Some(r)) if want(&r) => return Ok(r),
                Ok(Some(_)) => {}
                Ok(None) => anyhow::bail!("name server stopped"),
                Err(_) => anyhow::bail!("no registration {what} within {within:?}"),
            }
        }
    }

    /// Registrations received so far (without waiting).
    fn drain(&mut self) -> Vec<pb::RegisterRequest> {
        std::iter::from_fn(|| self.seen.try_recv().ok()).collect()
    }
}

impl Drop for FakeNamesrv {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Broker {
    node: Option<Node>,
    config: BrokerConfig,
    _dir: tempfile::TempDir,
}

impl Broker {
    async fn start(namesrv: Vec<String>, tune: impl FnOnce(&mut BrokerConfig)) -> anyhow::Result<Self> {
        init_tracing();
        let dir = tempfile::tempdir()?;
        let mut config = node_common::config(
            GROUP,
            dir.path(),
            format!("127.0.0.1:{}", raftmq_testkit::free_port()?),
            format!("127.0.0.1:{}", raftmq_testkit::free_port()?),
        );
        config.namesrv = namesrv;
        tune(&mut config);
        let node = Node::start(config.clone()).await?;
        node.broker()
            .raft
            .wait(Some(Duration::from_secs(20)))
            .state(ServerState::Leader, "single node leads")
            .await?;
        Ok(Self {
            node: Some(node),
            config,
            _dir: dir,
        })
    }

    async fn admin(&self) -> anyhow::Result<AdminServiceClient<tonic::transport::Channel>> {
        Ok(AdminServiceClient::connect(format!("http://{}", self.config.client_addr)).await?)
    }

    async fn stop(mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown(Duration::from_secs(2)).await;
        }
    }
}

fn is_leader(r: &pb::RegisterRequest) -> bool {
    r.role == pb::Role::Leader as i32 && r.leader_id == Some(r.node_id) && r.term >= 1
}

fn spec<'a>(r: &'a pb::RegisterRequest, name: &str) -> Option<&'a admin::TopicSpec> {
    r.topics.iter().find(|t| t.name == name)
}

fn topic(name: &str, queues: u32) -> admin::TopicSpec {
    admin::TopicSpec {
        name: name.into(),
        queues,
        permission: admin::Permission::ReadWrite as i32,
        kind: admin::MessageKind::Normal as i32,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_registers_and_topic_changes_reach_the_namesrv_within_a_second() -> anyhow::Result<()> {
    let mut ns = FakeNamesrv::start().await?;
    let broker = Broker::start(vec![ns.addr.clone()], |_| {}).await?;
    let first = ns.expect(Duration::from_secs(10), "as leader", is_leader).await?;
    assert_eq!(first.group, GROUP);
    assert_eq!(first.node_id, 1);
    assert_eq!(first.client_addr, broker.config.client_addr);
    assert!(first.topics.is_empty(), "{first:?}");
    let mut admin = broker.admin().await?;

    let req = admin::CreateTopicRequest {
        topic: Some(topic("orders", 4)),
    };
    admin.create_topic(req).await?;
    let created = ns
        .expect(Duration::from_secs(1), "with the new topic", |r| {
            spec(r, "orders").is_some()
        })
        .await?;
    assert!(is_leader(&created) && created.applied_index > first.applied_index);
    assert_eq!(spec(&created, "orders"), Some(&topic("orders", 4)));

    let req = admin::UpdateTopicRequest {
        topic: Some(topic("orders", 8)),
    };
    admin.update_topic(req).await?;
    ns.expect(Duration::from_secs(1), "with the updated topic", |r| {
        spec(r, "orders").is_some_and(|t| t.queues == 8)
    })
    .await?;

    let req = admin::DeleteTopicRequest {
        name: "orders".into(),
    };
    admin.delete_topic(req).await?;
    ns.expect(Duration::from_secs(1), "without the deleted topic", |r| {
        r.topics.is_empty()
    })
    .await?;
    broker.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_namesrv_delays_no_other_and_registrations_repeat_every_interval() -> anyhow::Result<()> {
    // Accepts connections (the kernel does) but never answers.
    let hanging = std::net::TcpListener::bind("127.0.0.1:0")?;
    let mut ns = FakeNamesrv::start().await?;
    let namesrv = vec![hanging.local_addr()?.to_string(), ns.addr.clone()];
    let broker = Broker::start(namesrv, |c| {
        c.register_interval_ms = 1_000;
        c.register_timeout_ms = 900;
    })
    .await?;
    ns.expect(Duration::from_secs(5), "as leader", is_leader).await?;
    ns.drain();
    // With nothing changing, one registration per interval.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let periodic = ns.drain();
    assert!(
        (2..=5).contains(&periodic.len()),
        "{} registrations in 3.5 s at a 1 s interval",
        periodic.len()
    );
    assert!(periodic.iter().all(is_leader));
    broker.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_registration_is_retried_after_a_short_backoff() -> anyhow::Result<()> {
    let mut ns = FakeNamesrv::start().await?;
    let broker = Broker::start(vec![ns.addr.clone()], |_| {}).await?;
    ns.expect(Duration::from_secs(10), "as leader", is_leader).await?;
    // The topic change goes out at once and is refused, the retry 500 ms later too; the
    // one after another 1 s gets through, long before the 30 s interval.
    ns.refuse_next(2);
    let started = Instant::now();
    let req = admin::CreateTopicRequest {
        topic: Some(topic("orders", 4)),
    };
    broker.admin().await?.create_topic(req).await?;
    ns.expect(Duration::from_secs(5), "with the new topic", |r| {
        spec(r, "orders").is_some()
    })
    .await?;
    let took = started.elapsed();
    assert!(
        (Duration::from_millis(1_400)..Duration::from_secs(4)).contains(&took),
        "took {took:?}"
    );
    broker.stop().await;
    Ok(())
}
