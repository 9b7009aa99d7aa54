use super::check;
use crate::error::ChaosError;
use crate::history::{Delivery, Event, Fault, FaultPhase, Record, SendDone, SendInvoke, SendOutcome};
use crate::report::{FaultRow, Report};

pub(super) fn id(key: &str, seq: u64) -> String {
    format!("{key}-{seq}")
}

pub(super) fn send(t: u64, process: u64, key: &str, seq: u64) -> Record {
    let event = Event::Send(SendInvoke {
        key: key.into(),
        seq,
        message_id: id(key, seq),
    });
    Record {
        time_ms: t,
        process,
        event,
    }
}

pub(super) fn done(t: u64, process: u64, key: &str, seq: u64, outcome: SendOutcome) -> Record {
    let event = Event::SendDone(SendDone {
        message_id: id(key, seq),
        outcome,
    });
    Record {
        time_ms: t,
        process,
        event,
    }
}

pub(super) fn ok(queue: u32, offset: u64) -> SendOutcome {
    SendOutcome::Ok {
        broker: "g1".into(),
        queue,
        offset,
    }
}

fn failed() -> SendOutcome {
    SendOutcome::Failed {
        error: "no route".into(),
    }
}

fn unknown() -> SendOutcome {
    SendOutcome::Unknown {
        error: "deadline exceeded".into(),
    }
}

/// A send invoked at `t` on process `p` and acknowledged at `t + 1`, at offset `seq` of a
/// queue of the key's own (its bytes summed), so that keys do not share positions.
fn acked(t: u64, p: u64, key: &str, seq: u64) -> [Record; 2] {
    let queue = key.bytes().map(u32::from).sum();
    [send(t, p, key, seq), done(t + 1, p, key, seq, ok(queue, seq))]
}

pub(super) fn consume(t: u64, key: &str, seq: u64) -> Record {
    let event = Event::Consume(Delivery {
        message_id: id(key, seq),
        key: key.into(),
        seq,
        consumer: "c1".into(),
        broker: "g1".into(),
        queue: 0,
        offset: seq,
        attempt: 1,
    });
    Record {
        time_ms: t,
        process: 100,
        event,
    }
}

pub(super) fn commit(t: u64, queue: u32, offset: u64) -> Record {
    let event = Event::CommitOffset(crate::history::CommitOffset {
        group: "billing".into(),
        broker: "g1".into(),
        queue,
        offset,
    });
    Record {
        time_ms: t,
        process: 100,
        event,
    }
}

fn fault(t: u64, kind: &str, phase: FaultPhase) -> Record {
    let event = Event::Fault(Fault {
        kind: kind.into(),
        target: "node-1".into(),
        phase,
    });
    Record {
        time_ms: t,
        process: 0,
        event,
    }
}

fn checked(records: &[Record]) -> Report {
    check(records).expect("valid history")
}

fn invalid_at(records: &[Record]) -> usize {
    match check(records) {
        Err(ChaosError::Invalid { record, .. }) => record,
        other => panic!("expected an invalid history, got {other:?}"),
    }
}

fn row<'a>(report: &'a Report, kind: &str) -> &'a FaultRow {
    report.rows.iter().find(|r| r.kind == kind).expect("row present")
}

#[test]
fn clean_history_passes() {
    let mut h = Vec::new();
    h.extend(acked(0, 1, "a", 0));
    h.extend(acked(2, 2, "b", 0));
    h.extend(acked(4, 1, "a", 1));
    h.push(consume(5, "a", 0));
    h.push(consume(6, "b", 0));
    h.push(commit(7, 0, 1));
    h.push(consume(8, "a", 1));
    h.push(commit(9, 0, 2));
    let report = checked(&h);
    assert!(report.passed(), "{report}");
    assert_eq!(
        (
            report.sends.invoked,
            report.sends.ok,
            report.consumed,
            report.deliveries
        ),
        (3, 3, 3, 3)
    );
    assert_eq!(report.duplicated, 0);
    assert!(report.to_string().contains("PASS"));
}

