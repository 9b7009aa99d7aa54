//! The crate's one error type.

use std::io;

/// Everything that can go wrong while running a chaos test, or writing, reading or
/// checking a history.
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// Reading or writing the history file failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// A complete line of the history is not a valid record.
    #[error("history line {line}: {error}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// What the JSON decoder said.
        error: serde_json::Error,
    },
    /// A line is longer than any record the writer produces.
    #[error("history line {line}: longer than {max} bytes")]
    LineTooLong {
        /// 1-based line number.
        line: usize,
        /// The limit, [`crate::history::MAX_LINE_BYTES`].
        max: usize,
    },
    /// The end of an existing history file is neither a complete line nor a short torn one.
    #[error("history file ends in {bytes} bytes without a line break")]
    BadTail {
        /// Length of the unterminated tail that was looked at.
        bytes: usize,
    },
    /// A record could not be encoded (or its encoding exceeds the line limit).
    #[error("cannot encode history record: {0}")]
    Encode(serde_json::Error),
    /// The records parse but contradict the history's rules (e.g. a completion without
    /// an invocation); the harness that wrote them has a bug.
    #[error("invalid history at record {record}: {reason}")]
    Invalid {
        /// 1-based record number (the line number when read from a file).
        record: usize,
        /// What rule was broken.
        reason: String,
    },
    /// Starting, stopping or driving the cluster's processes failed.
    #[error("cluster: {action}: {detail}")]
    Cluster {
        /// What the runner was doing.
        action: String,
        /// The cause, with its chain.
        detail: String,
    },
    /// A client (producer or consumer) could not be started.
    #[error("client: {action}: {source}")]
    Client {
        /// What the runner was doing.
        action: String,
        /// The client's error.
        source: raftmq_client::ClientError,
    },
    /// The run's options or paths are unusable.
    #[error("setup: {0}")]
    Setup(String),
}

impl ChaosError {
    /// A [`ChaosError::Cluster`] from the test kit's error.
    pub(crate) fn cluster(action: impl Into<String>, err: &anyhow::Error) -> Self {
        Self::Cluster {
            action: action.into(),
            detail: format!("{err:#}"),
        }
    }
}
