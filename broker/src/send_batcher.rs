//! Group commit of sends: SendMessage calls that arrive while the leader's earlier sends are
//! still being replicated are merged into one Raft entry.
//!
//! One Raft entry per call costs the same fixed work per call on every replica (a proposal,
//! a log record with its checksum, a replication frame, an apply with its RocksDB batch,
//! a wake-up of the proposer). Under load that fixed work, not the bytes, bounded a
//! group's throughput. The batcher keeps at most [`SendBatchConfig::max_in_flight`]
//! entries of sends in Raft at a time; calls that arrive meanwhile queue and the next
//! entry takes all of them (up to [`SendBatchConfig::max_messages`] messages and
//! [`SendBatchConfig::max_bytes`] record bytes). A lone call on an idle leader is proposed
//! at once, so batching adds no wait of its own.
//!
//! Merging changes nothing a caller sees: every call's messages stay together and in order
//! in the entry and get consecutive queue offsets as before, each call gets its own
//! positions back, and an entry the state machine refuses (a topic deleted or made
//! read-only in between) is proposed again call by call, so only the calls that are
//! themselves refused fail.

use std::sync::Arc;
use std::sync::Weak;

use tokio::sync::Semaphore;
use tokio::sync::mpsc;
use tokio::sync::oneshot;

use crate::command::Command;
use crate::command::CommandError;
use crate::command::CommandResult;
use crate::command::Header;
use crate::command::MessageMeta;
use crate::command::QueuePosition;
use crate::context::Broker;
use crate::context::now_ms;
use crate::error::BrokerError;
use crate::error::BrokerResult;
use crate::message::StoredMessage;
use crate::message_record;

/// Limits of the batcher (`[send_batch]` in the broker's TOML file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SendBatchConfig {
    /// Most send entries proposed and not yet applied. Default 4.
    pub max_in_flight: usize,
    /// Most messages merged into one entry (a single larger call still goes alone).
    /// Default 1024.
    pub max_messages: usize,
    /// Most record bytes merged into one entry, as estimated before the records are laid
    /// out (a single larger call still goes alone). Default 1 MiB.
    pub max_bytes: usize,
    /// Most calls waiting for an entry; further calls wait for room. Default 8192.
    pub queue: usize,
}

impl Default for SendBatchConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 4,
            max_messages: 1024,
            max_bytes: 1 << 20,
            queue: 8192,
        }
    }
}

impl SendBatchConfig {
    /// Every limit positive.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_in_flight == 0 || self.max_messages == 0 || self.max_bytes == 0 || self.queue == 0 {
            return Err(
                "send_batch: max_in_flight, max_messages, max_bytes and queue must be positive".into(),
            );
        }
        Ok(())
    }
}

/// One SendMessage call's placed messages, waiting for its entry. Their records are
/// laid out only then, straight into the entry's buffer.
#[derive(Debug)]
pub struct PendingSend {
    pub metas: Vec<MessageMeta>,
    pub messages: Vec<StoredMessage>,
    reply: oneshot::Sender<BrokerResult<CommandResult>>,
}

impl PendingSend {
    fn bytes(&self) -> usize {
        self.messages.iter().map(message_record::capacity).sum()
    }
}

/// Calls merged into one entry, in arrival order (sans-IO: no Raft, no tasks).
#[derive(Debug, Default)]
pub struct Batch {
    calls: Vec<PendingSend>,
    messages: usize,
    bytes: usize,
}

impl Batch {
    /// A batch holding `first`, whatever its size.
    pub fn new(first: PendingSend) -> Self {
        let mut b = Self::default();
        b.push(first);
        b
    }

    fn push(&mut self, call: PendingSend) {
        self.messages += call.metas.len();
        self.bytes += call.bytes();
        self.calls.push(call);
    }

    /// Adds `call` if the batch stays within the limits; else hands it back.
    pub fn try_add(&mut self, call: PendingSend, limits: &SendBatchConfig) -> Result<(), PendingSend> {
        if self.messages + call.metas.len() > limits.max_messages
            || self.bytes + call.bytes() > limits.max_bytes
        {
            return Err(call);
        }
        self.push(call);
        Ok(())
    }

    pub fn calls(&self) -> usize {
        self.calls.len()
    }

    pub fn messages(&self) -> usize {
        self.messages
    }

