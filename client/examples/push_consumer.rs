//! A push consumer: consumes a topic as a member of a consumer group until SIGTERM or
//! Ctrl-C, then finishes what it has and leaves the group.
//!
//!     RAFTMQ_NAMESRV=127.0.0.1:9876 cargo run -p raftmq-client --example push_consumer -- TOPIC GROUP [--ordered] [--quiet] [--from=first|last|UNIX_MS]
//!
//! `--from` says where a group that never consumed a queue starts on it (default `last`:
//! only messages stored from the group's first poll of the queue on).
//!
//! Prints one line per event, for people and for the tests that run it as a process:
//!     ASSIGNED <unix ms> <broker group> <queue id>
//!     RELEASED <unix ms> <broker group> <queue id>
//!     CONSUMED <unix ms> <broker group> <queue id> <offset> <attempt> <message id> <message group or -> <body>
//! (`--quiet` leaves out the CONSUMED lines.)

use std::io::Write;
use std::time::Duration;
use std::time::SystemTime;
use std::time::UNIX_EPOCH;

use raftmq_client::ConsumeMode;
use raftmq_client::ConsumeResult;
use raftmq_client::FilterExpression;
use raftmq_client::PushConsumer;
use raftmq_client::StartFrom;
use raftmq_client::consumer::push::PushOptions;
use raftmq_client::consumer::push::QueueEvent;

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let positional: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let (Some(topic), Some(group)) = (positional.first(), positional.get(1)) else {
        anyhow::bail!("usage: push_consumer TOPIC GROUP [--ordered] [--quiet] [--from=first|last|UNIX_MS]");
    };
    let ordered = args.iter().any(|a| a == "--ordered");
    let quiet = args.iter().any(|a| a == "--quiet");
    let start_from = match args.iter().find_map(|a| a.strip_prefix("--from=")) {
        None | Some("last") => StartFrom::Last,
        Some("first") => StartFrom::First,
        Some(ms) => {
            let ms: u64 = ms
                .parse()
                .map_err(|_| anyhow::anyhow!("--from={ms}: not first, last or unix ms"))?;
            StartFrom::Timestamp(UNIX_EPOCH + Duration::from_millis(ms))
        }
    };
    let namesrv = std::env::var("RAFTMQ_NAMESRV").unwrap_or_else(|_| "127.0.0.1:9876".into());
    let options = PushOptions {
        mode: if ordered {
            ConsumeMode::Ordered
        } else {
            ConsumeMode::Concurrent
        },
        // The shortest RocketMQ allows: a killed member's unacknowledged messages come back
        // soon.
        invisible_duration: Duration::from_secs(10),
        start_from,
        ..PushOptions::default()
    };
    let consumer = PushConsumer::builder()
        .access_points([namesrv])
        .consumer_group(group.as_str())
        .subscribe(topic.as_str(), FilterExpression::all())
        .options(options)
        .on_queue_change(|e| match e {
            QueueEvent::Assigned { broker, id, .. } => say(format!("ASSIGNED {} {broker} {id}", now_ms())),
            QueueEvent::Released { broker, id, .. } => say(format!("RELEASED {} {broker} {id}", now_ms())),
        })
        .listener(move |m| async move {
            if !quiet {
                let body = String::from_utf8_lossy(&m.body).replace(char::is_whitespace, "_");
                say(format!(
                    "CONSUMED {} {} {} {} {} {} {} {body}",
                    now_ms(),
                    m.broker,
                    m.queue_id,
                    m.queue_offset,
                    m.delivery_attempt,
                    m.message_id,
                    m.message_group.as_deref().unwrap_or("-"),
                ));
            }
            ConsumeResult::Success
        })
        .start()
        .await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    consumer.shutdown().await;
    say(format!("STOPPED {}", now_ms()));
    Ok(())
}
