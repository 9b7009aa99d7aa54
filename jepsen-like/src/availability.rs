//! Fault windows, recovery times, unavailability outside faults, per-fault-kind rows.

use std::collections::{BTreeMap, HashMap};

use crate::checker::{Flags, SendOp, Status};
use crate::error::ChaosError;
use crate::history::{Event, FaultPhase, Record};
use crate::report::{FaultResult, FaultRow, Report, Unavailability};

/// Gaps between successful sends longer than this are summed up as unavailability.
const LONG_GAP_MS: u64 = 1000;

/// One fault, from its start to its end (`None`: never ended in the history).
#[derive(Debug)]
pub(crate) struct Window<'a> {
    kind: &'a str,
    target: &'a str,
    start_ms: u64,
    end_ms: Option<u64>,
}

impl Window<'_> {
    fn contains(&self, t: u64) -> bool {
        self.start_ms <= t && self.end_ms.is_none_or(|end| t < end)
    }

    /// Whether the closed intervals `[self]` and `[from, to]` meet.
    fn meets(&self, from: u64, to: u64) -> bool {
        self.start_ms <= to && self.end_ms.is_none_or(|end| end >= from)
    }
}

/// Pairs each fault start with the next end of the same kind and target.
pub(crate) fn fault_windows(records: &[Record]) -> Result<Vec<Window<'_>>, ChaosError> {
    let mut windows: Vec<Window<'_>> = Vec::new();
    let mut open: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, record) in records.iter().enumerate() {
        let Event::Fault(fault) = &record.event else {
            continue;
        };
        let key = (fault.kind.as_str(), fault.target.as_str());
        let invalid = |what: &str| ChaosError::Invalid {
            record: i + 1,
            reason: format!("fault {} on {} {what}", fault.kind, fault.target),
        };
        match fault.phase {
            FaultPhase::Start => {
                if open.insert(key, windows.len()).is_some() {
                    return Err(invalid("starts while already active"));
                }
                windows.push(Window {
                    kind: key.0,
                    target: key.1,
                    start_ms: record.time_ms,
                    end_ms: None,
                });
            }
            FaultPhase::End => {
                let ix = open
                    .remove(&key)
                    .ok_or_else(|| invalid("ends but never started"))?;
                windows[ix].end_ms = Some(record.time_ms);
            }
        }
    }
    Ok(windows)
}

/// A successful send: when it was invoked, when it completed, which group stored it.
type OkSend<'a> = (u64, u64, &'a str);

/// Time from the fault's start to the first completion of a successful send invoked at
/// or after that start. A fault whose target names a broker group (`g1/node-2`: the part
/// before the first `/`) counts only sends stored by that group, so that another group's
/// sends do not hide its outage.
fn rto(window: &Window<'_>, oks: &[OkSend<'_>]) -> Option<u64> {
    let group = window.target.split_once('/').map(|(g, _)| g);
    oks.iter()
        .filter(|(invoke, _, broker)| *invoke >= window.start_ms && group.is_none_or(|g| g == *broker))
        .map(|(_, done, _)| done.saturating_sub(window.start_ms))
        .min()
}

/// Gaps between consecutive successful send completions that meet no fault window.
fn unavailability(oks: &[OkSend<'_>], windows: &[Window<'_>]) -> Unavailability {
    let mut done: Vec<u64> = oks.iter().map(|&(_, done, _)| done).collect();
    done.sort_unstable();
    let mut result = Unavailability::default();
    for pair in done.windows(2) {
        let (from, to) = (pair[0], pair[1]);
        if windows.iter().any(|w| w.meets(from, to)) {
            continue;
        }
        let gap = to - from;
        result.max_gap_ms = result.max_gap_ms.max(gap);
        if gap > LONG_GAP_MS {
            result.long_gaps += 1;
            result.long_gaps_total_ms += gap;
        }
    }
    result
}

