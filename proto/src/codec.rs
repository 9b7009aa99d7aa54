//! The gRPC codec of the messaging service: protobuf through prost, as tonic's own
//! codec, with two differences: the most bytes of ready answers sent as one piece, and
//! buffers sized so that they rarely grow.
//!
//! A server-streaming answer (a pull's messages) is encoded item by item into one buffer,
//! and tonic hands the buffer to HTTP/2 once it holds the codec's *yield threshold* of
//! bytes or the stream has nothing ready. HTTP/2 writes each such piece as its own DATA
//! frame, and each DATA frame with its own `writev`. tonic's default threshold is 32 KiB,
//! so a pull answer of 48 messages of 1 KiB went out in two writes. This codec's threshold
//! is 32 KiB under [`crate::H2_MAX_FRAME_BYTES`], the frame size raftmq's connections
//! accept, so that a piece and the message that crossed the threshold (up to 32 KiB) fit
//! one frame: a pull answer takes as few writes as its frames allow, and on loopback each
//! write saved is also a read and a pass through the receiver's TCP path saved.
//!
//! The threshold is an upper bound: a stream that has nothing ready still sends what it
//! has at once, so answers do not wait for it.
//!
//! Buffers are sized so that they rarely grow (each growth copies what the buffer holds):
//!
//! - an item is encoded after reserving its encoded length, so a send of a hundred
//!   messages is one allocation, not a doubling from 8 KiB with a copy at every step;
//! - a streamed answer of messages (pull, receive) starts with a buffer of one whole
//!   piece ([`STREAM_BUFFER_BYTES`]), and a send request is read into one that holds a
//!   request of a whole frame with the room tonic reserves ([`SEND_BUFFER_BYTES`]);
//! - decoding a send request or its answer first counts the repeated messages or
//!   entries, so their vector is allocated once.
//!
//! Everything else starts at tonic's default size.

use std::any::Any;
use std::any::TypeId;
use std::marker::PhantomData;

use prost::Message;
use prost::bytes::Buf;
use tonic::Status;
use tonic::codec::BufferSettings;
use tonic::codec::Codec;
use tonic::codec::DecodeBuf;
use tonic::codec::Decoder;
use tonic::codec::EncodeBuf;
use tonic::codec::Encoder;

use crate::rocketmq::v2 as pb;

/// Initial size of an RPC's encode and decode buffers (tonic's default).
const BUFFER_BYTES: usize = 8 * 1024;

/// Bytes of ready streamed answers at which a piece goes to HTTP/2 (the piece holds the
/// message that crossed it too).
pub const YIELD_THRESHOLD_BYTES: usize = crate::H2_MAX_FRAME_BYTES as usize - 32 * 1024;

/// Initial size of the encode buffer of a streamed answer of messages: a whole piece, the
/// threshold and the message crossing it.
pub const STREAM_BUFFER_BYTES: usize = crate::H2_MAX_FRAME_BYTES as usize;

/// Initial size of the decode buffer of a send request. tonic reserves a message's length
/// on top of what is buffered when it reads the message's header, and a request usually
/// arrives whole (one frame): a request of up to one frame then fits without growing.
pub const SEND_BUFFER_BYTES: usize = 2 * crate::H2_MAX_FRAME_BYTES as usize + BUFFER_BYTES;

// Pieces are much bigger than tonic's default ones (32 KiB).
const _: () = assert!(YIELD_THRESHOLD_BYTES >= 4 * 32 * 1024);

/// Most elements reserved ahead for one repeated field (more still decode, growing).
const MAX_RESERVED: usize = 4096;

fn is<A: 'static, B: 'static>() -> bool {
    TypeId::of::<A>() == TypeId::of::<B>()
}

/// The buffer settings of [`BulkCodec`]'s encoder of `T` (sizes as in the module docs).
fn encoder_settings<T: 'static>() -> BufferSettings {
    let streamed = is::<T, pb::PullMessageResponse>() || is::<T, pb::ReceiveMessageResponse>();
    let size = if streamed {
        STREAM_BUFFER_BYTES
    } else {
        BUFFER_BYTES
    };
    BufferSettings::new(size, YIELD_THRESHOLD_BYTES)
}

