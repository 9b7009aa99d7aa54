//! CPU time and peak memory of a process from `/proc` (parsing is sans-IO).
//!
//! CPU: `utime + stime` of `/proc/<pid>/stat` (fields 14 and 15, in clock ticks).
//! Peak RSS: `VmHWM` of `/proc/<pid>/status` (kB), the high-water mark since the process
//! started, which for a server started for one run is that run's peak.

use anyhow::Context;

/// utime + stime in ticks, from the text of `/proc/<pid>/stat`. The command name (field
/// 2) is in parentheses and may contain spaces, so fields are counted after the last `)`.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After ')' come field 3 (state) onwards; utime is field 14, stime 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `VmHWM` in bytes, from the text of `/proc/<pid>/status`.
pub fn parse_hwm_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// CPU seconds (user + system) used so far by `pid`.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let ticks = parse_stat_ticks(&text).with_context(|| format!("parse {path}"))?;
    Ok(ticks as f64 / ticks_per_sec())
}

/// Peak resident memory of `pid` so far, bytes.
pub fn peak_rss(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    parse_hwm_bytes(&text).with_context(|| format!("no VmHWM in {path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_in_the_name() {
        let stat = "4242 (raftmq broker) S 1 4242 4242 0 -1 4194560 1234 0 0 0 150 37 0 0 20 0 9 0 100 123456 789 18446744073709551615";
        assert_eq!(parse_stat_ticks(stat), Some(187));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn hwm_from_status() {
        let status = "Name:\tnats-server\nVmPeak:\t 2000 kB\nVmHWM:\t   51200 kB\nVmRSS:\t 40000 kB\n";
        assert_eq!(parse_hwm_bytes(status), Some(51200 * 1024));
        assert_eq!(parse_hwm_bytes("Name: x\n"), None);
    }

    #[test]
    fn this_process_is_readable() {
        let me = std::process::id();
        assert!(cpu_seconds(me).is_ok_and(|s| s >= 0.0));
        assert!(peak_rss(me).is_ok_and(|b| b > 0));
    }
}
