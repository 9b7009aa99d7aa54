//! Jepsen-like chaos testing for raftmq, sans-IO core.
//!
//! A chaos run records everything it does and observes in a *history*: one JSON object
//! per line ([`history`]), written as the run goes. The [`checker`] is a pure function
//! of that history: it finds acknowledged messages that were never consumed (lost),
//! messages consumed more than once or despite a failed send (duplicated), per-key
//! order violations, committed offsets that move backwards, and measures how long
//! sends fail after each injected fault (RTO). The result is a [`Report`], printed as a
//! table per fault kind.
//!
//! The runner that starts processes, injects faults and drives the client plugs into
//! this crate by writing [`history::Record`]s through a [`history::HistoryWriter`].

#![warn(missing_docs)]

mod availability;
pub mod checker;
pub mod error;
pub mod history;
pub mod report;

pub use checker::check;
pub use error::ChaosError;
pub use report::Report;
