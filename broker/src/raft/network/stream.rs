//! The pipelined replication stream behind `PeerClient::stream_append`, on a replication
//! link (see [`crate::raft::link`]): a `Pump` task writes openraft's requests (cut into
//! pieces, bounded by the in-flight window) while `Answers` reads the follower's answers
//! back, one openraft answer per request.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use futures_util::StreamExt;
use openraft::OptionalSend;
use openraft::RPCTypes;
use openraft::base::BoxStream;
use openraft::error::NetworkError;
use openraft::error::RPCError;
use openraft::network::RPCOption;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::StreamAppendResult;
use openraft::type_config::alias::LogIdOf;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Semaphore;
use tokio::sync::mpsc;
use tonic::Status;

use super::C;
use super::NetworkConfig;
use super::PeerClient;
use super::Shared;
use super::errors::ErrorContext;
use super::stats::Counters;
use crate::raft::append_wire;
use crate::raft::link::dial::DialError;
use crate::raft::link::dial::DialOptions;
use crate::raft::link::dial::Link;
use crate::raft::link::dial::decode_refusal;
use crate::raft::link::dial::dial;
use crate::raft::link::frame;
use crate::raft::link::frame::Hello;
use crate::raft::link::frame::Kind;
use crate::raft::link::frame::Refusal;
use crate::raft::link::io::FrameReader;
use crate::raft::link::io::LinkError;
use crate::raft::link::io::write_parts;
use crate::raft::types::NodeId;
use crate::raft::wire;
use crate::raft::wire::FORMAT;

/// openraft's side of a replication stream: one answer per request sent.
type AnswerStream = BoxStream<'static, Result<StreamAppendResult<C>, RPCError<C>>>;

impl PeerClient {
    /// The pipelined replication stream (see the module docs).
    pub(super) async fn open_append_stream<S>(
        &self,
        mut input: S,
        option: RPCOption,
    ) -> Result<AnswerStream, RPCError<C>>
    where
        S: Stream<Item = AppendEntriesRequest<C>> + OptionalSend + Unpin + 'static,
    {
        // Take the first request before dialling: openraft applies its backoff after an
        // `Unreachable` while producing the next request, so connecting first would retry
        // a dead peer in a tight loop. And an empty input needs no stream at all.
        let Some(first) = input.next().await else {
            return Ok(Box::pin(futures_util::stream::empty()));
        };
        let input = futures_util::stream::iter([first]).chain(input);
        let (inbound, outbound) = self.open_append_call(option.soft_ttl()).await?;
        Ok(self.pump_and_answer(input, outbound, inbound, option))
    }

    /// Dials a replication link to the peer and waits for its accept: the connection within
    /// the connect timeout, the rest within `setup_ttl`.
    async fn open_append_call(&self, setup_ttl: Duration) -> Result<Link, RPCError<C>> {
        let addr = self.channels()?.addr.clone();
        let hello = Hello {
            format: FORMAT.to_owned(),
            group: self.shared.group_name.clone(),
            target: self.target,
        };
        let cfg = self.cfg();
        let opt = DialOptions {
            max_body: cfg.max_message_size,
            keepalive: Duration::from_millis(cfg.keepalive_interval_ms),
            connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
        };
        let setup_ttl = setup_ttl + opt.connect_timeout;
        let dialled = tokio::time::timeout(setup_ttl, dial(&addr, &hello, opt)).await;
        let ctx = self.ctx();
        let link = match dialled {
            Err(_) => return Err(ctx.timeout(RPCTypes::AppendEntries, setup_ttl)),
            Ok(Err(DialError::Refused(r))) => {
                return Err(ctx.status(RPCTypes::AppendEntries, setup_ttl, refusal_status(r)));
            }
            // Whatever breaks before the accept (a reset, a close, bytes that are no link's
            // frames, as an older build's HTTP/2 server sends) means no usable peer there.
            Ok(Err(DialError::Link(e))) => {
                let status = Status::from_error(Box::new(e));
                return Err(ctx.status(RPCTypes::AppendEntries, setup_ttl, status));
            }
            Ok(Ok(link)) => link,
        };
        Counters::add(&self.shared.counters.append_streams, 1);
        Ok(link)
    }

