//! Small filesystem helpers with the durability rules of the log in one place.

use std::fs::File;
use std::io;
use std::path::Path;

/// Makes the creation, rename or removal of entries in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reserves `len` bytes of disk for `file` without changing what reads return (zeroes).
#[allow(unsafe_code)]
pub(crate) fn preallocate(file: &File, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::other("preallocation too large"))?;
    // SAFETY: the fd is valid for the lifetime of `file`; fallocate takes no pointers.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        // Filesystems without fallocate (e.g. some overlay or tmpfs setups): growing the
        // file length keeps reads of unwritten space returning zeroes.
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => file.set_len(len as u64),
        _ => Err(err),
    }
}

/// Turns the kernel's read-ahead for `file` off (`random`) or back on. Advice only.
///
/// The active segment is read right behind its end (replication, apply), and is
/// preallocated: read-ahead there would fill pages past the written end with zeroes,
/// pages the writer then fills again. A sealed segment gets read-ahead back for readers
/// catching up.
pub(crate) fn advise_random(file: &File, random: bool) {
    let advice = if random {
        libc::POSIX_FADV_RANDOM
    } else {
        libc::POSIX_FADV_NORMAL
    };
    fadvise(file, 0, 0, advice);
}

/// Asks the kernel to drop the clean pages of `[start, end)` of `file` (see
/// `page_cache.rs`). Advice only.
pub(crate) fn drop_pages(file: &File, start: u64, end: u64) {
    fadvise(file, start, end.saturating_sub(start), libc::POSIX_FADV_DONTNEED);
}

/// `posix_fadvise` on `[offset, offset + len)` (`len` 0: to the end). Advice only: a
/// failure changes nothing but memory use or read-ahead, so it is logged and ignored.
#[allow(unsafe_code)]
fn fadvise(file: &File, offset: u64, len: u64, advice: libc::c_int) {
    use std::os::fd::AsRawFd;
    let (Ok(off), Ok(n)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return;
    };
    // SAFETY: plain syscall on a valid fd; no pointers involved.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), off, n, advice) };
    if rc != 0 {
        tracing::debug!(
            errno = rc,
            offset,
            len,
            advice,
            "posix_fadvise on a segment failed"
        );
    }
}

/// Makes `[offset, offset + len)` read as zeroes without changing the file size, using the
/// cheapest way the filesystem offers. The caller fsyncs.
#[allow(unsafe_code)]
pub(crate) fn zero_range(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    if len == 0 {
        return Ok(());
    }
    let (off, n) = match (libc::off_t::try_from(offset), libc::off_t::try_from(len)) {
        (Ok(o), Ok(n)) => (o, n),
        _ => return Err(io::Error::other("range too large")),
    };
    for mode in [
        libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
    ] {
        // SAFETY: plain syscall on a valid fd; no pointers involved.
        if unsafe { libc::fallocate(file.as_raw_fd(), mode, off, n) } == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if !matches!(err.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)) {
            return Err(err);
        }
    }
    let size = file.metadata()?.len();
    let end = (offset + len).min(size);
    let zeros = vec![0u8; 1 << 20];
    let mut at = offset;
    while at < end {
        let n = (end - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}
