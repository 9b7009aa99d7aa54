//! How an AppendEntries request travels: cut into pieces that each fit one gRPC message,
//! each piece an `AppendRequest` in two parts. Its `payload` is postcard of everything
//! but the commands (vote, prev, commit, and per entry its log id and kind); its
//! `commands` are the normal entries' commands as the log lays them out (their slot
//! encoding), one protobuf `bytes` each.
//!
//! So the leader copies a message's bytes once into the request, by protobuf, instead of
//! first into a postcard encoding and then into protobuf, for each follower.
//!
//! A follower that got the message from a unary gRPC call copies each command out into a
//! buffer of its own: a slice would pin tonic's whole receive buffer for as long as the
//! log's read cache holds any of its commands, and make tonic allocate a fresh buffer for
//! every message (measured: about 55 MiB more resident memory per follower, no CPU
//! saved). One that got it on a replication link in a frame of at least
//! [`crate::raft::link::io::OWN_MIN`] bytes keeps slices ([`from_message_shared`]): such
//! a frame is read into memory of its own, exactly its size and nearly all commands, so a
//! slice pins little more than the command itself.

use openraft::EntryPayload;
use openraft::Membership;
use openraft::raft::AppendEntriesRequest;
use openraft::type_config::alias::EntryOf;
use openraft::type_config::alias::LogIdOf;
use openraft::type_config::alias::VoteOf;
use raftmq_proto::raftmq::raft::v1 as pb;
use serde::Deserialize;
use serde::Serialize;

use crate::command::Command;
use crate::raft::types::BrokerNode;
use crate::raft::types::NodeId;
use crate::raft::types::TypeConfig;
use crate::raft::wire;

type Entry = EntryOf<TypeConfig>;
type LogId = LogIdOf<TypeConfig>;
type GroupMembership = Membership<NodeId, BrokerNode>;

/// Upper bound of what protobuf framing adds around a message's fields (tag + length
/// varint of `payload`; gRPC's 5-byte prefix is outside the message limit).
const PROTO_OVERHEAD: usize = 16;

/// What protobuf adds around one command: its tag and a length varint of at most 5 bytes.
const COMMAND_OVERHEAD: usize = 6;

/// An entry's kind, its command left out (it travels in `commands`).
#[derive(Serialize)]
enum KindRef<'a> {
    Blank,
    Normal,
    Membership(&'a GroupMembership),
}

/// [`KindRef`] as decoded (same variants, same order, so the same encoding).
#[derive(Deserialize)]
enum Kind {
    Blank,
    Normal,
    Membership(GroupMembership),
}

/// The payload as encoded: borrowed from the request.
#[derive(Serialize)]
struct HeadRef<'a> {
    vote: &'a VoteOf<TypeConfig>,
    prev_log_id: Option<&'a LogId>,
    leader_commit: Option<&'a LogId>,
    entries: Vec<(&'a LogId, KindRef<'a>)>,
}

/// The payload as decoded.
#[derive(Deserialize)]
struct Head {
    vote: VoteOf<TypeConfig>,
    prev_log_id: Option<LogId>,
    leader_commit: Option<LogId>,
    entries: Vec<(LogId, Kind)>,
}

fn kind(e: &Entry) -> KindRef<'_> {
    match &e.payload {
        EntryPayload::Blank => KindRef::Blank,
        EntryPayload::Normal(_) => KindRef::Normal,
        EntryPayload::Membership(m) => KindRef::Membership(m),
    }
}

/// Bytes `e` adds to a request: its part of the payload and its command.
fn entry_size(e: &Entry) -> Result<usize, postcard::Error> {
    let head = postcard::experimental::serialized_size(&(&e.log_id, kind(e)))?;
    let command = match &e.payload {
        EntryPayload::Normal(c) => raft_log::slots::encoded_len(c) + COMMAND_OVERHEAD,
        _ => 0,
    };
    Ok(head + command)
}

/// The `AppendRequest` of `req`, whatever its size.
pub fn to_message(req: &AppendEntriesRequest<TypeConfig>) -> Result<pb::AppendRequest, postcard::Error> {
    let head = HeadRef {
        vote: &req.vote,
        prev_log_id: req.prev_log_id.as_ref(),
        leader_commit: req.leader_commit.as_ref(),
        entries: req.entries.iter().map(|e| (&e.log_id, kind(e))).collect(),
    };
    let commands = req
        .entries
        .iter()
        .filter_map(|e| match &e.payload {
            EntryPayload::Normal(c) => Some(c.encoding()),
            _ => None,
        })
        .collect();
    Ok(pb::AppendRequest {
        payload: wire::encode(&head)?,
        commands,
    })
}

