//! Shared harness of the `raft_net_*` tests: broker-group members with the real commit log,
//! the real gRPC Raft network on 127.0.0.1 ports chosen at run time, and a small in-memory
//! state machine whose snapshots are real files.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io;
use std::io::Read;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use futures_util::Stream;
use futures_util::StreamExt;
use openraft::EntryPayload;
use openraft::OptionalSend;
use openraft::Raft;
use openraft::RaftSnapshotBuilder;
use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;
use openraft::storage::EntryResponder;
use openraft::storage::RaftStateMachine;
use openraft::type_config::alias::LogIdOf;
use openraft::type_config::alias::SnapshotMetaOf;
use openraft::type_config::alias::SnapshotOf;
use openraft::type_config::alias::StoredMembershipOf;
use raft_log::CommitLog;
use raft_log::LogConfig;
use raftmq_broker::command::Command;
use raftmq_broker::command::CommandResult;
use raftmq_broker::command::Header;
use raftmq_broker::command::MessageKind;
use raftmq_broker::command::MessageMeta;
use raftmq_broker::command::Permission;
use raftmq_broker::command::TopicConfig;
use raftmq_broker::raft::NetworkConfig;
use raftmq_broker::raft::NetworkFactory;
use raftmq_broker::raft::RaftConfig;
use raftmq_broker::raft::RaftGrpcService;
use raftmq_broker::raft::server;
use raftmq_broker::raft::types::BrokerNode;
use raftmq_broker::raft::types::LogStore;
use raftmq_broker::raft::types::NodeId;
use raftmq_broker::raft::types::SnapshotData;
use raftmq_broker::raft::types::TypeConfig;
use serde::Deserialize;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub type C = TypeConfig;
pub type TestRaft = Raft<C, MemSm>;

pub const GROUP: &str = "broker-test";
/// How long any awaited condition may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

// ---------------------------------------------------------------------------------------
// State machine
// ---------------------------------------------------------------------------------------

/// Everything the test state machine has applied; also its snapshot format.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    pub last_applied: Option<LogIdOf<C>>,
    pub membership: StoredMembershipOf<C>,
    /// (log index, summary) of every normal entry, in apply order. The summary includes a
    /// checksum of the records, so replicas that agree here hold the same bytes.
    pub commands: Vec<(u64, String)>,
}

#[derive(Debug)]
struct SmInner {
    state: Applied,
    /// Meta and file of the current snapshot.
    snapshot: Option<(SnapshotMetaOf<C>, PathBuf)>,
    dir: PathBuf,
    seq: u64,
    installed: u64,
}

/// An in-memory state machine; builders and the machine share the state.
#[derive(Debug, Clone)]
pub struct MemSm(Arc<Mutex<SmInner>>);

fn summarize(cmd: &Command) -> String {
    let crc = cmd
        .records()
        .iter()
        .fold(0u32, |c, r| crc32c::crc32c_append(c, r));
    let bytes: usize = cmd.records().iter().map(|r| r.len()).sum();
    format!(
        "{cmd} records={} bytes={bytes} crc={crc:08x}",
        cmd.records().len()
    )
}

impl MemSm {
    /// A state machine keeping its snapshot files in `dir` (created if missing).
    pub fn new(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self(Arc::new(Mutex::new(SmInner {
            state: Applied::default(),
            snapshot: None,
            dir: dir.to_path_buf(),
            seq: 0,
            installed: 0,
        }))))
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, SmInner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn applied(&self) -> Applied {
        self.inner().state.clone()
    }

    /// How many snapshots were installed from the leader.
    pub fn installed_snapshots(&self) -> u64 {
        self.inner().installed
    }

    fn write_snapshot_file(inner: &mut SmInner, bytes: &[u8]) -> io::Result<PathBuf> {
        inner.seq += 1;
        let path = inner.dir.join(format!("snapshot-{}.bin", inner.seq));
        let mut f = std::fs::File::create(&path)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        Ok(path)
    }
}

