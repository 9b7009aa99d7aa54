//! A reader of the protobuf fields of one encoded message that hands out where each
//! field's bytes lie instead of copying them (sans-IO: no allocation, no I/O).
//!
//! It reads what prost reads — varints, fixed-width numbers, length-delimited fields —
//! and refuses what prost refuses (a field number 0 or above `u32`, wire types 6 and 7,
//! a length past the end), and also the deprecated groups (wire types 3 and 4), which no
//! RocketMQ client writes.

use raftmq_proto::prost::encoding::decode_varint;

use crate::error::BrokerError;
use crate::error::BrokerResult;
use crate::error::InvalidCode;

/// Where a field's bytes lie in the encoded message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    /// The whole of `bytes`.
    pub fn all(bytes: &[u8]) -> Self {
        Self {
            start: 0,
            end: bytes.len(),
        }
    }

    pub fn len(self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(self) -> bool {
        self.start == self.end
    }

    /// The bytes of this span in `bytes` (empty if the span is not within them, which a
    /// span read from `bytes` always is).
    pub fn of(self, bytes: &[u8]) -> &[u8] {
        bytes.get(self.start..self.end).unwrap_or_default()
    }
}

/// A field's value as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    Varint(u64),
    Fixed64,
    Fixed32,
    /// A length-delimited value: a string, bytes, an embedded message, a packed list.
    Delimited(Span),
}

/// The fields of an encoded message (or of an embedded one, within a [`Span`]).
#[derive(Debug)]
pub struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
    end: usize,
}

impl<'a> Fields<'a> {
    /// The fields within `span` of `bytes`.
    pub fn new(bytes: &'a [u8], span: Span) -> Self {
        let end = span.end.min(bytes.len());
        Self {
            bytes,
            at: span.start.min(end),
            end,
        }
    }

    /// The next field's number and value; `None` once all are read.
    pub fn next_field(&mut self) -> BrokerResult<Option<(u32, Value)>> {
        if self.at >= self.end {
            return Ok(None);
        }
        let key = self.varint()?;
        let number = u32::try_from(key >> 3)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| malformed("a field number out of range"))?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.skip(8)?;
                Value::Fixed64
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| malformed("a length out of range"))?;
                let start = self.at;
                self.skip(len)?;
                Value::Delimited(Span { start, end: self.at })
            }
            5 => {
                self.skip(4)?;
                Value::Fixed32
            }
            _ => return Err(malformed("a field of an unknown or group wire type")),
        };
        Ok(Some((number, value)))
    }

    fn varint(&mut self) -> BrokerResult<u64> {
        let mut rest = self.bytes.get(self.at..self.end).unwrap_or_default();
        let before = rest.len();
        let v = decode_varint(&mut rest).map_err(|_| malformed("a bad varint"))?;
        self.at += before - rest.len();
        Ok(v)
    }

    fn skip(&mut self, n: usize) -> BrokerResult<()> {
        if n > self.end - self.at {
            return Err(malformed("a field running past the end"));
        }
        self.at += n;
        Ok(())
    }
}

/// The refusal of a message whose encoding cannot be read.
pub fn malformed(what: &str) -> BrokerError {
    BrokerError::invalid(
        InvalidCode::BadRequest,
        format!("malformed message encoding: {what}"),
    )
}

/// A length-delimited field's span, or the refusal of another wire type.
pub fn delimited(v: Value, field: &str) -> BrokerResult<Span> {
    match v {
        Value::Delimited(s) => Ok(s),
        _ => Err(malformed(&format!("{field} is not length-delimited"))),
    }
}

/// A varint field's value, or the refusal of another wire type.
pub fn varint(v: Value, field: &str) -> BrokerResult<u64> {
    match v {
        Value::Varint(n) => Ok(n),
        _ => Err(malformed(&format!("{field} is not a varint"))),
    }
}

