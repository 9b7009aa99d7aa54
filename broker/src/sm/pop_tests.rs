//! Unit tests of pop, ack, change of invisibility and dead-lettering.

use super::*;
use crate::command::PopRequest;
use crate::command::Popped;
use crate::command::Receipt;
use crate::command::TagFilter;

fn pop_req(queues: &[u32], max: u32, now_ms: u64) -> PopRequest {
    PopRequest {
        group: "g".into(),
        topic: "t".into(),
        queue_ids: queues.to_vec(),
        max,
        invisible_ms: 1000,
        now_ms,
        filter: TagFilter::All,
        fifo: false,
        max_attempts: 3,
    }
}

fn pop(req: PopRequest) -> Command {
    Command::control(Header::Pop(req)).expect("command")
}

fn ack(receipts: &[Receipt]) -> Command {
    Command::control(Header::Ack {
        group: "g".into(),
        topic: "t".into(),
        receipts: receipts.to_vec(),
    })
    .expect("command")
}

fn popped(r: &CommandResult) -> Vec<Popped> {
    match r {
        CommandResult::Popped(p) => p.clone(),
        other => panic!("expected Popped, got {other:?}"),
    }
}

fn offsets(p: &[Popped]) -> Vec<(u32, u64, u32)> {
    p.iter()
        .map(|p| (p.receipt.queue_id, p.receipt.offset, p.receipt.attempt))
        .collect()
}

fn acked(r: &CommandResult) -> Vec<bool> {
    match r {
        CommandResult::Acked(a) => a.clone(),
        other => panic!("expected Acked, got {other:?}"),
    }
}

fn committed(mem: &Mem, q: u32) -> Option<u64> {
    mem.offsets.get(&("g".into(), "t".into(), q)).map(|r| r.offset)
}

/// A topic `t` with 2 queues: 3 messages on queue 0, 2 on queue 1.
fn setup() -> Mem {
    let mut mem = Mem::default();
    mem.apply_batch(&[
        (1, create("t", 2)),
        (2, send(&[("t", 0), ("t", 0), ("t", 0), ("t", 1), ("t", 1)])),
    ]);
    mem
}

#[test]
fn pop_hands_out_in_queue_order_and_acks_advance_the_committed_offset() {
    let mut mem = setup();
    let r = mem.apply_batch(&[(3, pop(pop_req(&[1, 0], 3, 10_000)))]);
    let p = popped(&r[0]);
    assert_eq!(offsets(&p), vec![(1, 0, 1), (1, 1, 1), (0, 0, 1)]);
    assert_eq!((p[0].log_index, p[0].slot, p[0].visible_at_ms), (2, 4, 11_000));
    assert_eq!(committed(&mem, 0), Some(0));
    assert_eq!(committed(&mem, 1), Some(0));
    // Acking out of order: the committed offset moves only over a contiguous prefix.
    let r = mem.apply_batch(&[(4, ack(&[p[1].receipt, p[2].receipt]))]);
    assert_eq!(acked(&r[0]), vec![true, true]);
    assert_eq!(committed(&mem, 1), Some(0));
    assert_eq!(committed(&mem, 0), Some(1));
    let r = mem.apply_batch(&[(5, ack(&[p[0].receipt, p[0].receipt]))]);
    assert_eq!(
        acked(&r[0]),
        vec![true, false],
        "a second ack of one receipt is stale"
    );
    assert_eq!(committed(&mem, 1), Some(2));
    // The rest of queue 0 comes next; nothing is handed out twice while invisible.
    let r = mem.apply_batch(&[(6, pop(pop_req(&[1, 0], 10, 10_500)))]);
    assert_eq!(offsets(&popped(&r[0])), vec![(0, 1, 1), (0, 2, 1)]);
    let r = mem.apply_batch(&[(7, pop(pop_req(&[0, 1], 10, 10_600)))]);
    assert!(popped(&r[0]).is_empty());
}

