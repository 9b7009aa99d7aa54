//! TopicRoute: each broker group hosting a topic, with its spec and endpoints (leader
//! first). NOT_FOUND when no live group hosts it.

use std::sync::Arc;
use std::time::Instant;

use raftmq_proto::raftmq::namesrv::v1 as pb;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use crate::registry::Registry;

#[tracing::instrument(name = "topic_route", skip_all, fields(topic))]
pub async fn handle(
    registry: &Arc<Registry>,
    req: Request<pb::TopicRouteRequest>,
) -> Result<Response<pb::TopicRouteResponse>, Status> {
    let topic = req.into_inner().topic;
    tracing::Span::current().record("topic", topic.as_str());
    let routes = registry
        .route(&topic, Instant::now())
        .map_err(|e| e.to_status())?;
    let groups = routes
        .iter()
        .map(|r| pb::GroupRoute {
            group: r.group.clone(),
            spec: Some(r.spec.to_wire(&topic)),
            endpoints: r.endpoints.clone(),
            current: u32::try_from(r.current).unwrap_or(u32::MAX),
            leader_id: r.leader_id,
        })
        .collect();
    Ok(Response::new(pb::TopicRouteResponse { topic, groups }))
}
