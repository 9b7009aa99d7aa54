//! Written through the page cache, the log keeps only the newest `page_cache_window`
//! bytes of durable data there: older pages of a segment are dropped once fsynced, and
//! with a window of 0 the kernel keeps them. Written directly (the default), its writes
//! leave no pages behind at all.

mod common;

use std::fs::File;
use std::path::Path;
use std::time::Duration;
use std::time::Instant;

use raft_log::CommitLog;
use raft_log::LogConfig;

const MIB: usize = 1 << 20;

/// Resident pages of `[start, end)` of `path` (rounded to pages), by `mincore`.
#[allow(unsafe_code)]
fn resident_pages(path: &Path, start: usize, end: usize) -> usize {
    use std::os::fd::AsRawFd;
    let file = File::open(path).expect("open segment");
    let page = 4096;
    let len = end - start;
    // SAFETY: a read-only shared mapping of an open file, unmapped below; `vec` has one
    // byte per page of the mapping, as mincore requires.
    unsafe {
        let addr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            start as libc::off_t,
        );
        assert_ne!(addr, libc::MAP_FAILED, "mmap");
        let mut vec = vec![0u8; len.div_ceil(page)];
        let rc = libc::mincore(addr, len, vec.as_mut_ptr());
        libc::munmap(addr, len);
        assert_eq!(rc, 0, "mincore");
        vec.iter().filter(|b| **b & 1 == 1).count()
    }
}

/// Appends 16 MiB in 32 durable appends of 512 KiB to a log keeping `window` bytes.
fn write_16_mib(window: u64, direct_io: bool) -> (tempfile::TempDir, CommitLog) {
    // On the target dir's disk: a tmpfs (often /tmp) has no page cache to drop.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let cfg = LogConfig {
        segment_size: 64 * MIB as u64,
        page_cache_window: window,
        direct_io,
        ..LogConfig::default()
    };
    let (log, _) = CommitLog::open(dir.path(), cfg).expect("open");
    for i in 1..=32 {
        common::append_with(&log, i, i + 1, 1, |_| vec![i as u8; MIB / 2]);
    }
    (dir, log)
}

#[test]
fn pages_older_than_the_window_leave_the_page_cache() {
    let (dir, _log) = write_16_mib(MIB as u64, false);
    let seg = &common::segments(dir.path())[0];
    // The sync thread drops pages right after it completes the appends' callbacks.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let old = resident_pages(seg, 0, 8 * MIB);
        if old == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{old} pages of the first 8 MiB still cached"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let newest = resident_pages(seg, 15 * MIB, 16 * MIB);
    assert!(newest > 0, "the newest MiB should still be cached");
}

#[test]
fn a_window_of_zero_leaves_the_page_cache_alone() {
    let (dir, log) = write_16_mib(0, false);
    drop(log);
    let seg = &common::segments(dir.path())[0];
    let old = resident_pages(seg, 0, 8 * MIB);
    assert!(old > 1024, "only {old} of 2048 pages of the first 8 MiB cached");
}

#[test]
fn direct_writes_leave_no_pages_behind() {
    let (dir, log) = write_16_mib(0, true);
    drop(log);
    let seg = &common::segments(dir.path())[0];
    // The target dir's filesystem takes O_DIRECT (ext4, xfs, btrfs); a window of 0 keeps
    // every page a buffered write would have left, so any page here came from a write
    // that went through the page cache. The header page is written buffered at creation.
    let cached = resident_pages(seg, 4096, 16 * MIB);
    assert_eq!(cached, 0, "{cached} pages of 16 MiB written directly are cached");
}
