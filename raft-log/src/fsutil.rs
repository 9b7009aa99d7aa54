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
