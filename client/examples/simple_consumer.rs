//! Receives the messages of a topic with a simple consumer and acknowledges each one.
//!
//! ```text
//! RAFTMQ_NAMESRV=127.0.0.1:9876 cargo run -p raftmq-client --example simple_consumer -- [topic] [group]
//! ```
//!
//! Stops after three empty long polls in a row.

use std::time::Duration;

use raftmq_client::FilterExpression;
use raftmq_client::SimpleConsumer;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let namesrv = std::env::var("RAFTMQ_NAMESRV").unwrap_or_else(|_| "127.0.0.1:9876".into());
    let mut args = std::env::args().skip(1);
    let topic = args.next().unwrap_or_else(|| "TopicTest".into());
    let group = args.next().unwrap_or_else(|| "GID_simple_example".into());
    let consumer = SimpleConsumer::builder()
        .access_points([namesrv])
        .consumer_group(group)
        .subscribe(&topic, FilterExpression::tag("*")?)
        .await_duration(Duration::from_secs(5))
        .build()
        .await?;
    let (mut empty, mut total) = (0, 0);
    while empty < 3 {
        let messages = match consumer.receive(16, Duration::from_secs(30)).await {
            Ok(m) => m,
            Err(e) if e.is_retryable() => {
                eprintln!("receive failed, trying again: {e}");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        empty = if messages.is_empty() { empty + 1 } else { 0 };
        for m in messages {
            println!(
                "{} {}:{}@{} tag={:?} attempt={} {:?}",
                m.message_id,
                m.broker,
                m.queue_id,
                m.queue_offset,
                m.tag,
                m.delivery_attempt,
                String::from_utf8_lossy(&m.body)
            );
            // Not acknowledged (an error here): delivered again after its invisible duration.
            if let Err(e) = consumer.ack(&m).await {
                eprintln!("ack of {} failed: {e}", m.message_id);
            }
            total += 1;
        }
    }
    println!("received {total} messages of {topic}");
    consumer.shutdown().await;
    Ok(())
}
