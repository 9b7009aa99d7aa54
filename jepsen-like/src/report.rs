//! The checker's verdict and its printed form.

use std::fmt;

/// How many examples of each anomaly [`Report`]'s `Display` lists.
const EXAMPLES: usize = 10;

/// Everything the checker found in a history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Send operations by outcome.
    pub sends: SendCounts,
    /// Acknowledgement outcomes (informational).
    pub acks: AckCounts,
    /// Distinct sent messages delivered at least once.
    pub consumed: usize,
    /// Deliveries of sent messages (unexpected deliveries excluded).
    pub deliveries: usize,
    /// Message ids of acknowledged sends never consumed.
    pub lost: Vec<String>,
    /// Messages consumed more than once or consumed although their send failed.
    pub duplicated: usize,
    /// Messages consumed more than once.
    pub redelivered: usize,
    /// Deliveries beyond each message's first.
    pub extra_deliveries: usize,
    /// Message ids of failed sends that were consumed anyway.
    pub failed_but_delivered: Vec<String>,
    /// Sends with an unknown outcome (or none) whose message was consumed.
    pub unknown_delivered: usize,
    /// Sends with an unknown outcome (or none) whose message was never consumed.
    pub unknown_absent: usize,
    /// Deliveries of messages never sent, or not as sent.
    pub unexpected: Vec<UnexpectedDelivery>,
    /// Acknowledged messages first consumed after a higher seq of their key.
    pub order_violations: Vec<OrderViolation>,
    /// Committed offsets below an earlier observation for the same queue.
    pub offset_regressions: Vec<OffsetRegression>,
    /// Acknowledged sends given a queue position an earlier acknowledged send had.
    pub slot_conflicts: Vec<SlotConflict>,
    /// Every fault, in start order, with its recovery time.
    pub faults: Vec<FaultResult>,
    /// One row per fault kind (sorted), then [`FaultRow::NO_FAULT`] if any send
    /// preceded the first fault.
    pub rows: Vec<FaultRow>,
    /// All sends and faults together.
    pub total: FaultRow,
    /// Send unavailability outside fault windows.
    pub unavailability: Unavailability,
}

impl Report {
    /// True when nothing acknowledged was lost, per-key order held, committed offsets
    /// never moved backwards and nothing was delivered that was not sent.
    pub fn passed(&self) -> bool {
        self.lost.is_empty()
            && self.order_violations.is_empty()
            && self.offset_regressions.is_empty()
            && self.slot_conflicts.is_empty()
            && self.unexpected.is_empty()
    }
}

/// Send operations by outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendCounts {
    /// All invocations.
    pub invoked: usize,
    /// Completed `ok`.
    pub ok: usize,
    /// Completed `failed`.
    pub failed: usize,
    /// Completed `unknown`, or never completed.
    pub unknown: usize,
    /// Never completed (included in `unknown`).
    pub pending: usize,
}

/// Acknowledgement outcomes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckCounts {
    /// Confirmed.
    pub ok: usize,
    /// Refused.
    pub failed: usize,
    /// Indeterminate.
    pub unknown: usize,
}

/// A delivery that matches no send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnexpectedDelivery {
    /// Delivered message id.
    pub message_id: String,
    /// Delivered key.
    pub key: String,
    /// Delivered seq.
    pub seq: u64,
    /// 1-based record number of the delivery.
    pub record: usize,
    /// Why it matches no send.
    pub reason: String,
}

/// An acknowledged message first consumed after a higher seq of the same key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderViolation {
    /// Sharding key.
    pub key: String,
    /// Seq of the message consumed too late.
    pub seq: u64,
    /// Its message id.
    pub message_id: String,
    /// The highest seq of the key consumed before it.
    pub after_seq: u64,
    /// 1-based record number of its first consumption.
    pub record: usize,
    /// Time of its first consumption.
    pub time_ms: u64,
}

