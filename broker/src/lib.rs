//! A raftmq broker node: one member of a broker group. The group's Raft log is the commit
//! log (`raft-log`); a RocksDB state machine holds consume queues, offsets and topic
//! configuration, all changed only by applying Raft entries.

pub mod command;
pub mod raft;
pub mod sm;
