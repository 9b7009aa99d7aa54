//! A message as stored in the commit log (one record per message, in a send's slots), its
//! validation on the way in and its conversion to the wire on the way out.
//!
//! The record's format is in [`crate::message_record`].

use std::collections::BTreeMap;

use bytes::Bytes;
use raftmq_proto::prost_types;
use raftmq_proto::rocketmq::v2 as pb;
use serde::Deserialize;
use serde::Serialize;

use crate::delivered_digest;
use crate::delivered_digest::DigestForm;
use crate::error::BrokerError;
use crate::error::BrokerResult;
use crate::error::InvalidCode;

/// Longest message id accepted.
pub const MAX_MESSAGE_ID_LEN: usize = 128;
/// Longest tag, key or message group accepted.
pub const MAX_NAME_LEN: usize = 1024;
/// Most bytes of a message's metadata — keys, tag, message group and user properties (keys
/// and values) together — in one message (RocketMQ: 16 KiB of properties).
pub const MAX_PROPERTIES_BYTES: usize = 16 * 1024;
/// Most keys of one message.
pub const MAX_KEYS: usize = 64;

/// What kind of message it is (the protocol's `MessageType`, without UNSPECIFIED).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredKind {
    Normal,
    Fifo,
    Delay,
    Transaction,
}

impl StoredKind {
    /// The protocol's `MessageType` of this kind.
    pub fn to_wire(self) -> pb::MessageType {
        match self {
            Self::Normal => pb::MessageType::Normal,
            Self::Fifo => pb::MessageType::Fifo,
            Self::Delay => pb::MessageType::Delay,
            Self::Transaction => pb::MessageType::Transaction,
        }
    }
}

/// The body digest a producer sent (the protocol's `Digest`), kept for consumers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BodyDigest {
    /// The protocol's `DigestType` number (CRC32 1, MD5 2, SHA1 3).
    pub kind: i32,
    pub checksum: String,
}

/// Longest digest checksum kept (hex of SHA-1 is 40 characters).
const MAX_DIGEST_LEN: usize = 128;

impl BodyDigest {
    /// Whether a producer's digest (its `DigestType` number and checksum) is kept: one of
    /// a known type and plausible size.
    pub(crate) fn acceptable(kind: i32, checksum: &str) -> bool {
        let known = matches!(
            pb::DigestType::try_from(kind),
            Ok(pb::DigestType::Crc32 | pb::DigestType::Md5 | pb::DigestType::Sha1)
        );
        known && !checksum.is_empty() && checksum.len() <= MAX_DIGEST_LEN
    }
}

/// A message as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub msg_id: String,
    pub topic: String,
    pub tag: Option<String>,
    pub keys: Vec<String>,
    pub message_group: Option<String>,
    pub properties: BTreeMap<String, String>,
    pub kind: StoredKind,
    pub born_timestamp_ms: u64,
    pub born_host: String,
    /// The producer's body digest (None: one is computed at delivery, see
    /// [`crate::delivered_digest`]).
    pub digest: Option<BodyDigest>,
    pub body: Bytes,
}

impl StoredMessage {
    /// Encodes the record stored in the commit log ([`crate::message_record`]).
    pub fn encode(&self) -> BrokerResult<Bytes> {
        crate::message_record::encode(self)
    }

    /// Decodes a record read from the commit log; the body shares the record's memory.
    pub fn decode(record: &Bytes) -> BrokerResult<Self> {
        crate::message_record::decode(record)
    }

    /// The tag's hash as indexed in consume queues.
    pub fn tag_hash(&self) -> u64 {
        crate::command::tag_hash(self.tag.as_deref().unwrap_or(""))
    }

