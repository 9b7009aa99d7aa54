//! CreateTopic, UpdateTopic, DeleteTopic (leader only: the caller relays them) and
//! ListTopics (answered from this node's applied state).

use raftmq_proto::raftmq::admin::v1 as pb;

use super::errors::AdminError;
use super::errors::expect_done;
use crate::command::Command;
use crate::command::Header;
use crate::command::MessageKind;
use crate::command::Permission;
use crate::command::TopicConfig;
use crate::context::Broker;
use crate::error::BrokerError;
use crate::sm::StateMachine;
use crate::sm::apply::MAX_QUEUES;
use crate::sm::keys::validate_topic_name;

/// Queues of a topic created without a count (RocketMQ's default).
pub const DEFAULT_QUEUES: u32 = 8;

/// What a spec is for: a create may leave the queue count out, an update may not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecUse {
    Create,
    Update,
}

/// The topic configuration a wire spec asks for, with the protocol's defaults filled in.
pub fn spec_to_config(spec: &pb::TopicSpec, usage: SpecUse) -> Result<TopicConfig, AdminError> {
    validate_topic_name(&spec.name).map_err(AdminError::Invalid)?;
    Ok(TopicConfig {
        name: spec.name.clone(),
        queues: queues_of(spec, usage)?,
        permission: permission_from_wire(spec.permission)?,
        kind: kind_from_wire(spec.kind)?,
    })
}

fn queues_of(spec: &pb::TopicSpec, usage: SpecUse) -> Result<u32, AdminError> {
    match (spec.queues, usage) {
        (0, SpecUse::Create) => Ok(DEFAULT_QUEUES),
        (0, SpecUse::Update) => Err(AdminError::Invalid(format!(
            "topic {}: queues must be at least 1",
            spec.name
        ))),
        (n, _) if n > MAX_QUEUES => Err(AdminError::Invalid(format!(
            "topic {}: {n} queues asked, at most {MAX_QUEUES} allowed",
            spec.name
        ))),
        (n, _) => Ok(n),
    }
}

/// The wire spec of a topic configuration.
pub fn config_to_spec(c: &TopicConfig) -> pb::TopicSpec {
    pb::TopicSpec {
        name: c.name.clone(),
        queues: c.queues,
        permission: permission_to_wire(c.permission) as i32,
        kind: kind_to_wire(c.kind) as i32,
    }
}

/// Unspecified means read-write (also on update: the spec is complete).
pub fn permission_from_wire(v: i32) -> Result<Permission, AdminError> {
    match pb::Permission::try_from(v) {
        Ok(pb::Permission::Unspecified | pb::Permission::ReadWrite) => Ok(Permission::ReadWrite),
        Ok(pb::Permission::Read) => Ok(Permission::Read),
        Ok(pb::Permission::Write) => Ok(Permission::Write),
        Err(_) => Err(AdminError::Invalid(format!("unknown permission {v}"))),
    }
}

pub fn permission_to_wire(p: Permission) -> pb::Permission {
    match p {
        Permission::ReadWrite => pb::Permission::ReadWrite,
        Permission::Read => pb::Permission::Read,
        Permission::Write => pb::Permission::Write,
    }
}

/// Unspecified means normal.
pub fn kind_from_wire(v: i32) -> Result<MessageKind, AdminError> {
    match pb::MessageKind::try_from(v) {
        Ok(pb::MessageKind::KindUnspecified | pb::MessageKind::Normal) => Ok(MessageKind::Normal),
        Ok(pb::MessageKind::Fifo) => Ok(MessageKind::Fifo),
        Ok(pb::MessageKind::Delay) => Ok(MessageKind::Delay),
        Ok(pb::MessageKind::Transaction) => Ok(MessageKind::Transaction),
        Err(_) => Err(AdminError::Invalid(format!("unknown message kind {v}"))),
    }
}

