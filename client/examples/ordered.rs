//! Ordered sends: every message of a sharding key (its message group) goes to one queue,
//! in the order sent.
//!
//! ```text
//! cargo run -p raftmq-client --example ordered -- [NAMESRV] [TOPIC]
//! ```
//! NAMESRV defaults to `$RAFTMQ_NAMESRV`, else `127.0.0.1:9876`; TOPIC to `OrderTopic`
//! (create it as a FIFO topic, e.g. `raftmq topic create OrderTopic --kind fifo`).

use raftmq_client::Message;
use raftmq_client::Producer;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let namesrv = args
        .next()
        .or_else(|| std::env::var("RAFTMQ_NAMESRV").ok())
        .unwrap_or_else(|| "127.0.0.1:9876".into());
    let topic = args.next().unwrap_or_else(|| "OrderTopic".into());
    let producer = Producer::builder()
        .access_points([namesrv])
        .producer_group("example-ordered")
        .start()
        .await?;

    for order in ["order-1", "order-2", "order-3"] {
        for step in ["created", "paid", "shipped"] {
            let m = Message::new(&topic, format!("{order} {step}"))
                .with_tag(step)
                .with_key(order)
                .with_message_group(order);
            // Sync sends, one after the other: the queue keeps them in this order.
            let r = producer.send(m).await?;
            println!(
                "{order} {step}: {}:{} offset {}",
                r.broker,
                r.queue_id.unwrap_or(-1),
                r.offset
            );
        }
    }
    producer.shutdown().await;
    Ok(())
}
