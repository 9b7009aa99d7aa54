//! ListGroups: every broker group with a live member, as the registry sees it.

use std::sync::Arc;
use std::time::Instant;

use raftmq_proto::raftmq::namesrv::v1 as pb;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use crate::registry::Registry;
use crate::route_table::GroupView;
use crate::route_table::MemberView;

#[tracing::instrument(name = "list_groups", skip_all)]
pub async fn handle(
    registry: &Arc<Registry>,
    _req: Request<pb::ListGroupsRequest>,
) -> Result<Response<pb::ListGroupsResponse>, Status> {
    let groups = registry.groups(Instant::now()).iter().map(group).collect();
    Ok(Response::new(pb::ListGroupsResponse { groups }))
}

fn group(g: &GroupView) -> pb::BrokerGroup {
    pb::BrokerGroup {
        name: g.name.clone(),
        leader_id: g.leader_id,
        term: g.term,
        members: g.members.iter().map(member).collect(),
        topics: u32::try_from(g.topics).unwrap_or(u32::MAX),
    }
}

fn member(m: &MemberView) -> pb::GroupMember {
    pb::GroupMember {
        node_id: m.node_id,
        client_addr: m.client_addr.clone(),
        role: m.role.to_wire() as i32,
        term: m.term,
        applied_index: m.applied_index,
        last_seen_ms_ago: u64::try_from(m.last_seen_ago.as_millis()).unwrap_or(u64::MAX),
    }
}
