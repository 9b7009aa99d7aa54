//! PullMessage: a pull consumer reads a queue from an offset it manages itself.
//!
//! Served by whichever node the client called, followers included: the state machine
//! holds committed messages only, so every node's answer is committed data. The reply is a
//! stream: a status, the messages (tag-filtered), then the offset to pull next.
//!
//! - messages found: `OK`, the messages, the offset after the last one looked at;
//! - nothing (yet): the call long-polls until a message arrives or its time is up (never
//!   past the client's gRPC deadline less `long_poll_margin_ms`), then `MESSAGE_NOT_FOUND`
//!   and the offset to continue from (past messages the filter skipped);
//! - an offset beyond the queue's end: `ILLEGAL_OFFSET` and the end;
//! - an offset retention already purged ("offset moved"): `OK`, no messages, and the first
//!   offset still held — the consumer continues there instead of looping on an error.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::stream;
use raftmq_proto::prost_types;
use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::Code;
use raftmq_proto::rocketmq::v2::pull_message_response::Content;
use tokio::time::Instant;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use super::BoxStream;
use super::filter::parse_filter;
use super::long_poll;
use super::offsets::first_available;
use super::offsets::group_name;
use super::offsets::queue_of;
use super::status;
use crate::command::Permission;
use crate::command::Rejection;
use crate::command::TagFilter;
use crate::context::Broker;
use crate::delivered_digest::DigestForm;
use crate::error::BrokerError;
use crate::error::BrokerResult;
use crate::error::InvalidCode;
use crate::sm::CqEntry;
use crate::wire_message;
use crate::wire_message::Placement;

/// Most messages one pull may ask for.
pub const MAX_PULL_BATCH: i32 = 1024;
/// About the most body bytes one pull returns (at least one message, however large).
const MAX_PULL_BYTES: u64 = 16 << 20;
/// Most consume-queue entries one pull looks at (tag filters may skip many).
const SCAN_LIMIT: u64 = 16 * 1024;
/// Consume-queue entries read at once.
const CQ_CHUNK: u64 = 256;

type Item = pb::PullMessageResponse;

#[tracing::instrument(name = "pull_message", skip_all, fields(offset = req.get_ref().offset))]
pub async fn handle(
    broker: &Arc<Broker>,
    req: Request<pb::PullMessageRequest>,
) -> Result<Response<BoxStream<Item>>, Status> {
    let caller = Caller {
        grpc_timeout: long_poll::grpc_timeout(req.metadata()),
        digest_form: DigestForm::of_caller(req.metadata()),
    };
    let items = match pull(broker, &req.into_inner(), caller).await {
        Ok(items) => items,
        Err(e) => {
            tracing::debug!(error = %e, "pull refused");
            vec![item(Content::Status(status::from_error(&e)))]
        }
    };
    Ok(Response::new(Box::pin(stream::iter(items.into_iter().map(Ok)))))
}

/// What the call's metadata says.
#[derive(Debug, Clone, Copy)]
struct Caller {
    grpc_timeout: Option<Duration>,
    digest_form: DigestForm,
}

/// A checked pull request.
#[derive(Debug, Clone)]
struct Pull {
    topic: String,
    queue_id: u32,
    offset: u64,
    batch: usize,
    filter: TagFilter,
    /// How long to wait for messages when there are none.
    wait: Duration,
    /// How the caller checks body digests.
    digest_form: DigestForm,
}

/// What a read of the queue found.
#[derive(Debug)]
enum Outcome {
    Found {
        messages: Vec<pb::EncodedMessage>,
        next: u64,
    },
    /// No message passed the filter before `next`; `at_end`: the queue ends there.
    Nothing { next: u64, at_end: bool },
    /// The offset is beyond the queue's end.
    Beyond { end: u64 },
    /// The offset was purged; the queue's first available offset is `first`.
    Moved { first: u64 },
}

async fn pull(broker: &Arc<Broker>, req: &pb::PullMessageRequest, caller: Caller) -> BrokerResult<Vec<Item>> {
    let mut p = parse(broker, req, caller)?;
    let deadline = Instant::now() + p.wait;
    let requested = p.offset;
    // Only batches that append to this queue (or change topics) wake this pull.
    let mut changes = broker.sm.subscribe_queue(&p.topic, p.queue_id);
    loop {
        // Marked seen before reading: a change after the read wakes the wait below.
        changes.borrow_and_update();
        match read(broker, &p).await? {
            Outcome::Nothing { next, at_end: true } if Instant::now() < deadline => {
                p.offset = next;
                let woken = tokio::select! {
                    w = tokio::time::timeout_at(deadline, changes.changed()) => matches!(w, Ok(Ok(()))),
                    () = broker.stopped() => false,
                };
                if !woken {
                    return Ok(reply(requested, Outcome::Nothing { next, at_end: true }));
                }
            }
            outcome => return Ok(reply(requested, outcome)),
        }
    }
}

