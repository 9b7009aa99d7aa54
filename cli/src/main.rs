//! `raftmq`: raftmq's command-line tool.
//!
//! Administers topics, shows a broker group's Raft cluster and consumer group progress
//! (`raftmq.admin.v1.AdminService`), and sends and receives messages with the RocketMQ 5
//! protocol (`apache.rocketmq.v2.MessagingService`). Run `raftmq --help` for the commands.
//! Any failure ends the process with exit code 1 and one line on stderr.

mod admin_cmds;
mod args;
mod connect;
mod message_cmds;
mod table;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser as _;

use crate::args::{Cli, Command};
use crate::connect::Conn;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
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
    let conn = Conn::new(&cli.server, Duration::from_secs(cli.timeout_secs))?;
    match cli.command {
        Command::Topic(cmd) => admin_cmds::topic(&conn, cmd).await,
        Command::Cluster(cmd) => admin_cmds::cluster(&conn, cmd).await,
        Command::Group(cmd) => admin_cmds::group(&conn, cmd).await,
        Command::Send(args) => message_cmds::send(&conn, args).await,
        Command::Receive(args) => message_cmds::receive(&conn, args).await,
    }
}
