//! raftmq's Rust client: producers and consumers with RocketMQ's semantics, speaking the
//! RocketMQ 5 gRPC protocol (`apache.rocketmq.v2`) to raftmq name servers and brokers.
//!
//! - [`config::ClientConfig`]: access points (name servers, tried in order), timeouts.
//! - [`route`]: topic routes, cached and refreshed; every queue names its broker group and
//!   the addresses that reach it, the leader first.
//! - [`error::ClientError`]: one error type; [`error::ClientError::is_retryable`] tells
//!   what may succeed when tried again, and a send that may or may not have been stored
//!   is [`error::ClientError::OutcomeUnknown`], never a plain failure.

#![warn(missing_docs)]

pub mod access;
pub mod config;
pub mod consumer;
pub mod error;
pub mod message;
mod message_id;
pub mod producer;
pub mod route;
pub mod rpc;
pub mod session;
pub mod telemetry;

pub use config::ClientConfig;
pub use consumer::ConsumeMode;
pub use consumer::ConsumeResult;
pub use consumer::FilterExpression;
pub use consumer::PullConsumer;
pub use consumer::PushConsumer;
pub use consumer::ReceivedMessage;
pub use consumer::SimpleConsumer;
pub use consumer::StartFrom;
pub use error::ClientError;
pub use error::Result;
pub use message::Message;
pub use producer::CoalesceOptions;
pub use producer::Producer;
