//! [`NetworkConfig`]: the transport tunables of the Raft network, their defaults and the
//! rules they must obey.

use std::time::Duration;

use serde::Deserialize;
use serde::Serialize;
use tonic::transport::Endpoint;

pub(super) const MIB: usize = 1 << 20;

/// Transport tunables of the Raft network; both ends of a group must agree on
/// `max_message_size`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// Largest gRPC message either end sends or accepts, in bytes. One log entry always
    /// travels in one message, so this must exceed the commit log's largest entry
    /// (`LogConfig::max_record_size`, 64 MiB by default). Default 68 MiB: it is a limit,
    /// not an allocation; requests are normally cut far below it.
    pub max_message_size: usize,
    /// AppendEntries requests whose encoding exceeds this many bytes are cut into
    /// several consecutive requests. Default 4 MiB: large enough to amortize per-message
    /// costs, small enough that one message does not hold a connection for long.
    pub append_piece_budget: usize,
    /// Unanswered bytes allowed on one replication stream before the sender waits.
    /// Default 32 MiB.
    pub max_inflight_bytes: usize,
    /// Time to establish a TCP connection, in ms. Default 1000.
    pub connect_timeout_ms: u64,
    /// HTTP/2 keep-alive ping interval on idle and busy connections, in ms; a connection
    /// whose ping is not answered within `keepalive_timeout_ms` is closed, which fails
    /// its calls (a silent peer is detected even without traffic). Replication links use
    /// it (rounded up to whole seconds) as TCP keep-alive idle time and probe interval,
    /// with three probes. Default 1000.
    pub keepalive_interval_ms: u64,
    /// Default 2000.
    pub keepalive_timeout_ms: u64,
    /// Least time a replication stream waits for the next answer, in ms (see the module
    /// docs). Default 1000.
    pub stream_response_timeout_floor_ms: u64,
    /// Transfer rate assumed when granting extra time to large messages, in bytes/s: a
    /// message of `n` bytes gets `n / rate` on top of its timeout. Default 10 MiB/s.
    pub min_throughput_bytes_per_sec: u64,
    /// HTTP/2 flow-control window of one stream, in bytes. Default 8 MiB, so that a
    /// multi-MiB piece flows without waiting for window updates.
    pub stream_window_bytes: u32,
    /// HTTP/2 flow-control window of a connection, in bytes. Default 16 MiB.
    pub connection_window_bytes: u32,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            max_message_size: 68 * MIB,
            append_piece_budget: 4 * MIB,
            max_inflight_bytes: 32 * MIB,
            connect_timeout_ms: 1000,
            keepalive_interval_ms: 1000,
            keepalive_timeout_ms: 2000,
            stream_response_timeout_floor_ms: 1000,
            min_throughput_bytes_per_sec: 10 * MIB as u64,
            stream_window_bytes: 8 * MIB as u32,
            connection_window_bytes: 16 * MIB as u32,
        }
    }
}

/// A network configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid raft network config: {0}")]
pub struct NetworkConfigError(pub(super) String);

/// Room for everything in an AppendEntries message but the entry itself.
pub(super) const ENTRY_ENVELOPE: usize = 64 * 1024;

impl NetworkConfig {
    /// Checks the rules between fields and against what the network must carry: entries
    /// of up to `max_entry_size` bytes (the commit log's `max_record_size`) and snapshot
    /// chunks of `snapshot_chunk_size` bytes (`RaftConfig::snapshot_chunk_size`).
    pub fn validate(&self, max_entry_size: u64, snapshot_chunk_size: u64) -> Result<(), NetworkConfigError> {
        let fail = |m: String| Err(NetworkConfigError(m));
        let limit = self.max_message_size as u64;
        if max_entry_size + ENTRY_ENVELOPE as u64 > limit {
            return fail(format!(
                "max_message_size ({limit}) must exceed the largest log entry ({max_entry_size}) by at least {ENTRY_ENVELOPE} bytes"
            ));
        }
        if snapshot_chunk_size + ENTRY_ENVELOPE as u64 > limit {
            return fail(format!(
                "snapshot chunks of {snapshot_chunk_size} bytes do not fit max_message_size ({limit})"
            ));
        }
        if self.append_piece_budget < ENTRY_ENVELOPE || self.append_piece_budget > self.max_message_size {
            return fail(format!(
                "append_piece_budget ({}) must lie between {ENTRY_ENVELOPE} and max_message_size ({limit})",
                self.append_piece_budget
            ));
        }
        if self.max_inflight_bytes < self.append_piece_budget {
            return fail(format!(
                "max_inflight_bytes ({}) must be at least append_piece_budget ({})",
                self.max_inflight_bytes, self.append_piece_budget
            ));
        }
        if self.max_inflight_bytes > u32::MAX as usize {
            return fail(format!(
                "max_inflight_bytes ({}) must stay below 4 GiB",
                self.max_inflight_bytes
            ));
        }
        if self.connect_timeout_ms == 0 || self.keepalive_interval_ms == 0 || self.keepalive_timeout_ms == 0 {
            return fail("connect and keep-alive timeouts must be positive".into());
        }
        if self.min_throughput_bytes_per_sec == 0 {
            return fail("min_throughput_bytes_per_sec must be positive".into());
        }
        if self.stream_window_bytes < 65_535 || self.connection_window_bytes < self.stream_window_bytes {
            return fail(
                "HTTP/2 windows must be at least 65535 bytes, the connection's at least the stream's".into(),
            );
        }
        Ok(())
    }

    /// Extra time for moving `bytes` at the assumed minimum rate.
    pub(super) fn transfer_allowance(&self, bytes: usize) -> Duration {
        Duration::from_secs_f64(bytes as f64 / self.min_throughput_bytes_per_sec.max(1) as f64)
    }

    pub(super) fn endpoint(&self, addr: &str) -> Result<Endpoint, tonic::transport::Error> {
        Ok(Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_millis(self.connect_timeout_ms))
            .tcp_nodelay(true)
            .max_frame_size(raftmq_proto::H2_MAX_FRAME_BYTES)
            .http2_keep_alive_interval(Duration::from_millis(self.keepalive_interval_ms))
            .keep_alive_timeout(Duration::from_millis(self.keepalive_timeout_ms))
            .keep_alive_while_idle(true)
            .initial_stream_window_size(self.stream_window_bytes)
            .initial_connection_window_size(self.connection_window_bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_carries_the_commit_logs_largest_entry_and_one_chunk() {
        let cfg = NetworkConfig::default();
        cfg.validate(64 << 20, 1 << 20).expect("defaults are valid");
        let e = cfg
            .validate(70 << 20, 1 << 20)
            .expect_err("entry above the message limit");
        assert!(e.to_string().contains("largest log entry"), "{e}");
        let small = NetworkConfig {
            append_piece_budget: 100 << 20,
            ..NetworkConfig::default()
        };
        assert!(small.validate(1 << 20, 1 << 20).is_err());
    }

    #[test]
    fn transfer_allowance_scales_with_size() {
        let cfg = NetworkConfig::default();
        assert_eq!(cfg.transfer_allowance(0), Duration::ZERO);
        assert_eq!(cfg.transfer_allowance(10 * MIB), Duration::from_secs(1));
    }
}
