//! One segment file: a header followed by records, named after its first log index.

use std::fs::File;
use std::fs::OpenOptions;
use std::io::BufReader;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::Corruption;
use crate::error::LogError;
use crate::error::Result;
use crate::fsutil;
use crate::record;
use crate::record::HEADER_LEN;
use crate::record::HeaderError;
use crate::record::RecordMeta;

/// Bytes before the first record: magic, version, base index, checksum.
pub(crate) const SEGMENT_HEADER_LEN: u64 = 64;
const SEGMENT_MAGIC: [u8; 4] = *b"RMQS";
const SEGMENT_VERSION: u32 = 1;
const SUFFIX: &str = ".seg";

/// File name of the segment whose first entry has index `base`.
pub(crate) fn file_name(base: u64) -> String {
    format!("{base:020}{SUFFIX}")
}

/// Parses a segment file name back into its base index.
pub(crate) fn parse_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(SUFFIX)?;
    if stem.len() != 20 {
        return None;
    }
    stem.parse().ok()
}

fn encode_header(base: u64) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[0..4].copy_from_slice(&SEGMENT_MAGIC);
    h[4..8].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    h[8..16].copy_from_slice(&base.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..60]);
    h[60..64].copy_from_slice(&crc.to_le_bytes());
    h
}

fn check_header(h: &[u8], base: u64) -> bool {
    encode_header(base)[..] == h[..]
}

/// The in-memory index of one segment: where each record starts.
#[derive(Debug)]
pub(crate) struct Segment {
    pub base: u64,
    pub path: PathBuf,
    pub file: Arc<File>,
    /// `offsets[i]` is the file offset of the record with index `base + i`.
    pub offsets: Vec<u32>,
    /// End of the last record (where the next one goes).
    pub end: u64,
    /// Term and leader of the last record, if any.
    pub last: Option<(u64, u64)>,
}

impl Segment {
    /// Creates, reserves and fsyncs a new empty segment. The caller fsyncs the directory.
    pub fn create(dir: &Path, base: u64, size: u64, preallocate: bool) -> Result<Self> {
        let path = dir.join(file_name(base));
        let io = |op, e| LogError::io(op, &path, e);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| io("create segment", e))?;
        if preallocate {
            fsutil::preallocate(&file, size).map_err(|e| io("preallocate segment", e))?;
        }
        fsutil::advise_random(&file, true);
        file.write_all_at(&encode_header(base), 0)
            .map_err(|e| io("write segment header", e))?;
        file.sync_all().map_err(|e| io("fsync new segment", e))?;
        Ok(Self {
            base,
            path,
            file: Arc::new(file),
            offsets: Vec::new(),
            end: SEGMENT_HEADER_LEN,
            last: None,
        })
    }

    /// Index of the next record this segment would hold.
    pub fn next_index(&self) -> u64 {
        self.base + self.offsets.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Byte range `[start, end)` of the records `from..=to` (all inside this segment).
    pub fn byte_range(&self, from: u64, to: u64) -> (u64, u64) {
        let start = u64::from(self.offsets[(from - self.base) as usize]);
        let end = match self.offsets.get((to + 1 - self.base) as usize) {
            Some(&o) => u64::from(o),
            None => self.end,
        };
        (start, end)
    }

    /// Records that `len` bytes holding `count` records were written at `self.end`.
    pub fn push_records(&mut self, record_lens: &[u32], last: (u64, u64)) {
        let mut at = self.end;
        for &len in record_lens {
            self.offsets.push(at as u32);
            at += u64::from(len);
        }
        self.end = at;
        if !record_lens.is_empty() {
            self.last = Some(last);
        }
    }

    /// Reads the identity of the stored record `index` (header only, no payload check).
    pub fn read_meta(&self, index: u64) -> Result<RecordMeta> {
        let off = u64::from(self.offsets[(index - self.base) as usize]);
        let mut h = [0u8; HEADER_LEN];
        self.file
            .read_exact_at(&mut h, off)
            .map_err(|e| LogError::io("read segment", &self.path, e))?;
        let corrupt = |what| LogError::Corrupt {
            index,
            path: self.path.clone(),
            what,
        };
        match record::decode_header(&h, u32::MAX) {
            Ok(h) => Ok(h.meta),
            Err(HeaderError::Corrupt(c)) => Err(corrupt(c)),
            Err(HeaderError::Zeroed) => Err(corrupt(Corruption::BadMagic)),
        }
    }

    /// Forgets records from `index` on (in memory only).
    pub fn forget_from(&mut self, index: u64) {
        let keep = (index - self.base) as usize;
        if keep < self.offsets.len() {
            self.end = u64::from(self.offsets[keep]);
            self.offsets.truncate(keep);
        }
    }
}

/// Where a scan of a segment stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScanEnd {
    /// Zeroes or end of file: the data simply ends here. `at_eof` when the last record
    /// ends exactly at the end of the file (no zeroes follow), which in a preallocated
    /// segment, or one followed by more segments, means the file was cut short.
    Clean { at_eof: bool },
    /// Something that is not a valid continuation of the log starts at `offset`.
    Damaged { offset: u64, what: Corruption },
}

/// What the log looked like just before the segment being scanned.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScanContext {
    pub prev_term: u64,
    pub prev_epoch: u64,
}

/// Result of scanning one segment file.
#[derive(Debug)]
pub(crate) struct Scanned {
    pub segment: Segment,
    pub end: ScanEnd,
    pub last_epoch: u64,
}

