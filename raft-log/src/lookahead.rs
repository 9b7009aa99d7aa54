//! Telling a torn tail from lost durable entries after recovery found an invalid record.
//!
//! A torn tail is where writes that were never fsynced ended: nothing valid follows it, and
//! the node never acknowledged what it lost. A valid record after the damage is different:
//! appends are written and fsynced in log order, so the node had made the entries in
//! between durable, may have acknowledged them to a leader, and has now lost them. Such a
//! node must not help elect a leader until it holds them again (see the broker's vote
//! fence), or an entry committed with its acknowledgement could be lost.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::LogError;
use crate::error::Result;
use crate::record;
use crate::record::HEADER_LEN;

const MAGIC: &[u8; 4] = b"RMQR";
const CHUNK: usize = 1 << 20;

/// The index of a valid record (checksum verified, index at least `min_index`, payload
/// at most `max_payload` bytes) found anywhere in `file` at or after byte `from`,
/// searching byte by byte so that a damaged length field cannot hide what follows. Only
/// run on damage: it reads the rest of the file.
pub(crate) fn valid_record_after(
    file: &File,
    path: &Path,
    from: u64,
    min_index: u64,
    max_payload: u32,
) -> Result<Option<u64>> {
    let io = |e| LogError::io("read segment after damage", path, e);
    let len = file.metadata().map_err(io)?.len();
    let mut buf = vec![0u8; CHUNK + MAGIC.len() - 1];
    let mut at = from;
    while at < len {
        let n = ((len - at) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], at).map_err(io)?;
        for i in magic_positions(&buf[..n]) {
            if let Some(index) = record_at(file, at + i as u64, len, min_index, max_payload).map_err(io)? {
                return Ok(Some(index));
            }
        }
        // Overlap by three bytes so a magic split across two chunks is still seen.
        at += (n.saturating_sub(MAGIC.len() - 1)).max(1) as u64;
    }
    Ok(None)
}

fn magic_positions(b: &[u8]) -> impl Iterator<Item = usize> + '_ {
    b.windows(MAGIC.len())
        .enumerate()
        .filter(|(_, w)| *w == MAGIC)
        .map(|(i, _)| i)
}

/// The index of the record at `offset`, if one that verifies starts there.
fn record_at(
    file: &File,
    offset: u64,
    len: u64,
    min_index: u64,
    max_payload: u32,
) -> std::io::Result<Option<u64>> {
    let room = len.saturating_sub(offset + HEADER_LEN as u64);
    if offset + (HEADER_LEN as u64) > len {
        return Ok(None);
    }
    let mut header = [0u8; HEADER_LEN];
    file.read_exact_at(&mut header, offset)?;
    let limit = room.min(u64::from(max_payload)) as u32;
    let Ok(h) = record::decode_header(&header, limit) else {
        return Ok(None);
    };
    if h.meta.index < min_index {
        return Ok(None);
    }
    let mut rec = vec![0u8; h.record_len()];
    file.read_exact_at(&mut rec, offset)?;
    Ok(record::verify(&h, &rec).ok().map(|_| h.meta.index))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::record::EntryKind;
    use crate::record::RecordMeta;

    fn rec(index: u64, payload: &[u8]) -> Vec<u8> {
        let meta = RecordMeta {
            index,
            term: 1,
            leader: 1,
            kind: EntryKind::Normal,
        };
        let mut out = Vec::new();
        record::encode(&mut out, &meta, 1, payload);
        out
    }

    fn file_of(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(bytes).expect("write");
        f
    }

    #[test]
    fn a_valid_record_behind_garbage_is_found_even_across_chunks() {
        let mut bytes = vec![0u8; 100];
        bytes.extend(b"RMQR garbage that is no record");
        // Put the record so that its magic straddles the first chunk boundary.
        bytes.resize(CHUNK + MAGIC.len() - 3, 0xAB);
        bytes.extend(rec(42, b"payload"));
        bytes.extend(vec![0u8; 4096]);
        let f = file_of(&bytes);
        let found = valid_record_after(f.as_file(), f.path(), 0, 40, 1 << 20).expect("scan");
        assert_eq!(found, Some(42));
        assert_eq!(
            valid_record_after(f.as_file(), f.path(), 0, 43, 1 << 20).expect("scan"),
            None
        );
    }

    #[test]
    fn garbage_and_zeroes_hold_no_record() {
        let mut bytes = rec(7, b"x");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        bytes.extend(vec![0u8; 3 * CHUNK]);
        let f = file_of(&bytes);
        assert_eq!(
            valid_record_after(f.as_file(), f.path(), 0, 0, 1 << 20).expect("scan"),
            None
        );
    }
}
