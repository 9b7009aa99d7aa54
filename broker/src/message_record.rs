//! The commit-log record of one message (one slot of a send's entry).
//!
//! - Version 2 (written): a version byte, the postcard encoding of the message's metadata
//!   ([`Header`]), then the body's bytes up to the end of the record. A read hands out the
//!   body as a slice of the record: no copy between the log and the wire.
//! - Version 1 (still read): a version byte and the postcard encoding of the whole
//!   message, body included.
//!
//! Integrity is the commit log's job (every record carries a CRC32C). The producer's body
//! digest is kept as it came and handed to consumers, who check it end to end; a message
//! stored without one gets one computed at delivery (`crate::delivered_digest`).

use std::collections::BTreeMap;

use bytes::BufMut;
use bytes::Bytes;
use bytes::BytesMut;
use serde::Deserialize;
use serde::Serialize;

use crate::delivered_digest::StoredDigest;
use crate::error::BrokerError;
use crate::error::BrokerResult;
use crate::message::BodyDigest;
use crate::message::StoredKind;
use crate::message::StoredMessage;

const RECORD_V1: u8 = 1;
const RECORD_V2: u8 = 2;

/// The metadata of a version-2 record, as written (borrowed from the message).
#[derive(Serialize)]
struct HeaderRef<'a> {
    msg_id: &'a str,
    topic: &'a str,
    tag: &'a Option<String>,
    keys: &'a [String],
    message_group: &'a Option<String>,
    properties: &'a BTreeMap<String, String>,
    kind: StoredKind,
    born_timestamp_ms: u64,
    born_host: &'a str,
    digest: &'a Option<BodyDigest>,
}

/// The metadata both versions share, as read (the fields of [`HeaderRef`] up to
/// `born_host`, same order: postcard writes a nested struct as its fields in a row).
#[derive(Deserialize)]
struct Meta {
    msg_id: String,
    topic: String,
    tag: Option<String>,
    keys: Vec<String>,
    message_group: Option<String>,
    properties: BTreeMap<String, String>,
    kind: StoredKind,
    born_timestamp_ms: u64,
    born_host: String,
}

impl Meta {
    fn with(self, digest: Option<BodyDigest>, body: Bytes) -> StoredMessage {
        StoredMessage {
            msg_id: self.msg_id,
            topic: self.topic,
            tag: self.tag,
            keys: self.keys,
            message_group: self.message_group,
            properties: self.properties,
            kind: self.kind,
            born_timestamp_ms: self.born_timestamp_ms,
            born_host: self.born_host,
            digest,
            body,
        }
    }
}

/// The metadata of a version-2 record, as read; the body follows it.
#[derive(Deserialize)]
struct Header {
    meta: Meta,
    digest: Option<BodyDigest>,
}

/// A version-1 record: the metadata, then the body as a postcard byte string.
#[derive(Deserialize)]
struct V1 {
    meta: Meta,
    body: Bytes,
}

/// The record of `m` (version 2).
pub fn encode(m: &StoredMessage) -> BrokerResult<Bytes> {
    Ok(encode_into(m, BytesMut::with_capacity(capacity(m)))?.freeze())
}

/// Appends `m`'s record (version 2) to `out`: a send's records are written straight
/// into its command's buffer ([`crate::command::Command::with_records`]).
pub fn append(m: &StoredMessage, out: &mut BytesMut) -> BrokerResult<()> {
    *out = encode_into(m, std::mem::take(out))?;
    Ok(())
}

/// A record's size, about (the header's strings are usually short).
pub fn capacity(m: &StoredMessage) -> usize {
    64 + m.msg_id.len() + m.topic.len() + m.body.len()
}

/// Appends `m`'s record to `out`.
fn encode_into(m: &StoredMessage, mut out: BytesMut) -> BrokerResult<BytesMut> {
    let header = HeaderRef {
        msg_id: &m.msg_id,
        topic: &m.topic,
        tag: &m.tag,
        keys: &m.keys,
        message_group: &m.message_group,
        properties: &m.properties,
        kind: m.kind,
        born_timestamp_ms: m.born_timestamp_ms,
        born_host: &m.born_host,
        digest: &m.digest,
    };
    out.put_u8(RECORD_V2);
    let mut out =
        crate::postcard_out::append(&header, out).map_err(|e| BrokerError::Internal(e.to_string()))?;
    out.extend_from_slice(&m.body);
    Ok(out)
}

