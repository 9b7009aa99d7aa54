use std::collections::BTreeMap;

use raftmq_proto::raftmq::admin::v1 as admin;

use super::*;

const EXPIRY: Duration = Duration::from_secs(120);

fn spec(queues: u32) -> TopicSpec {
    TopicSpec {
        queues,
        permission: admin::Permission::ReadWrite,
        kind: admin::MessageKind::Normal,
    }
}

fn reg(group: &str, node_id: u64, role: Role, term: u64, leader_id: Option<u64>) -> Registration {
    let port = if group == "g2" { 8090 } else { 8080 } + node_id;
    Registration {
        group: group.into(),
        node_id,
        role,
        term,
        leader_id,
        client_addr: format!("127.0.0.1:{port}"),
        applied_index: 10,
        topics: BTreeMap::from([("orders".to_owned(), spec(4))]),
    }
}

/// A group of three where `leader` leads at `term`.
fn group_of_three(t: &mut RouteTable, group: &str, leader: u64, term: u64, now: Instant) {
    for id in 1..=3 {
        let role = if id == leader {
            Role::Leader
        } else {
            Role::Follower
        };
        t.register(reg(group, id, role, term, Some(leader)), now)
            .expect("room");
    }
}

#[test]
fn a_route_merges_every_hosting_group_leader_first() {
    let t0 = Instant::now();
    let mut t = RouteTable::new(EXPIRY, 100);
    group_of_three(&mut t, "g1", 2, 5, t0);
    group_of_three(&mut t, "g2", 3, 1, t0);
    let route = t.route("orders", t0);
    assert_eq!(route.len(), 2);
    assert_eq!(route[0].group, "g1");
    assert_eq!(route[0].leader_id, Some(2));
    assert_eq!(
        route[0].endpoints,
        ["127.0.0.1:8082", "127.0.0.1:8081", "127.0.0.1:8083"]
    );
    assert_eq!(
        route[1].endpoints,
        ["127.0.0.1:8093", "127.0.0.1:8091", "127.0.0.1:8092"]
    );
    assert_eq!(route[1].spec, spec(4));
    assert!(t.route("payments", t0).is_empty(), "no group hosts it");
}

#[test]
fn a_new_leader_is_first_as_soon_as_it_registers() {
    let t0 = Instant::now();
    let mut t = RouteTable::new(EXPIRY, 100);
    group_of_three(&mut t, "g1", 1, 5, t0);
    // Node 1 dies; node 2 wins term 6 and registers at once.
    let t1 = t0 + Duration::from_secs(3);
    assert_eq!(
        t.register(reg("g1", 2, Role::Leader, 6, Some(2)), t1),
        Ok(Registered::Changed)
    );
    let route = t.route("orders", t1);
    assert_eq!(route[0].leader_id, Some(2));
    assert_eq!(route[0].endpoints[0], "127.0.0.1:8082");
    // Node 3 has not re-registered yet: like the dead node 1 it is at the old term.
    assert_eq!(route[0].current, 1);
    t.register(reg("g1", 3, Role::Follower, 6, Some(2)), t1)
        .expect("room");
    let route = t.route("orders", t1);
    // The dead node stays listed, last, until it expires.
    assert_eq!(
        route[0].endpoints,
        ["127.0.0.1:8082", "127.0.0.1:8083", "127.0.0.1:8081"]
    );
    assert_eq!(route[0].current, 2);
    let t2 = t0 + EXPIRY + Duration::from_secs(1);
    t.register(reg("g1", 2, Role::Leader, 6, Some(2)), t2)
        .expect("room");
    t.register(reg("g1", 3, Role::Follower, 6, Some(2)), t2)
        .expect("room");
    assert_eq!(
        t.route("orders", t2)[0].endpoints,
        ["127.0.0.1:8082", "127.0.0.1:8083"]
    );
}

#[test]
fn a_deposed_leader_loses_to_a_newer_term() {
    let t0 = Instant::now();
    let mut t = RouteTable::new(EXPIRY, 100);
    group_of_three(&mut t, "g1", 1, 5, t0);
    // Node 1 is cut off and still believes it leads term 5; node 3 reports term 6 with
    // no leader yet (election under way): no leader is claimed for the newest term.
    t.register(reg("g1", 3, Role::Candidate, 6, None), t0)
        .expect("room");
    let route = t.route("orders", t0);
    assert_eq!(route[0].leader_id, None);
    assert_eq!(
        route[0].endpoints,
        ["127.0.0.1:8083", "127.0.0.1:8081", "127.0.0.1:8082"],
        "no leader: the newest term first, then by node id"
    );
    assert_eq!(route[0].current, 1);
    // A follower learns of leader 2 at term 6 before node 2's own registration arrives.
    t.register(reg("g1", 3, Role::Follower, 6, Some(2)), t0)
        .expect("room");
    assert_eq!(t.route("orders", t0)[0].leader_id, Some(2));
}