/// Two acknowledged sends given the same queue position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotConflict {
    /// Broker group.
    pub broker: String,
    /// Queue id.
    pub queue: u32,
    /// The queue offset both receipts name.
    pub offset: u64,
    /// The message acknowledged there first.
    pub first: String,
    /// The later one.
    pub second: String,
    /// 1-based record number of the later receipt.
    pub record: usize,
}

/// A committed offset lower than one observed before for the same queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetRegression {
    /// Consumer group.
    pub group: String,
    /// Broker group.
    pub broker: String,
    /// Queue id.
    pub queue: u32,
    /// Highest offset observed before.
    pub from: u64,
    /// The lower offset observed now.
    pub to: u64,
    /// 1-based record number of the observation.
    pub record: usize,
}

/// One injected fault and how long sends took to succeed again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultResult {
    /// Fault kind.
    pub kind: String,
    /// Its target.
    pub target: String,
    /// Injection time.
    pub start_ms: u64,
    /// Heal time, if the history has one.
    pub end_ms: Option<u64>,
    /// Recovery time: from `start_ms` to the first completion of a successful send
    /// invoked at or after `start_ms` (stored by the broker group the target names, for a
    /// target `<group>/<node>`); `None` if no such send exists.
    pub rto_ms: Option<u64>,
}

/// Statistics for one fault kind.
///
/// Every send is charged to the kinds of the faults active when it was invoked
/// ("during"); if none was active, to the kinds of the faults that ended last before it
/// ("after"); sends before the first fault go to the [`FaultRow::NO_FAULT`] row, counted
/// as "after". A send invoked during overlapping faults of several kinds counts in each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultRow {
    /// Fault kind, [`FaultRow::NO_FAULT`] or [`FaultRow::TOTAL`].
    pub kind: String,
    /// Faults of this kind.
    pub faults: usize,
    /// Faults after which no send succeeded again.
    pub unrecovered: usize,
    /// Sends charged to this row.
    pub sends: usize,
    /// Acknowledged sends invoked while such a fault was active.
    pub acked_during: usize,
    /// Acknowledged sends invoked after such a fault, before the next one.
    pub acked_after: usize,
    /// Lost messages among this row's sends.
    pub lost: usize,
    /// Duplicated messages among this row's sends.
    pub duplicated: usize,
    /// Order violations of this row's sends (charged to the message consumed late).
    pub order_violations: usize,
    /// Median recovery time of the recovered faults (nearest rank).
    pub rto_p50_ms: Option<u64>,
    /// Longest recovery time of the recovered faults.
    pub rto_max_ms: Option<u64>,
}

impl FaultRow {
    /// Row name for sends invoked before the first fault.
    pub const NO_FAULT: &'static str = "(no fault)";
    /// Row name for the totals.
    pub const TOTAL: &'static str = "total";
}

/// Gaps between consecutive successful send completions that meet no fault window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unavailability {
    /// The longest such gap.
    pub max_gap_ms: u64,
    /// How many such gaps are longer than one second.
    pub long_gaps: usize,
    /// Their total length.
    pub long_gaps_total_ms: u64,
}

/// Milliseconds as seconds with two decimals, `-` for none.
fn secs(ms: Option<u64>) -> String {
    ms.map_or_else(
        || "-".to_owned(),
        |ms| format!("{}.{:02}s", ms / 1000, ms % 1000 / 10),
    )
}

impl FaultRow {
    fn write_header(f: &mut fmt::Formatter<'_>, width: usize) -> fmt::Result {
        writeln!(
            f,
            "{:<width$} {:>6} {:>5} {:>12} {:>11} {:>5} {:>5} {:>5} {:>8} {:>8}",
            "fault kind",
            "faults",
            "unrec",
            "acked-during",
            "acked-after",
            "lost",
            "dup",
            "order",
            "rto-p50",
            "rto-max"
        )
    }