#[test]
fn empty_history_passes() {
    let report = checked(&[]);
    assert!(report.passed());
    assert_eq!(report.total.faults, 0);
}

#[test]
fn acknowledged_message_never_consumed_is_lost() {
    let mut h = Vec::new();
    h.extend(acked(0, 1, "a", 0));
    h.extend(acked(2, 1, "a", 1));
    h.push(consume(5, "a", 0));
    let report = checked(&h);
    assert_eq!(report.lost, vec![id("a", 1)]);
    assert!(!report.passed());
    let text = report.to_string();
    assert!(text.contains("FAIL") && text.contains("lost: a-1"), "{text}");
}

#[test]
fn consumed_twice_is_duplicated_but_passes() {
    let mut h = Vec::new();
    h.extend(acked(0, 1, "a", 0));
    h.extend([consume(5, "a", 0), consume(6, "a", 0), consume(7, "a", 0)]);
    let report = checked(&h);
    assert_eq!(
        (report.duplicated, report.redelivered, report.extra_deliveries),
        (1, 1, 2)
    );
    assert_eq!((report.consumed, report.deliveries), (1, 3));
    assert!(report.passed());
}

#[test]
fn consumed_although_send_failed_is_duplicated() {
    let h = [
        send(0, 1, "a", 0),
        done(1, 1, "a", 0, failed()),
        consume(5, "a", 0),
    ];
    let report = checked(&h);
    assert_eq!(report.failed_but_delivered, vec![id("a", 0)]);
    assert_eq!((report.duplicated, report.redelivered), (1, 0));
    assert!(report.passed());
}

#[test]
fn failed_send_absent_is_fine() {
    let report = checked(&[send(0, 1, "a", 0), done(1, 1, "a", 0, failed())]);
    assert_eq!((report.sends.failed, report.duplicated), (1, 0));
    assert!(report.passed());
}

#[test]
fn unknown_sends_may_or_may_not_be_delivered() {
    let h = [
        send(0, 1, "a", 0),
        done(1, 1, "a", 0, unknown()),
        send(2, 1, "a", 1),
        done(3, 1, "a", 1, unknown()),
        // Never completes: the run ended with it in flight.
        send(4, 2, "b", 0),
        consume(5, "a", 1),
        consume(6, "b", 0),
    ];
    let report = checked(&h);
    assert_eq!((report.sends.unknown, report.sends.pending), (3, 1));
    assert_eq!((report.unknown_delivered, report.unknown_absent), (2, 1));
    assert!(report.lost.is_empty() && report.duplicated == 0);
    assert!(report.passed());
}

#[test]
fn swapped_consumptions_violate_order() {
    let mut h = Vec::new();
    h.extend(acked(0, 1, "a", 0));
    h.extend(acked(2, 1, "a", 1));
    h.extend(acked(4, 1, "a", 2));
    h.extend([consume(5, "a", 1), consume(6, "a", 0), consume(7, "a", 2)]);
    let report = checked(&h);
    assert_eq!(report.order_violations.len(), 1);
    let v = &report.order_violations[0];
    assert_eq!((v.key.as_str(), v.seq, v.after_seq, v.record), ("a", 0, 1, 8));
    assert!(!report.passed());
    assert!(report.to_string().contains("order: key a seq 0"));
}

#[test]
fn order_is_per_key() {
    let mut h = Vec::new();
    h.extend(acked(0, 1, "a", 5));
    h.extend(acked(2, 2, "b", 0));
    h.extend([consume(5, "a", 5), consume(6, "b", 0)]);
    assert!(checked(&h).order_violations.is_empty());
}

