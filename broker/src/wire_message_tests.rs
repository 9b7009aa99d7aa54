//! The hand-written encoder against prost's encoding of `StoredMessage::into_wire`.

use std::collections::BTreeMap;

use bytes::Bytes;
use bytes::BytesMut;
use proptest::prelude::*;
use raftmq_proto::prost::Message as _;
use raftmq_proto::rocketmq::v2 as pb;

use super::*;
use crate::error::BrokerError;
use crate::message::BodyDigest;
use crate::message::Delivery;
use crate::message::StoredKind;
use crate::message::StoredMessage;

/// The bytes a client receives for an encoded message.
fn joined(e: &EncodedMessage) -> Vec<u8> {
    [&e.head[..], &e.body[..]].concat()
}

/// What `into_wire` gives for `m` delivered at `p`.
fn expected(m: &StoredMessage, p: &Placement<'_>) -> pb::Message {
    m.clone().into_wire(Delivery {
        queue_id: p.queue_id,
        queue_offset: p.queue_offset,
        store_time_ms: p.store_time_ms,
        store_host: p.store_host.to_owned(),
        digest_form: p.digest_form,
        ..Default::default()
    })
}

fn check(m: &StoredMessage, p: &Placement<'_>) -> Result<(), TestCaseError> {
    let record = m.encode().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut heads = BytesMut::new();
    let e = encode(&record, p, &mut heads).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let want = expected(m, p);
    let got = joined(&e);
    prop_assert_eq!(pb::Message::decode(got.as_slice()).ok(), Some(want.clone()));
    // prost writes a map in its hash order: bytes compare only with one entry at most.
    if m.properties.len() <= 1 {
        prop_assert_eq!(got, want.encode_to_vec());
    }
    Ok(())
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-zA-Z0-9_.:-]{1,12}", "\\PC{0,6}"]
}

fn digest() -> impl Strategy<Value = Option<BodyDigest>> {
    let checksum = prop_oneof![
        "[0-9A-Fa-f]{1,8}".boxed(),
        "[0-9A-F]{32}".boxed(),
        Just(" 1a ".to_owned()).boxed(),
        "\\PC{0,10}".boxed()
    ];
    proptest::option::of((1..=3i32, checksum).prop_map(|(kind, checksum)| BodyDigest { kind, checksum }))
}

fn stored_message() -> impl Strategy<Value = StoredMessage> {
    (
        (
            "[A-Z0-9]{1,32}",
            "[a-zA-Z0-9_-]{1,20}",
            proptest::option::of(text()),
            proptest::collection::vec(text(), 0..3),
            proptest::option::of(text()),
        ),
        (
            proptest::collection::btree_map(text(), text(), 0..4),
            any::<bool>(),
            any::<u64>(),
            text(),
            digest(),
            proptest::collection::vec(any::<u8>(), 0..1500),
        ),
    )
        .prop_map(
            |((msg_id, topic, tag, keys, group), (properties, fifo, born, born_host, digest, body))| {
                StoredMessage {
                    msg_id,
                    topic,
                    tag,
                    keys,
                    message_group: group,
                    properties,
                    kind: if fifo {
                        StoredKind::Fifo
                    } else {
                        StoredKind::Normal
                    },
                    born_timestamp_ms: born,
                    born_host,
                    digest,
                    body: Bytes::from(body),
                }
            },
        )
}

fn form() -> impl Strategy<Value = DigestForm> {
    prop_oneof![
        Just(DigestForm::Crc32Unpadded),
        Just(DigestForm::Crc32Padded),
        Just(DigestForm::Md5)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn encodes_what_into_wire_gives(
        m in stored_message(),
        queue_id in prop_oneof![Just(0u32), 0..64u32, Just(u32::MAX)],
        queue_offset in prop_oneof![Just(0u64), any::<u64>()],
        store_time_ms in prop_oneof![Just(0u64), 0..2_000_000_000_000u64, any::<u64>()],
        store_host in text(),
        digest_form in form(),
    ) {
        let p = Placement { queue_id, queue_offset, store_time_ms, store_host: &store_host, digest_form };
        check(&m, &p)?;
    }
}

fn sample() -> StoredMessage {
    crate::message_record::tests::message(None)
}

fn placement(store_host: &str) -> Placement<'_> {
    Placement {
        queue_id: 3,
        queue_offset: 41,
        store_time_ms: 1_700_000_000_123,
        store_host,
        digest_form: DigestForm::Crc32Padded,
    }
}

#[test]
fn version_one_records_encode_too() {
    let record = crate::message_record::tests::v1_record();
    let p = placement("10.0.0.1:8081");
    let e = encode(&record, &p, &mut BytesMut::new()).expect("encode");
    assert_eq!(joined(&e), expected(&sample(), &p).encode_to_vec());
}

#[test]
fn bodies_are_the_records_and_heads_share_one_buffer() {
    let p = placement("host:1");
    let records: Vec<Bytes> = (0..3)
        .map(|i| {
            let m = StoredMessage {
                msg_id: format!("id-{i}"),
                ..sample()
            };
            m.encode().expect("encode")
        })
        .collect();
    let mut heads = BytesMut::with_capacity(3 * HEAD_BYTES);
    let start = heads.as_ptr() as usize;
    let encoded: Vec<EncodedMessage> = records
        .iter()
        .map(|r| encode(r, &p, &mut heads).expect("encode"))
        .collect();
    let mut at = start;
    for (e, r) in encoded.iter().zip(&records) {
        assert_eq!(
            e.head.as_ptr() as usize,
            at,
            "heads follow each other in one buffer"
        );
        at += e.head.len();
        assert_eq!(
            e.body.as_ptr() as usize + e.body.len(),
            r.as_ptr() as usize + r.len(),
            "the body is the record's tail, not a copy"
        );
    }
}

#[test]
fn damaged_records_are_storage_errors() {
    let record = sample().encode().expect("encode");
    let p = placement("h");
    for bad in [Bytes::new(), record.slice(..6), Bytes::from_static(&[9, 1, 2])] {
        assert!(
            matches!(
                encode(&bad, &p, &mut BytesMut::new()),
                Err(BrokerError::Storage(_))
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn messages_with_many_properties_decode_the_same() {
    let m = StoredMessage {
        properties: (0..20)
            .map(|i| (format!("k{i}"), format!("v{i}")))
            .collect::<BTreeMap<_, _>>(),
        message_group: Some("g".into()),
        kind: StoredKind::Fifo,
        ..sample()
    };
    check(&m, &placement("h")).expect("same message");
}
