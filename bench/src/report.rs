//! Results of runs, their medians and ratios, and the tables printed (sans-IO).

use std::fmt::Write as _;

use crate::disk_limit::DiskLimit;
use crate::schedule::System;
use crate::stats::median;
use crate::stats::pairwise_ratios;

/// What one run measured. Latencies in ms.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunResult {
    pub msgs_s: f64,
    pub mb_s: f64,
    pub send_p50: f64,
    pub send_p99: f64,
    pub send_p999: f64,
    pub send_max: f64,
    pub e2e_p50: f64,
    pub e2e_p99: f64,
    /// Server CPU seconds (all three nodes) per million messages acknowledged.
    pub cpu_s_per_m: f64,
    /// The benchmark client's own CPU seconds per million messages.
    pub client_cpu_s_per_m: f64,
    /// Peak RSS of each node, MiB.
    pub rss_mib: Vec<f64>,
    /// Catch-up: messages per second read from the backlog.
    pub drain_msgs_s: Option<f64>,
    pub acked: u64,
    pub consumed: u64,
    pub errors: u64,
}

/// Every round's result of one workload, per system (index = round).
#[derive(Debug, Clone, Default)]
pub struct WorkloadResults {
    pub name: String,
    pub size: usize,
    pub raftmq: Vec<RunResult>,
    pub js_always: Vec<RunResult>,
    pub js_default: Vec<RunResult>,
    pub disk: Vec<DiskLimit>,
}

impl WorkloadResults {
    pub fn of(&self, s: System) -> &[RunResult] {
        match s {
            System::Raftmq => &self.raftmq,
            System::JsAlways => &self.js_always,
            System::JsDefault => &self.js_default,
        }
    }

    pub fn push(&mut self, s: System, r: RunResult) {
        match s {
            System::Raftmq => self.raftmq.push(r),
            System::JsAlways => self.js_always.push(r),
            System::JsDefault => self.js_default.push(r),
        }
    }

    /// Pairwise (round by round) ratios raftmq / `other` of `f`, and their median.
    pub fn ratios(&self, other: System, f: impl Fn(&RunResult) -> f64) -> (Vec<f64>, Option<f64>) {
        let a: Vec<f64> = self.raftmq.iter().map(&f).collect();
        let b: Vec<f64> = self.of(other).iter().map(&f).collect();
        let r = pairwise_ratios(&a, &b);
        let m = median(&r);
        (r, m)
    }
}

fn med(rs: &[RunResult], f: impl Fn(&RunResult) -> f64) -> f64 {
    median(&rs.iter().map(f).collect::<Vec<_>>()).unwrap_or(f64::NAN)
}

fn rss_cell(rs: &[RunResult]) -> String {
    let nodes = rs.iter().map(|r| r.rss_mib.len()).max().unwrap_or(0);
    let per_node: Vec<String> = (0..nodes)
        .map(|i| {
            format!(
                "{:.0}",
                med(rs, |r| r.rss_mib.get(i).copied().unwrap_or(f64::NAN))
            )
        })
        .collect();
    per_node.join("/")
}

/// The header of a workload table.
pub const HEADER: &str = "system               msgs/s     MB/s  p50_ms  p99_ms p99.9_ms  max_ms e2e_p50 e2e_p99 cpu_s/M cli_cpu/M rss_MiB(n1/n2/n3) drain/s  errors";

/// One row: the medians of a system's rounds.
pub fn row(s: System, rs: &[RunResult]) -> String {
    let drain = med(rs, |r| r.drain_msgs_s.unwrap_or(f64::NAN));
    let drain = if drain.is_nan() {
        "-".to_owned()
    } else {
        format!("{drain:.0}")
    };
    let errors: u64 = rs.iter().map(|r| r.errors).sum();
    format!(
        "{:<18} {:>9.0} {:>8.2} {:>7.2} {:>7.2} {:>8.2} {:>7.1} {:>7.2} {:>7.2} {:>7.1} {:>9.1} {:>17} {:>7} {:>7}",
        s.label(),
        med(rs, |r| r.msgs_s),
        med(rs, |r| r.mb_s),
        med(rs, |r| r.send_p50),
        med(rs, |r| r.send_p99),
        med(rs, |r| r.send_p999),
        med(rs, |r| r.send_max),
        med(rs, |r| r.e2e_p50),
        med(rs, |r| r.e2e_p99),
        med(rs, |r| r.cpu_s_per_m),
        med(rs, |r| r.client_cpu_s_per_m),
        rss_cell(rs),
        drain,
        errors,
    )
}