#[test]
fn order_ignores_failed_and_unknown_seqs() {
    let mut h = Vec::new();
    h.extend(acked(0, 1, "a", 0));
    h.extend([send(2, 1, "a", 1), done(3, 1, "a", 1, unknown())]);
    h.extend([send(4, 1, "a", 2), done(5, 1, "a", 2, failed())]);
    h.extend(acked(6, 1, "a", 3));
    // The unknown seq 1 shows up late, the failed seq 2 never: neither breaks order.
    h.extend([consume(8, "a", 0), consume(9, "a", 3), consume(10, "a", 1)]);
    let report = checked(&h);
    assert!(report.order_violations.is_empty(), "{report}");
    assert!(report.passed());
}

#[test]
fn order_looks_at_first_consumptions_only() {
    let mut h = Vec::new();
    h.extend(acked(0, 1, "a", 0));
    h.extend(acked(2, 1, "a", 1));
    h.extend([
        consume(5, "a", 0),
        consume(6, "a", 1),
        consume(7, "a", 0),
        consume(8, "a", 1),
    ]);
    let report = checked(&h);
    assert!(report.order_violations.is_empty());
    assert_eq!(report.redelivered, 2);
}

#[test]
fn every_late_seq_is_one_violation() {
    let mut h = Vec::new();
    for seq in 0..4 {
        h.extend(acked(seq * 2, 1, "a", seq));
    }
    h.extend([
        consume(10, "a", 3),
        consume(11, "a", 0),
        consume(12, "a", 1),
        consume(13, "a", 2),
    ]);
    let report = checked(&h);
    let late: Vec<u64> = report.order_violations.iter().map(|v| v.seq).collect();
    assert_eq!(late, vec![0, 1, 2]);
}

#[test]
fn committed_offset_moving_back_is_detected() {
    let h = [
        commit(0, 0, 5),
        commit(1, 1, 2),
        commit(2, 0, 7),
        commit(3, 0, 7),
        commit(4, 0, 6),
    ];
    let report = checked(&h);
    assert_eq!(report.offset_regressions.len(), 1);
    let r = &report.offset_regressions[0];
    assert_eq!((r.queue, r.from, r.to, r.record), (0, 7, 6, 5));
    assert!(!report.passed());
}

#[test]
fn delivery_of_something_never_sent_is_unexpected() {
    let mut h = Vec::new();
    h.extend(acked(0, 1, "a", 0));
    h.push(consume(5, "a", 0));
    h.push(consume(6, "ghost", 0));
    let mut wrong_seq = consume(7, "a", 0);
    if let Event::Consume(d) = &mut wrong_seq.event {
        d.seq = 9;
    }
    h.push(wrong_seq);
    let report = checked(&h);
    let reasons: Vec<&str> = report.unexpected.iter().map(|u| u.reason.as_str()).collect();
    assert_eq!(reasons, vec!["never sent", "key or seq differ from its send"]);
    assert_eq!(report.deliveries, 1);
    assert!(!report.passed());
}

#[test]
fn histories_breaking_their_own_rules_are_refused() {
    assert_eq!(invalid_at(&[done(0, 1, "a", 0, ok(0, 0))]), 1);
    assert_eq!(invalid_at(&[send(0, 1, "a", 0), send(1, 1, "a", 1)]), 2);
    assert_eq!(invalid_at(&[send(0, 1, "a", 0), done(1, 1, "a", 1, failed())]), 2);
    let h = [
        send(0, 1, "a", 0),
        done(1, 1, "a", 0, failed()),
        send(2, 2, "a", 0),
    ];
    assert_eq!(invalid_at(&h), 3);
    let mut h = vec![
        send(0, 1, "a", 3),
        done(1, 1, "a", 3, failed()),
        send(2, 1, "a", 2),
    ];
    assert_eq!(invalid_at(&h), 3);
    h[2] = send(2, 1, "b", 3);
    assert!(check(&h).is_ok());
    assert_eq!(invalid_at(&[fault(0, "kill", FaultPhase::End)]), 1);
    assert_eq!(
        invalid_at(&[
            fault(0, "kill", FaultPhase::Start),
            fault(1, "kill", FaultPhase::Start)
        ]),
        2
    );
}

