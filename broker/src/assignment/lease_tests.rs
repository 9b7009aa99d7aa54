use super::*;

const LEASE: Duration = Duration::from_secs(15);

fn names(n: &[&str]) -> Vec<String> {
    n.iter().map(|s| (*s).to_owned()).collect()
}

fn ask(
    a: &mut Assigner,
    client: &str,
    members: &[String],
    holding: Option<&[u32]>,
    now: Instant,
) -> Vec<u32> {
    let holding: Option<BTreeSet<u32>> = holding.map(|h| h.iter().copied().collect());
    a.query(&Query {
        group: "g",
        topic: "t",
        client,
        queues: 8,
        members,
        holding: holding.as_ref(),
        now,
    })
}

/// A fresh assigner past its first lease (no earlier grants can be in use).
fn ready(now: Instant) -> (Assigner, Instant) {
    let a = Assigner::new(LEASE, now);
    (a, now + LEASE)
}

#[test]
fn average_allocation_matches_rocketmq() {
    let m = names(&["a", "b", "c"]);
    assert_eq!(allocate(8, &m, "a"), [0, 1, 2]);
    assert_eq!(allocate(8, &m, "b"), [3, 4, 5]);
    assert_eq!(allocate(8, &m, "c"), [6, 7]);
    assert_eq!(allocate(2, &m, "c"), Vec::<u32>::new());
    assert_eq!(allocate(2, &m, "b"), [1]);
    assert_eq!(allocate(8, &m, "x"), Vec::<u32>::new());
    assert_eq!(allocate(0, &m, "a"), Vec::<u32>::new());
}

#[test]
fn a_queue_moves_only_after_its_holder_lets_go() {
    let (mut a, t) = ready(Instant::now());
    let solo = names(&["a"]);
    assert_eq!(ask(&mut a, "a", &solo, Some(&[]), t), (0..8).collect::<Vec<_>>());
    // b joins: its target is 4..8, but a still holds them.
    let both = names(&["a", "b"]);
    assert!(ask(&mut a, "b", &both, Some(&[]), t).is_empty());
    // a is told its new share and still drains 4..8.
    assert_eq!(
        ask(&mut a, "a", &both, Some(&[0, 1, 2, 3, 4, 5, 6, 7]), t),
        [0, 1, 2, 3]
    );
    assert!(
        ask(&mut a, "b", &both, Some(&[]), t).is_empty(),
        "a has not let go yet"
    );
    // a stopped 4..8.
    assert_eq!(ask(&mut a, "a", &both, Some(&[0, 1, 2, 3]), t), [0, 1, 2, 3]);
    assert_eq!(ask(&mut a, "b", &both, Some(&[]), t), [4, 5, 6, 7]);
}

#[test]
fn a_member_that_leaves_frees_its_queues_at_once() {
    let (mut a, t) = ready(Instant::now());
    let both = names(&["a", "b"]);
    ask(&mut a, "a", &both, Some(&[]), t);
    assert_eq!(ask(&mut a, "b", &both, Some(&[]), t), [4, 5, 6, 7]);
    let solo = names(&["a"]);
    assert_eq!(
        ask(&mut a, "a", &solo, Some(&[0, 1, 2, 3]), t),
        (0..8).collect::<Vec<_>>()
    );
}

#[test]
fn a_silent_owner_loses_its_lease() {
    let (mut a, t) = ready(Instant::now());
    let both = names(&["a", "b"]);
    ask(&mut a, "a", &both, None, t);
    ask(&mut a, "b", &both, None, t);
    // b is still listed as a member but stops asking; a's target stays 0..4, so test with
    // a target change: c joins and takes b's share once b's lease is gone.
    let three = names(&["a", "b", "c"]);
    let later = t + LEASE + Duration::from_secs(1);
    assert_eq!(
        ask(&mut a, "c", &three, None, t),
        Vec::<u32>::new(),
        "b holds 6, 7"
    );
    assert_eq!(ask(&mut a, "c", &three, None, later), [6, 7]);
}

#[test]
fn without_a_holding_list_the_answer_itself_releases() {
    let (mut a, t) = ready(Instant::now());
    let solo = names(&["a"]);
    assert_eq!(ask(&mut a, "a", &solo, None, t).len(), 8);
    let both = names(&["a", "b"]);
    assert_eq!(ask(&mut a, "a", &both, None, t), [0, 1, 2, 3]);
    assert_eq!(ask(&mut a, "b", &both, None, t), [4, 5, 6, 7]);
}

