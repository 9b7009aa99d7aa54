//! The producers: each owns its sharding keys and sends every key's messages in sequence,
//! one sync send at a time, recording each invocation and its outcome.
//!
//! A message's id, key and seq travel in user properties (and in its body), so a
//! consumer can tell exactly which send it got. Producer `p`, numbered from 1 and history
//! process `p`, owns keys `p<p>-k0`, `p<p>-k1`, ... and sends to them in turn; message
//! ids are `<key>-<seq>`, unique within a run. Sends are paced so that all producers
//! together send at most the configured rate; a send that takes longer (a failover)
//! delays the producer's next ones instead of bunching them up.

use std::sync::Arc;
use std::time::Duration;

use raftmq_client::ClientError;
use raftmq_client::Message;
use raftmq_client::Producer;
use raftmq_client::producer::SendReceipt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::cluster::TOPIC;
use super::recorder::Recorder;
use crate::error::ChaosError;
use crate::history::Event;
use crate::history::ProcessId;
use crate::history::SendDone;
use crate::history::SendInvoke;
use crate::history::SendOutcome;

/// User property holding the message's id in the history.
pub const PROP_ID: &str = "chaos-id";
/// User property holding its sharding key.
pub const PROP_KEY: &str = "chaos-key";
/// User property holding its seq.
pub const PROP_SEQ: &str = "chaos-seq";

/// How the producers work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerPlan {
    /// Producer clients, each a history process of its own.
    pub producers: usize,
    /// Sharding keys each one owns.
    pub keys_per_producer: usize,
    /// Sends per second, all producers together.
    pub rate: u32,
}

/// The running producers.
#[derive(Debug)]
pub struct Producers {
    clients: Vec<Producer>,
    tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

impl Drop for Producers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Producers {
    /// Starts the producer clients and their send loops.
    pub async fn start(
        access_points: &[String],
        plan: ProducerPlan,
        recorder: Arc<Recorder>,
    ) -> Result<Self, ChaosError> {
        let (stop, _) = watch::channel(false);
        let per_producer = Duration::from_secs_f64(plan.producers as f64 / f64::from(plan.rate.max(1)));
        let mut me = Self {
            clients: Vec::new(),
            tasks: Vec::new(),
            stop,
        };
        for p in 1..=plan.producers {
            let client = Producer::builder()
                .access_points(access_points)
                .producer_group("chaos-producers")
                .start()
                .await
                .map_err(|source| ChaosError::Client {
                    action: format!("start producer {p}"),
                    source,
                })?;
            let process = p as ProcessId;
            let keys = (0..plan.keys_per_producer)
                .map(|k| format!("p{p}-k{k}"))
                .collect();
            let worker = Worker {
                process,
                client: client.clone(),
                recorder: recorder.clone(),
                keys,
            };
            me.tasks
                .push(tokio::spawn(worker.run(per_producer, me.stop.subscribe())));
            me.clients.push(client);
        }
        Ok(me)
    }

    /// Stops sending: each producer finishes the send it has in flight, for up to
    /// `timeout` (then it is abandoned: its send stays without completion in the
    /// history), and the clients shut down. Returns how many were abandoned.
    pub async fn stop(mut self, timeout: Duration) -> usize {
        self.stop.send_replace(true);
        let until = tokio::time::Instant::now() + timeout;
        let mut abandoned = 0;
        for task in std::mem::take(&mut self.tasks) {
            let abort = task.abort_handle();
            if tokio::time::timeout_at(until, task).await.is_err() {
                abort.abort();
                abandoned += 1;
            }
        }
        for client in &self.clients {
            let _ = tokio::time::timeout(Duration::from_secs(2), client.shutdown()).await;
        }
        abandoned
    }
}

/// One producer's send loop.
struct Worker {
    process: ProcessId,
    client: Producer,
    recorder: Arc<Recorder>,
    keys: Vec<String>,
}

impl Worker {
    async fn run(self, every: Duration, stop: watch::Receiver<bool>) {
        let mut seqs = vec![0u64; self.keys.len()];
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        for turn in 0.. {
            ticker.tick().await;
            if *stop.borrow() || self.keys.is_empty() {
                return;
            }
            let k = turn % self.keys.len();
            let seq = seqs[k];
            seqs[k] += 1;
            self.send(&self.keys[k], seq).await;
        }
    }

    async fn send(&self, key: &str, seq: u64) {
        let id = format!("{key}-{seq}");
        let message = Message::new(TOPIC, format!("{id} {key} {seq}"))
            .with_tag("chaos")
            .with_message_group(key)
            .with_property(PROP_ID, id.clone())
            .with_property(PROP_KEY, key)
            .with_property(PROP_SEQ, seq.to_string());
        self.recorder.record(
            self.process,
            Event::Send(SendInvoke {
                key: key.to_owned(),
                seq,
                message_id: id.clone(),
            }),
        );
        let outcome = outcome(self.client.send(message).await);
        self.recorder.record(
            self.process,
            Event::SendDone(SendDone {
                message_id: id,
                outcome,
            }),
        );
    }
}

/// A send's result as the history tells it (a receipt without a queue id says queue
/// `u32::MAX`).
pub fn outcome(result: Result<SendReceipt, ClientError>) -> SendOutcome {
    match result {
        Ok(r) => SendOutcome::Ok {
            broker: r.broker,
            queue: r.queue_id.and_then(|q| u32::try_from(q).ok()).unwrap_or(u32::MAX),
            offset: u64::try_from(r.offset).unwrap_or(u64::MAX),
        },
        Err(ClientError::OutcomeUnknown(error)) => SendOutcome::Unknown { error },
        Err(e) => SendOutcome::Failed { error: e.to_string() },
    }
}
