//! Random clean histories must pass; one injected anomaly must make them fail.

use proptest::prelude::*;
use proptest::sample::Index;

use super::check;
use super::tests::{commit, consume, done, ok, send};
use crate::history::{Event, Fault, FaultPhase, HistoryWriter, Record, SendOutcome, read_history};

/// What happens to one send of a key.
#[derive(Debug, Clone, Copy)]
struct SendPlan {
    /// 0: failed, 1: unknown, otherwise ok.
    outcome: u8,
    /// Whether an unknown send's message is delivered anyway.
    delivered: bool,
    /// Extra deliveries of the message right after its first.
    dups: u8,
}

impl SendPlan {
    fn deliverable(&self) -> bool {
        self.outcome >= 2 || (self.outcome == 1 && self.delivered)
    }
}

fn plans() -> impl Strategy<Value = (Vec<Vec<SendPlan>>, Vec<u8>)> {
    let send = (0u8..6, any::<bool>(), 0u8..3).prop_map(|(outcome, delivered, dups)| SendPlan {
        outcome,
        delivered,
        dups,
    });
    let keys = prop::collection::vec(prop::collection::vec(send, 1..8), 1..5);
    (keys, prop::collection::vec(any::<u8>(), 1..64))
}

/// Progress of one key's producer and of its consumption.
#[derive(Debug, Default)]
struct KeyState {
    invoked: usize,
    in_flight: bool,
    /// Queue offsets of completed, stored sends, by seq.
    offsets: Vec<Option<u64>>,
    consumed: usize,
    dups_left: u8,
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Invoke(usize),
    Complete(usize),
    Consume(usize),
    Redeliver(usize),
    Nemesis,
}

/// Builds a clean history: each key's sends are sequential on its own process, every
/// deliverable message is consumed in seq order (some more than once), committed
/// offsets only grow, and a few faults come and go.
fn build(keys: &[Vec<SendPlan>], schedule: &[u8]) -> Vec<Record> {
    let mut b = Builder {
        keys,
        states: keys.iter().map(|_| KeyState::default()).collect(),
        ..Builder::default()
    };
    let mut step = 0;
    loop {
        let actions = b.actions();
        if actions.is_empty() {
            return b.records;
        }
        let pick = schedule[step % schedule.len()] as usize;
        b.t += 1 + (pick % 7) as u64 * 150;
        b.apply(actions[pick % actions.len()]);
        step += 1;
    }
}

#[derive(Debug, Default)]
struct Builder<'a> {
    keys: &'a [Vec<SendPlan>],
    states: Vec<KeyState>,
    records: Vec<Record>,
    t: u64,
    queue_next: [u64; 4],
    committed: [u64; 4],
    fault_active: bool,
    faults_started: usize,
}

impl Builder<'_> {
    fn actions(&self) -> Vec<Action> {
        let mut actions = Vec::new();
        for (k, (plans, s)) in self.keys.iter().zip(&self.states).enumerate() {
            if !s.in_flight && s.invoked < plans.len() {
                actions.push(Action::Invoke(k));
            }
            if s.in_flight {
                actions.push(Action::Complete(k));
            }
            if s.dups_left > 0 {
                actions.push(Action::Redeliver(k));
            } else if let Some(seq) = self.next_to_consume(k)
                && s.offsets.get(seq).is_some_and(Option::is_some)
            {
                actions.push(Action::Consume(k));
            }
        }
        if self.fault_active || self.faults_started < 3 {
            actions.push(Action::Nemesis);
        }
        actions
    }

    /// The next deliverable seq of key `k` not consumed yet.
    fn next_to_consume(&self, k: usize) -> Option<usize> {
        self.keys[k]
            .iter()
            .enumerate()
            .filter(|(_, p)| p.deliverable())
            .map(|(seq, _)| seq)
            .nth(self.states[k].consumed)
    }

    fn apply(&mut self, action: Action) {
        let key = |k: usize| format!("k{k}");
        match action {
            Action::Invoke(k) => {
                let s = &mut self.states[k];
                self.records
                    .push(send(self.t, k as u64 + 1, &key(k), s.invoked as u64));
                s.invoked += 1;
                s.in_flight = true;
            }
            Action::Complete(k) => self.complete(k),
            Action::Consume(k) => {
                let seq = self.next_to_consume(k).unwrap_or_default();
                self.deliver(k, seq);
                let s = &mut self.states[k];
                s.consumed += 1;
                s.dups_left = self.keys[k][seq].dups;
                let (queue, offset) = (k % 4, s.offsets[seq].unwrap_or_default());
                self.committed[queue] = self.committed[queue].max(offset + 1);
                self.records
                    .push(commit(self.t, queue as u32, self.committed[queue]));
            }
            Action::Redeliver(k) => {
                let seq = self.keys[k]
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.deliverable())
                    .map(|(seq, _)| seq);
                let last = seq.take(self.states[k].consumed).last().unwrap_or_default();
                self.deliver(k, last);
                self.states[k].dups_left -= 1;
            }
            Action::Nemesis => self.nemesis(),
        }
    }

    fn complete(&mut self, k: usize) {
        let s = &mut self.states[k];
        s.in_flight = false;
        let seq = s.invoked - 1;
        let plan = self.keys[k][seq];
        let queue = k % 4;
        let stored = plan.outcome >= 1;
        let offset = stored.then(|| {
            self.queue_next[queue] += 1;
            self.queue_next[queue] - 1
        });
        s.offsets.push(offset);
        let outcome = match (plan.outcome, offset) {
            (0, _) => SendOutcome::Failed {
                error: "refused".into(),
            },
            (1, _) | (_, None) => SendOutcome::Unknown {
                error: "timeout".into(),
            },
            (_, Some(offset)) => ok(queue as u32, offset),
        };
        self.records
            .push(done(self.t, k as u64 + 1, &format!("k{k}"), seq as u64, outcome));
    }

    fn deliver(&mut self, k: usize, seq: usize) {
        let mut record = consume(self.t, &format!("k{k}"), seq as u64);
        if let Event::Consume(d) = &mut record.event {
            d.queue = (k % 4) as u32;
            d.offset = self.states[k].offsets[seq].unwrap_or_default();
        }
        self.records.push(record);
    }

    /// Starts a fault (at most three per history) or ends the active one.
    fn nemesis(&mut self) {
        const KINDS: [&str; 3] = ["kill-leader", "pause-leader", "partition-leader"];
        let phase = if self.fault_active {
            FaultPhase::End
        } else {
            self.faults_started += 1;
            FaultPhase::Start
        };
        self.fault_active = !self.fault_active;
        let kind = KINDS[(self.faults_started - 1) % KINDS.len()];
        let event = Event::Fault(Fault {
            kind: kind.into(),
            target: "node-1".into(),
            phase,
        });
        self.records.push(Record {
            time_ms: self.t,
            process: 0,
            event,
        });
    }
}

