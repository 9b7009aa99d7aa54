//! `PullMessageResponse`, written by hand instead of generated, so that the broker can
//! answer a pull with messages it encoded itself.
//!
//! On the wire it is the protocol's message (`service.proto`: a `oneof content` of
//! `Status status = 1`, `Message message = 2`, `int64 next_offset = 3`) and it decodes
//! exactly as the generated type would. It adds one variant, [`Content::Encoded`]: a
//! `Message` already encoded by the broker straight from the stored record (its metadata,
//! then its body shared with the record), sent as field 2. Building a `Message` value for
//! each delivered message (a dozen strings allocated, the map of user properties, then
//! all of it freed after encoding) was close to half of the time per message (the
//! broker's `pull_encoding` example). Decoding never produces `Encoded`: a client sees
//! `Content::Message`.
//!
//! `build.rs` points the generated code at this type (`extern_path`); `rocketmq::v2`
//! re-exports it under its usual names.

use prost::DecodeError;
use prost::bytes::Buf;
use prost::bytes::BufMut;
use prost::encoding::DecodeContext;
use prost::encoding::WireType;

use crate::encoded_message::EncodedMessage;
use crate::rocketmq::v2 as pb;

const STATUS: u32 = 1;
const MESSAGE: u32 = 2;
const NEXT_OFFSET: u32 = 3;

/// One item of a pull's answer stream: a status, a message, or the offset to pull next.
#[derive(Clone, PartialEq, Default, Debug)]
pub struct PullMessageResponse {
    pub content: Option<Content>,
}

/// What a [`PullMessageResponse`] holds (the protocol's `oneof content`).
// The message inline, as in the generated type it stands in for: a pull's items are
// mostly messages.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, PartialEq, Debug)]
pub enum Content {
    Status(pb::Status),
    Message(pb::Message),
    NextOffset(i64),
    /// A `Message` encoded ahead (sent only; decoding gives [`Content::Message`]).
    Encoded(EncodedMessage),
}

