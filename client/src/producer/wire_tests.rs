//! The hand-written encoder against prost's encoding of `Message::to_wire`.

use std::collections::BTreeMap;

use bytes::Bytes;
use bytes::BytesMut;
use proptest::prelude::*;
use raftmq_proto::prost::Message as _;
use raftmq_proto::rocketmq::v2 as pb;

use super::*;
use crate::rpc::host_name;

/// The bytes a broker receives for an encoded message.
fn joined(e: &EncodedMessage) -> Vec<u8> {
    [&e.head[..], &e.body[..]].concat()
}

fn stamp(namespace: &str, queue_id: i32, born: Timestamp) -> Stamp<'_> {
    Stamp {
        namespace,
        queue_id,
        born,
        host: host_name(),
    }
}

fn check(m: &Message, id: &str, s: &Stamp<'_>) -> Result<(), TestCaseError> {
    let mut heads = BytesMut::new();
    let e = encode(m, id, s, &mut heads);
    let want = m.to_wire(s.namespace, id, s.queue_id, s.born);
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

fn message() -> impl Strategy<Value = Message> {
    let body = prop_oneof![
        Just(Vec::new()),
        prop::collection::vec(any::<u8>(), 1..64),
        prop::collection::vec(any::<u8>(), 200..400),
    ];
    (
        text(),
        body,
        proptest::option::of(text()),
        prop::collection::vec(text(), 0..3),
        prop::collection::btree_map(text(), text(), 0..4),
        proptest::option::of(text()),
    )
        .prop_map(|(topic, body, tag, keys, properties, message_group)| Message {
            topic,
            body: Bytes::from(body),
            tag,
            keys,
            properties,
            message_group,
        })
}

fn born() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        Just(Timestamp::default()),
        (any::<i64>(), any::<i32>()).prop_map(|(seconds, nanos)| Timestamp { seconds, nanos }),
        (0..4_000_000_000i64, 0..1_000_000_000i32).prop_map(|(seconds, nanos)| Timestamp { seconds, nanos }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn encodes_as_prost_encodes_to_wire(
        m in message(),
        id in text(),
        namespace in text(),
        queue_id in prop_oneof![Just(0), Just(-1), any::<i32>(), 0..16i32],
        born in born(),
    ) {
        check(&m, &id, &stamp(&namespace, queue_id, born))?;
    }
}

#[test]
fn a_typical_message_encodes_byte_for_byte() {
    let m = Message::new("orders", "hello")
        .with_tag("t1")
        .with_property("k", "v")
        .with_message_group("customer-7");
    let born = Timestamp {
        seconds: 1_700_000_000,
        nanos: 5,
    };
    let s = stamp("ns", 3, born);
    let mut heads = BytesMut::new();
    let e = encode(&m, "ID1", &s, &mut heads);
    assert_eq!(joined(&e), m.to_wire("ns", "ID1", 3, born).encode_to_vec());
    let mut keys = Message::new("orders", "x");
    keys.keys = vec!["a".into(), String::new(), "c".into()];
    keys.properties = BTreeMap::from([(String::new(), String::new())]);
    let e = encode(&keys, "", &s, &mut heads);
    assert_eq!(joined(&e), keys.to_wire("ns", "", 3, born).encode_to_vec());
}

#[test]
fn heads_share_one_buffer_and_bodies_are_the_messages() {
    let messages: Vec<Message> = (0..50)
        .map(|i| Message::new("orders", vec![i as u8; 1024]).with_tag(format!("tag-{i}")))
        .collect();
    let s = stamp("", 5, Timestamp::default());
    let mut heads = BytesMut::with_capacity(messages.len() * HEAD_BYTES);
    let start = heads.as_ptr();
    let encoded: Vec<EncodedMessage> = messages.iter().map(|m| encode(m, "ID", &s, &mut heads)).collect();
    let mut at = start;
    for (e, m) in encoded.iter().zip(&messages) {
        assert_eq!(e.head.as_ptr(), at, "heads follow each other in one allocation");
        at = at.wrapping_add(e.head.len());
        assert_eq!(e.body.as_ptr(), m.body.as_ptr(), "the body is shared, not copied");
        assert!(
            e.head.len() <= HEAD_BYTES,
            "a typical head fits the room reserved"
        );
    }
}
