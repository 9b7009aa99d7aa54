//! The state machine's RocksDB database: opening it, writing applied batches, checkpoints.
//!
//! Writes skip RocksDB's write-ahead log. The Raft log is the durable source of every
//! change, and each batch carries the applied log id together with the data it produced,
//! so whatever RocksDB has on disk after a crash is the state at *some* applied log id, and
//! openraft re-applies the entries after it. Two things make that hold:
//!
//! - **atomic flush**: all column families are flushed together, so SST files never mix
//!   one column family's newer state with another's older one (without a WAL there is
//!   nothing else to reconcile them);
//! - **snapshots flush**: a snapshot is a checkpoint, which flushes the memtables, so the
//!   state on disk is never older than the last snapshot, and openraft only purges log
//!   entries the last snapshot covers. The entries to re-apply are therefore still in the log.

use std::path::Path;
use std::path::PathBuf;

use rocksdb::BlockBasedOptions;
use rocksdb::Cache;
use rocksdb::ColumnFamily;
use rocksdb::ColumnFamilyDescriptor;
use rocksdb::DB;
use rocksdb::DBCompressionType;
use rocksdb::FlushOptions;
use rocksdb::Options;
use rocksdb::WriteBatch;
use rocksdb::WriteOptions;

use super::apply::Op;
use super::cq_runs::Run;
use super::cq_runs::Runs;
use super::error::SmError;
use super::error::SmResult;
use super::keys;
use super::keys::GroupName;
use super::keys::TopicName;
use super::meta_cache::MetaCache;
use super::records;
use crate::raft::types::TypeConfig;
use openraft::type_config::alias::LogIdOf;
use openraft::type_config::alias::StoredMembershipOf;

pub const CF_META: &str = "meta";
pub const CF_TOPICS: &str = "topics";
pub const CF_QUEUES: &str = "queues";
pub const CF_CQ: &str = "cq";
pub const CF_OFFSETS: &str = "offsets";
pub const CF_POP: &str = "pop";

/// Whether a write may wait while RocksDB catches up with its background work (a write
/// stall: too many memtables waiting to be flushed, too many level-0 files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// Wait, as long as it takes (the blocking pool's writes).
    Wait,
    /// Fail with [`SmError::WouldStall`] instead, writing nothing (writes on an async
    /// worker, which must not block).
    Refuse,
}

/// Every column family we use (RocksDB's `default` is opened too, and stays empty).
pub const COLUMN_FAMILIES: [&str; 6] = [CF_META, CF_TOPICS, CF_QUEUES, CF_CQ, CF_OFFSETS, CF_POP];
/// Column families older builds wrote and this one drops when it opens their database
/// (names never to be used again): `msgid` indexed every message by its id (a random-key
/// row per message that nothing read).
const RETIRED_COLUMN_FAMILIES: [&str; 1] = ["msgid"];

/// On-disk format of the database; bumped on incompatible changes. 2: a `cq` row holds a
/// run of entries ([`super::cq_runs`]).
pub const FORMAT_VERSION: u32 = 2;
/// Older formats this build reads, and restamps as [`FORMAT_VERSION`] when it opens them
/// (1 wrote a `cq` row per entry, a run of one).
const READS_FORMATS: [u32; 1] = [1];

pub type LogId = LogIdOf<TypeConfig>;
pub type StoredMembership = StoredMembershipOf<TypeConfig>;

/// Tuning of the state machine's RocksDB.
#[derive(Debug, Clone)]
pub struct SmConfig {
    /// Block cache shared by all column families.
    pub block_cache_bytes: usize,
    /// Memtable size of one column family.
    pub write_buffer_bytes: usize,
    /// Memtable budget over all column families.
    pub total_write_buffer_bytes: usize,
    /// Open table files kept (bounded so a large state does not exhaust descriptors).
    pub max_open_files: i32,
    /// Background flush and compaction threads.
    pub background_jobs: i32,
}

impl Default for SmConfig {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            block_cache_bytes: 64 << 20,
            write_buffer_bytes: 16 << 20,
            total_write_buffer_bytes: 64 << 20,
            max_open_files: 1024,
            background_jobs: cpus.clamp(2, 4) as i32,
        }
    }
}

/// An open state machine database.
pub struct Store {
    db: DB,
    path: PathBuf,
    /// Topic records and queue counters, loaded at open and kept current by [`Store::write`].
    pub(super) meta: MetaCache,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// A topic name inside a change: apply only produces changes for valid names.
fn topic(name: &str) -> SmResult<TopicName<'_>> {
    TopicName::new(name).map_err(|e| SmError::corrupt("topic name in change", e))
}

