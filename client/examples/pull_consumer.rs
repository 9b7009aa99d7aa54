//! Reads every queue of a topic with a pull consumer, committing after each batch, so a
//! second run of the same group resumes where this one stopped.
//!
//! ```text
//! RAFTMQ_NAMESRV=127.0.0.1:9876 cargo run -p raftmq-client --example pull_consumer -- [topic] [group]
//! ```
//!
//! A group that never committed starts at the first message still held. Stops after
//! three empty polls in a row.

use std::time::Duration;

use raftmq_client::FilterExpression;
use raftmq_client::PullConsumer;
use raftmq_client::StartFrom;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let namesrv = std::env::var("RAFTMQ_NAMESRV").unwrap_or_else(|_| "127.0.0.1:9876".into());
    let mut args = std::env::args().skip(1);
    let topic = args.next().unwrap_or_else(|| "TopicTest".into());
    let group = args.next().unwrap_or_else(|| "GID_pull_example".into());
    let mut consumer = PullConsumer::builder()
        .access_points([namesrv])
        .consumer_group(group)
        .start_from(StartFrom::First)
        .build()
        .await?;
    consumer.subscribe(&topic, FilterExpression::all()).await?;
    for q in consumer.assignment() {
        println!("queue {}: committed {:?}", q.key(), consumer.committed(&q).await?);
    }
    let (mut empty, mut total) = (0, 0);
    while empty < 3 {
        let messages = consumer.poll(Duration::from_secs(5)).await?;
        empty = if messages.is_empty() { empty + 1 } else { 0 };
        for m in &messages {
            if m.corrupted {
                eprintln!(
                    "{} at {}:{}@{} is corrupted; skipped",
                    m.message_id, m.broker, m.queue_id, m.queue_offset
                );
                continue;
            }
            println!(
                "{} {}:{}@{} tag={:?} {:?}",
                m.message_id,
                m.broker,
                m.queue_id,
                m.queue_offset,
                m.tag,
                String::from_utf8_lossy(&m.body)
            );
        }
        total += messages.len();
        consumer.commit().await?;
    }
    println!("pulled {total} messages of {topic}");
    consumer.shutdown().await;
    Ok(())
}