impl prost::Message for PullMessageResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        match &self.content {
            Some(Content::Status(s)) => prost::encoding::message::encode(STATUS, s, buf),
            Some(Content::Message(m)) => prost::encoding::message::encode(MESSAGE, m, buf),
            Some(Content::NextOffset(n)) => prost::encoding::int64::encode(NEXT_OFFSET, n, buf),
            Some(Content::Encoded(e)) => e.encode_field(MESSAGE, buf),
            None => {}
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        // As generated code does: a field of the oneof merges into the variant it finds
        // there when it is the same one, and replaces any other.
        match tag {
            STATUS => {
                let mut s = match self.content.take() {
                    Some(Content::Status(s)) => s,
                    _ => pb::Status::default(),
                };
                prost::encoding::message::merge(wire_type, &mut s, buf, ctx)?;
                self.content = Some(Content::Status(s));
            }
            MESSAGE => {
                let mut m = match self.content.take() {
                    Some(Content::Message(m)) => m,
                    _ => pb::Message::default(),
                };
                prost::encoding::message::merge(wire_type, &mut m, buf, ctx)?;
                self.content = Some(Content::Message(m));
            }
            NEXT_OFFSET => {
                let mut n = 0;
                prost::encoding::int64::merge(wire_type, &mut n, buf, ctx)?;
                self.content = Some(Content::NextOffset(n));
            }
            _ => prost::encoding::skip_field(wire_type, tag, buf, ctx)?,
        }
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        match &self.content {
            Some(Content::Status(s)) => prost::encoding::message::encoded_len(STATUS, s),
            Some(Content::Message(m)) => prost::encoding::message::encoded_len(MESSAGE, m),
            Some(Content::NextOffset(n)) => prost::encoding::int64::encoded_len(NEXT_OFFSET, n),
            Some(Content::Encoded(e)) => e.field_len(MESSAGE),
            None => 0,
        }
    }

    fn clear(&mut self) {
        self.content = None;
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use prost::bytes::Bytes;

    use super::*;

    /// The generated type this one stands in for, as prost would derive it.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Generated {
        #[prost(oneof = "GeneratedContent", tags = "1, 2, 3")]
        content: Option<GeneratedContent>,
    }

    #[allow(clippy::large_enum_variant)]
    #[derive(Clone, PartialEq, prost::Oneof)]
    enum GeneratedContent {
        #[prost(message, tag = "1")]
        Status(pb::Status),
        #[prost(message, tag = "2")]
        Message(pb::Message),
        #[prost(int64, tag = "3")]
        NextOffset(i64),
    }

    fn message() -> pb::Message {
        pb::Message {
            topic: Some(pb::Resource {
                resource_namespace: String::new(),
                name: "orders".into(),
            }),
            user_properties: [("k".to_owned(), "v".to_owned())].into_iter().collect(),
            system_properties: Some(pb::SystemProperties {
                message_id: "01AB".into(),
                tag: Some("TagA".into()),
                queue_offset: Some(7),
                ..Default::default()
            }),
            body: Bytes::from_static(b"the body"),
        }
    }

    fn pairs() -> Vec<(Content, Option<GeneratedContent>)> {
        let status = pb::Status {
            code: 20000,
            message: "OK".into(),
        };
        vec![
            (
                Content::Status(status.clone()),
                Some(GeneratedContent::Status(status)),
            ),
            (
                Content::Message(message()),
                Some(GeneratedContent::Message(message())),
            ),
            (Content::NextOffset(-3), Some(GeneratedContent::NextOffset(-3))),
            (Content::NextOffset(0), Some(GeneratedContent::NextOffset(0))),
        ]
    }

    #[test]
    fn encodes_and_decodes_as_the_generated_type_would() {
        for (ours, theirs) in pairs() {
            let ours = PullMessageResponse { content: Some(ours) };
            let theirs = Generated { content: theirs };
            let bytes = ours.encode_to_vec();
            assert_eq!(bytes, theirs.encode_to_vec(), "{ours:?}");
            assert_eq!(ours.encoded_len(), bytes.len());
            assert_eq!(
                PullMessageResponse::decode(bytes.as_slice()).expect("decode"),
                ours
            );
        }
        let empty = PullMessageResponse::default();
        assert!(empty.encode_to_vec().is_empty());
        assert_eq!(PullMessageResponse::decode(&[][..]).expect("empty"), empty);
    }

    #[test]
    fn an_encoded_message_is_sent_as_the_message_it_encodes() {
        let m = message();
        let whole = m.encode_to_vec();
        let body_at = whole.len() - m.body.len();
        let encoded = EncodedMessage {
            head: Bytes::copy_from_slice(&whole[..body_at]),
            body: m.body.clone(),
        };
        let ours = PullMessageResponse {
            content: Some(Content::Encoded(encoded)),
        };
        let bytes = ours.encode_to_vec();
        assert_eq!(ours.encoded_len(), bytes.len());
        let back = PullMessageResponse::decode(bytes.as_slice()).expect("decode");
        assert_eq!(back.content, Some(Content::Message(m.clone())));
        let generated = Generated::decode(bytes.as_slice()).expect("generated decode");
        assert_eq!(generated.content, Some(GeneratedContent::Message(m)));
    }

    #[test]
    fn later_fields_of_the_oneof_win_and_unknown_fields_are_skipped() {
        let mut bytes = PullMessageResponse {
            content: Some(Content::Message(message())),
        }
        .encode_to_vec();
        // An unknown field 9 (varint 1), then next_offset 5.
        bytes.extend_from_slice(&[9 << 3, 1, NEXT_OFFSET as u8 * 8, 5]);
        let back = PullMessageResponse::decode(bytes.as_slice()).expect("decode");
        assert_eq!(back.content, Some(Content::NextOffset(5)));
        let generated = Generated::decode(bytes.as_slice()).expect("generated");
        assert_eq!(generated.content, Some(GeneratedContent::NextOffset(5)));
        // Two halves of one message merge, as protobuf requires.
        let half = |m: pb::Message| {
            PullMessageResponse {
                content: Some(Content::Message(m)),
            }
            .encode_to_vec()
        };
        let mut split = half(pb::Message {
            body: Bytes::new(),
            ..message()
        });
        split.extend(half(pb::Message {
            body: Bytes::from_static(b"the body"),
            ..Default::default()
        }));
        let back = PullMessageResponse::decode(split.as_slice()).expect("decode");
        assert_eq!(back.content, Some(Content::Message(message())));
        assert!(PullMessageResponse::decode(&[MESSAGE as u8 * 8 + 2, 50, 1][..]).is_err());
    }
}
