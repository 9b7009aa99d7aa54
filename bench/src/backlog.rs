//! `--backlog`: does a large backlog slow raftmq's writes? p99 send latency of 1 KiB
//! messages at window 64 on an empty group, then after writing `messages` more (window
//! 1024, nobody consuming), on the same group; each measured several times, alternating
//! with a disk probe, medians compared (goal: at most +20 %).

use std::time::Duration;

use tokio::time::Instant;

use crate::disk_limit;
use crate::raftmq_driver::RaftmqCluster;
use crate::raftmq_driver::RaftmqSender;
use crate::run::Env;
use crate::runner;
use crate::runner::Bounds;
use crate::runner::Clock;
use crate::runner::Sender;
use crate::stats::median;
use crate::workload::Rate;
use crate::workload::Workload;

const SIZE: usize = 1024;
const SAMPLES: usize = 3;
const SAMPLE: Duration = Duration::from_secs(8);

/// Bytes the fill needs on the data disk: three replicas plus a tenth for the rest.
pub fn needed_bytes(messages: u64, size: usize) -> u64 {
    messages * size as u64 * 3 / 10 * 11
}

fn free_bytes(path: &std::path::Path) -> anyhow::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: statvfs writes into the zeroed struct we pass; c is a valid C string.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
    anyhow::ensure!(
        rc == 0,
        "statvfs {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    Ok(s.f_bavail as u64 * s.f_frsize as u64)
}

/// p99 send latency (ms) of each sample at window 64.
async fn samples(senders: &[RaftmqSender], env: &Env, label: &str) -> anyhow::Result<Vec<f64>> {
    let w = Workload::live(SIZE, 64, Rate::Max, Duration::from_secs(1), SAMPLE);
    let mut out = Vec::new();
    for i in 0..SAMPLES {
        let d = disk_limit::probe(&env.data_dir, 256 << 20, Duration::from_secs(1))?;
        let clock = Clock(Instant::now());
        let measure_from = Instant::now() + w.warmup;
        let b = Bounds {
            measure_from,
            stop_at: measure_from + w.duration,
            max_per_producer: u64::MAX,
        };
        let p = runner::produce(senders.to_vec(), &w, clock, b).await;
        let p99 = p.latency.quantile(0.99) as f64 / 1000.0;
        println!(
            "{label} sample {}: {:.0} msgs/s, p50 {:.2} ms, p99 {p99:.2} ms, errors {} (disk {:.0} MB/s, {:.0} fdatasyncs/s)",
            i + 1,
            p.measured_acks as f64 / w.duration.as_secs_f64(),
            p.latency.quantile(0.5) as f64 / 1000.0,
            p.errors,
            d.seq_mb_s,
            d.small_fsyncs_s
        );
        out.push(p99);
    }
    Ok(out)
}

pub async fn run(env: &Env, messages: u64) -> anyhow::Result<()> {
    let need = needed_bytes(messages, SIZE);
    let free = free_bytes(&env.data_dir)?;
    anyhow::ensure!(
        free > need + (5 << 30),
        "a backlog of {messages} x {SIZE} B needs ~{} GB on {} (3 replicas) plus 5 GB to spare; {} GB free",
        need >> 30,
        env.data_dir.display(),
        free >> 30
    );
    let c = RaftmqCluster::start(&env.data_dir).await?;
    let senders = c.producers(4).await?;
    let empty = samples(&senders, env, "empty").await?;
    let fill_w = Workload::live(SIZE, 1024, Rate::Max, Duration::ZERO, Duration::ZERO);
    let start = Instant::now();
    let b = Bounds {
        measure_from: start,
        stop_at: start + Duration::from_secs(3600),
        max_per_producer: messages.div_ceil(4),
    };
    let p = runner::produce(senders.clone(), &fill_w, Clock(start), b).await;
    println!(
        "fill: {} messages in {:.1} s ({:.0} msgs/s), errors {}",
        p.acks,
        start.elapsed().as_secs_f64(),
        p.acks as f64 / start.elapsed().as_secs_f64(),
        p.errors
    );
    let full = samples(&senders, env, "backlog").await?;
    for s in &senders {
        s.close().await;
    }
    let (e, f) = (
        median(&empty).unwrap_or(f64::NAN),
        median(&full).unwrap_or(f64::NAN),
    );
    let rise = f / e - 1.0;
    println!(
        "{} backlog {messages}: p99 send latency median {e:.2} ms empty, {f:.2} ms with backlog ({:+.0} %, goal <= +20 %)",
        if rise <= 0.2 { "PASS" } else { "MISS" },
        rise * 100.0
    );
    println!("backlog_p99_rise={rise:.2}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_million_kib_needs_about_34_gb() {
        let n = needed_bytes(10_000_000, 1024);
        assert!(n > 33_000_000_000 && n < 34_000_000_000, "{n}");
    }
}