/// The buffer settings of [`BulkCodec`]'s decoder of `U` (only the size counts).
fn decoder_settings<U: 'static>() -> BufferSettings {
    let size = if is::<U, pb::SendMessageRequest>() {
        SEND_BUFFER_BYTES
    } else {
        BUFFER_BYTES
    };
    BufferSettings::new(size, YIELD_THRESHOLD_BYTES)
}

/// Protobuf codec of the messaging service (see the module docs). Named in the generated
/// code through tonic-prost-build's `codec_path`, for server and client alike.
#[derive(Debug, Clone, Copy)]
pub struct BulkCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for BulkCodec<T, U> {
    fn default() -> Self {
        Self { _types: PhantomData }
    }
}

impl<T, U> Codec for BulkCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = BulkEncoder<T>;
    type Decoder = BulkDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        BulkEncoder { _type: PhantomData }
    }

    fn decoder(&mut self) -> Self::Decoder {
        BulkDecoder { _type: PhantomData }
    }
}

/// Encodes `T` with prost into a buffer that holds it before it is written.
#[derive(Debug, Clone, Copy)]
pub struct BulkEncoder<T> {
    _type: PhantomData<T>,
}

impl<T: Message + 'static> Encoder for BulkEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.reserve(item.encoded_len());
        // What `Message::encode` does after checking the room left, which a growable
        // buffer always has: the length is computed once, not twice. (`encode_raw` is
        // hidden from prost's docs but is the trait method the generated code implements.)
        item.encode_raw(buf);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        encoder_settings::<T>()
    }
}

/// Decodes `U` with prost, allocating the repeated messages of a send (and the entries of
/// its answer) once.
#[derive(Debug, Clone, Copy)]
pub struct BulkDecoder<U> {
    _type: PhantomData<U>,
}

impl<U: Message + Default + 'static> Decoder for BulkDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let mut item = U::default();
        reserve_repeated(&mut item, buf.chunk());
        // tonic maps a prost decode error to INTERNAL, as gRPC's status code table says.
        item.merge(buf).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Some(item))
    }

    fn buffer_settings(&self) -> BufferSettings {
        decoder_settings::<U>()
    }
}

/// Reserves room in `item`'s big repeated field for as many elements as `body` (its
/// encoding, or as much of it as is contiguous) carries.
fn reserve_repeated<U: 'static>(item: &mut U, body: &[u8]) {
    let item = item as &mut dyn Any;
    if let Some(r) = item.downcast_mut::<pb::SendMessageRequest>() {
        r.messages.reserve(count_field(body, 1));
    } else if let Some(r) = item.downcast_mut::<pb::SendMessageResponse>() {
        r.entries.reserve(count_field(body, 2));
    }
}

