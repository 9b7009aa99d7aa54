//! Server processes started for one run: each is a child of this process, dies with it
//! (`PR_SET_PDEATHSIG`), and is killed by its own handle (never by name) when the
//! [`Servers`] holding it is dropped, so an error, a panic or Ctrl-C leaves nothing behind.

use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;

use crate::procstat;

/// Lines of a dead server's log shown in the error.
const LOG_TAIL_LINES: usize = 40;

/// The last `n` lines of the file at `path` (or why it could not be read).
fn log_tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read it: {e})"),
    }
}

/// The processes of one system under test.
#[derive(Debug, Default)]
pub struct Servers {
    children: Vec<Child>,
    /// Each child's log, by position in `children`.
    logs: Vec<PathBuf>,
}

impl Servers {
    /// Spawns `cmd` with its output appended to `log`.
    pub fn spawn(&mut self, mut cmd: Command, log: &Path) -> anyhow::Result<u32> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        cmd.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
        die_with_parent(&mut cmd);
        let child = cmd.spawn().with_context(|| format!("spawn {cmd:?}"))?;
        let pid = child.id();
        self.children.push(child);
        self.logs.push(log.to_path_buf());
        Ok(pid)
    }

    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// Fails if a process has exited; the error ends with the last lines of its log (the
    /// run's folder, and the log with it, is removed on the way out).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for (c, log) in self.children.iter_mut().zip(&self.logs) {
            if let Some(status) = c.try_wait()? {
                let tail = log_tail(log, LOG_TAIL_LINES);
                anyhow::bail!(
                    "server pid {} exited: {status}; last lines of {}:\n{tail}",
                    c.id(),
                    log.display()
                );
            }
        }
        Ok(())
    }

    /// CPU seconds used so far, summed over the processes.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        self.pids().into_iter().map(procstat::cpu_seconds).sum()
    }

    /// Peak resident memory of each process so far, bytes.
    pub fn peak_rss(&self) -> anyhow::Result<Vec<u64>> {
        self.pids().into_iter().map(procstat::peak_rss).collect()
    }

    /// SIGTERM each process, SIGKILL what is left after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        for c in &self.children {
            // SAFETY: kill(2) on the pid of our own unreaped child.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
            }
        }
        let deadline = std::time::Instant::now() + grace;
        for mut c in std::mem::take(&mut self.children) {
            while std::time::Instant::now() < deadline {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        self.logs.clear();
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for mut c in std::mem::take(&mut self.children) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_cmd: &mut Command) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_servers_error_ends_with_its_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("s.log");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("for i in $(seq 1 50); do echo line $i; done; exit 3");
        let mut servers = Servers::default();
        servers.spawn(cmd, &log).expect("spawn");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let err = loop {
            if let Err(e) = servers.check_alive() {
                break e.to_string();
            }
            assert!(std::time::Instant::now() < deadline, "sh did not exit");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(err.contains("exit status: 3"), "{err}");
        assert!(err.ends_with("line 50"), "{err}");
        assert!(err.contains("line 11\n") && !err.contains("line 10\n"), "{err}");
        assert!(log_tail(&dir.path().join("none"), 3).starts_with("(cannot read it"));
    }
}