#[test]
fn expired_messages_come_again_and_old_receipts_go_stale() {
    let mut mem = setup();
    let r = mem.apply_batch(&[(3, pop(pop_req(&[0], 1, 10_000)))]);
    let first = popped(&r[0])[0];
    let r = mem.apply_batch(&[(4, pop(pop_req(&[0], 1, 10_999)))]);
    assert_eq!(offsets(&popped(&r[0])), vec![(0, 1, 1)], "not yet expired");
    let r = mem.apply_batch(&[(5, pop(pop_req(&[0], 1, 11_000)))]);
    let again = popped(&r[0])[0];
    assert_eq!((again.receipt.offset, again.receipt.attempt), (0, 2));
    let r = mem.apply_batch(&[(6, ack(&[first.receipt, again.receipt]))]);
    assert_eq!(acked(&r[0]), vec![false, true]);
}

#[test]
fn change_invisible_postpones_redelivery_for_the_current_receipt_only() {
    let mut mem = setup();
    let r = mem.apply_batch(&[(3, pop(pop_req(&[1], 1, 10_000)))]);
    let p = popped(&r[0])[0];
    let change = |receipt, now_ms| {
        Command::control(Header::ChangeInvisible {
            group: "g".into(),
            topic: "t".into(),
            receipt,
            invisible_ms: 5000,
            now_ms,
        })
        .expect("command")
    };
    let stale = Receipt {
        attempt: 7,
        ..p.receipt
    };
    let r = mem.apply_batch(&[(4, change(p.receipt, 10_500)), (5, change(stale, 10_500))]);
    assert_eq!((acked(&r[0]), acked(&r[1])), (vec![true], vec![false]));
    let r = mem.apply_batch(&[(6, pop(pop_req(&[1], 1, 12_000)))]);
    assert_eq!(
        offsets(&popped(&r[0])),
        vec![(1, 1, 1)],
        "offset 0 stays invisible"
    );
    let r = mem.apply_batch(&[(7, pop(pop_req(&[1], 1, 15_500)))]);
    assert_eq!(offsets(&popped(&r[0])), vec![(1, 0, 2)]);
}

#[test]
fn fifo_queues_hand_out_nothing_new_while_a_message_is_in_flight() {
    let mut mem = setup();
    let fifo = |now| PopRequest {
        fifo: true,
        ..pop_req(&[0], 2, now)
    };
    let r = mem.apply_batch(&[(3, pop(fifo(10_000)))]);
    let p = popped(&r[0]);
    assert_eq!(offsets(&p), vec![(0, 0, 1), (0, 1, 1)]);
    let r = mem.apply_batch(&[(4, ack(&[p[1].receipt])), (5, pop(fifo(10_100)))]);
    assert!(popped(&r[1]).is_empty(), "offset 0 is still in flight");
    // Offset 0 expires: it comes again, and still nothing after it.
    let r = mem.apply_batch(&[(6, pop(fifo(11_000)))]);
    assert_eq!(offsets(&popped(&r[0])), vec![(0, 0, 2)]);
    let again = popped(&r[0])[0];
    let r = mem.apply_batch(&[(7, ack(&[again.receipt])), (8, pop(fifo(11_100)))]);
    assert_eq!(offsets(&popped(&r[1])), vec![(0, 2, 1)]);
}

#[test]
fn a_tag_filter_skips_unwanted_messages_as_consumed() {
    let mut mem = setup();
    // `send` gives message i the tag hash i: queue 0 holds hashes 0, 1, 2.
    let req = PopRequest {
        filter: TagFilter::Hashes(vec![2]),
        ..pop_req(&[0], 10, 10_000)
    };
    let r = mem.apply_batch(&[(3, pop(req))]);
    let p = popped(&r[0]);
    assert_eq!(offsets(&p), vec![(0, 2, 1)]);
    mem.apply_batch(&[(4, ack(&[p[0].receipt]))]);
    assert_eq!(committed(&mem, 0), Some(3));
}

#[test]
fn too_many_attempts_move_a_message_to_the_dead_letter_topic() {
    let mut mem = setup();
    let mut now = 10_000;
    for attempt in 1..=3 {
        let r = mem.apply_batch(&[(2 + u64::from(attempt), pop(pop_req(&[1], 1, now)))]);
        assert_eq!(offsets(&popped(&r[0])), vec![(1, 0, attempt)]);
        now += 1000;
    }
    // The fourth delivery would exceed max_attempts = 3: dead-lettered, and the queue moves on.
    let r = mem.apply_batch(&[(6, pop(pop_req(&[1], 1, now)))]);
    assert_eq!(offsets(&popped(&r[0])), vec![(1, 1, 1)]);
    let dlq = crate::sm::apply::pop::dlq_topic("g");
    assert_eq!(mem.topics[&dlq].config.queues, 1);
    assert_eq!(mem.counters[&(dlq.clone(), 0)], 1);
    assert_eq!(mem.cq[&(dlq, 0, 0)], mem.cq[&("t".into(), 1, 0)]);
    assert_eq!(committed(&mem, 1), Some(1));
}

