//! The nemesis's plan: a seeded, pure list of faults, drawn before the run starts.
//!
//! One fault at a time: each [`Step`] waits its `gap` after the previous fault healed (or
//! after the workload started), injects its fault, holds it for `hold`, then heals it, so
//! a fault begins every 8–15 s or so. The target is chosen at run time, among the
//! candidates of that moment (the current leader, say), by the step's `pick`; so the same
//! seed gives the same plan, and the same choices when the cluster behaves the same.

use std::fmt;
use std::time::Duration;

use rand::Rng;
use rand::SeedableRng;
use rand::rngs::StdRng;

/// What the nemesis does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// SIGKILL a broker group's leader; restart it when the fault heals.
    KillLeader,
    /// SIGKILL a random broker node (leader or follower); restart it when healed.
    KillNode,
    /// SIGSTOP a broker group's leader; SIGCONT it when healed.
    PauseLeader,
    /// SIGKILL a name server; restart it on the same address when healed.
    KillNamesrv,
    /// Cut a group's leader off from its peers, both ways; clients still reach it.
    PartitionLeader,
    /// One way: the leader hears nothing from its peers (they still hear it).
    PartitionLeaderIn,
    /// One way: the peers hear nothing from the leader (it still hears them).
    PartitionLeaderOut,
    /// Cut a follower off from its peers, both ways.
    PartitionFollower,
    /// Every node of a group stops at once (SIGKILL) and loses every byte its commit log
    /// had not fsynced (simulated below the log); all restart when healed.
    PowerFailure,
    /// SIGKILL a random broker node, flip bits in one record of its commit log while it is
    /// down (never the last record, so valid data follows); restart it when healed.
    FlipBits,
    /// SIGKILL a random broker node, truncate one of its segment files while it is down
    /// (at a record boundary or inside a record); restart it when healed.
    TruncateSegment,
}

impl FaultKind {
    /// Every kind, in the order [`schedule`] draws from.
    pub const ALL: [FaultKind; 11] = [
        FaultKind::KillLeader,
        FaultKind::KillNode,
        FaultKind::PauseLeader,
        FaultKind::KillNamesrv,
        FaultKind::PartitionLeader,
        FaultKind::PartitionLeaderIn,
        FaultKind::PartitionLeaderOut,
        FaultKind::PartitionFollower,
        FaultKind::PowerFailure,
        FaultKind::FlipBits,
        FaultKind::TruncateSegment,
    ];

