//! Protobuf fields written by hand, for encoders that write a message straight from data
//! they borrow instead of building the generated type first (the broker's pull answers,
//! the client's send requests).
//!
//! A message is a [`Fields`]: it emits its fields into an [`Out`], which either writes
//! them into a buffer or counts their bytes ([`len_of`]); a nested message's length is
//! counted before it is written. The helpers write fields as prost writes the generated
//! types: proto3 scalars left out at their default, `optional` ones written when present
//! (each encoder's tests compare it with prost's encoding of the generated type).

use prost::bytes::BufMut;
use prost::bytes::BytesMut;
use prost::encoding::WireType;
use prost::encoding::encode_key;
use prost::encoding::encode_varint;
use prost::encoding::encoded_len_varint;
use prost::encoding::key_len;

/// Where fields are written: a buffer, or a counter of their bytes.
pub trait Out {
    fn put(&mut self, bytes: &[u8]);
    fn varint(&mut self, v: u64);
    fn key(&mut self, tag: u32, wire_type: WireType);
    /// A nested message field (written even when it has no fields).
    fn message(&mut self, tag: u32, m: &impl Fields);
}

/// A protobuf message's fields.
pub trait Fields {
    fn emit(&self, o: &mut impl Out);
}

/// The bytes of `m`'s fields.
pub fn len_of(m: &impl Fields) -> usize {
    let mut count = Count(0);
    m.emit(&mut count);
    count.0
}

/// Counts the bytes fields take.
#[derive(Debug, Default)]
pub struct Count(pub usize);

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

/// A length-delimited field of bytes (written even when empty).
pub fn bytes_field(o: &mut impl Out, tag: u32, b: &[u8]) {
    o.key(tag, WireType::LengthDelimited);
    o.varint(b.len() as u64);
    o.put(b);
}

/// A proto3 string or bytes field: left out when empty.
pub fn string_field(o: &mut impl Out, tag: u32, s: &[u8]) {
    if !s.is_empty() {
        bytes_field(o, tag, s);
    }
}

/// A proto3 integer or enum field (as prost writes `int32`/`int64`: negative numbers
/// sign-extended to ten bytes): left out when zero.
pub fn int_field(o: &mut impl Out, tag: u32, v: i64) {
    if v != 0 {
        o.key(tag, WireType::Varint);
        o.varint(v as u64);
    }
}

/// The key and length of a length-delimited field of `len` bytes whose bytes follow
/// (written separately, e.g. a body shared rather than copied).
pub fn length_prefix(o: &mut impl Out, tag: u32, len: usize) {
    o.key(tag, WireType::LengthDelimited);
    o.varint(len as u64);
}

impl Fields for prost_types::Timestamp {
    fn emit(&self, o: &mut impl Out) {
        int_field(o, 1, self.seconds);
        int_field(o, 2, i64::from(self.nanos));
    }
}

/// A `Resource` (`definition.proto`: `resource_namespace = 1`, `name = 2`).
#[derive(Debug, Clone, Copy)]
pub struct ResourceFields<'a> {
    pub namespace: &'a [u8],
    pub name: &'a [u8],
}

impl Fields for ResourceFields<'_> {
    fn emit(&self, o: &mut impl Out) {
        string_field(o, 1, self.namespace);
        string_field(o, 2, self.name);
    }
}

/// One entry of a `map<string, string>` (key = 1, value = 2, each left out when empty, as
/// prost writes map entries).
#[derive(Debug, Clone, Copy)]
pub struct MapEntry<'a>(pub &'a [u8], pub &'a [u8]);

impl Fields for MapEntry<'_> {
    fn emit(&self, o: &mut impl Out) {
        string_field(o, 1, self.0);
        string_field(o, 2, self.1);
    }
}

/// A `Digest` (`type = 1`, `checksum = 2`).
#[derive(Debug, Clone, Copy)]
pub struct DigestFields<'a> {
    pub kind: i32,
    pub checksum: &'a [u8],
}

impl Fields for DigestFields<'_> {
    fn emit(&self, o: &mut impl Out) {
        int_field(o, 1, i64::from(self.kind));
        string_field(o, 2, self.checksum);
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::rocketmq::v2 as pb;

    fn written(m: &impl Fields) -> Vec<u8> {
        let mut buf = BytesMut::new();
        m.emit(&mut buf);
        assert_eq!(buf.len(), len_of(m), "counted and written lengths agree");
        buf.to_vec()
    }

    #[test]
    fn small_messages_are_written_as_prost_writes_them() {
        for (seconds, nanos) in [(0, 0), (1, 0), (0, 5), (-1, 999_999_999), (i64::MAX, 1)] {
            let t = prost_types::Timestamp { seconds, nanos };
            assert_eq!(written(&t), t.encode_to_vec(), "{t:?}");
        }
        for (namespace, name) in [("", ""), ("ns", ""), ("", "orders"), ("ns", "orders")] {
            let r = pb::Resource {
                resource_namespace: namespace.into(),
                name: name.into(),
            };
            let ours = ResourceFields {
                namespace: namespace.as_bytes(),
                name: name.as_bytes(),
            };
            assert_eq!(written(&ours), r.encode_to_vec(), "{r:?}");
        }
        for (kind, checksum) in [(0, ""), (1, ""), (0, "AB"), (3, "0123456789")] {
            let d = pb::Digest {
                r#type: kind,
                checksum: checksum.into(),
            };
            let ours = DigestFields {
                kind,
                checksum: checksum.as_bytes(),
            };
            assert_eq!(written(&ours), d.encode_to_vec(), "{d:?}");
        }
    }

    #[test]
    fn a_map_entry_and_a_negative_int_are_written_as_prost_writes_them() {
        for (k, v) in [("", ""), ("k", ""), ("", "v"), ("key", "value")] {
            let m = pb::Message {
                user_properties: [(k.to_owned(), v.to_owned())].into_iter().collect(),
                ..Default::default()
            };
            let mut buf = BytesMut::new();
            buf.message(2, &MapEntry(k.as_bytes(), v.as_bytes()));
            assert_eq!(buf.to_vec(), m.encode_to_vec(), "{k:?} {v:?}");
        }
        let s = pb::SystemProperties {
            queue_id: -2,
            ..Default::default()
        };
        let mut buf = BytesMut::new();
        int_field(&mut buf, 13, -2);
        assert_eq!(buf.to_vec(), s.encode_to_vec());
        assert_eq!(buf.len(), 1 + 10, "sign-extended to ten bytes");
    }
}