/// Why an `AppendRequest` does not decode.
#[derive(Debug, thiserror::Error)]
pub enum AppendDecodeError {
    #[error("malformed payload: {0}")]
    Payload(#[from] postcard::Error),
    #[error("{normal} normal entries but {commands} commands")]
    CommandCount { normal: usize, commands: usize },
    #[error("malformed command of entry {index}: {reason}")]
    Command { index: u64, reason: String },
}

/// The openraft request an `AppendRequest` carries; each command in a buffer of its own
/// (see the module's notes).
pub fn from_message(msg: pb::AppendRequest) -> Result<AppendEntriesRequest<TypeConfig>, AppendDecodeError> {
    decode_message(msg, false)
}

/// The same, each command a slice of the buffer it arrived in: for a replication link's
/// frame, a buffer of its own that is nearly all commands (see the module's notes).
pub fn from_message_shared(
    msg: pb::AppendRequest,
) -> Result<AppendEntriesRequest<TypeConfig>, AppendDecodeError> {
    decode_message(msg, true)
}

fn decode_message(
    msg: pb::AppendRequest,
    share: bool,
) -> Result<AppendEntriesRequest<TypeConfig>, AppendDecodeError> {
    let head: Head = wire::decode(&msg.payload)?;
    let normal = head
        .entries
        .iter()
        .filter(|(_, k)| matches!(k, Kind::Normal))
        .count();
    if normal != msg.commands.len() {
        return Err(AppendDecodeError::CommandCount {
            normal,
            commands: msg.commands.len(),
        });
    }
    let mut commands = msg.commands.into_iter();
    let mut entries = Vec::with_capacity(head.entries.len());
    for (log_id, kind) in head.entries {
        let payload = match kind {
            Kind::Blank => EntryPayload::Blank,
            Kind::Membership(m) => EntryPayload::Membership(m),
            Kind::Normal => {
                let bytes = commands.next().unwrap_or_default();
                let bytes = if share {
                    bytes
                } else {
                    bytes::Bytes::copy_from_slice(&bytes)
                };
                let cmd = <Command as raft_log::SlottedPayload>::from_encoded(bytes).map_err(|reason| {
                    AppendDecodeError::Command {
                        index: log_id.index,
                        reason,
                    }
                })?;
                EntryPayload::Normal(cmd)
            }
        };
        entries.push(Entry { log_id, payload });
    }
    Ok(AppendEntriesRequest {
        vote: head.vote,
        prev_log_id: head.prev_log_id,
        entries,
        leader_commit: head.leader_commit,
    })
}

/// One piece of an AppendEntries request, ready to send.
#[derive(Debug, Clone)]
pub struct Piece {
    pub message: pb::AppendRequest,
    /// The log id just before this piece's entries.
    pub prev: Option<LogId>,
    /// The log id of this piece's last entry, or `prev` if it has none. A follower that
    /// accepts the piece answers with exactly this.
    pub last: Option<LogId>,
    /// Whether the piece carries entries (a heartbeat or commit update does not).
    pub has_entries: bool,
}

impl Piece {
    /// Size on the wire, protobuf framing included (an upper bound).
    pub fn wire_size(&self) -> usize {
        PROTO_OVERHEAD
            + self.message.payload.len()
            + self
                .message
                .commands
                .iter()
                .map(|c| c.len() + COMMAND_OVERHEAD)
                .sum::<usize>()
    }
}

/// Why a request could not be cut into sendable pieces.
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    #[error("cannot encode AppendEntries request: {0}")]
    Encode(#[from] postcard::Error),
    #[error(
        "log entry {index} takes {size} bytes on the wire, more than the Raft service's message limit of {limit} bytes"
    )]
    EntryTooLarge { index: u64, size: usize, limit: usize },
}

/// Cuts `req` into consecutive requests whose encodings stay within `budget` bytes each
/// (an entry larger than `budget` travels alone), and encodes them.
///
/// Every piece keeps the request's vote and `leader_commit`; piece `i + 1`'s
/// `prev_log_id` is piece `i`'s last entry. Sent in order, the pieces do to a follower
/// exactly what the whole request would: openraft applies `leader_commit` only up to
/// the entries it has flushed for this leader, as it does for a heartbeat.
///
/// Fails if one piece would exceed `limit`, the gRPC message size both ends accept.
pub fn split_append(
    req: AppendEntriesRequest<TypeConfig>,
    budget: usize,
    limit: usize,
) -> Result<Vec<Piece>, SplitError> {
    let AppendEntriesRequest {
        vote,
        prev_log_id,
        entries,
        leader_commit,
    } = req;

    // Everything but the entries: vote, prev, commit and the entry count varint.
    let bare = HeadRef {
        vote: &vote,
        prev_log_id: prev_log_id.as_ref(),
        leader_commit: leader_commit.as_ref(),
        entries: Vec::new(),
    };
    let header = postcard::experimental::serialized_size(&bare)? + 10 + PROTO_OVERHEAD;

    let sizes = entries.iter().map(entry_size).collect::<Result<Vec<_>, _>>()?;
    let groups = group_by_budget(entries, &sizes, header, budget);

    let mut pieces = Vec::with_capacity(groups.len());
    let mut prev = prev_log_id;
    for entries in groups {
        let last = entries.last().map(|e| e.log_id).or(prev);
        let first_index = entries.first().map(|e| e.log_id.index);
        let piece_req = AppendEntriesRequest::<TypeConfig> {
            vote,
            prev_log_id: prev,
            entries,
            leader_commit,
        };
        let piece = Piece {
            message: to_message(&piece_req)?,
            prev,
            last,
            has_entries: !piece_req.entries.is_empty(),
        };
        if piece.wire_size() > limit {
            return Err(SplitError::EntryTooLarge {
                index: first_index.unwrap_or_default(),
                size: piece.wire_size(),
                limit,
            });
        }
        prev = last;
        pieces.push(piece);
    }
    Ok(pieces)
}

/// `items` (of `sizes[i]` bytes each) cut into consecutive groups of at most `budget`
/// bytes with `header` bytes each; an item larger than that goes alone. Always at least
/// one group (empty for no items).
fn group_by_budget<T>(items: Vec<T>, sizes: &[usize], header: usize, budget: usize) -> Vec<Vec<T>> {
    if header + sizes.iter().sum::<usize>() <= budget {
        return vec![items];
    }
    let mut groups = Vec::new();
    let mut cur = Vec::new();
    let mut cur_size = header;
    for (item, &size) in items.into_iter().zip(sizes) {
        if !cur.is_empty() && cur_size + size > budget {
            groups.push(std::mem::take(&mut cur));
            cur_size = header;
        }
        cur_size += size;
        cur.push(item);
    }
    groups.push(cur);
    groups
}

#[cfg(test)]
#[path = "append_wire_tests.rs"]
mod tests;
