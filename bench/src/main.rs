//! `raftmq-bench`: raftmq against NATS JetStream (default sync and `sync_interval:
//! always`) on the same machine, alternating the systems round by round, with the disk's
//! own limit measured in the same run. `scripts/bench.sh` builds, installs the peer and
//! runs this; results and commands are in `docs/BENCHMARKS.md`.

mod backlog;
mod disk_limit;
mod jetstream_driver;
mod procstat;
mod raftmq_driver;
mod report;
mod room;
mod run;
mod runner;
mod schedule;
mod servers;
mod stats;
mod workload;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::report::WorkloadResults;
use crate::schedule::System;

/// The load generator shares the machine with the systems it measures, so its own
/// allocator matters: with jemalloc (as in the broker) raftmq's client used 7.6 CPU-s per
/// million messages against 8.8-10.5 with glibc's in 4 pairs; JetStream's client, in this
/// binary too, gets the same allocator (docs/BENCHMARKS.md, "jemalloc").
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(about = "OpenMessaging-style benchmark: raftmq vs NATS JetStream, same machine, same run")]
struct Args {
    /// The short suite (1 KiB, windows 1024 and 64, 2 rounds).
    #[arg(long)]
    quick: bool,
    /// Rounds per workload (default 2 quick, 3 full).
    #[arg(long)]
    reps: Option<usize>,
    /// The nats-server executable (2.15.x).
    #[arg(long, env = "NATS_SERVER")]
    nats_server: Option<PathBuf>,
    /// Folder for the servers' temporary data (the disk under test).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    data_dir: PathBuf,
    /// Only workloads whose name contains this.
    #[arg(long)]
    only: Option<String>,
    /// Systems to run, comma-separated (raftmq, jetstream-sync, jetstream-default).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "raftmq,jetstream-sync,jetstream-default"
    )]
    systems: Vec<String>,
    /// Instead of the suite: raftmq's p99 send latency (1 KiB, window 64) on an empty
    /// group and again after a backlog of --backlog-msgs messages.
    #[arg(long)]
    backlog: bool,
    #[arg(long, default_value_t = 10_000_000)]
    backlog_msgs: u64,
    /// Messages per second of the suite's fixed-rate workload (1 KiB, window 1024). At a
    /// rate every system sustains, CPU-seconds per million messages compare builds with
    /// less noise than max-throughput runs.
    #[arg(long, default_value_t = 5_000)]
    fixed_rate: u64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // Dropping the running future on a signal drops its servers, which kills them.
    tokio::select! {
        r = real_main(&args) => r,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
        _ = term.recv() => anyhow::bail!("terminated"),
    }
}

async fn real_main(args: &Args) -> anyhow::Result<()> {
    let env = run::Env {
        nats_server: args.nats_server.clone(),
        data_dir: args.data_dir.clone(),
    };
    if args.backlog {
        return backlog::run(&env, args.backlog_msgs).await;
    }
    let systems: Vec<System> = args
        .systems
        .iter()
        .map(|s| System::parse(s).ok_or_else(|| anyhow::anyhow!("unknown system {s}")))
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(args.fixed_rate > 0, "--fixed-rate must be positive");
    let mut workloads = workload::suite(args.quick);
    for w in &mut workloads {
        if let workload::Rate::Fixed(r) = &mut w.rate {
            *r = args.fixed_rate;
        }
    }
    if let Some(only) = &args.only {
        workloads.retain(|w| w.name().contains(only.as_str()));
    }
    let reps = args.reps.unwrap_or(if args.quick { 2 } else { 3 });
    let results = suite(&env, &workloads, reps, &systems).await?;
    summary(&results);
    Ok(())
}

async fn suite(
    env: &run::Env,
    workloads: &[workload::Workload],
    reps: usize,
    systems: &[System],
) -> anyhow::Result<Vec<WorkloadResults>> {
    let mut results: Vec<WorkloadResults> = workloads
        .iter()
        .map(|w| WorkloadResults {
            name: w.name(),
            size: w.size,
            ..Default::default()
        })
        .collect();
    let plan = schedule::plan(workloads.len(), reps, systems);
    let mut last_round = None;
    for slot in plan {
        let w = &workloads[slot.workload];
        let res = &mut results[slot.workload];
        if last_round != Some((slot.workload, slot.round)) {
            last_round = Some((slot.workload, slot.round));
            let d = disk_limit::probe(&env.data_dir, 256 << 20, Duration::from_secs(1))?;
            eprintln!(
                "[{} round {}] disk: {:.0} MB/s fdatasync'd sequential, {:.0} small fdatasyncs/s",
                w.name(),
                slot.round + 1,
                d.seq_mb_s,
                d.small_fsyncs_s
            );
            res.disk.push(d);
        }
        let r = run::run(slot.system, w, env).await?;
        eprintln!(
            "  {:<18} {:>9.0} msgs/s  p99 {:>7.2} ms  e2e p99 {:>7.2} ms  errors {}  consumed {}/{}",
            slot.system.label(),
            r.msgs_s,
            r.send_p99,
            r.e2e_p99,
            r.errors,
            r.consumed,
            r.acked
        );
        res.push(slot.system, r);
    }
    Ok(results)
}

/// Tables, the goals, and last the ratio line for 1 KiB, window 1024.
fn summary(results: &[WorkloadResults]) {
    println!(
        "(latencies in ms; cpu_s/M: server CPU-seconds, all three nodes, per million messages; cli_cpu/M: the benchmark client's)"
    );
    for w in results {
        println!("{}", report::table(w));
    }
    let find = |name: &str| results.iter().find(|w| w.name == name);
    let mut ratio = None;
    if let Some(w) = find("1KiB-w1024-max") {
        let (_, sync) = w.ratios(System::JsAlways, |r| r.msgs_s);
        let (_, def) = w.ratios(System::JsDefault, |r| r.msgs_s);
        goal("1KiB w1024 msgs/s raftmq / jetstream-sync >= 3", sync, 3.0, true);
        goal(
            "1KiB w1024 msgs/s raftmq / jetstream-default >= 1",
            def,
            1.0,
            true,
        );
        ratio = sync;
    }
    if let Some(w) = find("1KiB-w64-max") {
        let (_, p99) = w.ratios(System::JsAlways, |r| r.send_p99);
        goal(
            "1KiB w64 p99 send latency raftmq / jetstream-sync <= 1",
            p99,
            1.0,
            false,
        );
    }
    if let Some(r) = ratio {
        println!("ratio_vs_jetstream_sync={r:.2}");
    }
}

fn goal(what: &str, got: Option<f64>, want: f64, at_least: bool) {
    let Some(g) = got else {
        println!("SKIP {what} (not measured)");
        return;
    };
    let ok = if at_least { g >= want } else { g <= want };
    println!(
        "{} {what} (median pairwise ratio {g:.2})",
        if ok { "PASS" } else { "MISS" }
    );
}
