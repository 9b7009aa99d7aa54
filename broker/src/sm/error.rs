//! Errors of the state machine.
//!
//! A deterministic refusal of a command is not an error: it is a
//! [`Rejection`](crate::command::Rejection) inside the command's result. [`SmError`] is
//! for what must stop the state machine (storage failure, corrupt data, a bad snapshot);
//! openraft sees it as a `std::io::Error`.

use std::io;
use std::path::PathBuf;

/// A failure of the state machine's storage.
#[derive(Debug, thiserror::Error)]
pub enum SmError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),

    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("column family {0} is missing")]
    MissingColumnFamily(&'static str),

    #[error("corrupt {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },

    #[error("cannot encode {what}: {detail}")]
    Encode { what: &'static str, detail: String },

    #[error("bad snapshot: {0}")]
    BadSnapshot(String),

    #[error("background task failed: {0}")]
    Task(String),

    /// A write that was told not to wait would have waited for RocksDB to catch up (a
    /// write stall); nothing was written. Only [`super::store::Stall::Refuse`] writes
    /// return it, and their callers retry where waiting is allowed.
    #[error("the write would wait for the database to catch up")]
    WouldStall,
}

impl SmError {
    /// An I/O error on `path` while doing `op`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub fn corrupt(what: &'static str, detail: impl std::fmt::Display) -> Self {
        Self::Corrupt {
            what,
            detail: detail.to_string(),
        }
    }

    pub fn encode(what: &'static str, detail: impl std::fmt::Display) -> Self {
        Self::Encode {
            what,
            detail: detail.to_string(),
        }
    }

    pub fn bad_snapshot(detail: impl std::fmt::Display) -> Self {
        Self::BadSnapshot(detail.to_string())
    }

    fn io_kind(&self) -> io::ErrorKind {
        match self {
            Self::Io { source, .. } => source.kind(),
            Self::Corrupt { .. } | Self::BadSnapshot(_) => io::ErrorKind::InvalidData,
            Self::Encode { .. } => io::ErrorKind::InvalidInput,
            _ => io::ErrorKind::Other,
        }
    }
}

impl From<SmError> for io::Error {
    fn from(e: SmError) -> Self {
        io::Error::new(e.io_kind(), e)
    }
}

/// Result of state machine operations.
pub type SmResult<T> = Result<T, SmError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_to_io_error_with_a_fitting_kind() {
        let e: io::Error = SmError::corrupt("cq entry", "short").into();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("cq entry"));
        let e: io::Error = SmError::io("open", "/x", io::Error::from(io::ErrorKind::NotFound)).into();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
