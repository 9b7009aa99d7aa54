//! Sending a snapshot: the file is read in chunks on a blocking thread and streamed to the
//! peer's `InstallSnapshot` call (meta, chunks, end marker), under an idle watchdog.

use std::io::Read;
use std::io::Seek;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use futures_util::Stream;
use futures_util::StreamExt;
use openraft::OptionalSend;
use openraft::RPCTypes;
use openraft::StorageError;
use openraft::error::NetworkError;
use openraft::error::RPCError;
use openraft::error::ReplicationClosed;
use openraft::error::StreamingError;
use openraft::network::RPCOption;
use openraft::raft::SnapshotResponse;
use openraft::type_config::TypeConfigExt;
use openraft::type_config::alias::SnapshotOf;
use openraft::type_config::alias::VoteOf;
use raftmq_proto::raftmq::raft::v1 as pb;
use tokio::sync::mpsc;

use super::C;
use super::NetworkConfig;
use super::PeerClient;
use super::config::ENTRY_ENVELOPE;
use super::config::MIB;
use super::stats::Counters;
use crate::raft::types::SnapshotData;
use crate::raft::wire;

/// Snapshot chunks read ahead of the network.
const SNAPSHOT_READ_AHEAD: usize = 4;

/// Where the reader leaves the error that stopped it.
type ReadError = Arc<Mutex<Option<std::io::Error>>>;

impl PeerClient {
    /// Streams a snapshot file: meta, chunks, end marker (see `raft.proto`).
    pub(super) async fn send_snapshot(
        &self,
        vote: VoteOf<C>,
        snapshot: SnapshotOf<C, SnapshotData>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        let idle_ttl = option.soft_ttl();
        let chunk_size = chunk_size(self.cfg(), &option);
        let signature = snapshot.meta.signature();
        let meta = wire::encode(&(vote, snapshot.meta))
            .map_err(|e| RPCError::<C>::Network(NetworkError::new(&e)))?;

        let started = Instant::now();
        let progress = Arc::new(AtomicU64::new(0));
        let read_error: ReadError = Arc::new(Mutex::new(None));
        let (chunk_tx, chunk_rx) = mpsc::channel(SNAPSHOT_READ_AHEAD);
        let file = snapshot.snapshot;
        tokio::task::spawn_blocking(move || read_snapshot_file(file, chunk_size, chunk_tx));

        let data = snapshot_parts(chunk_rx, read_error.clone(), progress.clone(), started);
        let first = pb::InstallSnapshotRequest {
            part: Some(pb::install_snapshot_request::Part::Meta(meta)),
        };
        let mut request = tonic::Request::new(futures_util::stream::iter([first]).chain(data));
        self.stamp(request.metadata_mut());
        let mut client = self.grpc(&self.channels()?.data);

        let watchdog = idle_watchdog(&progress, started, idle_ttl);

        let ctx = self.ctx();
        let result = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            _ = watchdog => return Err(ctx.timeout(RPCTypes::InstallSnapshot, idle_ttl).into()),
            r = client.install_snapshot(request) => r,
        };
        if let Some(e) = read_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
            tracing::error!(target_node = self.target, error = %e, "cannot read the snapshot to send");
            return Err(StreamingError::StorageError(StorageError::read_snapshot(
                Some(signature),
                C::err_from_error(&e),
            )));
        }
        let resp = result.map_err(|status| ctx.status(RPCTypes::InstallSnapshot, idle_ttl, status))?;
        let resp =
            wire::decode(&resp.into_inner().payload).map_err(|e| ctx.malformed("SnapshotResponse", e))?;
        Counters::add(&self.shared.counters.snapshots_sent, 1);
        Ok(resp)
    }
}

/// The chunk size to send: what openraft asks for (1 MiB if nothing), kept between 4 KiB
/// and what fits in one message.
fn chunk_size(cfg: &NetworkConfig, option: &RPCOption) -> usize {
    option.snapshot_chunk_size().unwrap_or(MIB).clamp(
        4096,
        cfg.max_message_size.saturating_sub(ENTRY_ENVELOPE).max(4096),
    )
}

/// The chunk messages of the `InstallSnapshot` call, as the reader produces them. Each
/// chunk records the time since `started` in `progress`; a read error is left in
/// `read_error` and ends the stream.
fn snapshot_parts(
    chunks: mpsc::Receiver<Result<pb::install_snapshot_request::Part, std::io::Error>>,
    read_error: ReadError,
    progress: Arc<AtomicU64>,
    started: Instant,
) -> impl Stream<Item = pb::InstallSnapshotRequest> + Send + 'static {
    futures_util::stream::unfold(
        (chunks, read_error, progress),
        move |(mut rx, slot, progress)| async move {
            match rx.recv().await {
                Some(Ok(part)) => {
                    progress.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                    Some((
                        pb::InstallSnapshotRequest { part: Some(part) },
                        (rx, slot, progress),
                    ))
                }
                Some(Err(e)) => {
                    // Ending without the end marker makes the receiver refuse the snapshot.
                    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    None
                }
                None => None,
            }
        },
    )
}

/// Completes when no chunk has moved for `idle_ttl` (`progress` holds the time of the
/// last one, in ms since `started`).
async fn idle_watchdog(progress: &AtomicU64, started: Instant, idle_ttl: Duration) {
    let tick = (idle_ttl / 4).max(Duration::from_millis(10));
    loop {
        tokio::time::sleep(tick).await;
        let last = Duration::from_millis(progress.load(Ordering::Relaxed));
        if started.elapsed().saturating_sub(last) > idle_ttl {
            return;
        }
    }
}

/// Reads the snapshot from its start in chunks and hands them to the sender; stops early
/// when the sender is gone.
fn read_snapshot_file(
    mut file: std::fs::File,
    chunk_size: usize,
    tx: mpsc::Sender<Result<pb::install_snapshot_request::Part, std::io::Error>>,
) {
    use pb::install_snapshot_request::Part;
    let res = (|| -> std::io::Result<()> {
        file.rewind()?;
        let (mut size, mut crc) = (0u64, 0u32);
        loop {
            let mut buf = vec![0u8; chunk_size];
            let mut n = 0;
            while n < chunk_size {
                match file.read(&mut buf[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if n == 0 {
                break;
            }
            buf.truncate(n);
            crc = crc32c::crc32c_append(crc, &buf);
            size += n as u64;
            if tx.blocking_send(Ok(Part::Data(buf.into()))).is_err() {
                return Ok(());
            }
            if n < chunk_size {
                break;
            }
        }
        let _ = tx.blocking_send(Ok(Part::End(pb::SnapshotEnd { size, crc32c: crc })));
        Ok(())
    })();
    if let Err(e) = res {
        let _ = tx.blocking_send(Err(e));
    }
}
