//! What encoding a send's request costs per message, two ways, in one run: building each
//! protocol `Message` (`Message::to_wire`) into the generated request, against writing
//! each message's encoding straight from the producer's message (`producer::wire`). Each
//! way does what one attempt of a send did or does: build the request, clone it (the
//! producer keeps its request for a retry), encode the clone into one buffer as the codec
//! does, and drop both.
//!
//! ```text
//! cargo run --release -p raftmq-client --example send_encoding [MESSAGES_PER_SEND] [BODY_BYTES]
//! ```
//!
//! Prints nanoseconds per message for each way (median of alternating rounds) and their
//! ratio.

use std::time::Instant;

use bytes::BytesMut;
use raftmq_client::Message;
use raftmq_client::producer::wire;
use raftmq_client::producer::wire::Stamp;
use raftmq_proto::prost_types::Timestamp;
use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::send_request::EncodedSendRequest;

const ROUNDS: usize = 9;
const SENDS_PER_ROUND: usize = 400;
const NAMESPACE: &str = "";
const HOST: &str = "bench-host";

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let per_send: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(93);
    let body_bytes: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1024);
    let messages: Vec<Message> = (0..per_send)
        .map(|_| Message::new("bench", vec![b'x'; body_bytes]))
        .collect();
    let ids: Vec<String> = (0..per_send)
        .map(|i| format!("01JD8Z3V9Q0000000000{i:06}"))
        .collect();
    let mut buf = BytesMut::with_capacity(4 << 20);
    let (mut built, mut direct) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        built.push(per_message(per_send, || send_built(&messages, &ids, &mut buf)));
        direct.push(per_message(per_send, || send_direct(&messages, &ids, &mut buf)));
    }
    let (b, d) = (median(&mut built), median(&mut direct));
    println!(
        "{per_send} messages a send, {body_bytes} B bodies, {ROUNDS} alternating rounds of {SENDS_PER_ROUND} sends"
    );
    println!("built (to_wire + clone + prost): {b:8.1} ns/message");
    println!("direct (producer::wire):         {d:8.1} ns/message");
    println!("direct / built: {:.2}", d / b);
    Ok(())
}

fn born() -> Timestamp {
    Timestamp {
        seconds: 1_764_000_000,
        nanos: 100_000_000,
    }
}

/// Runs `send` [`SENDS_PER_ROUND`] times; nanoseconds per message.
fn per_message(per_send: usize, mut send: impl FnMut() -> usize) -> f64 {
    let start = Instant::now();
    let mut bytes = 0;
    for _ in 0..SENDS_PER_ROUND {
        bytes += send();
    }
    std::hint::black_box(bytes);
    start.elapsed().as_nanos() as f64 / (SENDS_PER_ROUND * per_send) as f64
}

/// Encodes `req` into `buf` as the codec does (reserve, encode).
fn encode(req: &impl raftmq_proto::prost::Message, buf: &mut BytesMut) -> usize {
    buf.clear();
    buf.reserve(req.encoded_len());
    req.encode_raw(buf);
    buf.len()
}

fn send_built(messages: &[Message], ids: &[String], buf: &mut BytesMut) -> usize {
    let req = pb::SendMessageRequest {
        messages: messages
            .iter()
            .zip(ids)
            .map(|(m, id)| m.to_wire(NAMESPACE, id, 3, born()))
            .collect(),
    };
    let sent = req.clone();
    encode(&sent, buf)
}

fn send_direct(messages: &[Message], ids: &[String], buf: &mut BytesMut) -> usize {
    let stamp = Stamp {
        namespace: NAMESPACE,
        queue_id: 3,
        born: born(),
        host: HOST,
    };
    let mut heads = BytesMut::with_capacity(messages.len() * wire::HEAD_BYTES);
    let req = EncodedSendRequest {
        messages: messages
            .iter()
            .zip(ids)
            .map(|(m, id)| wire::encode(m, id, &stamp, &mut heads))
            .collect(),
    };
    let sent = req.clone();
    encode(&sent, buf)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
