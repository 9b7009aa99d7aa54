//! Small file-system helpers: durable renames and directory syncs.

use std::fs;
use std::fs::File;
use std::io::Write;
use std::path::Path;

use super::error::SmError;
use super::error::SmResult;

/// fsyncs a directory, making renames and creations inside it durable.
pub fn fsync_dir(dir: &Path) -> SmResult<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| SmError::io("fsync dir", dir, e))
}

pub fn create_dir_all(dir: &Path) -> SmResult<()> {
    fs::create_dir_all(dir).map_err(|e| SmError::io("create dir", dir, e))
}

/// Removes a file or a directory tree; a missing path is fine.
pub fn remove_path(path: &Path) -> SmResult<()> {
    let r = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    r.map_err(|e| SmError::io("remove", path, e))
}

/// Renames `from` to `to` (same directory tree) and fsyncs the parent of `to`.
pub fn rename_durable(from: &Path, to: &Path) -> SmResult<()> {
    fs::rename(from, to).map_err(|e| SmError::io("rename", from, e))?;
    match to.parent() {
        Some(parent) => fsync_dir(parent),
        None => Ok(()),
    }
}

/// Replaces `path` with `bytes` atomically: write a sibling, fsync it, rename it over.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> SmResult<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(|e| SmError::io("create", &tmp, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| SmError::io("write", &tmp, e))?;
    drop(f);
    rename_durable(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_and_remove_path_tolerates_missing() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("f");
        write_atomic(&p, b"one")?;
        write_atomic(&p, b"two")?;
        assert_eq!(fs::read(&p)?, b"two");
        assert!(!p.with_extension("tmp").exists());
        remove_path(&p)?;
        remove_path(&p)?;
        let d = dir.path().join("d/e");
        create_dir_all(&d)?;
        fs::write(d.join("x"), b"x")?;
        remove_path(&dir.path().join("d"))?;
        assert!(!dir.path().join("d").exists());
        Ok(())
    }
}
