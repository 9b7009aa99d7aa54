//! raftmq's name server: a registry of broker groups that keeps nothing on disk.
//!
//! Broker nodes register ([`registry_service`]) every 30 s and whenever their role, term,
//! leader or topics change; the [`route_table`] (sans-IO, fed with `now`) merges them
//! into routes; clients of the RocketMQ 5 protocol use the name server as their access
//! point ([`service`]: QueryRoute, Telemetry, Heartbeat). Several name servers share
//! nothing: each learns the same registry from the brokers.

pub mod config;
pub mod error;
pub mod registration;
pub mod registry;
pub mod registry_service;
pub mod route_table;
pub mod server;
pub mod service;

pub use config::NamesrvConfig;
pub use error::NamesrvError;
pub use server::Namesrv;