#[test]
fn a_send_and_a_pop_in_one_batch_see_each_other_and_bad_input_is_refused() {
    let mut mem = Mem::default();
    let r = mem.apply_batch(&[
        (1, create("t", 1)),
        (2, send(&[("t", 0)])),
        (3, pop(pop_req(&[0, 5], 4, 1))),
    ]);
    assert_eq!(offsets(&popped(&r[2])), vec![(0, 0, 1)]);
    let bad_group = PopRequest {
        group: "a b".into(),
        ..pop_req(&[0], 1, 1)
    };
    let unknown = PopRequest {
        topic: "nope".into(),
        ..pop_req(&[0], 1, 1)
    };
    let r = mem.apply_batch(&[(4, pop(bad_group)), (5, pop(unknown))]);
    assert!(matches!(
        r[0],
        CommandResult::Rejected(Rejection::InvalidGroup(_))
    ));
    assert!(matches!(
        r[1],
        CommandResult::Rejected(Rejection::UnknownTopic(_))
    ));
    // A new group starts at the committed offset when one exists.
    let commit = Command::control(Header::CommitOffset {
        group: "h".into(),
        topic: "t".into(),
        queue_id: 0,
        offset: 1,
    })
    .expect("command");
    let from_h = PopRequest {
        group: "h".into(),
        ..pop_req(&[0], 1, 1)
    };
    let r = mem.apply_batch(&[(6, send(&[("t", 0)])), (7, commit), (8, pop(from_h))]);
    assert_eq!(offsets(&popped(&r[2])), vec![(0, 1, 1)]);
}

fn change_invisible(receipt: Receipt, invisible_ms: u64, now_ms: u64) -> Command {
    Command::control(Header::ChangeInvisible {
        group: "g".into(),
        topic: "t".into(),
        receipt,
        invisible_ms,
        now_ms,
    })
    .expect("command")
}

fn dead_letter(group: &str, receipt: Receipt) -> Command {
    Command::control(Header::DeadLetter {
        group: group.into(),
        topic: "t".into(),
        receipt,
    })
    .expect("command")
}

fn commit(queue_id: u32, offset: u64) -> Command {
    Command::control(Header::CommitOffset {
        group: "g".into(),
        topic: "t".into(),
        queue_id,
        offset,
    })
    .expect("command")
}

#[test]
fn groups_whose_dead_letter_topic_would_be_invalid_cannot_receive() {
    let mut mem = setup();
    let longest = "g".repeat(122);
    let too_long = "g".repeat(123);
    let req = |group: &str| PopRequest {
        group: group.into(),
        ..pop_req(&[0], 1, 10_000)
    };
    let r = mem.apply_batch(&[(3, pop(req(&longest))), (4, pop(req(&too_long)))]);
    assert_eq!(offsets(&popped(&r[0])), vec![(0, 0, 1)]);
    let receipt = popped(&r[0])[0].receipt;
    let with_group = |group: &str, header: Header| {
        let header = match header {
            Header::Ack { topic, receipts, .. } => Header::Ack {
                group: group.into(),
                topic,
                receipts,
            },
            Header::ChangeInvisible {
                topic,
                receipt,
                invisible_ms,
                now_ms,
                ..
            } => Header::ChangeInvisible {
                group: group.into(),
                topic,
                receipt,
                invisible_ms,
                now_ms,
            },
            other => other,
        };
        Command::control(header).expect("command")
    };
    let r2 = mem.apply_batch(&[
        (
            5,
            with_group(&too_long, ack(&[receipt]).header().expect("header").clone()),
        ),
        (
            6,
            with_group(
                &too_long,
                change_invisible(receipt, 1, 10_000)
                    .header()
                    .expect("header")
                    .clone(),
            ),
        ),
        (7, dead_letter(&too_long, receipt)),
    ]);
    for result in [&r[1], &r2[0], &r2[1], &r2[2]] {
        match result {
            CommandResult::Rejected(Rejection::InvalidGroup(m)) => assert!(
                m.contains(
                    "at most 122 characters for consumers that receive, because the \
                     dead-letter topic %DLQ%<group> must be a valid topic name"
                ),
                "{m}"
            ),
            other => panic!("expected InvalidGroup, got {other:?}"),
        }
    }
    assert!(!mem.pops.keys().any(|(g, _, _)| *g == too_long));
}

