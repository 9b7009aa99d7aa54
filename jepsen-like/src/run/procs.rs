//! The signals the nemesis sends to the broker nodes this runner started (their pids come
//! from the test kit, which started them).

/// A signal the nemesis sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Stop the process (it cannot catch or ignore it).
    Stop,
    /// Let a stopped process go on.
    Cont,
    /// End the process at once.
    Kill,
}

/// Sends `signal` to `pid`.
pub fn signal(pid: i32, signal: Signal) -> std::io::Result<()> {
    let sig = match signal {
        Signal::Stop => libc::SIGSTOP,
        Signal::Cont => libc::SIGCONT,
        Signal::Kill => libc::SIGKILL,
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
    fn a_child_is_paused_and_resumed() -> std::io::Result<()> {
        let mut child = std::process::Command::new("sleep").arg("30").spawn()?;
        let pid = i32::try_from(child.id()).map_err(std::io::Error::other)?;
        let paused = signal(pid, Signal::Stop).and_then(|()| signal(pid, Signal::Cont));
        child.kill()?;
        child.wait()?;
        paused
    }
}