pub fn kind_to_wire(k: MessageKind) -> pb::MessageKind {
    match k {
        MessageKind::Normal => pb::MessageKind::Normal,
        MessageKind::Fifo => pb::MessageKind::Fifo,
        MessageKind::Delay => pb::MessageKind::Delay,
        MessageKind::Transaction => pb::MessageKind::Transaction,
    }
}

/// Whether `new` may replace `current`: queues never shrink, and the kind of a topic that
/// holds messages stays. `has_data` is asked only when the kind changes.
pub fn check_update(
    current: &TopicConfig,
    new: &TopicConfig,
    has_data: impl FnOnce() -> Result<bool, AdminError>,
) -> Result<(), AdminError> {
    if new.queues < current.queues {
        return Err(AdminError::Invalid(format!(
            "topic {} has {} queues; queues can be added but not removed ({} asked)",
            current.name, current.queues, new.queues
        )));
    }
    if new.kind != current.kind && has_data()? {
        return Err(AdminError::Precondition(format!(
            "topic {} holds messages; its kind cannot change from {:?} to {:?}",
            current.name, current.kind, new.kind
        )));
    }
    Ok(())
}

/// Proposes a topic change and waits until it is applied.
async fn commit(broker: &Broker, header: Header) -> Result<(), AdminError> {
    let cmd = Command::control(header).map_err(|e| BrokerError::Internal(e.to_string()))?;
    expect_done(broker.write(cmd).await?)
}

fn spec_of(spec: Option<pb::TopicSpec>) -> Result<pb::TopicSpec, AdminError> {
    spec.ok_or_else(|| AdminError::Invalid("the request carries no topic spec".into()))
}

pub async fn create(
    broker: &Broker,
    req: pb::CreateTopicRequest,
) -> Result<pb::CreateTopicResponse, AdminError> {
    let config = spec_to_config(&spec_of(req.topic)?, SpecUse::Create)?;
    crate::forward::ensure_leader(broker)?;
    let name = config.name.clone();
    commit(broker, Header::CreateTopic(config)).await?;
    tracing::info!(topic = %name, "topic created");
    Ok(pb::CreateTopicResponse {})
}

/// The queue-shrink and kind checks read the leader's applied state right before proposing;
/// a concurrent change of the same topic can slip in between (the state machine itself only
/// checks the name and the queue range).
pub async fn update(
    broker: &Broker,
    req: pb::UpdateTopicRequest,
) -> Result<pb::UpdateTopicResponse, AdminError> {
    let config = spec_to_config(&spec_of(req.topic)?, SpecUse::Update)?;
    crate::forward::ensure_leader(broker)?;
    let Some(current) = broker.sm.topic(&config.name)? else {
        return Err(BrokerError::Rejected(crate::command::Rejection::UnknownTopic(config.name)).into());
    };
    check_update(&current, &config, || holds_messages(&broker.sm, &current))?;
    let name = config.name.clone();
    commit(broker, Header::UpdateTopic(config)).await?;
    tracing::info!(topic = %name, "topic updated");
    Ok(pb::UpdateTopicResponse {})
}

pub async fn delete(
    broker: &Broker,
    req: pb::DeleteTopicRequest,
) -> Result<pb::DeleteTopicResponse, AdminError> {
    validate_topic_name(&req.name).map_err(AdminError::Invalid)?;
    crate::forward::ensure_leader(broker)?;
    commit(
        broker,
        Header::DeleteTopic {
            name: req.name.clone(),
        },
    )
    .await?;
    tracing::info!(topic = %req.name, "topic deleted");
    Ok(pb::DeleteTopicResponse {})
}

