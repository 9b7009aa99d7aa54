//! Tests of [`super`]: validation, the record and the wire.

use super::*;

fn wire(body: &[u8]) -> pb::Message {
    pb::Message {
        topic: Some(pb::Resource {
            resource_namespace: String::new(),
            name: "orders".into(),
        }),
        user_properties: [("k".to_owned(), "v".to_owned())].into_iter().collect(),
        system_properties: Some(pb::SystemProperties {
            tag: Some("TagA".into()),
            keys: vec!["key-1".into()],
            message_id: "01ABCDEF".into(),
            born_timestamp: Some(timestamp(1_700_000_000_123)),
            born_host: "host".into(),
            ..Default::default()
        }),
        body: body.to_vec().into(),
    }
}

#[test]
fn roundtrips_through_the_record_and_the_wire() {
    let m = StoredMessage::from_wire(wire(b"hello"), 4 << 20).expect("valid");
    let back = StoredMessage::decode(&m.encode().expect("encode")).expect("decode");
    assert_eq!(back, m);
    let out = m.clone().into_wire(Delivery {
        queue_id: 3,
        queue_offset: 9,
        store_time_ms: 5,
        ..Default::default()
    });
    let sys = out.system_properties.expect("sys");
    assert_eq!(
        sys.body_digest.expect("digest").checksum,
        "5D41402ABC4B2A76B9719D911017C592"
    );
    assert_eq!((sys.queue_id, sys.queue_offset), (3, Some(9)));
    assert_eq!(
        sys.born_timestamp.map(|t| timestamp_ms(&t)),
        Some(1_700_000_000_123)
    );
    assert_eq!(out.body, &b"hello"[..]);
    assert_eq!(m.tag_hash(), crate::command::tag_hash("TagA"));
}

