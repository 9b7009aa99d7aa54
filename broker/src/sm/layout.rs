//! The state machine's directory.
//!
//! ```text
//! <root>/CURRENT_DB      name of the live database directory (replaced atomically)
//! <root>/db-NNNNNNNN/    the live RocksDB database
//! <root>/snapshot        the current snapshot archive (see `archive`)
//! <root>/tmp/            checkpoints, archives and unpacked snapshots in the making
//! ```
//!
//! Installing a snapshot unpacks it into a new `db-` directory and then switches
//! `CURRENT_DB`; a crash before the switch leaves the old database live, one after it the
//! new one. Whatever else lies around (`tmp/`, `db-` directories `CURRENT_DB` does not
//! name) is left over from an interrupted operation and removed at open.

use std::fs;
use std::path::Path;
use std::path::PathBuf;

use super::error::SmError;
use super::error::SmResult;
use super::fsutil;

const POINTER: &str = "CURRENT_DB";
const DB_PREFIX: &str = "db-";

/// Paths inside a state machine directory.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

fn db_name(generation: u64) -> String {
    format!("{DB_PREFIX}{generation:08}")
}

fn parse_generation(name: &str) -> Option<u64> {
    name.strip_prefix(DB_PREFIX)?.parse().ok()
}

impl Layout {
    /// Prepares `root` (creating it) and cleans up leftovers; returns the layout and the
    /// generation of the live database.
    pub fn open(root: &Path) -> SmResult<(Self, u64)> {
        fsutil::create_dir_all(root)?;
        let layout = Self {
            root: root.to_path_buf(),
        };
        let live = layout.read_pointer()?;
        fsutil::remove_path(&layout.tmp())?;
        fsutil::create_dir_all(&layout.tmp())?;
        for entry in fs::read_dir(root).map_err(|e| SmError::io("read dir", root, e))? {
            let entry = entry.map_err(|e| SmError::io("read dir", root, e))?;
            let name = entry.file_name();
            let stale = name
                .to_str()
                .and_then(parse_generation)
                .is_some_and(|g| g != live);
            if stale {
                tracing::info!(dir = %entry.path().display(), "removing a stale state machine database");
                fsutil::remove_path(&entry.path())?;
            }
        }
        Ok((layout, live))
    }

    fn read_pointer(&self) -> SmResult<u64> {
        let path = self.root.join(POINTER);
        match fs::read_to_string(&path) {
            Ok(s) => parse_generation(s.trim())
                .ok_or_else(|| SmError::corrupt("state machine pointer", format!("{path:?} holds {s:?}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.switch_to(0)?;
                Ok(0)
            }
            Err(e) => Err(SmError::io("read", path, e)),
        }
    }

    /// Makes database `generation` the live one (durably).
    pub fn switch_to(&self, generation: u64) -> SmResult<()> {
        fsutil::write_atomic(&self.root.join(POINTER), db_name(generation).as_bytes())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn db_dir(&self, generation: u64) -> PathBuf {
        self.root.join(db_name(generation))
    }

    pub fn snapshot_file(&self) -> PathBuf {
        self.root.join("snapshot")
    }

    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_keeps_the_live_database_and_removes_leftovers() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (layout, live) = Layout::open(dir.path())?;
        assert_eq!(live, 0);
        fs::create_dir_all(layout.db_dir(0))?;
        fs::create_dir_all(layout.db_dir(1))?;
        fs::write(layout.tmp().join("ckpt-1"), b"x")?;
        layout.switch_to(1)?;
        let (layout, live) = Layout::open(dir.path())?;
        assert_eq!(live, 1);
        assert!(layout.db_dir(1).exists());
        assert!(!layout.db_dir(0).exists());
        assert_eq!(fs::read_dir(layout.tmp())?.count(), 0);
        Ok(())
    }

    #[test]
    fn a_garbled_pointer_is_an_error() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        fs::write(dir.path().join(POINTER), b"nonsense")?;
        assert!(matches!(Layout::open(dir.path()), Err(SmError::Corrupt { .. })));
        Ok(())
    }
}
