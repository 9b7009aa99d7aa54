//! `raftmq`: raftmq's command-line tool.
//!
//! Administers topics, shows a broker group's Raft cluster and consumer group progress
//! (`raftmq.admin.v1.AdminService`), and sends and receives messages with the RocketMQ 5
//! protocol (`apache.rocketmq.v2.MessagingService`), and finds messages by id or key. With `--namesrv` it also reads the
//! name server (`raftmq.namesrv.v1.NamesrvService`) and runs topic commands on several
//! broker groups (`--groups`). Run `raftmq --help` for the commands.
//! Any failure ends the process with exit code 1 and one line on stderr.

mod admin_cmds;
mod args;
mod connect;
mod message_cmds;
mod multi_group;
mod namesrv_cmds;
mod query_cmds;
mod table;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser as _;

use crate::args::{Cli, Command};
use crate::connect::Conn;
use crate::namesrv_cmds::Namesrv;

/// Restores the default SIGPIPE action (terminate quietly), as command-line tools do, so
/// that `raftmq topic list | head` ends the tool instead of panicking in `println!`.
fn default_sigpipe() {
    // SAFETY: setting a signal's disposition to SIG_DFL before any other thread exists
    // has no memory-safety preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    default_sigpipe();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("raftmq: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async_main())
}

async fn async_main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` puts the whole context chain on one line.
            eprintln!("raftmq: {}", format!("{e:#}").replace(['\n', '\r'], " "));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(cli.timeout_secs);
    // Each command checks only the addresses it uses: --server, or --namesrv.
    let conn = || Conn::new(&cli.server, timeout);
    let namesrv = || Namesrv::new(&cli.namesrv, timeout);
    match cli.command {
        Command::Topic(cmd) if cmd.groups().is_some() => multi_group::topic(&namesrv()?, timeout, cmd).await,
        Command::Topic(cmd) => admin_cmds::topic(&conn()?, cmd).await,
        Command::Namesrv(cmd) => namesrv_cmds::run(&namesrv()?, cmd).await,
        Command::Cluster(cmd) => admin_cmds::cluster(&conn()?, cmd).await,
        Command::Group(cmd) => admin_cmds::group(&conn()?, cmd).await,
        Command::Send(args) => message_cmds::send(&conn()?, args).await,
        Command::Receive(args) => message_cmds::receive(&conn()?, args).await,
        Command::Query(args) => query_cmds::query(&conn()?, args).await,
    }
}