impl RaftSnapshotBuilder<C> for MemSm {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<C, SnapshotData>, io::Error> {
        let mut inner = self.inner();
        let bytes = postcard::to_stdvec(&inner.state).map_err(io::Error::other)?;
        let meta = SnapshotMetaOf::<C> {
            last_log_id: inner.state.last_applied,
            last_membership: inner.state.membership.clone(),
        };
        let path = Self::write_snapshot_file(&mut inner, &bytes)?;
        inner.snapshot = Some((meta.clone(), path.clone()));
        Ok(SnapshotOf::<C, SnapshotData> {
            meta,
            snapshot: std::fs::File::open(path)?,
        })
    }
}

impl RaftStateMachine<C> for MemSm {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogIdOf<C>>, StoredMembershipOf<C>), io::Error> {
        let inner = self.inner();
        Ok((inner.state.last_applied, inner.state.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<C>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let mut inner = self.inner();
            inner.state.last_applied = Some(entry.log_id);
            match &entry.payload {
                EntryPayload::Normal(cmd) => {
                    inner.state.commands.push((entry.log_id.index, summarize(cmd)));
                }
                EntryPayload::Membership(m) => {
                    inner.state.membership = StoredMembershipOf::<C>::new(Some(entry.log_id), m.clone());
                }
                EntryPayload::Blank => {}
            }
            drop(inner);
            if let Some(r) = responder {
                r.send(CommandResult::Done);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<C>,
        mut snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let mut bytes = Vec::new();
        snapshot.read_to_end(&mut bytes)?;
        let state: Applied =
            postcard::from_bytes(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if state.last_applied != meta.last_log_id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "snapshot data at {:?} does not match its meta {meta}",
                    state.last_applied
                ),
            ));
        }
        let mut inner = self.inner();
        let path = Self::write_snapshot_file(&mut inner, &bytes)?;
        inner.state = state;
        inner.snapshot = Some((meta.clone(), path));
        inner.installed += 1;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<C, SnapshotData>>, io::Error> {
        let inner = self.inner();
        match &inner.snapshot {
            // A fresh handle each time: concurrent readers must not share a file offset.
            Some((meta, path)) => Ok(Some(SnapshotOf::<C, SnapshotData> {
                meta: meta.clone(),
                snapshot: std::fs::File::open(path)?,
            })),
            None => Ok(None),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------

pub fn create_topic(i: usize) -> Command {
    Command::control(Header::CreateTopic(TopicConfig {
        name: format!("topic-{i}"),
        queues: 8,
        permission: Permission::ReadWrite,
        kind: MessageKind::Normal,
    }))
    .expect("valid command")
}

/// A send of `records` records of `record_size` bytes each (content derived from `seed`).
pub fn send(seed: u64, records: usize, record_size: usize) -> Command {
    let messages = (0..records)
        .map(|i| MessageMeta {
            topic: "big".into(),
            queue_id: (i % 8) as u32,
            tag_hash: seed,
            msg_id: format!("{seed}-{i}"),
        })
        .collect();
    let bodies = (0..records)
        .map(|i| {
            let mut b = vec![0u8; record_size];
            for (j, x) in b.iter_mut().enumerate() {
                *x = (seed as usize).wrapping_mul(31).wrapping_add(i * 7 + j) as u8;
            }
            Bytes::from(b)
        })
        .collect();
    Command::new(
        Header::Send {
            store_time_ms: 1,
            messages,
        },
        bodies,
    )
    .expect("valid send")
}

// ---------------------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------------------

/// What every node of a test group is configured with.
#[derive(Debug, Clone)]
pub struct Setup {
    pub raft: RaftConfig,
    pub net: NetworkConfig,
    pub log: LogConfig,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            raft: RaftConfig::default(),
            net: NetworkConfig::default(),
            log: LogConfig {
                segment_size: 16 << 20,
                max_record_size: 32 << 20,
                preallocate: false,
                ..LogConfig::default()
            },
        }
    }
}

/// One running member: Raft, commit log, state machine, gRPC server.
pub struct TestNode {
    pub id: NodeId,
    pub node: BrokerNode,
    pub raft: TestRaft,
    pub sm: MemSm,
    pub net: NetworkFactory,
    pub dir: PathBuf,
    stop_server: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl TestNode {
    /// Starts node `id` with its data in `dir`, serving Raft on `listener`.
    pub async fn start(id: NodeId, dir: &Path, listener: TcpListener, setup: &Setup) -> anyhow::Result<Self> {
        setup.net.validate(
            u64::from(setup.log.max_record_size),
            setup.raft.snapshot_chunk_size,
        )?;
        let addr = listener.local_addr()?.to_string();
        let node = BrokerNode {
            raft_addr: addr,
            client_addr: String::new(),
        };
        let log_dir = dir.join("log");
        // A restarted node may find the previous incarnation's log still closing.
        let deadline = Instant::now() + WAIT;
        let log = loop {
            match CommitLog::open(&log_dir, setup.log.clone()) {
                Ok((log, _)) => break log,
                Err(e) if Instant::now() < deadline => {
                    tracing::info!(node = id, error = %e, "commit log not available yet");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e).context("open commit log"),
            }
        };
        let store: LogStore = raft_log::storage::RaftLogStore::new(log);
        let sm = MemSm::new(&dir.join("sm"))?;
        let net = NetworkFactory::new(id, GROUP, setup.net.clone())?;
        let config = setup.raft.build(GROUP)?;
        let raft = Raft::new(id, config, net.clone(), store, sm.clone()).await?;

        let spool = dir.join("incoming");
        std::fs::create_dir_all(&spool)?;
        let service = RaftGrpcService::new(raft.clone(), spool, &setup.net);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let net_cfg = setup.net.clone();
        let server = tokio::spawn(async move {
            let shutdown = async {
                let _ = stop_rx.await;
            };
            if let Err(e) = server::serve(listener, service, &net_cfg, shutdown).await {
                tracing::error!(node = id, error = %e, "raft server failed");
            }
        });
        Ok(Self {
            id,
            node,
            raft,
            sm,
            net,
            dir: dir.to_path_buf(),
            stop_server: Some(stop_tx),
            server: Some(server),
        })
    }

    /// Stops Raft and the server, as a crash would as far as peers can tell: the port
    /// stops answering and connections close.
    pub async fn stop(&mut self) {
        let _ = self.raft.shutdown().await;
        if let Some(tx) = self.stop_server.take() {
            let _ = tx.send(());
        }
        if let Some(mut server) = self.server.take() {
            // Graceful close takes as long as peers keep streams open; do not wait long.
            if tokio::time::timeout(Duration::from_secs(2), &mut server)
                .await
                .is_err()
            {
                server.abort();
                let _ = server.await;
            }
        }
    }

    pub fn metrics(&self) -> openraft::RaftMetrics<C> {
        self.raft.metrics().borrow_watched().clone()
    }
}

/// Polls `cond` until it holds, failing after [`WAIT`]; for conditions openraft's
/// metrics cannot express (such as network counters).
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Binds a listener on a port the OS picks.
pub async fn bind() -> anyhow::Result<TcpListener> {
    Ok(TcpListener::bind("127.0.0.1:0").await?)
}

/// A broker group under test.
pub struct Group {
    pub setup: Setup,
    pub root: tempfile::TempDir,
    pub nodes: BTreeMap<NodeId, TestNode>,
}

impl Group {
    /// Starts nodes `ids` (not yet initialized).
    pub async fn start(ids: &[NodeId], setup: Setup) -> anyhow::Result<Self> {
        let root = tempfile::tempdir()?;
        let mut g = Self {
            setup,
            root,
            nodes: BTreeMap::new(),
        };
        for &id in ids {
            g.start_node(id).await?;
        }
        Ok(g)
    }