#[test]
fn rto_runs_from_fault_start_to_first_success_invoked_after_it() {
    let mut h = Vec::new();
    h.extend(acked(0, 1, "a", 0));
    h.push(fault(1000, "kill-leader", FaultPhase::Start));
    // Invoked before the fault: its late success does not count as recovery.
    h.extend([send(900, 2, "b", 0), done(1500, 2, "b", 0, ok(1, 0))]);
    h.extend([send(1100, 1, "a", 1), done(1200, 1, "a", 1, failed())]);
    h.push(fault(1300, "kill-leader", FaultPhase::End));
    h.extend([send(2000, 1, "a", 2), done(2100, 1, "a", 2, ok(0, 1))]);
    h.extend([
        consume(2200, "a", 0),
        consume(2201, "b", 0),
        consume(2202, "a", 2),
    ]);
    let report = checked(&h);
    assert_eq!(report.faults.len(), 1);
    assert_eq!(
        (report.faults[0].end_ms, report.faults[0].rto_ms),
        (Some(1300), Some(1100))
    );
    let r = row(&report, "kill-leader");
    assert_eq!(
        (r.faults, r.rto_p50_ms, r.rto_max_ms, r.unrecovered),
        (1, Some(1100), Some(1100), 0)
    );
    assert_eq!((r.acked_during, r.acked_after), (0, 1));
    assert_eq!(row(&report, FaultRow::NO_FAULT).acked_after, 2);
    assert!(report.passed(), "{report}");
}

#[test]
fn overlapping_faults_each_get_their_own_rto() {
    let mut h = vec![
        fault(1000, "kill-leader", FaultPhase::Start),
        fault(1200, "pause-leader", FaultPhase::Start),
    ];
    h.extend([send(1100, 1, "a", 0), done(1300, 1, "a", 0, ok(0, 0))]);
    h.push(fault(1500, "kill-leader", FaultPhase::End));
    h.extend([send(1600, 1, "a", 1), done(1700, 1, "a", 1, failed())]);
    h.push(fault(3000, "pause-leader", FaultPhase::End));
    h.extend([send(3100, 1, "a", 2), done(3200, 1, "a", 2, ok(0, 1))]);
    h.push(fault(4000, "kill-leader", FaultPhase::Start));
    h.extend([send(4000, 1, "a", 3), done(4400, 1, "a", 3, ok(0, 2))]);
    h.push(fault(4100, "kill-leader", FaultPhase::End));
    h.extend([consume(5000, "a", 0), consume(5001, "a", 2)]);
    let report = checked(&h);
    let rtos: Vec<Option<u64>> = report.faults.iter().map(|f| f.rto_ms).collect();
    assert_eq!(rtos, vec![Some(300), Some(2000), Some(400)]);
    let kill = row(&report, "kill-leader");
    assert_eq!(
        (kill.faults, kill.rto_p50_ms, kill.rto_max_ms),
        (2, Some(300), Some(400))
    );
    let pause = row(&report, "pause-leader");
    assert_eq!(
        (pause.faults, pause.rto_p50_ms, pause.rto_max_ms),
        (1, Some(2000), Some(2000))
    );
    // a-3 was invoked during the second kill-leader and is lost: charged there only.
    assert_eq!((kill.acked_during, kill.lost, pause.lost), (2, 1, 0));
    assert_eq!((pause.acked_during, pause.acked_after), (0, 1));
    let total = &report.total;
    assert_eq!(
        (total.faults, total.rto_p50_ms, total.rto_max_ms, total.lost),
        (3, Some(400), Some(2000), 1)
    );
}

