//! Messages as consumers hand them to the application, and the check of their bodies.
//!
//! Brokers send a digest of every body (raftmq: the producer's, or a CRC32 computed at
//! delivery; RocketMQ: MD5; either may carry SHA-1). The body is checked against it when
//! the message arrives; a mismatch marks the message [`ReceivedMessage::corrupted`]. What
//! a consumer then does:
//!
//! - the simple consumer never hands a corrupted message out: it leaves it invisible, so
//!   it is delivered again after its invisible duration (a copy read afresh), and the
//!   broker dead-letters it once it ran out of attempts;
//! - the pull consumer hands it out flagged, since it moves its offsets itself: skipping
//!   it (and committing past it) or stopping is the application's call.
//!
//! A digest of an unknown type, or none, is not checked and does not mark the message.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use std::time::SystemTime;
use std::time::UNIX_EPOCH;

use raftmq_proto::digest::crc32;
use raftmq_proto::digest::hex_eq;
use raftmq_proto::digest::md5;
use raftmq_proto::digest::sha1;
use raftmq_proto::prost_types::Timestamp;
use raftmq_proto::rocketmq::v2 as pb;

/// A message delivered to a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The id the producer gave it.
    pub message_id: String,
    /// The topic it was consumed from.
    pub topic: String,
    /// The body, as stored.
    pub body: bytes::Bytes,
    /// Its tag, if it has one.
    pub tag: Option<String>,
    /// Its business keys.
    pub keys: Vec<String>,
    /// Its user properties.
    pub properties: BTreeMap<String, String>,
    /// The message group (sharding key) of an ordered message.
    pub message_group: Option<String>,
    /// The broker group that stores it.
    pub broker: String,
    /// The queue within that group.
    pub queue_id: i32,
    /// Its offset in the queue.
    pub queue_offset: i64,
    /// Which delivery this is (1 for the first) of a received message; 0 for a pulled one.
    pub delivery_attempt: i32,
    /// When the producer created it.
    pub born_timestamp: Option<SystemTime>,
    /// The producer's host.
    pub born_host: String,
    /// When the broker stored it.
    pub store_timestamp: Option<SystemTime>,
    /// How long it stays invisible after this delivery (received messages only).
    pub invisible_duration: Option<Duration>,
    /// The handle that acknowledges this delivery or changes its invisibility (received
    /// messages only; pulled messages have none).
    pub receipt_handle: Option<String>,
    /// Where the message's broker group is reached (every address, the leader first):
    /// where acks and changes of invisibility go. Shared by the messages of one call.
    pub endpoints: Arc<[String]>,
    /// The body does not match the digest the broker sent (see the module docs).
    pub corrupted: bool,
}

impl ReceivedMessage {
    /// The message from the protocol's form, delivered by broker group `broker` reached at
    /// `endpoints`. The body is checked against its digest.
    pub fn from_wire(m: pb::Message, broker: &str, endpoints: &Arc<[String]>) -> Self {
        let sys = m.system_properties.unwrap_or_default();
        let corrupted = matches!(
            check_digest(&m.body, sys.body_digest.as_ref()),
            DigestCheck::Mismatch
        );
        Self {
            message_id: sys.message_id,
            topic: m.topic.map(|t| t.name).unwrap_or_default(),
            body: m.body,
            tag: sys.tag,
            keys: sys.keys,
            properties: m.user_properties.into_iter().collect(),
            message_group: sys.message_group,
            broker: broker.to_owned(),
            queue_id: sys.queue_id,
            queue_offset: sys.queue_offset.unwrap_or(-1),
            delivery_attempt: sys.delivery_attempt.unwrap_or(0),
            born_timestamp: sys.born_timestamp.as_ref().and_then(system_time),
            born_host: sys.born_host,
            store_timestamp: sys.store_timestamp.as_ref().and_then(system_time),
            invisible_duration: sys.invisible_duration.and_then(|d| Duration::try_from(d).ok()),
            receipt_handle: sys.receipt_handle,
            endpoints: Arc::clone(endpoints),
            corrupted,
        }
    }

    /// The body as UTF-8 text, if it is.
    pub fn body_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.body).ok()
    }
}

/// The outcome of checking a body against its digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestCheck {
    /// The body matches.
    Match,
    /// The body does not match: it was corrupted.
    Mismatch,
    /// No digest, or one of a type this client does not know.
    Unchecked,
}

/// Checks `body` against `digest` (MD5, SHA-1: hex; CRC32: hex of the IEEE CRC-32, with
/// or without leading zeros). Hex compares without regard to case.
pub fn check_digest(body: &[u8], digest: Option<&pb::Digest>) -> DigestCheck {
    let Some(d) = digest else {
        return DigestCheck::Unchecked;
    };
    let expected = d.checksum.trim();
    let matched = match pb::DigestType::try_from(d.r#type) {
        Ok(pb::DigestType::Md5) => hex_eq(expected, &md5(body)),
        Ok(pb::DigestType::Sha1) => hex_eq(expected, &sha1(body)),
        Ok(pb::DigestType::Crc32) => u32::from_str_radix(expected, 16).ok() == Some(crc32(body)),
        _ => return DigestCheck::Unchecked,
    };
    if matched {
        DigestCheck::Match
    } else {
        DigestCheck::Mismatch
    }
}