    pub fn node_dir(&self, id: NodeId) -> PathBuf {
        self.root.path().join(format!("node-{id}"))
    }

    /// Starts node `id` on a fresh port.
    pub async fn start_node(&mut self, id: NodeId) -> anyhow::Result<()> {
        let listener = bind().await?;
        self.start_node_on(id, listener).await
    }

    /// Starts node `id` on `listener` (e.g. its previous address after a restart).
    pub async fn start_node_on(&mut self, id: NodeId, listener: TcpListener) -> anyhow::Result<()> {
        let dir = self.node_dir(id);
        std::fs::create_dir_all(&dir)?;
        let node = TestNode::start(id, &dir, listener, &self.setup).await?;
        self.nodes.insert(id, node);
        Ok(())
    }

    pub fn node(&self, id: NodeId) -> &TestNode {
        &self.nodes[&id]
    }

    /// Initializes the group with `voters` as members, on the first of them only.
    pub async fn initialize(&self, voters: &[NodeId]) -> anyhow::Result<()> {
        let members: BTreeMap<NodeId, BrokerNode> = voters
            .iter()
            .map(|id| (*id, self.node(*id).node.clone()))
            .collect();
        self.node(voters[0]).raft.initialize(members).await?;
        Ok(())
    }

    /// Waits until a node of `among` other than `exclude` leads and may accept writes:
    /// openraft 0.10 refuses writes (`ForwardToLeader` with reason `LeaseExpired`) until a
    /// quorum has acknowledged the new leader.
    pub async fn wait_leader(&self, among: &[NodeId], exclude: Option<NodeId>) -> anyhow::Result<NodeId> {
        let deadline = Instant::now() + WAIT;
        loop {
            let first = self.node(among[0]);
            let m = first
                .raft
                .wait(Some(deadline.saturating_duration_since(Instant::now())))
                .metrics(
                    |m| {
                        m.current_leader
                            .is_some_and(|l| among.contains(&l) && Some(l) != exclude)
                    },
                    "a leader among the live nodes",
                )
                .await?;
            let Some(leader) = m.current_leader else { continue };
            let lm = self
                .node(leader)
                .raft
                .wait(Some(deadline.saturating_duration_since(Instant::now())))
                .metrics(
                    |m| {
                        (m.state == ServerState::Leader && m.last_quorum_acked.is_some())
                            || m.current_leader != Some(leader)
                    },
                    "leader acknowledged by a quorum",
                )
                .await?;
            if lm.state == ServerState::Leader {
                return Ok(leader);
            }
            anyhow::ensure!(Instant::now() < deadline, "no stable leader among {among:?}");
        }
    }

    /// Waits until every node in `ids` has applied at least `index`.
    pub async fn wait_applied(&self, ids: &[NodeId], index: u64) -> anyhow::Result<()> {
        for id in ids {
            self.node(*id)
                .raft
                .wait(Some(WAIT))
                .applied_index_at_least(Some(index), format!("node {id} applies {index}"))
                .await?;
        }
        Ok(())
    }

    /// Asserts that every node in `ids` applied the same commands in the same order, and
    /// returns that sequence.
    pub fn assert_same_applied(&self, ids: &[NodeId]) -> Vec<(u64, String)> {
        let reference = self.node(ids[0]).sm.applied();
        for id in &ids[1..] {
            let other = self.node(*id).sm.applied();
            assert_eq!(
                other.commands.len(),
                reference.commands.len(),
                "node {id} and node {} applied different numbers of commands",
                ids[0]
            );
            assert!(
                other.commands == reference.commands,
                "node {id} applied a different sequence than node {}",
                ids[0]
            );
        }
        reference.commands
    }

    pub async fn shutdown(mut self) {
        for node in self.nodes.values_mut() {
            node.stop().await;
        }
    }
}
