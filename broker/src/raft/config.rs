//! openraft configuration of a broker group, with the reasons behind each value.
//!
//! # Failover timing
//!
//! In openraft 0.10 a follower starts an election only when its vote has not been
//! refreshed (by a heartbeat or append from the leader) for
//! `leader_lease + election_timeout`, where the lease is `election_timeout_max` and the
//! timeout is drawn from `[election_timeout_min, election_timeout_max)`. Peers refuse
//! (pre-)votes until their own lease has run out, i.e. `election_timeout_max` after the
//! last heartbeat they saw. So after a leader dies, the first election starts
//! `max + rand[min, max)` after its last heartbeat, and wins at once (one pre-vote and
//! one vote round trip, plus a vote fsync) because by then the other followers' leases
//! have expired too.
//!
//! With the defaults (heartbeat 100 ms, election 600–900 ms) that is 1.5–1.8 s, leaving
//! more than a second of the 3 s failover goal (median leader-kill RTO) to the new
//! leader's first commit and to clients finding it. Spurious elections need a follower
//! to hear nothing from a live leader for 1.5 s, i.e. fifteen heartbeats in a row lost
//! or late. Heartbeats travel on a connection of their own (see `network`), and a slow
//! fsync on the follower does not delay them (the commit log syncs on its own thread),
//! so bulk replication or a disk hiccup does not starve them.
//!
//! The 300 ms spread between min and max is two orders of magnitude above a vote round
//! trip on a LAN, which keeps split votes rare; pre-vote stops a node that was cut off
//! from disrupting a healthy leader with an inflated term when it comes back.
//!
//! # Snapshots and purging
//!
//! A snapshot is a RocksDB checkpoint without message bodies: the bodies live only in
//! the commit log. So openraft must never purge the log on its own after a snapshot
//! (`max_in_snapshot_log_to_keep = u64::MAX`); retention (72 h / disk thresholds) decides
//! what to purge and calls `raft.trigger().purge_log(..)`. A follower therefore only
//! needs a snapshot when the entries it lacks were purged by retention, and the message
//! bodies it then never receives are ones retention has expired anyway.
//!
//! Snapshots are still built periodically: openraft purges only entries covered by a
//! snapshot, and a recent one bounds what a lagging follower must catch up on.

use std::sync::Arc;

use serde::Deserialize;
use serde::Serialize;

/// Tunables of a broker group's Raft. The defaults are the documented choices above.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftConfig {
    /// Interval of the leader's heartbeats, in ms. Also the per-RPC timeout openraft
    /// gives heartbeats and replication streams. Default 100.
    pub heartbeat_interval_ms: u64,
    /// Lower bound of the randomized election timeout, in ms. Default 600.
    pub election_timeout_min_ms: u64,
    /// Upper bound (exclusive) of the election timeout and the leader lease, in ms.
    /// Default 900.
    pub election_timeout_max_ms: u64,
    /// Run a pre-vote round before a real election. Default true.
    pub pre_vote: bool,
    /// Build a snapshot after this many committed entries since the last one.
    /// Default 100 000 (an entry is a batch of messages, a snapshot a RocksDB checkpoint).
    pub snapshot_logs_since_last: u64,
    /// Most entries in one AppendEntries request. Bytes are bounded separately: the
    /// network cuts a request that exceeds its size budget. Default 256.
    pub max_payload_entries: u64,
    /// Snapshot data chunk size in bytes. Default 1 MiB.
    pub snapshot_chunk_size: u64,
    /// Progress timeout of a snapshot transfer in ms: the transfer fails when no chunk
    /// moves, or the follower does not answer after the last one, for 3/4 of this.
    /// Default 20 000.
    pub install_snapshot_timeout_ms: u64,
    /// Retry delays after a peer is found unreachable (openraft backoff syntax).
    /// Default "100ms 200ms ...1s": a restarted follower is caught up within a second.
    pub unreachable_backoff: String,
}

impl Default for RaftConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 600,
            election_timeout_max_ms: 900,
            pre_vote: true,
            snapshot_logs_since_last: 100_000,
            max_payload_entries: 256,
            snapshot_chunk_size: 1 << 20,
            install_snapshot_timeout_ms: 20_000,
            unreachable_backoff: "100ms 200ms ...1s".to_string(),
        }
    }
}

/// A Raft configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum RaftConfigError {
    #[error("invalid raft config: {0}")]
    Invalid(String),
    #[error("invalid raft config: {0}")]
    Openraft(#[from] openraft::ConfigError),
}

/// Smallest ratio of election timeout to heartbeat interval we accept: a follower must
/// be able to miss a few heartbeats in a row without starting an election.
const MIN_HEARTBEATS_PER_ELECTION_TIMEOUT: u64 = 3;