/// A protocol timestamp as a time; None before the epoch or out of range.
pub(crate) fn system_time(t: &Timestamp) -> Option<SystemTime> {
    let secs = u64::try_from(t.seconds).ok()?;
    let nanos = u32::try_from(t.nanos).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// A time as a protocol timestamp (the epoch for a time before it).
pub(crate) fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(kind: pb::DigestType, checksum: &str) -> pb::Digest {
        pb::Digest {
            r#type: kind as i32,
            checksum: checksum.into(),
        }
    }

    #[test]
    fn digests_of_every_type_are_checked() {
        use pb::DigestType::*;
        let body = b"hello";
        let cases = [
            (Md5, "5D41402ABC4B2A76B9719D911017C592", DigestCheck::Match),
            (Md5, "5d41402abc4b2a76b9719d911017c592", DigestCheck::Match),
            (Md5, "5D41402ABC4B2A76B9719D911017C593", DigestCheck::Mismatch),
            (
                Sha1,
                "AAF4C61DDCC5E8A2DABEDE0F3B482CD9AEA9434D",
                DigestCheck::Match,
            ),
            (
                Sha1,
                "AAF4C61DDCC5E8A2DABEDE0F3B482CD9AEA9434E",
                DigestCheck::Mismatch,
            ),
            (Crc32, "3610A686", DigestCheck::Match),
            (Crc32, "3610a686", DigestCheck::Match),
            (Crc32, "3610A687", DigestCheck::Mismatch),
            (Crc32, "not hex", DigestCheck::Mismatch),
            (Unspecified, "whatever", DigestCheck::Unchecked),
        ];
        for (kind, sum, want) in cases {
            assert_eq!(
                check_digest(body, Some(&digest(kind, sum))),
                want,
                "{kind:?} {sum}"
            );
        }
        assert_eq!(check_digest(body, None), DigestCheck::Unchecked);
        // A CRC32 with a leading zero (0x03B4C26D), with and without it (C++ and Python
        // pad to eight digits, Java's Long.toHexString does not).
        let body = b"hello world!";
        assert_eq!(crc32(body), 0x03B4_C26D);
        for spelling in ["03B4C26D", "3B4C26D", "3b4c26d"] {
            assert_eq!(
                check_digest(body, Some(&digest(Crc32, spelling))),
                DigestCheck::Match,
                "{spelling}"
            );
        }
    }

    fn wire(body: &[u8], checksum: &str) -> pb::Message {
        pb::Message {
            topic: Some(pb::Resource {
                resource_namespace: String::new(),
                name: "t".into(),
            }),
            user_properties: [("k".to_owned(), "v".to_owned())].into_iter().collect(),
            system_properties: Some(pb::SystemProperties {
                tag: Some("A".into()),
                keys: vec!["key".into()],
                message_id: "ID".into(),
                body_digest: Some(digest(pb::DigestType::Md5, checksum)),
                born_timestamp: Some(Timestamp {
                    seconds: 10,
                    nanos: 5,
                }),
                receipt_handle: Some("r2.1.2.3.4".into()),
                queue_id: 1,
                queue_offset: Some(2),
                delivery_attempt: Some(3),
                invisible_duration: Some(raftmq_proto::prost_types::Duration {
                    seconds: 15,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            body: body.to_vec().into(),
        }
    }

    #[test]
    fn wire_messages_convert_and_corruption_is_flagged() {
        let eps: Arc<[String]> = Arc::from(["a:1".to_owned(), "b:1".to_owned()]);
        let m = ReceivedMessage::from_wire(wire(b"hello", "5D41402ABC4B2A76B9719D911017C592"), "g1", &eps);
        assert!(!m.corrupted);
        assert_eq!((m.message_id.as_str(), m.topic.as_str()), ("ID", "t"));
        assert_eq!((m.broker.as_str(), m.queue_id, m.queue_offset), ("g1", 1, 2));
        assert_eq!(m.delivery_attempt, 3);
        assert_eq!(m.tag.as_deref(), Some("A"));
        assert_eq!(m.keys, ["key"]);
        assert_eq!(m.properties.get("k").map(String::as_str), Some("v"));
        assert_eq!(m.receipt_handle.as_deref(), Some("r2.1.2.3.4"));
        assert_eq!(m.invisible_duration, Some(Duration::from_secs(15)));
        assert_eq!(m.endpoints, eps);
        assert!(Arc::ptr_eq(&m.endpoints, &eps), "shared, not copied");
        assert_eq!(m.body_str(), Some("hello"));
        assert_eq!(m.born_timestamp, Some(UNIX_EPOCH + Duration::new(10, 5)));
        let bad = ReceivedMessage::from_wire(wire(b"hellO", "5D41402ABC4B2A76B9719D911017C592"), "g1", &eps);
        assert!(bad.corrupted);
    }

    #[test]
    fn timestamps_convert_both_ways() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123);
        assert_eq!(system_time(&timestamp(t)), Some(t));
        assert_eq!(
            system_time(&Timestamp {
                seconds: -1,
                nanos: 0
            }),
            None
        );
        assert_eq!(timestamp(UNIX_EPOCH - Duration::from_secs(5)).seconds, 0);
    }
}
