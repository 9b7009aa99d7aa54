//! A stored message encoded as the protocol's `Message` straight from its commit-log
//! record, for a pull's answer.
//!
//! [`StoredMessage::into_wire`](crate::message::StoredMessage::into_wire) builds the
//! protocol's `Message` value: every string of the record copied into its own allocation,
//! the user properties into a map, all freed again once prost has encoded them. That
//! building and freeing was close to half of a pull answer's cost per message
//! (`examples/pull_encoding.rs`). Here the record is read borrowed
//! ([`message_record::view`]) and its fields are written as protobuf straight into one
//! buffer per answer; the body stays the record's, copied only into the answer itself (see
//! [`EncodedMessage`]).
//!
//! The encoding is the one prost gives `into_wire`'s value, field for field (fields in
//! number order, proto3 defaults left out, `optional` fields written when present); the
//! tests check the two against each other, byte for byte where prost's order is fixed.

use bytes::Bytes;
use bytes::BytesMut;
use raftmq_proto::prost::encoding::WireType;
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

use crate::delivered_digest::DigestForm;
use crate::delivered_digest::delivered_parts;
use crate::error::BrokerResult;
use crate::message::timestamp;
use crate::message_record;
use crate::message_record::RecordView;

/// Where and to whom a pulled message is delivered (a pull's part of
/// [`crate::message::Delivery`]: no receipt handle, invisibility or attempt).
#[derive(Debug, Clone, Copy)]
pub struct Placement<'a> {
    pub queue_id: u32,
    pub queue_offset: u64,
    pub store_time_ms: u64,
    pub store_host: &'a str,
    pub digest_form: DigestForm,
}

/// About the bytes of one message's head (its metadata): room reserved per message.
pub const HEAD_BYTES: usize = 256;

/// The message in `record` delivered at `p`. Its head is written at the end of `heads` and
/// split off (one allocation serves a whole answer); its body shares the record's memory.
pub fn encode(record: &Bytes, p: &Placement<'_>, heads: &mut BytesMut) -> BrokerResult<EncodedMessage> {
    let v = message_record::view(record)?;
    let (digest_kind, checksum) = delivered_parts(v.digest, &v.body, p.digest_form);
    let head = Head {
        sys: Sys {
            v: &v,
            p,
            digest: DigestFields {
                kind: digest_kind,
                checksum: checksum.as_str().as_bytes(),
            },
        },
    };
    heads.reserve(len_of(&head));
    head.emit(heads);
    Ok(EncodedMessage {
        head: heads.split().freeze(),
        body: v.body.clone(),
    })
}

/// Everything of a `Message` before its body's bytes: topic, user properties, system
/// properties, and the body's key and length.
struct Head<'a> {
    sys: Sys<'a>,
}

impl Fields for Head<'_> {
    fn emit(&self, o: &mut impl Out) {
        let v = self.sys.v;
        let topic = ResourceFields {
            namespace: b"",
            name: v.meta.topic,
        };
        o.message(1, &topic);
        for &(key, value) in &v.meta.properties {
            o.message(2, &MapEntry(key, value));
        }
        o.message(3, &self.sys);
        if !v.body.is_empty() {
            length_prefix(o, 4, v.body.len());
        }
    }
}

/// `SystemProperties` of a pulled message.
struct Sys<'a> {
    v: &'a RecordView<'a>,
    p: &'a Placement<'a>,
    digest: DigestFields<'a>,
}

impl Fields for Sys<'_> {
    fn emit(&self, o: &mut impl Out) {
        let (m, p) = (&self.v.meta, self.p);
        if let Some(tag) = m.tag {
            bytes_field(o, 1, tag);
        }
        for key in &m.keys {
            bytes_field(o, 2, key);
        }
        string_field(o, 3, m.msg_id);
        o.message(4, &self.digest);
        int_field(o, 5, pb::Encoding::Identity as i64);
        int_field(o, 6, m.kind.to_wire() as i64);
        o.message(7, &timestamp(m.born_timestamp_ms));
        string_field(o, 8, m.born_host);
        o.message(9, &timestamp(p.store_time_ms));
        string_field(o, 10, p.store_host.as_bytes());
        int_field(o, 13, i64::from(p.queue_id as i32));
        // `optional`: written even when zero.
        o.key(14, WireType::Varint);
        o.varint(p.queue_offset);
        if let Some(group) = m.message_group {
            bytes_field(o, 17, group);
        }
    }
}

#[cfg(test)]
#[path = "wire_message_tests.rs"]
mod tests;
