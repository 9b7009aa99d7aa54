//! A producer's message encoded as the protocol's `Message` straight from [`Message`].
//!
//! [`Message::to_wire`] builds the protocol's value: the topic, id, digest, host and each
//! tag, key and property copied into allocations of their own, and a map of the
//! properties, all freed again once prost encoded them; a send built one per message for
//! every attempt. Here the message's fields are written as protobuf straight into one
//! buffer per request, and the body is shared with the message, copied only into the
//! request itself (see [`EncodedMessage`]).
//!
//! The encoding is prost's encoding of `to_wire`'s value, field for field; the tests
//! check the two against each other, byte for byte where prost's order is fixed.

use bytes::BytesMut;
use raftmq_proto::digest::crc32;
use raftmq_proto::digest::crc32_hex_digits;
use raftmq_proto::prost_types::Timestamp;
use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::EncodedMessage;
use raftmq_proto::wire_fields::DigestFields;
use raftmq_proto::wire_fields::Fields;
use raftmq_proto::wire_fields::MapEntry;
use raftmq_proto::wire_fields::Out;
use raftmq_proto::wire_fields::ResourceFields;
use raftmq_proto::wire_fields::bytes_field;
use raftmq_proto::wire_fields::int_field;
use raftmq_proto::wire_fields::len_of;
use raftmq_proto::wire_fields::length_prefix;
use raftmq_proto::wire_fields::string_field;

use crate::message::Message;

/// About the bytes of one message's head (everything but its body): room reserved per
/// message.
pub const HEAD_BYTES: usize = 160;

/// What one send's messages share: where they go and when and where they were born.
#[derive(Debug, Clone, Copy)]
pub struct Stamp<'a> {
    /// The namespace of the topic.
    pub namespace: &'a str,
    /// The queue the messages are stored on.
    pub queue_id: i32,
    /// When the messages were born.
    pub born: Timestamp,
    /// The producer's host name.
    pub host: &'a str,
}

/// `m` with id `id`, sent with `stamp`. Its head is written at the end of `heads` and
/// split off (one allocation serves a whole request); its body is the message's.
pub fn encode(m: &Message, id: &str, stamp: &Stamp<'_>, heads: &mut BytesMut) -> EncodedMessage {
    let head = Head {
        sys: Sys {
            m,
            id,
            stamp,
            checksum: crc32_hex_digits(crc32(&m.body)),
        },
    };
    heads.reserve(len_of(&head));
    head.emit(heads);
    EncodedMessage {
        head: heads.split().freeze(),
        body: m.body.clone(),
    }
}

/// Everything of a `Message` before its body's bytes.
struct Head<'a> {
    sys: Sys<'a>,
}

impl Fields for Head<'_> {
    fn emit(&self, o: &mut impl Out) {
        let m = self.sys.m;
        let topic = ResourceFields {
            namespace: self.sys.stamp.namespace.as_bytes(),
            name: m.topic.as_bytes(),
        };
        o.message(1, &topic);
        for (key, value) in &m.properties {
            o.message(2, &MapEntry(key.as_bytes(), value.as_bytes()));
        }
        o.message(3, &self.sys);
        if !m.body.is_empty() {
            length_prefix(o, 4, m.body.len());
        }
    }
}

/// `SystemProperties` of a message sent.
struct Sys<'a> {
    m: &'a Message,
    id: &'a str,
    stamp: &'a Stamp<'a>,
    checksum: [u8; 8],
}

impl Fields for Sys<'_> {
    fn emit(&self, o: &mut impl Out) {
        let m = self.m;
        if let Some(tag) = &m.tag {
            bytes_field(o, 1, tag.as_bytes());
        }
        for key in &m.keys {
            bytes_field(o, 2, key.as_bytes());
        }
        string_field(o, 3, self.id.as_bytes());
        let digest = DigestFields {
            kind: pb::DigestType::Crc32 as i32,
            checksum: &self.checksum,
        };
        o.message(4, &digest);
        int_field(o, 5, pb::Encoding::Identity as i64);
        int_field(o, 6, m.wire_type() as i64);
        o.message(7, &self.stamp.born);
        string_field(o, 8, self.stamp.host.as_bytes());
        int_field(o, 13, i64::from(self.stamp.queue_id));
        if let Some(group) = &m.message_group {
            bytes_field(o, 17, group.as_bytes());
        }
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
