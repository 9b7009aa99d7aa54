//! ReceiveMessage (server streaming): a long-polling pop.
//!
//! The request is validated first (group, topic, filter, batch size, invisibility, polling
//! time). The poll then loops until its deadline — the requested polling time, cut to end
//! `long_poll_margin_ms` before the client's own gRPC deadline: it checks locally, from
//! the state machine, whether a pop would hand out anything ([`long_poll::readiness`]),
//! and only then proposes a `Pop` (each one is a Raft write with an fsync, so a receive
//! never proposes in a loop: a pop that came back empty is not repeated until the state
//! changes). Otherwise it waits for the next applied change, the next in-flight message
//! becoming visible again, or the deadline.
//!
//! Queues: the queue the client names (official clients name one from the route) is tried
//! first, then all others of the topic round-robin, as RocketMQ's proxy pops any queue of
//! the broker; id −1 means any queue.
//!
//! The answer, as RocketMQ 5 gives it: `Status(OK)`, one `Message` per message, then the
//! `DeliveryTimestamp`; or a single `Status(MESSAGE_NOT_FOUND)` for an empty poll, or a
//! single error status. Consume queues index tag hashes, so a hash collision can pop a
//! message the filter does not want: it is read, recognised, and acknowledged at once.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream;
use raftmq_proto::prost_types;
use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::Code;
use raftmq_proto::rocketmq::v2::receive_message_response::Content;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use super::BoxStream;
use super::ack_message::consumer_names;
use super::ack_message::propose_ack;
use super::ack_message::require_topic;
use super::change_invisible::MAX_INVISIBLE_MS;
use super::filter::Filter;
use super::filter::parse_filter;
use super::heartbeat::client_id;
use super::long_poll;
use super::long_poll::QueueView;
use super::receipt;
use super::status;
use crate::clients::ClientInfo;
use crate::command::Command;
use crate::command::CommandResult;
use crate::command::Header;
use crate::command::MessageKind;
use crate::command::Permission;
use crate::command::PopRequest;
use crate::command::Popped;
use crate::command::Rejection;
use crate::command::TagFilter;
use crate::context::Broker;
use crate::context::now_ms;
use crate::delivered_digest::DigestForm;
use crate::error::BrokerError;
use crate::error::BrokerResult;
use crate::error::InvalidCode;
use crate::forward::ensure_leader;
use crate::message::Delivery;
use crate::message::StoredMessage;

/// Most messages one receive hands out (RocketMQ: 32); a client asking for more gets 32.
pub const MAX_BATCH: u32 = 32;
/// Shortest invisibility a receive may ask for (RocketMQ: 10 s).
pub const MIN_INVISIBLE_MS: u64 = 10_000;
/// Invisibility of a receive that names none (push consumers with `auto_renew`).
pub const DEFAULT_INVISIBLE_MS: u64 = 30_000;
/// Most pops one receive proposes (each one changed the state, or it would not be tried).
const MAX_POPS_PER_RECEIVE: usize = 32;

type Item = Result<pb::ReceiveMessageResponse, Status>;

#[tracing::instrument(name = "receive_message", skip_all)]
pub async fn handle(
    broker: &Arc<Broker>,
    req: Request<pb::ReceiveMessageRequest>,
) -> Result<Response<BoxStream<pb::ReceiveMessageResponse>>, Status> {
    let client = client_of(broker, &req);
    let client_id = client_id(req.metadata()).map(str::to_owned);
    let only_requested = client.as_ref().is_some_and(ClientInfo::is_push_consumer)
        || req
            .metadata()
            .get(QUEUE_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("only"));
    let call = Call {
        started: Instant::now(),
        grpc_timeout: long_poll::grpc_timeout(req.metadata()),
        client,
        client_id,
        only_requested,
        digest_form: DigestForm::of_caller(req.metadata()),
    };
    let items = stream::once(receive(broker.clone(), req.into_inner(), call)).flat_map(stream::iter);
    Ok(Response::new(Box::pin(items)))
}

/// What the call's metadata says.
#[derive(Debug)]
struct Call {
    started: Instant,
    grpc_timeout: Option<Duration>,
    client: Option<ClientInfo>,
    client_id: Option<String>,
    /// Pop the requested queue only: a push consumer owns the queue it was assigned, and
    /// must not be handed another member's.
    only_requested: bool,
    /// How the client checks body digests.
    digest_form: DigestForm,
}