/// Message ids of acknowledged sends, grouped by key, in seq order.
fn acked_by_key(records: &[Record]) -> Vec<Vec<String>> {
    let mut by_key: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let mut key_of: std::collections::HashMap<String, String> = Default::default();
    for r in records {
        match &r.event {
            Event::Send(s) => {
                key_of.insert(s.message_id.clone(), s.key.clone());
            }
            Event::SendDone(d) if matches!(d.outcome, SendOutcome::Ok { .. }) => {
                let key = key_of.get(&d.message_id).cloned().unwrap_or_default();
                by_key.entry(key).or_default().push(d.message_id.clone());
            }
            _ => {}
        }
    }
    by_key.into_values().collect()
}

fn first_consumption(records: &[Record], message_id: &str) -> Option<usize> {
    records
        .iter()
        .position(|r| matches!(&r.event, Event::Consume(d) if d.message_id == message_id))
}

proptest! {
    #[test]
    fn clean_histories_pass((keys, schedule) in plans()) {
        let records = build(&keys, &schedule);
        let report = check(&records).expect("valid history");
        prop_assert!(report.passed(), "{report}");
        prop_assert!(report.lost.is_empty());
        prop_assert_eq!(report.unknown_delivered + report.unknown_absent, report.sends.unknown);
        let dups = keys.iter().flatten().filter(|p| p.deliverable() && p.dups > 0).count();
        prop_assert_eq!(report.redelivered, dups);
        prop_assert!(report.faults.iter().all(|f| f.end_ms.is_some()));
    }

    #[test]
    fn written_and_read_back_histories_check_the_same((keys, schedule) in plans()) {
        let records = build(&keys, &schedule);
        let mut writer = HistoryWriter::new(Vec::new());
        for record in &records {
            writer.append(record).expect("in-memory write");
        }
        let history = read_history(writer.into_inner().as_slice()).expect("readable");
        prop_assert!(!history.torn_tail);
        prop_assert_eq!(&history.records, &records);
    }

    #[test]
    fn dropping_the_consumptions_of_an_acked_message_loses_it(
        (keys, schedule) in plans(),
        pick in any::<Index>(),
    ) {
        let mut records = build(&keys, &schedule);
        let acked: Vec<String> = acked_by_key(&records).into_iter().flatten().collect();
        prop_assume!(!acked.is_empty());
        let victim = pick.get(&acked).clone();
        records.retain(|r| !matches!(&r.event, Event::Consume(d) if d.message_id == victim));
        let report = check(&records).expect("valid history");
        prop_assert_eq!(report.lost, vec![victim]);
    }

    #[test]
    fn swapping_two_first_consumptions_of_a_key_breaks_order(
        (keys, schedule) in plans(),
        (pick_key, first, second) in (any::<Index>(), any::<Index>(), any::<Index>()),
    ) {
        let mut records = build(&keys, &schedule);
        let keys: Vec<Vec<String>> = acked_by_key(&records).into_iter().filter(|ids| ids.len() >= 2).collect();
        prop_assume!(!keys.is_empty());
        let ids = pick_key.get(&keys);
        let i = first.index(ids.len());
        let j = second.index(ids.len() - 1);
        let j = if j >= i { j + 1 } else { j };
        let pi = first_consumption(&records, &ids[i]).expect("consumed");
        let pj = first_consumption(&records, &ids[j]).expect("consumed");
        let event = records[pi].event.clone();
        records[pi].event = std::mem::replace(&mut records[pj].event, event);
        let report = check(&records).expect("valid history");
        prop_assert!(!report.order_violations.is_empty(), "{report}");
        prop_assert!(!report.passed());
        prop_assert!(report.lost.is_empty());
    }
}
