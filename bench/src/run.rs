//! One run of one workload on one freshly started system, and the backlog case.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::jetstream_driver::JsCluster;
use crate::procstat;
use crate::raftmq_driver::RaftmqCluster;
use crate::report::RunResult;
use crate::room;
use crate::runner;
use crate::runner::Bounds;
use crate::runner::Clock;
use crate::runner::Produced;
use crate::runner::Recorder;
use crate::runner::Sender;
use crate::schedule::System;
use crate::servers::Servers;
use crate::stats::Histogram;
use crate::workload::Phase;
use crate::workload::Workload;

/// Where the servers live and what runs them.
#[derive(Debug, Clone)]
pub struct Env {
    pub nats_server: Option<PathBuf>,
    /// Temporary data folders are made (and removed) here: the disk under test.
    pub data_dir: PathBuf,
}

/// How long a consumer may go without a message before a run stops waiting for it.
const CONSUMER_IDLE: Duration = Duration::from_secs(10);
/// The longest a catch-up's backlog may take to write (a slow system writes fewer).
const FILL_LIMIT: Duration = Duration::from_secs(20);

/// Starts `sys`, runs `w` against it, stops it.
pub async fn run(sys: System, w: &Workload, env: &Env) -> anyhow::Result<RunResult> {
    room::ensure(
        &env.data_dir,
        room::run_bytes(w),
        &format!("{} on {sys}", w.name()),
    )?;
    match sys {
        System::Raftmq => {
            let mut c = RaftmqCluster::start(&env.data_dir).await?;
            let senders = c.producers(w.producers).await?;
            let r = drive(w, senders, |rec| c.consumer(rec), &c.servers).await;
            c.servers.check_alive()?;
            c.servers.stop(Duration::from_secs(5));
            r
        }
        System::JsAlways | System::JsDefault => {
            let bin = env
                .nats_server
                .as_deref()
                .ok_or_else(|| anyhow::anyhow!("--nats-server is needed for {sys}"))?;
            let mut c = JsCluster::start(bin, &env.data_dir, sys == System::JsAlways).await?;
            let senders = c.producers(w.producers, w.window_per_producer()).await?;
            let r = drive(w, senders, |rec| c.consumer(rec), &c.servers).await;
            c.servers.check_alive()?;
            c.servers.stop(Duration::from_secs(5));
            r
        }
    }
}

/// CPU seconds of the servers and of this process.
fn cpu(servers: &Servers) -> anyhow::Result<(f64, f64)> {
    Ok((servers.cpu_seconds()?, procstat::cpu_seconds(std::process::id())?))
}

async fn drive<S, F, Fut>(
    w: &Workload,
    senders: Vec<S>,
    consumer: F,
    servers: &Servers,
) -> anyhow::Result<RunResult>
where
    S: Sender,
    F: FnOnce(Recorder) -> Fut,
    Fut: Future<Output = anyhow::Result<JoinHandle<()>>>,
{
    let clock = Clock(Instant::now());
    let cpu0 = cpu(servers)?;
    let (produced, rec, drain, duration, task) = match w.phase {
        Phase::Live => {
            // The clock of the run starts once the consumer runs: starting one can take
            // seconds (a peer electing a leader), which once left a round no time to send.
            let rec = Recorder::new(clock, u64::MAX);
            let task = consumer(rec.clone()).await?;
            let measure_from = Instant::now() + w.warmup;
            rec.measure_from(clock.us_at(measure_from));
            let b = Bounds {
                measure_from,
                stop_at: measure_from + w.duration,
                max_per_producer: u64::MAX,
            };
            let p = runner::produce(senders.clone(), w, clock, b).await;
            rec.wait_for(p.acks, CONSUMER_IDLE).await;
            (p, rec, None, w.duration, task)
        }
        Phase::CatchUp { messages } => {
            let start = Instant::now();
            let b = Bounds {
                measure_from: start,
                stop_at: start + FILL_LIMIT,
                max_per_producer: messages.div_ceil(w.producers.max(1) as u64),
            };
            let mut p = runner::produce(senders.clone(), w, clock, b).await;
            p.measured_acks = p.acks;
            let fill = start.elapsed();
            let rec = Recorder::new(clock, u64::MAX);
            let t0 = Instant::now();
            let task = consumer(rec.clone()).await?;
            rec.wait_for(p.acks, CONSUMER_IDLE).await;
            let (_, n, last) = rec.snapshot();
            let secs = last.map_or(0.0, |l| l.duration_since(t0).as_secs_f64());
            let drain = (secs > 0.0).then(|| n as f64 / secs);
            (p, rec, drain, fill, task)
        }
    };
    let cpu1 = cpu(servers)?;
    task.abort();
    for s in &senders {
        s.close().await;
    }
    let rss = servers.peak_rss()?;
    Ok(result(w, &produced, &rec, duration, (cpu0, cpu1), rss, drain))
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn result(
    w: &Workload,
    p: &Produced,
    rec: &Recorder,
    duration: Duration,
    (cpu0, cpu1): ((f64, f64), (f64, f64)),
    rss: Vec<u64>,
    drain: Option<f64>,
) -> RunResult {
    let (e2e, consumed, _) = rec.snapshot();
    let per_m = |s: f64| {
        if p.acks > 0 {
            s / p.acks as f64 * 1e6
        } else {
            f64::NAN
        }
    };
    let msgs_s = p.measured_acks as f64 / duration.as_secs_f64().max(1e-9);
    let e2e_q = |h: &Histogram, q| {
        if h.count() == 0 {
            f64::NAN
        } else {
            ms(h.quantile(q))
        }
    };
    if let Some(e) = &p.first_error {
        eprintln!("  first send error ({} errors): {e}", p.errors);
    }
    if p.acks == 0 {
        eprintln!("  no send was acknowledged in this run");
    }
    RunResult {
        msgs_s,
        mb_s: msgs_s * w.size as f64 / 1e6,
        send_p50: ms(p.latency.quantile(0.5)),
        send_p99: ms(p.latency.quantile(0.99)),
        send_p999: ms(p.latency.quantile(0.999)),
        send_max: ms(p.latency.max()),
        e2e_p50: e2e_q(&e2e, 0.5),
        e2e_p99: e2e_q(&e2e, 0.99),
        cpu_s_per_m: per_m(cpu1.0 - cpu0.0),
        client_cpu_s_per_m: per_m(cpu1.1 - cpu0.1),
        rss_mib: rss.into_iter().map(|b| b as f64 / (1 << 20) as f64).collect(),
        drain_msgs_s: drain,
        acked: p.acks,
        consumed,
        errors: p.errors,
    }
}
