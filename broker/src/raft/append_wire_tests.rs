use std::collections::BTreeMap;

use bytes::Bytes;
use openraft::Vote;
use openraft::impls::leader_id_adv::LeaderId;

use super::*;
use crate::command::Header;
use crate::command::MessageMeta;

fn log_id(term: u64, index: u64) -> LogId {
    openraft::LogId::new(LeaderId { term, node_id: 1 }, index)
}

fn send(index: u64, body: usize) -> Entry {
    let meta = MessageMeta {
        topic: "t".into(),
        queue_id: 0,
        tag_hash: 0,
        msg_id: format!("m{index}"),
    };
    let header = Header::Send {
        store_time_ms: 1,
        messages: vec![meta],
    };
    let cmd = Command::new(header, vec![Bytes::from(vec![index as u8; body])]).expect("valid send");
    Entry {
        log_id: log_id(2, index),
        payload: EntryPayload::Normal(cmd),
    }
}

fn request(prev: u64, n: u64, body: usize) -> AppendEntriesRequest<TypeConfig> {
    AppendEntriesRequest {
        vote: Vote::new_committed(2, 1),
        prev_log_id: Some(log_id(2, prev)),
        entries: (prev + 1..=prev + n).map(|i| send(i, body)).collect(),
        leader_commit: Some(log_id(2, prev)),
    }
}

fn membership() -> GroupMembership {
    let nodes: BTreeMap<u64, BrokerNode> = (1..=3)
        .map(|i| {
            let node = BrokerNode {
                raft_addr: format!("127.0.0.1:900{i}"),
                client_addr: format!("127.0.0.1:808{i}"),
            };
            (i, node)
        })
        .collect();
    Membership::new(vec![[1, 2, 3].into()], nodes).expect("valid membership")
}

/// A blank, a membership and two sends: every kind of entry.
fn mixed() -> AppendEntriesRequest<TypeConfig> {
    let mut req = request(4, 0, 0);
    req.entries = vec![
        Entry {
            log_id: log_id(2, 5),
            payload: EntryPayload::Blank,
        },
        send(6, 300),
        Entry {
            log_id: log_id(2, 7),
            payload: EntryPayload::Membership(membership()),
        },
        send(8, 1),
    ];
    req
}

#[test]
fn every_kind_of_entry_roundtrips_and_commands_travel_beside_the_payload() {
    let req = mixed();
    let msg = to_message(&req).expect("encode");
    assert_eq!(msg.commands.len(), 2, "one per normal entry");
    let EntryPayload::Normal(first) = &req.entries[1].payload else {
        unreachable!("entry 1 is a send")
    };
    assert_eq!(msg.commands[0], first.encoding());
    assert!(
        msg.payload.len() < 300,
        "the payload holds no command bytes: {} bytes",
        msg.payload.len()
    );
    let back = from_message(msg).expect("decode");
    assert_eq!(back.vote, req.vote);
    assert_eq!(back.prev_log_id, req.prev_log_id);
    assert_eq!(back.leader_commit, req.leader_commit);
    assert_eq!(back.entries, req.entries);
}

#[test]
fn a_decoded_command_does_not_pin_the_received_buffer() {
    let req = request(0, 1, 4096);
    let msg = to_message(&req).expect("encode");
    let received = msg.commands[0].clone();
    let back = from_message(msg).expect("decode");
    let EntryPayload::Normal(cmd) = &back.entries[0].payload else {
        unreachable!("a send")
    };
    assert_eq!(cmd.encoding(), received);
    assert_ne!(
        cmd.encoding().as_ptr(),
        received.as_ptr(),
        "the command has a buffer of its own"
    );
}

#[test]
fn a_command_decoded_from_a_link_frame_is_a_slice_of_it() {
    let req = request(0, 1, 4096);
    let msg = to_message(&req).expect("encode");
    let received = msg.commands[0].clone();
    let back = from_message_shared(msg).expect("decode");
    let EntryPayload::Normal(cmd) = &back.entries[0].payload else {
        unreachable!("a send")
    };
    assert_eq!(cmd.encoding(), received);
    assert_eq!(cmd.encoding().as_ptr(), received.as_ptr(), "no copy");
    assert_eq!(back.entries, req.entries);
}