/// The fault kinds a send invoked at `t` is charged to: those active at `t` (`during`),
/// else those that ended last before `t`; none before the first fault.
fn attribute<'a>(windows: &[Window<'a>], t: u64) -> (Vec<&'a str>, bool) {
    let mut kinds: Vec<&str> = windows.iter().filter(|w| w.contains(t)).map(|w| w.kind).collect();
    let during = !kinds.is_empty();
    if !during {
        let last_end = windows
            .iter()
            .filter_map(|w| w.end_ms)
            .filter(|&end| end <= t)
            .max();
        kinds = windows
            .iter()
            .filter(|w| last_end.is_some() && w.end_ms == last_end)
            .map(|w| w.kind)
            .collect();
    }
    kinds.sort_unstable();
    kinds.dedup();
    (kinds, during)
}

/// A [`FaultRow`] being accumulated.
struct RowAcc {
    row: FaultRow,
    rtos: Vec<u64>,
}

impl RowAcc {
    fn new(kind: &str) -> Self {
        Self {
            row: FaultRow {
                kind: kind.to_owned(),
                ..FaultRow::default()
            },
            rtos: Vec::new(),
        }
    }

    fn add_fault(&mut self, rto_ms: Option<u64>) {
        self.row.faults += 1;
        match rto_ms {
            Some(rto) => self.rtos.push(rto),
            None => self.row.unrecovered += 1,
        }
    }

    fn add_send(&mut self, acked: bool, during: bool, flags: &Flags) {
        self.row.sends += 1;
        if acked && during {
            self.row.acked_during += 1;
        } else if acked {
            self.row.acked_after += 1;
        }
        self.row.lost += usize::from(flags.lost);
        self.row.duplicated += usize::from(flags.duplicated);
        self.row.order_violations += flags.order;
    }

    fn finish(mut self) -> FaultRow {
        self.rtos.sort_unstable();
        let n = self.rtos.len();
        self.row.rto_p50_ms = n.checked_sub(1).map(|_| self.rtos[n.div_ceil(2) - 1]);
        self.row.rto_max_ms = self.rtos.last().copied();
        self.row
    }
}

/// Fills the report's per-fault results, per-kind rows, total row and unavailability.
pub(crate) fn fill(report: &mut Report, sends: &[SendOp<'_>], flags: &[Flags], windows: &[Window<'_>]) {
    let oks: Vec<OkSend<'_>> = sends
        .iter()
        .filter(|s| s.status == Status::Ok)
        .filter_map(|s| Some((s.invoke_ms, s.done_ms?, s.broker?)))
        .collect();
    report.unavailability = unavailability(&oks, windows);
    let mut rows: BTreeMap<&str, RowAcc> = BTreeMap::new();
    let mut total = RowAcc::new(FaultRow::TOTAL);
    let mut none = RowAcc::new(FaultRow::NO_FAULT);
    for window in windows {
        let rto_ms = rto(window, &oks);
        rows.entry(window.kind)
            .or_insert_with(|| RowAcc::new(window.kind))
            .add_fault(rto_ms);
        total.add_fault(rto_ms);
        report.faults.push(FaultResult {
            kind: window.kind.to_owned(),
            target: window.target.to_owned(),
            start_ms: window.start_ms,
            end_ms: window.end_ms,
            rto_ms,
        });
    }
    for (send, flag) in sends.iter().zip(flags) {
        let acked = send.status == Status::Ok;
        let (kinds, during) = attribute(windows, send.invoke_ms);
        if kinds.is_empty() {
            none.add_send(acked, during, flag);
        }
        for kind in kinds {
            rows.entry(kind)
                .or_insert_with(|| RowAcc::new(kind))
                .add_send(acked, during, flag);
        }
        total.add_send(acked, during, flag);
    }
    report.rows = rows.into_values().map(RowAcc::finish).collect();
    if none.row.sends > 0 {
        report.rows.push(none.finish());
    }
    report.total = total.finish();
}
