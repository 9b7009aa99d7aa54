//! The checker: a pure function from a history to a [`Report`].
//!
//! Messages are identified by `message_id`. The rules:
//! - **lost**: a send that completed `ok` and was never consumed;
//! - **duplicated**: a message consumed more than once, or consumed although its send
//!   `failed`; sends that ended `unknown` (or never completed) may or may not be
//!   delivered, and are counted as "unknown delivered" / "unknown absent";
//! - **order**: per key, the *first* consumptions of acknowledged sends, taken in
//!   history (line) order, must have increasing `seq`; seqs of failed or unknown sends
//!   may be missing or present anywhere;
//! - **offsets**: per (group, broker, queue), committed offsets never decrease;
//! - **unexpected**: a delivery of a message never sent, or whose key or seq differ
//!   from its send's (corruption, or a harness bug);
//! - **availability**: see [`crate::report::FaultRow`] and [`crate::report::Unavailability`].
//!
//! A history that breaks its own rules (a completion without an invocation, two sends in
//! flight on one process, a message id sent twice, a key's seq not increasing, a fault
//! ended that never started) is refused with [`ChaosError::Invalid`].

use std::collections::HashMap;

use crate::availability;
use crate::error::ChaosError;
use crate::history::{AckOutcome, Event, ProcessId, Record, SendDone, SendInvoke, SendOutcome};
use crate::report::SlotConflict;
use crate::report::{AckCounts, OffsetRegression, OrderViolation, Report, SendCounts, UnexpectedDelivery};

/// How a send ended, as far as the history tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Ok,
    Failed,
    Unknown,
    /// Invoked, never completed (the run ended or the process crashed): as `Unknown`.
    Pending,
}

/// One send operation, invocation and completion joined.
#[derive(Debug)]
pub(crate) struct SendOp<'a> {
    pub message_id: &'a str,
    pub key: &'a str,
    pub seq: u64,
    pub invoke_ms: u64,
    pub done_ms: Option<u64>,
    pub status: Status,
    /// The broker group that stored it (acknowledged sends only).
    pub broker: Option<&'a str>,
}

impl<'a> SendOp<'a> {
    /// Records the send's completion at `done_ms`.
    fn complete(&mut self, done_ms: u64, outcome: &'a SendOutcome) {
        self.done_ms = Some(done_ms);
        self.status = match outcome {
            SendOutcome::Ok { broker, .. } => {
                self.broker = Some(broker);
                Status::Ok
            }
            SendOutcome::Failed { .. } => Status::Failed,
            SendOutcome::Unknown { .. } => Status::Unknown,
        };
    }
}

/// What the deliveries of one message look like.
#[derive(Debug, Default, Clone, Copy)]
struct Fate {
    deliveries: usize,
    /// Record index of the first delivery.
    first: Option<usize>,
}

/// Checks a history; see the module documentation for the rules.
pub fn check(records: &[Record]) -> Result<Report, ChaosError> {
    let sends = join_sends(records)?;
    let windows = availability::fault_windows(records)?;
    let by_id: HashMap<&str, usize> = sends.iter().enumerate().map(|(i, s)| (s.message_id, i)).collect();
    let (fates, unexpected) = deliveries(records, &sends, &by_id);
    let mut report = Report {
        unexpected,
        ..Report::default()
    };
    let mut flags = vec![Flags::default(); sends.len()];
    classify(&sends, &fates, &mut report, &mut flags);
    report.order_violations = order_violations(&sends, &fates, records);
    for v in &report.order_violations {
        flags[by_id[v.message_id.as_str()]].order += 1;
    }
    report.offset_regressions = offset_regressions(records);
    report.slot_conflicts = slot_conflicts(records);
    report.acks = ack_counts(records);
    availability::fill(&mut report, &sends, &flags, &windows);
    Ok(report)
}

