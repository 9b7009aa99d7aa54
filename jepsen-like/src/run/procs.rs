//! Process ids of the broker nodes this runner started, and the signals it sends them.
//!
//! The test kit keeps each node's `Child` private, so a node's pid is found in `/proc`:
//! the one child *of this process* whose command line has `--data-dir <that node's
//! folder>`. Nothing else is ever signalled.

use std::path::Path;

/// The pid of this process's child started with `--data-dir data_dir`, if it runs.
pub fn child_with_data_dir(data_dir: &Path) -> Option<i32> {
    let me = std::process::id();
    let want = data_dir.as_os_str().as_encoded_bytes();
    let entries = std::fs::read_dir("/proc").ok()?;
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if parent_of(pid) != Some(me) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        if args
            .windows(2)
            .any(|w| w[0] == b"--data-dir".as_slice() && w[1] == want)
        {
            return Some(pid);
        }
    }
    None
}

/// The parent pid of `pid`, from `/proc/<pid>/stat`.
fn parent_of(pid: i32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses; it ends at the
    // last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// A signal the nemesis sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Stop the process (it cannot catch or ignore it).
    Stop,
    /// Let a stopped process go on.
    Cont,
}

/// Sends `signal` to `pid`.
pub fn signal(pid: i32, signal: Signal) -> std::io::Result<()> {
    let sig = match signal {
        Signal::Stop => libc::SIGSTOP,
        Signal::Cont => libc::SIGCONT,
    };
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::kill(pid, sig) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_is_found_by_its_data_dir_and_paused() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("node-1");
        // The shell keeps its arguments in its command line (`; true`: it does not exec).
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30; true", "sh", "--data-dir"])
            .arg(&data)
            .spawn()?;
        let pid = i32::try_from(child.id()).map_err(std::io::Error::other)?;
        // Just after the spawn the child may not have exec'ed yet.
        let mut found = None;
        for _ in 0..100 {
            found = child_with_data_dir(&data);
            if found.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(child_with_data_dir(&dir.path().join("node-2")).is_none());
        let paused = signal(pid, Signal::Stop).and_then(|()| signal(pid, Signal::Cont));
        child.kill()?;
        child.wait()?;
        assert_eq!(found, Some(pid));
        paused
    }
}
