//! A protocol `Message` encoded ahead of the request or answer that carries it.

use prost::bytes::BufMut;
use prost::bytes::Bytes;
use prost::encoding::WireType;
use prost::encoding::encode_key;
use prost::encoding::encode_varint;
use prost::encoding::encoded_len_varint;
use prost::encoding::key_len;

/// The encoding of a protocol `Message` in two parts, sent one after the other: `head`,
/// every field before the body and the body's key and length, then `body`'s bytes.
/// Whoever builds one is answerable for `head` being a valid encoding that announces
/// `body.len()` bytes of body (the broker's and the client's encoders are checked against
/// prost's decoder). A message without a body may be all head.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct EncodedMessage {
    pub head: Bytes,
    pub body: Bytes,
}

impl EncodedMessage {
    /// Bytes of the message's encoding.
    pub fn len(&self) -> usize {
        self.head.len() + self.body.len()
    }

    /// Whether the encoding is empty (a message of default fields).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the message as field `tag` of the message being encoded.
    pub fn encode_field(&self, tag: u32, buf: &mut impl BufMut) {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(self.len() as u64, buf);
        buf.put_slice(&self.head);
        buf.put_slice(&self.body);
    }

    /// Bytes [`Self::encode_field`] writes.
    pub fn field_len(&self, tag: u32) -> usize {
        key_len(tag) + encoded_len_varint(self.len() as u64) + self.len()
    }
}
