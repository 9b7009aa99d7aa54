//! The process-level test harness lives in the `raftmq-testkit` crate (shared with the
//! client's tests); this module keeps the tests' `process_common::...` paths.

pub use raftmq_testkit::*;
