//! Messages read from their encoding against the model of how the broker took them
//! before: prost's decoding into a protocol `Message`, then each field converted.

use proptest::prelude::*;
use raftmq_proto::prost::Message as _;
use raftmq_proto::prost_types;
use raftmq_proto::rocketmq::v2 as pb;

use super::*;
use crate::message::StoredMessage;

/// The model: prost's decoding of the message, each field taken from it and checked by
/// the same rules, the record laid out from the [`StoredMessage`].
fn model(m: pb::Message, max_body: usize) -> BrokerResult<Bytes> {
    let topic = m.topic.map(|r| r.name).unwrap_or_default();
    keys::validate_topic_name(&topic).map_err(|e| BrokerError::invalid(InvalidCode::IllegalTopic, e))?;
    let sys = m
        .system_properties
        .ok_or_else(|| BrokerError::invalid(InvalidCode::BadRequest, "message without system properties"))?;
    check_message_id(&sys.message_id)?;
    let keys: Vec<&str> = sys.keys.iter().map(String::as_str).collect();
    let names = Names {
        tag: sys.tag.as_deref(),
        keys: &keys,
        message_group: sys.message_group.as_deref(),
        born_host: &sys.born_host,
    };
    names.check()?;
    let props = m.user_properties.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    check_properties(props, names.metadata_bytes())?;
    check_body(&m.body, max_body)?;
    let kind = kind_of(
        sys.delivery_timestamp.is_some(),
        sys.message_type,
        sys.message_group.is_some(),
    )?;
    let digest = sys
        .body_digest
        .filter(|d| BodyDigest::acceptable(d.r#type, &d.checksum))
        .map(|d| BodyDigest {
            kind: d.r#type,
            checksum: d.checksum,
        });
    StoredMessage {
        msg_id: sys.message_id,
        topic,
        tag: sys.tag,
        keys: sys.keys,
        message_group: sys.message_group,
        properties: m.user_properties.into_iter().collect(),
        kind,
        born_timestamp_ms: sys.born_timestamp.map_or(0, |t| timestamp_ms(&t)),
        born_host: sys.born_host,
        digest,
        body: m.body,
    }
    .encode()
}

/// The record of the message encoded as `bytes`, read as a send reads it.
fn read(bytes: &[u8], max_body: usize) -> BrokerResult<Bytes> {
    let m = Parsed::read(Bytes::copy_from_slice(bytes))?.check(max_body)?;
    let mut out = BytesMut::new();
    m.append_record(&mut out)?;
    Ok(out.freeze())
}

/// Both answers the same: the same record, or refusals of the same code.
fn same(got: BrokerResult<Bytes>, want: BrokerResult<Bytes>) -> Result<(), TestCaseError> {
    match (got, want) {
        (Ok(g), Ok(w)) => prop_assert_eq!(g, w),
        (Err(BrokerError::Invalid { code: g, message }), Err(BrokerError::Invalid { code: w, .. })) => {
            prop_assert_eq!(g, w, "{}", message)
        }
        (g, w) => prop_assert!(false, "got {:?}, the model {:?}", g, w),
    }
    Ok(())
}

// Each field is mostly valid, so that most messages are stored and the records compared;
// the rest are refused and the codes compared.

fn name() -> impl Strategy<Value = String> {
    prop_oneof![19 => "[a-zA-Z0-9_%-]{1,12}", 1 => ".{0,4}"]
}

fn timestamp() -> impl Strategy<Value = prost_types::Timestamp> {
    // A zero is not written: a merged timestamp keeps the first one's value of it.
    prop_oneof![
        (0i64..2_000_000_000, 0i32..1_000_000_000),
        (Just(0i64), 0i32..1_000_000_000),
        (0i64..2_000_000_000, Just(0i32)),
        (any::<i64>(), any::<i32>()),
    ]
    .prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos })
}

