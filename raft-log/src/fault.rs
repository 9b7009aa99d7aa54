//! Fault injection for tests: make the next fsyncs fail as a dying disk would.

use std::io;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering;

/// Shared switchboard consulted before every data fsync of the log.
#[derive(Debug, Default)]
pub struct FaultInjector {
    failing_syncs: AtomicU32,
}

impl FaultInjector {
    /// Makes the next `n` data fsyncs fail with an I/O error.
    pub fn fail_next_syncs(&self, n: u32) {
        self.failing_syncs.store(n, Ordering::SeqCst);
    }

    pub(crate) fn before_sync(&self) -> io::Result<()> {
        let take = self
            .failing_syncs
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        match take {
            Ok(_) => Err(io::Error::other("injected fsync failure")),
            Err(_) => Ok(()),
        }
    }
}
