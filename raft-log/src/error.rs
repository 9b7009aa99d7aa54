//! The crate's one error type.

use std::io;
use std::path::PathBuf;

/// What exactly was wrong with bytes read from disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    #[error("record shorter than its header claims")]
    Truncated,
    #[error("bad magic")]
    BadMagic,
    #[error("unknown format version {0}")]
    BadVersion(u8),
    #[error("unknown entry kind {0}")]
    BadKind(u8),
    #[error("implausible payload length {0}")]
    BadLength(u32),
    #[error("checksum mismatch")]
    Checksum,
    #[error("index {found} where {expected} was expected")]
    IndexGap { expected: u64, found: u64 },
    #[error("term decreased from {prev} to {found}")]
    TermDecrease { prev: u64, found: u64 },
    #[error("stale write epoch {found} after {prev}")]
    StaleEpoch { prev: u64, found: u64 },
    #[error("bad slot table")]
    BadSlots,
}

/// Errors of the commit log.
///
/// `Poisoned`, `Corrupt` and `Io` are fatal for the node's log: the operator has to look.
/// `Purged`, `NotFound` and `OutOfOrder` describe the request, not the log's health.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An earlier write or fsync failed; the on-disk state is unknown, so the log refuses
    /// every later call instead of retrying silently.
    #[error("commit log is poisoned after an earlier I/O failure: {0}")]
    Poisoned(String),
    #[error("corrupt record at index {index} in {path}: {what}")]
    Corrupt {
        index: u64,
        path: PathBuf,
        what: Corruption,
    },
    #[error("log index {index} was purged; the first retained index is {first}")]
    Purged { index: u64, first: u64 },
    #[error("log index {index} is beyond the last index {last:?}")]
    NotFound { index: u64, last: Option<u64> },
    #[error("append of index {got} out of order; the next index is {expected}")]
    OutOfOrder { expected: u64, got: u64 },
    #[error("append of index {index} with term {term} after term {last_term}")]
    TermRegression { index: u64, term: u64, last_term: u64 },
    #[error("cannot truncate after {after}: entries up to {purged} are purged")]
    BelowPurged { after: u64, purged: u64 },
    #[error("record of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("slot {slot} out of range: entry {index} has {count} slots")]
    NoSuchSlot { index: u64, slot: u32, count: u32 },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot decode entry {index}: {what}")]
    Decode { index: u64, what: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl LogError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        LogError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// True when the log itself is unusable (as opposed to a bad request).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            LogError::Poisoned(_) | LogError::Corrupt { .. } | LogError::Io { .. }
        )
    }
}

impl From<LogError> for io::Error {
    fn from(e: LogError) -> Self {
        let kind = match &e {
            LogError::Io { source, .. } => source.kind(),
            LogError::Corrupt { .. } | LogError::Decode { .. } => io::ErrorKind::InvalidData,
            LogError::Purged { .. } | LogError::NotFound { .. } | LogError::NoSuchSlot { .. } => {
                io::ErrorKind::NotFound
            }
            LogError::OutOfOrder { .. }
            | LogError::TermRegression { .. }
            | LogError::BelowPurged { .. }
            | LogError::TooLarge { .. }
            | LogError::Config(_) => io::ErrorKind::InvalidInput,
            LogError::Poisoned(_) => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

pub type Result<T, E = LogError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fatal_errors_are_those_of_the_log_not_of_the_request() {
        let io = || std::io::Error::other("disk");
        assert!(LogError::Poisoned("x".into()).is_fatal());
        assert!(LogError::io("write", "/d", io()).is_fatal());
        let corrupt = LogError::Corrupt {
            index: 1,
            path: "/d".into(),
            what: Corruption::Checksum,
        };
        assert!(corrupt.is_fatal());
        assert!(!LogError::Purged { index: 1, first: 5 }.is_fatal());
        assert!(
            !LogError::NotFound {
                index: 9,
                last: Some(3)
            }
            .is_fatal()
        );
        assert!(!LogError::OutOfOrder { expected: 2, got: 5 }.is_fatal());
        assert_eq!(
            std::io::Error::from(LogError::Purged { index: 1, first: 5 }).kind(),
            std::io::ErrorKind::NotFound
        );
    }
}
