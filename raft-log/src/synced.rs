//! The synced-length ledger behind [`crate::LogConfig::track_synced`] (test only).
//!
//! For every segment `S` the log keeps a side file `S.synced` holding, as decimal text, how
//! many leading bytes of `S` are known durable. It is rewritten (temp file + rename, so a
//! killed process never leaves a torn one) whenever that changes:
//! - for a new segment, once the file, its header and the directory are fsynced: the
//!   header's length. Not earlier: a segment whose directory entry was never fsynced is
//!   lost whole at a power failure, and a missing ledger says exactly that;
//! - after every data `fdatasync` of `S`: the end of the data written before it;
//! - after a truncation erased (zeroed and fsynced) the tail from offset `o`: `o`, since the
//!   bytes after it are zeroes on disk and later appends there are not durable yet;
//! - at open, for every segment recovery kept (it fsyncs them): the end of its records.
//!
//! When a segment is deleted its ledger goes too. A marker file [`MARKER`] says the
//! directory is tracked; an open with tracking off removes the marker and every ledger, so
//! stale lengths can never drive a later cut.
//!
//! The ledger itself is never fsynced. It only has to outlive a SIGKILL, after which the
//! harness runs [`crate::power_cut::cut_to_synced`] while the page cache is intact; the
//! simulated power failure happens then, below the log.

use std::ffi::OsString;
use std::io;
use std::path::Path;
use std::path::PathBuf;

/// Marks a log directory whose segments have ledgers.
pub(crate) const MARKER: &str = "SYNCED_TRACKING";
pub(crate) const SUFFIX: &str = ".synced";
const TMP_SUFFIX: &str = ".synced.tmp";

fn with_suffix(segment: &Path, suffix: &str) -> PathBuf {
    let mut s = OsString::from(segment.as_os_str());
    s.push(suffix);
    PathBuf::from(s)
}

/// Path of the ledger of `segment`.
pub(crate) fn ledger_path(segment: &Path) -> PathBuf {
    with_suffix(segment, SUFFIX)
}

/// Whether `name` is a ledger or a leftover temp file of one.
pub(crate) fn is_ledger_name(name: &str) -> bool {
    name.ends_with(SUFFIX) || name.ends_with(TMP_SUFFIX)
}

/// Records that the first `len` bytes of `segment` are durable.
pub(crate) fn record(segment: &Path, len: u64) -> io::Result<()> {
    let tmp = with_suffix(segment, TMP_SUFFIX);
    std::fs::write(&tmp, format!("{len}\n"))?;
    std::fs::rename(&tmp, ledger_path(segment))
}

/// Removes the ledger of a deleted segment.
pub(crate) fn forget(segment: &Path) -> io::Result<()> {
    match std::fs::remove_file(ledger_path(segment)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Reads a ledger file; `None` if it does not exist.
pub(crate) fn read(ledger: &Path) -> io::Result<Option<u64>> {
    let text = match std::fs::read_to_string(ledger) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    text.trim().parse().map(Some).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad synced-length ledger {}: {text:?}", ledger.display()),
        )
    })
}

/// Sets up a directory at open: with tracking on, writes the marker and the ledgers of the
/// `kept` segments (each fully fsynced by recovery up to `end`); with it off, removes any
/// marker and ledgers an earlier tracked run left.
pub(crate) fn at_open(dir: &Path, track: bool, kept: &[(PathBuf, u64)]) -> io::Result<()> {
    if !track {
        if dir.join(MARKER).exists() {
            remove_all(dir)?;
        }
        return Ok(());
    }
    std::fs::write(dir.join(MARKER), b"")?;
    for (path, end) in kept {
        record(path, *end)?;
    }
    Ok(())
}

/// Removes the marker and every ledger file of `dir`.
fn remove_all(dir: &Path) -> io::Result<()> {
    for ent in std::fs::read_dir(dir)? {
        let ent = ent?;
        if ent.file_name().to_str().is_some_and(is_ledger_name) {
            std::fs::remove_file(ent.path())?;
        }
    }
    std::fs::remove_file(dir.join(MARKER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_read_forget_roundtrip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let seg = dir.path().join("00000000000000000001.seg");
        let ledger = ledger_path(&seg);
        assert_eq!(read(&ledger).expect("read"), None);
        record(&seg, 64).expect("record");
        record(&seg, 4160).expect("record");
        assert_eq!(read(&ledger).expect("read"), Some(4160));
        assert!(is_ledger_name("00000000000000000001.seg.synced"));
        assert!(is_ledger_name("00000000000000000001.seg.synced.tmp"));
        assert!(!is_ledger_name("00000000000000000001.seg"));
        forget(&seg).expect("forget");
        forget(&seg).expect("forget twice");
        assert_eq!(read(&ledger).expect("read"), None);
        std::fs::write(&ledger, "12x").expect("write");
        assert!(
            read(&ledger).is_err(),
            "a malformed ledger is an error, not a guess"
        );
    }

    #[test]
    fn opening_untracked_removes_what_a_tracked_run_left() {
        let dir = tempfile::tempdir().expect("tempdir");
        let seg = dir.path().join("00000000000000000001.seg");
        at_open(dir.path(), true, &[(seg.clone(), 64)]).expect("tracked open");
        assert!(dir.path().join(MARKER).exists());
        assert_eq!(read(&ledger_path(&seg)).expect("read"), Some(64));
        at_open(dir.path(), false, &[]).expect("untracked open");
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}