fn parse(broker: &Broker, req: &pb::PullMessageRequest, caller: Caller) -> BrokerResult<Pull> {
    group_name(req.group.as_ref())?;
    let (topic, queue_id) = queue_of(broker, req.message_queue.as_ref())?;
    if !matches!(topic.permission, Permission::Read | Permission::ReadWrite) {
        return Err(BrokerError::Rejected(Rejection::NotReadable(topic.name)));
    }
    let offset = u64::try_from(req.offset).map_err(|_| {
        BrokerError::invalid(
            InvalidCode::IllegalOffset,
            format!("offset {} is negative", req.offset),
        )
    })?;
    if !(1..=MAX_PULL_BATCH).contains(&req.batch_size) {
        return Err(BrokerError::invalid(
            InvalidCode::BadRequest,
            format!("batch_size {} is not in 1..={MAX_PULL_BATCH}", req.batch_size),
        ));
    }
    let c = &broker.config;
    let wait = wait_budget(
        req.long_polling_timeout.as_ref(),
        Duration::from_millis(c.max_long_poll_ms),
        Duration::from_millis(c.long_poll_margin_ms),
        caller.grpc_timeout,
    )?;
    Ok(Pull {
        topic: topic.name,
        queue_id,
        offset,
        batch: req.batch_size as usize,
        filter: parse_filter(req.filter_expression.as_ref())?.hashes,
        wait,
        digest_form: caller.digest_form,
    })
}

/// How long a pull may wait for messages: what the client asked, at most `max`, and ending
/// `margin` before its gRPC deadline. Unlike a receive (which then waits the most), a pull
/// that names no polling time does not wait.
fn wait_budget(
    requested: Option<&prost_types::Duration>,
    max: Duration,
    margin: Duration,
    grpc_timeout: Option<Duration>,
) -> BrokerResult<Duration> {
    let requested = requested.copied().unwrap_or_default();
    let window = long_poll::poll_window(Some(&requested), max)?;
    Ok(long_poll::poll_budget(window, grpc_timeout, margin))
}

/// How far behind its queue's end a pull may start and still be tried on the async worker
/// ([`read`]). Bounds what such a try scans; that few consume-queue entries are a few
/// blocks of RocksDB, in its memtable or block cache when the queue is busy.
pub const MEMORY_TAIL: u64 = 4096;

/// Where [`read_queue`] may read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The async worker: messages only from the commit log's read cache (the apply read
    /// them just before the pull was woken), never a log file. The state machine's point
    /// reads and the short consume-queue scan still go to RocksDB, as the request's topic
    /// lookup always did: on a queue idle long enough to leave RocksDB's caches, the
    /// first of them may wait for the disk.
    Memory,
    /// Anything, waiting for the disk if it must (blocking pool only).
    Disk,
}

/// Reads the queue: on the async worker when [`Source::Memory`] can answer, else on the
/// blocking pool. Each hand-off to the blocking pool cost two thread wake-ups
/// and a contended lock, for every pull of a consumer that keeps up; a consumer catching up
/// from far behind, or an entry the cache dropped, still goes there.
async fn read(broker: &Arc<Broker>, p: &Pull) -> BrokerResult<Outcome> {
    if let Some(outcome) = read_queue(broker, p, Source::Memory)? {
        return Ok(outcome);
    }
    let (broker, p) = (broker.clone(), p.clone());
    tokio::task::spawn_blocking(move || read_queue(&broker, &p, Source::Disk))
        .await
        .map_err(|e| BrokerError::Internal(format!("pull task failed: {e}")))??
        .ok_or_else(|| BrokerError::Internal("a pull read from disk gave no answer".into()))
}

/// What the queue holds from `p.offset` on; `None` only from [`Source::Memory`], when the
/// answer needs a disk read.
fn read_queue(broker: &Broker, p: &Pull, source: Source) -> BrokerResult<Option<Outcome>> {
    if broker.sm.topic(&p.topic)?.is_none() {
        return Err(BrokerError::Rejected(Rejection::UnknownTopic(p.topic.clone())));
    }
    let end = broker.sm.next_offset(&p.topic, p.queue_id)?;
    if p.offset > end {
        return Ok(Some(Outcome::Beyond { end }));
    }
    let memory = source == Source::Memory;
    if memory && end - p.offset > MEMORY_TAIL {
        return Ok(None);
    }
    let Some((picked, next)) = scan(broker, p, end)? else {
        if memory {
            return Ok(None);
        }
        let first = first_available(broker, &p.topic, p.queue_id, end)?;
        return Ok(Some(Outcome::Moved { first }));
    };
    if picked.is_empty() {
        return Ok(Some(Outcome::Nothing {
            next,
            at_end: next >= end,
        }));
    }
    read_messages(broker, p, &picked, next, source)
}

