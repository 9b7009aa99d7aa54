//! What both ends of the Raft service agree on: payload encoding (postcard), the metadata
//! that addresses a call to one node of one group, and how an AppendEntries request is cut
//! into pieces that each fit one gRPC message.

use bytes::Bytes;
use openraft::raft::AppendEntriesRequest;
use openraft::type_config::alias::LogIdOf;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::raft::types::TypeConfig;

/// Metadata key naming the broker group (openraft cluster name) of the caller.
pub const GROUP_KEY: &str = "raftmq-raft-group";
/// Metadata key naming the Raft node id the caller wants to reach (decimal).
pub const TARGET_KEY: &str = "raftmq-raft-target";
/// Metadata key naming the encoding of the payloads the caller sends ([`FORMAT`]).
pub const FORMAT_KEY: &str = "raftmq-raft-format";
/// The payload encoding this build speaks. Bumped whenever what a payload means changes,
/// so that nodes of different builds refuse each other's calls instead of misreading them:
/// 2 = a command travels as one byte string, its slot encoding.
pub const FORMAT: &str = "2";

/// Encodes an openraft message as the `payload` of a Raft service message.
pub fn encode<T: Serialize>(value: &T) -> Result<Bytes, postcard::Error> {
    crate::postcard_out::to_vec_exact(value).map(Bytes::from)
}

/// Decodes the `payload` of a Raft service message. The whole input must be consumed: a
/// payload with trailing bytes is as malformed as a short one.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, postcard::Error> {
    let (value, rest) = postcard::take_from_bytes(bytes)?;
    if !rest.is_empty() {
        return Err(postcard::Error::DeserializeBadEncoding);
    }
    Ok(value)
}

/// Upper bound of what protobuf framing adds around a payload (`AppendRequest` = tag +
/// length varint; gRPC's 5-byte prefix is outside the message limit).
const PROTO_OVERHEAD: usize = 16;

/// One encoded piece of an AppendEntries request.
#[derive(Debug, Clone)]
pub struct Piece {
    /// postcard(AppendEntriesRequest) of this piece.
    pub payload: Bytes,
    /// The log id just before this piece's entries.
    pub prev: Option<LogIdOf<TypeConfig>>,
    /// The log id of this piece's last entry, or `prev` if it has none. A follower that
    /// accepts the piece answers with exactly this.
    pub last: Option<LogIdOf<TypeConfig>>,
    /// Whether the piece carries entries (a heartbeat or commit update does not).
    pub has_entries: bool,
}