impl RaftConfig {
    /// How long after its last acknowledgement by a quorum a leader may already have been
    /// replaced: the followers' leases (`election_timeout_max`) plus the shortest election
    /// timeout. A leader that has heard from no quorum for this long (cut off from its
    /// peers) stops waiting for its writes to commit.
    pub fn deposed_after(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.election_timeout_max_ms + self.election_timeout_min_ms)
    }

    /// Builds the openraft configuration of broker group `group` (the cluster name, which
    /// the network also sends with every call so that groups never mix).
    pub fn build(&self, group: &str) -> Result<Arc<openraft::Config>, RaftConfigError> {
        self.check()?;
        if group.is_empty() || !group.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(RaftConfigError::Invalid(format!(
                "group name {group:?} must be non-empty printable ASCII without spaces"
            )));
        }
        let config = openraft::Config {
            cluster_name: group.to_string(),
            heartbeat_interval: self.heartbeat_interval_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            enable_pre_vote: Some(self.pre_vote),
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_logs_since_last),
            // Never purge after a snapshot: bodies are only in the log (see module docs).
            max_in_snapshot_log_to_keep: u64::MAX,
            max_payload_entries: self.max_payload_entries,
            snapshot_max_chunk_size: self.snapshot_chunk_size,
            install_snapshot_timeout: self.install_snapshot_timeout_ms,
            backoff: self.unreachable_backoff.clone(),
            // A restarted leader runs an election like any node. Restoring its leadership in
            // the same term (openraft's default) lets it reuse log ids: its own unsynced tail
            // is gone after a power failure while a follower may have fsynced those entries,
            // and the follower then takes the new, different entries with the same ids as
            // already present — the replicas diverge silently (seen in a chaos run: queue
            // offsets one apart, receipts given twice). The state machine writes without a
            // WAL and `committed` is not fsynced, which openraft names as the conditions
            // under which restoring is unsafe anyway.
            enable_leader_restore: Some(false),
            // A follower whose log lost entries it had acknowledged (damage found at its
            // restart) is caught up again from where its log now ends, rather than the
            // leader stopping on a "reverted" log. Safe because such a follower takes no
            // part in elections until it holds everything committed (`vote_fence`).
            allow_log_reversion: Some(true),
            ..openraft::Config::default()
        };
        Ok(Arc::new(config.validate()?))
    }

    /// Rules of our own, on top of openraft's `validate`.
    fn check(&self) -> Result<(), RaftConfigError> {
        let invalid = |m: String| Err(RaftConfigError::Invalid(m));
        if self.heartbeat_interval_ms == 0 {
            return invalid("heartbeat_interval_ms must be positive".into());
        }
        if self.election_timeout_min_ms < MIN_HEARTBEATS_PER_ELECTION_TIMEOUT * self.heartbeat_interval_ms {
            return invalid(format!(
                "election_timeout_min_ms ({}) must be at least {MIN_HEARTBEATS_PER_ELECTION_TIMEOUT} heartbeat intervals ({} ms)",
                self.election_timeout_min_ms, self.heartbeat_interval_ms
            ));
        }
        if self.election_timeout_max_ms <= self.election_timeout_min_ms {
            return invalid(format!(
                "election_timeout_max_ms ({}) must exceed election_timeout_min_ms ({})",
                self.election_timeout_max_ms, self.election_timeout_min_ms
            ));
        }
        if self.snapshot_logs_since_last == 0 {
            return invalid("snapshot_logs_since_last must be positive".into());
        }
        if self.snapshot_chunk_size < 4096 {
            return invalid(format!(
                "snapshot_chunk_size ({}) must be at least 4096",
                self.snapshot_chunk_size
            ));
        }
        if self.install_snapshot_timeout_ms < self.election_timeout_max_ms {
            return invalid(format!(
                "install_snapshot_timeout_ms ({}) must not be below election_timeout_max_ms ({})",
                self.install_snapshot_timeout_ms, self.election_timeout_max_ms
            ));
        }
        Ok(())
    }

    /// Worst-case time from a leader's last heartbeat to the first election a follower
    /// starts (lease + the largest election timeout): the bound the failover budget is
    /// planned around.
    pub fn worst_case_election_start(&self) -> std::time::Duration {
        std::time::Duration::from_millis(2 * self.election_timeout_max_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_build_and_carry_the_documented_choices() {
        let c = RaftConfig::default().build("broker-a").expect("valid");
        assert_eq!(c.cluster_name, "broker-a");
        assert_eq!(c.heartbeat_interval, 100);
        assert_eq!((c.election_timeout_min, c.election_timeout_max), (600, 900));
        assert_eq!(c.enable_pre_vote, Some(true));
        assert_eq!(c.max_in_snapshot_log_to_keep, u64::MAX);
        assert_eq!(
            c.snapshot_policy,
            openraft::SnapshotPolicy::LogsSinceLast(100_000)
        );
        assert_eq!(c.snapshot_max_chunk_size, 1 << 20);
        assert_eq!(
            c.enable_leader_restore,
            Some(false),
            "a restarted leader is elected again"
        );
        // Leader death to first election stays well inside the 3 s failover goal.
        assert!(RaftConfig::default().worst_case_election_start() <= std::time::Duration::from_millis(1800));
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        let bad = RaftConfig {
            election_timeout_min_ms: 200,
            ..RaftConfig::default()
        };
        let e = bad.build("g").expect_err("too close to heartbeat");
        assert!(e.to_string().contains("heartbeat"), "{e}");

        let bad = RaftConfig {
            election_timeout_max_ms: 600,
            ..RaftConfig::default()
        };
        assert!(bad.build("g").is_err());

        let bad = RaftConfig {
            unreachable_backoff: "soon".into(),
            ..RaftConfig::default()
        };
        assert!(bad.build("g").is_err());

        assert!(RaftConfig::default().build("").is_err());
        assert!(RaftConfig::default().build("a b").is_err());
    }
}