    /// Spawns the `Pump` that sends `input` down an open link and returns the link's
    /// answers as openraft's stream.
    fn pump_and_answer<S>(
        &self,
        input: S,
        outbound: OwnedWriteHalf,
        inbound: FrameReader<OwnedReadHalf>,
        option: RPCOption,
    ) -> AnswerStream
    where
        S: Stream<Item = AppendEntriesRequest<C>> + OptionalSend + Unpin + 'static,
    {
        let cfg = self.cfg().clone();
        let window = Arc::new(Semaphore::new(cfg.max_inflight_bytes));
        let (pending_tx, pending_rx) = mpsc::unbounded_channel();
        let pump = Pump {
            shared: self.shared.clone(),
            target: self.target,
            outbound,
            pending: pending_tx,
            window: window.clone(),
        };
        let pump = AbortOnDrop(tokio::spawn(pump.run(input)));

        let answers = Answers {
            inbound,
            pending: pending_rx,
            window,
            wait: option
                .soft_ttl()
                .max(Duration::from_millis(cfg.stream_response_timeout_floor_ms)),
            cfg,
            ctx: self.ctx(),
            done: false,
            _pump: pump,
        };
        let out = futures_util::stream::unfold(answers, |mut a| async move {
            let item = a.next_answer().await?;
            Some((item, a))
        });
        Box::pin(out)
    }
}

/// Aborts a spawned task when dropped.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the answer side of a replication stream expects for one openraft request.
#[derive(Debug)]
enum Pending {
    Request(Vec<PieceInFlight>),
    /// The request could not be sent; reported in its place.
    Failed(RPCError<C>),
}

#[derive(Debug)]
struct PieceInFlight {
    last: Option<LogIdOf<C>>,
    wire_size: usize,
    permits: u32,
}

/// Sends openraft's requests down a replication stream without waiting for answers.
struct Pump {
    shared: Arc<Shared>,
    target: NodeId,
    outbound: OwnedWriteHalf,
    pending: mpsc::UnboundedSender<Pending>,
    window: Arc<Semaphore>,
}

impl Pump {
    async fn run<S>(mut self, mut input: S)
    where
        S: Stream<Item = AppendEntriesRequest<C>> + Unpin,
    {
        let cfg = &self.shared.cfg;
        let window_cap = cfg.max_inflight_bytes;
        while let Some(req) = input.next().await {
            let pieces = match append_wire::split_append(req, cfg.append_piece_budget, cfg.max_message_size) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(target_node = self.target, error = %e, "cannot send AppendEntries");
                    let _ = self
                        .pending
                        .send(Pending::Failed(RPCError::Network(NetworkError::new(&e))));
                    return;
                }
            };
            self.shared.counters.count_request(pieces.len());
            let mut in_flight = Vec::with_capacity(pieces.len());
            let mut messages = Vec::with_capacity(pieces.len());
            for p in pieces {
                let wire_size = p.wire_size();
                in_flight.push(PieceInFlight {
                    last: p.last,
                    wire_size,
                    permits: wire_size.min(window_cap) as u32,
                });
                messages.push(p.message);
            }
            let permits: Vec<u32> = in_flight.iter().map(|p| p.permits).collect();
            // Announce before sending, so that the answer side always knows what comes.
            if self.pending.send(Pending::Request(in_flight)).is_err() {
                return;
            }
            for (message, n) in messages.into_iter().zip(permits) {
                let Ok(permit) = self.window.clone().acquire_many_owned(n).await else {
                    return;
                };
                // Given back by the answer side when this piece is answered.
                permit.forget();
                // A failed write ends the pump; the answer side sees the link break.
                if let Err(e) = write_parts(&mut self.outbound, frame::append_parts(&message)).await {
                    tracing::debug!(target_node = self.target, error = %e, "replication link write failed");
                    return;
                }
            }
        }
        // Input exhausted: dropping the write half half-closes the link; the follower
        // answers what is outstanding and closes its side.
    }
}