/// The request header by which a client asks to pop the requested queue only
/// (`x-raftmq-queue: only`); push consumers (by their registered settings) always do.
pub const QUEUE_HEADER: &str = "x-raftmq-queue";

/// The calling client's registered settings (they say FIFO and max attempts).
fn client_of<T>(broker: &Broker, req: &Request<T>) -> Option<ClientInfo> {
    broker.clients.get(client_id(req.metadata())?)
}

#[tracing::instrument(name = "receive", skip_all)]
async fn receive(broker: Arc<Broker>, req: pb::ReceiveMessageRequest, call: Call) -> Vec<Item> {
    let r = match Receive::new(&broker, req, call) {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = %e, "receive refused");
            return vec![status_item(status::from_error(&e))];
        }
    };
    let r = Arc::new(r);
    match poll(&broker, &r).await {
        Ok(ready) if ready.is_empty() => vec![status_item(status::status(
            Code::MessageNotFound,
            "no new message",
        ))],
        Ok(ready) => found(&broker, &r, ready),
        Err(e) => {
            tracing::debug!(error = %e, "receive failed");
            vec![status_item(status::from_error(&e))]
        }
    }
}

/// A validated receive.
#[derive(Debug)]
struct Receive {
    group: String,
    topic: String,
    /// Queues in the order a pop tries them.
    queue_ids: Vec<u32>,
    batch: u32,
    invisible_ms: u64,
    filter: Filter,
    /// The client consumes FIFO (its settings say so).
    fifo: bool,
    /// The topic is a FIFO topic (the state machine then locks queues whatever the client says).
    topic_fifo: bool,
    max_attempts: u32,
    deadline: Instant,
    digest_form: DigestForm,
}

impl Receive {
    fn new(broker: &Broker, req: pb::ReceiveMessageRequest, call: Call) -> BrokerResult<Self> {
        let queue = req.message_queue.unwrap_or_default();
        let (group, topic) = consumer_names(req.group.as_ref(), queue.topic.as_ref())?;
        let filter = parse_filter(req.filter_expression.as_ref())?;
        let batch = batch_size(req.batch_size)?;
        let invisible_ms = invisible_ms(req.invisible_duration.as_ref(), req.auto_renew)?;
        let cfg = &broker.config;
        let max_poll = Duration::from_millis(cfg.max_long_poll_ms);
        let window = long_poll::poll_window(req.long_polling_timeout.as_ref(), max_poll)?;
        let margin = Duration::from_millis(cfg.long_poll_margin_ms);
        let budget = long_poll::poll_budget(window, call.grpc_timeout, margin);
        let config = require_topic(broker, &topic)?;
        if !matches!(config.permission, Permission::Read | Permission::ReadWrite) {
            return Err(BrokerError::Rejected(Rejection::NotReadable(topic)));
        }
        let client = call.client.as_ref();
        let queue_ids = if call.only_requested {
            vec![assigned_queue(
                broker,
                &call,
                &group,
                &topic,
                queue.id,
                config.queues,
            )?]
        } else {
            queue_order(queue.id, config.queues, broker.next_round_robin())
        };
        Ok(Self {
            queue_ids,
            batch,
            invisible_ms,
            filter,
            fifo: client.is_some_and(ClientInfo::fifo),
            topic_fifo: config.kind == MessageKind::Fifo,
            max_attempts: client
                .and_then(ClientInfo::max_attempts)
                .unwrap_or(cfg.max_delivery_attempts),
            deadline: call.started.checked_add(budget).unwrap_or(call.started),
            digest_form: call.digest_form,
            group,
            topic,
        })
    }
}

/// At least 1; more than [`MAX_BATCH`] is cut to it.
fn batch_size(n: i32) -> BrokerResult<u32> {
    match u32::try_from(n) {
        Ok(n) if n > 0 => Ok(n.min(MAX_BATCH)),
        _ => Err(BrokerError::invalid(
            InvalidCode::BadRequest,
            "batch_size must be positive",
        )),
    }
}

