//! raftmq's commit log.
//!
//! The Raft log *is* the commit log: every entry is one record in a segmented,
//! append-only file, checksummed (CRC32C) and acknowledged only after `fdatasync`.
//! Concurrent appends share one fsync (group commit) and complete in log order. The
//! [`storage`] module plugs the log into openraft as its `RaftLogStorage`.
//!
//! Layout of a log directory:
//! - `NNNNNNNNNNNNNNNNNNNN.seg`: segments named after their first index (see [`record`]
//!   for the record format),
//! - `meta`: vote, purge point and write epoch, in two checksummed slots,
//! - `committed`: the last known commit point (advisory, not fsynced),
//! - `LOCK`: held with `flock` while the log is open,
//! - test only, with [`LogConfig::track_synced`]: `NNNNNNNNNNNNNNNNNNNN.seg.synced`, the
//!   durable length of each segment, and the marker `SYNCED_TRACKING` (see [`power_cut`]).
//!
//! [`power_cut`] and [`damage`] are offline tools for chaos tests: they simulate a power
//! failure, and flip bits in or truncate segment files, while no process has the log open.

pub mod config;
mod cut;
pub mod damage;
mod direct_write;
mod durable;
pub mod error;
pub mod fault;
mod flush_pipeline;
mod flusher;
mod fsutil;
mod index;
mod log;
mod log_read;
mod lookahead;
mod meta;
mod page_cache;
pub mod power_cut;
mod read_cache;
pub mod record;
mod recovery;
mod segment;
pub mod slots;
mod staging;
pub mod storage;
mod synced;

pub use config::LogConfig;
pub use error::Corruption;
pub use error::LogError;
pub use flusher::FlushCallback;
pub use flusher::FlushStats;
pub use index::LogBounds;
pub use index::LogPos;
pub use log::CommitLog;
pub use log::LogRecord;
pub use log::StoredEntry;
pub use record::EntryKind;
pub use record::RecordMeta;
pub use recovery::Damage;
pub use recovery::RecoveryReport;
pub use slots::Batch;
pub use slots::SlottedPayload;