/// Reads a replication stream's answers, one openraft answer per openraft request.
struct Answers {
    inbound: FrameReader<OwnedReadHalf>,
    pending: mpsc::UnboundedReceiver<Pending>,
    window: Arc<Semaphore>,
    wait: Duration,
    cfg: NetworkConfig,
    ctx: ErrorContext,
    done: bool,
    _pump: AbortOnDrop,
}

impl Answers {
    /// The answer to the next request, or `None` when the stream is over (input
    /// exhausted, or after an answer that ends it).
    async fn next_answer(&mut self) -> Option<Result<StreamAppendResult<C>, RPCError<C>>> {
        if self.done {
            return None;
        }
        let pieces = match self.pending.recv().await? {
            Pending::Failed(e) => return Some(self.finish(Err(e))),
            Pending::Request(p) => p,
        };
        let n = pieces.len();
        for (i, piece) in pieces.into_iter().enumerate() {
            let wait = self.wait + self.cfg.transfer_allowance(piece.wire_size);
            let got = tokio::time::timeout(wait, self.inbound.next()).await;
            self.window.add_permits(piece.permits as usize);
            let res = match got {
                Err(_) => Err(self.ctx.timeout(RPCTypes::AppendEntries, wait)),
                Ok(frame) => self.answer(frame, wait),
            };
            let res = match res {
                Ok(r) => r,
                Err(e) => return Some(self.finish(Err(e))),
            };
            match res {
                // A piece fully accepted: on to the next one, or done with this request.
                Ok(matched) if matched == piece.last => {
                    if i + 1 == n {
                        return Some(Ok(Ok(matched)));
                    }
                }
                // Partly accepted or refused: report it for the whole request and stop,
                // as the follower's own stream does.
                other => return Some(self.finish(Ok(other))),
            }
        }
        None
    }

    /// What a frame read off the link says about the piece it answers.
    fn answer(
        &self,
        frame: Result<Option<(Kind, Bytes)>, LinkError>,
        wait: Duration,
    ) -> Result<StreamAppendResult<C>, RPCError<C>> {
        let action = RPCTypes::AppendEntries;
        match frame {
            Ok(Some((Kind::Answer, body))) => {
                wire::decode(&body).map_err(|e| self.ctx.malformed("StreamAppendResult", e))
            }
            Ok(Some((Kind::Refuse, body))) => match decode_refusal(&body) {
                Ok(r) => Err(self.ctx.status(action, wait, refusal_status(r))),
                Err(e) => Err(self.ctx.status(action, wait, link_status(e))),
            },
            Ok(Some((other, _))) => {
                Err(self
                    .ctx
                    .status(action, wait, link_status(LinkError::Unexpected(other))))
            }
            Ok(None) => Err(RPCError::Network(NetworkError::from_string(format!(
                "node {} ended the replication stream with requests unanswered",
                self.ctx.target
            )))),
            Err(e) => Err(self.ctx.status(action, wait, link_status(e))),
        }
    }

    fn finish(
        &mut self,
        item: Result<StreamAppendResult<C>, RPCError<C>>,
    ) -> Result<StreamAppendResult<C>, RPCError<C>> {
        self.done = true;
        item
    }
}

/// A follower's refusal as the gRPC status it stands for.
fn refusal_status(r: Refusal) -> Status {
    Status::new(tonic::Code::from_i32(r.code), r.message)
}

/// A broken link as a status: an I/O failure or a close in the middle of a frame keeps its
/// source, so it maps to `Unreachable` as a failed gRPC connection does; a frame that
/// breaks the rules is a `NetworkError`.
fn link_status(e: LinkError) -> Status {
    match e {
        LinkError::Io(_) | LinkError::Truncated => Status::from_error(Box::new(e)),
        other => Status::internal(other.to_string()),
    }
}