/// How many length-delimited top-level fields numbered `field` `body` holds, capped at
/// [`MAX_RESERVED`]; counting stops at the first thing it cannot skip (prost then reports
/// what is wrong, if anything).
fn count_field(mut body: &[u8], field: u64) -> usize {
    let mut n = 0;
    while !body.is_empty() && n < MAX_RESERVED {
        let Ok(key) = prost::encoding::decode_varint(&mut body) else {
            break;
        };
        let skip = match key & 7 {
            0 => prost::encoding::decode_varint(&mut body).map(|_| 0).ok(),
            1 => Some(8),
            2 => prost::encoding::decode_varint(&mut body)
                .ok()
                .and_then(|l| usize::try_from(l).ok()),
            5 => Some(4),
            _ => None,
        };
        let Some(skip) = skip.filter(|s| *s <= body.remaining()) else {
            break;
        };
        if key >> 3 == field && key & 7 == 2 {
            n += 1;
        }
        body.advance(skip);
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `settings` as `Debug` shows them (the only way tonic shows them), with our threshold.
    fn shown(settings: BufferSettings) -> String {
        let shown = format!("{settings:?}");
        assert!(
            shown.contains(&format!("yield_threshold: {YIELD_THRESHOLD_BYTES}")),
            "{shown}"
        );
        shown
    }

    #[test]
    fn streamed_answers_and_send_requests_get_buffers_that_hold_them() {
        let cases = [
            (
                shown(encoder_settings::<pb::PullMessageResponse>()),
                STREAM_BUFFER_BYTES,
            ),
            (
                shown(encoder_settings::<pb::ReceiveMessageResponse>()),
                STREAM_BUFFER_BYTES,
            ),
            (shown(encoder_settings::<pb::SendMessageResponse>()), BUFFER_BYTES),
            (
                shown(decoder_settings::<pb::SendMessageRequest>()),
                SEND_BUFFER_BYTES,
            ),
            (shown(decoder_settings::<pb::PullMessageRequest>()), BUFFER_BYTES),
        ];
        for (shown, bytes) in cases {
            assert!(shown.contains(&format!("buffer_size: {bytes},")), "{shown}");
        }
    }

    fn send_request(n: usize) -> pb::SendMessageRequest {
        let message = |i: usize| pb::Message {
            topic: Some(pb::Resource {
                name: "t".into(),
                ..Default::default()
            }),
            body: vec![i as u8; 1000 + i].into(),
            ..Default::default()
        };
        pb::SendMessageRequest {
            messages: (0..n).map(message).collect(),
        }
    }

    #[test]
    fn counts_the_repeated_field_and_skips_the_others() {
        let req = send_request(37);
        assert_eq!(count_field(&req.encode_to_vec(), 1), 37);
        assert_eq!(count_field(&req.encode_to_vec(), 2), 0);
        let answer = pb::SendMessageResponse {
            status: Some(pb::Status {
                code: 20000,
                message: "OK".into(),
            }),
            entries: vec![pb::SendResultEntry::default(); 5],
        };
        assert_eq!(count_field(&answer.encode_to_vec(), 2), 5);
        // A varint and fixed-width fields are skipped too.
        let mut mixed = Vec::new();
        prost::encoding::uint64::encode(3, &300, &mut mixed);
        prost::encoding::fixed64::encode(4, &7, &mut mixed);
        prost::encoding::fixed32::encode(5, &7, &mut mixed);
        prost::encoding::bytes::encode(1, &vec![1u8, 2], &mut mixed);
        assert_eq!(count_field(&mixed, 1), 1);
    }

    #[test]
    fn a_truncated_or_malformed_body_stops_the_count_without_panicking() {
        let body = send_request(4).encode_to_vec();
        for cut in 0..body.len() {
            assert!(count_field(&body[..cut], 1) <= 4);
        }
        assert_eq!(count_field(&[0xff; 16], 1), 0);
        // A start group (wire type 3) is not skipped.
        assert_eq!(count_field(&[0x0b, 0x0a, 0x00], 1), 0);
    }

    /// Items through tonic's own body encoder and stream decoder with this codec.
    async fn round_trip<T: Message + Default + Send + 'static>(items: Vec<T>) -> Vec<T> {
        let mut codec = BulkCodec::<T, T>::default();
        let source = futures_util::stream::iter(items.into_iter().map(Ok));
        let body = tonic::codec::EncodeBody::new_client(codec.encoder(), source, None, None);
        let mut stream = tonic::codec::Streaming::new_request(codec.decoder(), body, None, None);
        let mut out = Vec::new();
        while let Some(item) = stream.message().await.expect("decodes") {
            out.push(item);
        }
        out
    }

    #[tokio::test]
    async fn sends_and_streamed_answers_come_out_as_they_went_in() {
        let sends = vec![
            send_request(1),
            send_request(300),
            pb::SendMessageRequest::default(),
        ];
        let got = round_trip(sends.clone()).await;
        assert_eq!(got, sends);
        // Allocated once for the 300 it holds, not grown by doubling to 512.
        assert!(got[1].messages.capacity() < 512, "{}", got[1].messages.capacity());
        // More than a piece of answers: they cross the yield threshold.
        let answers: Vec<pb::PullMessageResponse> = (0..400)
            .map(|_| pb::PullMessageResponse {
                content: Some(pb::pull_message_response::Content::Message(
                    send_request(1).messages.remove(0),
                )),
            })
            .chain([pb::PullMessageResponse {
                content: Some(pb::pull_message_response::Content::NextOffset(400)),
            }])
            .collect();
        let got = round_trip(answers.clone()).await;
        assert_eq!(got, answers);
    }
}
