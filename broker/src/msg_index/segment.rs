//! One file of the message index: entries appended in log order, chained per hash slot.
//!
//! - `NNNNNNNNNN-S.idx` (sequence number, slot count): the entries ([`IndexEntry`], 40 bytes each), appended with plain
//!   writes and never fsynced while the segment is active: the index is derived from the
//!   commit log, so what a crash loses is indexed again from the log.
//! - The hash-slot table (slot → newest entry of that slot) lives in memory while the
//!   segment is active and is rebuilt by scanning the entries when it is reopened; a
//!   scan stops at the first entry whose checksum fails (a torn tail) and cuts it off.
//! - `NNNNNNNNNN-S.slots`, written when the segment is full ("sealed"): the slot table and
//!   a trailer (counts, log and time range, CRC32C), after the entries are fsynced, into
//!   a temporary file that is fsynced and renamed (`sm::fsutil::write_atomic`). A
//!   sealed segment is read with `pread` only; nothing of it stays in memory but its
//!   trailer.

use std::fs::File;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::path::PathBuf;

use super::entry::IndexEntry;
use super::io_error;
use crate::error::BrokerResult;

const SLOTS_MAGIC: u64 = 0x5241_4654_4d51_5331; // "RAFTMQS1"
const TRAILER_LEN: usize = 8 + 4 + 4 + 8 + 8 + 8 + 8 + 4;

/// One message's key, ready to be indexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexItem {
    pub hash: u64,
    pub log_index: u64,
    pub store_time_ms: u64,
    pub slot: u32,
    pub queue_id: u32,
}

/// What a segment holds, in log indexes and store times (both inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub entries: u32,
    pub first_log_index: u64,
    pub last_log_index: u64,
    pub min_time_ms: u64,
    pub max_time_ms: u64,
}

impl Span {
    fn add(&mut self, item: &IndexItem) {
        if self.entries == 0 {
            self.first_log_index = item.log_index;
            self.min_time_ms = item.store_time_ms;
            self.max_time_ms = item.store_time_ms;
        }
        self.entries += 1;
        self.last_log_index = item.log_index;
        self.min_time_ms = self.min_time_ms.min(item.store_time_ms);
        self.max_time_ms = self.max_time_ms.max(item.store_time_ms);
    }
}

#[derive(Debug)]
pub struct Segment {
    path: PathBuf,
    file: File,
    slot_count: u32,
    span: Span,
    /// The slot table while active; `None` once sealed (read from the `.slots` file).
    slots: Option<Vec<u32>>,
    slots_file: Option<File>,
}

impl Segment {
    /// The entries file of segment `seq` in `dir`, whose slot table has `slot_count`
    /// slots (in the name, so that a reopened active segment rebuilds the table its
    /// chains were made with, whatever the configuration says now).
    pub fn path(dir: &Path, seq: u64, slot_count: u32) -> PathBuf {
        dir.join(format!("{seq:010}-{slot_count}.idx"))
    }

    /// The sequence number and slot count in an entries file's name.
    pub fn parse_name(name: &str) -> Option<(u64, u32)> {
        let (seq, slots) = name.strip_suffix(".idx")?.split_once('-')?;
        let slots: u32 = slots.parse().ok()?;
        Some((seq.parse().ok()?, slots)).filter(|_| slots > 0)
    }