    fn write_row(&self, f: &mut fmt::Formatter<'_>, width: usize) -> fmt::Result {
        writeln!(
            f,
            "{:<width$} {:>6} {:>5} {:>12} {:>11} {:>5} {:>5} {:>5} {:>8} {:>8}",
            self.kind,
            self.faults,
            self.unrecovered,
            self.acked_during,
            self.acked_after,
            self.lost,
            self.duplicated,
            self.order_violations,
            secs(self.rto_p50_ms),
            secs(self.rto_max_ms)
        )
    }
}

impl Report {
    fn write_table(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rows = self.rows.iter().chain(std::iter::once(&self.total));
        let width = rows.clone().map(|r| r.kind.len()).chain([16]).max().unwrap_or(16);
        FaultRow::write_header(f, width)?;
        rows.try_for_each(|row| row.write_row(f, width))
    }

    fn write_summary(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.sends;
        writeln!(f, "lost                  {}", self.lost.len())?;
        writeln!(
            f,
            "duplicated            {} (consumed more than once {}, consumed although send failed {}; {} extra deliveries)",
            self.duplicated,
            self.redelivered,
            self.failed_but_delivered.len(),
            self.extra_deliveries
        )?;
        writeln!(
            f,
            "unknown sends         {} (delivered {}, absent {}; {} never completed)",
            s.unknown, self.unknown_delivered, self.unknown_absent, s.pending
        )?;
        writeln!(f, "order violations      {}", self.order_violations.len())?;
        writeln!(f, "offset regressions    {}", self.offset_regressions.len())?;
        writeln!(f, "slot conflicts        {}", self.slot_conflicts.len())?;
        writeln!(f, "unexpected deliveries {}", self.unexpected.len())?;
        let u = &self.unavailability;
        writeln!(
            f,
            "unavailability outside faults: longest gap {}, {} gaps over 1s totalling {}",
            secs(Some(u.max_gap_ms)),
            u.long_gaps,
            secs(Some(u.long_gaps_total_ms))
        )
    }

    fn write_examples(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for id in self.lost.iter().take(EXAMPLES) {
            writeln!(f, "lost: {id}")?;
        }
        for v in self.order_violations.iter().take(EXAMPLES) {
            writeln!(
                f,
                "order: key {} seq {} ({}) first consumed at record {} after seq {}",
                v.key, v.seq, v.message_id, v.record, v.after_seq
            )?;
        }
        for r in self.offset_regressions.iter().take(EXAMPLES) {
            writeln!(
                f,
                "offset: group {} broker {} queue {} went from {} to {} at record {}",
                r.group, r.broker, r.queue, r.from, r.to, r.record
            )?;
        }
        for c in self.slot_conflicts.iter().take(EXAMPLES) {
            writeln!(
                f,
                "slot: {} and {} were both acknowledged at broker {} queue {} offset {} (record {})",
                c.first, c.second, c.broker, c.queue, c.offset, c.record
            )?;
        }
        for u in self.unexpected.iter().take(EXAMPLES) {
            writeln!(
                f,
                "unexpected: {} key {} seq {} at record {}: {}",
                u.message_id, u.key, u.seq, u.record, u.reason
            )?;
        }
        for fault in self
            .faults
            .iter()
            .filter(|fault| fault.rto_ms.is_none())
            .take(EXAMPLES)
        {
            writeln!(
                f,
                "unrecovered: {} on {} at {} ms",
                fault.kind, fault.target, fault.start_ms
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.passed() { "PASS" } else { "FAIL" };
        let s = &self.sends;
        writeln!(f, "raftmq-chaos check: {verdict}")?;
        writeln!(
            f,
            "sends {} invoked: {} ok, {} failed, {} unknown; {} messages consumed in {} deliveries; acks {} ok, {} failed, {} unknown",
            s.invoked,
            s.ok,
            s.failed,
            s.unknown,
            self.consumed,
            self.deliveries,
            self.acks.ok,
            self.acks.failed,
            self.acks.unknown
        )?;
        writeln!(f)?;
        self.write_table(f)?;
        writeln!(f)?;
        self.write_summary(f)?;
        self.write_examples(f)
    }
}
