//! `raftmq-chaos`: runs a chaos test against a cluster it starts (`run`), or checks a
//! history written before (`check`), and prints the report.
//!
//! Exit status: 0 when the check passes, 1 when it fails (a lost message, an order
//! violation, an offset regression, an unexpected delivery; for `run` also a broker that
//! exited by itself), 2 when the run cannot be carried out or the history cannot be read
//! or breaks its own rules, 130 when a run was interrupted (Ctrl-C, SIGTERM).

use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use clap::Subcommand;
use raftmq_chaos::duration::parse_duration;
use raftmq_chaos::run::RunOptions;
use raftmq_chaos::run::producers::ProducerPlan;
use raftmq_chaos::run::schedule::FaultKind;
use tokio::sync::watch;

/// Chaos tests for raftmq: lost, duplicated and reordered messages, committed offsets,
/// and recovery times per fault kind.
#[derive(Debug, Parser)]
#[command(name = "raftmq-chaos", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a cluster, run producers, consumers and the nemesis, then check.
    Run(RunArgs),
    /// Check a history file and print the report.
    Check {
        /// History file, one JSON record per line.
        #[arg(long, value_name = "PATH")]
        history: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// How long the workload and the nemesis run (`45s`, `10m`, `1h`); healing,
    /// draining and checking take up to a minute more.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Seed of the fault schedule (random if not given; printed either way).
    #[arg(long)]
    seed: Option<u64>,
    /// Broker groups of three nodes.
    #[arg(long, default_value_t = 1)]
    groups: usize,
    /// History file to write (must not exist) [default: <target>/chaos/<UTC
    /// time>/history.jsonl, <target> being the folder above this binary's].
    #[arg(long, value_name = "PATH")]
    history: Option<PathBuf>,
    /// Producer clients.
    #[arg(long, default_value_t = 4)]
    producers: usize,
    /// Sharding keys per producer.
    #[arg(long, default_value_t = 4)]
    keys_per_producer: usize,
    /// Sends per second, all producers together.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Members of the consumer group.
    #[arg(long, default_value_t = 2)]
    consumers: usize,
    /// Fault kinds, comma-separated (kill-leader, kill-node, pause-leader, kill-namesrv,
    /// partition-leader, partition-leader-in, partition-leader-out, partition-follower),
    /// `all` (every kind this machine can inject: partitions need root, `ip` and
    /// `iptables`), or `none`.
    #[arg(long, default_value = "all")]
    faults: String,
    /// Inject the fault kinds in the order given, in turn, instead of drawing them.
    #[arg(long)]
    cycle: bool,
}

fn parse_faults(list: &str) -> anyhow::Result<Vec<FaultKind>> {
    let namespaces = raftmq_testkit::netns::available();
    let kinds: Vec<FaultKind> = match list {
        "none" => Vec::new(),
        "all" => {
            if !namespaces {
                eprintln!("partitions left out: they need root, ip and iptables");
            }
            FaultKind::ALL
                .into_iter()
                .filter(|k| namespaces || !k.cuts_links())
                .collect()
        }
        _ => list
            .split(',')
            .map(|name| {
                FaultKind::from_name(name.trim()).with_context(|| format!("unknown fault kind {name:?}"))
            })
            .collect::<anyhow::Result<_>>()?,
    };
    anyhow::ensure!(
        namespaces || !kinds.iter().any(|k| k.cuts_links()),
        "partition faults need root, ip and iptables (apt-get install iptables)"
    );
    Ok(kinds)
}

/// `target/chaos/<UTC time>/history.jsonl`, `target` being the folder above this binary's.
fn default_history() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let target = exe
        .parent()
        .and_then(Path::parent)
        .context("this binary has no target folder")?;
    Ok(target.join("chaos").join(utc_stamp()).join("history.jsonl"))
}

/// Now in UTC as `YYYYMMDD-HHMMSS`.
fn utc_stamp() -> String {
    let secs = raftmq_chaos::run::recorder::now_ms() / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

fn check(history: &Path) -> anyhow::Result<bool> {
    let h = raftmq_chaos::history::read_history_file(history)
        .with_context(|| format!("reading {}", history.display()))?;
    if h.torn_tail {
        eprintln!("note: ignored a torn last line in {}", history.display());
    }
    let report =
        raftmq_chaos::check(&h.records).with_context(|| format!("checking {}", history.display()))?;
    print!("{report}");
    Ok(report.passed())
}

/// Raises the returned flag on Ctrl-C or SIGTERM.
fn stop_on_signals() -> anyhow::Result<watch::Receiver<bool>> {
    let (tx, rx) = watch::channel(false);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("interrupted: stopping the nemesis, healing, tearing everything down");
        tx.send_replace(true);
        // Keep the sender: the flag stays raised.
        std::future::pending::<()>().await;
    });
    Ok(rx)
}

/// Runs a chaos test; `Some(passed)`, or `None` when interrupted.
async fn run(args: RunArgs) -> anyhow::Result<Option<bool>> {
    let options = RunOptions {
        duration: args.duration,
        seed: args.seed.unwrap_or_else(rand::random),
        groups: args.groups,
        history: match args.history {
            Some(p) => p,
            None => default_history()?,
        },
        producers: ProducerPlan {
            producers: args.producers,
            keys_per_producer: args.keys_per_producer,
            rate: args.rate,
        },
        consumers: args.consumers,
        faults: parse_faults(&args.faults)?,
        cycle: args.cycle,
    };
    println!(
        "raftmq-chaos run: seed {} history {}",
        options.seed,
        options.history.display()
    );
    let stop = stop_on_signals()?;
    let outcome = raftmq_chaos::run::run(&options, stop)
        .await
        .with_context(|| format!("chaos run with seed {}", options.seed))?;
    print!("{outcome}");
    Ok((!outcome.interrupted).then(|| outcome.passed()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { history } => check(&history).map(Some),
        Command::Run(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")
            .and_then(|rt| rt.block_on(run(args))),
    };
    match result {
        Ok(Some(true)) => ExitCode::SUCCESS,
        Ok(Some(false)) => ExitCode::from(1),
        Ok(None) => ExitCode::from(130),
        Err(err) => {
            eprintln!("raftmq-chaos: {err:#}");
            ExitCode::from(2)
        }
    }
}