/// The requested invisibility (10 s ..= 12 h); absent (or zero with `auto_renew`, which
/// push consumers send without one) means [`DEFAULT_INVISIBLE_MS`].
fn invisible_ms(d: Option<&prost_types::Duration>, auto_renew: bool) -> BrokerResult<u64> {
    let zero = |d: &&prost_types::Duration| d.seconds == 0 && d.nanos == 0;
    let Some(d) = d.filter(|d| !(auto_renew && zero(d))) else {
        return Ok(DEFAULT_INVISIBLE_MS);
    };
    match crate::message::duration_ms(d) {
        Some(ms) if (MIN_INVISIBLE_MS..=MAX_INVISIBLE_MS).contains(&ms) => Ok(ms),
        _ => Err(BrokerError::invalid(
            InvalidCode::IllegalInvisibleTime,
            "invisible_duration must be between 10 seconds and 12 hours",
        )),
    }
}

/// The one queue a push consumer may pop: it must exist and be granted to the caller by
/// this leader (QueryAssignment), so that a member that lost a queue cannot take messages
/// from its next owner.
fn assigned_queue(
    broker: &Broker,
    call: &Call,
    group: &str,
    topic: &str,
    id: i32,
    queues: u32,
) -> BrokerResult<u32> {
    let queue = u32::try_from(id).ok().filter(|q| *q < queues).ok_or_else(|| {
        BrokerError::invalid(
            InvalidCode::BadRequest,
            format!("topic {topic} has no queue {id}"),
        )
    })?;
    let client = call.client_id.as_deref().unwrap_or("");
    let term = broker.current_term();
    if !broker.consumers.holds(term, group, topic, client, queue) {
        return Err(BrokerError::invalid(
            InvalidCode::NotAssigned,
            format!(
                "queue {queue} of topic {topic} is not assigned to this consumer of {group}; ask QueryAssignment"
            ),
        ));
    }
    Ok(queue)
}

/// The order a pop tries the topic's queues: the requested one first (if it exists), then
/// all others from the round-robin position `rr`.
pub fn queue_order(requested: i32, queues: u32, rr: u64) -> Vec<u32> {
    if queues == 0 {
        return Vec::new();
    }
    let start = (rr % u64::from(queues)) as u32;
    let mut order: Vec<u32> = (0..queues)
        .map(|i| ((u64::from(start) + u64::from(i)) % u64::from(queues)) as u32)
        .collect();
    if let Ok(q) = u32::try_from(requested)
        && q < queues
    {
        order.retain(|&x| x != q);
        order.insert(0, q);
    }
    order
}

/// A popped message, read.
#[derive(Debug)]
struct Ready {
    popped: Popped,
    message: StoredMessage,
}

/// Polls until something is delivered or the deadline passes (then an empty list).
#[tracing::instrument(skip_all, fields(group = %r.group, topic = %r.topic, batch = r.batch))]
async fn poll(broker: &Arc<Broker>, r: &Arc<Receive>) -> BrokerResult<Vec<Ready>> {
    let mut changes = broker.sm.subscribe_changes();
    // The state a pop found nothing in: not popped again until it changes.
    let mut stalled: Option<(Vec<QueueView>, usize)> = None;
    let mut after_empty_pop = false;
    let mut pops = 0;
    loop {
        let _ = changes.borrow_and_update();
        // Pops happen on the leader; a node that is not (any more) says where it is.
        ensure_leader(broker)?;
        let views = views(broker, r).await?;
        let ready = long_poll::readiness(&views, now_ms(), r.fifo || r.topic_fifo);
        let key = (views, ready.expired);
        if std::mem::take(&mut after_empty_pop) {
            stalled = Some(key.clone());
        }
        if ready.poppable && pops < MAX_POPS_PER_RECEIVE && stalled.as_ref() != Some(&key) {
            pops += 1;
            let popped = pop(broker, r).await?;
            after_empty_pop = popped.is_empty();
            let delivered = read_popped(broker, r, popped).await?;
            if !delivered.is_empty() {
                return Ok(delivered);
            }
            continue;
        }
        if Instant::now() >= r.deadline || broker.is_stopping() {
            return Ok(Vec::new());
        }
        tokio::select! {
            () = wait(&mut changes, ready.wake_at_ms, r.deadline) => {}
            () = broker.stopped() => {}
        }
    }
}

