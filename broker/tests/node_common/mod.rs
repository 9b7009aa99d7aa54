//! Harness of the in-process single-node tests: one broker group of one member (commit log,
//! RocksDB state machine, openraft) with its data in a temporary folder, plus the small
//! builders those tests share.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use raft_log::CommitLog;
use raft_log::LogConfig;
use raftmq_broker::command::Command;
use raftmq_broker::command::CommandResult;
use raftmq_broker::command::Header;
use raftmq_broker::command::MessageKind;
use raftmq_broker::command::Permission;
use raftmq_broker::command::TopicConfig;
use raftmq_broker::config::BrokerConfig;
use raftmq_broker::config::PeerConfig;
use raftmq_broker::context::Broker;
use raftmq_broker::context::BrokerRaft;
use raftmq_broker::raft::NetworkFactory;
use raftmq_broker::raft::types::LogStore;
use raftmq_broker::sm::SmConfig;
use raftmq_broker::sm::StateMachine;
use raftmq_proto::rocketmq::v2 as pb;

/// The configuration of node 1, the only member of `group`, with its data under `data_dir`.
pub fn config(group: &str, data_dir: &Path, raft_addr: String, client_addr: String) -> BrokerConfig {
    let peer = PeerConfig {
        id: 1,
        raft_addr,
        client_addr,
    };
    BrokerConfig {
        node_id: 1,
        group: group.into(),
        data_dir: data_dir.to_path_buf(),
        client_addr: peer.client_addr.clone(),
        raft_addr: peer.raft_addr.clone(),
        peers: vec![peer],
        log: LogConfig {
            segment_size: 4 << 20,
            preallocate: false,
            ..LogConfig::default()
        },
        ..BrokerConfig::default()
    }
}

/// A single-node group, initialized and leading; no port is opened (the addresses are
/// placeholders), so the tests call the handlers directly.
pub struct SingleNode {
    pub broker: Arc<Broker>,
    pub dir: tempfile::TempDir,
}

impl SingleNode {
    pub async fn start(group: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let config = config(group, dir.path(), "127.0.0.1:1".into(), "127.0.0.1:2".into());
        let (log, _) = CommitLog::open(config.log_dir(), config.log.clone())?;
        let sm = StateMachine::open(config.sm_dir(), SmConfig::default())?;
        let net = NetworkFactory::new(1, group, config.network.clone())?;
        let raft_config = config.raft.build(group)?;
        let store: LogStore = raft_log::storage::RaftLogStore::new(log.clone());
        let raft: BrokerRaft = openraft::Raft::new(1, raft_config, net, store, sm.clone()).await?;
        raft.initialize(BTreeMap::from([(1, config.peers[0].node())]))
            .await?;
        raft.wait(Some(Duration::from_secs(20)))
            .state(ServerState::Leader, "single node leads")
            .await?;
        let broker = Arc::new(Broker::new(Arc::new(config), raft, sm, log, None));
        Ok(Self { broker, dir })
    }

    pub async fn create_topic(&self, name: &str, queues: u32, kind: MessageKind) -> anyhow::Result<()> {
        create_topic(&self.broker, name, queues, kind).await
    }

    pub async fn stop(&self) {
        let _ = self.broker.raft.shutdown().await;
    }
}

/// Creates a read-write topic through the log.
pub async fn create_topic(broker: &Broker, name: &str, queues: u32, kind: MessageKind) -> anyhow::Result<()> {
    let config = TopicConfig {
        name: name.into(),
        queues,
        permission: Permission::ReadWrite,
        kind,
    };
    let r = broker
        .write(Command::control(Header::CreateTopic(config))?)
        .await?;
    anyhow::ensure!(r == CommandResult::Done, "create topic: {r:?}");
    Ok(())
}

pub fn res(name: &str) -> pb::Resource {
    pb::Resource {
        resource_namespace: String::new(),
        name: name.into(),
    }
}

/// A message to `topic` with id `id`, an optional tag and message group, and `body`.
pub fn message(
    topic: &str,
    id: &str,
    tag: Option<&str>,
    message_group: Option<&str>,
    body: impl Into<Vec<u8>>,
) -> pb::Message {
    pb::Message {
        topic: Some(res(topic)),
        user_properties: Default::default(),
        system_properties: Some(pb::SystemProperties {
            tag: tag.map(Into::into),
            message_id: id.into(),
            message_group: message_group.map(Into::into),
            ..Default::default()
        }),
        body: body.into().into(),
    }
}