fn list(xs: &[f64]) -> String {
    xs.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(" ")
}

fn opt(x: Option<f64>) -> String {
    x.map_or("-".to_owned(), |x| format!("{x:.2}"))
}

/// The table of one workload: medians per system, the disk's limit, pairwise ratios.
pub fn table(w: &WorkloadResults) -> String {
    let mut out = String::new();
    let rounds = System::ALL.iter().map(|s| w.of(*s).len()).max().unwrap_or(0);
    let _ = writeln!(out, "== {} ({rounds} rounds; medians) ==", w.name);
    let _ = writeln!(out, "{HEADER}");
    for s in System::ALL {
        if !w.of(s).is_empty() {
            let _ = writeln!(out, "{}", row(s, w.of(s)));
        }
    }
    let seq = median(&w.disk.iter().map(|d| d.seq_mb_s).collect::<Vec<_>>());
    let small = median(&w.disk.iter().map(|d| d.small_fsyncs_s).collect::<Vec<_>>());
    if let (Some(seq), Some(small)) = (seq, small) {
        let lim = DiskLimit {
            seq_mb_s: seq,
            small_fsyncs_s: small,
        };
        let _ = writeln!(
            out,
            "machine limit: fdatasync'd sequential write {seq:.0} MB/s, /3 = {:.0} msgs/s of {} B; 1 KiB append+fdatasync {small:.0}/s",
            lim.replicated_msgs_s(w.size),
            w.size
        );
        let raft = med(&w.raftmq, |r| r.msgs_s);
        let _ = writeln!(
            out,
            "raftmq / machine limit (msgs/s): {:.2}",
            raft / lim.replicated_msgs_s(w.size)
        );
    }
    for other in [System::JsAlways, System::JsDefault] {
        if w.of(other).is_empty() || w.raftmq.is_empty() {
            continue;
        }
        let (tp, tpm) = w.ratios(other, |r| r.msgs_s);
        let (p99, p99m) = w.ratios(other, |r| r.send_p99);
        let _ = writeln!(
            out,
            "raftmq / {:<17} msgs/s: {} (median {})   p99 send latency: {} (median {})",
            other.label(),
            list(&tp),
            opt(tpm),
            list(&p99),
            opt(p99m)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(msgs_s: f64, p99: f64) -> RunResult {
        RunResult {
            msgs_s,
            send_p99: p99,
            rss_mib: vec![100.0, 90.0, 80.0],
            ..Default::default()
        }
    }

    #[test]
    fn ratios_are_pairwise_with_medians() {
        let mut w = WorkloadResults {
            name: "1KiB-w1024-max".into(),
            size: 1024,
            ..Default::default()
        };
        for (a, b) in [(300.0, 100.0), (200.0, 200.0), (900.0, 100.0)] {
            w.push(System::Raftmq, r(a, 1.0));
            w.push(System::JsAlways, r(b, 2.0));
        }
        let (rs, m) = w.ratios(System::JsAlways, |r| r.msgs_s);
        assert_eq!(rs, vec![3.0, 1.0, 9.0]);
        assert_eq!(m, Some(3.0));
        assert_eq!(w.ratios(System::JsAlways, |r| r.send_p99).1, Some(0.5));
        assert_eq!(w.ratios(System::JsDefault, |r| r.msgs_s).1, None);
    }

    #[test]
    fn table_lists_systems_limit_and_ratios() {
        let mut w = WorkloadResults {
            name: "x".into(),
            size: 1000,
            ..Default::default()
        };
        w.push(System::Raftmq, r(50_000.0, 3.0));
        w.push(System::JsAlways, r(10_000.0, 6.0));
        w.disk.push(DiskLimit {
            seq_mb_s: 300.0,
            small_fsyncs_s: 2000.0,
        });
        let t = table(&w);
        assert!(t.contains("raftmq "), "{t}");
        assert!(t.contains("jetstream-sync"), "{t}");
        assert!(!t.contains("jetstream-default "), "{t}");
        assert!(t.contains("/3 = 100000 msgs/s"), "{t}");
        assert!(t.contains("raftmq / machine limit (msgs/s): 0.50"), "{t}");
        assert!(t.contains("msgs/s: 5.00 (median 5.00)"), "{t}");
        assert!(t.contains("100/90/80"), "{t}");
    }
}