#[test]
fn a_fault_on_a_group_recovers_with_that_groups_sends() {
    let g2 = |queue, offset| SendOutcome::Ok {
        broker: "g2".into(),
        queue,
        offset,
    };
    let start = Record {
        time_ms: 1000,
        process: 0,
        event: Event::Fault(Fault {
            kind: "kill-leader".into(),
            target: "g1/node-2".into(),
            phase: FaultPhase::Start,
        }),
    };
    let mut h = vec![start];
    // g2 keeps working; g1's first success after the fault completes at 2500.
    h.extend([send(1100, 2, "b", 0), done(1150, 2, "b", 0, g2(0, 0))]);
    h.extend([send(1100, 1, "a", 0), done(2500, 1, "a", 0, ok(0, 0))]);
    h.extend([consume(3000, "a", 0), consume(3001, "b", 0)]);
    let report = checked(&h);
    assert_eq!(report.faults[0].rto_ms, Some(1500));
}

#[test]
fn fault_without_recovery_is_reported() {
    let mut h = vec![fault(1000, "partition-leader", FaultPhase::Start)];
    h.extend([send(1100, 1, "a", 0), done(1200, 1, "a", 0, unknown())]);
    let report = checked(&h);
    assert_eq!((report.faults[0].end_ms, report.faults[0].rto_ms), (None, None));
    let r = row(&report, "partition-leader");
    assert_eq!((r.unrecovered, r.rto_p50_ms), (1, None));
    assert!(
        report
            .to_string()
            .contains("unrecovered: partition-leader on node-1")
    );
}

#[test]
fn unavailability_counts_only_gaps_outside_faults() {
    let mut h = Vec::new();
    let mut seq = 0;
    let mut ack_at = |h: &mut Vec<Record>, t: u64| {
        h.extend([
            send(t - 10, 1, "a", seq),
            done(t, 1, "a", seq, ok(0, seq)),
            consume(t + 1, "a", seq),
        ]);
        seq += 1;
    };
    ack_at(&mut h, 100);
    ack_at(&mut h, 200);
    ack_at(&mut h, 2200); // 2 s gap, no fault
    ack_at(&mut h, 2900);
    h.push(fault(3000, "kill-leader", FaultPhase::Start));
    h.push(fault(3500, "kill-leader", FaultPhase::End));
    ack_at(&mut h, 9000); // 6.1 s gap, but it spans the fault
    ack_at(&mut h, 10500); // 1.5 s gap after the fault
    let report = checked(&h);
    let u = &report.unavailability;
    assert_eq!((u.max_gap_ms, u.long_gaps, u.long_gaps_total_ms), (2000, 2, 3500));
    assert!(report.passed());
}

#[test]
fn table_lists_every_kind_and_the_total() {
    let mut h = vec![
        fault(10, "kill-leader", FaultPhase::Start),
        fault(20, "kill-leader", FaultPhase::End),
    ];
    h.extend(acked(30, 1, "a", 0));
    h.push(consume(40, "a", 0));
    let text = checked(&h).to_string();
    for needle in [
        "fault kind",
        "acked-during",
        "rto-p50",
        "kill-leader",
        "total",
        "0.00s",
    ] {
        assert!(text.contains(needle), "{needle} missing in\n{text}");
    }
}

#[test]
fn two_acknowledged_sends_at_one_queue_position_fail_the_check() {
    let mut h = Vec::new();
    h.extend([send(0, 1, "a", 0), done(1, 1, "a", 0, ok(7, 3734))]);
    h.extend([send(3, 2, "b", 0), done(4, 2, "b", 0, ok(7, 3734))]);
    h.extend([consume(5, "a", 0), consume(6, "b", 0)]);
    let report = checked(&h);
    assert_eq!(report.slot_conflicts.len(), 1, "{report}");
    let c = &report.slot_conflicts[0];
    assert_eq!((c.queue, c.offset, c.record), (7, 3734, 4));
    assert_eq!((c.first.as_str(), c.second.as_str()), ("a-0", "b-0"));
    assert!(!report.passed());
    assert!(report.to_string().contains("slot conflicts        1"));
}