fn system_properties() -> impl Strategy<Value = pb::SystemProperties> {
    let ids = (
        prop_oneof![19 => "[A-Z0-9]{1,16}", 1 => ".{0,3}"],
        prop_oneof![
            3 => Just(None),
            6 => "[a-zA-Z]{1,6}".prop_map(Some),
            1 => prop_oneof!["[a-z|]{0,3}", " *"].prop_map(Some),
        ],
        prop::collection::vec(prop_oneof![19 => "[a-z]{1,5}", 1 => " ?"], 0..3),
        prop_oneof![
            3 => Just(None),
            3 => "[a-z]{1,4}".prop_map(Some),
            1 => "[a-z]?".prop_map(Some),
        ],
        ".{0,8}",
    );
    let numbers = (
        proptest::option::of((0i32..5, "[0-9A-F]{0,10}")),
        prop_oneof![8 => Just(1i32), 2 => 0i32..3, 1 => any::<i32>()],
        proptest::option::of(timestamp()),
        prop::bool::weighted(0.03),
        any::<i32>(),
        // Fields the broker reads and ignores.
        proptest::option::of(("[a-z]{0,6}", any::<i64>(), any::<i32>())),
    );
    (ids, numbers).prop_map(
        |((id, tag, keys, group, host), (digest, kind, born, delayed, queue, extra))| {
            let (store_host, queue_offset, attempt) = extra.unwrap_or_default();
            pb::SystemProperties {
                tag,
                keys,
                message_id: id,
                body_digest: digest.map(|(r#type, checksum)| pb::Digest { r#type, checksum }),
                message_type: kind,
                born_timestamp: born,
                born_host: host,
                delivery_timestamp: delayed.then(prost_types::Timestamp::default),
                queue_id: queue,
                message_group: group,
                store_host: store_host.clone(),
                trace_context: (!store_host.is_empty()).then_some(store_host),
                queue_offset: (queue_offset != 0).then_some(queue_offset),
                delivery_attempt: (attempt != 0).then_some(attempt),
                invisible_duration: (attempt < 0).then(prost_types::Duration::default),
                ..Default::default()
            }
        },
    )
}

fn message() -> impl Strategy<Value = pb::Message> {
    (
        prop_oneof![19 => ("[a-z]{0,3}", name()).prop_map(Some), 1 => Just(None)],
        prop::collection::hash_map(
            prop_oneof![19 => "[a-c]{1,2}", 1 => "[a-c\\n]{0,2}"],
            ".{0,6}",
            0..4,
        ),
        prop_oneof![19 => system_properties().prop_map(Some), 1 => Just(None)],
        prop::collection::vec(any::<u8>(), 0..40),
    )
        .prop_map(|(topic, user_properties, system_properties, body)| pb::Message {
            topic: topic.map(|(resource_namespace, name)| pb::Resource {
                resource_namespace,
                name,
            }),
            user_properties,
            system_properties,
            body: body.into(),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_message_reads_as_prost_decodes_it(m in message(), max_body in prop_oneof![Just(usize::MAX), 0usize..40]) {
        let bytes = m.encode_to_vec();
        same(read(&bytes, max_body), model(m, max_body))?;
    }

    /// Two encodings one after the other are one message, the second merged into the
    /// first: later values win, embedded messages merge, keys accumulate.
    #[test]
    fn a_message_sent_in_parts_reads_as_prost_merges_it(a in message(), b in message()) {
        let mut bytes = a.encode_to_vec();
        b.encode(&mut bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let merged = pb::Message::decode(bytes.as_slice()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        same(read(&bytes, usize::MAX), model(merged, usize::MAX))?;
    }

    #[test]
    fn the_id_and_queue_are_read_before_the_checks(m in message()) {
        let p = Parsed::read(Bytes::from(m.encode_to_vec())).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let sys = m.system_properties.unwrap_or_default();
        prop_assert_eq!(p.message_id(), sys.message_id.as_str());
        prop_assert_eq!(p.queue_id(), sys.queue_id);
    }
}

fn sample() -> pb::Message {
    pb::Message {
        topic: Some(pb::Resource {
            resource_namespace: String::new(),
            name: "orders".into(),
        }),
        user_properties: [("b".to_owned(), "2".to_owned()), ("a".to_owned(), "1".to_owned())]
            .into_iter()
            .collect(),
        system_properties: Some(pb::SystemProperties {
            tag: Some("TagA".into()),
            keys: vec!["k1".into(), "k2".into()],
            message_id: "01ABC".into(),
            message_group: Some("g".into()),
            born_host: "host".into(),
            queue_id: -3,
            ..Default::default()
        }),
        body: Bytes::from_static(b"the body"),
    }
}

#[test]
fn what_a_send_needs_is_read_from_the_encoding() {
    let m = IncomingMessage::of(&sample()).expect("valid");
    assert_eq!(
        (m.message_id(), m.topic(), m.message_group()),
        ("01ABC", "orders", Some("g"))
    );
    assert_eq!(m.kind(), StoredKind::Fifo);
    assert_eq!(m.tag_hash(), crate::command::tag_hash("TagA"));
    assert_eq!(m.body_len(), 8);
    assert_eq!(m.record_capacity(), 64 + 5 + 6 + 8);
    let mut record = BytesMut::new();
    m.append_record(&mut record).expect("record");
    let stored = StoredMessage::decode(&record.freeze()).expect("decode");
    let props: Vec<_> = stored.properties.iter().collect();
    assert_eq!(
        props,
        [
            (&"a".to_owned(), &"1".to_owned()),
            (&"b".to_owned(), &"2".to_owned())
        ]
    );
    assert_eq!(stored.body, &b"the body"[..]);
    let p = Parsed::read(Bytes::from(sample().encode_to_vec())).expect("read");
    assert_eq!(p.queue_id(), -3);
}

#[test]
fn a_repeated_property_keeps_its_last_value() {
    let mut bytes = sample().encode_to_vec();
    let entry = |k: &str, v: &str| {
        let mut e = Vec::new();
        raftmq_proto::prost::encoding::string::encode(1, &k.to_owned(), &mut e);
        raftmq_proto::prost::encoding::string::encode(2, &v.to_owned(), &mut e);
        e
    };
    for (k, v) in [("a", "x"), ("c", "3"), ("a", "y")] {
        raftmq_proto::prost::encoding::bytes::encode(2, &entry(k, v), &mut bytes);
    }
    let record = read(&bytes, usize::MAX).expect("valid");
    let stored = StoredMessage::decode(&record).expect("decode");
    let props: Vec<(&str, &str)> = stored
        .properties
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(props, [("a", "y"), ("b", "2"), ("c", "3")]);
}

#[test]
fn unreadable_encodings_are_bad_requests() {
    let bad_request = |bytes: &[u8]| match Parsed::read(Bytes::copy_from_slice(bytes)) {
        Err(BrokerError::Invalid { code, message }) => {
            assert_eq!(code, InvalidCode::BadRequest, "{message}");
            assert!(message.starts_with("malformed message encoding"), "{message}");
        }
        other => panic!("{bytes:?}: expected a refusal, got {other:?}"),
    };
    bad_request(&[0x08, 0x01]); // topic as a varint
    bad_request(&[0x0a, 0x02, 0x12, 0x05]); // topic's name cut short
    bad_request(&[0x1a, 0x03, 0x1a, 0x01, 0xff]); // message id not UTF-8
    bad_request(&[0x1a, 0x02, 0x30, 0x80]); // message type's varint cut short
    bad_request(&[0x1a, 0x02, 0x52, 0x00][..3]); // store_host's length past the end
    // Unknown fields, at the top and inside, are skipped.
    let mut bytes = sample().encode_to_vec();
    bytes.extend_from_slice(&[0x78, 0x01]); // field 15, varint
    assert!(read(&bytes, usize::MAX).is_ok());
}