/// A string field's span, its bytes checked to be UTF-8 (as prost checks a `string`).
pub fn string(bytes: &[u8], v: Value, field: &str) -> BrokerResult<Span> {
    let s = delimited(v, field)?;
    std::str::from_utf8(s.of(bytes)).map_err(|_| malformed(&format!("{field} is not UTF-8")))?;
    Ok(s)
}

/// The text of a span [`string`] checked ("" if it is not UTF-8, which it then is not).
pub fn text(bytes: &[u8], s: Span) -> &str {
    std::str::from_utf8(s.of(bytes)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use raftmq_proto::prost;
    use raftmq_proto::prost::Message as _;
    use raftmq_proto::rocketmq::v2 as pb;

    use super::*;

    fn all(bytes: &[u8]) -> Vec<(u32, Value)> {
        let mut f = Fields::new(bytes, Span::all(bytes));
        let mut out = Vec::new();
        while let Some(field) = f.next_field().expect("reads") {
            out.push(field);
        }
        out
    }

    #[test]
    fn reads_each_wire_type_and_where_delimited_values_lie() {
        let mut b = Vec::new();
        prost::encoding::uint64::encode(3, &300, &mut b);
        prost::encoding::fixed64::encode(4, &7, &mut b);
        prost::encoding::fixed32::encode(5, &7, &mut b);
        prost::encoding::string::encode(536_870_911, &"héllo".to_owned(), &mut b);
        let fields = all(&b);
        assert_eq!(
            fields[..3],
            [(3, Value::Varint(300)), (4, Value::Fixed64), (5, Value::Fixed32)]
        );
        let (n, v) = fields[3];
        assert_eq!(n, 536_870_911, "the largest field number");
        let s = string(&b, v, "s").expect("utf-8");
        assert_eq!(text(&b, s), "héllo");
        assert_eq!(s.end, b.len());
    }

    #[test]
    fn embedded_messages_are_read_within_their_span() {
        let r = pb::Resource {
            resource_namespace: "ns".into(),
            name: "topic".into(),
        };
        let mut b = Vec::new();
        prost::encoding::message::encode(1, &r, &mut b);
        prost::encoding::int32::encode(2, &-1, &mut b);
        let fields = all(&b);
        let inner = delimited(fields[0].1, "topic").expect("delimited");
        assert_eq!(inner.of(&b), r.encode_to_vec());
        let mut f = Fields::new(&b, inner);
        let (_, name) = f.next_field().expect("ok").expect("namespace");
        assert_eq!(text(&b, delimited(name, "ns").expect("d")), "ns");
        assert!(f.next_field().expect("ok").is_some());
        assert!(f.next_field().expect("ok").is_none(), "stops at the span's end");
        // int32 -1 is a ten-byte varint, read back as the u64 prost reads.
        assert_eq!(fields[1], (2, Value::Varint(u64::MAX)));
    }

    #[test]
    fn what_prost_refuses_is_refused() {
        let cases: [&[u8]; 7] = [
            &[0x02, 0x05, b'a'], // a length past the end
            &[0x00, 0x01],       // field number 0
            &[0x0e],             // wire type 6
            &[0x0b],             // a start group
            &[0x08, 0xff],       // a cut varint
            &[0x09, 1, 2, 3],    // a cut fixed64
            &[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], // varint overflow
        ];
        for bad in cases {
            let mut f = Fields::new(bad, Span::all(bad));
            let read = (|| {
                while f.next_field()?.is_some() {}
                Ok::<_, BrokerError>(())
            })();
            assert!(read.is_err(), "{bad:?}");
            assert!(pb::Message::decode(bad).is_err(), "prost refuses {bad:?} too");
        }
        let b = [0x0a, 0x02, 0xff, 0xfe];
        let v = all(&b)[0].1;
        assert!(string(&b, v, "s").is_err(), "not UTF-8");
        assert!(varint(v, "n").is_err());
        assert!(delimited(Value::Varint(1), "d").is_err());
    }
}
