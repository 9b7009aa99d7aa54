//! The order of runs (sans-IO): for every workload, `reps` rounds, each round running
//! every system once, back to back, so that a swing of the disk or of a neighbour's
//! build hits all systems of a round alike; the comparisons are made round by round.
//! Every round starts with raftmq (so the sequence is raftmq, JetStream, JetStream,
//! raftmq, …); the two JetStream runs swap places every other round so that neither
//! always runs right after raftmq.

use std::fmt;

/// A system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum System {
    Raftmq,
    /// JetStream with its default sync (fsync every 2 minutes).
    JsDefault,
    /// JetStream with `sync_interval: always`.
    JsAlways,
}

impl System {
    pub const ALL: [System; 3] = [System::Raftmq, System::JsAlways, System::JsDefault];

    pub fn label(self) -> &'static str {
        match self {
            System::Raftmq => "raftmq",
            System::JsDefault => "jetstream-default",
            System::JsAlways => "jetstream-sync",
        }
    }

    pub fn parse(s: &str) -> Option<System> {
        System::ALL.into_iter().find(|x| x.label() == s)
    }
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// One run: workload index, round, system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub workload: usize,
    pub round: usize,
    pub system: System,
}

/// Every run, in order.
pub fn plan(workloads: usize, reps: usize, systems: &[System]) -> Vec<Slot> {
    let mut out = Vec::with_capacity(workloads * reps * systems.len());
    for workload in 0..workloads {
        for round in 0..reps {
            let mut order: Vec<System> = systems.to_vec();
            if round % 2 == 1 && order.len() > 2 {
                order[1..].reverse();
            }
            out.extend(order.into_iter().map(|system| Slot {
                workload,
                round,
                system,
            }));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_alternate_and_cover_everything() {
        let p = plan(2, 3, &System::ALL);
        assert_eq!(p.len(), 18);
        let first: Vec<System> = p[..3].iter().map(|s| s.system).collect();
        let second: Vec<System> = p[3..6].iter().map(|s| s.system).collect();
        assert_eq!(first, vec![System::Raftmq, System::JsAlways, System::JsDefault]);
        assert_eq!(second, vec![System::Raftmq, System::JsDefault, System::JsAlways]);
        for w in 0..2 {
            for r in 0..3 {
                for s in System::ALL {
                    let n = p
                        .iter()
                        .filter(|x| x.workload == w && x.round == r && x.system == s)
                        .count();
                    assert_eq!(n, 1);
                }
            }
        }
        // Each system alternates with a JetStream run: raftmq never runs twice in a row
        // within a workload.
        assert!(p.windows(2).all(|w| {
            w[0].workload != w[1].workload
                || !(w[0].system == System::Raftmq && w[1].system == System::Raftmq)
        }));
    }

    #[test]
    fn labels_round_trip() {
        for s in System::ALL {
            assert_eq!(System::parse(s.label()), Some(s));
        }
        assert_eq!(System::parse("kafka"), None);
    }
}
