//! AckMessage: acknowledges popped messages by their receipt handles, all of them in one
//! Raft entry. Each entry of the answer says whether its handle was current: a handle of an
//! earlier delivery (the message was delivered again since) or of a message acknowledged
//! already gets `INVALID_RECEIPT_HANDLE`, like an undecodable one. The answer always has
//! one entry per request entry (at least one), and its overall status is `OK`, the one
//! code all entries share, or `MULTIPLE_RESULTS`.

use std::sync::Arc;

use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::Code;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use super::receipt;
use super::status;
use crate::command::Command;
use crate::command::CommandResult;
use crate::command::Header;
use crate::command::Receipt;
use crate::command::Rejection;
use crate::context::Broker;
use crate::error::BrokerError;
use crate::error::BrokerResult;
use crate::error::InvalidCode;
use crate::sm::keys;

/// Most entries one ack may carry.
pub const MAX_ACK_ENTRIES: usize = 1024;
/// Why a well-formed receipt handle no longer counts.
pub const STALE_RECEIPT: &str =
    "receipt handle expired: the message was delivered again or already acknowledged";

#[tracing::instrument(name = "ack_message", skip_all, fields(entries = req.get_ref().entries.len()))]
pub async fn handle(
    broker: &Arc<Broker>,
    req: Request<pb::AckMessageRequest>,
) -> Result<Response<pb::AckMessageResponse>, Status> {
    let req = req.into_inner();
    let statuses = ack(broker, &req).await;
    Ok(Response::new(shape(&req.entries, statuses)))
}

/// One status per request entry (one in all for an empty request).
async fn ack(broker: &Broker, req: &pb::AckMessageRequest) -> Vec<pb::Status> {
    let (group, topic) = match check(broker, req) {
        Ok(names) => names,
        Err(e) => {
            tracing::debug!(error = %e, "ack refused");
            return vec![status::from_error(&e); req.entries.len().max(1)];
        }
    };
    let decoded: Vec<BrokerResult<Receipt>> = req
        .entries
        .iter()
        .map(|e| receipt::decode(&e.receipt_handle))
        .collect();
    let receipts: Vec<Receipt> = decoded.iter().filter_map(|d| d.as_ref().ok().copied()).collect();
    let answers = if receipts.is_empty() {
        Ok(Vec::new())
    } else {
        propose_ack(broker, group, topic, receipts).await
    };
    merge(&decoded, answers)
}

/// Validates the request and returns its group and topic.
fn check(broker: &Broker, req: &pb::AckMessageRequest) -> BrokerResult<(String, String)> {
    let (group, topic) = consumer_names(req.group.as_ref(), req.topic.as_ref())?;
    if req.entries.is_empty() {
        return Err(BrokerError::invalid(
            InvalidCode::BadRequest,
            "an ack needs at least one entry",
        ));
    }
    if req.entries.len() > MAX_ACK_ENTRIES {
        return Err(BrokerError::invalid(
            InvalidCode::BadRequest,
            format!(
                "{} entries in one ack, at most {MAX_ACK_ENTRIES} allowed",
                req.entries.len()
            ),
        ));
    }
    require_topic(broker, &topic)?;
    Ok((group, topic))
}

/// Validates a consumer group and a topic named by a request (shared by the consume calls).
pub fn consumer_names(
    group: Option<&pb::Resource>,
    topic: Option<&pb::Resource>,
) -> BrokerResult<(String, String)> {
    let group = group.map(|r| r.name.clone()).unwrap_or_default();
    keys::validate_group_name(&group).map_err(|e| BrokerError::invalid(InvalidCode::IllegalGroup, e))?;
    let topic = topic.map(|r| r.name.clone()).unwrap_or_default();
    keys::validate_topic_name(&topic).map_err(|e| BrokerError::invalid(InvalidCode::IllegalTopic, e))?;
    Ok((group, topic))
}

/// Refuses an unknown topic before anything is proposed (apply checks it again).
pub fn require_topic(broker: &Broker, topic: &str) -> BrokerResult<crate::command::TopicConfig> {
    broker
        .sm
        .topic(topic)?
        .ok_or_else(|| BrokerError::Rejected(Rejection::UnknownTopic(topic.to_owned())))
}

/// Proposes one ack of `receipts`; one answer per receipt (`true`: it was current).
pub async fn propose_ack(
    broker: &Broker,
    group: String,
    topic: String,
    receipts: Vec<Receipt>,
) -> BrokerResult<Vec<bool>> {
    let n = receipts.len();
    let header = Header::Ack {
        group,
        topic,
        receipts,
    };
    let cmd = Command::control(header).map_err(|e| BrokerError::Internal(e.to_string()))?;
    match broker.write(cmd).await? {
        CommandResult::Acked(answers) if answers.len() == n => Ok(answers),
        CommandResult::Rejected(r) => Err(BrokerError::Rejected(r)),
        other => Err(BrokerError::Internal(format!("unexpected ack result {other:?}"))),
    }
}

/// One status per entry: the decoding error, or the answer to its receipt (in order among
/// the decodable ones), or the error of the whole proposal.
fn merge(decoded: &[BrokerResult<Receipt>], answers: BrokerResult<Vec<bool>>) -> Vec<pb::Status> {
    let mut answered = answers.as_ref().ok().map(|a| a.iter().copied());
    decoded
        .iter()
        .map(|d| match (d, &answers, answered.as_mut()) {
            (Err(e), _, _) | (Ok(_), Err(e), _) => status::from_error(e),
            (Ok(_), Ok(_), Some(it)) => match it.next() {
                Some(true) => status::ok(),
                Some(false) => status::status(Code::InvalidReceiptHandle, STALE_RECEIPT),
                None => status::status(Code::InternalServerError, "missing ack answer"),
            },
            (Ok(_), Ok(_), None) => status::status(Code::InternalServerError, "missing ack answer"),
        })
        .collect()
}

