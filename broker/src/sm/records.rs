//! Values stored in the state machine's column families.

use serde::Deserialize;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::SmError;
use super::error::SmResult;
use crate::command::TopicConfig;

/// One consume-queue entry: where message `offset` of a queue lives in the commit log.
/// Stored as 32 fixed bytes, integers big-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CqEntry {
    /// Raft log index of the entry holding the message.
    pub log_index: u64,
    /// Slot of the message's record in that entry (`Command::slot_of_record`).
    pub slot: u32,
    /// Size of the record in bytes.
    pub size: u32,
    /// Hash of the message's tag, for filtering without reading the record.
    pub tag_hash: u64,
    /// Store time stamped by the leader, milliseconds since the Unix epoch.
    pub store_time_ms: u64,
}

impl CqEntry {
    pub const LEN: usize = 32;

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0..8].copy_from_slice(&self.log_index.to_be_bytes());
        b[8..12].copy_from_slice(&self.slot.to_be_bytes());
        b[12..16].copy_from_slice(&self.size.to_be_bytes());
        b[16..24].copy_from_slice(&self.tag_hash.to_be_bytes());
        b[24..32].copy_from_slice(&self.store_time_ms.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> SmResult<Self> {
        let b: &[u8; Self::LEN] = b.try_into().map_err(|_| {
            SmError::corrupt("cq entry", format!("{} bytes, expected {}", b.len(), Self::LEN))
        })?;
        Ok(Self {
            log_index: be_u64(&b[0..8]),
            slot: be_u32(&b[8..12]),
            size: be_u32(&b[12..16]),
            tag_hash: be_u64(&b[16..24]),
            store_time_ms: be_u64(&b[24..32]),
        })
    }
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_be_bytes(a)
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    u32::from_be_bytes(a)
}

/// A queue's next offset (`queues` value), 8 bytes big-endian.
pub fn encode_counter(next: u64) -> [u8; 8] {
    next.to_be_bytes()
}

pub fn decode_counter(b: &[u8]) -> SmResult<u64> {
    let a: [u8; 8] = b
        .try_into()
        .map_err(|_| SmError::corrupt("queue counter", format!("{} bytes, expected 8", b.len())))?;
    Ok(u64::from_be_bytes(a))
}

/// A topic as stored: its config and the log index of the command that created it. The
/// creation index tells incarnations of a topic apart: a topic deleted and created again
/// does not inherit its predecessor's consumer offsets or message ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub config: TopicConfig,
    pub created_at: u64,
}

/// A consumer group's committed offset on one queue, with the incarnation of the topic it
/// was committed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetRecord {
    pub offset: u64,
    pub topic_created_at: u64,
}

impl OffsetRecord {
    pub const LEN: usize = 16;

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0..8].copy_from_slice(&self.offset.to_be_bytes());
        b[8..16].copy_from_slice(&self.topic_created_at.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> SmResult<Self> {
        if b.len() != Self::LEN {
            return Err(SmError::corrupt(
                "consumer offset",
                format!("{} bytes, expected 16", b.len()),
            ));
        }
        Ok(Self {
            offset: be_u64(&b[0..8]),
            topic_created_at: be_u64(&b[8..16]),
        })
    }
}

/// One popped, not yet acknowledged message of a consumer group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inflight {
    /// When it becomes visible (deliverable) again, ms since the Unix epoch.
    pub visible_at_ms: u64,
    /// How many times it has been delivered (1 on the first delivery).
    pub attempt: u32,
}

/// A consumer group's pop progress on one queue: the next offset never handed out, and the
/// messages handed out but not acknowledged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PopState {
    /// Incarnation of the topic this state belongs to (see [`TopicRecord::created_at`]).
    pub topic_created_at: u64,
    pub next: u64,
    pub inflight: std::collections::BTreeMap<u64, Inflight>,
}

impl PopState {
    /// Every offset below this is acknowledged (or skipped by a filter): the group's
    /// committed offset.
    pub fn committed(&self) -> u64 {
        self.inflight.keys().next().copied().unwrap_or(self.next)
    }
}

/// Encodes a value with postcard.
pub fn to_postcard<T: Serialize>(what: &'static str, v: &T) -> SmResult<Vec<u8>> {
    postcard::to_stdvec(v).map_err(|e| SmError::encode(what, e))
}

/// Decodes a postcard value; a failure means the stored bytes are corrupt.
pub fn from_postcard<T: DeserializeOwned>(what: &'static str, b: &[u8]) -> SmResult<T> {
    postcard::from_bytes(b).map_err(|e| SmError::corrupt(what, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::MessageKind;
    use crate::command::Permission;

    #[test]
    fn cq_entry_roundtrips_in_32_bytes() {
        let e = CqEntry {
            log_index: 1 << 40,
            slot: 3,
            size: 1024,
            tag_hash: u64::MAX - 1,
            store_time_ms: 17,
        };
        let b = e.encode();
        assert_eq!(b.len(), 32);
        assert_eq!(&b[0..8], &(1u64 << 40).to_be_bytes());
        assert_eq!(CqEntry::decode(&b).expect("decode"), e);
        assert!(CqEntry::decode(&b[..31]).is_err());
    }

    #[test]
    fn counters_and_offsets_roundtrip() {
        assert_eq!(decode_counter(&encode_counter(99)).expect("decode"), 99);
        assert!(decode_counter(&[1, 2]).is_err());
        let o = OffsetRecord {
            offset: 5,
            topic_created_at: 9,
        };
        assert_eq!(OffsetRecord::decode(&o.encode()).expect("decode"), o);
        assert!(OffsetRecord::decode(&[0; 8]).is_err());
    }

    #[test]
    fn postcard_values_roundtrip_and_garbage_is_corrupt() {
        let config = TopicConfig {
            name: "t".into(),
            queues: 8,
            permission: Permission::ReadWrite,
            kind: MessageKind::Normal,
        };
        let r = TopicRecord {
            config,
            created_at: 3,
        };
        let b = to_postcard("topic", &r).expect("encode");
        assert_eq!(from_postcard::<TopicRecord>("topic", &b).expect("decode"), r);
        let err = from_postcard::<TopicRecord>("topic", &[0xff]).expect_err("garbage");
        assert!(matches!(err, SmError::Corrupt { what: "topic", .. }));
    }
}
