//! Configuration of the commit log.

use std::sync::Arc;

use serde::Deserialize;
use serde::Serialize;

use crate::error::LogError;
use crate::fault::FaultInjector;

/// Tunables of the commit log. Defaults follow RocketMQ's commit log where it has one
/// (1 GiB segment files, preallocated).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Size of one segment file in bytes. A record that does not fit starts a new segment;
    /// a single record larger than this gets a segment of its own. Default 1 GiB.
    pub segment_size: u64,
    /// Largest payload of one entry in bytes. Default 64 MiB.
    pub max_record_size: u32,
    /// Reserve the whole segment on disk when it is created (`fallocate`), so appends never
    /// grow the file. Default true.
    pub preallocate: bool,
    /// **Test only.** After every successful data `fdatasync`, record how many bytes of
    /// each segment are durable in a side file `<segment>.synced`, so that a chaos harness
    /// can simulate a power failure with [`crate::power_cut::cut_to_synced`] after killing
    /// the process. Costs a small file write and rename per fsync round; leave it off in
    /// production. Set from a broker's TOML as `[log] track_synced = true`. Default false.
    /// Turning it off again removes the side files at the next open.
    pub track_synced: bool,
    /// Payload bytes of recently read entries kept in memory, so that the next reads of an
    /// entry (replication to each follower, the apply, consumers reading its other
    /// messages) do not copy and checksum it again. Default 64 MiB; 0 turns the cache off.
    pub read_cache_bytes: usize,
    /// With buffered writes (`direct_io` off, or a filesystem that refuses it): bytes of
    /// the newest durable log data left in the OS page cache. Pages of older
    /// data are dropped once fsynced (`POSIX_FADV_DONTNEED`), so the log reuses a bounded
    /// set of pages instead of growing the page cache (see `page_cache.rs`); readers
    /// further behind than this read from the disk. Default 64 MiB; 0 leaves the page
    /// cache to the kernel.
    pub page_cache_window: u64,
    /// Write segments with `O_DIRECT`, past the page cache, where the filesystem allows it
    /// (others fall back to buffered writes). Saves the copy of every byte into the page
    /// cache and its writeback; reads still go through the page cache. Default true.
    pub direct_io: bool,
    /// Test hook to inject I/O failures; never set in production.
    #[serde(skip)]
    pub faults: Option<Arc<FaultInjector>>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_size: 1 << 30,
            max_record_size: 64 << 20,
            preallocate: true,
            track_synced: false,
            read_cache_bytes: 64 << 20,
            page_cache_window: 64 << 20,
            direct_io: true,
            faults: None,
        }
    }
}

/// Offsets inside a segment are kept as u32 to halve the in-memory index.
const MAX_FILE_LEN: u64 = u32::MAX as u64;

impl LogConfig {
    /// Checks the rules that span fields.
    pub fn validate(&self) -> Result<(), LogError> {
        if self.segment_size < 64 * 1024 {
            return Err(LogError::Config(format!(
                "segment_size {} is below the minimum of 65536 bytes",
                self.segment_size
            )));
        }
        if self.max_record_size == 0 {
            return Err(LogError::Config("max_record_size must be positive".into()));
        }
        let worst = self.segment_size + u64::from(self.max_record_size) + 4096;
        if worst > MAX_FILE_LEN {
            return Err(LogError::Config(format!(
                "segment_size ({}) + max_record_size ({}) must stay below 4 GiB",
                self.segment_size, self.max_record_size
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_limits_are_enforced() {
        LogConfig::default().validate().expect("default config");
        let small = LogConfig {
            segment_size: 1000,
            ..LogConfig::default()
        };
        assert!(small.validate().is_err());
        let huge = LogConfig {
            segment_size: 4 << 30,
            ..LogConfig::default()
        };
        assert!(huge.validate().is_err());
        let zero = LogConfig {
            max_record_size: 0,
            ..LogConfig::default()
        };
        assert!(zero.validate().is_err());
    }

    #[test]
    fn track_synced_is_off_unless_a_config_turns_it_on() {
        let plain: LogConfig = serde_json::from_str("{}").expect("empty table");
        assert!(!plain.track_synced);
        let tracked: LogConfig =
            serde_json::from_str(r#"{"track_synced": true, "segment_size": 65536}"#).expect("table");
        assert!(tracked.track_synced);
        assert_eq!(tracked.segment_size, 65536);
        assert!(tracked.preallocate, "other fields keep their defaults");
    }
}
