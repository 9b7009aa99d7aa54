//! The broker group's Raft: types, configuration, and the network between members
//! (`raftmq.raft.v1.RaftService` over gRPC, and replication links, both on the node's own
//! Raft port).

pub mod append_wire;
pub mod config;
pub mod link;
pub mod network;
pub mod server;
pub mod types;
pub mod vote_fence;
pub mod wire;

pub use config::RaftConfig;
pub use network::NetworkConfig;
pub use network::NetworkFactory;
pub use network::NetworkStats;
pub use server::RaftGrpcService;
