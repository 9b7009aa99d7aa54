//! One attempt of a send: the SendMessage call to one broker group, over its addresses in
//! turn (the leader first) until one answers or the attempt fails ([`address_step`]).

use std::time::Duration;

use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::send_request::EncodedSendRequest;

use crate::error::ClientError;
use crate::error::Result;
use crate::rpc::Rpc;

use super::retry::AddressStep;
use super::retry::address_step;
use super::retry::send_status_error;
use super::retry::worse;

/// The header by which a follower names the leader it forwarded to.
pub const LEADER_HEADER: &str = "x-raftmq-leader";

/// A stored send.
#[derive(Debug, Clone)]
pub struct Stored {
    /// One entry per message, in order.
    pub entries: Vec<pb::SendResultEntry>,
    /// The address that answered.
    pub endpoint: String,
    /// The leader a follower forwarded to, if it said.
    pub leader: Option<String>,
}

/// Sends `req` to the first of `addrs` that takes it; `client_queue`: whether the broker
/// is told to store each message on the queue its `queue_id` names ([`QUEUE_HEADER`]).
/// The error of a failed attempt is an unknown outcome if any address's was.
pub async fn attempt(
    rpc: &Rpc,
    addrs: &[String],
    req: &EncodedSendRequest,
    client_queue: bool,
    timeout: Duration,
) -> Result<Stored> {
    let mut failed: Option<ClientError> = None;
    for addr in addrs {
        let (err, timed_out) = match call(rpc, addr, req, client_queue, timeout).await {
            Ok(stored) => return Ok(stored),
            Err(e) => e,
        };
        tracing::debug!(%addr, error = %err, "send to this address failed");
        match address_step(err, timed_out) {
            AddressStep::NextAddress(e) => failed = Some(worse(failed, e)),
            AddressStep::EndAttempt(e) => return Err(worse(failed, e)),
        }
    }
    Err(failed.unwrap_or_else(|| ClientError::Unreachable("the queue has no address".into())))
}

/// The header by which the broker is told to store each message on the queue its
/// `queue_id` names (else a message with a message group goes where the broker's hash of
/// the group puts it).
pub const QUEUE_HEADER: &str = "x-raftmq-queue";

/// One SendMessage call; on failure the error and whether the call timed out.
async fn call(
    rpc: &Rpc,
    addr: &str,
    req: &EncodedSendRequest,
    client_queue: bool,
    timeout: Duration,
) -> std::result::Result<Stored, (ClientError, bool)> {
    let channel = rpc.channel(addr).map_err(|e| (e, false))?;
    let mut request = rpc.request(req.clone(), timeout);
    if client_queue {
        request.metadata_mut().insert(
            QUEUE_HEADER,
            tonic::metadata::MetadataValue::from_static("client"),
        );
    }
    let resp = match crate::rpc::send_encoded(channel, request).await {
        Ok(resp) => resp,
        Err(status) => {
            if status.code() == tonic::Code::Unavailable {
                rpc.drop_channel(addr);
            }
            let timed_out = matches!(
                status.code(),
                tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            );
            return Err((crate::rpc::call_error(&status, addr, true), timed_out));
        }
    };
    let leader = resp
        .metadata()
        .get(LEADER_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let entries = check_response(resp.into_inner(), addr, req.messages.len()).map_err(|e| (e, false))?;
    Ok(Stored {
        entries,
        endpoint: addr.to_owned(),
        leader,
    })
}

/// The entries of an OK answer with one OK entry per message; else the error.
pub fn check_response(
    resp: pb::SendMessageResponse,
    addr: &str,
    messages: usize,
) -> Result<Vec<pb::SendResultEntry>> {
    let status = resp.status.unwrap_or_default();
    if status.code != pb::Code::Ok as i32 {
        return Err(send_status_error(&status, addr));
    }
    if let Some(bad) = resp
        .entries
        .iter()
        .filter_map(|e| e.status.as_ref())
        .find(|s| s.code != pb::Code::Ok as i32)
    {
        return Err(send_status_error(bad, addr));
    }
    if resp.entries.len() != messages {
        // Stored, but the answer does not say where: the outcome is as good as unknown.
        return Err(ClientError::OutcomeUnknown(format!(
            "{addr}: an OK answer with {} entries for {messages} messages",
            resp.entries.len()
        )));
    }
    Ok(resp.entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: pb::Code) -> Option<pb::Status> {
        Some(pb::Status {
            code: code as i32,
            message: "m".into(),
        })
    }

    fn entry(code: pb::Code, offset: i64) -> pb::SendResultEntry {
        pb::SendResultEntry {
            status: status(code),
            message_id: "id".into(),
            offset,
            ..Default::default()
        }
    }

    #[test]
    fn answers_are_checked_top_level_and_per_entry() {
        let ok = pb::SendMessageResponse {
            status: status(pb::Code::Ok),
            entries: vec![entry(pb::Code::Ok, 7), entry(pb::Code::Ok, 8)],
        };
        let entries = check_response(ok.clone(), "a:1", 2).expect("ok");
        assert_eq!(entries.iter().map(|e| e.offset).collect::<Vec<_>>(), [7, 8]);
        assert!(matches!(
            check_response(ok, "a:1", 3),
            Err(ClientError::OutcomeUnknown(_))
        ));
        let refused = pb::SendMessageResponse {
            status: status(pb::Code::HaNotAvailable),
            entries: vec![entry(pb::Code::HaNotAvailable, 0)],
        };
        let e = check_response(refused, "a:1", 1).expect_err("refused");
        assert_eq!(e.code(), Some(pb::Code::HaNotAvailable));
        let bad_entry = pb::SendMessageResponse {
            status: status(pb::Code::Ok),
            entries: vec![entry(pb::Code::IllegalMessageKey, 0)],
        };
        let e = check_response(bad_entry, "a:1", 1).expect_err("refused entry");
        assert_eq!(e.code(), Some(pb::Code::IllegalMessageKey));
    }
}
