//! What encoding a pull's answer costs per message, two ways, in one run: building each
//! protocol `Message` from the decoded record (`StoredMessage::decode` + `into_wire`, then
//! prost), against encoding it straight from the record (`wire_message::encode`). Both
//! end with the answer's items encoded into one buffer, as the codec does, and drop them.
//!
//! ```text
//! cargo run --release -p raftmq-broker --example pull_encoding [MESSAGES_PER_PULL] [BODY_BYTES]
//! ```
//!
//! Prints nanoseconds per message for each way (median of alternating rounds) and their
//! ratio.

use std::time::Instant;

use bytes::Bytes;
use bytes::BytesMut;
use raftmq_broker::delivered_digest::DigestForm;
use raftmq_broker::message::Delivery;
use raftmq_broker::message::StoredKind;
use raftmq_broker::message::StoredMessage;
use raftmq_broker::wire_message;
use raftmq_broker::wire_message::Placement;
use raftmq_proto::digest::crc32;
use raftmq_proto::digest::crc32_hex;
use raftmq_proto::prost::Message as _;
use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::pull_message_response::Content;

const ROUNDS: usize = 9;
const PULLS_PER_ROUND: usize = 400;
const STORE_HOST: &str = "127.0.0.1:8081";

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let per_pull: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(110);
    let body_bytes: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1024);
    let records = records(per_pull, body_bytes)?;
    let mut buf = BytesMut::with_capacity(4 << 20);
    let (mut built, mut direct) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        built.push(per_message(&records, || encode_built(&records, &mut buf))?);
        direct.push(per_message(&records, || encode_direct(&records, &mut buf))?);
    }
    let (b, d) = (median(&mut built), median(&mut direct));
    println!(
        "{per_pull} messages a pull, {body_bytes} B bodies, {ROUNDS} alternating rounds of {PULLS_PER_ROUND} pulls"
    );
    println!("built (decode + into_wire + prost): {b:8.1} ns/message");
    println!("direct (wire_message::encode):      {d:8.1} ns/message");
    println!("direct / built: {:.2}", d / b);
    Ok(())
}

/// Records as a producer of the benchmark stores them (a CRC32 digest, no tag or keys).
fn records(n: usize, body_bytes: usize) -> anyhow::Result<Vec<Bytes>> {
    (0..n)
        .map(|i| {
            let body = Bytes::from(vec![b'x'; body_bytes]);
            StoredMessage {
                msg_id: format!("01JD8Z3V9Q0000000000{i:06}"),
                topic: "bench".into(),
                tag: None,
                keys: Vec::new(),
                message_group: None,
                properties: Default::default(),
                kind: StoredKind::Normal,
                born_timestamp_ms: 1_764_000_000_000,
                born_host: "bench-host".into(),
                digest: Some(raftmq_broker::message::BodyDigest {
                    kind: pb::DigestType::Crc32 as i32,
                    checksum: crc32_hex(crc32(&body)),
                }),
                body,
            }
            .encode()
            .map_err(anyhow::Error::from)
        })
        .collect()
}

/// Runs `pull` [`PULLS_PER_ROUND`] times; nanoseconds per message.
fn per_message(records: &[Bytes], mut pull: impl FnMut() -> anyhow::Result<usize>) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut bytes = 0;
    for _ in 0..PULLS_PER_ROUND {
        bytes += pull()?;
    }
    std::hint::black_box(bytes);
    Ok(start.elapsed().as_nanos() as f64 / (PULLS_PER_ROUND * records.len()) as f64)
}

fn item(content: Content) -> pb::PullMessageResponse {
    pb::PullMessageResponse {
        content: Some(content),
    }
}

/// Encodes the items into `buf` as the codec does (reserve, encode), then drops them.
fn send(items: Vec<pb::PullMessageResponse>, buf: &mut BytesMut) -> usize {
    buf.clear();
    for i in &items {
        buf.reserve(i.encoded_len());
        i.encode_raw(buf);
    }
    buf.len()
}

fn encode_built(records: &[Bytes], buf: &mut BytesMut) -> anyhow::Result<usize> {
    let mut items = Vec::with_capacity(records.len());
    for (offset, r) in records.iter().enumerate() {
        let d = Delivery {
            queue_id: 3,
            queue_offset: offset as u64,
            store_time_ms: 1_764_000_000_100,
            store_host: STORE_HOST.to_owned(),
            digest_form: DigestForm::Crc32Padded,
            ..Default::default()
        };
        items.push(item(Content::Message(StoredMessage::decode(r)?.into_wire(d))));
    }
    Ok(send(items, buf))
}

fn encode_direct(records: &[Bytes], buf: &mut BytesMut) -> anyhow::Result<usize> {
    let mut items = Vec::with_capacity(records.len());
    let mut heads = BytesMut::with_capacity(records.len() * wire_message::HEAD_BYTES);
    for (offset, r) in records.iter().enumerate() {
        let p = Placement {
            queue_id: 3,
            queue_offset: offset as u64,
            store_time_ms: 1_764_000_000_100,
            store_host: STORE_HOST,
            digest_form: DigestForm::Crc32Padded,
        };
        items.push(item(Content::Encoded(wire_message::encode(r, &p, &mut heads)?)));
    }
    Ok(send(items, buf))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
