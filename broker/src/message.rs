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
use crate::sm::keys;

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
    /// The digest of a producer's message, if it is of a known type and plausible size.
    fn from_wire(d: Option<&pb::Digest>) -> Option<Self> {
        let d = d?;
        let known = matches!(
            pb::DigestType::try_from(d.r#type),
            Ok(pb::DigestType::Crc32 | pb::DigestType::Md5 | pb::DigestType::Sha1)
        );
        (known && !d.checksum.is_empty() && d.checksum.len() <= MAX_DIGEST_LEN).then(|| Self {
            kind: d.r#type,
            checksum: d.checksum.clone(),
        })
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

    /// Validates a message a producer sent and converts it; `max_body` is the body limit.
    pub fn from_wire(m: pb::Message, max_body: usize) -> BrokerResult<Self> {
        let topic = m.topic.map(|r| r.name).unwrap_or_default();
        keys::validate_topic_name(&topic).map_err(|e| BrokerError::invalid(InvalidCode::IllegalTopic, e))?;
        let sys = m.system_properties.ok_or_else(|| {
            BrokerError::invalid(InvalidCode::BadRequest, "message without system properties")
        })?;
        check_message_id(&sys.message_id)?;
        check_system_properties(&sys)?;
        check_properties(&m.user_properties, metadata_bytes(&sys))?;
        check_body(&m.body, max_body)?;
        let kind = kind_of(&sys)?;
        let digest = BodyDigest::from_wire(sys.body_digest.as_ref());
        Ok(Self {
            msg_id: sys.message_id,
            topic,
            tag: sys.tag,
            keys: sys.keys,
            message_group: sys.message_group,
            properties: m.user_properties.into_iter().collect(),
            kind,
            born_timestamp_ms: sys.born_timestamp.map_or(0, |t| timestamp_ms(&t)),
            born_host: sys.born_host,
            digest,
            body: m.body,
        })
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

fn kind_of(sys: &pb::SystemProperties) -> BrokerResult<StoredKind> {
    if sys.delivery_timestamp.is_some() {
        return Err(BrokerError::invalid(
            InvalidCode::Unsupported,
            "delay messages (delivery_timestamp) are not supported yet",
        ));
    }
    match pb::MessageType::try_from(sys.message_type) {
        Ok(pb::MessageType::Transaction) => Err(BrokerError::invalid(
            InvalidCode::Unsupported,
            "transaction messages are not supported yet",
        )),
        Ok(pb::MessageType::Delay) => Err(BrokerError::invalid(
            InvalidCode::Unsupported,
            "delay messages are not supported yet",
        )),
        _ if sys.message_group.is_some() => Ok(StoredKind::Fifo),
        Ok(pb::MessageType::Fifo) => Err(BrokerError::invalid(
            InvalidCode::IllegalMessageGroup,
            "a FIFO message needs a message group",
        )),
        _ => Ok(StoredKind::Normal),
    }
}

fn check_message_id(id: &str) -> BrokerResult<()> {
    if id.is_empty() || id.len() > MAX_MESSAGE_ID_LEN || id.chars().any(char::is_control) {
        return Err(BrokerError::invalid(
            InvalidCode::IllegalMessageId,
            format!("message id must be 1..={MAX_MESSAGE_ID_LEN} printable characters"),
        ));
    }
    Ok(())
}

/// Tag, keys and message group: each a valid name, at most [`MAX_KEYS`] keys.
fn check_system_properties(sys: &pb::SystemProperties) -> BrokerResult<()> {
    if let Some(tag) = &sys.tag {
        check_name(InvalidCode::IllegalTag, "tag", tag)?;
        if tag.contains('|') {
            return Err(BrokerError::invalid(
                InvalidCode::IllegalTag,
                "a tag may not contain '|'",
            ));
        }
    }
    if sys.keys.len() > MAX_KEYS {
        return Err(BrokerError::invalid(
            InvalidCode::IllegalKey,
            format!("{} keys, at most {MAX_KEYS} keys allowed", sys.keys.len()),
        ));
    }
    for key in &sys.keys {
        check_name(InvalidCode::IllegalKey, "key", key)?;
    }
    if let Some(g) = &sys.message_group {
        check_name(InvalidCode::IllegalMessageGroup, "message group", g)?;
    }
    if sys.born_host.len() > MAX_NAME_LEN {
        return Err(BrokerError::invalid(
            InvalidCode::BadRequest,
            format!("born_host must be at most {MAX_NAME_LEN} bytes"),
        ));
    }
    Ok(())
}

/// Bytes of the metadata counted against [`MAX_PROPERTIES_BYTES`] besides user properties:
/// keys, tag and message group.
fn metadata_bytes(sys: &pb::SystemProperties) -> usize {
    let keys: usize = sys.keys.iter().map(String::len).sum();
    keys + sys.tag.as_ref().map_or(0, String::len) + sys.message_group.as_ref().map_or(0, String::len)
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
fn check_properties(props: &std::collections::HashMap<String, String>, metadata: usize) -> BrokerResult<()> {
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

fn check_body(body: &[u8], max_body: usize) -> BrokerResult<()> {
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
