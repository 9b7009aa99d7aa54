//! The Raft network's protocol, one RPC at a time, against a real server: a client from a
//! made-up leader (node 9) talks to an uninitialized node, so every answer is determined
//! by what the test sends. Covers splitting, the pipelined stream and its refusals,
//! heartbeats, snapshots, error mapping, and that malformed input never harms the server.

mod raft_net_common;

use std::time::Duration;
use std::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;
use openraft::EntryPayload;
use openraft::LogId;
use openraft::RaftNetworkFactory;
use openraft::Vote;
use openraft::error::RPCError;
use openraft::error::StreamingError;
use openraft::network::RPCOption;
use openraft::network::RaftNetworkV2;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::StreamAppendError;
use openraft::raft::StreamAppendResult;
use openraft::raft::VoteRequest;
use openraft::type_config::alias::EntryOf;
use openraft::type_config::alias::LogIdOf;
use openraft::type_config::alias::SnapshotMetaOf;
use openraft::type_config::alias::SnapshotOf;
use openraft::type_config::alias::StoredMembershipOf;
use raft_log::storage::StoreLeaderId;
use raft_net_common::*;
use raftmq_broker::raft::NetworkConfig;
use raftmq_broker::raft::NetworkFactory;
use raftmq_broker::raft::append_wire;
use raftmq_broker::raft::link::dial::DialError;
use raftmq_broker::raft::link::dial::DialOptions;
use raftmq_broker::raft::link::dial::dial;
use raftmq_broker::raft::link::frame;
use raftmq_broker::raft::link::frame::Hello;
use raftmq_broker::raft::link::frame::Kind;
use raftmq_broker::raft::link::frame::Refusal;
use raftmq_broker::raft::link::io::FrameReader;
use raftmq_broker::raft::link::io::write_parts;
use raftmq_broker::raft::link::listener::LinkHandler;
use raftmq_broker::raft::link::listener::MAX_LINKS;
use raftmq_broker::raft::link::listener::split_incoming;
use raftmq_broker::raft::network::PeerClient;
use raftmq_broker::raft::types::BrokerNode;
use raftmq_broker::raft::wire;
use raftmq_proto::raftmq::raft::v1 as pb;
use raftmq_proto::raftmq::raft::v1::install_snapshot_request::Part;
use raftmq_proto::raftmq::raft::v1::raft_service_client::RaftServiceClient;
use tonic::Code;

const KIB: usize = 1024;
/// The made-up leader.
const LEADER: u64 = 9;

fn log_id(term: u64, index: u64) -> LogIdOf<C> {
    LogId::new(
        StoreLeaderId {
            term,
            node_id: LEADER,
        },
        index,
    )
}

fn entry(index: u64, body: usize) -> EntryOf<C> {
    EntryOf::<C> {
        log_id: log_id(1, index),
        payload: EntryPayload::Normal(send(index, 1, body)),
    }
}

/// Entries `from..=to` after `prev`, from the leader at term `term`.
fn append(term: u64, prev: Option<u64>, from: u64, to: u64, body: usize) -> AppendEntriesRequest<C> {
    AppendEntriesRequest {
        vote: Vote::new_committed(term, LEADER),
        prev_log_id: prev.map(|p| log_id(1, p)),
        entries: (from..=to).map(|i| entry(i, body)).collect(),
        leader_commit: None,
    }
}

fn option() -> RPCOption {
    RPCOption::new(Duration::from_secs(4))
}

/// One uninitialized node, and a network of node 9 with a 256 KiB piece budget.
async fn lone_node() -> anyhow::Result<(Group, NetworkFactory, BrokerNode)> {
    init_tracing();
    let mut setup = Setup::default();
    setup.net.append_piece_budget = 256 * KIB;
    let g = Group::start(&[1], setup.clone()).await?;
    let net = NetworkFactory::new(LEADER, GROUP, setup.net)?;
    let node = g.node(1).node.clone();
    Ok((g, net, node))
}

