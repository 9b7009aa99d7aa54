//! openraft's storage conformance suite against the commit log (log storage) and the
//! RocksDB state machine.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

use openraft::StorageError;
use openraft::testing::log::StoreBuilder;
use openraft::testing::log::Suite;
use openraft::type_config::TypeConfigExt;
use raft_log::CommitLog;
use raft_log::LogConfig;
use raft_log::storage::RaftLogStore;
use raftmq_broker::raft::types::TypeConfig;
use raftmq_broker::sm::SmConfig;
use raftmq_broker::sm::StateMachine;

struct Builder {
    root: tempfile::TempDir,
    seq: AtomicU64,
}

/// Small RocksDB buffers: the suite opens dozens of stores.
fn small() -> SmConfig {
    SmConfig {
        block_cache_bytes: 1 << 20,
        write_buffer_bytes: 1 << 20,
        total_write_buffer_bytes: 4 << 20,
        ..SmConfig::default()
    }
}

impl StoreBuilder<TypeConfig, RaftLogStore<TypeConfig>, StateMachine, ()> for Builder {
    async fn build(&self) -> Result<((), RaftLogStore<TypeConfig>, StateMachine), StorageError<TypeConfig>> {
        let n = self.seq.fetch_add(1, Ordering::SeqCst);
        let dir = self.root.path().join(format!("store-{n}"));
        // Small segments so that the suite's purges and truncations cross segment files.
        let cfg = LogConfig {
            segment_size: 64 * 1024,
            ..LogConfig::default()
        };
        let (log, _) = CommitLog::open(dir.join("log"), cfg)
            .map_err(|e| StorageError::read(TypeConfig::err_from_error(&e)))?;
        let sm = StateMachine::open(dir.join("sm"), small())
            .map_err(|e| StorageError::read(TypeConfig::err_from_error(&e)))?;
        Ok(((), RaftLogStore::new(log), sm))
    }
}

#[test]
fn openraft_storage_suite_with_the_rocksdb_state_machine() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let builder = Builder {
            root: tempfile::tempdir()?,
            seq: AtomicU64::new(0),
        };
        Suite::test_all(builder)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        anyhow::Ok(())
    })
}
