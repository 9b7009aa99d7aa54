//! A running broker node: opens the commit log and the state machine from the data dir,
//! starts Raft with its gRPC network, serves the client port (RocketMQ 5 protocol and the
//! admin service) and the Raft port, initializes a fresh group once, and shuts all of it
//! down in order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use raft_log::CommitLog;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::Admin;
use crate::config::BrokerConfig;
use crate::context::Broker;
use crate::context::BrokerRaft;
use crate::leader_duties;
use crate::log_repair;
use crate::msg_index::MessageIndex;
use crate::raft::NetworkFactory;
use crate::raft::RaftGrpcService;
use crate::raft::server;
use crate::raft::types::BrokerNode;
use crate::raft::types::LogStore;
use crate::raft::vote_fence::VoteFence;
use crate::registrar;
use crate::service::Messaging;
use crate::sm::StateMachine;
use openraft::async_runtime::WatchReceiver;
use raftmq_transport::ServerTls;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("cannot create {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("commit log: {0}")]
    Log(#[from] raft_log::LogError),
    #[error("state machine: {0}")]
    Sm(#[from] crate::sm::SmError),
    #[error("raft: {0}")]
    Raft(String),
    #[error("tls: {0}")]
    Tls(#[from] raftmq_transport::TransportError),
    #[error("message index: {0}")]
    Index(String),
}

/// A started node.
#[derive(Debug)]
pub struct Node {
    broker: Arc<Broker>,
    /// Turned true first: the client port, leader duties and the registrar stop.
    stop: watch::Sender<bool>,
    /// Turned true after Raft stopped: the Raft port stops.
    stop_raft: watch::Sender<bool>,
    /// The client server, the leader duties and the registrar (with name servers).
    front: Vec<(&'static str, JoinHandle<()>)>,
    raft_server: Option<JoinHandle<()>>,
}

async fn bind(addr: &str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| StartError::Bind {
        addr: addr.to_owned(),
        source,
    })
}

/// The Raft node over the opened log and state machine. `fenced`: the log lost a tail
/// it had acknowledged, so the node does not stand for election, not even once, before
/// the vote fence is in place (see `log_repair`).
async fn open_raft(
    config: &BrokerConfig,
    log: &CommitLog,
    sm: StateMachine,
    fenced: bool,
) -> Result<BrokerRaft, StartError> {
    let net = NetworkFactory::new(config.node_id, &config.group, config.network.clone())
        .map_err(|e| StartError::Raft(e.to_string()))?;
    let mut raft_config = config
        .raft
        .build(&config.group)
        .map_err(|e| StartError::Raft(e.to_string()))?;
    if fenced {
        Arc::make_mut(&mut raft_config).enable_elect = false;
    }
    let store: LogStore = raft_log::storage::RaftLogStore::new(log.clone());
    openraft::Raft::new(config.node_id, raft_config, net, store, sm)
        .await
        .map_err(|e| StartError::Raft(e.to_string()))
}

/// Opens the message index if it is enabled (on a blocking thread: it scans its newest file).
async fn open_index(config: &Arc<BrokerConfig>) -> Result<Option<Arc<MessageIndex>>, StartError> {
    if !config.index.enabled {
        return Ok(None);
    }
    let (dir, cfg) = (config.index_dir(), config.index.clone());
    let index = tokio::task::spawn_blocking(move || MessageIndex::open(dir, cfg))
        .await
        .map_err(|e| StartError::Index(e.to_string()))?
        .map_err(|e| StartError::Index(e.to_string()))?;
    Ok(Some(Arc::new(index)))
}

fn create_dir(path: &std::path::Path) -> Result<(), StartError> {
    std::fs::create_dir_all(path).map_err(|source| StartError::DataDir {
        path: path.display().to_string(),
        source,
    })
}

impl Node {
    /// Starts a node; returns once both ports listen (the group may still be electing).
    pub async fn start(config: BrokerConfig) -> Result<Self, StartError> {
        config.validate()?;
        let config = Arc::new(config);
        for dir in [config.log_dir(), config.sm_dir(), config.spool_dir()] {
            create_dir(&dir)?;
        }
        let raft_listener = bind(&config.raft_addr).await?;
        let client_listener = bind(&config.client_addr).await?;
        let tls = ServerTls::new(&config.tls_source())?;

        let (log, report) = {
            let (dir, cfg) = (config.log_dir(), config.log.clone());
            tokio::task::spawn_blocking(move || CommitLog::open(dir, cfg))
                .await
                .map_err(|e| StartError::Raft(e.to_string()))??
        };
        tracing::info!(?report, "commit log opened");
        let lost_from = log_repair::lost_from(&log);
        let sm = log_repair::open_state_machine(&config.sm_dir(), &log).await?;
        let raft = open_raft(&config, &log, sm.clone(), lost_from.is_some()).await?;

        let term = raft.metrics().borrow_watched().current_term;
        let fence = Arc::new(VoteFence::new(lost_from, term));
        let index = open_index(&config).await?;
        let broker = Arc::new(Broker::new(
            config.clone(),
            raft.clone(),
            sm,
            log.clone(),
            index.clone(),
        ));
        let mut node = Self {
            broker,
            stop: watch::Sender::new(false),
            stop_raft: watch::Sender::new(false),
            front: Vec::new(),
            raft_server: None,
        };
        node.spawn_raft_server(raft_listener, fence.clone());
        if lost_from.is_some() {
            let task = log_repair::lift_when_repaired(raft, log, fence, node.stop.subscribe());
            node.front.push(("vote fence", tokio::spawn(task)));
        }
        node.spawn_client_server(client_listener, &tls);
        node.spawn_duties(index);
        node.initialize_if_fresh().await?;
        tracing::info!(
            node = config.node_id,
            group = %config.group,
            client = %config.client_addr,
            raft = %config.raft_addr,
            "broker node started"
        );
        Ok(node)
    }

    /// The leader's duties, the message indexer (if the index is on) and the registrar
    /// (if there are name servers), each stopped by the node's stop signal.
    fn spawn_duties(&mut self, index: Option<Arc<MessageIndex>>) {
        let broker = &self.broker;
        self.front.push((
            "leader duties",
            tokio::spawn(leader_duties::run(broker.clone(), self.stop.subscribe())),
        ));
        if let Some(index) = index {
            let task = crate::msg_index::indexer::run(broker.clone(), index, self.stop.subscribe());
            self.front.push(("message indexer", tokio::spawn(task)));
        }
        if !broker.config.namesrv.is_empty() {
            self.front.push((
                "registrar",
                tokio::spawn(registrar::run(broker.clone(), self.stop.subscribe())),
            ));
        }
    }

    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    fn stopped(signal: &watch::Sender<bool>) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = signal.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    fn spawn_raft_server(&mut self, listener: TcpListener, fence: Arc<VoteFence>) {
        let config = &self.broker.config;
        let service = RaftGrpcService::new(self.broker.raft.clone(), config.spool_dir(), &config.network)
            .with_vote_fence(fence);
        let net = config.network.clone();
        let shutdown = Self::stopped(&self.stop_raft);
        let task = tokio::spawn(async move {
            if let Err(e) = server::serve(listener, service, &net, shutdown).await {
                tracing::error!(error = %e, "raft server failed");
            }
        });
        self.raft_server = Some(task);
    }

    fn spawn_client_server(&mut self, listener: TcpListener, tls: &ServerTls) {
        let messaging = Messaging::new(self.broker.clone()).into_server();
        let admin = Admin::new(self.broker.clone()).into_server();
        let shutdown = Self::stopped(&self.stop);
        let max = self.broker.config.max_connections;
        let incoming = raftmq_transport::incoming(listener, tls.acceptor(), max, self.stop.subscribe());
        let task = tokio::spawn(async move {
            let result = tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .http2_keepalive_interval(Some(Duration::from_secs(30)))
                .concurrency_limit_per_connection(1024)
                .max_frame_size(raftmq_proto::H2_MAX_FRAME_BYTES)
                .add_service(messaging)
                .add_service(admin)
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "client server failed");
            }
        });
        self.front.push(("client server", task));
    }

    /// The member with the lowest id initializes a group that has never been initialized;
    /// everyone else waits to be contacted by the leader.
    async fn initialize_if_fresh(&self) -> Result<(), StartError> {
        let config = &self.broker.config;
        let initialized = self
            .broker
            .raft
            .is_initialized()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        if initialized || !config.is_initializer() {
            return Ok(());
        }
        let members: BTreeMap<u64, BrokerNode> = config.peers.iter().map(|p| (p.id, p.node())).collect();
        tracing::info!(members = members.len(), "initializing a fresh broker group");
        match self.broker.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(openraft::errors::RaftError::APIError(e)) => {
                // Another incarnation initialized it already; nothing to do.
                tracing::warn!(error = %e, "group initialization not needed");
                Ok(())
            }
            Err(e) => Err(StartError::Raft(e.to_string())),
        }
    }

    /// Resolves when Raft stopped on its own (a fatal storage or state-machine error): the
    /// node can no longer serve and should exit so that a supervisor restarts it.
    ///
    /// Waits on the server metrics, which change with role, vote and membership only: the
    /// full metrics change several times per round, and this future runs on the process's
    /// main thread, outside the runtime's workers, so watching them cost a thread wake-up
    /// per change (about 1,000 a second on a busy leader). Raft's core owns the senders,
    /// so the channel closes when it stops, after it has recorded why.
    pub async fn failed(&self) -> String {
        let mut server = self.broker.raft.server_metrics();
        while server.changed().await.is_ok() {}
        match &self.broker.raft.metrics().borrow_watched().running_state {
            Err(e) => e.to_string(),
            Ok(()) => "raft stopped".into(),
        }
    }

    /// Stops in order: the client port, leader duties and the registrar first (open calls
    /// get `grace`), then Raft, then the Raft port; finally flushes the state machine.
    pub async fn shutdown(self, grace: Duration) {
        tracing::info!("shutting down");
        self.broker.begin_shutdown();
        self.stop.send_replace(true);
        let deadline = tokio::time::Instant::now() + grace;
        for (name, mut task) in self.front {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                tracing::warn!(task = name, "did not stop in time; aborting it");
                task.abort();
            }
        }
        if let Err(e) = self.broker.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        self.stop_raft.send_replace(true);
        if let Some(mut task) = self.raft_server
            && tokio::time::timeout(Duration::from_secs(2), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
        let sm = self.broker.sm.clone();
        match tokio::task::spawn_blocking(move || sm.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "state machine flush at shutdown"),
            Err(e) => tracing::warn!(error = %e, "state machine flush task"),
        }
        tracing::info!("stopped");
    }
}