fn db_options(cfg: &SmConfig) -> Options {
    let mut o = Options::default();
    o.create_if_missing(true);
    o.create_missing_column_families(true);
    o.set_atomic_flush(true);
    o.set_max_open_files(cfg.max_open_files);
    o.set_max_background_jobs(cfg.background_jobs);
    o.set_db_write_buffer_size(cfg.total_write_buffer_bytes);
    // Start the writeback of flushed and compacted SST files every MiB instead of leaving
    // it all to their final fsync: a burst of tens of MiB queued on the shared disk
    // stalls the commit log's fdatasyncs behind it.
    o.set_bytes_per_sync(1 << 20);
    o.set_keep_log_file_num(4);
    o.set_max_log_file_size(8 << 20);
    o
}

fn cf_options(cfg: &SmConfig, cache: &Cache) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    table.set_bloom_filter(10.0, false);
    table.set_cache_index_and_filter_blocks(true);
    let mut o = Options::default();
    o.set_block_based_table_factory(&table);
    o.set_write_buffer_size(cfg.write_buffer_bytes);
    o.set_compression_type(DBCompressionType::Lz4);
    o.set_bottommost_compression_type(DBCompressionType::Lz4);
    o.set_level_compaction_dynamic_level_bytes(true);
    o
}

impl Store {
    /// Opens (creating if needed) the database in `path`.
    pub fn open(path: &Path, cfg: &SmConfig) -> SmResult<Self> {
        let cache = Cache::new_lru_cache(cfg.block_cache_bytes);
        let options = db_options(cfg);
        // RocksDB opens a database only with all of its column families named.
        let existing = match DB::list_cf(&options, path) {
            Ok(names) => names,
            Err(_) if !path.join("CURRENT").exists() => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let retired: Vec<&str> = RETIRED_COLUMN_FAMILIES
            .into_iter()
            .filter(|name| existing.iter().any(|e| e == name))
            .collect();
        let cfs = COLUMN_FAMILIES
            .iter()
            .chain(&retired)
            .map(|name| ColumnFamilyDescriptor::new(*name, cf_options(cfg, &cache)));
        let db = DB::open_cf_descriptors(&options, path, cfs)?;
        let mut store = Self {
            db,
            path: path.to_path_buf(),
            meta: MetaCache::default(),
        };
        // First: a database this build refuses is left exactly as it was.
        store.check_format()?;
        for name in retired {
            tracing::info!(
                column_family = name,
                "dropping a column family this build no longer uses"
            );
            store.db.drop_cf(name)?;
        }
        store.meta = store.load_meta()?;
        Ok(store)
    }

    /// Refuses a database of a format this build does not read; stamps a new one, or one
    /// of an older format it reads, with its own.
    fn check_format(&self) -> SmResult<()> {
        match self.get(CF_META, keys::META_FORMAT)? {
            Some(v) => {
                let version: u32 = records::from_postcard("format version", &v)?;
                if version == FORMAT_VERSION {
                    return Ok(());
                }
                if !READS_FORMATS.contains(&version) {
                    let detail =
                        format!("version {version}, this build reads {READS_FORMATS:?} and {FORMAT_VERSION}");
                    return Err(SmError::corrupt("state machine format", detail));
                }
                // From here on rows of this format may be written: a build that reads
                // only the old one must refuse the database.
                self.stamp_format()
            }
            None => self.stamp_format(),
        }
    }

    fn stamp_format(&self) -> SmResult<()> {
        let v = records::to_postcard("format version", &FORMAT_VERSION)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_META)?, keys::META_FORMAT, v);
        self.write_batch(batch, Stall::Wait)?;
        self.flush()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn db(&self) -> &DB {
        &self.db
    }

    pub(super) fn cf(&self, name: &'static str) -> SmResult<&ColumnFamily> {
        self.db.cf_handle(name).ok_or(SmError::MissingColumnFamily(name))
    }

    pub(super) fn get(&self, cf: &'static str, key: &[u8]) -> SmResult<Option<Vec<u8>>> {
        Ok(self.db.get_pinned_cf(self.cf(cf)?, key)?.map(|v| v.to_vec()))
    }

