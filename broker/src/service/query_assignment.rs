//! QueryAssignment: which queues of a topic (on this broker group) a push consumer owns.
//!
//! Answered by the group's leader (followers forward the call), from its view of the
//! consumer group's members and its lease table ([`crate::assignment`]): each queue has at
//! most one owner at a time, and a queue changes owner only once its holder let go of it,
//! left the group, or stopped asking. raftmq's client lists what it still consumes in the
//! `x-raftmq-holding` header; without it (the official clients) the answer itself is taken
//! as the release.
//!
//! The assignment covers this group's queues only: a consumer asks every group of the
//! topic's route.

use std::sync::Arc;

use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::Code;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use super::heartbeat::CLIENT_ID_HEADER;
use super::heartbeat::client_id;
use super::query_route;
use super::status;
use crate::assignment::HOLDING_HEADER;
use crate::assignment::parse_holding;
use crate::command::Rejection;
use crate::context::Broker;
use crate::error::BrokerError;
use crate::error::BrokerResult;
use crate::error::InvalidCode;
use crate::sm::keys;

#[tracing::instrument(name = "query_assignment", skip_all, fields(topic, group, client_id))]
pub async fn handle(
    broker: &Arc<Broker>,
    req: Request<pb::QueryAssignmentRequest>,
) -> Result<Response<pb::QueryAssignmentResponse>, Status> {
    let Some(client) = client_id(req.metadata()).map(str::to_owned) else {
        return Ok(answer(Err(status::status(
            Code::ClientIdRequired,
            format!("QueryAssignment needs the {CLIENT_ID_HEADER} header"),
        ))));
    };
    let holding_header = req.metadata().get(HOLDING_HEADER).and_then(|v| v.to_str().ok());
    let holding = parse_holding(holding_header);
    let req = req.into_inner();
    let span = tracing::Span::current();
    span.record("client_id", client.as_str());
    // A deposed leader that has not noticed yet must not keep renewing grants.
    if let Err(e) = broker.read_barrier().await {
        return Ok(answer(Err(status::from_error(&e))));
    }
    let result = assignment(broker, &req, &client, holding.as_ref());
    Ok(answer(result.map_err(|e| {
        tracing::debug!(error = %e, "assignment refused");
        status::from_error(&e)
    })))
}

fn answer(result: Result<Vec<pb::Assignment>, pb::Status>) -> Response<pb::QueryAssignmentResponse> {
    Response::new(match result {
        Ok(assignments) => pb::QueryAssignmentResponse {
            status: Some(status::ok()),
            assignments,
        },
        Err(st) => pb::QueryAssignmentResponse {
            status: Some(st),
            assignments: Vec::new(),
        },
    })
}

fn assignment(
    broker: &Broker,
    req: &pb::QueryAssignmentRequest,
    client: &str,
    holding: Option<&std::collections::BTreeSet<u32>>,
) -> BrokerResult<Vec<pb::Assignment>> {
    let topic = req.topic.clone().unwrap_or_default();
    let group = req.group.clone().unwrap_or_default().name;
    let span = tracing::Span::current();
    span.record("topic", topic.name.as_str());
    span.record("group", group.as_str());
    keys::validate_group_name(&group).map_err(|e| BrokerError::invalid(InvalidCode::IllegalGroup, e))?;
    if !broker.is_leader() {
        // Reached only when no leader is known to forward to.
        return Err(BrokerError::Unavailable("no leader to decide assignments".into()));
    }
    let route = query_route::route(
        broker,
        &pb::QueryRouteRequest {
            topic: Some(topic.clone()),
            endpoints: req.endpoints.clone(),
        },
        false,
    )?;
    let config = broker
        .sm
        .topic(&topic.name)?
        .ok_or_else(|| BrokerError::Rejected(Rejection::UnknownTopic(topic.name.clone())))?;
    let term = broker.current_term();
    let owned = broker
        .consumers
        .assign(term, &group, &topic.name, client, config.queues, holding);
    tracing::debug!(?owned, "assignment");
    Ok(route
        .into_iter()
        .filter(|q| u32::try_from(q.id).is_ok_and(|id| owned.contains(&id)))
        .map(|q| pb::Assignment {
            message_queue: Some(q),
        })
        .collect())
}
