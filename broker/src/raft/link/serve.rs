//! The follower's end of a replication link: check who the leader wants, then hand its
//! appends to openraft's `stream_append` and send the answers back in order.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use bytes::BytesMut;
use futures_util::StreamExt;
use openraft::Raft;
use openraft::raft::AppendEntriesRequest;
use openraft::storage::RaftStateMachine;
use raftmq_proto::prost::Message as _;
use raftmq_proto::raftmq::raft::v1 as pb;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::watch;
use tonic::Status;

use super::frame;
use super::frame::Hello;
use super::frame::Kind;
use super::io;
use super::io::FrameReader;
use super::io::LinkError;
use crate::raft::append_wire;
use crate::raft::server::check_addressee;
use crate::raft::server::check_format;
use crate::raft::server::observe_leader;
use crate::raft::types::NodeId;
use crate::raft::types::SnapshotData;
use crate::raft::types::TypeConfig;
use crate::raft::vote_fence::VoteFence;
use crate::raft::wire;

type C = TypeConfig;

/// How long a new link may take to send its magic and hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest hello body read (its format, group name and target node).
const HELLO_MAX_BODY: usize = 4096;
/// How long a closing link reads what the leader still sends (see [`close`]).
const CLOSE_DRAIN: Duration = Duration::from_secs(1);
/// Answers gathered into one write when several are ready.
const ANSWERS_PER_WRITE: usize = 64;

/// What the follower's end of a link needs: the local Raft and the service's state.
pub struct LinkService<SM>
where
    SM: RaftStateMachine<C, SnapshotData = SnapshotData>,
{
    pub(crate) raft: Raft<C, SM>,
    pub(crate) id: NodeId,
    pub(crate) group: String,
    pub(crate) max_body: usize,
    /// Turns true when the server stops: ends the link's input.
    pub(crate) stopping: watch::Receiver<bool>,
    pub(crate) fence: Arc<VoteFence>,
}

impl<SM> std::fmt::Debug for LinkService<SM>
where
    SM: RaftStateMachine<C, SnapshotData = SnapshotData>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkService")
            .field("id", &self.id)
            .field("group", &self.group)
            .finish()
    }
}

impl<SM> LinkService<SM>
where
    SM: RaftStateMachine<C, SnapshotData = SnapshotData>,
{
    /// Serves one link until the leader closes it, it breaks, or the server stops.
    pub async fn run(self: Arc<Self>, stream: TcpStream, keepalive: Duration) {
        if let Err(e) = io::tune(&stream, keepalive) {
            tracing::debug!(error = %e, "cannot tune a replication link's socket");
        }
        let (rd, mut wr) = stream.into_split();
        // Until the peer is known, a frame may not announce more than a hello needs.
        let mut reader = FrameReader::new(rd, HELLO_MAX_BODY);
        let checked = match tokio::time::timeout(HELLO_TIMEOUT, read_hello(&mut reader)).await {
            Ok(Ok(hello)) => {
                reader.set_max_body(self.max_body);
                self.check(&hello)
            }
            Ok(Err(e)) => {
                tracing::debug!(node = self.id, error = %e, "replication link dropped before its hello");
                return;
            }
            Err(_) => {
                tracing::debug!(node = self.id, "replication link sent no hello in time");
                return;
            }
        };
        let checked = checked.and_then(|()| match *self.stopping.borrow() {
            true => Err(Status::unavailable(format!("raft node {} is stopping", self.id))),
            false => Ok(()),
        });
        let result = match checked {
            Err(status) => refuse(&mut wr, &status).await,
            Ok(()) => self.replicate(reader, &mut wr).await,
        };
        if let Err(e) = result {
            tracing::debug!(node = self.id, error = %e, "replication link ended");
        }
        close(wr).await;
    }

    fn check(&self, hello: &Hello) -> Result<(), Status> {
        check_format(self.id, Some(&hello.format))?;
        check_addressee(self.id, &self.group, &hello.group, hello.target)
    }

    /// Accepts the link, then answers every append in order (see the module docs).
    async fn replicate(
        &self,
        reader: FrameReader<OwnedReadHalf>,
        wr: &mut OwnedWriteHalf,
    ) -> Result<(), LinkError> {
        let mut out = BytesMut::new();
        frame::put_frame(&mut out, Kind::Accept, b"");
        wr.write_all(&out).await?;

        // An append that does not decode ends the input; its error follows the answers to
        // the appends before it.
        let bad_input: Arc<Mutex<Option<Status>>> = Arc::new(Mutex::new(None));
        let input = appends(
            reader,
            self.stopping.clone(),
            self.fence.clone(),
            bad_input.clone(),
        );
        let answers = self.raft.stream_append(input).ready_chunks(ANSWERS_PER_WRITE);
        let mut answers = std::pin::pin!(answers);
        while let Some(batch) = answers.next().await {
            out.clear();
            for answer in batch {
                match answer {
                    Ok(result) => match wire::encode(&result) {
                        Ok(body) => frame::put_frame(&mut out, Kind::Answer, &body),
                        Err(e) => {
                            let status = Status::internal(format!("cannot encode StreamAppendResult: {e}"));
                            put_refusal(&mut out, &status);
                        }
                    },
                    Err(fatal) => {
                        let status =
                            Status::unavailable(format!("raft node {} is not serving: {fatal}", self.id));
                        put_refusal(&mut out, &status);
                    }
                }
            }
            wr.write_all(&out).await?;
        }
        let bad = bad_input.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(status) = bad {
            refuse(wr, &status).await?;
        }
        Ok(())
    }
}

