//! Ports for the processes under test, chosen so that two tests never get the same one.
//!
//! Binding port 0 and closing the socket again leaves a window before the process under
//! test binds the port. In that window the kernel may hand the same port to another
//! test's bind, or to an outgoing connection as its local port: both come from the
//! ephemeral range. A node that then fails to bind exits at start, and its group has no
//! leader. So a port here is
//! - below the kernel's ephemeral range (`ip_local_port_range`), which outgoing
//!   connections never use;
//! - reserved across processes by an exclusive lock on a file in the temporary folder,
//!   held until this process exits, so concurrent test processes (nextest runs each test
//!   in one) skip it;
//! - bindable right now, so no unrelated program holds it.
//!
//! If the ephemeral range starts too low to leave room below it, ports come from binding
//! port 0 as before.

use std::fs::File;
use std::net::Ipv4Addr;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

use anyhow::Context;

/// The lowest port handed out.
const LOWEST: u16 = 10_000;
/// Fewest ports below the ephemeral range worth using.
const MIN_RANGE: u16 = 2_000;

/// Lock files of the ports this process reserved; dropped (unlocked) when it exits.
static RESERVED: Mutex<Vec<File>> = Mutex::new(Vec::new());
/// How many candidates this process has tried; the next try starts after them.
static TRIED: AtomicU64 = AtomicU64::new(0);

/// A port on `ip` that no other test (of this process or another) gets, free right now.
pub fn free_port_on(ip: Ipv4Addr) -> anyhow::Result<u16> {
    let Some(range) = reservable_range() else {
        return Ok(TcpListener::bind((ip, 0))?.local_addr()?.port());
    };
    let span = u64::from(range.1 - range.0);
    let start = seed() % span;
    let dir = lock_dir()?;
    for _ in 0..span {
        let n = TRIED.fetch_add(1, Ordering::Relaxed);
        let port = range.0 + ((start + n) % span) as u16;
        if let Some(lock) = reserve(&dir, port)?
            && TcpListener::bind((ip, port)).is_ok()
        {
            RESERVED.lock().unwrap_or_else(|p| p.into_inner()).push(lock);
            return Ok(port);
        }
    }
    anyhow::bail!("no free port in {}..{} on {ip}", range.0, range.1)
}

/// `LOWEST..` the start of the ephemeral range, if that leaves at least [`MIN_RANGE`].
fn reservable_range() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let low: u16 = text.split_whitespace().next()?.parse().ok()?;
    (low >= LOWEST + MIN_RANGE).then_some((LOWEST, low))
}

/// Where the lock files live (shared by every test process of this user).
fn lock_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join("raftmq-test-ports");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

/// The lock of `port`, if no other process holds it.
fn reserve(dir: &std::path::Path, port: u16) -> anyhow::Result<Option<File>> {
    let path = dir.join(format!("{port}.lock"));
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("lock {}", path.display())),
    }
}

/// Where in the range this process starts looking: differs between processes started
/// at the same time, so they rarely compete for the same locks.
fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    u64::from(std::process::id()).wrapping_mul(7_919) ^ u64::from(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_free_and_locked_against_other_processes() {
        let ports: Vec<u16> = (0..20)
            .map(|_| free_port_on(Ipv4Addr::LOCALHOST).expect("port"))
            .collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "{ports:?}");
        let Some((low, high)) = reservable_range() else {
            return;
        };
        let dir = lock_dir().expect("lock dir");
        for p in ports {
            assert!((low..high).contains(&p), "{p} outside {low}..{high}");
            // A second open file description is what another process would hold.
            assert!(reserve(&dir, p).expect("try").is_none(), "port {p} is locked");
            TcpListener::bind((Ipv4Addr::LOCALHOST, p)).expect("still bindable");
        }
    }
}