/// What the message index needs of a record, borrowed from it: the message id and the
/// keys (both versions start with these fields, see [`Meta`]). Read as bytes: the index
/// only hashes them, and a `&str` would check each for UTF-8 (the handler that accepted
/// the message already did).
#[derive(Debug, Deserialize)]
pub struct IndexFields<'a> {
    pub msg_id: &'a [u8],
    pub topic: &'a [u8],
    pub tag: Option<&'a [u8]>,
    #[serde(borrow)]
    pub keys: Vec<&'a [u8]>,
}

/// The message id and keys of `record` (either version), without decoding the rest.
pub fn index_fields(record: &[u8]) -> BrokerResult<IndexFields<'_>> {
    let (_, rest) = split_version(record)?;
    postcard::take_from_bytes::<IndexFields<'_>>(rest)
        .map(|(f, _)| f)
        .map_err(undecodable)
}

/// A record's version byte (one this build reads) and what follows it.
fn split_version(record: &[u8]) -> BrokerResult<(u8, &[u8])> {
    match record.split_first() {
        Some((&v, rest)) if v == RECORD_V1 || v == RECORD_V2 => Ok((v, rest)),
        Some((v, _)) => Err(BrokerError::Storage(format!(
            "message record of unknown version {v}"
        ))),
        None => Err(BrokerError::Storage("empty message record".into())),
    }
}

fn undecodable(e: postcard::Error) -> BrokerError {
    BrokerError::Storage(format!("undecodable message record: {e}"))
}

/// A record's metadata borrowed from it (either version, same fields as [`Meta`]): what
/// a pull encodes straight to the wire (`crate::wire_message`). Strings are read as bytes,
/// as in [`IndexFields`]: they are copied to the wire as they are, and the handler that
/// accepted the message checked them.
#[derive(Debug, Deserialize)]
pub struct MetaView<'a> {
    pub msg_id: &'a [u8],
    pub topic: &'a [u8],
    pub tag: Option<&'a [u8]>,
    #[serde(borrow)]
    pub keys: Vec<&'a [u8]>,
    pub message_group: Option<&'a [u8]>,
    /// In key order (written from a `BTreeMap`: postcard writes a map as a sequence of
    /// pairs).
    #[serde(borrow)]
    pub properties: Vec<(&'a [u8], &'a [u8])>,
    pub kind: StoredKind,
    pub born_timestamp_ms: u64,
    pub born_host: &'a [u8],
}

/// A message borrowed from its record: [`view`].
#[derive(Debug)]
pub struct RecordView<'a> {
    pub meta: MetaView<'a>,
    /// The producer's digest ([`BodyDigest`]'s fields, borrowed).
    pub digest: Option<StoredDigest<'a>>,
    /// A slice of the record (shares its memory).
    pub body: Bytes,
}

#[derive(Deserialize)]
struct HeaderView<'a> {
    #[serde(borrow)]
    meta: MetaView<'a>,
    #[serde(borrow)]
    digest: Option<StoredDigest<'a>>,
}

#[derive(Deserialize)]
struct V1View<'a> {
    #[serde(borrow)]
    meta: MetaView<'a>,
    body: &'a [u8],
}

/// The message in `record` (either version), borrowed: nothing is copied or allocated
/// but the lists of keys and properties (none when a message has none).
pub fn view(record: &Bytes) -> BrokerResult<RecordView<'_>> {
    match split_version(record)? {
        (RECORD_V2, rest) => {
            let (h, body) = postcard::take_from_bytes::<HeaderView<'_>>(rest).map_err(undecodable)?;
            Ok(RecordView {
                meta: h.meta,
                digest: h.digest,
                body: record.slice_ref(body),
            })
        }
        (_, rest) => {
            let v: V1View<'_> = postcard::from_bytes(rest).map_err(undecodable)?;
            Ok(RecordView {
                meta: v.meta,
                digest: None,
                body: record.slice_ref(v.body),
            })
        }
    }
}

