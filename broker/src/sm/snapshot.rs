//! Snapshots: build = RocksDB checkpoint packed into one archive file; install = verify,
//! unpack into a new database directory, switch to it.
//!
//! The current snapshot (the last built or installed) is kept as `<root>/snapshot`; its
//! header holds the meta, so it survives restarts. Message bodies are not in snapshots:
//! they live in the commit log.

use std::fs::File;
use std::io::Seek;
use std::io::SeekFrom;

use openraft::type_config::alias::SnapshotOf;

use super::archive;
use super::archive::SnapshotMeta;
use super::error::SmError;
use super::error::SmResult;
use super::fsutil;
use super::inner::Inner;
use super::store::Store;
use crate::raft::types::SnapshotData;
use crate::raft::types::TypeConfig;

pub type Snapshot = SnapshotOf<TypeConfig, SnapshotData>;

fn open_file(path: &std::path::Path) -> SmResult<File> {
    File::open(path).map_err(|e| SmError::io("open", path, e))
}

impl Inner {
    /// Builds a snapshot of the applied state and makes it the current one.
    pub fn build_snapshot(&self) -> SmResult<Snapshot> {
        let n = self.next_seq();
        let checkpoint = self.layout.tmp().join(format!("checkpoint-{n}"));
        let partial = self.layout.tmp().join(format!("snapshot-{n}"));
        let meta = {
            // No apply runs between reading the applied state and the checkpoint.
            let _writer = self.writer();
            self.with_store(|store| {
                store.flush()?;
                let (last_log_id, last_membership) = store.applied_state()?;
                store.checkpoint(&checkpoint)?;
                Ok(SnapshotMeta {
                    last_log_id,
                    last_membership,
                })
            })?
        };
        let packed = archive::write_archive(&checkpoint, &meta, &partial);
        fsutil::remove_path(&checkpoint)?;
        packed?;
        let file = open_file(&partial)?;
        self.publish(&partial, &meta)?;
        tracing::info!(last_log_id = ?meta.last_log_id, "built state machine snapshot");
        Ok(Snapshot { meta, snapshot: file })
    }

    /// Makes the archive at `path` the current snapshot, unless the current one is newer.
    fn publish(&self, path: &std::path::Path, meta: &SnapshotMeta) -> SmResult<()> {
        let mut current = self.snapshot();
        let newer = current.as_ref().is_some_and(|c| c.last_log_id > meta.last_log_id);
        if newer {
            return fsutil::remove_path(path);
        }
        fsutil::rename_durable(path, &self.layout.snapshot_file())?;
        *current = Some(meta.clone());
        Ok(())
    }

    /// The current snapshot, with its archive opened at the start.
    pub fn current_snapshot(&self) -> SmResult<Option<Snapshot>> {
        let current = self.snapshot();
        let Some(meta) = current.as_ref() else {
            return Ok(None);
        };
        let file = open_file(&self.layout.snapshot_file())?;
        Ok(Some(Snapshot {
            meta: meta.clone(),
            snapshot: file,
        }))
    }

    /// Replaces the state with the snapshot's: verify, unpack, open to check, switch.
    pub fn install_snapshot(&self, meta: &SnapshotMeta, mut data: File) -> SmResult<()> {
        let n = self.next_seq();
        let received = self.layout.tmp().join(format!("received-{n}"));
        let unpacked = self.layout.tmp().join(format!("install-{n}"));
        let result = self.install_from(meta, &mut data, &received, &unpacked);
        fsutil::remove_path(&unpacked)?;
        fsutil::remove_path(&received)?;
        result
    }

    fn install_from(
        &self,
        meta: &SnapshotMeta,
        data: &mut File,
        received: &std::path::Path,
        unpacked: &std::path::Path,
    ) -> SmResult<()> {
        // Keep our own copy: the snapshot becomes the current one, and `data` may be a file
        // that goes away (or is our current snapshot itself).
        copy_archive(data, received)?;
        let archived = archive::unpack(&mut open_file(received)?, unpacked)?;
        if archived != *meta {
            let detail = format!("archive holds {archived:?}, installing {meta:?}");
            return Err(SmError::bad_snapshot(detail));
        }
        check_database(unpacked, meta, &self.cfg)?;
        self.switch_database(unpacked)?;
        self.publish(received, meta)?;
        tracing::info!(last_log_id = ?meta.last_log_id, "installed state machine snapshot");
        Ok(())
    }

    /// Moves the unpacked database into place and makes it the live one.
    fn switch_database(&self, unpacked: &std::path::Path) -> SmResult<()> {
        let _writer = self.writer();
        let mut live = self.live_mut();
        let old = self.generation();
        let generation = old + 1;
        let dir = self.layout.db_dir(generation);
        fsutil::remove_path(&dir)?;
        fsutil::rename_durable(unpacked, &dir)?;
        // Close the old database before the switch, so nothing writes to it afterwards.
        drop(live.take());
        self.layout.switch_to(generation)?;
        self.set_generation(generation);
        *live = Some(Store::open(&dir, &self.cfg)?);
        fsutil::remove_path(&self.layout.db_dir(old))
    }
}

fn copy_archive(data: &mut File, to: &std::path::Path) -> SmResult<()> {
    data.seek(SeekFrom::Start(0))
        .map_err(|e| SmError::io("seek", to, e))?;
    let mut out = File::create_new(to).map_err(|e| SmError::io("create", to, e))?;
    std::io::copy(data, &mut out).map_err(|e| SmError::io("copy snapshot to", to, e))?;
    out.sync_all().map_err(|e| SmError::io("fsync", to, e))
}

/// Opens the unpacked database once: it must be readable and hold the snapshot's state.
fn check_database(dir: &std::path::Path, meta: &SnapshotMeta, cfg: &super::store::SmConfig) -> SmResult<()> {
    let store = Store::open(dir, cfg)?;
    let (applied, membership) = store.applied_state()?;
    if applied != meta.last_log_id || membership != meta.last_membership {
        let detail = format!(
            "database is at {applied:?}, snapshot meta says {:?}",
            meta.last_log_id
        );
        return Err(SmError::bad_snapshot(detail));
    }
    Ok(())
}
