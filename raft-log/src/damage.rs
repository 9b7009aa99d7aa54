//! Damage tools for chaos tests: flip bits in, or truncate, a segment file of a log that no
//! process has open (a minority node that is down), as a failing disk or an operator's
//! mistake would. The choice of record is deterministic in a seed and returned, so a test
//! can check that [`crate::CommitLog::open`] reports exactly that damage
//! ([`crate::RecoveryReport::damage`]), keeps exactly the entries before it, and that the
//! node then re-learns the rest from its peers.
//!
//! Only records after the purge point and before the last record are chosen, so some
//! retained entry is always lost and recovery always has a valid prefix to keep.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::path::PathBuf;

use crate::record;
use crate::record::HEADER_LEN;
use crate::recovery;
use crate::segment::SEGMENT_HEADER_LEN;

/// Where one record lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordLocation {
    pub path: PathBuf,
    pub index: u64,
    /// File offset of the record's header.
    pub offset: u64,
    /// Header plus payload, in bytes.
    pub len: u64,
}

/// What [`flip_bits`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitFlip {
    pub record: RecordLocation,
    /// File offset of the byte whose bits were flipped (inside `record`).
    pub byte_offset: u64,
    /// The bits flipped (never zero).
    pub mask: u8,
}

/// Where [`truncate_segment`] cuts the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TruncateAt {
    /// At the start of the chosen record.
    Boundary,
    /// Strictly inside the chosen record (possibly inside its header).
    MidRecord,
}

/// What [`truncate_segment`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    pub record: RecordLocation,
    pub old_len: u64,
    pub new_len: u64,
}

/// Flips 1 to 8 bits of one byte of a record chosen by `seed` (never the last record).
pub fn flip_bits(dir: &Path, seed: u64) -> io::Result<BitFlip> {
    let _lock = recovery::lock_dir(dir)?;
    let mut rng = SplitMix::new(seed);
    let record = choose(dir, &mut rng)?;
    let byte_offset = record.offset + rng.below(record.len);
    let mask = (rng.next_u64() as u8).max(1);
    let file = OpenOptions::new().read(true).write(true).open(&record.path)?;
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, byte_offset)?;
    file.write_all_at(&[b[0] ^ mask], byte_offset)?;
    file.sync_data()?;
    Ok(BitFlip {
        record,
        byte_offset,
        mask,
    })
}

/// Truncates the segment file holding a record chosen by `seed` (never the last record)
/// at that record's start or inside it. Recovery reports either as damage: a later segment
/// no longer continues the cut one, the last record is incomplete, or the segment is
/// shorter than preallocation makes it. Only a cut at a record boundary of the *last*
/// segment of a log that does not preallocate looks like a shorter log.
pub fn truncate_segment(dir: &Path, seed: u64, at: TruncateAt) -> io::Result<Truncation> {
    let _lock = recovery::lock_dir(dir)?;
    let mut rng = SplitMix::new(seed);
    let record = choose(dir, &mut rng)?;
    let new_len = match at {
        TruncateAt::Boundary => record.offset,
        TruncateAt::MidRecord => record.offset + 1 + rng.below(record.len - 1),
    };
    let file = OpenOptions::new().write(true).open(&record.path)?;
    let old_len = file.metadata()?.len();
    file.set_len(new_len)?;
    file.sync_all()?;
    Ok(Truncation {
        record,
        old_len,
        new_len,
    })
}

/// Every record of the log in `dir`, in index order, as far as the headers form an unbroken
/// chain (payload checksums are not verified).
pub fn records(dir: &Path) -> io::Result<Vec<RecordLocation>> {
    let mut out: Vec<RecordLocation> = Vec::new();
    for (base, path) in recovery::list_segments(dir)? {
        if out.last().is_some_and(|r| r.index + 1 != base) {
            break;
        }
        let complete = walk_segment(&path, base, &mut out)?;
        if !complete {
            break;
        }
    }
    Ok(out)
}

/// Appends the records of one segment; false if it ended in something other than zeroes
/// or the end of the file.
fn walk_segment(path: &Path, base: u64, out: &mut Vec<RecordLocation>) -> io::Result<bool> {
    let file = OpenOptions::new().read(true).open(path)?;
    let file_len = file.metadata()?.len();
    let (mut offset, mut index) = (SEGMENT_HEADER_LEN, base);
    let mut h = [0u8; HEADER_LEN];
    while offset + HEADER_LEN as u64 <= file_len {
        file.read_exact_at(&mut h, offset)?;
        let room = (file_len - offset - HEADER_LEN as u64).min(u64::from(u32::MAX)) as u32;
        let header = match record::decode_header(&h, room) {
            Ok(header) if header.meta.index == index => header,
            Err(record::HeaderError::Zeroed) => return Ok(true),
            _ => return Ok(false),
        };
        let len = header.record_len() as u64;
        out.push(RecordLocation {
            path: path.to_path_buf(),
            index,
            offset,
            len,
        });
        offset += len;
        index += 1;
    }
    Ok(true)
}

/// Picks a record after the purge point, not the last one.
fn choose(dir: &Path, rng: &mut SplitMix) -> io::Result<RecordLocation> {
    let purged = purge_point(dir)?;
    let mut all = records(dir)?;
    all.pop();
    all.retain(|r| purged.is_none_or(|p| r.index > p));
    if all.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{}: fewer than two retained records to choose from",
                dir.display()
            ),
        ));
    }
    let i = rng.below(all.len() as u64) as usize;
    Ok(all.swap_remove(i))
}

/// The last purged index recorded in `meta`, if any.
fn purge_point(dir: &Path) -> io::Result<Option<u64>> {
    let path = dir.join("meta");
    if !path.exists() {
        return Ok(None);
    }
    let (_, meta) = recovery::load_meta(dir)?;
    Ok(meta.purged.map(|p| p.index))
}

/// SplitMix64: a small, seedable, good-enough generator for choosing what to damage.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..n`; `n` must be positive.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let r = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
    }
}
