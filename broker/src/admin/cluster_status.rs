//! ClusterStatus: the Raft state of the broker group as the answering node sees it.
//!
//! Node-level fields (leader, term, commit/applied/last-log index) are always this node's
//! own view. Replication progress (each member's matched index and lag) is known on the
//! leader only, so a follower asked directly fetches the leader's answer and copies the
//! members' matched index and lag from it; the caller then sees lag whichever node it asked.
//! If the leader does not answer within [`LEADER_STATUS_TIMEOUT`] the local view is returned
//! without lag and marked with the [`LAG_UNKNOWN_HEADER`] response header.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::Instant as _;
use openraft::RaftMetrics;
use openraft::async_runtime::WatchReceiver;
use raftmq_proto::raftmq::admin::v1 as pb;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::metadata::MetadataValue;

use super::Admin;
use super::relay::relay_timeout;
use crate::raft::types::NodeId;
use crate::raft::types::TypeConfig;

/// How long a follower waits for the leader's replication view.
pub const LEADER_STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// Set (to `leader-unreachable`) on a follower's answer that lacks lag because the leader
/// could not be asked.
pub const LAG_UNKNOWN_HEADER: &str = "x-raftmq-lag-unknown";

pub type Metrics = RaftMetrics<TypeConfig>;

pub async fn handle(
    admin: &Admin,
    req: Request<pb::ClusterStatusRequest>,
) -> Result<Response<pb::ClusterStatusResponse>, Status> {
    let broker = &admin.broker;
    let sm_applied = match broker.sm.applied() {
        Ok((applied, _)) => applied.map(|l| l.index),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the state machine's applied index");
            None
        }
    };
    let mut view = local_view(
        &broker.config.group,
        &broker.raft.metrics().borrow_watched(),
        sm_applied,
    );
    let Some(leader) = admin.leader_to_relay(&req) else {
        return Ok(Response::new(view));
    };
    let timeout = relay_timeout(&req, LEADER_STATUS_TIMEOUT);
    let relayed = admin
        .leaders
        .call(&leader, req, timeout, |mut c, r| async move {
            c.cluster_status(r).await
        })
        .await;
    match relayed {
        Ok(resp) => {
            let (metadata, leader_view, _) = resp.into_parts();
            merge_leader_view(&mut view, &leader_view);
            Ok(Response::from_parts(metadata, view, Default::default()))
        }
        Err(e) => {
            tracing::warn!(leader = leader.0, error = %e, "cluster status without lag: leader unreachable");
            let mut resp = Response::new(view);
            resp.metadata_mut().insert(
                LAG_UNKNOWN_HEADER,
                MetadataValue::from_static("leader-unreachable"),
            );
            Ok(resp)
        }
    }
}

/// What this node's Raft metrics say, replication progress included when it leads.
///
/// openraft publishes metrics asynchronously, after the fact: a write can be answered
/// before `last_applied` shows it. `sm_applied`, the state machine's own record, is
/// therefore taken when it is ahead; the commit index is at least the applied one, and the
/// last log index at least the commit index.
pub fn local_view(group: &str, m: &Metrics, sm_applied: Option<u64>) -> pb::ClusterStatusResponse {
    let applied_index = m.last_applied.map(|l| l.index).max(sm_applied);
    let commit_index = m.local_committed.map(|l| l.index).max(applied_index);
    pb::ClusterStatusResponse {
        group: group.to_owned(),
        node_id: m.id,
        leader_id: m.current_leader,
        term: m.current_term,
        // openraft reports the index this node knows as committed (`local_committed`); the
        // cluster-wide value (`cluster_committed`) may run ahead of the entries it holds.
        commit_index,
        applied_index,
        last_log_index: m.last_log_index.unwrap_or(0).max(commit_index.unwrap_or(0)),
        members: members(m),
        // Set by openraft on the leader only.
        last_quorum_acked_ms_ago: m
            .last_quorum_acked
            .map(|t| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)),
    }
}

/// Voters first, then learners, each ordered by id.
fn members(m: &Metrics) -> Vec<pb::Member> {
    let membership = m.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let learners: BTreeSet<NodeId> = membership.learner_ids().collect();
    let voters = voters.into_iter().map(|id| member(m, id, true));
    let learners = learners.into_iter().map(|id| member(m, id, false));
    voters.chain(learners).collect()
}

fn member(m: &Metrics, id: NodeId, voter: bool) -> pb::Member {
    let node = m
        .membership_config
        .membership()
        .get_node(&id)
        .cloned()
        .unwrap_or_default();
    let role = match (m.current_leader == Some(id), voter) {
        (true, _) => "leader",
        (false, true) => "follower",
        (false, false) => "learner",
    };
    let (matched_index, lag) = replication_of(m, id);
    pb::Member {
        id,
        raft_addr: node.raft_addr,
        client_addr: node.client_addr,
        role: role.to_owned(),
        voter,
        matched_index,
        lag,
    }
}

/// A member's matched index and lag; only a leader knows them. A member the leader has
/// replicated nothing to yet has no matched index and lags by the whole log.
fn replication_of(m: &Metrics, id: NodeId) -> (Option<u64>, Option<u64>) {
    let Some(replication) = &m.replication else {
        return (None, None);
    };
    let matched = replication.get(&id).copied().flatten().map(|l| l.index);
    let last = m.last_log_index.unwrap_or(0);
    (matched, Some(last.saturating_sub(matched.unwrap_or(0))))
}

