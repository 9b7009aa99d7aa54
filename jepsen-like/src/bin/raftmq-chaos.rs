//! `raftmq-chaos`: checks a chaos run's history and prints the report.
//!
//! Exit status: 0 when the check passes, 1 when it fails (a lost message, an order
//! violation, an offset regression or an unexpected delivery), 2 when the history cannot
//! be read or breaks its own rules.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

/// Check a raftmq chaos history: lost, duplicated and reordered messages, committed
/// offsets, and recovery times per fault kind.
#[derive(Debug, Parser)]
#[command(name = "raftmq-chaos", version)]
struct Args {
    /// History file, one JSON record per line.
    #[arg(long, value_name = "PATH")]
    history: PathBuf,
}

fn run(args: &Args) -> anyhow::Result<bool> {
    let history = raftmq_chaos::history::read_history_file(&args.history)
        .with_context(|| format!("reading {}", args.history.display()))?;
    if history.torn_tail {
        eprintln!("note: ignored a torn last line in {}", args.history.display());
    }
    let report = raftmq_chaos::check(&history.records)
        .with_context(|| format!("checking {}", args.history.display()))?;
    print!("{report}");
    Ok(report.passed())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("raftmq-chaos: {err:#}");
            ExitCode::from(2)
        }
    }
}
