//! The openraft type configuration of a broker group.

use serde::Deserialize;
use serde::Serialize;

use crate::command::Command;
use crate::command::CommandResult;

/// Raft node id of a broker (unique within its group).
pub type NodeId = u64;

/// How to reach a member of the group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerNode {
    /// Address of the internal Raft service (`host:port`).
    pub raft_addr: String,
    /// Address clients use (`host:port`).
    pub client_addr: String,
}

impl std::fmt::Display for BrokerNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "raft={} client={}", self.raft_addr, self.client_addr)
    }
}

openraft::declare_raft_types!(
    /// Types of a broker group's Raft: commands in, command results out, entries stored by
    /// the commit log (`raft_log::storage::RaftLogStore`).
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        Node = BrokerNode,
);

/// The commit log as openraft log storage.
pub type LogStore = raft_log::storage::RaftLogStore<TypeConfig>;

/// A snapshot as it travels and is installed: a file holding an archive of a RocksDB
/// checkpoint, positioned at its start. Message bodies are not in it (they live in the log).
pub type SnapshotData = std::fs::File;