#[test]
fn a_leader_that_is_not_live_is_not_named() {
    let t0 = Instant::now();
    let mut t = RouteTable::new(EXPIRY, 100);
    t.register(reg("g1", 1, Role::Follower, 4, Some(3)), t0)
        .expect("room");
    let route = t.route("orders", t0);
    assert_eq!(route[0].leader_id, None, "node 3 never registered");
    assert_eq!(route[0].endpoints, ["127.0.0.1:8081"]);
}

#[test]
fn a_silent_group_leaves_the_routes_and_comes_back() {
    let t0 = Instant::now();
    let mut t = RouteTable::new(EXPIRY, 100);
    group_of_three(&mut t, "g1", 1, 1, t0);
    group_of_three(&mut t, "g2", 1, 1, t0);
    // g1 keeps registering, g2 goes silent.
    let mut now = t0;
    for _ in 0..4 {
        now += Duration::from_secs(30);
        group_of_three(&mut t, "g1", 1, 1, now);
    }
    assert_eq!(t.route("orders", now).len(), 2, "120 s exactly: still live");
    now += Duration::from_secs(5);
    assert_eq!(
        t.route("orders", now).len(),
        1,
        "reads ignore expired members at once"
    );
    assert_eq!(t.groups(now).len(), 1);
    let removed = t.expire(now);
    assert_eq!(removed.len(), 3);
    assert!(removed.iter().all(|(g, _)| g == "g2"));
    assert!(t.expire(now).is_empty(), "nothing twice");
    assert_eq!(
        t.register(reg("g2", 2, Role::Leader, 2, Some(2)), now),
        Ok(Registered::NewMember)
    );
    let route = t.route("orders", now);
    assert_eq!(route.len(), 2);
    assert_eq!(route[1].endpoints, ["127.0.0.1:8092"]);
}

#[test]
fn topics_come_from_the_member_with_the_highest_applied_index() {
    let t0 = Instant::now();
    let mut t = RouteTable::new(EXPIRY, 100);
    group_of_three(&mut t, "g1", 1, 1, t0);
    // The leader applied the deletion of "orders" and a new topic; the followers lag.
    let mut leader = reg("g1", 1, Role::Leader, 1, Some(1));
    leader.applied_index = 11;
    leader.topics = BTreeMap::from([("payments".to_owned(), spec(2))]);
    t.register(leader, t0).expect("room");
    assert!(t.route("orders", t0).is_empty());
    assert_eq!(t.route("payments", t0)[0].spec, spec(2));
    assert_eq!(t.groups(t0)[0].topics, 1);
}

#[test]
fn a_full_table_refuses_new_members_but_keeps_the_known_ones() {
    let t0 = Instant::now();
    let mut t = RouteTable::new(EXPIRY, 3);
    group_of_three(&mut t, "g1", 1, 1, t0);
    assert_eq!(
        t.register(reg("g2", 1, Role::Leader, 1, Some(1)), t0),
        Err(TableFull(3))
    );
    assert_eq!(
        t.register(reg("g1", 2, Role::Follower, 1, Some(1)), t0),
        Ok(Registered::Refreshed)
    );
    assert_eq!(t.groups(t0).len(), 1);
}

#[test]
fn groups_show_members_with_their_age_and_the_newest_term() {
    let t0 = Instant::now();
    let mut t = RouteTable::new(EXPIRY, 100);
    group_of_three(&mut t, "g1", 2, 7, t0);
    let later = t0 + Duration::from_millis(1500);
    t.register(reg("g1", 2, Role::Leader, 7, Some(2)), later)
        .expect("room");
    let groups = t.groups(later);
    assert_eq!(groups.len(), 1);
    let g = &groups[0];
    assert_eq!(
        (g.name.as_str(), g.leader_id, g.term, g.topics),
        ("g1", Some(2), 7, 1)
    );
    let ids: Vec<u64> = g.members.iter().map(|m| m.node_id).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(g.members[0].last_seen_ago, Duration::from_millis(1500));
    assert_eq!(g.members[1].last_seen_ago, Duration::ZERO);
    assert_eq!(g.members[1].role, Role::Leader);
}

#[test]
fn fifo_topics_are_known_by_kind() {
    let t0 = Instant::now();
    let mut t = RouteTable::new(EXPIRY, 100);
    let mut r = reg("g1", 1, Role::Leader, 1, Some(1));
    r.topics.insert(
        "ordered".into(),
        TopicSpec {
            kind: admin::MessageKind::Fifo,
            ..spec(1)
        },
    );
    t.register(r, t0).expect("room");
    assert!(t.is_fifo("ordered", t0));
    assert!(!t.is_fifo("orders", t0));
    assert!(!t.is_fifo("missing", t0));
}
