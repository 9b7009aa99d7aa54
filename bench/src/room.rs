//! Room on the data disk: a run refuses to start when what it may write does not fit,
//! rather than fill the disk part way (a broker whose log write fails with `ENOSPC` stops,
//! as it should, and the run then fails with a dead server instead of a figure).

use std::path::Path;

use crate::workload::Phase;
use crate::workload::Rate;
use crate::workload::Workload;

/// Free space a run leaves untouched, for everything else on the machine.
const SPARE: u64 = 2 << 30;
/// The preallocated first log segments of a group of three (1 GiB each).
const PREALLOCATED: u64 = 3 << 30;
/// A max-rate run is assumed to write at most this many messages a second…
const MAX_MSGS_PER_SEC: f64 = 200_000.0;
/// …and at most this many bytes of bodies a second (both above any run recorded here).
const MAX_BYTES_PER_SEC: f64 = 300e6;

/// Bytes `messages` take on the disk in a group of three (measured: 13 GB per node for 10
/// million 1 KiB messages).
pub fn stored_bytes(messages: u64, size: usize) -> u64 {
    messages * size as u64 * 3 / 10 * 13
}

/// At most the bytes one run of `w` writes to the disk of one system.
pub fn run_bytes(w: &Workload) -> u64 {
    let secs = (w.warmup + w.duration).as_secs_f64();
    let per_sec = match w.rate {
        Rate::Max => MAX_MSGS_PER_SEC.min(MAX_BYTES_PER_SEC / w.size.max(1) as f64),
        Rate::Fixed(r) => r as f64,
    };
    let backlog = match w.phase {
        Phase::Live => 0,
        Phase::CatchUp { messages } => messages,
    };
    stored_bytes((secs * per_sec) as u64 + backlog, w.size) + PREALLOCATED
}

/// Refuses to go on unless the disk of `dir` has `need` bytes free, and 2 GB to spare.
pub fn ensure(dir: &Path, need: u64, what: &str) -> anyhow::Result<()> {
    let free = free_bytes(dir)?;
    anyhow::ensure!(
        free > need + SPARE,
        "{what} needs ~{} GB on {} plus {} GB to spare; {} GB free",
        need >> 30,
        dir.display(),
        SPARE >> 30,
        free >> 30
    );
    Ok(())
}

fn free_bytes(path: &Path) -> anyhow::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: statvfs writes into the zeroed struct we pass; c is a valid C string.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
    anyhow::ensure!(
        rc == 0,
        "statvfs {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    Ok(s.f_bavail as u64 * s.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_run_is_sized_by_its_rate_its_length_and_its_backlog() {
        let (w, d) = (Duration::from_secs(2), Duration::from_secs(8));
        let one_kib = Workload::live(1024, 1024, Rate::Max, w, d);
        // 10 s at 200,000 msgs/s of 1 KiB, three replicas, plus three 1 GiB segments.
        assert_eq!(run_bytes(&one_kib), stored_bytes(2_000_000, 1024) + (3 << 30));
        let big = Workload::live(16 * 1024, 1024, Rate::Max, w, d);
        assert_eq!(
            run_bytes(&big),
            stored_bytes(183_105, 16 * 1024) + (3 << 30),
            "bytes bound it"
        );
        let fixed = Workload::live(1024, 64, Rate::Fixed(5_000), w, d);
        assert_eq!(run_bytes(&fixed), stored_bytes(50_000, 1024) + (3 << 30));
        let mut catch_up = one_kib.clone();
        catch_up.phase = Phase::CatchUp { messages: 200_000 };
        assert_eq!(
            run_bytes(&catch_up),
            run_bytes(&one_kib) + stored_bytes(200_000, 1024)
        );
    }

    #[test]
    fn a_disk_without_room_is_refused_with_the_figures() {
        let dir = tempfile::tempdir().expect("tempdir");
        ensure(dir.path(), 0, "nothing").expect("room for nothing");
        let err = ensure(dir.path(), u64::MAX / 4, "a huge run").expect_err("no room");
        assert!(err.to_string().starts_with("a huge run needs ~"), "{err}");
    }
}