/// The messages of the entries a scan picked, in order, encoded for the wire
/// ([`wire_message`]); `next` is where the scan ended. A read that fails after some
/// messages answers with those (the next pull reports it), and so does a message
/// [`Source::Memory`] cannot read. `None` if it cannot read the first.
fn read_messages(
    broker: &Broker,
    p: &Pull,
    picked: &[(u64, CqEntry)],
    next: u64,
    source: Source,
) -> BrokerResult<Option<Outcome>> {
    let mut messages = Vec::with_capacity(picked.len());
    let mut heads = BytesMut::with_capacity(picked.len() * wire_message::HEAD_BYTES);
    for (offset, e) in picked {
        match read_one(broker, p, (*offset, e), source, &mut heads) {
            Ok(Some(m)) => messages.push(m),
            Ok(None) if messages.is_empty() => return Ok(None),
            Err(err) if messages.is_empty() => return Err(err),
            Ok(None) => {
                return Ok(Some(Outcome::Found {
                    messages,
                    next: *offset,
                }));
            }
            Err(err) => {
                tracing::warn!(offset, error = %err, "cannot read a message; answering with those before it");
                return Ok(Some(Outcome::Found {
                    messages,
                    next: *offset,
                }));
            }
        }
    }
    Ok(Some(Outcome::Found { messages, next }))
}

/// The message of one picked entry (at `offset`), encoded; its head goes to `heads`.
/// `None` if [`Source::Memory`] cannot read it.
fn read_one(
    broker: &Broker,
    p: &Pull,
    (offset, e): (u64, &CqEntry),
    source: Source,
    heads: &mut BytesMut,
) -> BrokerResult<Option<pb::EncodedMessage>> {
    let record = match source {
        Source::Memory => match broker.read_cached_record(e.log_index, e.slot)? {
            Some(record) => record,
            None => return Ok(None),
        },
        Source::Disk => broker.read_record(e.log_index, e.slot)?,
    };
    wire_message::encode(&record, &placement(broker, p, offset, e), heads).map(Some)
}

/// Consume-queue entries a scan picked, each with its offset, and the offset after the last
/// entry it looked at.
type Scanned = (Vec<(u64, CqEntry)>, u64);

/// Entries from `p.offset` on that pass the filter: at most `p.batch`, about
/// [`MAX_PULL_BYTES`], looking at [`SCAN_LIMIT`] entries at most. `None` when `p.offset`
/// itself is no longer held (purged).
fn scan(broker: &Broker, p: &Pull, end: u64) -> BrokerResult<Option<Scanned>> {
    // Room for every entry up to the end, as far as the batch goes: one allocation.
    let ahead = (end - p.offset).min(SCAN_LIMIT);
    let mut picked = Vec::with_capacity(usize::try_from(ahead).unwrap_or(usize::MAX).min(p.batch));
    let mut bytes = 0u64;
    let mut pos = p.offset;
    while pos < end && pos - p.offset < SCAN_LIMIT {
        let chunk = broker
            .sm
            .read_cq(&p.topic, p.queue_id, pos, (end - pos).min(CQ_CHUNK) as usize)?;
        if chunk.is_empty() {
            if pos == p.offset {
                return Ok(None);
            }
            break;
        }
        for e in chunk {
            let full =
                picked.len() >= p.batch || (!picked.is_empty() && bytes + u64::from(e.size) > MAX_PULL_BYTES);
            if full {
                return Ok(Some((picked, pos)));
            }
            if p.filter.matches(e.tag_hash) {
                bytes += u64::from(e.size);
                picked.push((pos, e));
            }
            pos += 1;
        }
    }
    Ok(Some((picked, pos)))
}

fn placement<'a>(broker: &'a Broker, p: &Pull, queue_offset: u64, e: &CqEntry) -> Placement<'a> {
    Placement {
        queue_id: p.queue_id,
        queue_offset,
        store_time_ms: e.store_time_ms,
        store_host: broker.client_addr(),
        digest_form: p.digest_form,
    }
}

fn item(content: Content) -> Item {
    pb::PullMessageResponse {
        content: Some(content),
    }
}