    /// The message as delivered to a consumer; takes both apart (a consumer read decodes
    /// a message only to deliver it, so nothing is cloned).
    pub fn into_wire(self, d: Delivery) -> pb::Message {
        let kind = self.kind.to_wire();
        let sys = pb::SystemProperties {
            tag: self.tag,
            keys: self.keys,
            message_id: self.msg_id,
            body_digest: Some(delivered_digest::delivered(
                self.digest.as_ref(),
                &self.body,
                d.digest_form,
            )),
            body_encoding: pb::Encoding::Identity as i32,
            message_type: kind as i32,
            born_timestamp: Some(timestamp(self.born_timestamp_ms)),
            born_host: self.born_host,
            store_timestamp: Some(timestamp(d.store_time_ms)),
            store_host: d.store_host,
            receipt_handle: d.receipt_handle,
            queue_id: d.queue_id as i32,
            queue_offset: Some(d.queue_offset as i64),
            invisible_duration: d.invisible_ms.map(duration),
            delivery_attempt: d.attempt.map(|a| a as i32),
            message_group: self.message_group,
            ..Default::default()
        };
        pb::Message {
            topic: Some(pb::Resource {
                resource_namespace: String::new(),
                name: self.topic,
            }),
            user_properties: self.properties.into_iter().collect(),
            system_properties: Some(sys),
            body: self.body,
        }
    }
}

/// Where and how a message is delivered.
#[derive(Debug, Clone, Default)]
pub struct Delivery {
    pub queue_id: u32,
    pub queue_offset: u64,
    pub store_time_ms: u64,
    pub store_host: String,
    pub receipt_handle: Option<String>,
    pub invisible_ms: Option<u64>,
    pub attempt: Option<u32>,
    /// How the consumer's client checks the body digest.
    pub digest_form: DigestForm,
}

/// The kind of a producer's message: `delayed` if it names a delivery time, its
/// `MessageType` number, whether it has a message group.
pub(crate) fn kind_of(delayed: bool, message_type: i32, grouped: bool) -> BrokerResult<StoredKind> {
    if delayed {
        return Err(BrokerError::invalid(
            InvalidCode::Unsupported,
            "delay messages (delivery_timestamp) are not supported yet",
        ));
    }
    match pb::MessageType::try_from(message_type) {
        Ok(pb::MessageType::Transaction) => Err(BrokerError::invalid(
            InvalidCode::Unsupported,
            "transaction messages are not supported yet",
        )),
        Ok(pb::MessageType::Delay) => Err(BrokerError::invalid(
            InvalidCode::Unsupported,
            "delay messages are not supported yet",
        )),
        _ if grouped => Ok(StoredKind::Fifo),
        Ok(pb::MessageType::Fifo) => Err(BrokerError::invalid(
            InvalidCode::IllegalMessageGroup,
            "a FIFO message needs a message group",
        )),
        _ => Ok(StoredKind::Normal),
    }
}

pub(crate) fn check_message_id(id: &str) -> BrokerResult<()> {
    if id.is_empty() || id.len() > MAX_MESSAGE_ID_LEN || id.chars().any(char::is_control) {
        return Err(BrokerError::invalid(
            InvalidCode::IllegalMessageId,
            format!("message id must be 1..={MAX_MESSAGE_ID_LEN} printable characters"),
        ));
    }
    Ok(())
}

/// The system properties a producer sets that the broker keeps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Names<'a> {
    pub tag: Option<&'a str>,
    pub keys: &'a [&'a str],
    pub message_group: Option<&'a str>,
    pub born_host: &'a str,
}