/// Copies the leader's replication progress into a follower's own view, member by member.
pub fn merge_leader_view(view: &mut pb::ClusterStatusResponse, leader: &pb::ClusterStatusResponse) {
    for m in &mut view.members {
        if let Some(l) = leader.members.iter().find(|l| l.id == m.id) {
            m.matched_index = l.matched_index;
            m.lag = l.lag;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use openraft::LogId;
    use openraft::Membership;
    use openraft::ServerState;
    use openraft::StoredMembership;
    use openraft::impls::leader_id_adv::LeaderId;

    use super::*;
    use crate::raft::types::BrokerNode;

    fn log_id(index: u64) -> crate::sm::LogId {
        LogId::new(LeaderId { term: 2, node_id: 1 }, index)
    }

    fn node(i: u64) -> BrokerNode {
        BrokerNode {
            raft_addr: format!("127.0.0.1:900{i}"),
            client_addr: format!("127.0.0.1:808{i}"),
        }
    }

    /// Voters 1..=3 and learner 4, as node `id` sees them with node 1 leading.
    fn metrics(id: u64) -> Metrics {
        let nodes: BTreeMap<u64, BrokerNode> = (1..=4).map(|i| (i, node(i))).collect();
        let membership = Membership::new(vec![[3, 1, 2].into()], nodes).expect("valid membership");
        let mut m = Metrics::new_initial(id);
        m.state = if id == 1 {
            ServerState::Leader
        } else {
            ServerState::Follower
        };
        m.current_term = 2;
        m.current_leader = Some(1);
        m.last_log_index = Some(10);
        m.local_committed = Some(log_id(9));
        m.last_applied = Some(log_id(8));
        m.membership_config = Arc::new(StoredMembership::new(Some(log_id(1)), membership));
        m
    }

    #[test]
    fn members_are_voters_first_with_roles() {
        let v = local_view("broker-a", &metrics(2), None);
        assert_eq!(
            (v.group.as_str(), v.node_id, v.leader_id, v.term),
            ("broker-a", 2, Some(1), 2)
        );
        assert_eq!(
            (v.commit_index, v.applied_index, v.last_log_index),
            (Some(9), Some(8), 10)
        );
        let roles: Vec<(u64, &str, bool)> = v
            .members
            .iter()
            .map(|m| (m.id, m.role.as_str(), m.voter))
            .collect();
        assert_eq!(
            roles,
            [
                (1, "leader", true),
                (2, "follower", true),
                (3, "follower", true),
                (4, "learner", false)
            ]
        );
        assert_eq!(v.members[3].client_addr, "127.0.0.1:8084");
        // A follower knows no replication progress.
        assert!(
            v.members
                .iter()
                .all(|m| m.matched_index.is_none() && m.lag.is_none())
        );
        assert_eq!(v.last_quorum_acked_ms_ago, None);
    }

    #[test]
    fn the_leader_reports_matched_index_and_lag() {
        let mut m = metrics(1);
        m.replication = Some([(1, Some(log_id(10))), (2, Some(log_id(7))), (3, None)].into());
        let v = local_view("g", &m, None);
        let progress: Vec<(Option<u64>, Option<u64>)> =
            v.members.iter().map(|m| (m.matched_index, m.lag)).collect();
        assert_eq!(
            progress,
            [
                (Some(10), Some(0)),
                (Some(7), Some(3)),
                (None, Some(10)),
                (None, Some(10))
            ]
        );
    }

    #[test]
    fn the_state_machine_may_be_ahead_of_the_metrics() {
        let v = local_view("g", &metrics(2), Some(10));
        assert_eq!((v.commit_index, v.applied_index), (Some(10), Some(10)));
        let v = local_view("g", &metrics(2), Some(3));
        assert_eq!((v.commit_index, v.applied_index), (Some(9), Some(8)));
        let v = local_view("g", &Metrics::new_initial(5), Some(1));
        assert_eq!(
            (v.commit_index, v.applied_index, v.last_log_index),
            (Some(1), Some(1), 1)
        );
    }

    #[test]
    fn an_empty_node_has_no_indexes() {
        let v = local_view("g", &Metrics::new_initial(5), None);
        assert_eq!(
            (v.node_id, v.leader_id, v.commit_index, v.applied_index),
            (5, None, None, None)
        );
        assert_eq!(v.last_log_index, 0);
        assert!(v.members.is_empty());
    }

    #[test]
    fn a_follower_takes_lag_from_the_leader() {
        let mut leader = metrics(1);
        leader.replication = Some([(1, Some(log_id(10))), (2, Some(log_id(6)))].into());
        let leader_view = local_view("g", &leader, None);
        let mut view = local_view("g", &metrics(2), None);
        merge_leader_view(&mut view, &leader_view);
        assert_eq!(view.node_id, 2);
        assert_eq!(
            (view.members[1].matched_index, view.members[1].lag),
            (Some(6), Some(4))
        );
        assert_eq!(
            (view.members[2].matched_index, view.members[2].lag),
            (None, Some(10))
        );
    }
}