    /// The one command of every call's messages, in order, each message's record laid
    /// out in the command's buffer.
    pub fn command(&self, store_time_ms: u64) -> BrokerResult<Command> {
        let header = Header::Send {
            store_time_ms,
            messages: self.calls.iter().flat_map(|c| c.metas.iter().cloned()).collect(),
        };
        let mut messages = self.calls.iter().flat_map(|c| c.messages.iter());
        Command::with_records(header, self.messages, self.bytes, |_, out| {
            let m = messages
                .next()
                .ok_or_else(|| CommandError::Record("fewer messages than metas".into()))?;
            message_record::append(m, out).map_err(|e| CommandError::Record(e.to_string()))
        })
        .map_err(|e| BrokerError::Internal(e.to_string()))
    }

    /// Hands each call its share of the entry's result: its own run of positions, or the
    /// shared error.
    pub fn answer(self, result: BrokerResult<CommandResult>) {
        match result {
            Ok(CommandResult::Sent(positions)) if positions.len() == self.messages => {
                let mut rest = positions.into_iter();
                for call in self.calls {
                    let mine: Vec<QueuePosition> = rest.by_ref().take(call.metas.len()).collect();
                    let _ = call.reply.send(Ok(CommandResult::Sent(mine)));
                }
            }
            Ok(CommandResult::Sent(positions)) => {
                let e = BrokerError::Internal(format!(
                    "a send entry of {} messages got {} positions",
                    self.messages,
                    positions.len()
                ));
                self.fail(&e);
            }
            Ok(other) => {
                for call in self.calls {
                    let _ = call.reply.send(Ok(other.clone()));
                }
            }
            Err(e) => self.fail(&e),
        }
    }

    fn fail(self, e: &BrokerError) {
        for call in self.calls {
            let _ = call.reply.send(Err(e.clone()));
        }
    }

    /// The calls, one batch each (to be proposed one by one).
    pub fn split(self) -> Vec<Batch> {
        self.calls.into_iter().map(Batch::new).collect()
    }
}

/// The handlers' side: queues a call's messages for the next send entry.
#[derive(Debug)]
pub struct SendBatcher {
    tx: mpsc::Sender<PendingSend>,
    rx: std::sync::Mutex<Option<mpsc::Receiver<PendingSend>>>,
    /// Whether the loop was started (so that sends skip the lock above).
    started: std::sync::atomic::AtomicBool,
    pub config: SendBatchConfig,
}

impl SendBatcher {
    pub fn new(config: SendBatchConfig) -> Self {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        Self {
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
            started: std::sync::atomic::AtomicBool::new(false),
            config,
        }
    }

    /// Stores `messages` (`metas[i]` placing `messages[i]`) in a send entry of
    /// `broker`'s log (this batcher's owner); the apply's result for them. The first call
    /// starts the loop.
    pub async fn send(
        &self,
        broker: &Arc<Broker>,
        metas: Vec<MessageMeta>,
        messages: Vec<StoredMessage>,
    ) -> BrokerResult<CommandResult> {
        if metas.len() != messages.len() {
            return Err(BrokerError::Internal(format!(
                "{} messages placed by {} metas",
                messages.len(),
                metas.len()
            )));
        }
        if !self.started.load(std::sync::atomic::Ordering::Acquire)
            && let Some(rx) = self.take_receiver()
        {
            tokio::spawn(run(Arc::downgrade(broker), rx, self.config, broker.stop_signal()));
        }
        let (reply, answer) = oneshot::channel();
        let call = PendingSend {
            metas,
            messages,
            reply,
        };
        self.tx
            .send(call)
            .await
            .map_err(|_| BrokerError::Unavailable("the node is shutting down".into()))?;
        answer.await.map_err(|_| {
            // The batcher stopped with the call queued or in flight: it may have been
            // proposed, so its outcome is unknown.
            BrokerError::Timeout(
                "the node stopped while the send was in flight; its outcome is unknown".into(),
            )
        })?
    }

    /// The receiver, to the first caller only.
    fn take_receiver(&self) -> Option<mpsc::Receiver<PendingSend>> {
        let rx = self.rx.lock().ok()?.take();
        self.started.store(true, std::sync::atomic::Ordering::Release);
        rx
    }
}

/// The batcher's loop: runs until `stop` turns true or the node is gone.
async fn run(
    broker: Weak<Broker>,
    mut rx: mpsc::Receiver<PendingSend>,
    limits: SendBatchConfig,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight.max(1)));
    let mut carried: Option<PendingSend> = None;
    loop {
        let first = match carried.take() {
            Some(call) => call,
            None => tokio::select! {
                call = rx.recv() => match call { Some(c) => c, None => return },
                _ = stop.wait_for(|s| *s) => return,
            },
        };
        // Calls arriving while every slot is taken join the next entry.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut batch = Batch::new(first);
        while let Ok(call) = rx.try_recv() {
            if let Err(call) = batch.try_add(call, &limits) {
                carried = Some(call);
                break;
            }
        }
        let Some(broker) = broker.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            propose(broker.as_ref(), batch).await;
            drop(permit);
        });
    }
}

