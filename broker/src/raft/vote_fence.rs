//! The vote fence of a node whose commit log lost entries it had made durable.
//!
//! Bit flips or a truncated segment (see `raft_log`'s recovery) cut such a node's log
//! short. It may have acknowledged some of the lost entries, and a leader may have counted
//! those acknowledgements towards committing them. Were it to vote now, it could help
//! elect a candidate that lacks such an entry — with another node that lacks it too — and
//! the new leader would overwrite an acknowledged write. So until it holds everything
//! committed again, the node neither grants votes nor stands for election; it only takes
//! entries from a leader.
//!
//! When does it hold everything committed? Once it has applied up to a commit point that
//! a leader of a term at least its own at restart announced for an entry of that same
//! term. Such a leader holds every entry committed before its election (Raft's leader
//! completeness) and commits its own first entry only after them. A leader of the node's
//! own term at restart may be the one that counted the lost acknowledgements; for it the
//! target is also the last index it names in that request, which it sends only once it
//! believes the node holds everything before it. The fence state is plain data fed with
//! what the node sees; the log persists it (`CommitLog::vote_fence`) so that a restart
//! before the repair does not forget it.

use std::sync::Mutex;

/// A commit point: (term of the entry, its index).
pub type CommitPoint = (u64, u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Fenced {
        /// First index the log lost.
        from: u64,
        /// The node's term at restart: commit points of older leaders do not count.
        min_term: u64,
        /// The commit point to reach, once a leader announced one of its own term.
        target: Option<u64>,
    },
}

/// Whether this node may vote; shared by the Raft server and the task that lifts it.
#[derive(Debug)]
pub struct VoteFence {
    state: Mutex<State>,
}

impl VoteFence {
    /// A fence for a log that lost entries from `lost_from` on (none: open), on a node
    /// whose term at restart is `term`.
    pub fn new(lost_from: Option<u64>, term: u64) -> Self {
        let state = match lost_from {
            Some(from) => State::Fenced {
                from,
                min_term: term,
                target: None,
            },
            None => State::Open,
        };
        Self {
            state: Mutex::new(state),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The first lost index while the node may not vote.
    pub fn fenced_from(&self) -> Option<u64> {
        match *self.state() {
            State::Fenced { from, .. } => Some(from),
            State::Open => None,
        }
    }

    /// The commit point the node has to reach, once known.
    pub fn target(&self) -> Option<u64> {
        match *self.state() {
            State::Fenced { target, .. } => target,
            State::Open => None,
        }
    }

    /// Fed every AppendEntries request a leader of `leader_term` sends, with the commit
    /// point it carries and the last log index it names (its last entry, else the entry
    /// before them).
    ///
    /// A leader of the very term the node had at restart may be the one it acknowledged
    /// the lost entries to, and may not have counted that acknowledgement yet when it
    /// computed its commit point; the target is then also the last index it names, which
    /// it sends only once it believes the node holds everything before it.
    pub fn leader_said(&self, leader_term: u64, commit: Option<CommitPoint>, last_named: Option<u64>) {
        if let State::Fenced {
            min_term,
            target: target @ None,
            ..
        } = &mut *self.state()
            && let Some((term, index)) = commit
            && term == leader_term
            && leader_term >= *min_term
        {
            let same_term = leader_term == *min_term;
            *target = Some(if same_term {
                index.max(last_named.unwrap_or(0))
            } else {
                index
            });
        }
    }

    /// Fed the node's applied index; returns true when this lifts the fence.
    pub fn applied(&self, applied: Option<u64>) -> bool {
        let mut st = self.state();
        match *st {
            State::Fenced {
                target: Some(target), ..
            } if applied.is_some_and(|a| a >= target) => {
                *st = State::Open;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_undamaged_node_is_never_fenced() {
        let f = VoteFence::new(None, 3);
        assert_eq!(f.fenced_from(), None);
        f.leader_said(3, Some((3, 10)), None);
        assert!(!f.applied(Some(10)), "nothing to lift");
    }

    #[test]
    fn only_a_commit_point_of_the_leaders_own_term_sets_the_target() {
        let f = VoteFence::new(Some(50), 4);
        f.leader_said(5, None, Some(95));
        f.leader_said(5, Some((4, 80)), Some(95));
        assert_eq!(f.target(), None, "a new leader's inherited commit point may lag");
        assert!(!f.applied(Some(1_000)), "no target, no lifting");
        f.leader_said(5, Some((5, 90)), Some(95));
        assert_eq!(
            f.target(),
            Some(90),
            "a later term: its own commit point suffices"
        );
        f.leader_said(6, Some((6, 120)), None);
        assert_eq!(f.target(), Some(90), "the first one is enough");
    }

    #[test]
    fn leaders_older_than_the_restart_term_do_not_count() {
        let f = VoteFence::new(Some(50), 7);
        f.leader_said(6, Some((6, 200)), None);
        assert_eq!(f.target(), None);
        f.leader_said(7, Some((7, 210)), Some(230));
        assert_eq!(
            f.target(),
            Some(230),
            "the restart term's leader: also what it names"
        );
    }

    #[test]
    fn the_fence_lifts_once_the_target_is_applied() {
        let f = VoteFence::new(Some(50), 2);
        f.leader_said(3, Some((3, 100)), None);
        assert!(!f.applied(None));
        assert!(!f.applied(Some(99)));
        assert_eq!(f.fenced_from(), Some(50));
        assert!(f.applied(Some(100)));
        assert_eq!(f.fenced_from(), None);
        assert!(!f.applied(Some(101)), "lifted once");
    }
}
