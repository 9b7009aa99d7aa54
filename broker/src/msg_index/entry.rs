//! One entry of the message index: a key's hash and where the message it names is.
//!
//! Fixed size, little-endian, with its own CRC32C so that a torn or never-written tail is
//! recognised when a segment is reopened:
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | key hash ([`key_hash`]) |
//! | 8..16 | log index of the entry holding the message |
//! | 16..24 | store time, ms since the Unix epoch |
//! | 24..28 | slot of the message's record in that entry |
//! | 28..32 | queue id |
//! | 32..36 | previous entry of the same hash slot, as entry number + 1 (0: none) |
//! | 36..40 | CRC32C of bytes 0..36 |

/// What a key names: a message id and a business key of the same text are different keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    MessageId,
    Key,
}

/// A stable 64-bit hash of a key within a topic. It is written to disk, so it must never
/// change between builds (a test pins values); collisions only cost a record read, since
/// every hit is checked against the message itself. Eight bytes at a time: every message
/// is hashed on every node, and a byte-at-a-time hash was about 1 % of a follower's CPU.
pub fn key_hash(kind: KeyKind, topic: impl AsRef<[u8]>, key: impl AsRef<[u8]>) -> u64 {
    let mut h: u64 = match kind {
        KeyKind::MessageId => 0x243f_6a88_85a3_08d3,
        KeyKind::Key => 0x1319_8a2e_0370_7344,
    };
    for part in [topic.as_ref(), key.as_ref()] {
        let mut words = part.chunks_exact(8);
        for w in &mut words {
            h = mix(h, u64::from_le_bytes(w.try_into().unwrap_or_default()));
        }
        let mut tail = [0u8; 8];
        tail[..words.remainder().len()].copy_from_slice(words.remainder());
        // The length keeps ("ab", "c") apart from ("a", "bc").
        h = mix(mix(h, u64::from_le_bytes(tail)), part.len() as u64);
    }
    // Final avalanche, so that `h % slots` depends on every input bit.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

fn mix(h: u64, w: u64) -> u64 {
    (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29)
}

/// A decoded index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub hash: u64,
    pub log_index: u64,
    pub store_time_ms: u64,
    pub slot: u32,
    pub queue_id: u32,
    /// Entry number + 1 of the previous entry in the same hash slot; 0 ends the chain.
    pub prev: u32,
}

impl IndexEntry {
    pub const LEN: usize = 40;

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0..8].copy_from_slice(&self.hash.to_le_bytes());
        b[8..16].copy_from_slice(&self.log_index.to_le_bytes());
        b[16..24].copy_from_slice(&self.store_time_ms.to_le_bytes());
        b[24..28].copy_from_slice(&self.slot.to_le_bytes());
        b[28..32].copy_from_slice(&self.queue_id.to_le_bytes());
        b[32..36].copy_from_slice(&self.prev.to_le_bytes());
        let crc = crc32c::crc32c(&b[..36]);
        b[36..40].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// The entry in `b`, or `None` if its checksum does not match (a torn or unwritten
    /// entry: all zeros fail too, since the CRC of 36 zero bytes is not zero).
    pub fn decode(b: &[u8]) -> Option<Self> {
        let b: &[u8; Self::LEN] = b.get(..Self::LEN)?.try_into().ok()?;
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or_default());
        if crc32c::crc32c(&b[..36]) != u32_at(36) {
            return None;
        }
        Some(Self {
            hash: u64_at(0),
            log_index: u64_at(8),
            store_time_ms: u64_at(16),
            slot: u32_at(24),
            queue_id: u32_at(28),
            prev: u32_at(32),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> IndexEntry {
        IndexEntry {
            hash: key_hash(KeyKind::Key, "orders", "order-7"),
            log_index: 1 << 40,
            store_time_ms: 1_700_000_000_123,
            slot: 3,
            queue_id: 7,
            prev: 12,
        }
    }

    #[test]
    fn entries_roundtrip_and_any_flipped_bit_is_caught() {
        let e = entry();
        let b = e.encode();
        assert_eq!(IndexEntry::decode(&b), Some(e));
        for bit in 0..IndexEntry::LEN * 8 {
            let mut bad = b;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(IndexEntry::decode(&bad), None, "bit {bit}");
        }
        assert_eq!(IndexEntry::decode(&[0u8; IndexEntry::LEN]), None);
        assert_eq!(IndexEntry::decode(&b[..39]), None);
    }

    #[test]
    fn the_hash_is_stable_and_separates_kinds_topics_and_keys() {
        // Written to disk: a change of these values would orphan every existing index.
        assert_eq!(key_hash(KeyKind::Key, "t", "k"), 0xecef_e17e_b5f7_9135);
        let h = key_hash(KeyKind::Key, "orders", "a");
        assert_ne!(h, key_hash(KeyKind::MessageId, "orders", "a"));
        assert_ne!(h, key_hash(KeyKind::Key, "orders2", "a"));
        assert_ne!(
            key_hash(KeyKind::Key, "ab", "c"),
            key_hash(KeyKind::Key, "a", "bc")
        );
        assert_ne!(
            key_hash(KeyKind::Key, "t", "k"),
            key_hash(KeyKind::Key, "t", "k\0")
        );
    }

    #[test]
    fn similar_keys_spread_evenly_over_slots() {
        // Message ids differ in a few characters; keys are often "order-N".
        for (slots, prefix) in [(64u64, "order-"), (1_000, "01AB23CD45EF67"), (65_536, "")] {
            let n = slots * 20;
            let mut counts = vec![0u32; slots as usize];
            for i in 0..n {
                counts[(key_hash(KeyKind::Key, "orders", format!("{prefix}{i}")) % slots) as usize] += 1;
            }
            let max = counts.iter().max().copied().unwrap_or_default();
            assert!(
                max < 50,
                "{slots} slots, {prefix:?}: fullest slot has {max}, mean 20"
            );
        }
    }
}
