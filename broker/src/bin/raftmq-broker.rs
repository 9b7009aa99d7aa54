//! `raftmq-broker`: runs one member of a broker group until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use raftmq_broker::config::BrokerConfig;
use raftmq_broker::config::PeerConfig;
use raftmq_broker::node::Node;
use raftmq_transport::Signals;

/// jemalloc serves every allocation of the process (Rust's, and RocksDB's through the
/// unprefixed `malloc`): against glibc's allocator it took about a tenth off the brokers'
/// CPU per message at peak load (docs/BENCHMARKS.md, "jemalloc").
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A raftmq broker node: one member of a Raft-replicated broker group serving the
/// RocketMQ 5 gRPC protocol. Flags override the TOML file; `--print-config` shows the result.
#[derive(Debug, Parser)]
#[command(name = "raftmq-broker", version)]
struct Args {
    /// TOML configuration file (every key optional; see docs/OPERATIONS.md).
    #[arg(long, short = 'c', env = "RAFTMQ_BROKER_CONFIG")]
    config: Option<PathBuf>,
    /// Raft node id of this broker (≥ 1, unique in the group).
    #[arg(long)]
    node_id: Option<u64>,
    /// Broker group name.
    #[arg(long)]
    group: Option<String>,
    /// Data directory (commit log and state machine).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Client address (RocketMQ 5 gRPC and admin), IP:port.
    #[arg(long)]
    client_addr: Option<String>,
    /// Raft address, IP:port.
    #[arg(long)]
    raft_addr: Option<String>,
    /// A group member as ID=RAFT_ADDR/CLIENT_ADDR; repeat for every member, this node included.
    #[arg(long = "peer", value_parser = PeerConfig::parse)]
    peers: Vec<PeerConfig>,
    /// Name server to register with, host:port; repeat the flag or separate several with
    /// commas. Replaces the file's list.
    #[arg(long, value_delimiter = ',')]
    namesrv: Vec<String>,
    /// How often to register with each name server, ms (also at once on a role, term,
    /// leader or topic change).
    #[arg(long)]
    register_interval_ms: Option<u64>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

impl Args {
    fn into_config(self) -> anyhow::Result<(BrokerConfig, bool)> {
        let mut c = match &self.config {
            Some(path) => BrokerConfig::from_toml_file(path)?,
            None => BrokerConfig::default(),
        };
        if let Some(v) = self.node_id {
            c.node_id = v;
        }
        if let Some(v) = self.group {
            c.group = v;
        }
        if let Some(v) = self.data_dir {
            c.data_dir = v;
        }
        if let Some(v) = self.client_addr {
            c.client_addr = v;
        }
        if let Some(v) = self.raft_addr {
            c.raft_addr = v;
        }
        if !self.peers.is_empty() {
            c.peers = self.peers;
        }
        if !self.namesrv.is_empty() {
            c.namesrv = self
                .namesrv
                .iter()
                .map(|a| a.trim())
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if let Some(v) = self.register_interval_ms {
            c.register_interval_ms = v;
        }
        Ok((c, self.print_config))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let (config, print) = Args::parse().into_config()?;
    if print {
        println!("{}", toml::to_string_pretty(&config).context("render config")?);
        return Ok(());
    }
    let grace = Duration::from_millis(config.shutdown_grace_ms);
    let mut signals = Signals::install().context("install SIGTERM/SIGINT handlers")?;
    let node = tokio::select! {
        node = Node::start(config) => node.context("broker node failed to start")?,
        signal = signals.recv() => {
            // The client port is not serving yet; what is on disk is recovered next time.
            tracing::info!(signal, "stopped while starting");
            return Ok(());
        }
    };
    let failure = tokio::select! {
        signal = signals.recv() => {
            tracing::info!(signal, "stopping");
            None
        }
        reason = node.failed() => Some(reason),
    };
    match failure {
        None => {
            node.shutdown(grace).await;
            Ok(())
        }
        Some(reason) => {
            // Exit non-zero so that a supervisor restarts the node from its data dir.
            tracing::error!(%reason, "raft stopped on a fatal error; exiting");
            node.shutdown(grace).await;
            std::process::exit(2);
        }
    }
}