/// The response: one result entry per request entry (at least one), echoing its message
/// id and handle, and the overall status.
pub fn shape(entries: &[pb::AckMessageEntry], statuses: Vec<pb::Status>) -> pb::AckMessageResponse {
    let overall = overall(&statuses);
    let mut results: Vec<pb::AckMessageResultEntry> = entries
        .iter()
        .zip(statuses)
        .map(|(e, s)| pb::AckMessageResultEntry {
            message_id: e.message_id.clone(),
            receipt_handle: e.receipt_handle.clone(),
            status: Some(s),
        })
        .collect();
    if results.is_empty() {
        results.push(pb::AckMessageResultEntry {
            status: Some(overall.clone()),
            ..Default::default()
        });
    }
    pb::AckMessageResponse {
        status: Some(overall),
        entries: results,
    }
}

/// `OK` if every entry is; the shared status if all failed alike; else `MULTIPLE_RESULTS`.
fn overall(statuses: &[pb::Status]) -> pb::Status {
    let Some(first) = statuses.first() else {
        return status::status(Code::BadRequest, "an ack needs at least one entry");
    };
    if statuses.iter().all(|s| s.code == first.code) {
        return first.clone();
    }
    let failed = statuses.iter().filter(|s| s.code != Code::Ok as i32).count();
    status::status(
        Code::MultipleResults,
        format!(
            "{failed} of {} entries failed; see each entry's status",
            statuses.len()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, handle: &str) -> pb::AckMessageEntry {
        pb::AckMessageEntry {
            message_id: id.into(),
            receipt_handle: handle.into(),
            lite_topic: None,
        }
    }

    fn receipt(offset: u64) -> Receipt {
        Receipt {
            queue_id: 0,
            offset,
            attempt: 1,
            topic_created_at: 1,
        }
    }

    fn codes(statuses: &[pb::Status]) -> Vec<i32> {
        statuses.iter().map(|s| s.code).collect()
    }

    #[test]
    fn each_entry_gets_its_own_answer() {
        let bad = receipt::decode("garbage");
        let decoded = vec![Ok(receipt(1)), bad, Ok(receipt(2))];
        let s = merge(&decoded, Ok(vec![true, false]));
        let stale = Code::InvalidReceiptHandle as i32;
        assert_eq!(codes(&s), vec![Code::Ok as i32, stale, stale]);
        assert_eq!(s[2].message, STALE_RECEIPT);

        let down = BrokerError::NotLeader { leader: None };
        let s = merge(&decoded, Err(down));
        assert_eq!(
            codes(&s),
            vec![Code::HaNotAvailable as i32, stale, Code::HaNotAvailable as i32]
        );
    }

    #[test]
    fn the_overall_status_is_ok_the_shared_code_or_multiple_results() {
        let entries = vec![entry("m1", "h1"), entry("m2", "h2")];
        let ok = shape(&entries, vec![status::ok(), status::ok()]);
        assert_eq!(ok.status.as_ref().map(|s| s.code), Some(Code::Ok as i32));
        assert_eq!(ok.entries.len(), 2);
        assert_eq!(
            (
                ok.entries[1].message_id.as_str(),
                ok.entries[1].receipt_handle.as_str()
            ),
            ("m2", "h2")
        );

        let stale = status::status(Code::InvalidReceiptHandle, STALE_RECEIPT);
        let mixed = shape(&entries, vec![status::ok(), stale.clone()]);
        assert_eq!(
            mixed.status.as_ref().map(|s| s.code),
            Some(Code::MultipleResults as i32)
        );
        let entry_codes: Vec<_> = mixed
            .entries
            .iter()
            .filter_map(|e| e.status.as_ref())
            .map(|s| s.code)
            .collect();
        assert_eq!(
            entry_codes,
            vec![Code::Ok as i32, Code::InvalidReceiptHandle as i32]
        );

        let all_stale = shape(&entries, vec![stale.clone(), stale]);
        assert_eq!(
            all_stale.status.map(|s| s.code),
            Some(Code::InvalidReceiptHandle as i32)
        );
    }

    #[test]
    fn an_empty_ack_still_answers_one_entry() {
        let refused = status::status(Code::BadRequest, "an ack needs at least one entry");
        let r = shape(&[], vec![refused]);
        assert_eq!(r.status.map(|s| s.code), Some(Code::BadRequest as i32));
        assert_eq!(r.entries.len(), 1);
        assert_eq!(
            r.entries[0].status.as_ref().map(|s| s.code),
            Some(Code::BadRequest as i32)
        );
        assert_eq!(shape(&[], vec![]).entries.len(), 1);
    }

    #[test]
    fn names_are_validated_with_their_codes() {
        let res = |n: &str| pb::Resource {
            resource_namespace: String::new(),
            name: n.into(),
        };
        assert!(consumer_names(Some(&res("g")), Some(&res("t"))).is_ok());
        let code = |r: BrokerResult<(String, String)>| match r {
            Err(BrokerError::Invalid { code, .. }) => code,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            code(consumer_names(None, Some(&res("t")))),
            InvalidCode::IllegalGroup
        );
        assert_eq!(
            code(consumer_names(Some(&res("a b")), Some(&res("t")))),
            InvalidCode::IllegalGroup
        );
        assert_eq!(
            code(consumer_names(Some(&res("g")), Some(&res("")))),
            InvalidCode::IllegalTopic
        );
    }
}
