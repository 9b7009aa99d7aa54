//! The consumer group: push consumers in ordered mode, in this process, recording every
//! delivery to their listener as a `consume` record; the listener then returns success,
//! and the consumer acknowledges by itself.
//!
//! The push consumer does not tell its listener how an acknowledgement ended, so the
//! history has no `ack` records from this workload.

use std::sync::Arc;
use std::time::Duration;

use raftmq_client::ConsumeMode;
use raftmq_client::ConsumeResult;
use raftmq_client::FilterExpression;
use raftmq_client::PushConsumer;
use raftmq_client::ReceivedMessage;
use raftmq_client::StartFrom;
use raftmq_client::consumer::push::PushOptions;

use super::cluster::TOPIC;
use super::producers::PROP_ID;
use super::producers::PROP_KEY;
use super::producers::PROP_SEQ;
use super::recorder::Recorder;
use crate::error::ChaosError;
use crate::history::Delivery;
use crate::history::Event;
use crate::history::ProcessId;

/// The consumer group's name.
pub const CONSUMER_GROUP: &str = "chaos-consumers";
/// History process id of consumer `1`; consumer `n` is `CONSUMER_PROCESS_BASE + n - 1`.
pub const CONSUMER_PROCESS_BASE: ProcessId = 101;
/// How long a member may take to stop.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The running members of the consumer group.
#[derive(Debug)]
pub struct Consumers {
    members: Vec<PushConsumer>,
}

impl Consumers {
    /// Starts `members` push consumers of [`CONSUMER_GROUP`] on [`TOPIC`], ordered, from
    /// the queues' first messages.
    pub async fn start(
        access_points: &[String],
        members: usize,
        recorder: Arc<Recorder>,
    ) -> Result<Self, ChaosError> {
        let mut started = Vec::new();
        for n in 1..=members {
            let name = format!("c{n}");
            let process = CONSUMER_PROCESS_BASE + n as ProcessId - 1;
            let recorder = recorder.clone();
            let options = PushOptions {
                mode: ConsumeMode::Ordered,
                start_from: StartFrom::First,
                invisible_duration: Duration::from_secs(10),
                shutdown_timeout: SHUTDOWN_TIMEOUT,
                ..PushOptions::default()
            };
            let member = PushConsumer::builder()
                .access_points(access_points)
                .consumer_group(CONSUMER_GROUP)
                .subscribe(TOPIC, FilterExpression::all())
                .options(options)
                .listener(move |m: ReceivedMessage| {
                    recorder.record(process, Event::Consume(delivery(&m, &name)));
                    std::future::ready(ConsumeResult::Success)
                })
                .start()
                .await
                .map_err(|source| ChaosError::Client {
                    action: format!("start consumer {n}"),
                    source,
                })?;
            started.push(member);
        }
        Ok(Self { members: started })
    }

    /// Stops every member (together), for up to `timeout`; then they are dropped, which
    /// finishes their shutdown in the background.
    pub async fn shutdown(self, timeout: Duration) {
        let all = futures_util::future::join_all(self.members.iter().map(PushConsumer::shutdown));
        let _ = tokio::time::timeout(timeout, all).await;
    }
}

/// What a delivery tells: the message's id, key and seq from its properties (or, if they
/// are missing, its body `"<id> <key> <seq>"`; failing both, the broker's message id with
/// an empty key, which the checker reports as a message never sent).
pub fn delivery(m: &ReceivedMessage, consumer: &str) -> Delivery {
    let prop = |k: &str| m.properties.get(k).cloned();
    let from_body = || {
        let text = m.body_str()?;
        let mut parts = text.split(' ');
        let (id, key, seq) = (parts.next()?, parts.next()?, parts.next()?.parse().ok()?);
        Some((id.to_owned(), key.to_owned(), seq))
    };
    let from_props = || Some((prop(PROP_ID)?, prop(PROP_KEY)?, prop(PROP_SEQ)?.parse().ok()?));
    let (message_id, key, seq) = from_props()
        .or_else(from_body)
        .unwrap_or_else(|| (m.message_id.clone(), String::new(), 0));
    Delivery {
        message_id,
        key,
        seq,
        consumer: consumer.to_owned(),
        broker: m.broker.clone(),
        queue: u32::try_from(m.queue_id).unwrap_or(u32::MAX),
        offset: u64::try_from(m.queue_offset).unwrap_or(u64::MAX),
        attempt: u32::try_from(m.delivery_attempt).unwrap_or(0),
    }
}
