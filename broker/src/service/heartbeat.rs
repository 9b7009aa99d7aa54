//! Heartbeat: a client tells the node it is alive. The node notes it in its client
//! registry; a consumer's group name, when given, must be valid.
//!
//! Also home of [`client_id`], how every handler finds the calling client.

use std::sync::Arc;

use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::Code;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::metadata::MetadataMap;

use super::status;
use crate::context::Broker;
use crate::sm::keys;

/// The request header naming the calling client.
pub const CLIENT_ID_HEADER: &str = "x-mq-client-id";

/// The calling client's id (the `x-mq-client-id` header), if it sent a non-blank one.
pub fn client_id(metadata: &MetadataMap) -> Option<&str> {
    let v = metadata.get(CLIENT_ID_HEADER)?.to_str().ok()?.trim();
    (!v.is_empty()).then_some(v)
}

#[tracing::instrument(name = "heartbeat", skip_all, fields(client_id))]
pub async fn handle(
    broker: &Arc<Broker>,
    req: Request<pb::HeartbeatRequest>,
) -> Result<Response<pb::HeartbeatResponse>, Status> {
    let st = match client_id(req.metadata()) {
        None => status::status(
            Code::ClientIdRequired,
            format!("a heartbeat needs the {CLIENT_ID_HEADER} header"),
        ),
        Some(id) => {
            tracing::Span::current().record("client_id", id);
            match check_group(req.get_ref().group.as_ref()) {
                Ok(()) => {
                    broker.clients.touch(id);
                    note_push_consumer(broker, id, req.get_ref());
                    status::ok()
                }
                Err(st) => st,
            }
        }
    };
    Ok(Response::new(pb::HeartbeatResponse { status: Some(st) }))
}

/// A push consumer's heartbeat keeps it a member of its group.
fn note_push_consumer(broker: &Broker, client: &str, req: &pb::HeartbeatRequest) {
    if req.client_type != pb::ClientType::PushConsumer as i32 {
        return;
    }
    if let Some(g) = req.group.as_ref().filter(|g| !g.name.is_empty()) {
        let now = std::time::Instant::now();
        if !broker
            .consumers
            .members_mut(|m| m.heartbeat(&g.name, client, now))
        {
            tracing::warn!(group = %g.name, "too many consumers; this one is not a member");
        }
    }
}

/// A consumer's group must be a valid name; producers send none (or an empty one).
fn check_group(group: Option<&pb::Resource>) -> Result<(), pb::Status> {
    match group {
        Some(g) if !g.name.is_empty() => {
            keys::validate_group_name(&g.name).map_err(|e| status::status(Code::IllegalConsumerGroup, e))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_id_comes_from_its_header() {
        let mut m = MetadataMap::new();
        assert_eq!(client_id(&m), None);
        m.insert(
            CLIENT_ID_HEADER,
            tonic::metadata::MetadataValue::from_static("  "),
        );
        assert_eq!(client_id(&m), None, "blank ids do not count");
        m.insert(
            CLIENT_ID_HEADER,
            tonic::metadata::MetadataValue::from_static("host@1@0@abc"),
        );
        assert_eq!(client_id(&m), Some("host@1@0@abc"));
    }

    #[test]
    fn group_names_are_checked_when_present() {
        let res = |name: &str| pb::Resource {
            resource_namespace: String::new(),
            name: name.into(),
        };
        assert!(check_group(None).is_ok());
        assert!(check_group(Some(&res(""))).is_ok());
        assert!(check_group(Some(&res("GID_orders"))).is_ok());
        let bad = check_group(Some(&res("bad group"))).expect_err("invalid");
        assert_eq!(bad.code, Code::IllegalConsumerGroup as i32);
    }
}
