//! Unit tests of command application against an in-memory view.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::*;
use crate::command::MessageKind;

/// The state as plain maps; applying [`Op`]s to it mirrors what the store does.
#[derive(Debug, Default, Clone, PartialEq)]
struct Mem {
    topics: BTreeMap<String, TopicRecord>,
    counters: BTreeMap<(String, u32), u64>,
    cq: BTreeMap<(String, u32, u64), CqEntry>,
    offsets: BTreeMap<(String, String, u32), OffsetRecord>,
    pops: BTreeMap<(String, String, u32), PopState>,
}

impl StateView for Mem {
    fn topic(&self, name: &str) -> SmResult<Option<TopicRecord>> {
        Ok(self.topics.get(name).cloned())
    }

    fn next_offset(&self, topic: &str, queue_id: u32) -> SmResult<u64> {
        Ok(self
            .counters
            .get(&(topic.to_owned(), queue_id))
            .copied()
            .unwrap_or(0))
    }

    fn cq_entries(&self, topic: &str, queue_id: u32, from: u64, max: usize) -> SmResult<Vec<CqEntry>> {
        let mut out = Vec::new();
        let mut o = from;
        while out.len() < max {
            match self.cq.get(&(topic.to_owned(), queue_id, o)) {
                Some(e) => out.push(*e),
                None => break,
            }
            o += 1;
        }
        Ok(out)
    }

    fn offset_record(&self, group: &str, topic: &str, queue_id: u32) -> SmResult<Option<OffsetRecord>> {
        Ok(self
            .offsets
            .get(&(group.to_owned(), topic.to_owned(), queue_id))
            .copied())
    }

    fn pop_state(&self, group: &str, topic: &str, queue_id: u32) -> SmResult<Option<PopState>> {
        Ok(self
            .pops
            .get(&(group.to_owned(), topic.to_owned(), queue_id))
            .cloned())
    }
}

impl Mem {
    fn write(&mut self, ops: Vec<Op>) {
        for op in ops {
            match op {
                Op::PutTopic(r) => {
                    self.topics.insert(r.config.name.clone(), r);
                }
                Op::DeleteTopic(name) => {
                    self.topics.remove(&name);
                    self.counters.retain(|(t, _), _| *t != name);
                    self.cq.retain(|(t, _, _), _| *t != name);
                }
                Op::SetNextOffset {
                    topic,
                    queue_id,
                    next,
                } => {
                    self.counters.insert((topic, queue_id), next);
                }
                Op::PutCq {
                    topic,
                    queue_id,
                    first,
                    entries,
                } => {
                    for (offset, entry) in (first..).zip(entries) {
                        self.cq.insert((topic.to_string(), queue_id, offset), entry);
                    }
                }
                Op::PutOffset {
                    group,
                    topic,
                    queue_id,
                    record,
                } => {
                    self.offsets.insert((group, topic, queue_id), record);
                }
                Op::PutPop {
                    group,
                    topic,
                    queue_id,
                    state,
                } => {
                    self.pops.insert((group, topic, queue_id), state);
                }
            }
        }
    }

    /// Applies commands (index, command) as one batch.
    fn apply_batch(&mut self, cmds: &[(u64, Command)]) -> Vec<CommandResult> {
        let mut pending = Pending::new(&*self);
        let results = cmds
            .iter()
            .map(|(i, c)| pending.apply(*i, c).expect("apply"))
            .collect();
        let ops = pending.into_ops();
        self.write(ops);
        results
    }
}

fn topic(name: &str, queues: u32) -> TopicConfig {
    TopicConfig {
        name: name.into(),
        queues,
        permission: Permission::ReadWrite,
        kind: MessageKind::Normal,
    }
}

fn create(name: &str, queues: u32) -> Command {
    Command::control(Header::CreateTopic(topic(name, queues))).expect("command")
}

fn send(targets: &[(&str, u32)]) -> Command {
    let messages: Vec<MessageMeta> = targets
        .iter()
        .enumerate()
        .map(|(i, (t, q))| MessageMeta {
            topic: (*t).into(),
            queue_id: *q,
            tag_hash: i as u64,
            msg_id: format!("{t}-{q}-{i}"),
        })
        .collect();
    let records = (0..targets.len())
        .map(|i| Bytes::from(vec![b'x'; 10 + i]))
        .collect();
    Command::new(
        Header::Send {
            store_time_ms: 1000,
            messages,
        },
        records,
    )
    .expect("command")
}

fn positions(r: &CommandResult) -> Vec<(u32, u64)> {
    match r {
        CommandResult::Sent(p) => p.iter().map(|p| (p.queue_id, p.offset)).collect(),
        other => panic!("expected Sent, got {other:?}"),
    }
}