    /// The last applied log id and membership (both empty for a new database).
    pub fn applied_state(&self) -> SmResult<(Option<LogId>, StoredMembership)> {
        let applied = match self.get(CF_META, keys::META_APPLIED)? {
            Some(v) => records::from_postcard("applied log id", &v)?,
            None => None,
        };
        let membership = match self.get(CF_META, keys::META_MEMBERSHIP)? {
            Some(v) => records::from_postcard("membership", &v)?,
            None => StoredMembership::default(),
        };
        Ok((applied, membership))
    }

    /// Writes the changes of applied entries together with the applied state, atomically.
    pub fn write(
        &self,
        ops: &[Op],
        applied: Option<&LogId>,
        membership: Option<&StoredMembership>,
    ) -> SmResult<()> {
        self.write_with(ops, applied, membership, Stall::Wait)
    }

    /// [`Store::write`], with `stall` saying whether it may wait out a write stall.
    pub fn write_with(
        &self,
        ops: &[Op],
        applied: Option<&LogId>,
        membership: Option<&StoredMembership>,
        stall: Stall,
    ) -> SmResult<()> {
        let mut batch = WriteBatch::default();
        let mut runs = Runs::default();
        for op in ops {
            self.add_op(&mut batch, &mut runs, op)?;
        }
        self.put_runs(&mut batch, runs.take())?;
        if let Some(applied) = applied {
            let v = records::to_postcard("applied log id", &Some(applied))?;
            batch.put_cf(self.cf(CF_META)?, keys::META_APPLIED, v);
        }
        if let Some(m) = membership {
            batch.put_cf(
                self.cf(CF_META)?,
                keys::META_MEMBERSHIP,
                records::to_postcard("membership", m)?,
            );
        }
        self.write_batch(batch, stall)?;
        self.meta.apply(ops);
        Ok(())
    }