/// Waits for an applied change, the time an in-flight message becomes visible again, or
/// the deadline, whichever comes first.
async fn wait(changes: &mut watch::Receiver<u64>, wake_at_ms: Option<u64>, deadline: Instant) {
    let until = wake_at_ms
        .map(|at| Duration::from_millis(at.saturating_sub(now_ms()).saturating_add(1)))
        .and_then(|d| Instant::now().checked_add(d))
        .map_or(deadline, |wake| wake.min(deadline));
    tokio::select! {
        changed = changes.changed() => {
            if changed.is_err() {
                // The state machine is gone (shutting down): no more changes to wait for.
                tokio::time::sleep_until(until).await;
            }
        }
        () = tokio::time::sleep_until(until) => {}
    }
}

/// The group's state on the receive's queues, read on a blocking thread (up to every
/// queue of the topic, each with a scan of its consume queue under a tag filter).
async fn views(broker: &Arc<Broker>, r: &Arc<Receive>) -> BrokerResult<Vec<QueueView>> {
    let (b, r) = (broker.clone(), r.clone());
    tokio::task::spawn_blocking(move || r.queue_ids.iter().map(|&q| queue_view(&b, &r, q)).collect())
        .await
        .map_err(|e| BrokerError::Internal(format!("reading queue state failed: {e}")))?
}

fn queue_view(broker: &Broker, r: &Receive, queue_id: u32) -> BrokerResult<QueueView> {
    let sm = &broker.sm;
    let (next, inflight) = match sm.pop_state(&r.group, &r.topic, queue_id)? {
        Some(s) => (s.next, s.inflight.values().map(|i| i.visible_at_ms).collect()),
        None => (
            sm.committed_offset(&r.group, &r.topic, queue_id)?.unwrap_or(0),
            Vec::new(),
        ),
    };
    let end = sm.next_offset(&r.topic, queue_id)?;
    let wanted_new = match &r.filter.hashes {
        TagFilter::All => true,
        f if end > next => {
            let entries = sm.read_cq(&r.topic, queue_id, next, long_poll::scan_len(next, end))?;
            long_poll::wants_new(f, &entries, end - next)
        }
        TagFilter::Hashes(_) => false,
    };
    Ok(QueueView {
        queue_id,
        next,
        end,
        inflight,
        wanted_new,
    })
}

/// Proposes one pop.
async fn pop(broker: &Broker, r: &Receive) -> BrokerResult<Vec<Popped>> {
    let req = PopRequest {
        group: r.group.clone(),
        topic: r.topic.clone(),
        queue_ids: r.queue_ids.clone(),
        max: r.batch,
        invisible_ms: r.invisible_ms,
        now_ms: now_ms(),
        filter: r.filter.hashes.clone(),
        fifo: r.fifo,
        max_attempts: r.max_attempts,
    };
    let cmd = Command::control(Header::Pop(req)).map_err(|e| BrokerError::Internal(e.to_string()))?;
    match broker.write(cmd).await? {
        CommandResult::Popped(popped) => Ok(popped),
        CommandResult::Rejected(rejection) => Err(BrokerError::Rejected(rejection)),
        other => Err(BrokerError::Internal(format!("unexpected pop result {other:?}"))),
    }
}