#[test]
fn sends_to_one_queue_in_one_command_get_consecutive_offsets() {
    let mut mem = Mem::default();
    mem.apply_batch(&[(1, create("t", 4))]);
    let r = mem.apply_batch(&[(2, send(&[("t", 1), ("t", 1), ("t", 2), ("t", 1)]))]);
    assert_eq!(positions(&r[0]), vec![(1, 0), (1, 1), (2, 0), (1, 2)]);
    assert_eq!(mem.counters[&("t".into(), 1)], 3);
    assert_eq!(mem.counters[&("t".into(), 2)], 1);
    let e = mem.cq[&("t".into(), 1, 2)];
    assert_eq!(
        (e.log_index, e.slot, e.size, e.tag_hash, e.store_time_ms),
        (2, 4, 13, 3, 1000)
    );
    let e = mem.cq[&("t".into(), 2, 0)];
    assert_eq!((e.log_index, e.slot), (2, 3));
}

#[test]
fn commands_of_one_batch_see_each_other() {
    let mut mem = Mem::default();
    let r = mem.apply_batch(&[
        (1, create("t", 2)),
        (2, send(&[("t", 0)])),
        (3, send(&[("t", 0), ("t", 0)])),
    ]);
    assert_eq!(r[0], CommandResult::Done);
    assert_eq!(positions(&r[1]), vec![(0, 0)]);
    assert_eq!(positions(&r[2]), vec![(0, 1), (0, 2)]);
    // Split into single-command batches, the outcome is identical.
    let mut one_by_one = Mem::default();
    for (i, c) in [
        (1, create("t", 2)),
        (2, send(&[("t", 0)])),
        (3, send(&[("t", 0), ("t", 0)])),
    ] {
        one_by_one.apply_batch(&[(i, c)]);
    }
    assert_eq!(one_by_one, mem);
}

#[test]
fn a_send_with_one_bad_target_is_refused_whole() {
    let mut mem = Mem::default();
    mem.apply_batch(&[(1, create("t", 2))]);
    let before = mem.clone();
    let r = mem.apply_batch(&[
        (2, send(&[("t", 0), ("nope", 0)])),
        (3, send(&[("t", 0), ("t", 2)])),
        (4, send(&[("bad\0name", 0)])),
    ]);
    assert_eq!(
        r[0],
        CommandResult::Rejected(Rejection::UnknownTopic("nope".into()))
    );
    assert_eq!(
        r[1],
        CommandResult::Rejected(Rejection::NoSuchQueue {
            topic: "t".into(),
            queue_id: 2
        })
    );
    assert_eq!(
        r[2],
        CommandResult::Rejected(Rejection::UnknownTopic("bad\0name".into()))
    );
    assert_eq!(mem, before, "a refused command changes nothing");
}

#[test]
fn read_only_topics_refuse_sends() {
    let mut mem = Mem::default();
    let mut ro = topic("ro", 1);
    ro.permission = Permission::Read;
    let create_ro = Command::control(Header::CreateTopic(ro)).expect("command");
    let r = mem.apply_batch(&[(1, create_ro), (2, send(&[("ro", 0)]))]);
    assert_eq!(r[1], CommandResult::Rejected(Rejection::NotWritable("ro".into())));
}

#[test]
fn topic_lifecycle_is_validated() {
    let mut mem = Mem::default();
    let update = |c| Command::control(Header::UpdateTopic(c)).expect("command");
    let delete = |n: &str| Command::control(Header::DeleteTopic { name: n.into() }).expect("command");
    let r = mem.apply_batch(&[
        (1, create("t", 8)),
        (2, create("t", 8)),
        (3, create("a b", 8)),
        (4, create("z", 0)),
        (5, create("z", MAX_QUEUES + 1)),
        (6, update(topic("missing", 1))),
        (7, update(topic("t", 16))),
        (8, delete("missing")),
    ]);
    assert_eq!(r[0], CommandResult::Done);
    assert_eq!(r[1], CommandResult::Rejected(Rejection::TopicExists("t".into())));
    for (i, result) in r.iter().enumerate().take(5).skip(2) {
        let invalid = matches!(result, CommandResult::Rejected(Rejection::InvalidTopic(_)));
        assert!(invalid, "{i}: {result:?}");
    }
    assert_eq!(
        r[5],
        CommandResult::Rejected(Rejection::UnknownTopic("missing".into()))
    );
    assert_eq!(r[6], CommandResult::Done);
    assert_eq!(
        r[7],
        CommandResult::Rejected(Rejection::UnknownTopic("missing".into()))
    );
    let t = &mem.topics["t"];
    assert_eq!(
        (t.config.queues, t.created_at),
        (16, 1),
        "update keeps the creation index"
    );
}