/// Whether any queue of the topic has ever stored a message.
fn holds_messages(sm: &StateMachine, topic: &TopicConfig) -> Result<bool, AdminError> {
    for q in 0..topic.queues {
        if sm.next_offset(&topic.name, q)? > 0 {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Every topic (ordered by name, as the state machine keeps them) with its queues' max offsets.
pub fn list(sm: &StateMachine) -> Result<pb::ListTopicsResponse, AdminError> {
    let topics = sm
        .topics()?
        .iter()
        .map(|t| topic_info(sm, t))
        .collect::<Result<_, _>>()?;
    Ok(pb::ListTopicsResponse { topics })
}

fn topic_info(sm: &StateMachine, t: &TopicConfig) -> Result<pb::TopicInfo, AdminError> {
    let queues = (0..t.queues)
        .map(|queue_id| {
            Ok(pb::QueueInfo {
                queue_id,
                max_offset: sm.next_offset(&t.name, queue_id)?,
            })
        })
        .collect::<Result<_, AdminError>>()?;
    Ok(pb::TopicInfo {
        spec: Some(config_to_spec(t)),
        queues,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, queues: u32, permission: i32, kind: i32) -> pb::TopicSpec {
        pb::TopicSpec {
            name: name.into(),
            queues,
            permission,
            kind,
        }
    }

    fn config(queues: u32, kind: MessageKind) -> TopicConfig {
        TopicConfig {
            name: "t".into(),
            queues,
            permission: Permission::ReadWrite,
            kind,
        }
    }

    #[test]
    fn create_fills_in_defaults() {
        let c = spec_to_config(&spec("orders", 0, 0, 0), SpecUse::Create).expect("valid");
        assert_eq!(
            c,
            TopicConfig {
                name: "orders".into(),
                queues: DEFAULT_QUEUES,
                permission: Permission::ReadWrite,
                kind: MessageKind::Normal,
            }
        );
    }

    #[test]
    fn update_needs_a_queue_count() {
        let e = spec_to_config(&spec("orders", 0, 1, 1), SpecUse::Update);
        assert!(matches!(e, Err(AdminError::Invalid(_))));
        let c = spec_to_config(&spec("orders", 3, 0, 0), SpecUse::Update).expect("valid");
        assert_eq!(c.queues, 3);
        assert_eq!(c.permission, Permission::ReadWrite);
    }

    #[test]
    fn bad_specs_are_invalid() {
        for bad in [
            spec("", 1, 1, 1),
            spec("a b", 1, 1, 1),
            spec(&"x".repeat(128), 1, 1, 1),
            spec("t", MAX_QUEUES + 1, 1, 1),
            spec("t", 1, 9, 1),
            spec("t", 1, 1, -1),
        ] {
            let e = spec_to_config(&bad, SpecUse::Create);
            assert!(matches!(e, Err(AdminError::Invalid(_))), "{bad:?}: {e:?}");
        }
    }

    #[test]
    fn spec_and_config_roundtrip() {
        let perms = [Permission::Read, Permission::Write, Permission::ReadWrite];
        let kinds = [
            MessageKind::Normal,
            MessageKind::Fifo,
            MessageKind::Delay,
            MessageKind::Transaction,
        ];
        for permission in perms {
            for kind in kinds {
                let c = TopicConfig {
                    name: "t-1_%".into(),
                    queues: 5,
                    permission,
                    kind,
                };
                let back = spec_to_config(&config_to_spec(&c), SpecUse::Update).expect("valid");
                assert_eq!(back, c);
            }
        }
    }

    #[test]
    fn updates_never_shrink_queues() {
        let e = check_update(
            &config(8, MessageKind::Normal),
            &config(4, MessageKind::Normal),
            || Ok(false),
        );
        assert!(matches!(e, Err(AdminError::Invalid(_))));
        assert!(
            check_update(
                &config(8, MessageKind::Normal),
                &config(16, MessageKind::Normal),
                || Ok(true)
            )
            .is_ok()
        );
    }

    #[test]
    fn kind_changes_only_while_empty() {
        let (normal, fifo) = (config(8, MessageKind::Normal), config(8, MessageKind::Fifo));
        assert!(check_update(&normal, &fifo, || Ok(false)).is_ok());
        let e = check_update(&normal, &fifo, || Ok(true));
        assert!(matches!(e, Err(AdminError::Precondition(_))));
        // Data is not looked at when the kind stays.
        assert!(check_update(&normal, &normal, || panic!("not asked")).is_ok());
    }
}