    /// Creates an empty active segment (the caller fsyncs the directory).
    pub fn create(path: PathBuf, slot_count: u32) -> BrokerResult<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_error("create index segment", &path))?;
        Ok(Self::empty_active(path, file, slot_count))
    }

    /// An active segment with no entries linked yet.
    fn empty_active(path: PathBuf, file: File, slot_count: u32) -> Self {
        Self {
            path,
            file,
            slot_count,
            span: Span::default(),
            slots: Some(vec![0; slot_count as usize]),
            slots_file: None,
        }
    }

    /// Opens a segment: sealed if its `.slots` file is whole, else active, with the
    /// entries scanned, a torn tail cut off and the slot table rebuilt (`slot_count`,
    /// from the file's name).
    pub fn open(path: PathBuf, slot_count: u32) -> BrokerResult<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_error("open index segment", &path))?;
        let slots_path = path.with_extension("slots");
        if let Some((slots_file, slot_count, span)) = read_sealed(&slots_path)? {
            return Ok(Self {
                path,
                file,
                slot_count,
                span,
                slots: None,
                slots_file: Some(slots_file),
            });
        }
        let mut seg = Self::empty_active(path, file, slot_count);
        seg.rebuild()?;
        Ok(seg)
    }

    /// Scans the entries file, keeping the longest prefix of whole entries in log order.
    fn rebuild(&mut self) -> BrokerResult<()> {
        const CHUNK: usize = IndexEntry::LEN * 16 * 1024;
        let len = self.file.metadata().map_err(io_error("stat", &self.path))?.len();
        let mut buf = vec![0u8; CHUNK];
        let mut at = 0u64;
        'scan: while at < len {
            let n = ((len - at) as usize).min(CHUNK) / IndexEntry::LEN * IndexEntry::LEN;
            if n == 0 {
                break;
            }
            self.file
                .read_exact_at(&mut buf[..n], at)
                .map_err(io_error("read index segment", &self.path))?;
            for raw in buf[..n].chunks_exact(IndexEntry::LEN) {
                let Some(e) = IndexEntry::decode(raw) else {
                    break 'scan;
                };
                let number = self.span.entries;
                if e.log_index < self.span.last_log_index || self.head(e.hash) != e.prev {
                    break 'scan;
                }
                self.remember(self.slot_of(e.hash), number, &item_of(&e))?;
                at += IndexEntry::LEN as u64;
            }
        }
        if at < len {
            tracing::warn!(path = %self.path.display(), kept = at, len, "cutting the index segment's torn tail");
            self.file
                .set_len(at)
                .map_err(io_error("truncate index segment", &self.path))?;
        }
        Ok(())
    }

    pub fn span(&self) -> Span {
        self.span
    }

    pub fn is_sealed(&self) -> bool {
        self.slots.is_none()
    }

    /// Appends as many of `items` as fit below `capacity` entries; returns how many.
    pub fn append(&mut self, items: &[IndexItem], capacity: u32) -> BrokerResult<usize> {
        let room = capacity.saturating_sub(self.span.entries) as usize;
        let take = items.len().min(room);
        if take == 0 || self.is_sealed() {
            return Ok(0);
        }
        let start = u64::from(self.span.entries) * IndexEntry::LEN as u64;
        let items = &items[..take];
        let slot_ix: Vec<usize> = items.iter().map(|i| self.slot_of(i.hash)).collect();
        if let Some(slots) = &self.slots {
            // Touch every slot the batch updates first: these loads do not depend on each
            // other and their cache misses overlap, where the linking loop below would
            // wait for each in turn (a miss per message was most of the index's cost).
            let touched = slot_ix.iter().fold(0u32, |acc, &s| acc ^ slots[s]);
            std::hint::black_box(touched);
        }
        let mut buf = Vec::with_capacity(take * IndexEntry::LEN);
        for (item, &slot) in items.iter().zip(&slot_ix) {
            let prev = self.remember(slot, self.span.entries, item)?;
            buf.extend_from_slice(&entry_of(item, prev).encode());
        }
        self.file
            .write_all_at(&buf, start)
            .map_err(io_error("write index segment", &self.path))?;
        Ok(take)
    }

    fn slot_of(&self, hash: u64) -> usize {
        (hash % u64::from(self.slot_count)) as usize
    }

    /// The newest entry (number + 1) of `hash`'s slot in the in-memory table.
    fn head(&self, hash: u64) -> u32 {
        self.slots.as_ref().map_or(0, |s| s[self.slot_of(hash)])
    }

    /// Links entry `number` into `slot` and the span; returns its `prev`.
    fn remember(&mut self, slot: usize, number: u32, item: &IndexItem) -> BrokerResult<u32> {
        let slots = self
            .slots
            .as_mut()
            .ok_or_else(|| crate::error::BrokerError::Internal("append to a sealed index segment".into()))?;
        let prev = slots[slot];
        slots[slot] = number + 1;
        self.span.add(item);
        Ok(prev)
    }

    /// Makes the segment read-only: entries fsynced, then the slot table written beside
    /// them durably. The caller fsyncs the directory.
    pub fn seal(&mut self) -> BrokerResult<()> {
        let Some(slots) = self.slots.take() else {
            return Ok(());
        };
        self.file
            .sync_data()
            .map_err(io_error("fsync index segment", &self.path))?;
        let mut out = Vec::with_capacity(slots.len() * 4 + TRAILER_LEN);
        for s in &slots {
            out.extend_from_slice(&s.to_le_bytes());
        }
        let sp = self.span;
        out.extend_from_slice(&SLOTS_MAGIC.to_le_bytes());
        out.extend_from_slice(&self.slot_count.to_le_bytes());
        out.extend_from_slice(&sp.entries.to_le_bytes());
        for v in [
            sp.first_log_index,
            sp.last_log_index,
            sp.min_time_ms,
            sp.max_time_ms,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        let slots_path = self.path.with_extension("slots");
        crate::sm::fsutil::write_atomic(&slots_path, &out)?;
        let f = File::open(&slots_path).map_err(io_error("open index slots", &slots_path))?;
        self.slots_file = Some(f);
        Ok(())
    }

    /// Calls `visit` on the entries of `hash`'s slot whose hash is `hash`, newest first,
    /// until it returns false; walks at most `max_steps` entries of the chain.
    pub fn walk(
        &self,
        hash: u64,
        max_steps: usize,
        mut visit: impl FnMut(&IndexEntry) -> bool,
    ) -> BrokerResult<()> {
        let slot = hash % u64::from(self.slot_count);
        let mut next = match (&self.slots, &self.slots_file) {
            (Some(slots), _) => slots[slot as usize],
            (None, Some(f)) => {
                let mut b = [0u8; 4];
                f.read_exact_at(&mut b, slot * 4)
                    .map_err(io_error("read index slots", &self.path))?;
                u32::from_le_bytes(b)
            }
            (None, None) => 0,
        };
        let mut steps = 0;
        let mut raw = [0u8; IndexEntry::LEN];
        while next != 0 && next <= self.span.entries && steps < max_steps {
            steps += 1;
            let at = u64::from(next - 1) * IndexEntry::LEN as u64;
            self.file
                .read_exact_at(&mut raw, at)
                .map_err(io_error("read index segment", &self.path))?;
            // A damaged entry or a link that does not go back ends the chain.
            let Some(e) = IndexEntry::decode(&raw).filter(|e| e.prev < next) else {
                break;
            };
            if e.hash == hash && !visit(&e) {
                break;
            }
            next = e.prev;
        }
        Ok(())
    }

    /// Deletes the segment's files.
    pub fn remove(self) -> BrokerResult<()> {
        let slots = self.path.with_extension("slots");
        drop(self.file);
        drop(self.slots_file);
        for p in [&self.path, &slots] {
            match std::fs::remove_file(p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io_error("remove index segment", p)(e));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn entry_of(item: &IndexItem, prev: u32) -> IndexEntry {
    IndexEntry {
        hash: item.hash,
        log_index: item.log_index,
        store_time_ms: item.store_time_ms,
        slot: item.slot,
        queue_id: item.queue_id,
        prev,
    }
}

fn item_of(e: &IndexEntry) -> IndexItem {
    IndexItem {
        hash: e.hash,
        log_index: e.log_index,
        store_time_ms: e.store_time_ms,
        slot: e.slot,
        queue_id: e.queue_id,
    }
}

/// The `.slots` file at `path` if it is whole: the file, its slot count and the span.
fn read_sealed(path: &Path) -> BrokerResult<Option<(File, u32, Span)>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("open index slots", path)(e)),
    };
    let len = file.metadata().map_err(io_error("stat", path))?.len();
    if len < TRAILER_LEN as u64 {
        return Ok(None);
    }
    let bytes = std::fs::read(path).map_err(io_error("read index slots", path))?;
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().unwrap_or_default()) {
        tracing::warn!(path = %path.display(), "ignoring a damaged index slot table; the segment is rescanned");
        return Ok(None);
    }
    let t = &body[body.len() - (TRAILER_LEN - 4)..];
    let u64_at = |i: usize| u64::from_le_bytes(t[i..i + 8].try_into().unwrap_or_default());
    let u32_at = |i: usize| u32::from_le_bytes(t[i..i + 4].try_into().unwrap_or_default());
    let slot_count = u32_at(8);
    if u64_at(0) != SLOTS_MAGIC || slot_count == 0 || body.len() != slot_count as usize * 4 + TRAILER_LEN - 4
    {
        return Ok(None);
    }
    let span = Span {
        entries: u32_at(12),
        first_log_index: u64_at(16),
        last_log_index: u64_at(24),
        min_time_ms: u64_at(32),
        max_time_ms: u64_at(40),
    };
    Ok(Some((file, slot_count, span)))
}