    /// The kind's name in the history (`fault` records) and the report.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill-leader",
            FaultKind::KillNode => "kill-node",
            FaultKind::PauseLeader => "pause-leader",
            FaultKind::KillNamesrv => "kill-namesrv",
            FaultKind::PartitionLeader => "partition-leader",
            FaultKind::PartitionLeaderIn => "partition-leader-in",
            FaultKind::PartitionLeaderOut => "partition-leader-out",
            FaultKind::PartitionFollower => "partition-follower",
            FaultKind::PowerFailure => "power-failure",
            FaultKind::FlipBits => "flip-bits",
            FaultKind::TruncateSegment => "truncate-segment",
        }
    }

    /// Whether the fault cuts network links: the nodes must then run in network
    /// namespaces of their own (root, `ip` and `iptables` needed).
    pub fn cuts_links(self) -> bool {
        matches!(
            self,
            FaultKind::PartitionLeader
                | FaultKind::PartitionLeaderIn
                | FaultKind::PartitionLeaderOut
                | FaultKind::PartitionFollower
        )
    }

    /// The kind named `name` ([`FaultKind::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// How long the fault is held, in milliseconds.
    fn hold_ms(self) -> (u64, u64) {
        match self {
            FaultKind::KillLeader
            | FaultKind::KillNode
            | FaultKind::PowerFailure
            | FaultKind::FlipBits
            | FaultKind::TruncateSegment => (2_000, 5_000),
            FaultKind::PauseLeader | FaultKind::KillNamesrv => (3_000, 6_000),
            FaultKind::PartitionLeader
            | FaultKind::PartitionLeaderIn
            | FaultKind::PartitionLeaderOut
            | FaultKind::PartitionFollower => (3_000, 6_000),
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Shortest wait before a fault (after the previous one healed), in milliseconds.
const GAP_MIN_MS: u64 = 5_000;
/// Longest such wait.
const GAP_MAX_MS: u64 = 9_000;
/// No fault is planned to still be held this close to the end of the run.
const END_MARGIN_MS: u64 = 2_000;

/// One planned fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Wait after the previous fault healed (or the workload started).
    pub gap: Duration,
    /// The fault.
    pub kind: FaultKind,
    /// How long it is held before it heals.
    pub hold: Duration,
    /// Chooses the target among the candidates at injection time.
    pub pick: u64,
}

/// The plan for a run of `duration` with faults drawn uniformly from `kinds` (with
/// `cycle`: taken from `kinds` in turn), from `seed`. Empty when `kinds` is.
pub fn schedule(seed: u64, duration: Duration, kinds: &[FaultKind], cycle: bool) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    let total = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    let mut at = 0u64;
    let mut steps = Vec::new();
    if kinds.is_empty() {
        return steps;
    }
    loop {
        let gap = rng.random_range(GAP_MIN_MS..=GAP_MAX_MS);
        let drawn = rng.random_range(0..kinds.len());
        let kind = kinds[if cycle { steps.len() % kinds.len() } else { drawn }];
        let (lo, hi) = kind.hold_ms();
        let hold = rng.random_range(lo..=hi);
        let pick = rng.random::<u64>();
        let end = at + gap + hold;
        if end.saturating_add(END_MARGIN_MS) > total {
            return steps;
        }
        steps.push(Step {
            gap: Duration::from_millis(gap),
            kind,
            hold: Duration::from_millis(hold),
            pick,
        });
        at = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_one_plan_within_the_duration() {
        let d = Duration::from_secs(600);
        let a = schedule(7, d, &FaultKind::ALL, false);
        assert_eq!(a, schedule(7, d, &FaultKind::ALL, false));
        assert_ne!(a, schedule(8, d, &FaultKind::ALL, false));
        let busy: Duration = a.iter().map(|s| s.gap + s.hold).sum();
        assert!(busy + Duration::from_millis(END_MARGIN_MS) <= d);
        // 600 s of 7–15 s cycles.
        assert!((40..=86).contains(&a.len()), "{} steps", a.len());
        for s in &a {
            let cycle = s.gap + s.hold;
            assert!(cycle >= Duration::from_secs(7) && cycle <= Duration::from_secs(15));
        }
        // About 60 draws from 11 kinds: one plan may miss a kind; three plans together
        // draw every one.
        let b = schedule(8, d, &FaultKind::ALL, false);
        let c = schedule(9, d, &FaultKind::ALL, false);
        for kind in FaultKind::ALL {
            assert!(
                [&a, &b, &c].iter().any(|p| p.iter().any(|s| s.kind == kind)),
                "{kind} never drawn"
            );
            assert_eq!(FaultKind::from_name(kind.name()), Some(kind));
        }
    }

    #[test]
    fn short_runs_and_restricted_kinds() {
        assert!(schedule(1, Duration::from_secs(5), &FaultKind::ALL, false).is_empty());
        assert!(schedule(1, Duration::from_secs(60), &[], true).is_empty());
        let only = schedule(3, Duration::from_secs(120), &[FaultKind::PauseLeader], false);
        assert!(!only.is_empty());
        assert!(only.iter().all(|s| s.kind == FaultKind::PauseLeader));
    }

    #[test]
    fn cycling_takes_every_kind_in_turn() {
        let kinds = [
            FaultKind::KillLeader,
            FaultKind::PauseLeader,
            FaultKind::PartitionLeader,
        ];
        let plan = schedule(1, Duration::from_secs(60), &kinds, true);
        assert!(plan.len() >= 3, "{} steps in 60 s", plan.len());
        for (i, step) in plan.iter().enumerate() {
            assert_eq!(step.kind, kinds[i % kinds.len()]);
        }
    }
}