#[test]
fn a_new_leader_grants_only_claimed_queues_until_every_member_spoke() {
    let t0 = Instant::now();
    let mut a = Assigner::new(LEASE, t0);
    a.observe_term(7, t0);
    let both = names(&["a", "b"]);
    // b asks first, claiming nothing: a has not spoken, so nothing unclaimed is handed out.
    assert!(ask(&mut a, "b", &both, Some(&[]), t0).is_empty());
    // a claims everything it held under the old leader; it keeps its target part.
    assert_eq!(
        ask(&mut a, "a", &both, Some(&[0, 1, 2, 3, 4, 5, 6, 7]), t0),
        [0, 1, 2, 3]
    );
    assert!(
        ask(&mut a, "b", &both, Some(&[]), t0).is_empty(),
        "a still holds 4..8"
    );
    assert_eq!(ask(&mut a, "a", &both, Some(&[0, 1, 2, 3]), t0), [0, 1, 2, 3]);
    // Everyone spoke: free queues go to their target at once.
    assert_eq!(ask(&mut a, "b", &both, Some(&[]), t0), [4, 5, 6, 7]);
    // The same term again changes nothing; a new one starts afresh.
    a.observe_term(7, t0);
    assert_eq!(ask(&mut a, "b", &both, Some(&[4, 5, 6, 7]), t0), [4, 5, 6, 7]);
    a.observe_term(8, t0);
    assert!(
        ask(&mut a, "a", &both, Some(&[]), t0).is_empty(),
        "b has not spoken"
    );
    // A member that never speaks holds up the free queues for one lease at most.
    assert_eq!(ask(&mut a, "a", &both, Some(&[]), t0 + LEASE), [0, 1, 2, 3]);
}

#[test]
fn every_queue_has_at_most_one_owner_through_joins_and_leaves() {
    let (mut a, mut t) = ready(Instant::now());
    let all = ["a", "b", "c", "d"];
    let mut holding: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    // Members come and go; each asks with what it held and then holds its answer.
    let plans: [&[&str]; 6] = [
        &["a"],
        &["a", "b"],
        &["a", "b", "c"],
        &["b", "c"],
        &["b", "c", "d"],
        &["d"],
    ];
    for members in plans {
        let m = names(members);
        for _round in 0..3 {
            for c in members {
                let held = holding.get(c).cloned().unwrap_or_default();
                let got = ask(&mut a, c, &m, Some(&held), t);
                holding.insert(c, got);
            }
            for c in all.iter().filter(|c| !members.contains(c)) {
                holding.remove(c);
            }
            let mut seen = BTreeSet::new();
            for q in holding.values().flatten() {
                assert!(seen.insert(*q), "queue {q} has two owners: {holding:?}");
            }
            t += Duration::from_secs(1);
        }
        let owned: usize = holding.values().map(Vec::len).sum();
        assert_eq!(owned, 8, "every queue owned after settling: {holding:?}");
    }
}

mod model {
    use proptest::prelude::*;

    use super::*;

    /// One step of a group of up to four clients.
    #[derive(Debug, Clone)]
    enum Step {
        /// Client `c` joins (if out) or leaves (if in; its process dies: it holds nothing).
        Toggle(usize),
        /// Client `c` asks, saying what it holds; it then holds what it was answered plus
        /// (for `keep` of them) queues it still drains.
        Ask { c: usize, keep: bool },
        /// Time passes.
        Wait(u64),
        /// A new leader takes over.
        Elect,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0..4usize).prop_map(Step::Toggle),
            (0..4usize, any::<bool>()).prop_map(|(c, keep)| Step::Ask { c, keep }),
            (0..20_000u64).prop_map(Step::Wait),
            Just(Step::Elect),
        ]
    }

    proptest! {
        /// Whatever members do, no queue is ever held by two of them, as long as each
        /// member only holds what it was granted (and lets go of what it no longer has only
        /// by saying so).
        #[test]
        fn no_queue_is_ever_held_twice(steps in proptest::collection::vec(step(), 1..200)) {
            let t0 = Instant::now();
            let mut now = t0;
            let mut a = Assigner::new(LEASE, now);
            let mut term = 1;
            a.observe_term(term, now);
            let names: Vec<String> = (0..4).map(|i| format!("c{i}")).collect();
            let mut members: BTreeSet<usize> = BTreeSet::new();
            let mut held: BTreeMap<usize, BTreeSet<u32>> = BTreeMap::new();
            let mut last_ask: BTreeMap<usize, Instant> = BTreeMap::new();
            for s in steps {
                match s {
                    Step::Toggle(c) => {
                        if !members.remove(&c) {
                            members.insert(c);
                        } else {
                            held.remove(&c);
                        }
                    }
                    Step::Ask { c, keep } if members.contains(&c) => {
                        let live: Vec<String> = members.iter().map(|m| names[*m].clone()).collect();
                        let mine = held.get(&c).cloned().unwrap_or_default();
                        let answer: BTreeSet<u32> = a
                            .query(&Query {
                                group: "g",
                                topic: "t",
                                client: &names[c],
                                queues: 8,
                                members: &live,
                                holding: Some(&mine),
                                now,
                            })
                            .into_iter()
                            .collect();
                        // It keeps draining what it lost when `keep`, else lets go now.
                        let next: BTreeSet<u32> = if keep { answer.union(&mine).copied().collect() } else { answer };
                        held.insert(c, next);
                        last_ask.insert(c, now);
                    }
                    Step::Ask { .. } => {}
                    Step::Wait(ms) => now += Duration::from_millis(ms),
                    Step::Elect => {
                        term += 1;
                        a.observe_term(term, now);
                    }
                }
                // A member that has not asked for a whole lease stops consuming (its client
                // would have lost the queues); model that by dropping its holdings.
                for (c, at) in &last_ask {
                    if now.saturating_duration_since(*at) > LEASE {
                        held.remove(c);
                    }
                }
                let mut seen = BTreeSet::new();
                for q in held.values().flatten() {
                    prop_assert!(seen.insert(*q), "queue {} held twice: {:?}", q, held);
                }
            }
        }
    }
}
