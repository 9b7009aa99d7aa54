//! Encode/decode checks of the generated types, including hand-built wire bytes that
//! pin field numbers fixed by the protocol.

use std::collections::HashMap;

use prost::Message as _;

use crate::rocketmq::v2::{
    Broker, Code, Digest, DigestType, Encoding, Endpoints, Message, MessageQueue, MessageType, Permission,
    QueryRouteResponse, Resource, SendMessageRequest, Status, SystemProperties, TelemetryCommand,
    telemetry_command,
};

fn sample_message() -> Message {
    Message {
        topic: Some(Resource {
            resource_namespace: String::new(),
            name: "orders".into(),
        }),
        user_properties: HashMap::from([("k".to_string(), "v".to_string())]),
        system_properties: Some(SystemProperties {
            tag: Some("TagA".into()),
            keys: vec!["key-1".into()],
            message_id: "01ABCDEF".into(),
            body_digest: Some(Digest {
                r#type: DigestType::Md5 as i32,
                checksum: "ABC".into(),
            }),
            body_encoding: Encoding::Identity as i32,
            message_type: MessageType::Fifo as i32,
            born_timestamp: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
            message_group: Some("g1".into()),
            queue_offset: Some(0),
            ..Default::default()
        }),
        body: b"hello".to_vec().into(),
    }
}

#[test]
fn send_message_request_round_trips() {
    let req = SendMessageRequest {
        messages: vec![sample_message(), Message::default()],
    };
    let bytes = req.encode_to_vec();
    let back = SendMessageRequest::decode(bytes.as_slice()).expect("decode");
    assert_eq!(back, req);
    // proto3 `optional` keeps presence: an explicit zero survives, an absent field stays absent.
    let sp = back.messages[0]
        .system_properties
        .as_ref()
        .expect("system properties");
    assert_eq!(sp.queue_offset, Some(0));
    assert_eq!(sp.delivery_attempt, None);
}

#[test]
fn query_route_response_round_trips() {
    let resp = QueryRouteResponse {
        status: Some(Status {
            code: Code::Ok as i32,
            message: "OK".into(),
        }),
        message_queues: (0..2)
            .map(|id| MessageQueue {
                topic: Some(Resource {
                    resource_namespace: String::new(),
                    name: "orders".into(),
                }),
                id,
                permission: Permission::ReadWrite as i32,
                broker: Some(Broker {
                    name: "broker-a".into(),
                    id: 0,
                    endpoints: Some(Endpoints {
                        scheme: crate::rocketmq::v2::AddressScheme::IPv4 as i32,
                        addresses: vec![crate::rocketmq::v2::Address {
                            host: "127.0.0.1".into(),
                            port: 8081,
                        }],
                    }),
                }),
                accept_message_types: vec![MessageType::Normal as i32, MessageType::Fifo as i32],
            })
            .collect(),
    };
    let back = QueryRouteResponse::decode(resp.encode_to_vec().as_slice()).expect("decode");
    assert_eq!(back, resp);
    assert_eq!(back.status.as_ref().map(|s| s.code()), Some(Code::Ok));
    assert_eq!(back.message_queues[1].permission(), Permission::ReadWrite);
}

/// Appends a length-delimited field (wire type 2).
fn put_len(buf: &mut Vec<u8>, field: u32, data: &[u8]) {
    prost::encoding::encode_key(field, prost::encoding::WireType::LengthDelimited, buf);
    prost::encoding::encode_varint(data.len() as u64, buf);
    buf.extend_from_slice(data);
}