/// The magic and the hello that open a link.
async fn read_hello(reader: &mut FrameReader<OwnedReadHalf>) -> Result<Hello, LinkError> {
    let mut magic = [0u8; frame::MAGIC.len()];
    reader.read_raw(&mut magic).await?;
    if magic != frame::MAGIC {
        return Err(LinkError::Malformed {
            what: "magic",
            detail: format!("{magic:02x?}"),
        });
    }
    match reader.next().await? {
        Some((Kind::Hello, body)) => postcard::from_bytes(&body).map_err(|e| LinkError::Malformed {
            what: "Hello",
            detail: e.to_string(),
        }),
        Some((other, _)) => Err(LinkError::Unexpected(other)),
        None => Err(LinkError::Truncated),
    }
}

/// The leader's appends, decoded, until it closes its side, sends something that does not
/// decode (kept in `bad`), or the server stops.
fn appends(
    reader: FrameReader<OwnedReadHalf>,
    stopping: watch::Receiver<bool>,
    fence: Arc<VoteFence>,
    bad: Arc<Mutex<Option<Status>>>,
) -> impl futures_util::Stream<Item = AppendEntriesRequest<C>> + Unpin + Send + 'static {
    let state = (reader, stopping);
    Box::pin(futures_util::stream::unfold(
        state,
        move |(mut reader, mut stopping)| {
            let (fence, bad) = (fence.clone(), bad.clone());
            async move {
                let frame = tokio::select! {
                    f = reader.next() => f,
                    _ = stopping.wait_for(|stop| *stop) => return None,
                };
                let decoded = match frame {
                    Ok(Some((Kind::Append, body))) => decode(body),
                    // Closed by the leader between frames: nothing more to answer.
                    Ok(None) => return None,
                    Ok(Some((other, _))) => {
                        Err(Status::invalid_argument(format!("unexpected {other:?} frame")))
                    }
                    Err(LinkError::Io(_)) => return None,
                    Err(e) => Err(Status::invalid_argument(e.to_string())),
                };
                match decoded {
                    Ok(req) => {
                        observe_leader(&fence, &req);
                        Some((req, (reader, stopping)))
                    }
                    Err(status) => {
                        *bad.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
                        None
                    }
                }
            }
        },
    ))
}

/// The request an `Append` frame carries. A frame the reader gave memory of its own keeps
/// its commands as slices of it: they pin nothing but their frame. A small one's are
/// copied out, so that they do not pin the receive buffer shared with frames around it.
fn decode(body: Bytes) -> Result<AppendEntriesRequest<C>, Status> {
    let share = body.len() >= io::OWN_MIN;
    let msg = pb::AppendRequest::decode(body)
        .map_err(|e| Status::invalid_argument(format!("cannot decode AppendRequest: {e}")))?;
    let req = if share {
        append_wire::from_message_shared(msg)
    } else {
        append_wire::from_message(msg)
    };
    req.map_err(|e| Status::invalid_argument(format!("cannot decode AppendEntries request: {e}")))
}

fn put_refusal(out: &mut BytesMut, status: &Status) {
    frame::put_refusal(out, status.code() as i32, status.message());
}

/// Ends a link without a reset: a socket closed with unread bytes in it (appends the leader
/// pipelined after a refusal) is reset at once, which can destroy the last answers before
/// they arrive. So half-close first, and read what still comes until the leader closes
/// its side or [`CLOSE_DRAIN`] has passed.
async fn close(mut wr: OwnedWriteHalf) {
    if wr.shutdown().await.is_err() {
        return;
    }
    let stream: &TcpStream = wr.as_ref();
    let mut scratch = vec![0u8; 64 * 1024];
    let drained = tokio::time::timeout(CLOSE_DRAIN, async {
        loop {
            if stream.readable().await.is_err() {
                return;
            }
            match stream.try_read(&mut scratch) {
                // The leader closed its side.
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    });
    let _ = drained.await;
}

async fn refuse(wr: &mut OwnedWriteHalf, status: &Status) -> Result<(), LinkError> {
    let mut out = BytesMut::new();
    put_refusal(&mut out, status);
    wr.write_all(&out).await?;
    Ok(())
}
