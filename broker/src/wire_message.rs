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

use bytes::BufMut;
use bytes::Bytes;
use bytes::BytesMut;
use raftmq_proto::prost::encoding::WireType;
use raftmq_proto::prost::encoding::encode_key;
use raftmq_proto::prost::encoding::encode_varint;
use raftmq_proto::prost::encoding::encoded_len_varint;
use raftmq_proto::prost::encoding::key_len;
use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::EncodedMessage;

use crate::delivered_digest::DigestForm;
use crate::delivered_digest::delivered_parts;
use crate::error::BrokerResult;
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
            digest: Digest {
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

/// Where fields are written: a buffer, or a counter of their bytes.
trait Out {
    fn put(&mut self, bytes: &[u8]);
    fn varint(&mut self, v: u64);
    fn key(&mut self, tag: u32, wire_type: WireType);
    /// A nested message field (written even when it has no fields).
    fn message(&mut self, tag: u32, m: &impl Fields);
}

/// The bytes of `m`'s fields.
fn len_of(m: &impl Fields) -> usize {
    let mut count = Count(0);
    m.emit(&mut count);
    count.0
}

/// Counts the bytes fields take.
struct Count(usize);

impl Out for Count {
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
    fn varint(&mut self, v: u64) {
        self.0 += encoded_len_varint(v);
    }
    fn key(&mut self, tag: u32, _: WireType) {
        self.0 += key_len(tag);
    }
    fn message(&mut self, tag: u32, m: &impl Fields) {
        let len = len_of(m);
        self.0 += key_len(tag) + encoded_len_varint(len as u64) + len;
    }
}

impl Out for BytesMut {
    fn put(&mut self, bytes: &[u8]) {
        self.put_slice(bytes);
    }
    fn varint(&mut self, v: u64) {
        encode_varint(v, self);
    }
    fn key(&mut self, tag: u32, wire_type: WireType) {
        encode_key(tag, wire_type, self);
    }
    fn message(&mut self, tag: u32, m: &impl Fields) {
        self.key(tag, WireType::LengthDelimited);
        self.varint(len_of(m) as u64);
        m.emit(self);
    }
}

/// A protobuf message's fields.
trait Fields {
    fn emit(&self, o: &mut impl Out);
}

/// A length-delimited field of bytes (written even when empty).
fn bytes_field(o: &mut impl Out, tag: u32, b: &[u8]) {
    o.key(tag, WireType::LengthDelimited);
    o.varint(b.len() as u64);
    o.put(b);
}

/// A proto3 string or bytes field: left out when empty.
fn string_field(o: &mut impl Out, tag: u32, s: &[u8]) {
    if !s.is_empty() {
        bytes_field(o, tag, s);
    }
}

/// A proto3 integer or enum field (as prost writes `int32`/`int64`: negative numbers
/// sign-extended to ten bytes): left out when zero.
fn int_field(o: &mut impl Out, tag: u32, v: i64) {
    if v != 0 {
        o.key(tag, WireType::Varint);
        o.varint(v as u64);
    }
}

/// Everything of a `Message` before its body's bytes: topic, user properties, system
/// properties, and the body's key and length.
struct Head<'a> {
    sys: Sys<'a>,
}

impl Fields for Head<'_> {
    fn emit(&self, o: &mut impl Out) {
        let v = self.sys.v;
        o.message(1, &Resource(v.meta.topic));
        for &(key, value) in &v.meta.properties {
            o.message(2, &Property(key, value));
        }
        o.message(3, &self.sys);
        if !v.body.is_empty() {
            o.key(4, WireType::LengthDelimited);
            o.varint(v.body.len() as u64);
        }
    }
}

/// A `Resource` with an empty namespace.
struct Resource<'a>(&'a [u8]);

impl Fields for Resource<'_> {
    fn emit(&self, o: &mut impl Out) {
        string_field(o, 2, self.0);
    }
}

/// One entry of the `user_properties` map.
struct Property<'a>(&'a [u8], &'a [u8]);

impl Fields for Property<'_> {
    fn emit(&self, o: &mut impl Out) {
        string_field(o, 1, self.0);
        string_field(o, 2, self.1);
    }
}

struct Digest<'a> {
    kind: i32,
    checksum: &'a [u8],
}

impl Fields for Digest<'_> {
    fn emit(&self, o: &mut impl Out) {
        int_field(o, 1, i64::from(self.kind));
        string_field(o, 2, self.checksum);
    }
}

/// A `google.protobuf.Timestamp` of milliseconds since the epoch.
struct Timestamp(u64);

impl Fields for Timestamp {
    fn emit(&self, o: &mut impl Out) {
        let t = crate::message::timestamp(self.0);
        int_field(o, 1, t.seconds);
        int_field(o, 2, i64::from(t.nanos));
    }
}

/// `SystemProperties` of a pulled message.
struct Sys<'a> {
    v: &'a RecordView<'a>,
    p: &'a Placement<'a>,
    digest: Digest<'a>,
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
        o.message(7, &Timestamp(m.born_timestamp_ms));
        string_field(o, 8, m.born_host);
        o.message(9, &Timestamp(p.store_time_ms));
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