#[test]
fn delete_removes_queues_and_a_new_incarnation_starts_at_zero() {
    let mut mem = Mem::default();
    let delete = Command::control(Header::DeleteTopic { name: "t".into() }).expect("command");
    mem.apply_batch(&[
        (1, create("t", 2)),
        (2, send(&[("t", 0), ("t", 0)])),
        (3, create("u", 1)),
    ]);
    let r = mem.apply_batch(&[(4, delete), (5, create("t", 2)), (6, send(&[("t", 0)]))]);
    assert_eq!(
        positions(&r[2]),
        vec![(0, 0)],
        "the recreated topic starts at offset 0"
    );
    assert_eq!(mem.topics["t"].created_at, 5);
    assert_eq!(mem.cq.keys().filter(|k| k.0 == "t").count(), 1);
    assert_eq!(mem.counters[&("t".into(), 0)], 1);
}

#[test]
fn commit_offset_needs_topic_queue_and_valid_group() {
    let mut mem = Mem::default();
    let commit = |g: &str, t: &str, q| {
        let h = Header::CommitOffset {
            group: g.into(),
            topic: t.into(),
            queue_id: q,
            offset: 7,
        };
        Command::control(h).expect("command")
    };
    let r = mem.apply_batch(&[
        (1, create("t", 2)),
        (2, commit("g", "t", 1)),
        (3, commit("g", "x", 1)),
        (4, commit("g", "t", 2)),
        (5, commit("g\0", "t", 1)),
    ]);
    assert_eq!(r[1], CommandResult::Done);
    assert_eq!(r[2], CommandResult::Rejected(Rejection::UnknownTopic("x".into())));
    assert_eq!(
        r[3],
        CommandResult::Rejected(Rejection::NoSuchQueue {
            topic: "t".into(),
            queue_id: 2
        })
    );
    assert!(matches!(
        r[4],
        CommandResult::Rejected(Rejection::InvalidGroup(_))
    ));
    let rec = mem.offsets[&("g".into(), "t".into(), 1)];
    assert_eq!(
        rec,
        OffsetRecord {
            offset: 7,
            topic_created_at: 1
        }
    );
    assert_eq!(mem.offsets.len(), 1);
}

#[test]
fn mismatched_records_are_refused_when_applied() {
    let meta = MessageMeta {
        topic: "t".into(),
        queue_id: 0,
        tag_hash: 0,
        msg_id: String::new(),
    };
    let header = Header::Send {
        store_time_ms: 1,
        messages: vec![meta],
    };
    let encoded = Bytes::from(postcard::to_stdvec(&header).expect("encode"));
    // Only the header slot: one message meta, no record. The slots decode (the header is
    // read lazily); applying refuses it on every replica alike and stores nothing.
    let cmd = <Command as raft_log::SlottedPayload>::from_slots(vec![encoded]).expect("slots");
    let mut mem = Mem::default();
    mem.apply_batch(&[(
        1,
        Command::control(Header::CreateTopic(topic("t", 1))).expect("cmd"),
    )]);
    let results = mem.apply_batch(&[(2, cmd)]);
    assert!(
        matches!(&results[..], [CommandResult::Rejected(Rejection::Malformed(why))] if why.contains("records")),
        "{results:?}"
    );
    assert!(mem.cq.is_empty(), "nothing indexed");
}

#[path = "pop_tests.rs"]
mod pop_tests;

#[test]
fn a_batch_run_serves_its_entries_from_any_offset_and_refuses_a_gap() {
    let entry = |log_index| CqEntry {
        log_index,
        slot: 1,
        size: 10,
        tag_hash: 0,
        store_time_ms: 0,
    };
    let mut run = BatchRun::default();
    assert!(run.from(0).is_empty());
    for (offset, index) in [(5, 50), (6, 51), (7, 52)] {
        run.push(offset, entry(index)).expect("consecutive");
    }
    let indexes = |start| run.from(start).iter().map(|e| e.log_index).collect::<Vec<_>>();
    assert_eq!(indexes(4), Vec::<u64>::new(), "before the run");
    assert_eq!(indexes(5), vec![50, 51, 52]);
    assert_eq!(indexes(7), vec![52]);
    assert_eq!(indexes(8), Vec::<u64>::new(), "after the run");
    assert!(matches!(run.push(9, entry(53)), Err(SmError::Corrupt { .. })));
}
