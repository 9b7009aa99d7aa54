//! openraft's storage conformance suite against the commit log.

use std::io;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

use futures_util::Stream;
use futures_util::StreamExt;
use openraft::EntryPayload;
use openraft::OptionalSend;
use openraft::RaftSnapshotBuilder;
use openraft::StorageError;
use openraft::storage::EntryResponder;
use openraft::storage::RaftStateMachine;
use openraft::testing::log::StoreBuilder;
use openraft::testing::log::Suite;
use openraft::type_config::TypeConfigExt;
use openraft::type_config::alias::LogIdOf;
use openraft::type_config::alias::SnapshotMetaOf;
use openraft::type_config::alias::SnapshotOf;
use openraft::type_config::alias::StoredMembershipOf;
use raft_log::Batch;
use raft_log::CommitLog;
use raft_log::LogConfig;
use raft_log::storage::RaftLogStore;

openraft::declare_raft_types!(
    pub TestConfig:
        D = Batch,
        R = (),
        Node = openraft::BasicNode,
);

/// What the smallest state machine the suite accepts remembers.
#[derive(Debug, Default)]
struct SmState {
    applied: Option<LogIdOf<TestConfig>>,
    membership: StoredMembershipOf<TestConfig>,
    snapshot: Option<SnapshotOf<TestConfig, Vec<u8>>>,
}

/// State machine and its snapshot builders share the state, so that a built snapshot
/// becomes the current one.
#[derive(Debug, Default, Clone)]
struct MemStateMachine(Arc<Mutex<SmState>>);

impl MemStateMachine {
    fn state(&self) -> std::sync::MutexGuard<'_, SmState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl RaftSnapshotBuilder<TestConfig> for MemStateMachine {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TestConfig, Vec<u8>>, io::Error> {
        let mut st = self.state();
        let snap = SnapshotOf::<TestConfig, Vec<u8>> {
            meta: SnapshotMetaOf::<TestConfig> {
                last_log_id: st.applied,
                last_membership: st.membership.clone(),
            },
            snapshot: Vec::new(),
        };
        st.snapshot = Some(snap.clone());
        Ok(snap)
    }
}

impl RaftStateMachine<TestConfig> for MemStateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<TestConfig>>, StoredMembershipOf<TestConfig>), io::Error> {
        let st = self.state();
        Ok((st.applied, st.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<TestConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let mut st = self.state();
            st.applied = Some(entry.log_id);
            if let EntryPayload::Membership(m) = &entry.payload {
                st.membership = StoredMembershipOf::<TestConfig>::new(Some(entry.log_id), m.clone());
            }
            if let Some(r) = responder {
                r.send(());
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TestConfig>,
        snapshot: Vec<u8>,
    ) -> Result<(), io::Error> {
        let mut st = self.state();
        st.applied = meta.last_log_id;
        st.membership = meta.last_membership.clone();
        st.snapshot = Some(SnapshotOf::<TestConfig, Vec<u8>> {
            meta: meta.clone(),
            snapshot,
        });
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<TestConfig, Vec<u8>>>, io::Error> {
        Ok(self.state().snapshot.clone())
    }
}

struct Builder {
    root: tempfile::TempDir,
    seq: AtomicU64,
}

impl StoreBuilder<TestConfig, RaftLogStore<TestConfig>, MemStateMachine, ()> for Builder {
    async fn build(
        &self,
    ) -> Result<((), RaftLogStore<TestConfig>, MemStateMachine), StorageError<TestConfig>> {
        let n = self.seq.fetch_add(1, Ordering::SeqCst);
        let dir = self.root.path().join(format!("store-{n}"));
        // Small segments so that the suite's purges and truncations cross segment files.
        let cfg = LogConfig {
            segment_size: 64 * 1024,
            ..LogConfig::default()
        };
        let (log, _) =
            CommitLog::open(&dir, cfg).map_err(|e| StorageError::read(TestConfig::err_from_error(&e)))?;
        Ok(((), RaftLogStore::new(log), MemStateMachine::default()))
    }
}

#[test]
fn openraft_log_storage_suite() -> anyhow::Result<()> {
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