/// Reads the popped messages. An unreadable one is skipped (it stays in flight, so it is
/// redelivered or dead-lettered later); one the filter does not want (a tag-hash
/// collision) is acknowledged at once.
async fn read_popped(broker: &Arc<Broker>, r: &Receive, popped: Vec<Popped>) -> BrokerResult<Vec<Ready>> {
    if popped.is_empty() {
        return Ok(Vec::new());
    }
    let b = broker.clone();
    let read = tokio::task::spawn_blocking(move || {
        popped
            .into_iter()
            .map(|p| (p, b.read_message(p.log_index, p.slot)))
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| BrokerError::Internal(format!("reading popped messages failed: {e}")))?;
    let mut ready = Vec::with_capacity(read.len());
    let mut unwanted = Vec::new();
    for (popped, message) in read {
        let (queue, offset) = (popped.receipt.queue_id, popped.receipt.offset);
        match message {
            Err(e) => tracing::warn!(error = %e, queue, offset, "popped message unreadable; not delivered"),
            Ok(m) if !r.filter.wants(m.tag.as_deref()) => unwanted.push(popped.receipt),
            Ok(message) => ready.push(Ready { popped, message }),
        }
    }
    if !unwanted.is_empty() {
        tracing::debug!(
            count = unwanted.len(),
            "tag-hash collisions acknowledged without delivery"
        );
        if let Err(e) = propose_ack(broker, r.group.clone(), r.topic.clone(), unwanted).await {
            tracing::warn!(error = %e, "acknowledging tag-hash collisions failed; they come back later");
        }
    }
    Ok(ready)
}

fn item(content: Content) -> Item {
    Ok(pb::ReceiveMessageResponse {
        content: Some(content),
    })
}

fn status_item(s: pb::Status) -> Item {
    item(Content::Status(s))
}

/// `Status(OK)`, the messages, the delivery time.
fn found(broker: &Broker, r: &Receive, ready: Vec<Ready>) -> Vec<Item> {
    let mut items = Vec::with_capacity(ready.len() + 2);
    items.push(status_item(status::ok()));
    items.extend(
        ready
            .iter()
            .map(|x| item(Content::Message(to_wire(broker, r, x)))),
    );
    items.push(item(Content::DeliveryTimestamp(crate::message::timestamp(
        now_ms(),
    ))));
    items
}

fn to_wire(broker: &Broker, r: &Receive, x: &Ready) -> pb::Message {
    let p = &x.popped;
    let delivery = Delivery {
        queue_id: p.receipt.queue_id,
        queue_offset: p.receipt.offset,
        store_time_ms: p.store_time_ms,
        store_host: broker.client_addr().to_owned(),
        receipt_handle: Some(receipt::encode(&p.receipt)),
        invisible_ms: Some(r.invisible_ms),
        attempt: Some(p.receipt.attempt),
        digest_form: r.digest_form,
    };
    let mut m = x.message.clone().into_wire(delivery);
    // Delivered as a message of the topic it was popped from: a dead-letter topic indexes
    // records of other topics, and acks name the topic popped from.
    if let Some(t) = m.topic.as_mut() {
        t.name.clone_from(&r.topic);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code<T: std::fmt::Debug>(r: BrokerResult<T>) -> InvalidCode {
        match r {
            Err(BrokerError::Invalid { code, .. }) => code,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn batch_sizes_and_invisibility_are_checked() {
        assert_eq!(batch_size(1).expect("1"), 1);
        assert_eq!(batch_size(32).expect("32"), 32);
        assert_eq!(batch_size(1000).expect("cut"), MAX_BATCH);
        assert_eq!(code(batch_size(0)), InvalidCode::BadRequest);
        assert_eq!(code(batch_size(-3)), InvalidCode::BadRequest);

        let d = |seconds| prost_types::Duration { seconds, nanos: 0 };
        assert_eq!(invisible_ms(None, false).expect("default"), DEFAULT_INVISIBLE_MS);
        assert_eq!(
            invisible_ms(Some(&d(0)), true).expect("auto renew"),
            DEFAULT_INVISIBLE_MS
        );
        assert_eq!(invisible_ms(Some(&d(10)), false).expect("10s"), 10_000);
        assert_eq!(invisible_ms(Some(&d(45)), true).expect("45s"), 45_000);
        for bad in [d(0), d(9), d(-1), d(12 * 3600 + 1)] {
            assert_eq!(
                code(invisible_ms(Some(&bad), false)),
                InvalidCode::IllegalInvisibleTime
            );
        }
    }

    #[test]
    fn the_requested_queue_comes_first_then_all_others_round_robin() {
        assert_eq!(queue_order(-1, 4, 0), vec![0, 1, 2, 3]);
        assert_eq!(queue_order(-1, 4, 6), vec![2, 3, 0, 1]);
        assert_eq!(queue_order(3, 4, 6), vec![3, 2, 0, 1]);
        assert_eq!(queue_order(2, 4, 6), vec![2, 3, 0, 1]);
        assert_eq!(queue_order(9, 4, 1), vec![1, 2, 3, 0], "unknown queue: any");
        assert_eq!(queue_order(0, 0, 1), Vec::<u32>::new());
        assert_eq!(queue_order(-1, 1, u64::MAX), vec![0]);
    }

    #[test]
    fn answers_carry_a_status_item() {
        let empty = status_item(status::status(Code::MessageNotFound, "no new message"));
        match empty.map(|r| r.content) {
            Ok(Some(Content::Status(s))) => assert_eq!(s.code, Code::MessageNotFound as i32),
            other => panic!("{other:?}"),
        }
    }
}
