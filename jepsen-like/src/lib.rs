//! Jepsen-like chaos testing for raftmq.
//!
//! A chaos run records everything it does and observes in a *history*: one JSON object
//! per line ([`history`]), written as the run goes. The [`run`] module is the runner: it
//! starts a cluster of real processes, drives producers and an ordered consumer group,
//! injects faults on a seeded schedule, heals, drains, and writes the history. The
//! [`checker`] is a pure function of that history: it finds acknowledged messages that
//! were never consumed (lost), messages consumed more than once or despite a failed send
//! (duplicated), per-key order violations, committed offsets that move backwards, and
//! measures how long sends fail after each injected fault (RTO). The result is a
//! [`Report`], printed as a table per fault kind.

#![warn(missing_docs)]

mod availability;
pub mod checker;
pub mod duration;
pub mod error;
pub mod history;
pub mod report;
pub mod run;

pub use checker::check;
pub use error::ChaosError;
pub use report::Report;
