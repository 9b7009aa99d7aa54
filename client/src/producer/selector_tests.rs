//! Choosing a queue with a selector, and the rule that an ordered send (by key or by
//! selector) never moves to another queue after a failed attempt.

use std::time::Duration;

use raftmq_proto::rocketmq::v2 as pb;

use super::*;
use crate::producer::prepared::Prepared;
use crate::producer::retry::RetryPlan;
use crate::producer::retry::Verdict;
use crate::route::TopicRoute;

/// A topic with `per_group` queues on each of `groups`, as a name server lists them.
fn route(groups: &[&str], per_group: i32) -> TopicRoute {
    let mut queues = Vec::new();
    for id in 0..per_group {
        for (g, name) in groups.iter().enumerate() {
            let wire = pb::MessageQueue {
                topic: Some(pb::Resource {
                    name: "t".into(),
                    ..Default::default()
                }),
                id,
                permission: pb::Permission::ReadWrite as i32,
                broker: Some(pb::Broker {
                    name: (*name).into(),
                    id: 0,
                    endpoints: Some(pb::Endpoints {
                        scheme: pb::AddressScheme::IPv4 as i32,
                        addresses: vec![pb::Address {
                            host: "127.0.0.1".into(),
                            port: 1 + i32::try_from(g).expect("few groups"),
                        }],
                    }),
                }),
                accept_message_types: vec![],
            };
            queues.extend(MessageQueue::from_wire(&wire));
        }
    }
    TopicRoute {
        topic: "t".into(),
        queues,
    }
}

fn message() -> Message {
    Message::new("t", "body")
}

#[test]
fn a_selector_picks_among_the_writable_queues() {
    let mut r = route(&["g1", "g2"], 2);
    // g1:0, g2:0, g1:1, g2:1; g2:0 read-only: the selector sees g1:0, g1:1, g2:1.
    r.queues[1].permission = pb::Permission::Read;
    let last = |qs: &[MessageQueue], _: &Message| qs.len().checked_sub(1);
    assert_eq!(choose(&r.queues, &message(), &last).expect("chosen"), 3);
    let g1_1 = |qs: &[MessageQueue], _: &Message| qs.iter().position(|q| q.key() == "g1:1");
    assert_eq!(choose(&r.queues, &message(), &g1_1).expect("chosen"), 2);
    let none = |_: &[MessageQueue], _: &Message| None;
    let beyond = |qs: &[MessageQueue], _: &Message| Some(qs.len());
    for refused in [
        choose(&r.queues, &message(), &none),
        choose(&r.queues, &message(), &beyond),
    ] {
        assert!(
            matches!(refused, Err(ClientError::InvalidArgument(_))),
            "{refused:?}"
        );
    }
    for q in &mut r.queues {
        q.permission = pb::Permission::Read;
    }
    assert!(matches!(
        choose(&r.queues, &message(), &last),
        Err(ClientError::NotFound(_))
    ));
}

#[test]
fn select_by_hash_keeps_a_key_on_one_queue_and_spreads_keys() {
    let r = route(&["g1", "g2"], 4);
    let mut used = std::collections::BTreeSet::new();
    for k in 0..200 {
        let s = SelectByHash::new(format!("order-{k}"));
        let i = choose(&r.queues, &message(), &s).expect("chosen");
        assert_eq!(choose(&r.queues, &message(), &s).expect("chosen"), i, "stable");
        used.insert(i);
    }
    assert_eq!(used.len(), 8, "every queue used: {used:?}");
    assert_eq!(SelectByHash::new("k").select(&[], &message()), None);
}

/// The queue keys of the attempts of one send placed by `placement`, each attempt
/// failing as an unreachable group does: the producer records the failure (its fault
/// tracker then avoids the group) and the retry plan decides; also each retry's delay.
fn failing_attempts(p: &Producer, r: &TopicRoute, placement: Placement) -> (Vec<String>, Vec<Duration>) {
    let mut prepared = Prepared::new(vec![message()], 1024).expect("valid");
    let groups = if placement.is_fixed() { 1 } else { 2 };
    prepared.placement = placement;
    let mut plan = RetryPlan::new(p.options().retry.clone(), groups);
    let (mut queues, mut delays) = (Vec::new(), Vec::new());
    loop {
        let queue = &r.queues[p.pick(r, &prepared, plan.tried()).expect("a queue")];
        queues.push(queue.key());
        plan.start_attempt(&queue.broker);
        let failed = Err(ClientError::Unreachable(format!(
            "{} refused",
            queue.endpoints[0]
        )));
        p.observe(queue, &queue.endpoints, Duration::from_millis(1), &failed);
        let Err(e) = failed else { unreachable!() };
        match plan.on_failure(e) {
            Verdict::Retry { delay } => delays.push(delay),
            Verdict::Fail(_) => return (queues, delays),
        }
    }
}

#[tokio::test]
async fn an_ordered_send_never_moves_to_another_queue_after_a_failed_attempt() {
    // Nothing listens at the access point: no call is made here.
    let p = Producer::builder()
        .access_points(["127.0.0.1:1"])
        .retries(3)
        .start()
        .await
        .expect("producer");
    let r = route(&["g1", "g2"], 4);
    let key = Placement::Key("order-7".into());
    let chosen = Placement::Chosen(5);
    for placement in [key, chosen] {
        let (queues, delays) = failing_attempts(&p, &r, placement.clone());
        assert_eq!(queues.len(), 4, "{placement:?}: every attempt made: {queues:?}");
        assert!(
            queues.iter().all(|q| *q == queues[0]),
            "{placement:?} moved: {queues:?}"
        );
        // Retries of one group tried already wait a backoff (100, 200, 400 ms).
        assert!(delays.iter().all(|d| !d.is_zero()), "{delays:?}");
    }
    assert_eq!(failing_attempts(&p, &r, Placement::Chosen(5)).0[0], "g2:2");
    // A normal send moves to the other group at once.
    let (queues, delays) = failing_attempts(&p, &r, Placement::Spread);
    assert_ne!(queues[0][..2], queues[1][..2], "{queues:?}");
    assert_eq!(delays[0], Duration::ZERO);
    p.shutdown().await;
}