impl Piece {
    /// Size on the wire, protobuf framing included.
    pub fn wire_size(&self) -> usize {
        self.payload.len() + PROTO_OVERHEAD
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
    let bare = AppendEntriesRequest::<TypeConfig> {
        vote,
        prev_log_id,
        entries: Vec::new(),
        leader_commit,
    };
    let header = postcard::experimental::serialized_size(&bare)? + 10 + PROTO_OVERHEAD;

    let mut sizes = Vec::with_capacity(entries.len());
    for e in &entries {
        sizes.push(postcard::experimental::serialized_size(e)?);
    }
    let total: usize = header + sizes.iter().sum::<usize>();

    let mut groups: Vec<Vec<_>> = Vec::new();
    if total <= budget {
        groups.push(entries);
    } else {
        let mut cur = Vec::new();
        let mut cur_size = header;
        for (e, size) in entries.into_iter().zip(sizes) {
            if !cur.is_empty() && cur_size + size > budget {
                groups.push(std::mem::take(&mut cur));
                cur_size = header;
            }
            cur_size += size;
            cur.push(e);
        }
        groups.push(cur);
    }

    let mut pieces = Vec::with_capacity(groups.len());
    let mut prev = prev_log_id;
    for entries in groups {
        let last = entries.last().map(|e| e.log_id).or(prev);
        let first_index = entries.first().map(|e| e.log_id.index);
        let has_entries = !entries.is_empty();
        let piece_req = AppendEntriesRequest::<TypeConfig> {
            vote,
            prev_log_id: prev,
            entries,
            leader_commit,
        };
        let payload = encode(&piece_req)?;
        let piece = Piece {
            payload,
            prev,
            last,
            has_entries,
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

#[cfg(test)]
mod tests {
    use openraft::EntryPayload;
    use openraft::LogId;
    use openraft::Vote;
    use openraft::impls::leader_id_adv::LeaderId;
    use openraft::raft::StreamAppendError;
    use openraft::raft::StreamAppendResult;

    use super::*;
    use crate::command::Command;
    use crate::command::Header;
    use crate::command::MessageMeta;

    fn log_id(term: u64, index: u64) -> LogIdOf<TypeConfig> {
        LogId::new(LeaderId { term, node_id: 1 }, index)
    }

    type TestEntry = openraft::type_config::alias::EntryOf<TypeConfig>;

    fn send(index: u64, body: usize) -> TestEntry {
        let meta = MessageMeta {
            topic: "t".into(),
            queue_id: 0,
            tag_hash: 0,
            msg_id: format!("m{index}"),
        };
        let header = Header::Send {
            store_time_ms: 1,
            messages: vec![meta],
        };
        let cmd = Command::new(header, vec![Bytes::from(vec![index as u8; body])]).expect("valid send");
        TestEntry {
            log_id: log_id(2, index),
            payload: EntryPayload::Normal(cmd),
        }
    }

    fn request(prev: u64, n: u64, body: usize) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(2, 1),
            prev_log_id: Some(log_id(2, prev)),
            entries: (prev + 1..=prev + n).map(|i| send(i, body)).collect(),
            leader_commit: Some(log_id(2, prev)),
        }
    }

    #[test]
    fn small_request_is_one_piece() {
        let req = request(10, 5, 100);
        let pieces = split_append(req.clone(), 1 << 20, 4 << 20).expect("split");
        assert_eq!(pieces.len(), 1);
        assert_eq!(pieces[0].prev, Some(log_id(2, 10)));
        assert_eq!(pieces[0].last, Some(log_id(2, 15)));
        let back: AppendEntriesRequest<TypeConfig> = decode(&pieces[0].payload).expect("decode");
        assert_eq!(back.entries.len(), 5);
        assert_eq!(back.entries, req.entries);
    }

    #[test]
    fn large_request_is_cut_into_consecutive_pieces_within_budget() {
        let budget = 64 * 1024;
        let req = request(0, 20, 20_000);
        let pieces = split_append(req.clone(), budget, 1 << 20).expect("split");
        assert!(pieces.len() > 1, "expected a split, got {}", pieces.len());
        let mut expect_prev = Some(log_id(2, 0));
        let mut all = Vec::new();
        for p in &pieces {
            assert!(p.wire_size() <= budget, "piece of {} bytes", p.wire_size());
            assert_eq!(p.prev, expect_prev);
            let back: AppendEntriesRequest<TypeConfig> = decode(&p.payload).expect("decode");
            assert_eq!(back.prev_log_id, p.prev);
            assert_eq!(back.vote, req.vote);
            assert_eq!(back.leader_commit, req.leader_commit);
            assert_eq!(back.entries.last().map(|e| e.log_id), p.last);
            expect_prev = p.last;
            all.extend(back.entries);
        }
        assert_eq!(all, req.entries);
        assert_eq!(pieces.last().and_then(|p| p.last), Some(log_id(2, 20)));
    }

    #[test]
    fn an_entry_above_the_budget_travels_alone_and_one_above_the_limit_is_refused() {
        let req = request(0, 3, 100_000);
        let pieces = split_append(req.clone(), 50_000, 1 << 20).expect("split");
        assert_eq!(pieces.len(), 3);
        let err = split_append(req, 50_000, 60_000).expect_err("too large");
        assert!(matches!(err, SplitError::EntryTooLarge { index: 1, .. }), "{err}");
    }

    #[test]
    fn heartbeat_has_no_entries() {
        let req = request(7, 0, 0);
        let pieces = split_append(req, 1024, 4096).expect("split");
        assert_eq!(pieces.len(), 1);
        assert!(!pieces[0].has_entries);
        assert_eq!(pieces[0].last, Some(log_id(2, 7)));
    }

    #[test]
    fn openraft_messages_roundtrip_through_postcard() {
        let ok: StreamAppendResult<TypeConfig> = Ok(Some(log_id(3, 9)));
        let back: StreamAppendResult<TypeConfig> = decode(&encode(&ok).expect("encode")).expect("decode");
        assert_eq!(back, ok);
        let conflict: StreamAppendResult<TypeConfig> = Err(StreamAppendError::Conflict(log_id(3, 9)));
        let back: StreamAppendResult<TypeConfig> =
            decode(&encode(&conflict).expect("encode")).expect("decode");
        assert_eq!(back, conflict);
    }

    #[test]
    fn malformed_payloads_are_errors() {
        assert!(decode::<AppendEntriesRequest<TypeConfig>>(b"").is_err());
        assert!(decode::<AppendEntriesRequest<TypeConfig>>(&[0xff; 64]).is_err());
        let ok: StreamAppendResult<TypeConfig> = Ok(None);
        let mut bytes = encode(&ok).expect("encode").to_vec();
        bytes.push(0);
        assert!(
            decode::<StreamAppendResult<TypeConfig>>(&bytes).is_err(),
            "trailing bytes"
        );
    }
}
