use raftmq_proto::prost::Message as _;

use super::*;

fn concat(parts: &[Bytes]) -> BytesMut {
    let mut out = BytesMut::new();
    for p in parts {
        out.put_slice(p);
    }
    out
}

#[test]
fn frames_come_off_whole_and_in_order_however_the_bytes_arrive() {
    let mut wire = BytesMut::new();
    put_frame(&mut wire, Kind::Accept, b"");
    put_frame(&mut wire, Kind::Answer, &[7u8; 300]);
    put_frame(&mut wire, Kind::Refuse, b"bye");
    let wire = wire.freeze();

    // Fed one byte at a time: nothing until a frame is complete, then exactly it.
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for b in wire.iter() {
        buf.put_u8(*b);
        while let Some(f) = parse(&mut buf, 1024).expect("valid") {
            got.push(f);
        }
    }
    assert_eq!(
        got,
        vec![
            (Kind::Accept, Bytes::new()),
            (Kind::Answer, Bytes::from(vec![7u8; 300])),
            (Kind::Refuse, Bytes::from_static(b"bye")),
        ]
    );
    assert!(buf.is_empty());
}

#[test]
fn a_bad_kind_an_oversized_body_or_a_flipped_bit_is_refused() {
    let mut frame = BytesMut::new();
    put_frame(&mut frame, Kind::Answer, b"hello");

    let mut bad_kind = frame.clone();
    bad_kind[0] = 9;
    assert_eq!(parse(&mut bad_kind, 1024), Err(FrameError::UnknownKind(9)));

    let mut big = frame.clone();
    assert_eq!(parse(&mut big, 4), Err(FrameError::TooLarge { len: 5, max: 4 }));

    let mut flipped = frame.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert!(matches!(
        parse(&mut flipped, 1024),
        Err(FrameError::Checksum { .. })
    ));

    // The limit applies before the body arrives: a header alone is enough to refuse.
    let mut header_only = BytesMut::from(&frame[..HEADER_LEN]);
    assert!(matches!(
        parse(&mut header_only, 4),
        Err(FrameError::TooLarge { .. })
    ));
}

#[test]
fn an_append_frame_carries_exactly_protobufs_encoding() {
    let sizes = [0usize, 1, 127, 128, 16_383, 16_384, 300_000];
    let msg = pb::AppendRequest {
        payload: Bytes::from(vec![1u8; 200]),
        commands: sizes.iter().map(|&n| Bytes::from(vec![n as u8; n])).collect(),
    };
    let parts = append_parts(&msg);
    let mut wire = concat(&parts);
    let (kind, body) = parse(&mut wire, 1 << 20).expect("valid").expect("whole");
    assert_eq!(kind, Kind::Append);
    assert_eq!(&body[..], &msg.encode_to_vec()[..]);
    assert_eq!(pb::AppendRequest::decode(body).expect("decodes"), msg);

    // The commands travel as shared buffers, not copies.
    let shared = parts.iter().any(|p| p.as_ptr() == msg.commands[6].as_ptr());
    assert!(shared, "the largest command is sent from its own buffer");
}

#[test]
fn an_append_without_payload_or_commands_still_round_trips() {
    for msg in [
        pb::AppendRequest::default(),
        pb::AppendRequest {
            payload: Bytes::new(),
            commands: vec![Bytes::new(), Bytes::from_static(b"x")],
        },
    ] {
        let mut wire = concat(&append_parts(&msg));
        let (_, body) = parse(&mut wire, 1024).expect("valid").expect("whole");
        assert_eq!(&body[..], &msg.encode_to_vec()[..]);
    }
}
