//! Sends to a topic in every mode: sync, async, oneway and a batch.
//!
//! ```text
//! cargo run -p raftmq-client --example producer -- [NAMESRV] [TOPIC]
//! ```
//! NAMESRV defaults to `$RAFTMQ_NAMESRV`, else `127.0.0.1:9876`; TOPIC to `TopicTest`
//! (create it first, e.g. `raftmq topic create TopicTest`).

use raftmq_client::Message;
use raftmq_client::Producer;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let namesrv = args
        .next()
        .or_else(|| std::env::var("RAFTMQ_NAMESRV").ok())
        .unwrap_or_else(|| "127.0.0.1:9876".into());
    let topic = args.next().unwrap_or_else(|| "TopicTest".into());
    let producer = Producer::builder()
        .access_points([namesrv])
        .producer_group("example-producer")
        .topics([topic.clone()])
        .start()
        .await?;

    let message = |i: usize| {
        Message::new(&topic, format!("hello {i}"))
            .with_tag("TagA")
            .with_key(format!("key-{i}"))
            .with_property("origin", "example")
    };

    let r = producer.send(message(0)).await?;
    println!("sync: {} on {} at offset {}", r.message_id, r.broker, r.offset);

    let handles: Vec<_> = (1..=3).map(|i| producer.send_async(message(i))).collect();
    for h in handles {
        let r = h.await?;
        println!("async: {} on {} at offset {}", r.message_id, r.broker, r.offset);
    }

    producer.send_oneway(message(4)).await?;
    println!("oneway: sent, no receipt");

    let receipts = producer.send_batch((5..10).map(message).collect()).await?;
    let first = &receipts[0];
    println!(
        "batch: {} messages on {} at offsets {}..={}",
        receipts.len(),
        first.broker,
        first.offset,
        first.offset + receipts.len() as i64 - 1
    );

    // Waits for the oneway send before leaving.
    producer.shutdown().await;
    Ok(())
}