    fn write_batch(&self, batch: WriteBatch, stall: Stall) -> SmResult<()> {
        let mut opts = WriteOptions::default();
        opts.disable_wal(true);
        opts.set_no_slowdown(stall == Stall::Refuse);
        match self.db.write_opt(batch, &opts) {
            Ok(()) => Ok(()),
            Err(e) if stall == Stall::Refuse && e.kind() == rocksdb::ErrorKind::Incomplete => {
                Err(SmError::WouldStall)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Writes consume-queue runs, a row each ([`super::cq_runs`]).
    fn put_runs(&self, batch: &mut WriteBatch, runs: Vec<Run>) -> SmResult<()> {
        for r in runs {
            let key = keys::cq_key(topic(&r.topic)?, r.queue_id, r.first);
            batch.put_cf(self.cf(CF_CQ)?, key, r.value);
        }
        Ok(())
    }

    /// Adds `op` to `batch`; consume-queue entries gather in `runs`, written as rows by
    /// the caller at the end, or here before a topic's deletion.
    fn add_op(&self, batch: &mut WriteBatch, runs: &mut Runs, op: &Op) -> SmResult<()> {
        match op {
            Op::PutTopic(r) => {
                let key = keys::topic_key(topic(&r.config.name)?);
                batch.put_cf(self.cf(CF_TOPICS)?, key, records::to_postcard("topic", r)?);
            }
            Op::DeleteTopic(name) => {
                self.put_runs(batch, runs.take())?;
                let t = topic(name)?;
                batch.delete_cf(self.cf(CF_TOPICS)?, keys::topic_key(t));
                let (start, end) = keys::topic_range(t);
                batch.delete_range_cf(self.cf(CF_QUEUES)?, &start, &end);
                batch.delete_range_cf(self.cf(CF_CQ)?, &start, &end);
            }
            Op::SetNextOffset {
                topic: name,
                queue_id,
                next,
            } => {
                let key = keys::queue_key(topic(name)?, *queue_id);
                batch.put_cf(self.cf(CF_QUEUES)?, key, records::encode_counter(*next));
            }
            Op::PutCq {
                topic,
                queue_id,
                first,
                entries,
            } => runs.push(topic, *queue_id, *first, entries),
            Op::PutOffset {
                group,
                topic: name,
                queue_id,
                record,
            } => {
                let g = GroupName::new(group).map_err(|e| SmError::corrupt("group name in change", e))?;
                let key = keys::offset_key(g, topic(name)?, *queue_id);
                batch.put_cf(self.cf(CF_OFFSETS)?, key, record.encode());
            }
            Op::PutPop {
                group,
                topic: name,
                queue_id,
                state,
            } => {
                let g = GroupName::new(group).map_err(|e| SmError::corrupt("group name in change", e))?;
                let key = keys::pop_key(g, topic(name)?, *queue_id);
                batch.put_cf(self.cf(CF_POP)?, key, records::to_postcard("pop state", state)?);
            }
        }
        Ok(())
    }

    /// Flushes every column family's memtable to SST files (atomically, see the module docs).
    pub fn flush(&self) -> SmResult<()> {
        let mut cfs = Vec::with_capacity(COLUMN_FAMILIES.len() + 1);
        for name in COLUMN_FAMILIES {
            cfs.push(self.cf(name)?);
        }
        let default = self.db.cf_handle(rocksdb::DEFAULT_COLUMN_FAMILY_NAME);
        cfs.extend(default);
        let mut opts = FlushOptions::default();
        opts.set_wait(true);
        Ok(self.db.flush_cfs_opt(&cfs, &opts)?)
    }

    /// Writes a checkpoint (hard links and copies of a flushed state) into `dir`, which must
    /// not exist yet and must be on the same file system.
    pub fn checkpoint(&self, dir: &Path) -> SmResult<()> {
        let cp = rocksdb::checkpoint::Checkpoint::new(&self.db)?;
        cp.create_checkpoint(dir)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::FORMAT_VERSION;
    use super::SmConfig;
    use super::Store;
    use crate::sm::keys;
    use crate::sm::records;
    use crate::sm::store::CF_META;

    fn stamp(dir: &std::path::Path, version: u32) {
        let store = Store::open(dir, &SmConfig::default()).expect("open");
        let v = records::to_postcard("format version", &version).expect("encode");
        let cf = store.cf(CF_META).expect("cf");
        store.db().put_cf(cf, keys::META_FORMAT, v).expect("put");
    }

    fn stamped(store: &Store) -> u32 {
        let v = store
            .get(CF_META, keys::META_FORMAT)
            .expect("get")
            .expect("stamped");
        records::from_postcard("format version", &v).expect("decode")
    }

    #[test]
    fn an_older_format_it_reads_is_restamped_and_a_newer_one_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        stamp(dir.path(), 1);
        let store = Store::open(dir.path(), &SmConfig::default()).expect("format 1 opens");
        assert_eq!(stamped(&store), FORMAT_VERSION);
        drop(store);
        stamp(dir.path(), FORMAT_VERSION + 1);
        let err = Store::open(dir.path(), &SmConfig::default()).expect_err("a newer format");
        assert!(err.to_string().contains("format"), "{err}");
    }

    /// A database with the retired column families too, as an older build left it.
    fn with_retired(dir: &std::path::Path) -> rocksdb::DB {
        let names = super::COLUMN_FAMILIES
            .iter()
            .chain(&super::RETIRED_COLUMN_FAMILIES);
        rocksdb::DB::open_cf(&raw_options(), dir, names).expect("open with every column family")
    }

    fn raw_options() -> rocksdb::Options {
        let mut o = rocksdb::Options::default();
        o.create_if_missing(true);
        o.create_missing_column_families(true);
        o
    }

    #[test]
    fn a_retired_column_family_is_dropped_and_the_rest_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = with_retired(dir.path());
            let msgid = db.cf_handle("msgid").expect("msgid");
            db.put_cf(msgid, b"01ABC", b"location").expect("put");
            let offsets = db.cf_handle(super::CF_OFFSETS).expect("offsets");
            db.put_cf(offsets, b"kept", b"row").expect("put");
        }
        let store = Store::open(dir.path(), &SmConfig::default()).expect("opens");
        assert_eq!(
            store.get(super::CF_OFFSETS, b"kept").expect("get"),
            Some(b"row".to_vec())
        );
        drop(store);
        let left = rocksdb::DB::list_cf(&raw_options(), dir.path()).expect("list");
        assert!(!left.iter().any(|n| n == "msgid"), "{left:?}");
        Store::open(dir.path(), &SmConfig::default()).expect("reopens without it");
    }

    #[test]
    fn a_database_of_a_newer_format_keeps_every_column_family() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = with_retired(dir.path());
            let meta = db.cf_handle(CF_META).expect("meta");
            let v = records::to_postcard("format version", &(FORMAT_VERSION + 1)).expect("encode");
            db.put_cf(meta, keys::META_FORMAT, v).expect("put");
        }
        Store::open(dir.path(), &SmConfig::default()).expect_err("a newer format");
        let left = rocksdb::DB::list_cf(&raw_options(), dir.path()).expect("list");
        assert!(left.iter().any(|n| n == "msgid"), "{left:?}");
    }
}
