//! Fault injection for tests: make the next fsyncs fail as a dying disk would, or hold
//! them back so that appended data stays in the page cache, not yet durable.

use std::io;
use std::sync::Condvar;
use std::sync::Mutex;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering;

/// Shared switchboard consulted before every data fsync of the log.
#[derive(Debug, Default)]
pub struct FaultInjector {
    failing_syncs: AtomicU32,
    held: Mutex<bool>,
    released: Condvar,
}

impl FaultInjector {
    /// Makes the next `n` data fsyncs fail with an I/O error.
    pub fn fail_next_syncs(&self, n: u32) {
        self.failing_syncs.store(n, Ordering::SeqCst);
    }

    /// Makes data fsyncs wait until [`FaultInjector::release_syncs`]. Appends go on being
    /// written into the page cache but none completes: a test can then "kill" the log
    /// with `fail_next_syncs(u32::MAX)` followed by `release_syncs()`, which poisons it
    /// without syncing anything more. Release before dropping the log, or the drop waits
    /// forever for its sync thread.
    pub fn hold_syncs(&self) {
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = true;
    }

    /// Lets held and later fsyncs proceed.
    pub fn release_syncs(&self) {
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = false;
        self.released.notify_all();
    }

    pub(crate) fn before_sync(&self) -> io::Result<()> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        while *held {
            held = self.released.wait(held).unwrap_or_else(|p| p.into_inner());
        }
        drop(held);
        let take = self
            .failing_syncs
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        match take {
            Ok(_) => Err(io::Error::other("injected fsync failure")),
            Err(_) => Ok(()),
        }
    }
}