impl Names<'_> {
    /// Tag, keys and message group: each a valid name, at most [`MAX_KEYS`] keys.
    pub(crate) fn check(&self) -> BrokerResult<()> {
        if let Some(tag) = self.tag {
            check_name(InvalidCode::IllegalTag, "tag", tag)?;
            if tag.contains('|') {
                return Err(BrokerError::invalid(
                    InvalidCode::IllegalTag,
                    "a tag may not contain '|'",
                ));
            }
        }
        if self.keys.len() > MAX_KEYS {
            return Err(BrokerError::invalid(
                InvalidCode::IllegalKey,
                format!("{} keys, at most {MAX_KEYS} keys allowed", self.keys.len()),
            ));
        }
        for key in self.keys {
            check_name(InvalidCode::IllegalKey, "key", key)?;
        }
        if let Some(g) = self.message_group {
            check_name(InvalidCode::IllegalMessageGroup, "message group", g)?;
        }
        if self.born_host.len() > MAX_NAME_LEN {
            return Err(BrokerError::invalid(
                InvalidCode::BadRequest,
                format!("born_host must be at most {MAX_NAME_LEN} bytes"),
            ));
        }
        Ok(())
    }

    /// Bytes counted against [`MAX_PROPERTIES_BYTES`] besides user properties: keys, tag
    /// and message group.
    pub(crate) fn metadata_bytes(&self) -> usize {
        let keys: usize = self.keys.iter().map(|k| k.len()).sum();
        keys + self.tag.map_or(0, str::len) + self.message_group.map_or(0, str::len)
    }
}

fn check_name(code: InvalidCode, what: &str, v: &str) -> BrokerResult<()> {
    if v.trim().is_empty() {
        return Err(BrokerError::invalid(code, format!("{what} is blank")));
    }
    if v.len() > MAX_NAME_LEN || v.chars().any(char::is_control) {
        return Err(BrokerError::invalid(
            code,
            format!("{what} must be at most {MAX_NAME_LEN} bytes without control characters"),
        ));
    }
    Ok(())
}

/// User properties: valid keys, and with the other metadata (`metadata` bytes) at most
/// [`MAX_PROPERTIES_BYTES`].
pub(crate) fn check_properties<'a>(
    props: impl IntoIterator<Item = (&'a str, &'a str)>,
    metadata: usize,
) -> BrokerResult<()> {
    let mut total = metadata;
    for (k, v) in props {
        if k.is_empty() || k.chars().any(char::is_control) {
            return Err(BrokerError::invalid(
                InvalidCode::IllegalPropertyKey,
                format!("property key {k:?} is empty or has control characters"),
            ));
        }
        total += k.len() + v.len();
    }
    if total > MAX_PROPERTIES_BYTES {
        return Err(BrokerError::invalid(
            InvalidCode::PropertiesTooLarge,
            format!(
                "keys, tag, message group and user properties take {total} bytes, at most \
                 {MAX_PROPERTIES_BYTES} allowed"
            ),
        ));
    }
    Ok(())
}

pub(crate) fn check_body(body: &[u8], max_body: usize) -> BrokerResult<()> {
    if body.is_empty() {
        return Err(BrokerError::invalid(
            InvalidCode::BodyEmpty,
            "message body is empty",
        ));
    }
    if body.len() > max_body {
        return Err(BrokerError::invalid(
            InvalidCode::BodyTooLarge,
            format!("message body is {} bytes, at most {max_body} allowed", body.len()),
        ));
    }
    Ok(())
}

pub fn timestamp(ms: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

/// Milliseconds since the epoch of a protobuf timestamp: times before the epoch are 0,
/// absurdly late ones saturate (clients send any `seconds`).
pub fn timestamp_ms(t: &prost_types::Timestamp) -> u64 {
    let ms = t
        .seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(t.nanos / 1_000_000));
    u64::try_from(ms).unwrap_or(0)
}

pub fn duration(ms: u64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

/// Milliseconds of a protobuf duration; negative durations, and ones beyond `u64`
/// milliseconds' range, are `None`.
pub fn duration_ms(d: &prost_types::Duration) -> Option<u64> {
    let ms = d
        .seconds
        .checked_mul(1000)?
        .checked_add(i64::from(d.nanos / 1_000_000))?;
    u64::try_from(ms).ok()
}

#[cfg(test)]
#[path = "message_tests.rs"]
mod tests;
