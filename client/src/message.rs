//! Messages as an application builds them, checked before they leave, and their ids.

use std::collections::BTreeMap;

use bytes::Bytes;
use raftmq_proto::digest::crc32;
use raftmq_proto::digest::crc32_hex;
use raftmq_proto::prost_types::Timestamp;
use raftmq_proto::rocketmq::v2 as pb;

use crate::error::ClientError;
use crate::error::Result;
pub use crate::message_id::new_message_id;

/// RocketMQ's largest message body (brokers may be configured lower).
pub const DEFAULT_MAX_BODY_SIZE: usize = 4 * 1024 * 1024;
/// Longest topic name.
pub const TOPIC_MAX_LEN: usize = 127;

/// A message to send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// The topic it is sent to.
    pub topic: String,
    /// The body (not empty; at most the producer's max message size). Shared, not copied,
    /// on its way into a request.
    pub body: Bytes,
    /// One tag; consumers filter on it.
    pub tag: Option<String>,
    /// Business keys (indexed by the broker, shown by tools).
    pub keys: Vec<String>,
    /// User properties.
    pub properties: BTreeMap<String, String>,
    /// The sharding key of an ordered (FIFO) message: all messages of a key go to one
    /// queue, in order.
    pub message_group: Option<String>,
}

impl Message {
    /// A message with a body for `topic`.
    pub fn new(topic: impl Into<String>, body: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            body: body.into(),
            ..Self::default()
        }
    }

    /// With a tag.
    pub fn with_tag(mut self, tag: impl Into<String>) -> Self {
        self.tag = Some(tag.into());
        self
    }

    /// With one more key.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.keys.push(key.into());
        self
    }

    /// With a user property.
    pub fn with_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    /// As an ordered message of `group` (the sharding key).
    pub fn with_message_group(mut self, group: impl Into<String>) -> Self {
        self.message_group = Some(group.into());
        self
    }

    /// Checks what a broker would refuse, before anything is sent.
    pub fn validate(&self, max_body_size: usize) -> Result<()> {
        check_topic(&self.topic)?;
        if self.body.is_empty() {
            return Err(invalid("message body is empty"));
        }
        if self.body.len() > max_body_size {
            return Err(invalid(format!(
                "message body is {} bytes, more than the limit of {max_body_size}",
                self.body.len()
            )));
        }
        if let Some(tag) = &self.tag
            && (tag.trim().is_empty() || tag.contains('|'))
        {
            return Err(invalid(format!("illegal tag {tag:?}: empty or containing '|'")));
        }
        if self.keys.iter().any(|k| k.trim().is_empty()) {
            return Err(invalid("a message key is blank"));
        }
        if self.message_group.as_deref().is_some_and(|g| g.trim().is_empty()) {
            return Err(invalid("the message group (sharding key) is blank"));
        }
        Ok(())
    }

    /// The protocol's message type: FIFO with a message group, else normal.
    pub(crate) fn wire_type(&self) -> pb::MessageType {
        if self.message_group.is_some() {
            pb::MessageType::Fifo
        } else {
            pb::MessageType::Normal
        }
    }

    /// The protocol's message with id `message_id`, to be stored on `queue_id`. (The
    /// producer sends the same encoding written directly: `producer::wire`.)
    pub fn to_wire(&self, namespace: &str, message_id: &str, queue_id: i32, born: Timestamp) -> pb::Message {
        let kind = self.wire_type();
        pb::Message {
            topic: Some(pb::Resource {
                resource_namespace: namespace.to_owned(),
                name: self.topic.clone(),
            }),
            user_properties: self.properties.clone().into_iter().collect(),
            system_properties: Some(pb::SystemProperties {
                tag: self.tag.clone(),
                keys: self.keys.clone(),
                message_id: message_id.to_owned(),
                // CRC32, far cheaper than SHA-1 or MD5. Official clients each spell a CRC32
                // differently and compare strings; brokers re-spell it for each consumer
                // (or send an MD5 where they do not know how it checks), so brokers must
                // run a build that does (1c6417d or later) before clients send CRC32.
                body_digest: Some(pb::Digest {
                    r#type: pb::DigestType::Crc32 as i32,
                    checksum: crc32_hex(crc32(&self.body)),
                }),
                body_encoding: pb::Encoding::Identity as i32,
                message_type: kind as i32,
                born_timestamp: Some(born),
                born_host: crate::rpc::host_name().to_owned(),
                queue_id,
                message_group: self.message_group.clone(),
                ..Default::default()
            }),
            body: self.body.clone(),
        }
    }
}

fn invalid(detail: impl Into<String>) -> ClientError {
    ClientError::InvalidArgument(detail.into())
}

/// RocketMQ's topic name rule: `[A-Za-z0-9_%|-]`, 1..=127 bytes.
pub fn check_topic(topic: &str) -> Result<()> {
    if topic.is_empty() {
        return Err(invalid("topic is empty"));
    }
    if topic.len() > TOPIC_MAX_LEN {
        return Err(invalid(format!(
            "topic is {} bytes long, at most {TOPIC_MAX_LEN}",
            topic.len()
        )));
    }
    if let Some(c) = topic
        .bytes()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, b'_' | b'%' | b'|' | b'-')))
    {
        return Err(invalid(format!("topic {topic:?} contains {:?}", c as char)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_messages_are_refused_before_sending() {
        let ok = Message::new("orders", "hi").with_tag("created").with_key("k1");
        ok.validate(DEFAULT_MAX_BODY_SIZE).expect("valid");
        let cases = [
            (Message::new("", "x"), "topic is empty"),
            (Message::new("a b", "x"), "contains"),
            (Message::new("t", ""), "empty"),
            (Message::new("t", vec![0u8; 11]), "more than the limit"),
            (Message::new("t", "x").with_tag("a|b"), "illegal tag"),
            (Message::new("t", "x").with_key(" "), "blank"),
            (Message::new("t", "x").with_message_group(""), "sharding key"),
        ];
        for (m, why) in cases {
            let e = m.validate(10).expect_err(why).to_string();
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn the_wire_message_carries_id_digest_type_and_queue() {
        let m = Message::new("orders", "hello")
            .with_tag("t1")
            .with_property("k", "v")
            .with_message_group("customer-7");
        let born = Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
        };
        let w = m.to_wire("ns", "ID1", 3, born);
        let sp = w.system_properties.expect("system properties");
        assert_eq!(sp.message_id, "ID1");
        assert_eq!(sp.queue_id, 3);
        assert_eq!(sp.born_timestamp, Some(born));
        assert_eq!(sp.message_type, pb::MessageType::Fifo as i32);
        assert_eq!(sp.message_group.as_deref(), Some("customer-7"));
        assert_eq!(
            sp.body_digest.map(|d| (d.r#type, d.checksum)),
            Some((pb::DigestType::Crc32 as i32, "3610A686".into()))
        );
        assert_eq!(w.user_properties.get("k").map(String::as_str), Some("v"));
        assert_eq!(w.topic.map(|t| t.resource_namespace), Some("ns".into()));
    }
}