/// The message in `record` (either version).
pub fn decode(record: &Bytes) -> BrokerResult<StoredMessage> {
    match split_version(record)? {
        (RECORD_V2, rest) => {
            let (h, body) = postcard::take_from_bytes::<Header>(rest).map_err(undecodable)?;
            let body = record.slice_ref(body);
            Ok(h.meta.with(h.digest, body))
        }
        (_, rest) => {
            let v: V1 = postcard::from_bytes(rest).map_err(undecodable)?;
            Ok(v.meta.with(None, v.body))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A message with a tag, keys and a property (shared with `wire_message`'s tests).
    pub(crate) fn message(digest: Option<BodyDigest>) -> StoredMessage {
        StoredMessage {
            msg_id: "01ABC".into(),
            topic: "orders".into(),
            tag: Some("TagA".into()),
            keys: vec!["k1".into(), "k2".into()],
            message_group: None,
            properties: [("p".to_owned(), "v".to_owned())].into_iter().collect(),
            kind: StoredKind::Normal,
            born_timestamp_ms: 1_700_000_000_000,
            born_host: "host".into(),
            digest,
            body: Bytes::from_static(b"the body"),
        }
    }

    #[test]
    fn index_fields_are_read_without_decoding_the_rest() {
        let m = message(None);
        let record = encode(&m).expect("encode");
        let f = index_fields(&record).expect("fields");
        let tag: Option<&[u8]> = Some(b"TagA");
        assert_eq!((f.msg_id, f.topic, f.tag), (&b"01ABC"[..], &b"orders"[..], tag));
        assert_eq!(f.keys, [b"k1", b"k2"]);
        assert!(index_fields(&[]).is_err());
        assert!(index_fields(&[9, 1, 2]).is_err());
        assert!(index_fields(&record[..4]).is_err(), "a cut record is refused");
    }

    #[test]
    fn version_two_roundtrips_and_slices_the_body_out_of_the_record() {
        let m = message(Some(BodyDigest {
            kind: 1,
            checksum: "ABC".into(),
        }));
        let record = encode(&m).expect("encode");
        assert_eq!(record[0], RECORD_V2);
        assert!(record.ends_with(b"the body"));
        let back = decode(&record).expect("decode");
        assert_eq!(back, m);
        let at = back.body.as_ptr() as usize - record.as_ptr() as usize;
        assert_eq!(
            at,
            record.len() - m.body.len(),
            "the body is the record's tail, not a copy"
        );
        let empty = StoredMessage {
            body: Bytes::new(),
            ..message(None)
        };
        assert_eq!(decode(&encode(&empty).expect("encode")).expect("decode"), empty);
    }

    /// A version-1 record of `message(None)` as the previous format wrote it (a version
    /// byte and the postcard encoding of the whole message, body last).
    pub(crate) fn v1_record() -> Bytes {
        const V1_RECORD: &str = "01053031414243066f726465727301045461674102026b31026b320001017001760080d095ffbc3104686f73740874686520626f6479";
        let bytes: Vec<u8> = (0..V1_RECORD.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&V1_RECORD[i..i + 2], 16).expect("hex"))
            .collect();
        Bytes::from(bytes)
    }

    #[test]
    fn version_one_records_still_decode() {
        assert_eq!(decode(&v1_record()).expect("decode"), message(None));
    }

    #[test]
    fn damaged_or_unknown_records_are_storage_errors() {
        for bad in [
            &b""[..],
            &[9u8, 1, 2][..],
            &[RECORD_V2, 0xff][..],
            &[RECORD_V1, 0xff][..],
        ] {
            assert!(
                matches!(decode(&Bytes::copy_from_slice(bad)), Err(BrokerError::Storage(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn records_appended_to_one_buffer_are_the_records_encoded_alone() {
        let mut a = message(None);
        let mut b = message(Some(BodyDigest {
            kind: 3,
            checksum: "0A".repeat(20),
        }));
        a.body = Bytes::from(vec![7u8; 1000]);
        b.msg_id = "another-id".into();
        b.body = Bytes::from_static(b"short");
        let mut together = BytesMut::new();
        append(&a, &mut together).expect("append");
        let first = together.split().freeze();
        append(&b, &mut together).expect("append");
        let second = together.freeze();
        assert_eq!(
            [first, second.clone()],
            [encode(&a).expect("encode"), encode(&b).expect("encode")]
        );
        assert_eq!(decode(&second).expect("decode"), b);
    }
}
