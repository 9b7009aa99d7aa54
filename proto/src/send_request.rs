//! A `SendMessageRequest` whose messages the client encoded itself.
//!
//! On the wire it is the protocol's request (`service.proto`: `repeated Message messages
//! = 1`). The generated type holds each message as a `Message` value: a producer built
//! one per message for every attempt (a dozen strings allocated, then freed once prost
//! encoded them), and cloned the whole request to keep it for a retry. Here each message
//! is an [`EncodedMessage`] written straight from the producer's message, and a clone
//! shares their bytes.
//!
//! It is only sent: the service's generated code keeps the generated type for both ends,
//! and the client calls the method through [`crate::codec::BulkCodec`] with this type.
//! Decoding one (tests, tools) keeps each message as its encoded bytes.

use prost::DecodeError;
use prost::bytes::Buf;
use prost::bytes::BufMut;
use prost::encoding::DecodeContext;
use prost::encoding::WireType;

use crate::encoded_message::EncodedMessage;

/// Field number of `messages`.
const MESSAGES: u32 = 1;

/// The full name of the method the request is sent to, as gRPC paths it.
pub const SEND_MESSAGE_PATH: &str = "/apache.rocketmq.v2.MessagingService/SendMessage";

/// A `SendMessageRequest` of messages encoded ahead.
#[derive(Clone, PartialEq, Eq, Default, Debug)]
pub struct EncodedSendRequest {
    pub messages: Vec<EncodedMessage>,
}

impl prost::Message for EncodedSendRequest {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        for m in &self.messages {
            m.encode_field(MESSAGES, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if tag != MESSAGES {
            return prost::encoding::skip_field(wire_type, tag, buf, ctx);
        }
        let mut head = prost::bytes::Bytes::new();
        prost::encoding::bytes::merge(wire_type, &mut head, buf, ctx)?;
        self.messages.push(EncodedMessage {
            head,
            body: prost::bytes::Bytes::new(),
        });
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.messages.iter().map(|m| m.field_len(MESSAGES)).sum()
    }

    fn clear(&mut self) {
        self.messages.clear();
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use prost::bytes::Bytes;

    use super::*;
    use crate::rocketmq::v2 as pb;

    fn message(id: &str, body: &'static [u8]) -> pb::Message {
        pb::Message {
            topic: Some(pb::Resource {
                resource_namespace: "ns".into(),
                name: "orders".into(),
            }),
            user_properties: [("k".to_owned(), "v".to_owned())].into_iter().collect(),
            system_properties: Some(pb::SystemProperties {
                message_id: id.into(),
                queue_id: 3,
                ..Default::default()
            }),
            body: Bytes::from_static(body),
        }
    }

    /// `m` encoded ahead, cut where its body starts.
    fn encoded(m: &pb::Message) -> EncodedMessage {
        let whole = m.encode_to_vec();
        let body_at = whole.len() - m.body.len();
        EncodedMessage {
            head: Bytes::copy_from_slice(&whole[..body_at]),
            body: m.body.clone(),
        }
    }

    #[test]
    fn is_sent_as_the_generated_request_of_the_same_messages() {
        let messages = vec![
            message("A", b"first"),
            message("B", b""),
            message("C", b"third body"),
        ];
        let generated = pb::SendMessageRequest {
            messages: messages.clone(),
        };
        let ours = EncodedSendRequest {
            messages: messages.iter().map(encoded).collect(),
        };
        let bytes = ours.encode_to_vec();
        assert_eq!(bytes, generated.encode_to_vec());
        assert_eq!(ours.encoded_len(), bytes.len());
        assert_eq!(
            pb::SendMessageRequest::decode(bytes.as_slice()).expect("decode"),
            generated
        );
        assert!(EncodedSendRequest::default().encode_to_vec().is_empty());
    }

    #[test]
    fn decoding_keeps_each_message_as_its_bytes() {
        let messages = vec![message("A", b"first"), message("B", b"second")];
        let mut bytes = pb::SendMessageRequest {
            messages: messages.clone(),
        }
        .encode_to_vec();
        // An unknown field 9 (varint 1) is skipped.
        bytes.extend_from_slice(&[9 << 3, 1]);
        let back = EncodedSendRequest::decode(bytes.as_slice()).expect("decode");
        assert_eq!(back.messages.len(), 2);
        for (e, m) in back.messages.iter().zip(&messages) {
            assert_eq!(e.head.as_ref(), m.encode_to_vec().as_slice());
            assert!(e.body.is_empty());
        }
        assert_eq!(
            back.encode_to_vec()[..],
            bytes[..bytes.len() - 2],
            "re-encodes to what it was"
        );
        assert!(EncodedSendRequest::decode(&[MESSAGES as u8 * 8 + 2, 50, 1][..]).is_err());
    }
}
