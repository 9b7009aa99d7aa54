//! What both ends of the Raft service agree on: payload encoding (postcard) and the
//! metadata that addresses a call to one node of one group. How an AppendEntries request
//! travels is in [`crate::raft::append_wire`].

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Metadata key naming the broker group (openraft cluster name) of the caller.
pub const GROUP_KEY: &str = "raftmq-raft-group";
/// Metadata key naming the Raft node id the caller wants to reach (decimal).
pub const TARGET_KEY: &str = "raftmq-raft-target";
/// Metadata key naming the encoding of the payloads the caller sends ([`FORMAT`]).
pub const FORMAT_KEY: &str = "raftmq-raft-format";
/// The payload encoding this build speaks. Bumped whenever what a payload means changes,
/// so that nodes of different builds refuse each other's calls instead of misreading them:
/// 2 = a command travels as one byte string, its slot encoding; 3 = an AppendEntries
/// request's commands travel beside its postcard payload, one protobuf `bytes` each;
/// 4 = pipelined replication travels on replication links, no longer as a gRPC stream.
pub const FORMAT: &str = "4";

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

#[cfg(test)]
mod tests {
    use openraft::LogId;
    use openraft::impls::leader_id_adv::LeaderId;
    use openraft::raft::StreamAppendError;
    use openraft::raft::StreamAppendResult;
    use openraft::type_config::alias::LogIdOf;

    use super::*;
    use crate::raft::types::TypeConfig;

    fn log_id(term: u64, index: u64) -> LogIdOf<TypeConfig> {
        LogId::new(LeaderId { term, node_id: 1 }, index)
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
        assert!(decode::<openraft::raft::VoteRequest<TypeConfig>>(b"").is_err());
        assert!(decode::<openraft::raft::VoteRequest<TypeConfig>>(&[0xff; 64]).is_err());
        let ok: StreamAppendResult<TypeConfig> = Ok(None);
        let mut bytes = encode(&ok).expect("encode").to_vec();
        bytes.push(0);
        assert!(
            decode::<StreamAppendResult<TypeConfig>>(&bytes).is_err(),
            "trailing bytes"
        );
    }
}
