//! On-disk record format: one Raft log entry per record.
//!
//! ```text
//! offset size field
//!  0      4   magic "RMQR"
//!  4      1   format version (1)
//!  5      1   entry kind (1 blank, 2 normal, 3 membership)
//!  6      2   reserved, zero
//!  8      4   payload length (u32 LE)
//! 12      4   CRC32C over bytes 0..12, 16..48 and the payload
//! 16      8   log index
//! 24      8   leader term
//! 32      8   leader node id
//! 40      8   write epoch (bumped at every open and truncation)
//! 48      -   payload
//! ```
//!
//! All integers are little endian. A header of all zeroes is the clean end of a segment
//! (preallocated space that was never written).

use crate::error::Corruption;

/// Size of a record header in bytes.
pub const HEADER_LEN: usize = 48;
const MAGIC: [u8; 4] = *b"RMQR";
const VERSION: u8 = 1;

/// What a log entry carries; mirrors openraft's payload variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EntryKind {
    Blank = 1,
    Normal = 2,
    Membership = 3,
}

impl EntryKind {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Blank),
            2 => Some(Self::Normal),
            3 => Some(Self::Membership),
            _ => None,
        }
    }
}

/// The identifying fields of a record, i.e. the header without framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMeta {
    pub index: u64,
    pub term: u64,
    pub leader: u64,
    pub kind: EntryKind,
}

/// A decoded header whose checksum has not been verified yet (the payload is needed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub meta: RecordMeta,
    pub epoch: u64,
    pub payload_len: u32,
    crc: u32,
}

impl Header {
    /// Total on-disk length of the record this header starts.
    pub fn record_len(&self) -> usize {
        HEADER_LEN + self.payload_len as usize
    }
}

/// Starts a record in `out`: writes its header with a placeholder length and checksum.
/// The caller appends the payload and then calls [`finish`] with the returned start.
pub fn begin(out: &mut Vec<u8>, meta: &RecordMeta, epoch: u64) -> usize {
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(meta.kind as u8);
    out.extend_from_slice(&[0; 10]);
    out.extend_from_slice(&meta.index.to_le_bytes());
    out.extend_from_slice(&meta.term.to_le_bytes());
    out.extend_from_slice(&meta.leader.to_le_bytes());
    out.extend_from_slice(&epoch.to_le_bytes());
    start
}

/// Completes the record started at `start`: fills in length and checksum.
/// Returns the payload length.
pub fn finish(out: &mut [u8], start: usize) -> usize {
    let payload_len = out.len() - start - HEADER_LEN;
    out[start + 8..start + 12].copy_from_slice(&(payload_len as u32).to_le_bytes());
    let (header, payload) = out[start..].split_at(HEADER_LEN);
    let crc = checksum(header, payload);
    out[start + 12..start + 16].copy_from_slice(&crc.to_le_bytes());
    payload_len
}

/// Appends one encoded record (header + payload) to `out`.
pub fn encode(out: &mut Vec<u8>, meta: &RecordMeta, epoch: u64, payload: &[u8]) {
    let start = begin(out, meta, epoch);
    out.extend_from_slice(payload);
    finish(out, start);
}

fn checksum(header: &[u8], payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&header[0..12]);
    let crc = crc32c::crc32c_append(crc, &header[16..HEADER_LEN]);
    crc32c::crc32c_append(crc, payload)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// Why a header could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// All zeroes: never written (clean end of data).
    Zeroed,
    /// Anything else: torn or corrupt.
    Corrupt(Corruption),
}

/// Decodes the fixed header. `max_payload` bounds the length field so that a corrupt length
/// never makes a reader allocate or scan gigabytes.
pub fn decode_header(b: &[u8], max_payload: u32) -> Result<Header, HeaderError> {
    if b.len() < HEADER_LEN {
        return Err(HeaderError::Corrupt(Corruption::Truncated));
    }
    let b = &b[..HEADER_LEN];
    if b[0..4] != MAGIC {
        if b.iter().all(|&x| x == 0) {
            return Err(HeaderError::Zeroed);
        }
        return Err(HeaderError::Corrupt(Corruption::BadMagic));
    }
    if b[4] != VERSION {
        return Err(HeaderError::Corrupt(Corruption::BadVersion(b[4])));
    }
    let kind = EntryKind::from_u8(b[5]).ok_or(HeaderError::Corrupt(Corruption::BadKind(b[5])))?;
    let payload_len = u32_at(b, 8);
    if payload_len > max_payload {
        return Err(HeaderError::Corrupt(Corruption::BadLength(payload_len)));
    }
    Ok(Header {
        meta: RecordMeta {
            index: u64_at(b, 16),
            term: u64_at(b, 24),
            leader: u64_at(b, 32),
            kind,
        },
        epoch: u64_at(b, 40),
        payload_len,
        crc: u32_at(b, 12),
    })
}

/// Verifies the checksum of a full record (`rec` = header bytes followed by the payload).
pub fn verify(header: &Header, rec: &[u8]) -> Result<(), Corruption> {
    if rec.len() < header.record_len() {
        return Err(Corruption::Truncated);
    }
    let payload = &rec[HEADER_LEN..header.record_len()];
    if checksum(&rec[..HEADER_LEN], payload) != header.crc {
        return Err(Corruption::Checksum);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(index: u64) -> RecordMeta {
        RecordMeta {
            index,
            term: 7,
            leader: 3,
            kind: EntryKind::Normal,
        }
    }

    #[test]
    fn roundtrip() {
        let mut buf = Vec::new();
        encode(&mut buf, &meta(42), 9, b"hello");
        assert_eq!(buf.len(), HEADER_LEN + 5);
        let h = decode_header(&buf, 1024).expect("header");
        assert_eq!(h.meta, meta(42));
        assert_eq!(h.epoch, 9);
        assert_eq!(h.payload_len, 5);
        verify(&h, &buf).expect("crc");
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let mut buf = Vec::new();
        encode(&mut buf, &meta(1), 1, b"payload bytes");
        for bit in 0..buf.len() * 8 {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let ok = match decode_header(&bad, 1 << 20) {
                Ok(h) => verify(&h, &bad).is_ok(),
                Err(_) => false,
            };
            assert!(!ok, "flip of bit {bit} went unnoticed");
        }
    }

    #[test]
    fn zeroes_are_clean_end_and_oversize_is_corrupt() {
        assert_eq!(decode_header(&[0; HEADER_LEN], 10), Err(HeaderError::Zeroed));
        let mut buf = Vec::new();
        encode(&mut buf, &meta(1), 1, &[1; 100]);
        assert_eq!(
            decode_header(&buf, 10),
            Err(HeaderError::Corrupt(Corruption::BadLength(100)))
        );
    }
}
