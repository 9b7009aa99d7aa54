//! Client-made message ids.
//!
//! An id is 32 upper-case hex digits: a random per-process tag (6 bytes), the low 16 bits
//! of the process id (2), seconds since 2021-01-01 UTC (4) and a counter starting at a
//! random value (4). Unique across processes and within one.
//!
//! The tag and the process id are taken once per process and kept, not asked of the kernel
//! per message (with a `getpid` each, making ids was 2 % of the benchmark client's
//! samples). A forked child must not keep its parent's: a `pthread_atfork` handler forgets
//! them in the child, which takes its own on its next id.

use std::sync::Once;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::SystemTime;
use std::time::UNIX_EPOCH;

/// Seconds of 2021-01-01T00:00:00Z since the Unix epoch.
const EPOCH_2021: u64 = 1_609_459_200;

/// Tag (high 6 bytes) and process id (low 2) of this process; 0: not taken yet.
static IDENTITY: AtomicU64 = AtomicU64::new(0);
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A new message id (see the module docs).
pub fn new_message_id() -> String {
    let identity = identity();
    let seq = COUNTER.fetch_add(1, Ordering::Relaxed);
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs().saturating_sub(EPOCH_2021));
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&identity.to_be_bytes());
    bytes[8..12].copy_from_slice(&(secs as u32).to_be_bytes());
    bytes[12..].copy_from_slice(&seq.to_be_bytes());
    raftmq_proto::digest::upper_hex(&bytes)
}

/// This process's tag and process id, taken on first use (again after a fork).
fn identity() -> u64 {
    let known = IDENTITY.load(Ordering::Acquire);
    if known != 0 {
        return known;
    }
    static AT_FORK: Once = Once::new();
    AT_FORK.call_once(|| {
        forget_in_forked_children();
        // The counter starts at a random value once per process image.
        COUNTER.fetch_add(rand::random(), Ordering::Relaxed);
    });
    let tag: [u8; 6] = rand::random();
    let pid = (std::process::id() as u16).to_be_bytes();
    let fresh = u64::from_be_bytes([tag[0], tag[1], tag[2], tag[3], tag[4], tag[5], pid[0], pid[1]]).max(1);
    match IDENTITY.compare_exchange(0, fresh, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => fresh,
        Err(other) => other,
    }
}

extern "C" fn forget_identity() {
    // An atomic store: async-signal-safe, as a handler in a forked child must be.
    IDENTITY.store(0, Ordering::Release);
}

#[allow(unsafe_code)]
fn forget_in_forked_children() {
    // SAFETY: registers a handler that only stores into an atomic; no pointers are kept
    // but the function's, which lives as long as the process.
    let rc = unsafe { libc::pthread_atfork(None, None, Some(forget_identity)) };
    if rc != 0 {
        tracing::warn!(
            errno = rc,
            "pthread_atfork failed: a forked child would reuse this process's message id tag"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test, not two: forgetting the identity would race with a test that compares
    /// the ids it takes.
    #[test]
    fn ids_are_unique_upper_hex_and_a_forked_child_takes_its_own_tag() {
        let a = new_message_id();
        let b = new_message_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())
        );
        assert_eq!(a[..16], b[..16], "tag and process id are the process's");
        let pid = format!("{:04X}", std::process::id() as u16);
        assert_eq!(a[12..16], pid);

        forget_identity(); // what the atfork handler does in a child
        let child = new_message_id();
        assert_ne!(a[..12], child[..12], "a new random tag");
        assert_eq!(a[12..16], child[12..16]);
    }
}
