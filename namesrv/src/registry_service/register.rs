//! Register: a broker node announces itself. A malformed registration is refused
//! (INVALID_ARGUMENT), logged with its origin, and leaves the table untouched.

use std::sync::Arc;
use std::time::Instant;

use raftmq_proto::raftmq::namesrv::v1 as pb;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use crate::registration;
use crate::registry::Registry;
use crate::route_table::Registered;

#[tracing::instrument(name = "register", skip_all, fields(group, node_id, peer))]
pub async fn handle(
    registry: &Arc<Registry>,
    req: Request<pb::RegisterRequest>,
) -> Result<Response<pb::RegisterResponse>, Status> {
    let peer = req.remote_addr();
    let req = req.into_inner();
    let span = tracing::Span::current();
    span.record("group", req.group.as_str());
    span.record("node_id", req.node_id);
    if let Some(p) = peer {
        span.record("peer", p.to_string());
    }
    let reg = registration::check(&req, peer.map(|p| p.ip())).map_err(|e| {
        tracing::warn!(error = %e, "registration refused");
        e.to_status()
    })?;
    let (role, term, addr, topics) = (reg.role, reg.term, reg.client_addr.clone(), reg.topics.len());
    match registry.register(reg, Instant::now()) {
        Ok(Registered::NewMember) => {
            tracing::info!(?role, term, client_addr = %addr, topics, "broker node registered");
        }
        Ok(Registered::Changed) => {
            tracing::info!(?role, term, client_addr = %addr, "broker node changed role")
        }
        Ok(Registered::Refreshed) => tracing::debug!(?role, term, topics, "broker node refreshed"),
        Err(e) => {
            tracing::warn!(error = %e, "registration refused");
            return Err(e.to_status());
        }
    }
    Ok(Response::new(pb::RegisterResponse {
        expiry_ms: registry.expiry_ms(),
    }))
}
