//! The machine's own limit, measured in the same run, on the disk the servers write to:
//! sequential write bandwidth with `fdatasync` after every 1 MiB chunk, and the rate of
//! small (1 KiB) appends each followed by `fdatasync`. Three replicas share this one
//! disk, so the limit for a replicated log is a third of the bandwidth.
//!
//! The sequential probe drops its pages from the page cache once they are 16 MiB behind
//! (as raftmq's log does beyond its window). Otherwise it measures the kernel finding
//! fresh page-cache pages as much as the disk: on this VM a new page costs a host fault
//! on first touch, and the probe gave 210–330 MB/s growing the page cache against about
//! 1 GB/s recycling it.

use std::io::Write;
use std::path::Path;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;

/// What one probe measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DiskLimit {
    /// Sequential, fdatasync'd per 1 MiB: MB/s (10^6 bytes).
    pub seq_mb_s: f64,
    /// 1 KiB appends, one fdatasync each: per second.
    pub small_fsyncs_s: f64,
}

impl DiskLimit {
    /// The most messages of `size` bytes per second three replicas on this disk could
    /// write at the sequential bandwidth.
    pub fn replicated_msgs_s(&self, size: usize) -> f64 {
        if size == 0 {
            return 0.0;
        }
        self.seq_mb_s * 1e6 / 3.0 / size as f64
    }
}

const CHUNK: usize = 1 << 20;
/// How far behind the end the sequential probe drops its pages.
const KEEP_CACHED: u64 = 16 << 20;

/// Measures both, writing at most `max_bytes` (and for at most `max_time` each) into a
/// temporary file in `dir`, which is removed afterwards.
pub fn probe(dir: &Path, max_bytes: u64, max_time: Duration) -> anyhow::Result<DiskLimit> {
    let path = dir.join("disk-probe.tmp");
    let result = probe_file(&path, max_bytes, max_time);
    let _ = std::fs::remove_file(&path);
    result
}

fn probe_file(path: &Path, max_bytes: u64, max_time: Duration) -> anyhow::Result<DiskLimit> {
    let mut f = std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    let chunk = vec![0x5au8; CHUNK];
    let start = Instant::now();
    let mut written = 0u64;
    while written < max_bytes && start.elapsed() < max_time {
        f.write_all(&chunk).context("probe write")?;
        f.sync_data().context("probe fdatasync")?;
        written += CHUNK as u64;
        if written > KEEP_CACHED {
            drop_pages(&f, written - KEEP_CACHED - CHUNK as u64, CHUNK as u64);
        }
    }
    let seq_mb_s = written as f64 / 1e6 / start.elapsed().as_secs_f64().max(1e-9);
    let small = vec![0xa5u8; 1024];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < max_time / 2 && n < 100_000 {
        f.write_all(&small).context("probe write")?;
        f.sync_data().context("probe fdatasync")?;
        n += 1;
    }
    let small_fsyncs_s = n as f64 / start.elapsed().as_secs_f64().max(1e-9);
    Ok(DiskLimit {
        seq_mb_s,
        small_fsyncs_s,
    })
}

/// Drops the (clean, fdatasync'd) pages of `[offset, offset + len)`; advice only.
#[allow(unsafe_code)]
fn drop_pages(f: &std::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    if let (Ok(off), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) {
        // SAFETY: plain syscall on an open fd; no pointers involved.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), off, len, libc::POSIX_FADV_DONTNEED) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicated_limit_is_a_third() {
        let d = DiskLimit {
            seq_mb_s: 300.0,
            small_fsyncs_s: 1.0,
        };
        assert!((d.replicated_msgs_s(1000) - 100_000.0).abs() < 1e-6);
        assert_eq!(d.replicated_msgs_s(0), 0.0);
    }

    #[test]
    fn a_tiny_probe_runs_and_cleans_up() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let d = probe(dir.path(), 2 * CHUNK as u64, Duration::from_millis(200))?;
        assert!(d.seq_mb_s > 0.0 && d.small_fsyncs_s > 0.0);
        assert!(!dir.path().join("disk-probe.tmp").exists());
        Ok(())
    }
}
