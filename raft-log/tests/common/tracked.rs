//! A log with `track_synced` on, and a way to "kill" it with appended data that never
//! became durable: syncs are held while the data is written into the page cache, then
//! failed, which poisons the log so that nothing more is synced before it is dropped.

use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use raft_log::CommitLog;
use raft_log::LogConfig;
use raft_log::RecordMeta;
use raft_log::RecoveryReport;
use raft_log::fault::FaultInjector;
use raft_log::record::HEADER_LEN;

/// Small segments, tracking on, a fresh fault injector.
pub fn tracked_config(faults: &Arc<FaultInjector>) -> LogConfig {
    LogConfig {
        segment_size: 64 * 1024,
        track_synced: true,
        faults: Some(faults.clone()),
        ..LogConfig::default()
    }
}

pub struct Tracked {
    pub dir: tempfile::TempDir,
    pub faults: Arc<FaultInjector>,
    pub log: Option<CommitLog>,
}

impl Tracked {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut t = Self {
            dir,
            faults: Arc::default(),
            log: None,
        };
        t.reopen();
        t
    }

    pub fn log(&self) -> &CommitLog {
        self.log.as_ref().expect("log is open")
    }

    /// Closes (if open) and opens the log again, with a new fault injector.
    pub fn reopen(&mut self) -> RecoveryReport {
        self.log = None;
        self.faults = Arc::default();
        let (log, report) =
            CommitLog::open(self.dir.path(), tracked_config(&self.faults)).expect("open tracked log");
        self.log = Some(log);
        report
    }

    /// Appends `batches` with syncs held, and waits until their bytes are written into the
    /// segment files (page cache) but not synced. Only [`Tracked::kill`] may follow.
    pub fn append_unsynced(&self, batches: Vec<Vec<(RecordMeta, Vec<u8>)>>) {
        self.faults.hold_syncs();
        let log = self.log();
        let before = log.flush_stats().bytes;
        let mut bytes = 0u64;
        for batch in batches {
            bytes += batch
                .iter()
                .map(|(_, p)| (HEADER_LEN + p.len()) as u64)
                .sum::<u64>();
            log.append(batch, Box::new(|_| {})).expect("append unsynced");
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while log.flush_stats().bytes < before + bytes {
            assert!(Instant::now() < deadline, "unsynced appends were not written");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Ends the process's view of the log as SIGKILL would: whatever was not synced yet
    /// never is (the pending fsync fails and poisons the log), written bytes stay in the
    /// files.
    pub fn kill(&mut self) {
        self.faults.fail_next_syncs(u32::MAX);
        self.faults.release_syncs();
        self.log = None;
    }
}
