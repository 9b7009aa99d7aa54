//! The commit-log record of one message (one slot of a send's entry).
//!
//! - Version 2 (written): a version byte, the postcard encoding of the message's metadata
//!   ([`Header`]), then the body's bytes up to the end of the record. A read hands out the
//!   body as a slice of the record: no copy between the log and the wire.
//! - Version 1 (still read): a version byte and the postcard encoding of the whole
//!   message, body included.
//!
//! Integrity is the commit log's job (every record carries a CRC32C). The producer's body
//! digest is kept as it came and handed to consumers, who check it end to end; only a
//! message stored without one gets an MD5 computed at delivery.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Deserialize;
use serde::Serialize;

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

/// The metadata of a version-2 record, as read (same fields, same order).
#[derive(Deserialize)]
struct Header {
    msg_id: String,
    topic: String,
    tag: Option<String>,
    keys: Vec<String>,
    message_group: Option<String>,
    properties: BTreeMap<String, String>,
    kind: StoredKind,
    born_timestamp_ms: u64,
    born_host: String,
    digest: Option<BodyDigest>,
}

/// A version-1 record: the whole message.
#[derive(Serialize, Deserialize)]
struct V1 {
    msg_id: String,
    topic: String,
    tag: Option<String>,
    keys: Vec<String>,
    message_group: Option<String>,
    properties: BTreeMap<String, String>,
    kind: StoredKind,
    born_timestamp_ms: u64,
    born_host: String,
    body: Bytes,
}

/// The record of `m` (version 2).
pub fn encode(m: &StoredMessage) -> BrokerResult<Bytes> {
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
    let mut out = Vec::with_capacity(64 + m.msg_id.len() + m.topic.len() + m.body.len());
    out.push(RECORD_V2);
    let mut out = postcard::to_extend(&header, out).map_err(|e| BrokerError::Internal(e.to_string()))?;
    out.extend_from_slice(&m.body);
    Ok(Bytes::from(out))
}

/// The message in `record` (either version).
pub fn decode(record: &Bytes) -> BrokerResult<StoredMessage> {
    let undecodable = |e: postcard::Error| BrokerError::Storage(format!("undecodable message record: {e}"));
    match record.first() {
        Some(&RECORD_V2) => {
            let (h, body) = postcard::take_from_bytes::<Header>(&record[1..]).map_err(undecodable)?;
            let body = record.slice(record.len() - body.len()..);
            Ok(StoredMessage {
                msg_id: h.msg_id,
                topic: h.topic,
                tag: h.tag,
                keys: h.keys,
                message_group: h.message_group,
                properties: h.properties,
                kind: h.kind,
                born_timestamp_ms: h.born_timestamp_ms,
                born_host: h.born_host,
                digest: h.digest,
                body,
            })
        }
        Some(&RECORD_V1) => {
            let v: V1 = postcard::from_bytes(&record[1..]).map_err(undecodable)?;
            Ok(StoredMessage {
                msg_id: v.msg_id,
                topic: v.topic,
                tag: v.tag,
                keys: v.keys,
                message_group: v.message_group,
                properties: v.properties,
                kind: v.kind,
                born_timestamp_ms: v.born_timestamp_ms,
                born_host: v.born_host,
                digest: None,
                body: v.body,
            })
        }
        Some(v) => Err(BrokerError::Storage(format!(
            "message record of unknown version {v}"
        ))),
        None => Err(BrokerError::Storage("empty message record".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(digest: Option<BodyDigest>) -> StoredMessage {
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

    #[test]
    fn version_one_records_still_decode() {
        let m = message(None);
        let v1 = V1 {
            msg_id: m.msg_id.clone(),
            topic: m.topic.clone(),
            tag: m.tag.clone(),
            keys: m.keys.clone(),
            message_group: m.message_group.clone(),
            properties: m.properties.clone(),
            kind: m.kind,
            born_timestamp_ms: m.born_timestamp_ms,
            born_host: m.born_host.clone(),
            body: m.body.clone(),
        };
        let mut record = vec![RECORD_V1];
        record.extend(postcard::to_stdvec(&v1).expect("postcard"));
        assert_eq!(decode(&Bytes::from(record)).expect("decode"), m);
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
}
