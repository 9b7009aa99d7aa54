//! `raftmq-namesrv`: runs a name server until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use raftmq_namesrv::Namesrv;
use raftmq_namesrv::NamesrvConfig;
use raftmq_transport::Signals;

/// raftmq's name server: broker nodes register with it, clients of the RocketMQ 5 protocol
/// use it as their access point. Flags override the TOML file; `--print-config` shows the
/// result.
#[derive(Debug, Parser)]
#[command(name = "raftmq-namesrv", version)]
struct Args {
    /// TOML configuration file (every key optional; see docs/OPERATIONS.md).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Address to listen on, IP:port (default 127.0.0.1:9876).
    #[arg(long)]
    listen: Option<String>,
    /// Drop a broker node silent for this long, ms (default 120000).
    #[arg(long)]
    expiry_ms: Option<u64>,
    /// How often silent nodes are dropped, ms (default 5000).
    #[arg(long)]
    scan_interval_ms: Option<u64>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

impl Args {
    fn into_config(self) -> anyhow::Result<(NamesrvConfig, bool)> {
        let mut c = match &self.config {
            Some(path) => NamesrvConfig::from_toml_file(path)?,
            None => NamesrvConfig::default(),
        };
        if let Some(v) = self.listen {
            c.listen = v;
        }
        if let Some(v) = self.expiry_ms {
            c.expiry_ms = v;
        }
        if let Some(v) = self.scan_interval_ms {
            c.scan_interval_ms = v;
        }
        Ok((c, self.print_config))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let (config, print) = Args::parse().into_config()?;
    if print {
        println!("{}", toml::to_string_pretty(&config).context("render config")?);
        return Ok(());
    }
    let grace = Duration::from_millis(config.shutdown_grace_ms);
    let mut signals = Signals::install().context("install SIGTERM/SIGINT handlers")?;
    let namesrv = Namesrv::start(config)
        .await
        .context("name server failed to start")?;
    let signal = signals.recv().await;
    tracing::info!(signal, "stopping");
    namesrv.shutdown(grace).await;
    Ok(())
}