#[test]
fn an_offset_reset_rebases_pop_consumption_and_stales_inflight_receipts() {
    let mut mem = setup();
    let r = mem.apply_batch(&[(3, pop(pop_req(&[0], 2, 10_000)))]);
    let p = popped(&r[0]);
    assert_eq!(offsets(&p), vec![(0, 0, 1), (0, 1, 1)]);
    // "Consume from 2": the in-flight messages are forgotten.
    mem.apply_batch(&[(4, commit(0, 2))]);
    assert_eq!(committed(&mem, 0), Some(2));
    let state = &mem.pops[&("g".into(), "t".into(), 0)];
    assert_eq!((state.next, state.inflight.len()), (2, 0));
    let r = mem.apply_batch(&[(5, ack(&[p[0].receipt, p[1].receipt]))]);
    assert_eq!(acked(&r[0]), vec![false, false], "in-flight receipts are stale");
    let r = mem.apply_batch(&[(6, pop(pop_req(&[0], 10, 10_100)))]);
    assert_eq!(offsets(&popped(&r[0])), vec![(0, 2, 1)]);
    // A reset backwards hands out again what was consumed, even far below the in-flight.
    let r = mem.apply_batch(&[(7, commit(0, 0)), (8, pop(pop_req(&[0], 10, 10_200)))]);
    assert_eq!(offsets(&popped(&r[1])), vec![(0, 0, 1), (0, 1, 1), (0, 2, 1)]);
    assert_eq!(committed(&mem, 0), Some(0));
}

#[test]
fn receipts_of_an_earlier_topic_incarnation_are_stale() {
    let mut mem = setup();
    let r = mem.apply_batch(&[(3, pop(pop_req(&[0], 1, 10_000)))]);
    let old = popped(&r[0])[0].receipt;
    assert_eq!(old.topic_created_at, 1);
    let delete = Command::control(Header::DeleteTopic { name: "t".into() }).expect("command");
    let r = mem.apply_batch(&[
        (4, delete),
        (5, create("t", 2)),
        (6, send(&[("t", 0)])),
        (7, pop(pop_req(&[0], 1, 10_000))),
    ]);
    let new = popped(&r[3])[0].receipt;
    assert_eq!((new.queue_id, new.offset, new.attempt), (0, 0, 1));
    assert_eq!(new.topic_created_at, 5);
    let r = mem.apply_batch(&[
        (8, change_invisible(old, 0, 10_000)),
        (9, dead_letter("g", old)),
        (10, ack(&[old, new])),
    ]);
    assert_eq!(acked(&r[0]), vec![false]);
    assert_eq!(acked(&r[1]), vec![false]);
    assert_eq!(acked(&r[2]), vec![false, true]);
}

#[test]
fn fifo_redelivers_in_offset_order_only() {
    let mut mem = setup();
    let fifo = |now| PopRequest {
        fifo: true,
        ..pop_req(&[0], 2, now)
    };
    let r = mem.apply_batch(&[(3, pop(fifo(10_000)))]);
    let p = popped(&r[0]);
    assert_eq!(offsets(&p), vec![(0, 0, 1), (0, 1, 1)]);
    // The consumer still holds offset 0 (until 15_500); offset 1 expires at 11_000.
    let r = mem.apply_batch(&[(4, change_invisible(p[0].receipt, 5000, 10_500))]);
    assert_eq!(acked(&r[0]), vec![true]);
    let r = mem.apply_batch(&[(5, pop(fifo(11_000)))]);
    assert!(popped(&r[0]).is_empty(), "offset 1 must wait for offset 0");
    let r = mem.apply_batch(&[(6, pop(fifo(15_500)))]);
    assert_eq!(offsets(&popped(&r[0])), vec![(0, 0, 2), (0, 1, 2)]);
    // Not FIFO: expired messages come again whatever is held below them.
    let mut mem = setup();
    let r = mem.apply_batch(&[(3, pop(pop_req(&[0], 2, 10_000)))]);
    let p = popped(&r[0]);
    mem.apply_batch(&[(4, change_invisible(p[0].receipt, 5000, 10_500))]);
    let r = mem.apply_batch(&[(5, pop(pop_req(&[0], 1, 11_000)))]);
    assert_eq!(offsets(&popped(&r[0])), vec![(0, 1, 2)]);
}