#[test]
fn a_command_count_that_does_not_match_the_entries_is_refused() {
    let req = mixed();
    let mut missing = to_message(&req).expect("encode");
    missing.commands.pop();
    let err = from_message(missing).expect_err("one command short");
    assert!(
        matches!(
            err,
            AppendDecodeError::CommandCount {
                normal: 2,
                commands: 1
            }
        ),
        "{err}"
    );
    let mut extra = to_message(&req).expect("encode");
    extra.commands.push(Bytes::from_static(b"x"));
    assert!(matches!(
        from_message(extra),
        Err(AppendDecodeError::CommandCount { .. })
    ));
    let mut broken = to_message(&req).expect("encode");
    broken.commands[1] = Bytes::from_static(&[9, 0, 0, 0]);
    let err = from_message(broken).expect_err("bad slots");
    assert!(
        matches!(err, AppendDecodeError::Command { index: 8, .. }),
        "{err}"
    );
    let garbage = pb::AppendRequest {
        payload: Bytes::from_static(&[0xff; 64]),
        commands: Vec::new(),
    };
    assert!(matches!(
        from_message(garbage),
        Err(AppendDecodeError::Payload(_))
    ));
}

#[test]
fn small_request_is_one_piece() {
    let req = request(10, 5, 100);
    let pieces = split_append(req.clone(), 1 << 20, 4 << 20).expect("split");
    assert_eq!(pieces.len(), 1);
    assert_eq!(pieces[0].prev, Some(log_id(2, 10)));
    assert_eq!(pieces[0].last, Some(log_id(2, 15)));
    let back = from_message(pieces[0].message.clone()).expect("decode");
    assert_eq!(back.entries, req.entries);
}

#[test]
fn large_request_is_cut_into_consecutive_pieces_within_budget() {
    let budget = 64 * 1024;
    let req = request(0, 20, 20_000);
    let pieces = split_append(req.clone(), budget, 1 << 20).expect("split");
    assert!(pieces.len() > 1, "expected a split, got {}", pieces.len());
    let mut expect_prev = Some(log_id(2, 0));
    let mut all = Vec::new();
    for p in &pieces {
        assert!(p.wire_size() <= budget, "piece of {} bytes", p.wire_size());
        assert_eq!(p.prev, expect_prev);
        let back = from_message(p.message.clone()).expect("decode");
        assert_eq!(back.prev_log_id, p.prev);
        assert_eq!(back.vote, req.vote);
        assert_eq!(back.leader_commit, req.leader_commit);
        assert_eq!(back.entries.last().map(|e| e.log_id), p.last);
        expect_prev = p.last;
        all.extend(back.entries);
    }
    assert_eq!(all, req.entries);
    assert_eq!(pieces.last().and_then(|p| p.last), Some(log_id(2, 20)));
}

#[test]
fn wire_size_bounds_the_encoded_message() {
    use raftmq_proto::prost::Message as _;
    for req in [mixed(), request(0, 20, 20_000), request(3, 0, 0)] {
        for p in split_append(req, 64 * 1024, 1 << 20).expect("split") {
            let encoded = p.message.encoded_len();
            assert!(encoded <= p.wire_size(), "{encoded} > {}", p.wire_size());
            assert!(p.wire_size() <= encoded + 16 + 6 * p.message.commands.len());
        }
    }
}

#[test]
fn an_entry_above_the_budget_travels_alone_and_one_above_the_limit_is_refused() {
    let req = request(0, 3, 100_000);
    let pieces = split_append(req.clone(), 50_000, 1 << 20).expect("split");
    assert_eq!(pieces.len(), 3);
    let err = split_append(req, 50_000, 60_000).expect_err("too large");
    assert!(matches!(err, SplitError::EntryTooLarge { index: 1, .. }), "{err}");
}

#[test]
fn heartbeat_has_no_entries() {
    let req = request(7, 0, 0);
    let pieces = split_append(req, 1024, 4096).expect("split");
    assert_eq!(pieces.len(), 1);
    assert!(!pieces[0].has_entries);
    assert!(pieces[0].message.commands.is_empty());
    assert_eq!(pieces[0].last, Some(log_id(2, 7)));
}

#[test]
fn grouping_keeps_the_order_and_each_group_within_the_budget() {
    let sizes = [30, 30, 30, 120, 10, 10];
    let items: Vec<usize> = (0..sizes.len()).collect();
    let groups = group_by_budget(items, &sizes, 10, 75);
    // 10 + 30 + 30 fits 75; the third item starts a group; 120 goes alone.
    assert_eq!(groups, vec![vec![0, 1], vec![2], vec![3], vec![4, 5]]);
    assert_eq!(group_by_budget(vec![0, 1], &[30, 35], 10, 75), vec![vec![0, 1]]);
    assert_eq!(
        group_by_budget(Vec::<u8>::new(), &[], 10, 75),
        vec![Vec::<u8>::new()]
    );
}