/// What stores a command: the broker's Raft write (a fake in tests).
pub trait Propose {
    fn propose(&self, cmd: Command) -> impl Future<Output = BrokerResult<CommandResult>> + Send;
}

impl Propose for Broker {
    fn propose(&self, cmd: Command) -> impl Future<Output = BrokerResult<CommandResult>> + Send {
        self.write(cmd)
    }
}

/// Proposes a batch through `writer`; one refused as a whole is proposed again call by call.
#[tracing::instrument(name = "send_entry", level = "debug", skip_all, fields(calls = batch.calls(), messages = batch.messages()))]
async fn propose(writer: &impl Propose, batch: Batch) {
    let result = match batch.command(now_ms()) {
        Ok(cmd) => writer.propose(cmd).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(CommandResult::Rejected(r)) if batch.calls() > 1 => {
            tracing::debug!(rejection = %r, "merged send refused; proposing its calls one by one");
            for single in batch.split() {
                let result = match single.command(now_ms()) {
                    Ok(cmd) => writer.propose(cmd).await,
                    Err(e) => Err(e),
                };
                single.answer(result);
            }
        }
        result => batch.answer(result),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message of `size` body bytes; its record estimate is `65 + size`.
    fn message(i: usize, size: usize) -> StoredMessage {
        StoredMessage {
            msg_id: String::new(),
            topic: "t".into(),
            tag: i.is_multiple_of(2).then(|| format!("tag{i}")),
            keys: vec![format!("k{i}")],
            message_group: None,
            properties: Default::default(),
            kind: crate::message::StoredKind::Normal,
            born_timestamp_ms: i as u64,
            born_host: "h".into(),
            digest: None,
            body: bytes::Bytes::from(vec![i as u8; size]),
        }
    }

    fn call(n: usize, size: usize) -> (PendingSend, oneshot::Receiver<BrokerResult<CommandResult>>) {
        let (reply, rx) = oneshot::channel();
        let metas = (0..n)
            .map(|i| MessageMeta {
                topic: "t".into(),
                queue_id: i as u32,
                tag_hash: 0,
                msg_id: format!("m{i}"),
            })
            .collect();
        let messages = (0..n).map(|i| message(i, size)).collect();
        (
            PendingSend {
                metas,
                messages,
                reply,
            },
            rx,
        )
    }

    fn pos(offsets: std::ops::Range<u64>) -> Vec<QueuePosition> {
        offsets
            .map(|offset| QueuePosition { queue_id: 0, offset })
            .collect()
    }

    #[test]
    fn each_call_gets_its_own_run_of_positions() {
        let limits = SendBatchConfig::default();
        let (a, mut ra) = call(2, 10);
        let (b, mut rb) = call(3, 10);
        let mut batch = Batch::new(a);
        assert!(batch.try_add(b, &limits).is_ok());
        assert_eq!((batch.calls(), batch.messages()), (2, 5));
        let cmd = batch.command(7).expect("command");
        assert_eq!(
            raft_log::SlottedPayload::slot_count(&cmd),
            6,
            "header + 5 records"
        );
        batch.answer(Ok(CommandResult::Sent(pos(10..15))));
        assert_eq!(
            ra.try_recv().expect("a").expect("ok"),
            CommandResult::Sent(pos(10..12))
        );
        assert_eq!(
            rb.try_recv().expect("b").expect("ok"),
            CommandResult::Sent(pos(12..15))
        );
    }

    #[test]
    fn the_command_holds_each_message_s_record_as_encoded_alone() {
        let limits = SendBatchConfig::default();
        let (a, _ra) = call(2, 300);
        let (b, _rb) = call(1, 0);
        let expected: Vec<_> = a
            .messages
            .iter()
            .chain(&b.messages)
            .map(|m| m.encode().expect("encode"))
            .collect();
        let mut batch = Batch::new(a);
        assert!(batch.try_add(b, &limits).is_ok());
        let cmd = batch.command(7).expect("command");
        assert_eq!(cmd.records(), expected.as_slice());
        assert_eq!(
            StoredMessage::decode(&cmd.records()[1]).expect("decode"),
            message(1, 300)
        );
        let Ok(Header::Send { messages, .. }) = cmd.header() else {
            unreachable!("a send")
        };
        assert_eq!(messages.len(), 3);
        let again = <Command as raft_log::SlottedPayload>::from_encoded(cmd.encoding()).expect("decode");
        assert_eq!(again, cmd, "the layout is the slot encoding");
    }

    #[test]
    fn limits_hand_a_call_back_but_a_first_call_always_fits() {
        let limits = SendBatchConfig {
            max_messages: 4,
            max_bytes: 300,
            ..SendBatchConfig::default()
        };
        let (big, _rbig) = call(10, 50);
        let mut batch = Batch::new(big);
        assert_eq!(batch.messages(), 10, "a lone call goes whatever its size");
        let (next, _r) = call(1, 1);
        assert!(batch.try_add(next, &limits).is_err());

        let (a, _ra) = call(2, 40);
        let mut batch = Batch::new(a);
        let (too_many, _r) = call(3, 1);
        assert!(batch.try_add(too_many, &limits).is_err(), "5 messages > 4");
        let (too_big, _r) = call(1, 30);
        assert!(batch.try_add(too_big, &limits).is_err(), "210 + 95 bytes > 300");
        let (fits, _r) = call(1, 20);
        assert!(batch.try_add(fits, &limits).is_ok(), "210 + 85 bytes");
    }

    #[test]
    fn an_error_or_a_short_answer_reaches_every_call() {
        let limits = SendBatchConfig::default();
        let (a, mut ra) = call(1, 1);
        let (b, mut rb) = call(1, 1);
        let mut batch = Batch::new(a);
        assert!(batch.try_add(b, &limits).is_ok());
        batch.answer(Err(BrokerError::Timeout("unknown".into())));
        assert!(matches!(ra.try_recv(), Ok(Err(BrokerError::Timeout(_)))));
        assert!(matches!(rb.try_recv(), Ok(Err(BrokerError::Timeout(_)))));

        let (a, mut ra) = call(2, 1);
        let batch = Batch::new(a);
        batch.answer(Ok(CommandResult::Sent(pos(0..1))));
        assert!(matches!(ra.try_recv(), Ok(Err(BrokerError::Internal(_)))));
    }

    /// A writer that refuses any command naming topic "gone" and numbers the rest from 0;
    /// it notes each command's message count.
    #[derive(Default)]
    struct Fake(std::sync::Mutex<Vec<usize>>);

    impl Propose for Fake {
        async fn propose(&self, cmd: Command) -> BrokerResult<CommandResult> {
            let Ok(Header::Send { messages, .. }) = cmd.header() else {
                return Err(BrokerError::Internal("not a send".into()));
            };
            self.0.lock().expect("writes").push(messages.len());
            if messages.iter().any(|m| m.topic == "gone") {
                return Ok(CommandResult::Rejected(crate::command::Rejection::UnknownTopic(
                    "gone".into(),
                )));
            }
            Ok(CommandResult::Sent(pos(0..messages.len() as u64)))
        }
    }

    #[tokio::test]
    async fn a_refused_merged_entry_is_retried_call_by_call() {
        let limits = SendBatchConfig::default();
        let (a, mut ra) = call(2, 1);
        let (mut gone, mut rg) = call(1, 1);
        gone.metas[0].topic = "gone".into();
        let (b, mut rb) = call(3, 1);
        let mut batch = Batch::new(a);
        assert!(batch.try_add(gone, &limits).is_ok());
        assert!(batch.try_add(b, &limits).is_ok());
        let fake = Fake::default();
        propose(&fake, batch).await;
        assert_eq!(
            *fake.0.lock().expect("writes"),
            vec![6, 2, 1, 3],
            "merged, then one by one"
        );
        assert_eq!(
            ra.try_recv().expect("a").expect("ok"),
            CommandResult::Sent(pos(0..2))
        );
        assert!(matches!(rg.try_recv(), Ok(Ok(CommandResult::Rejected(_)))));
        assert_eq!(
            rb.try_recv().expect("b").expect("ok"),
            CommandResult::Sent(pos(0..3))
        );
    }

    #[tokio::test]
    async fn a_refused_lone_call_is_not_proposed_twice() {
        let (mut gone, mut rg) = call(1, 1);
        gone.metas[0].topic = "gone".into();
        let fake = Fake::default();
        propose(&fake, Batch::new(gone)).await;
        assert_eq!(*fake.0.lock().expect("writes"), vec![1]);
        assert!(matches!(rg.try_recv(), Ok(Ok(CommandResult::Rejected(_)))));
    }

    #[test]
    fn split_gives_one_batch_per_call_in_order() {
        let limits = SendBatchConfig::default();
        let (a, _ra) = call(2, 1);
        let (b, _rb) = call(3, 1);
        let mut batch = Batch::new(a);
        assert!(batch.try_add(b, &limits).is_ok());
        let parts = batch.split();
        assert_eq!(parts.iter().map(Batch::messages).collect::<Vec<_>>(), vec![2, 3]);
    }
}
