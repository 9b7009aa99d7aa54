//! A query by message id or key: index candidates, checked against the messages.
//!
//! A candidate counts only if its record can still be read, names the topic and carries
//! the id or key asked for, and the topic's consume queue holds it (which also drops
//! sends the state machine refused and messages of a deleted earlier incarnation of the
//! topic). Its queue offset is found by a binary search of that consume queue.

use std::time::Duration;

use super::MessageIndex;
use super::entry::KeyKind;
use super::entry::key_hash;
use crate::error::BrokerError;
use crate::error::BrokerResult;
use crate::error::InvalidCode;
use crate::message::StoredMessage;
use crate::sm::StateMachine;

/// What to look for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub topic: String,
    pub kind: KeyKind,
    pub key: String,
    /// At most this many messages (capped by the configuration).
    pub max: usize,
    /// Store-time range, inclusive.
    pub begin_ms: u64,
    pub end_ms: u64,
}

/// A message found, with where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub message: StoredMessage,
    pub queue_id: u32,
    pub offset: u64,
    pub log_index: u64,
    pub store_time_ms: u64,
}

/// Candidates read per message asked for: room for collisions and refused sends.
const CANDIDATES_PER_RESULT: usize = 4;

/// How long a query waits for the index to reach what the node had applied when the
/// query came (a message just sent is then found).
pub const CATCH_UP_WAIT: Duration = Duration::from_secs(3);

impl Query {
    pub fn validate(&self) -> BrokerResult<()> {
        let invalid = |code, m: &str| Err(BrokerError::invalid(code, m.to_owned()));
        if self.topic.is_empty() {
            return invalid(InvalidCode::IllegalTopic, "a query needs a topic");
        }
        if self.key.is_empty() {
            return invalid(InvalidCode::BadRequest, "a query needs a message id or a key");
        }
        if self.begin_ms > self.end_ms {
            return invalid(
                InvalidCode::BadRequest,
                "the query's time range ends before it begins",
            );
        }
        Ok(())
    }
}

/// Waits until the index covers `applied` or `wait` passes; returns its progress.
pub async fn caught_up(index: &MessageIndex, applied: u64, wait: Duration) -> u64 {
    let mut progress = index.subscribe_progress();
    let _ = tokio::time::timeout(wait, progress.wait_for(|p| *p >= applied)).await;
    index.progress()
}

/// Runs `q` on the index and checks every candidate (blocking: reads files). `read`
/// gives the message at (log index, slot), `None` if the log no longer has it.
pub fn run(
    index: &MessageIndex,
    read: impl Fn(u64, u32) -> BrokerResult<Option<StoredMessage>>,
    sm: &StateMachine,
    q: &Query,
) -> BrokerResult<Vec<Found>> {
    q.validate()?;
    let max = q.max.clamp(1, index.config().max_query_results as usize);
    let hash = key_hash(q.kind, &q.topic, &q.key);
    let candidates = index.lookup(hash, q.begin_ms, q.end_ms, max * CANDIDATES_PER_RESULT)?;
    let mut out = Vec::new();
    for c in candidates {
        if out.len() >= max {
            break;
        }
        // None: purged from the log (retention, snapshot install).
        let Some(message) = read(c.log_index, c.slot)? else {
            continue;
        };
        let matches = message.topic == q.topic
            && match q.kind {
                KeyKind::MessageId => message.msg_id == q.key,
                KeyKind::Key => message.keys.contains(&q.key),
            };
        if !matches {
            continue;
        }
        let Some(offset) = offset_of(sm, &q.topic, c.queue_id, c.log_index, c.slot)? else {
            continue;
        };
        out.push(Found {
            message,
            queue_id: c.queue_id,
            offset,
            log_index: c.log_index,
            store_time_ms: c.store_time_ms,
        });
    }
    Ok(out)
}

/// The offset of the message at (`log_index`, `slot`) in the queue, if the queue holds
/// it. Offsets grow with log position, so a binary search finds it; offsets below the
/// queue's first kept one read as empty and count as "before".
pub fn offset_of(
    sm: &StateMachine,
    topic: &str,
    queue_id: u32,
    log_index: u64,
    slot: u32,
) -> BrokerResult<Option<u64>> {
    let target = (log_index, slot);
    let (mut lo, mut hi) = (0u64, sm.next_offset(topic, queue_id)?);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match sm.read_cq(topic, queue_id, mid, 1)?.first() {
            Some(e) if (e.log_index, e.slot) >= target => hi = mid,
            _ => lo = mid + 1,
        }
    }
    let at = sm.read_cq(topic, queue_id, lo, 1)?;
    Ok(at.first().filter(|e| (e.log_index, e.slot) == target).map(|_| lo))
}
