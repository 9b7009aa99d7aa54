//! Small metadata files updated in place with two checksummed slots.
//!
//! A write goes to the older slot, so a torn write never destroys the newest complete
//! copy: open picks the valid slot with the highest sequence number. One `fdatasync`
//! makes a write durable; no rename or directory sync is needed after creation.

use std::fs::File;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::path::PathBuf;

use crate::error::LogError;
use crate::error::Result;
use crate::fsutil;

const SLOT_LEN: usize = 4096;
const SLOT_HEADER: usize = 20;
const MAGIC: [u8; 4] = *b"RMQM";

/// Largest payload one slot can hold.
pub(crate) const MAX_META_LEN: usize = SLOT_LEN - SLOT_HEADER;

#[derive(Debug)]
pub(crate) struct MetaFile {
    path: PathBuf,
    file: File,
    seq: u64,
    durable: bool,
}

impl MetaFile {
    /// Opens or creates `path`; returns the file and its newest valid payload.
    /// `durable` files are fdatasync'ed on every write.
    pub fn open(path: &Path, durable: bool) -> Result<(Self, Option<Vec<u8>>)> {
        let io = |op, e| LogError::io(op, path, e);
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| io("open meta file", e))?;
        if !existed {
            file.set_len(2 * SLOT_LEN as u64)
                .map_err(|e| io("size meta file", e))?;
            file.sync_all().map_err(|e| io("fsync meta file", e))?;
            if let Some(dir) = path.parent() {
                fsutil::sync_dir(dir).map_err(|e| io("fsync directory", e))?;
            }
        }
        let mut best: Option<(u64, Vec<u8>)> = None;
        for slot in 0..2 {
            let mut buf = vec![0u8; SLOT_LEN];
            if file.read_exact_at(&mut buf, (slot * SLOT_LEN) as u64).is_err() {
                continue;
            }
            if let Some((seq, data)) = decode_slot(&buf)
                && best.as_ref().is_none_or(|(s, _)| seq > *s)
            {
                best = Some((seq, data));
            }
        }
        let seq = best.as_ref().map_or(0, |(s, _)| *s);
        let meta = Self {
            path: path.to_path_buf(),
            file,
            seq,
            durable,
        };
        Ok((meta, best.map(|(_, d)| d)))
    }

    /// Replaces the payload; durable before return for durable files.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        if data.len() > MAX_META_LEN {
            return Err(LogError::TooLarge {
                size: data.len(),
                limit: MAX_META_LEN,
            });
        }
        let seq = self.seq + 1;
        let mut buf = vec![0u8; SLOT_LEN];
        buf[0..4].copy_from_slice(&MAGIC);
        buf[4..12].copy_from_slice(&seq.to_le_bytes());
        buf[12..16].copy_from_slice(&(data.len() as u32).to_le_bytes());
        buf[SLOT_HEADER..SLOT_HEADER + data.len()].copy_from_slice(data);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&buf[0..16]), data);
        buf[16..20].copy_from_slice(&crc.to_le_bytes());
        let offset = (seq % 2) * SLOT_LEN as u64;
        self.file
            .write_all_at(&buf, offset)
            .map_err(|e| LogError::io("write meta", &self.path, e))?;
        if self.durable {
            self.file
                .sync_data()
                .map_err(|e| LogError::io("fsync meta", &self.path, e))?;
        }
        self.seq = seq;
        Ok(())
    }
}

fn decode_slot(buf: &[u8]) -> Option<(u64, Vec<u8>)> {
    if buf[0..4] != MAGIC {
        return None;
    }
    let seq = u64::from_le_bytes(buf[4..12].try_into().ok()?);
    let len = u32::from_le_bytes(buf[12..16].try_into().ok()?) as usize;
    if len > MAX_META_LEN {
        return None;
    }
    let crc = u32::from_le_bytes(buf[16..20].try_into().ok()?);
    let data = &buf[SLOT_HEADER..SLOT_HEADER + len];
    (crc32c::crc32c_append(crc32c::crc32c(&buf[0..16]), data) == crc).then(|| (seq, data.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_valid_slot_wins_and_a_torn_slot_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("meta");
        {
            let (mut m, first) = MetaFile::open(&path, true).expect("open");
            assert_eq!(first, None);
            m.write(b"one").expect("write");
            m.write(b"two").expect("write");
        }
        let (_, data) = MetaFile::open(&path, true).expect("reopen");
        assert_eq!(data.as_deref(), Some(&b"two"[..]));
        // Tear the newest slot (seq 2 lives in slot 0): the previous value survives.
        let f = OpenOptions::new().write(true).open(&path).expect("open raw");
        f.write_all_at(b"garbage", 20).expect("tear");
        let (mut m, data) = MetaFile::open(&path, true).expect("reopen");
        assert_eq!(data.as_deref(), Some(&b"one"[..]));
        m.write(b"three").expect("write after tear");
        let (_, data) = MetaFile::open(&path, true).expect("reopen");
        assert_eq!(data.as_deref(), Some(&b"three"[..]));
    }
}