/// Joins each send invocation with its completion on the same process.
fn join_sends(records: &[Record]) -> Result<Vec<SendOp<'_>>, ChaosError> {
    let mut sends: Vec<SendOp<'_>> = Vec::new();
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let mut in_flight: HashMap<ProcessId, usize> = HashMap::new();
    let mut last_seq: HashMap<&str, u64> = HashMap::new();
    for (i, record) in records.iter().enumerate() {
        let invalid = |reason: String| ChaosError::Invalid {
            record: i + 1,
            reason,
        };
        match &record.event {
            Event::Send(SendInvoke { key, seq, message_id }) => {
                if let Some(&prev) = in_flight.get(&record.process) {
                    let prev = sends[prev].message_id;
                    return Err(invalid(format!(
                        "process {} still has send {prev} in flight",
                        record.process
                    )));
                }
                if ids.insert(message_id, sends.len()).is_some() {
                    return Err(invalid(format!("message id {message_id} sent twice")));
                }
                if let Some(prev) = last_seq.insert(key, *seq).filter(|prev| prev >= seq) {
                    return Err(invalid(format!("key {key}: seq {seq} after seq {prev}")));
                }
                in_flight.insert(record.process, sends.len());
                sends.push(SendOp {
                    message_id,
                    key,
                    seq: *seq,
                    invoke_ms: record.time_ms,
                    done_ms: None,
                    status: Status::Pending,
                    broker: None,
                });
            }
            Event::SendDone(SendDone { message_id, outcome }) => {
                let Some(op) = in_flight.remove(&record.process).map(|ix| &mut sends[ix]) else {
                    return Err(invalid(format!(
                        "process {} completes a send it never invoked",
                        record.process
                    )));
                };
                if op.message_id != message_id {
                    return Err(invalid(format!(
                        "completion of {message_id}, but {} is in flight",
                        op.message_id
                    )));
                }
                op.complete(record.time_ms, outcome);
            }
            _ => {}
        }
    }
    Ok(sends)
}

/// Counts the deliveries of every send; deliveries that match no send are unexpected.
fn deliveries(
    records: &[Record],
    sends: &[SendOp<'_>],
    by_id: &HashMap<&str, usize>,
) -> (Vec<Fate>, Vec<UnexpectedDelivery>) {
    let mut fates = vec![Fate::default(); sends.len()];
    let mut unexpected = Vec::new();
    for (i, record) in records.iter().enumerate() {
        let Event::Consume(d) = &record.event else {
            continue;
        };
        let reason = match by_id.get(d.message_id.as_str()) {
            None => "never sent",
            Some(&ix) if sends[ix].key != d.key || sends[ix].seq != d.seq => {
                "key or seq differ from its send"
            }
            Some(&ix) => {
                fates[ix].deliveries += 1;
                fates[ix].first.get_or_insert(i);
                continue;
            }
        };
        unexpected.push(UnexpectedDelivery {
            message_id: d.message_id.clone(),
            key: d.key.clone(),
            seq: d.seq,
            record: i + 1,
            reason: reason.to_owned(),
        });
    }
    (fates, unexpected)
}

/// Per-send anomalies, for the per-fault-kind rows.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Flags {
    pub lost: bool,
    pub duplicated: bool,
    pub order: usize,
}