/// Opens an existing segment and rebuilds its index, verifying every record.
pub(crate) fn open_and_scan(path: &Path, base: u64, cx: ScanContext) -> Result<Scanned> {
    let io = |op, e| LogError::io(op, path, e);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| io("open segment", e))?;
    let file_len = file.metadata().map_err(|e| io("stat segment", e))?.len();
    let mut segment = Segment {
        base,
        path: path.to_path_buf(),
        file: Arc::new(file),
        offsets: Vec::new(),
        end: SEGMENT_HEADER_LEN,
        last: None,
    };
    let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
    let header_ok = segment.file.read_exact_at(&mut header, 0).is_ok() && check_header(&header, base);
    if !header_ok {
        let end = ScanEnd::Damaged {
            offset: 0,
            what: Corruption::BadMagic,
        };
        return Ok(Scanned {
            segment,
            end,
            last_epoch: cx.prev_epoch,
        });
    }
    let file = segment.file.clone();
    let mut reader = BufReader::with_capacity(1 << 20, file.as_ref());
    std::io::copy(&mut (&mut reader).take(SEGMENT_HEADER_LEN), &mut std::io::sink())
        .map_err(|e| io("read segment", e))?;
    let mut scan = Scan {
        cx,
        epoch: cx.prev_epoch,
        buf: Vec::new(),
    };
    let end = loop {
        if segment.end + HEADER_LEN as u64 > file_len {
            break tail_end(&segment, file_len)?;
        }
        // A length field may not point past the end of the file.
        let room = file_len - segment.end - HEADER_LEN as u64;
        match scan.next(
            &mut reader,
            segment.next_index(),
            room.min(u64::from(u32::MAX)) as u32,
        ) {
            Ok((meta, len)) => {
                segment.push_records(&[len], (meta.term, meta.leader));
                scan.cx.prev_term = meta.term;
            }
            Err(None) => break ScanEnd::Clean { at_eof: false },
            Err(Some(what)) => {
                break ScanEnd::Damaged {
                    offset: segment.end,
                    what,
                };
            }
        }
    };
    Ok(Scanned {
        segment,
        end,
        last_epoch: scan.epoch,
    })
}

/// How a segment ends when less than a record header is left: exactly at the end of the
/// file, in zeroes (unwritten preallocated space), or in a partial header (torn or cut).
fn tail_end(segment: &Segment, file_len: u64) -> Result<ScanEnd> {
    let at = segment.end;
    if at >= file_len {
        return Ok(ScanEnd::Clean { at_eof: true });
    }
    let mut rest = vec![0u8; (file_len - at) as usize];
    segment
        .file
        .read_exact_at(&mut rest, at)
        .map_err(|e| LogError::io("read segment", &segment.path, e))?;
    if rest.iter().all(|&b| b == 0) {
        return Ok(ScanEnd::Clean { at_eof: false });
    }
    Ok(ScanEnd::Damaged {
        offset: at,
        what: Corruption::Truncated,
    })
}

struct Scan {
    cx: ScanContext,
    epoch: u64,
    buf: Vec<u8>,
}

impl Scan {
    /// Reads and checks the next record. `Err(None)` is a clean end.
    fn next(
        &mut self,
        r: &mut impl Read,
        expected: u64,
        room: u32,
    ) -> Result<(RecordMeta, u32), Option<Corruption>> {
        self.buf.resize(HEADER_LEN, 0);
        r.read_exact(&mut self.buf).map_err(|_| None)?;
        let h = match record::decode_header(&self.buf, room) {
            Ok(h) => h,
            Err(HeaderError::Zeroed) => return Err(None),
            Err(HeaderError::Corrupt(c)) => return Err(Some(c)),
        };
        self.buf.resize(h.record_len(), 0);
        r.read_exact(&mut self.buf[HEADER_LEN..])
            .map_err(|_| Some(Corruption::Truncated))?;
        record::verify(&h, &self.buf)?;
        let m = h.meta;
        if m.index != expected {
            return Err(Some(Corruption::IndexGap {
                expected,
                found: m.index,
            }));
        }
        if m.term < self.cx.prev_term {
            return Err(Some(Corruption::TermDecrease {
                prev: self.cx.prev_term,
                found: m.term,
            }));
        }
        if h.epoch < self.epoch {
            return Err(Some(Corruption::StaleEpoch {
                prev: self.epoch,
                found: h.epoch,
            }));
        }
        self.epoch = h.epoch;
        Ok((m, h.record_len() as u32))
    }
}

/// Zeroes `[offset, offset + len)` (at least one record header) and makes that durable,
/// so a scan stops at `offset` and no stale record after it can be read again.
pub(crate) fn erase_at(file: &File, path: &Path, offset: u64, len: u64) -> Result<()> {
    fsutil::zero_range(file, offset, len.max(HEADER_LEN as u64))
        .map_err(|e| LogError::io("erase records", path, e))?;
    file.sync_data()
        .map_err(|e| LogError::io("fsync after erase", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_roundtrip_and_sort_by_index() {
        assert_eq!(parse_name(&file_name(42)), Some(42));
        assert!(file_name(9) < file_name(10));
        assert_eq!(parse_name("00000000000000000042.tmp"), None);
        assert_eq!(parse_name("42.seg"), None);
    }

    #[test]
    fn header_is_bound_to_its_base() {
        let h = encode_header(7);
        assert!(check_header(&h, 7));
        assert!(!check_header(&h, 8));
    }
}