#[test]
fn the_producers_digest_is_kept_and_handed_to_consumers() {
    let with = |kind: i32, checksum: &str| {
        let mut w = wire(b"hello");
        if let Some(sys) = w.system_properties.as_mut() {
            sys.body_digest = Some(pb::Digest {
                r#type: kind,
                checksum: checksum.into(),
            });
        }
        let m = StoredMessage::from_wire(w, 1024).expect("valid");
        let m = StoredMessage::decode(&m.encode().expect("encode")).expect("decode");
        let to_java = Delivery {
            digest_form: DigestForm::Crc32Unpadded,
            ..Delivery::default()
        };
        let d = m.into_wire(to_java).system_properties.and_then(|s| s.body_digest);
        d.map(|d| (d.r#type, d.checksum))
    };
    let md5 = |c: &str| Some((pb::DigestType::Md5 as i32, c.to_owned()));
    assert_eq!(
        with(pb::DigestType::Crc32 as i32, "3610A686"),
        Some((1, "3610A686".into()))
    );
    // Kept as sent, even when wrong: the consumer's check is what catches a damaged body.
    assert_eq!(with(pb::DigestType::Md5 as i32, "00FF"), md5("00FF"));
    // Unknown type or empty checksum: the broker computes one at delivery.
    assert_eq!(with(0, "x"), Some((1, "3610A686".into())));
    assert_eq!(with(2, ""), Some((1, "3610A686".into())));
}

#[test]
fn bad_messages_get_their_codes() {
    let code = |m: pb::Message, max| match StoredMessage::from_wire(m, max) {
        Err(BrokerError::Invalid { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(code(wire(b"12345"), 4), InvalidCode::BodyTooLarge);
    assert_eq!(code(wire(b""), 4), InvalidCode::BodyEmpty);
    let mut m = wire(b"x");
    m.topic = Some(pb::Resource {
        resource_namespace: String::new(),
        name: "bad topic".into(),
    });
    assert_eq!(code(m, 4), InvalidCode::IllegalTopic);
    let mut m = wire(b"x");
    if let Some(s) = m.system_properties.as_mut() {
        s.tag = Some("a|b".into());
    }
    assert_eq!(code(m, 4), InvalidCode::IllegalTag);
    let mut m = wire(b"x");
    if let Some(s) = m.system_properties.as_mut() {
        s.message_id.clear();
    }
    assert_eq!(code(m, 4), InvalidCode::IllegalMessageId);
    let mut m = wire(b"x");
    m.system_properties = None;
    assert_eq!(code(m, 4), InvalidCode::BadRequest);
    assert!(StoredMessage::decode(&Bytes::from_static(&[9, 1, 2])).is_err());
    assert!(StoredMessage::decode(&Bytes::new()).is_err());
}

fn refusal(m: pb::Message) -> (InvalidCode, String) {
    match StoredMessage::from_wire(m, 4 << 20) {
        Err(BrokerError::Invalid { code, message }) => (code, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn metadata_is_capped_per_message() {
    let with_sys = |f: &dyn Fn(&mut pb::SystemProperties)| {
        let mut m = wire(b"x");
        if let Some(s) = m.system_properties.as_mut() {
            f(s);
        }
        m
    };
    // The review's message: 33,000 keys of 1 KiB.
    let (code, msg) = refusal(with_sys(&|s| s.keys = vec!["k".repeat(1024); 33_000]));
    assert_eq!(code, InvalidCode::IllegalKey);
    assert!(msg.contains("at most 64 keys"), "{msg}");
    let (code, _) = refusal(with_sys(&|s| s.keys = vec!["k".into(); MAX_KEYS + 1]));
    assert_eq!(code, InvalidCode::IllegalKey);
    let max_keys = with_sys(&|s| s.keys = vec!["k".into(); MAX_KEYS]);
    assert!(StoredMessage::from_wire(max_keys, 4 << 20).is_ok());

    // Keys, tag, group and user properties count together: 17 keys of 1 KiB.
    let (code, _) = refusal(with_sys(&|s| s.keys = vec!["k".repeat(1024); 17]));
    assert_eq!(code, InvalidCode::PropertiesTooLarge);
    let mut m = with_sys(&|s| {
        s.keys = vec!["k".repeat(1024); 8];
        s.message_group = Some("g".repeat(1024));
    });
    m.user_properties = (0..8).map(|i| (format!("p{i}"), "v".repeat(1000))).collect();
    let (code, msg) = refusal(m.clone());
    assert_eq!(code, InvalidCode::PropertiesTooLarge, "{msg}");
    m.user_properties.remove("p0");
    assert!(
        StoredMessage::from_wire(m, 4 << 20).is_ok(),
        "just under the limit"
    );
    let (code, _) = refusal(with_sys(&|s| s.born_host = "h".repeat(MAX_NAME_LEN + 1)));
    assert_eq!(code, InvalidCode::BadRequest);
}

#[test]
fn absurd_times_saturate_instead_of_overflowing() {
    let ts = |seconds, nanos| timestamp_ms(&prost_types::Timestamp { seconds, nanos });
    assert_eq!(ts(i64::MAX, 999_999_999), i64::MAX as u64);
    assert_eq!(ts(i64::MAX, 0), i64::MAX as u64);
    assert_eq!(
        ts(i64::MAX / 1000, 999_999_999),
        i64::MAX as u64,
        "the nanos overflow"
    );
    assert_eq!(ts(i64::MIN, -999_999_999), 0);
    assert_eq!(ts(i64::MIN, 999_999_999), 0);
    assert_eq!(ts(0, -1_000_000), 0, "before the epoch");
    assert_eq!(ts(1, -500_000_000), 500);
    assert_eq!(ts(1_700_000_000, 123_000_000), 1_700_000_000_123);

    let d = |seconds, nanos| duration_ms(&prost_types::Duration { seconds, nanos });
    assert_eq!(d(i64::MAX, 999_999_999), None);
    assert_eq!(d(i64::MIN, -999_999_999), None);
    assert_eq!(d(0, -1_000_000), None);
    assert_eq!(d(i64::MAX / 1000, 999_999_999), None, "the nanos overflow");
    assert_eq!(d(i64::MAX / 1000, 0), Some((i64::MAX / 1000 * 1000) as u64));
    assert_eq!(d(2, 5_000_000), Some(2_005));

    let mut m = wire(b"x");
    if let Some(s) = m.system_properties.as_mut() {
        s.born_timestamp = Some(prost_types::Timestamp {
            seconds: i64::MAX,
            nanos: 999_999_999,
        });
    }
    let stored = StoredMessage::from_wire(m, 4).expect("valid");
    assert_eq!(stored.born_timestamp_ms, i64::MAX as u64);
    let back = stored.into_wire(Delivery::default());
    assert!(back.system_properties.and_then(|s| s.born_timestamp).is_some());
}
