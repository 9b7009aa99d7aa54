//! The gRPC codec of the messaging service: protobuf through prost, as tonic's own
//! codec, with one difference: the most bytes of ready answers sent as one piece.
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
//! has at once, so answers do not wait for it. Buffers start at tonic's default size.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::BufferSettings;
use tonic::codec::Codec;
use tonic_prost::ProstCodec;
use tonic_prost::ProstDecoder;
use tonic_prost::ProstEncoder;

/// Initial size of an RPC's encode and decode buffers (tonic's default).
const BUFFER_BYTES: usize = 8 * 1024;

/// Bytes of ready streamed answers at which a piece goes to HTTP/2 (the piece holds the
/// message that crossed it too).
pub const YIELD_THRESHOLD_BYTES: usize = crate::H2_MAX_FRAME_BYTES as usize - 32 * 1024;

// Pieces are much bigger than tonic's default ones (32 KiB).
const _: () = assert!(YIELD_THRESHOLD_BYTES >= 4 * 32 * 1024);

/// The buffer settings of [`BulkCodec`] (a decoder uses only the buffer size).
pub fn buffer_settings() -> BufferSettings {
    BufferSettings::new(BUFFER_BYTES, YIELD_THRESHOLD_BYTES)
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
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(buffer_settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(buffer_settings())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_encoder_and_decoder_carry_these_settings() {
        use crate::rocketmq::v2 as pb;
        use tonic::codec::Decoder as _;
        use tonic::codec::Encoder as _;
        let mut codec = BulkCodec::<pb::PullMessageResponse, pb::PullMessageRequest>::default();
        let shown = format!("{:?}", codec.encoder().buffer_settings());
        assert!(
            shown.contains(&format!("yield_threshold: {YIELD_THRESHOLD_BYTES}")),
            "{shown}"
        );
        assert!(shown.contains(&format!("buffer_size: {BUFFER_BYTES}")), "{shown}");
        let shown = format!("{:?}", codec.decoder().buffer_settings());
        assert!(shown.contains(&format!("buffer_size: {BUFFER_BYTES}")), "{shown}");
    }
}