#[test]
fn key_field_numbers_match_the_protocol() {
    // Message { topic(1): Resource { name(2): "orders" }, body(4): "hello" } built by hand.
    let mut resource = Vec::new();
    put_len(&mut resource, 2, b"orders");
    let mut wire = Vec::new();
    put_len(&mut wire, 1, &resource);
    put_len(&mut wire, 4, b"hello");

    let msg = Message::decode(wire.as_slice()).expect("decode hand-built Message");
    assert_eq!(msg.topic.as_ref().map(|t| t.name.as_str()), Some("orders"));
    assert_eq!(msg.body, &b"hello"[..]);

    // And our encoder produces exactly those bytes.
    let ours = Message {
        topic: Some(Resource {
            resource_namespace: String::new(),
            name: "orders".into(),
        }),
        body: b"hello".to_vec().into(),
        ..Default::default()
    };
    assert_eq!(ours.encode_to_vec(), wire);

    // SendMessageRequest.messages is field 1.
    let mut req = Vec::new();
    put_len(&mut req, 1, &wire);
    let decoded = SendMessageRequest::decode(req.as_slice()).expect("decode request");
    assert_eq!(decoded.messages, vec![msg]);

    // Status.code (1) is a varint enum; OK = 20000.
    let status = Status {
        code: Code::Ok as i32,
        message: String::new(),
    };
    let mut expect = Vec::new();
    prost::encoding::encode_key(1, prost::encoding::WireType::Varint, &mut expect);
    prost::encoding::encode_varint(20000, &mut expect);
    assert_eq!(status.encode_to_vec(), expect);

    // SystemProperties: message_id is 3, body_digest 4, body_encoding 5 (IDENTITY = 1).
    let sp = SystemProperties {
        message_id: "id".into(),
        body_encoding: Encoding::Identity as i32,
        ..Default::default()
    };
    let mut expect = Vec::new();
    put_len(&mut expect, 3, b"id");
    prost::encoding::encode_key(5, prost::encoding::WireType::Varint, &mut expect);
    prost::encoding::encode_varint(1, &mut expect);
    assert_eq!(sp.encode_to_vec(), expect);

    // TelemetryCommand.settings is oneof member 2.
    let cmd = TelemetryCommand {
        status: None,
        command: Some(telemetry_command::Command::Settings(Default::default())),
    };
    let mut expect = Vec::new();
    put_len(&mut expect, 2, &[]);
    assert_eq!(cmd.encode_to_vec(), expect);
}

#[test]
fn grpc_paths_and_descriptor_set_are_as_the_clients_expect() {
    assert_eq!(
        crate::rocketmq::v2::messaging_service_server::SERVICE_NAME,
        "apache.rocketmq.v2.MessagingService"
    );
    let fds = prost_types::FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET).expect("fds");
    let service = fds
        .file
        .iter()
        .flat_map(|f| f.service.iter())
        .find(|s| s.name() == "MessagingService")
        .expect("MessagingService in descriptor set");
    let methods: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
    for m in [
        "QueryRoute",
        "SendMessage",
        "ReceiveMessage",
        "AckMessage",
        "Telemetry",
    ] {
        assert!(methods.contains(&m), "{m} missing from {methods:?}");
    }
    let telemetry = service
        .method
        .iter()
        .find(|m| m.name() == "Telemetry")
        .expect("Telemetry");
    assert!(telemetry.client_streaming() && telemetry.server_streaming());
}

#[test]
fn raft_service_shape() {
    use crate::raftmq::raft::v1 as raft;
    assert_eq!(
        raft::raft_service_server::SERVICE_NAME,
        "raftmq.raft.v1.RaftService"
    );
    let fds = prost_types::FileDescriptorSet::decode(crate::INTERNAL_FILE_DESCRIPTOR_SET).expect("fds");
    let service = fds
        .file
        .iter()
        .flat_map(|f| f.service.iter())
        .find(|s| s.name() == "RaftService")
        .expect("RaftService in the internal descriptor set");
    let method = |name: &str| {
        service
            .method
            .iter()
            .find(|m| m.name() == name)
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    // Pipelined replication travels on the broker's replication links, not on this service.
    assert!(service.method.iter().all(|m| m.name() != "Append"));
    let snapshot = method("InstallSnapshot");
    assert!(snapshot.client_streaming() && !snapshot.server_streaming());
    for unary in ["AppendEntries", "Vote", "PreVote", "TransferLeader"] {
        let m = method(unary);
        assert!(
            !m.client_streaming() && !m.server_streaming(),
            "{unary} must be unary"
        );
    }
    // The client protocol's descriptor set must not advertise the internal service.
    let public = prost_types::FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET).expect("fds");
    assert!(public.file.iter().all(|f| !f.package().starts_with("raftmq")));
    // Payloads are zero-copy `Bytes`.
    let req = raft::AppendRequest {
        payload: prost::bytes::Bytes::from_static(b"x"),
        commands: vec![prost::bytes::Bytes::from_static(b"y")],
    };
    assert_eq!(req.payload.len(), 1);
}
