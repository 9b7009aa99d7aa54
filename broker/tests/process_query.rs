//! Query by message id and key on a real three-process group: every node answers from
//! its own index, before and after the leader is killed, and a restarted node indexes
//! what it catches up on.

mod process_common;

use std::collections::BTreeSet;
use std::time::Instant;

use process_common::*;
use raftmq_proto::raftmq::admin::v1 as admin;
use raftmq_proto::raftmq::admin::v1::query_messages_request::By;

const OK: i32 = 20000;

fn keyed(topic: &str, id: &str, keys: &[String]) -> raftmq_proto::rocketmq::v2::Message {
    let mut m = message(topic, id, id.as_bytes(), None);
    if let Some(p) = m.system_properties.as_mut() {
        p.keys = keys.to_vec();
    }
    m
}

/// Sends `ids` with keys `order-<i % 5>` and `all`; fails on any refused send.
async fn send_keyed(g: &ProcGroup, node: u64, ids: std::ops::Range<u32>) -> anyhow::Result<()> {
    let mut c = g.messaging(node).await?;
    for i in ids {
        let keys = [format!("order-{}", i % 5), "all".to_owned()];
        let (code, _) = send(&mut c, keyed("orders", &format!("q-{i}"), &keys)).await?;
        anyhow::ensure!(code == OK, "send q-{i} via node {node} answered {code}");
    }
    Ok(())
}

async fn query(g: &ProcGroup, node: u64, by: By, max: u32) -> anyhow::Result<Vec<admin::FoundMessage>> {
    let mut a = g.admin(node).await?;
    let req = admin::QueryMessagesRequest {
        topic: "orders".into(),
        by: Some(by),
        max,
        begin_time_ms: 0,
        end_time_ms: 0,
    };
    Ok(a.query_messages(req).await?.into_inner().messages)
}

fn ids(found: &[admin::FoundMessage]) -> BTreeSet<String> {
    found.iter().map(|m| m.message_id.clone()).collect()
}

fn expected(key: u32, upto: u32) -> BTreeSet<String> {
    (0..upto)
        .filter(|i| i % 5 == key)
        .map(|i| format!("q-{i}"))
        .collect()
}

/// Queries `node` until it finds `want` by key `order-2` (a follower answers from what it
/// has applied; a restarting node may not listen yet) or the deadline passes.
async fn await_key(g: &ProcGroup, node: u64, want: &BTreeSet<String>) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = query(g, node, By::Key("order-2".into()), 64)
            .await
            .map(|f| ids(&f));
        if got.as_ref().is_ok_and(|got| got == want) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "node {node} answered {got:?}, want {want:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_finds_messages_by_id_and_key_through_a_failover() -> anyhow::Result<()> {
    let mut g = ProcGroup::start(3)?;
    g.create_topic("orders", 4, admin::MessageKind::Normal).await?;
    let leader = g.wait_leader(&[1, 2, 3]).await?;
    send_keyed(&g, leader, 0..30).await?;

    // On the leader a message whose send returned is found at once.
    let found = query(&g, leader, By::Key("order-2".into()), 64).await?;
    assert_eq!(ids(&found), expected(2, 30));
    let times: Vec<u64> = found.iter().map(|m| m.log_index).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first: {times:?}");
    for m in &found {
        assert!(m.keys.contains(&"order-2".to_owned()) && m.body == m.message_id.as_bytes());
    }
    let positions: BTreeSet<(u32, u64)> = found.iter().map(|m| (m.queue_id, m.queue_offset)).collect();
    assert_eq!(positions.len(), found.len(), "distinct queue positions");

    let one = query(&g, leader, By::MessageId("q-13".into()), 0).await?;
    assert_eq!(ids(&one), BTreeSet::from(["q-13".to_owned()]));
    assert_eq!(one[0].keys, ["order-3", "all"]);
    assert_eq!(
        query(&g, leader, By::Key("all".into()), 5).await?.len(),
        5,
        "max bounds the answer"
    );
    assert!(
        query(&g, leader, By::Key("q-13".into()), 0).await?.is_empty(),
        "an id is not a key"
    );

    // Bad input gets a clear error.
    let mut a = g.admin(leader).await?;
    let unknown = a
        .query_messages(admin::QueryMessagesRequest {
            topic: "nope".into(),
            by: Some(By::Key("k".into())),
            ..Default::default()
        })
        .await
        .expect_err("unknown topic");
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");
    let no_key = a
        .query_messages(admin::QueryMessagesRequest {
            topic: "orders".into(),
            ..Default::default()
        })
        .await
        .expect_err("no key");
    assert_eq!(no_key.code(), tonic::Code::InvalidArgument, "{no_key:?}");

    // Followers answer from their own index.
    for node in [1, 2, 3].into_iter().filter(|n| *n != leader) {
        await_key(&g, node, &expected(2, 30)).await?;
    }

    // Kill the leader; the new one finds old and new messages.
    g.kill(leader)?;
    let survivors: Vec<u64> = [1, 2, 3].into_iter().filter(|i| *i != leader).collect();
    let new_leader = g.wait_leader(&survivors).await?;
    send_keyed(&g, new_leader, 30..40).await?;
    let found = query(&g, new_leader, By::Key("order-2".into()), 64).await?;
    assert_eq!(ids(&found), expected(2, 40));

    // The killed node restarts, catches up and indexes what it missed.
    g.start_node(leader)?;
    await_key(&g, leader, &expected(2, 40)).await?;
    let one = query(&g, leader, By::MessageId("q-37".into()), 0).await?;
    assert_eq!(ids(&one), BTreeSet::from(["q-37".to_owned()]));
    Ok(())
}