async fn client(net: &NetworkFactory, node: &BrokerNode) -> PeerClient {
    net.clone().new_client(1, node).await
}

async fn raw(node: &BrokerNode) -> anyhow::Result<RaftServiceClient<tonic::transport::Channel>> {
    Ok(RaftServiceClient::connect(format!("http://{}", node.raft_addr)).await?)
}

fn stamped<T>(msg: T, group: &str, target: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert(wire::GROUP_KEY, group.parse().expect("ascii"));
    r.metadata_mut()
        .insert(wire::TARGET_KEY, target.parse().expect("ascii"));
    r.metadata_mut()
        .insert(wire::FORMAT_KEY, wire::FORMAT.parse().expect("ascii"));
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_append_is_split_and_answered_for_the_last_piece() -> anyhow::Result<()> {
    let (g, net, node) = lone_node().await?;
    let mut c = client(&net, &node).await;

    // 4 entries of 200 KiB: 800 KiB against a 256 KiB budget.
    let resp = c
        .append_entries(append(1, None, 0, 3, 200 * KIB), option())
        .await?;
    assert_eq!(resp, AppendEntriesResponse::Success);
    let stats = net.stats();
    assert_eq!(
        (stats.append_requests, stats.split_requests, stats.append_messages),
        (1, 1, 4),
        "{stats:?}"
    );
    g.node(1)
        .raft
        .wait(Some(WAIT))
        .metrics(|m| m.last_log_index == Some(3), "all four entries stored")
        .await?;

    // A request whose start the follower lacks: a plain conflict.
    let resp = c
        .append_entries(append(1, Some(40), 41, 42, 10), option())
        .await?;
    assert_eq!(resp, AppendEntriesResponse::Conflict);

    // A leader with an older vote is told about the newer one.
    let resp = c.append_entries(append(0, Some(3), 4, 4, 10), option()).await?;
    assert!(matches!(resp, AppendEntriesResponse::HigherVote(v) if v == Vote::new_committed(1, LEADER)));

    g.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_stream_answers_in_order_and_stops_at_a_refusal() -> anyhow::Result<()> {
    let (g, net, node) = lone_node().await?;
    let mut c = client(&net, &node).await;

    let requests = vec![
        append(1, None, 0, 3, 100 * KIB),    // split: 400 KiB
        append(1, Some(3), 4, 7, 10),        // small
        append(1, Some(7), 8, 8, 600 * KIB), // one entry above the budget, alone
        append(1, Some(50), 51, 52, 10),     // conflict: the follower has nothing at 50
        append(1, Some(8), 9, 9, 10),        // never answered: the stream ended
    ];
    let mut answers = c
        .stream_append(futures_util::stream::iter(requests), option())
        .await?;
    let mut got = Vec::new();
    while let Some(a) = answers.next().await {
        got.push(a?);
    }
    drop(answers);
    assert_eq!(
        got,
        vec![
            Ok(Some(log_id(1, 3))),
            Ok(Some(log_id(1, 7))),
            Ok(Some(log_id(1, 8))),
            Err(StreamAppendError::Conflict(log_id(1, 50))),
        ]
    );
    let stats = net.stats();
    assert_eq!(stats.append_streams, 1, "{stats:?}");
    assert!(stats.split_requests >= 1, "{stats:?}");

    // A stream from an outdated leader is refused with the newer vote.
    let mut answers = c
        .stream_append(
            futures_util::stream::iter(vec![append(0, Some(8), 9, 9, 10)]),
            option(),
        )
        .await?;
    let first = answers.next().await.expect("an answer")?;
    assert_eq!(
        first,
        Err(StreamAppendError::HigherVote(Vote::new_committed(1, LEADER)))
    );
    assert!(answers.next().await.is_none(), "nothing follows a refusal");
    drop(answers);

    // Heartbeats: one unary call each on the control channel, answered with prev.
    let mut hb = net.clone().new_heartbeat_client(1, &node).await;
    let beat = append(1, Some(8), 1, 0, 0);
    let mut answers = hb
        .stream_append(futures_util::stream::iter(vec![beat]), option())
        .await?;
    assert_eq!(answers.next().await.expect("an answer")?, Ok(Some(log_id(1, 8))));
    drop(answers);
    assert!(net.stats().heartbeats >= 1);
    // Still two channels to the one peer, whatever the clients.
    assert_eq!(net.stats().channels_created, 2);

    g.shutdown().await;
    Ok(())
}

/// Writes a state-machine snapshot of `commands` applied up to `last` into a file.
fn snapshot_file(last: LogIdOf<C>, commands: usize) -> anyhow::Result<(SnapshotMetaOf<C>, std::fs::File)> {
    let state = Applied {
        last_applied: Some(last),
        membership: StoredMembershipOf::<C>::default(),
        commands: (0..commands)
            .map(|i| (i as u64, format!("command {i} {}", "x".repeat(100))))
            .collect(),
    };
    let mut f = tempfile::tempfile()?;
    std::io::Write::write_all(&mut f, &postcard::to_stdvec(&state)?)?;
    let meta = SnapshotMetaOf::<C> {
        last_log_id: Some(last),
        last_membership: StoredMembershipOf::<C>::default(),
    };
    Ok((meta, f))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_snapshot_is_streamed_and_installed_and_forged_ones_are_refused() -> anyhow::Result<()> {
    let (g, net, node) = lone_node().await?;
    let mut c = client(&net, &node).await;
    let vote = Vote::new_committed(2, LEADER);

    // A snapshot whose last log id lies beyond the sender's vote is refused before it can
    // reach openraft (which would panic on it).
    let (meta, file) = snapshot_file(log_id(3, 20), 10)?;
    let err = c
        .full_snapshot(
            vote,
            SnapshotOf::<C, _> { meta, snapshot: file },
            std::future::pending(),
            option(),
        )
        .await
        .expect_err("forged snapshot");
    assert!(matches!(err, StreamingError::Network(_)), "{err:?}");

    // A real one, several chunks long (openraft's chunk size comes with the option).
    let (meta, file) = snapshot_file(log_id(2, 20), 2000)?;
    let resp = c
        .full_snapshot(
            vote,
            SnapshotOf::<C, _> { meta, snapshot: file },
            std::future::pending(),
            option(),
        )
        .await?;
    assert_eq!(resp.vote, vote);
    assert_eq!(g.node(1).sm.installed_snapshots(), 1);
    let applied = g.node(1).sm.applied();
    assert_eq!(applied.last_applied, Some(log_id(2, 20)));
    assert_eq!(applied.commands.len(), 2000);
    assert_eq!(net.stats().snapshots_sent, 1);

    // Cancelled by openraft: the transfer stops with `Closed`.
    let (meta, file) = snapshot_file(log_id(2, 30), 10)?;
    let err = c
        .full_snapshot(
            vote,
            SnapshotOf::<C, _> { meta, snapshot: file },
            async { openraft::error::ReplicationClosed::new("test cancels") },
            option(),
        )
        .await
        .expect_err("cancelled");
    assert!(matches!(err, StreamingError::Closed(_)), "{err:?}");

    g.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_or_misaddressed_calls_get_clear_errors_and_harm_nothing() -> anyhow::Result<()> {
    let (g, net, node) = lone_node().await?;
    let mut raw = raw(&node).await?;
    let target = "1";

    let garbage = || pb::AppendRequest {
        payload: Bytes::from_static(&[0xff, 0xff, 0xff, 0x01, 0x02]),
        commands: Vec::new(),
    };
    let st = raw
        .append_entries(stamped(garbage(), GROUP, target))
        .await
        .expect_err("garbage");
    assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");
    assert!(
        st.message().contains("cannot decode AppendEntries request"),
        "{}",
        st.message()
    );

    let st = raw
        .vote(stamped(
            pb::VoteRequest {
                payload: Bytes::new(),
            },
            GROUP,
            target,
        ))
        .await
        .expect_err("empty vote");
    assert_eq!(st.code(), Code::InvalidArgument);

    // Trailing bytes after a valid payload are as malformed as a short one.
    let mut bytes = wire::encode(&VoteRequest::<C>::new(Vote::new(1, LEADER), None))?.to_vec();
    bytes.push(0);
    let st = raw
        .pre_vote(stamped(
            pb::VoteRequest {
                payload: bytes.into(),
            },
            GROUP,
            target,
        ))
        .await
        .expect_err("trailing bytes");
    assert_eq!(st.code(), Code::InvalidArgument);

    // Misaddressed: another node id, another group, or no metadata at all.
    let st = raw
        .append_entries(stamped(garbage(), GROUP, "2"))
        .await
        .expect_err("wrong node");
    assert_eq!(st.code(), Code::FailedPrecondition, "{st:?}");
    let st = raw
        .append_entries(stamped(garbage(), "other-group", target))
        .await
        .expect_err("wrong group");
    assert_eq!(st.code(), Code::FailedPrecondition, "{st:?}");
    let st = raw
        .append_entries(tonic::Request::new(garbage()))
        .await
        .expect_err("no metadata");
    assert_eq!(st.code(), Code::FailedPrecondition, "{st:?}");
    // A build with another payload format (or one from before the format was named) is
    // refused before its payload is read, not misread.
    for format in [None, Some("1")] {
        let mut r = stamped(garbage(), GROUP, target);
        match format {
            Some(f) => r
                .metadata_mut()
                .insert(wire::FORMAT_KEY, f.parse().expect("ascii")),
            None => r.metadata_mut().remove(wire::FORMAT_KEY),
        };
        let st = raw.append_entries(r).await.expect_err("other format");
        assert_eq!(st.code(), Code::FailedPrecondition, "{format:?}: {st:?}");
        assert!(st.message().contains("same version"), "{}", st.message());
    }

    // Snapshot framing: data before meta, a cut-off stream, a checksum that does not match.
    let bad_start = futures_util::stream::iter(vec![pb::InstallSnapshotRequest {
        part: Some(Part::Data(Bytes::from_static(b"x"))),
    }]);
    let st = raw
        .install_snapshot(stamped(bad_start, GROUP, target))
        .await
        .expect_err("no meta");
    assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");
    let (meta, _) = snapshot_file(log_id(1, 5), 1)?;
    let meta_msg = || pb::InstallSnapshotRequest {
        part: Some(Part::Meta(
            wire::encode(&(Vote::<StoreLeaderId>::new_committed(1, LEADER), meta.clone())).expect("encode"),
        )),
    };
    let cut = futures_util::stream::iter(vec![
        meta_msg(),
        pb::InstallSnapshotRequest {
            part: Some(Part::Data(Bytes::from_static(b"abc"))),
        },
    ]);
    let st = raw
        .install_snapshot(stamped(cut, GROUP, target))
        .await
        .expect_err("no end");
    assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");
    let corrupt = futures_util::stream::iter(vec![
        meta_msg(),
        pb::InstallSnapshotRequest {
            part: Some(Part::Data(Bytes::from_static(b"abc"))),
        },
        pb::InstallSnapshotRequest {
            part: Some(Part::End(pb::SnapshotEnd { size: 3, crc32c: 42 })),
        },
    ]);
    let st = raw
        .install_snapshot(stamped(corrupt, GROUP, target))
        .await
        .expect_err("bad crc");
    assert_eq!(st.code(), Code::DataLoss, "{st:?}");

    // After all that the node still serves normal calls.
    let mut c = client(&net, &node).await;
    // (Granted: nothing above reached its log or set a leader.)
    let resp = c
        .vote(VoteRequest::new(Vote::new(5, 7), Some(log_id(1, 1))), option())
        .await?;
    assert!(resp.vote_granted, "{resp:?}");
    assert_eq!(g.node(1).metrics().running_state, Ok(()));

    g.shutdown().await;
    Ok(())
}

fn hello(group: &str, target: u64, format: &str) -> Hello {
    Hello {
        format: format.to_owned(),
        group: group.to_owned(),
        target,
    }
}

/// The next frame of `kind` on a link, its body decoded as `T`.
async fn expect_frame<T: serde::de::DeserializeOwned>(
    rd: &mut FrameReader<tokio::net::tcp::OwnedReadHalf>,
    kind: Kind,
) -> anyhow::Result<T> {
    let (got, body) = rd.next().await?.ok_or_else(|| anyhow::anyhow!("link closed"))?;
    anyhow::ensure!(got == kind, "expected {kind:?}, got {got:?}");
    Ok(postcard::from_bytes(&body)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replication_link_answers_in_order_and_refuses_what_it_cannot_take() -> anyhow::Result<()> {
    let (g, _net, node) = lone_node().await?;
    let opts = DialOptions {
        max_body: 1 << 20,
        keepalive: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(1),
    };
    let addr = node.raft_addr.as_str();

    // Another node, another group, another build: refused before anything is read.
    for h in [
        hello(GROUP, 2, wire::FORMAT),
        hello("other-group", 1, wire::FORMAT),
        hello(GROUP, 1, "1"),
    ] {
        match dial(addr, &h, opts).await {
            Err(DialError::Refused(r)) => assert_eq!(r.code, Code::FailedPrecondition as i32, "{h:?}: {r:?}"),
            other => anyhow::bail!("{h:?} was not refused: {:?}", other.map(|_| ()).err()),
        }
    }

    // Appends are answered in order; one that does not decode ends the link with
    // INVALID_ARGUMENT after the answers to those before it.
    let (mut rd, mut wr) = dial(addr, &hello(GROUP, 1, wire::FORMAT), opts).await?;
    let garbage = pb::AppendRequest {
        payload: Bytes::from_static(&[0xff, 0xff, 0xff, 0x01, 0x02]),
        commands: Vec::new(),
    };
    for m in [
        append_wire::to_message(&append(1, None, 0, 1, 10))?,
        append_wire::to_message(&append(1, Some(1), 2, 3, 10))?,
        garbage,
    ] {
        write_parts(&mut wr, frame::append_parts(&m)).await?;
    }
    for want in [log_id(1, 1), log_id(1, 3)] {
        let got: StreamAppendResult<C> = expect_frame(&mut rd, Kind::Answer).await?;
        assert_eq!(got, Ok(Some(want)));
    }
    let r: Refusal = expect_frame(&mut rd, Kind::Refuse).await?;
    assert_eq!(r.code, Code::InvalidArgument as i32, "{r:?}");
    assert!(rd.next().await?.is_none(), "nothing after the refusal");

    // A frame whose checksum fails is refused the same way, and nothing of it is taken.
    let (mut rd, mut wr) = dial(addr, &hello(GROUP, 1, wire::FORMAT), opts).await?;
    let mut parts = frame::append_parts(&append_wire::to_message(&append(1, Some(3), 4, 4, 10))?);
    let last = parts.len() - 1;
    let mut tampered = parts[last].to_vec();
    tampered[0] ^= 1;
    parts[last] = tampered.into();
    write_parts(&mut wr, parts).await?;
    let r: Refusal = expect_frame(&mut rd, Kind::Refuse).await?;
    assert_eq!(r.code, Code::InvalidArgument as i32, "{r:?}");
    assert!(r.message.contains("checksum"), "{r:?}");

    // A leader that half-closes gets the answers to what it sent (a small frame and a
    // large one, read into memory of its own), then the end.
    let (mut rd, mut wr) = dial(addr, &hello(GROUP, 1, wire::FORMAT), opts).await?;
    let small = append_wire::to_message(&append(1, Some(3), 4, 4, 10))?;
    let large = append_wire::to_message(&append(1, Some(4), 5, 5, 100_000))?;
    write_parts(&mut wr, frame::append_parts(&small)).await?;
    write_parts(&mut wr, frame::append_parts(&large)).await?;
    tokio::io::AsyncWriteExt::shutdown(&mut wr).await?;
    for want in [log_id(1, 4), log_id(1, 5)] {
        let got: StreamAppendResult<C> = expect_frame(&mut rd, Kind::Answer).await?;
        assert_eq!(got, Ok(Some(want)));
    }
    assert!(rd.next().await?.is_none(), "closed after the last answer");

    // Before its hello is read, a link may not announce a frame larger than a hello: one
    // that does is closed at once, nothing of the announced body awaited.
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let mut opening = frame::MAGIC.to_vec();
    opening.push(Kind::Hello as u8);
    opening.extend_from_slice(&(1u32 << 20).to_le_bytes());
    opening.extend_from_slice(&0u32.to_le_bytes());
    tokio::io::AsyncWriteExt::write_all(&mut s, &opening).await?;
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut s, &mut byte),
    )
    .await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "closed, not waiting: {read:?}"
    );
    assert_eq!(g.node(1).metrics().running_state, Ok(()));
    g.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_and_silent_peers_map_to_unreachable_and_timeout() -> anyhow::Result<()> {
    init_tracing();
    let net = NetworkFactory::new(LEADER, GROUP, NetworkConfig::default())?;

    // Nothing listens: Unreachable, at once.
    let free = bind().await?;
    let addr = free.local_addr()?.to_string();
    drop(free);
    let nobody = BrokerNode {
        raft_addr: addr,
        client_addr: String::new(),
    };
    let mut c = net.clone().new_client(1, &nobody).await;
    let started = Instant::now();
    let err = c
        .vote(VoteRequest::new(Vote::new(1, LEADER), None), option())
        .await
        .expect_err("nobody");
    assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    let err = c
        .stream_append(
            futures_util::stream::iter(vec![append(1, None, 0, 0, 1)]),
            option(),
        )
        .await
        .err()
        .expect("no stream to nobody");
    assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");

    // A peer that accepts connections but never answers: the soft TTL ends the call.
    let silent = bind().await?;
    let silent_node = BrokerNode {
        raft_addr: silent.local_addr()?.to_string(),
        client_addr: String::new(),
    };
    let hold = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            conns.push(s);
        }
    });
    let mut c = net.clone().new_client(2, &silent_node).await;
    let started = Instant::now();
    let ttl = RPCOption::new(Duration::from_millis(400));
    let err = c
        .vote(VoteRequest::new(Vote::new(1, LEADER), None), ttl)
        .await
        .expect_err("silent");
    assert!(matches!(err, RPCError::Timeout(_)), "{err:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "{took:?}"
    );
    hold.abort();

    // A node that stopped: its port closes, and it is Unreachable too.
    let (mut g, net, node) = lone_node().await?;
    let mut c = client(&net, &node).await;
    c.vote(VoteRequest::new(Vote::new(1, LEADER), None), option())
        .await?;
    g.nodes.get_mut(&1).expect("runs").stop().await;
    let err = c
        .vote(VoteRequest::new(Vote::new(2, LEADER), None), option())
        .await
        .expect_err("stopped");
    assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
    g.shutdown().await;
    Ok(())
}

/// A replication link's follower end that accepts the link and then never answers.
fn mute_link() -> LinkHandler {
    std::sync::Arc::new(|stream: tokio::net::TcpStream| {
        Box::pin(async move {
            let (rd, mut wr) = stream.into_split();
            let mut reader = FrameReader::new(rd, 1 << 30);
            let mut magic = [0u8; 8];
            if reader.read_raw(&mut magic).await.is_err()
                || !matches!(reader.next().await, Ok(Some((Kind::Hello, _))))
            {
                return;
            }
            let mut accept = bytes::BytesMut::new();
            frame::put_frame(&mut accept, Kind::Accept, b"");
            if tokio::io::AsyncWriteExt::write_all(&mut wr, &accept)
                .await
                .is_err()
            {
                return;
            }
            // Reads what comes, and keeps the link open even after the leader's half-close.
            while let Ok(Some(_)) = reader.next().await {}
            std::future::pending::<()>().await;
            drop(wr);
        })
    })
}

/// A Raft service that takes every call and never answers.
struct Mute;

#[tonic::async_trait]
impl pb::raft_service_server::RaftService for Mute {
    async fn append_entries(
        &self,
        _: tonic::Request<pb::AppendRequest>,
    ) -> Result<tonic::Response<pb::AppendResponse>, tonic::Status> {
        std::future::pending().await
    }

    async fn vote(
        &self,
        _: tonic::Request<pb::VoteRequest>,
    ) -> Result<tonic::Response<pb::VoteResponse>, tonic::Status> {
        std::future::pending().await
    }

    async fn pre_vote(
        &self,
        _: tonic::Request<pb::VoteRequest>,
    ) -> Result<tonic::Response<pb::VoteResponse>, tonic::Status> {
        std::future::pending().await
    }

    async fn install_snapshot(
        &self,
        _: tonic::Request<tonic::Streaming<pb::InstallSnapshotRequest>>,
    ) -> Result<tonic::Response<pb::InstallSnapshotResponse>, tonic::Status> {
        std::future::pending().await
    }

    async fn transfer_leader(
        &self,
        _: tonic::Request<pb::TransferLeaderRequest>,
    ) -> Result<tonic::Response<pb::TransferLeaderResponse>, tonic::Status> {
        std::future::pending().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_stops_answering_times_the_stream_out() -> anyhow::Result<()> {
    init_tracing();
    let listener = bind().await?;
    let node = BrokerNode {
        raft_addr: listener.local_addr()?.to_string(),
        client_addr: String::new(),
    };
    // Its replication links are accepted and then never answered either.
    let (_stop, stop) = tokio::sync::watch::channel(false);
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_LINKS));
    let incoming = split_incoming(listener, mute_link(), slots, stop);
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::raft_service_server::RaftServiceServer::new(Mute))
            .serve_with_incoming(incoming),
    );
    let cfg = NetworkConfig {
        stream_response_timeout_floor_ms: 0,
        ..NetworkConfig::default()
    };
    let net = NetworkFactory::new(LEADER, GROUP, cfg)?;
    let mut c = net.clone().new_client(1, &node).await;

    // The link opens (the peer accepts it), but no answer follows: the soft
    // TTL (300 ms of a 400 ms option) plus transfer time ends it with a timeout.
    let ttl = RPCOption::new(Duration::from_millis(400));
    let started = Instant::now();
    let mut answers = c
        .stream_append(
            futures_util::stream::iter(vec![append(1, None, 0, 0, 10)]),
            ttl.clone(),
        )
        .await?;
    let first = answers.next().await.expect("an item");
    let took = started.elapsed();
    assert!(matches!(first, Err(RPCError::Timeout(_))), "{first:?}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert!(answers.next().await.is_none(), "nothing after the timeout");
    drop(answers);

    // A snapshot to it: all data moves, the answer never comes; the soft TTL ends it.
    let (meta, file) = snapshot_file(log_id(1, 1), 10)?;
    let started = Instant::now();
    let err = c
        .full_snapshot(
            Vote::new_committed(1, LEADER),
            SnapshotOf::<C, _> { meta, snapshot: file },
            std::future::pending(),
            ttl,
        )
        .await
        .expect_err("no answer");
    assert!(matches!(err, StreamingError::Timeout(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    server.abort();
    Ok(())
}