/// Fills the send counts, lost, duplicated and unknown counts.
fn classify(sends: &[SendOp<'_>], fates: &[Fate], report: &mut Report, flags: &mut [Flags]) {
    let mut counts = SendCounts {
        invoked: sends.len(),
        ..SendCounts::default()
    };
    for ((send, fate), flag) in sends.iter().zip(fates).zip(flags.iter_mut()) {
        let delivered = fate.deliveries > 0;
        report.deliveries += fate.deliveries;
        report.consumed += usize::from(delivered);
        report.extra_deliveries += fate.deliveries.saturating_sub(1);
        let redelivered = fate.deliveries > 1;
        report.redelivered += usize::from(redelivered);
        match send.status {
            Status::Ok => {
                counts.ok += 1;
                flag.lost = !delivered;
                if flag.lost {
                    report.lost.push(send.message_id.to_owned());
                }
            }
            Status::Failed => {
                counts.failed += 1;
                if delivered {
                    report.failed_but_delivered.push(send.message_id.to_owned());
                }
            }
            Status::Unknown | Status::Pending => {
                counts.unknown += 1;
                counts.pending += usize::from(send.status == Status::Pending);
                report.unknown_delivered += usize::from(delivered);
                report.unknown_absent += usize::from(!delivered);
            }
        }
        flag.duplicated = redelivered || (send.status == Status::Failed && delivered);
        report.duplicated += usize::from(flag.duplicated);
    }
    report.sends = counts;
}

/// Per key, first consumptions of acknowledged sends in history order must have
/// increasing seqs; every one consumed after a higher seq is a violation.
fn order_violations(sends: &[SendOp<'_>], fates: &[Fate], records: &[Record]) -> Vec<OrderViolation> {
    let mut per_key: HashMap<&str, Vec<(usize, usize)>> = HashMap::new();
    for (ix, (send, fate)) in sends.iter().zip(fates).enumerate() {
        if let (Status::Ok, Some(first)) = (send.status, fate.first) {
            per_key.entry(send.key).or_default().push((first, ix));
        }
    }
    let mut violations = Vec::new();
    for firsts in per_key.values_mut() {
        firsts.sort_unstable();
        let mut highest: Option<u64> = None;
        for &(pos, ix) in firsts.iter() {
            let send = &sends[ix];
            match highest {
                Some(high) if high > send.seq => violations.push(OrderViolation {
                    key: send.key.to_owned(),
                    seq: send.seq,
                    message_id: send.message_id.to_owned(),
                    after_seq: high,
                    record: pos + 1,
                    time_ms: records[pos].time_ms,
                }),
                _ => highest = Some(send.seq),
            }
        }
    }
    violations.sort_by_key(|v| v.record);
    violations
}

/// Per (group, broker, queue), every committed offset below an earlier one.
fn offset_regressions(records: &[Record]) -> Vec<OffsetRegression> {
    let mut highest: HashMap<(&str, &str, u32), u64> = HashMap::new();
    let mut regressions = Vec::new();
    for (i, record) in records.iter().enumerate() {
        let Event::CommitOffset(c) = &record.event else {
            continue;
        };
        let high = highest.entry((&c.group, &c.broker, c.queue)).or_insert(c.offset);
        if c.offset < *high {
            regressions.push(OffsetRegression {
                group: c.group.clone(),
                broker: c.broker.clone(),
                queue: c.queue,
                from: *high,
                to: c.offset,
                record: i + 1,
            });
        }
        *high = (*high).max(c.offset);
    }
    regressions
}

/// Acknowledged sends whose receipts name a (broker group, queue, offset) that an earlier
/// acknowledged send was given: the replicas disagree on what the queue holds, so the
/// earlier message's place was lost or the offsets were assigned twice.
fn slot_conflicts(records: &[Record]) -> Vec<SlotConflict> {
    let mut holder: HashMap<(&str, u32, u64), &str> = HashMap::new();
    let mut conflicts = Vec::new();
    for (i, record) in records.iter().enumerate() {
        let Event::SendDone(SendDone {
            message_id,
            outcome:
                SendOutcome::Ok {
                    broker,
                    queue,
                    offset,
                },
        }) = &record.event
        else {
            continue;
        };
        match holder.get(&(broker.as_str(), *queue, *offset)) {
            Some(first) if *first != message_id.as_str() => conflicts.push(SlotConflict {
                broker: broker.clone(),
                queue: *queue,
                offset: *offset,
                first: (*first).to_owned(),
                second: message_id.clone(),
                record: i + 1,
            }),
            Some(_) => {}
            None => {
                holder.insert((broker, *queue, *offset), message_id);
            }
        }
    }
    conflicts
}

/// Counts acknowledgement outcomes (informational).
fn ack_counts(records: &[Record]) -> AckCounts {
    let mut acks = AckCounts::default();
    for record in records {
        if let Event::Ack(a) = &record.event {
            match a.outcome {
                AckOutcome::Ok => acks.ok += 1,
                AckOutcome::Failed { .. } => acks.failed += 1,
                AckOutcome::Unknown { .. } => acks.unknown += 1,
            }
        }
    }
    acks
}

#[cfg(test)]
#[path = "checker_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "checker_proptests.rs"]
mod proptests;
