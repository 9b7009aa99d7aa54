//! raftmq under test: a fresh three-node group (default configuration: fsync before ack,
//! 1 GiB preallocated segments) in a temporary folder, a topic with 8 queues, producers
//! of the Rust client (`send_async`), and a pull consumer reading every queue.

use std::path::Path;
use std::process::Command;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use raftmq_client::FilterExpression;
use raftmq_client::Message;
use raftmq_client::Producer;
use raftmq_client::PullConsumer;
use raftmq_client::StartFrom;
use raftmq_proto::raftmq::admin::v1 as admin;
use raftmq_proto::raftmq::admin::v1::admin_service_client::AdminServiceClient;
use tokio::task::JoinHandle;

use crate::runner::Recorder;
use crate::runner::Sender;
use crate::servers::Servers;

pub const TOPIC: &str = "bench";
const QUEUES: u32 = 8;
const WAIT: Duration = Duration::from_secs(30);

/// A running group; its processes and data go when it is dropped.
#[derive(Debug)]
pub struct RaftmqCluster {
    pub servers: Servers,
    pub clients: Vec<String>,
    _dir: tempfile::TempDir,
}

impl RaftmqCluster {
    /// Starts three nodes with data under `base`, waits for a leader, creates the topic.
    pub async fn start(base: &Path) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("raftmq-").tempdir_in(base)?;
        let broker = raftmq_testkit::bin("raftmq-broker")?;
        let mut peers = Vec::new();
        for id in 1..=3u64 {
            let client = format!("127.0.0.1:{}", raftmq_testkit::free_port()?);
            let raft = format!("127.0.0.1:{}", raftmq_testkit::free_port()?);
            peers.push((id, raft, client));
        }
        let mut servers = Servers::default();
        for (id, raft, client) in &peers {
            let mut cmd = Command::new(&broker);
            cmd.arg("--node-id").arg(id.to_string()).arg("--group").arg("g1");
            cmd.arg("--data-dir").arg(dir.path().join(format!("node-{id}")));
            cmd.arg("--client-addr").arg(client).arg("--raft-addr").arg(raft);
            for (pid, praft, pclient) in &peers {
                cmd.arg("--peer").arg(format!("{pid}={praft}/{pclient}"));
            }
            cmd.env("RUST_LOG", "warn");
            servers.spawn(cmd, &dir.path().join(format!("node-{id}.log")))?;
        }
        let clients = peers.into_iter().map(|p| p.2).collect();
        let me = Self {
            servers,
            clients,
            _dir: dir,
        };
        me.create_topic().await?;
        Ok(me)
    }

    async fn create_topic(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + WAIT;
        let mut last = String::new();
        while Instant::now() < deadline {
            for addr in &self.clients {
                match try_create(addr).await {
                    Ok(()) => return Ok(()),
                    Err(e) => last = format!("{e:#}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("raftmq: could not create topic {TOPIC} within {WAIT:?}: {last}")
    }

    /// One producer client per entry.
    pub async fn producers(&self, n: usize) -> anyhow::Result<Vec<RaftmqSender>> {
        let mut out = Vec::new();
        for i in 0..n {
            let p = Producer::builder()
                .access_points(self.clients.clone())
                .producer_group(format!("bench-producer-{i}"))
                .topics([TOPIC])
                .request_timeout(Duration::from_secs(10))
                .start()
                .await
                .context("start raftmq producer")?;
            out.push(RaftmqSender(p));
        }
        Ok(out)
    }

    /// A pull consumer reading every queue from the first message, feeding `rec`, until
    /// the handle is aborted.
    pub async fn consumer(&self, rec: Recorder) -> anyhow::Result<JoinHandle<()>> {
        let mut c = PullConsumer::builder()
            .access_points(self.clients.clone())
            .consumer_group("bench-consumer")
            .start_from(StartFrom::First)
            .batch_size(1024)
            .build()
            .await
            .context("start raftmq consumer")?;
        c.subscribe(TOPIC, FilterExpression::all()).await?;
        Ok(tokio::spawn(async move {
            loop {
                match c.poll(Duration::from_millis(500)).await {
                    Ok(msgs) => rec.bodies(msgs.iter().map(|m| &m.body[..])),
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }))
    }
}

async fn try_create(addr: &str) -> anyhow::Result<()> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(5))
        .connect()
        .await?;
    let mut a = AdminServiceClient::new(ch);
    let status = a
        .cluster_status(admin::ClusterStatusRequest {})
        .await?
        .into_inner();
    anyhow::ensure!(status.leader_id.is_some(), "no leader yet");
    let req = admin::CreateTopicRequest {
        topic: Some(admin::TopicSpec {
            name: TOPIC.into(),
            queues: QUEUES,
            permission: admin::Permission::ReadWrite as i32,
            kind: admin::MessageKind::Normal as i32,
        }),
    };
    match a.create_topic(req).await {
        Ok(_) => Ok(()),
        Err(e) if e.code() == tonic::Code::AlreadyExists => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A raftmq producer as a [`Sender`].
#[derive(Debug, Clone)]
pub struct RaftmqSender(pub Producer);

impl Sender for RaftmqSender {
    fn send(&self, body: Vec<u8>) -> impl Future<Output = anyhow::Result<()>> + Send + 'static {
        let h = self.0.send_async(Message::new(TOPIC, body));
        async move {
            h.await?;
            Ok(())
        }
    }

    fn close(&self) -> impl Future<Output = ()> + Send {
        let p = self.0.clone();
        async move { p.shutdown().await }
    }
}
