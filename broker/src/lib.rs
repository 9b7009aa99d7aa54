//! A raftmq broker node: one member of a broker group. The group's Raft log is the commit
//! log (`raft-log`); a RocksDB state machine holds consume queues, offsets and topic
//! configuration, all changed only by applying Raft entries.

pub mod admin;
pub mod assignment;
pub mod clients;
pub mod command;
pub mod config;
pub mod context;
pub mod delivered_digest;
pub mod error;
pub mod forward;
pub mod leader_duties;
mod log_repair;
pub mod message;
pub mod message_record;
pub mod msg_index;
pub mod node;
pub mod postcard_out;
pub mod raft;
pub mod registrar;
pub mod send_batcher;
pub mod service;
pub mod sm;
pub mod wire_message;