#[test]
fn a_consumer_forwards_a_message_to_the_dead_letter_topic_by_its_current_receipt() {
    let mut mem = setup();
    let r = mem.apply_batch(&[(3, pop(pop_req(&[1], 2, 10_000)))]);
    let p = popped(&r[0]);
    let stale = Receipt {
        attempt: 2,
        ..p[0].receipt
    };
    let r = mem.apply_batch(&[
        (4, dead_letter("g", stale)),
        (5, dead_letter("g", p[0].receipt)),
        (6, dead_letter("g", p[0].receipt)),
    ]);
    assert_eq!(
        (acked(&r[0]), acked(&r[1]), acked(&r[2])),
        (vec![false], vec![true], vec![false])
    );
    let dlq = crate::sm::apply::pop::dlq_topic("g");
    assert_eq!(mem.topics[&dlq].config.permission, Permission::ReadWrite);
    assert_eq!(mem.counters[&(dlq.clone(), 0)], 1);
    assert_eq!(mem.cq[&(dlq, 0, 0)], mem.cq[&("t".into(), 1, 0)]);
    // Out of flight: the committed offset moves past it, and its receipt is spent.
    assert_eq!(committed(&mem, 1), Some(1));
    let r = mem.apply_batch(&[(7, ack(&[p[0].receipt, p[1].receipt]))]);
    assert_eq!(acked(&r[0]), vec![false, true]);
    let unknown = Command::control(Header::DeadLetter {
        group: "g".into(),
        topic: "nope".into(),
        receipt: p[1].receipt,
    })
    .expect("command");
    let r = mem.apply_batch(&[(8, unknown), (9, dead_letter("a b", p[1].receipt))]);
    assert!(matches!(
        r[0],
        CommandResult::Rejected(Rejection::UnknownTopic(_))
    ));
    assert!(matches!(
        r[1],
        CommandResult::Rejected(Rejection::InvalidGroup(_))
    ));
}

#[test]
fn a_full_dead_letter_queue_is_an_error_not_an_overflow() {
    let mut mem = setup();
    let r = mem.apply_batch(&[(3, pop(pop_req(&[1], 1, 10_000)))]);
    let receipt = popped(&r[0])[0].receipt;
    let dlq = crate::sm::apply::pop::dlq_topic("g");
    mem.apply_batch(&[(4, create(&dlq, 1))]);
    mem.counters.insert((dlq, 0), u64::MAX);
    let mut pending = Pending::new(&mem);
    let err = pending
        .apply(5, &dead_letter("g", receipt))
        .expect_err("the dead-letter queue is full");
    assert!(matches!(err, SmError::Corrupt { .. }), "{err:?}");
}

#[test]
fn a_pop_of_zero_messages_only_sweeps_exhausted_ones_to_the_dead_letter_topic() {
    let mut mem = setup();
    let r = mem.apply_batch(&[
        (3, pop(pop_req(&[0], 1, 10_000))),
        (4, pop(pop_req(&[1], 1, 10_000))),
    ]);
    assert_eq!((popped(&r[0]).len(), popped(&r[1]).len()), (1, 1));
    // Both queues' first messages are in flight; after expiry, only exhausted ones move.
    let sweep = PopRequest {
        max: 0,
        max_attempts: 1,
        ..pop_req(&[0, 1], 0, 20_000)
    };
    let r = mem.apply_batch(&[(5, pop(sweep))]);
    assert!(popped(&r[0]).is_empty(), "a sweep hands nothing out");
    let dlq = crate::sm::apply::pop::dlq_topic("g");
    assert_eq!(mem.counters[&(dlq, 0)], 2, "both queues were swept");
    assert_eq!((committed(&mem, 0), committed(&mem, 1)), (Some(1), Some(1)));
}