fn next_item(offset: u64) -> Item {
    item(Content::NextOffset(i64::try_from(offset).unwrap_or(i64::MAX)))
}

/// The reply stream's items for an outcome of a pull from `requested`.
fn reply(requested: u64, outcome: Outcome) -> Vec<Item> {
    let (st, messages, next) = match outcome {
        Outcome::Found { messages, next } => (status::ok(), messages, next),
        Outcome::Nothing { next, .. } => (
            status::status(Code::MessageNotFound, "no new message"),
            Vec::new(),
            next,
        ),
        Outcome::Beyond { end } => (
            status::status(
                Code::IllegalOffset,
                format!("offset {requested} is beyond the queue's end {end}"),
            ),
            Vec::new(),
            end,
        ),
        Outcome::Moved { first } => (
            status::status(
                Code::Ok,
                format!("offset {requested} was purged; continue at {first}"),
            ),
            Vec::new(),
            first,
        ),
    };
    let mut items = Vec::with_capacity(messages.len() + 2);
    items.push(item(Content::Status(st)));
    items.extend(messages.into_iter().map(|m| item(Content::Encoded(m))));
    items.push(next_item(next));
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_polls_end_before_the_deadline() {
        let ms = Duration::from_millis;
        let d = |millis: i64| raftmq_proto::prost_types::Duration {
            seconds: millis / 1000,
            nanos: (millis % 1000) as i32 * 1_000_000,
        };
        let budget = |requested: Option<i64>, grpc: Option<Duration>| {
            wait_budget(requested.map(d).as_ref(), ms(20_000), ms(2_000), grpc)
        };
        assert_eq!(budget(Some(5_000), None).expect("5s"), ms(5_000));
        assert_eq!(
            budget(Some(60_000), None).expect("60s"),
            ms(20_000),
            "capped by the server"
        );
        assert_eq!(budget(Some(15_000), Some(ms(10_000))).expect("15s"), ms(8_000));
        assert_eq!(budget(Some(15_000), Some(ms(1_000))).expect("late"), ms(0));
        assert_eq!(budget(Some(0), Some(ms(30_000))).expect("0"), ms(0));
        assert_eq!(budget(None, None).expect("absent"), ms(0), "absent: no wait");
        match budget(Some(-1_000), None) {
            Err(BrokerError::Invalid { code, .. }) => assert_eq!(code, InvalidCode::IllegalPollingTime),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pulls_share_the_receive_filter_rules() {
        let f = |r#type: pb::FilterType, e: &str| pb::FilterExpression {
            r#type: r#type as i32,
            expression: e.into(),
        };
        let hashes = parse_filter(Some(&f(pb::FilterType::Tag, "TagA || TagB"))).expect("tags");
        assert!(hashes.hashes.matches(crate::command::tag_hash("TagB")));
        for bad in [f(pb::FilterType::Sql, "a > 1"), f(pb::FilterType::Tag, "A ||")] {
            match parse_filter(Some(&bad)) {
                Err(BrokerError::Invalid { code, .. }) => assert_eq!(code, InvalidCode::IllegalFilter),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    fn encoded() -> pb::EncodedMessage {
        pb::EncodedMessage {
            head: bytes::Bytes::new(),
            body: bytes::Bytes::new(),
        }
    }

    fn contents(items: &[Item]) -> Vec<&Content> {
        items.iter().filter_map(|i| i.content.as_ref()).collect()
    }

    #[test]
    fn replies_are_a_status_the_messages_and_the_next_offset() {
        let found = reply(
            3,
            Outcome::Found {
                messages: vec![encoded(), encoded()],
                next: 5,
            },
        );
        let c = contents(&found);
        assert_eq!(c.len(), 4);
        assert!(matches!(c[0], Content::Status(s) if s.code == Code::Ok as i32));
        assert!(matches!(c[1], Content::Encoded(_)) && matches!(c[2], Content::Encoded(_)));
        assert_eq!(c[3], &Content::NextOffset(5));
        let cases = [
            (
                Outcome::Nothing {
                    next: 9,
                    at_end: true,
                },
                Code::MessageNotFound,
                9,
            ),
            (Outcome::Beyond { end: 4 }, Code::IllegalOffset, 4),
            (Outcome::Moved { first: 100 }, Code::Ok, 100),
        ];
        for (outcome, code, next) in cases {
            let items = reply(3, outcome);
            let c = contents(&items);
            assert_eq!(c.len(), 2);
            assert!(
                matches!(c[0], Content::Status(s) if s.code == code as i32),
                "{code:?}"
            );
            assert_eq!(c[1], &Content::NextOffset(next as i64));
        }
    }
}
