//! NATS JetStream under test: three `nats-server` processes on loopback, clustered by
//! routes, JetStream with file storage in a temporary folder, a stream of 3 replicas over
//! the subjects `bench.0` … `bench.7`; either JetStream's default sync (data written to
//! the OS at once, fsynced every 2 minutes) or `sync_interval: always` (fsync before the
//! ack, the durability raftmq gives by default). Producers use `async-nats`'s JetStream
//! publish (ack awaited); the consumer is an ordered pull consumer.

use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;
use async_nats::jetstream;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::context::ContextBuilder;
use async_nats::jetstream::stream;
use futures_util::StreamExt;
use tokio::task::JoinHandle;

use crate::runner::Recorder;
use crate::runner::Sender;
use crate::servers::Servers;

pub const STREAM: &str = "BENCH";
const SUBJECTS: u64 = 8;
const WAIT: Duration = Duration::from_secs(30);

/// The configuration file of node `i` (0-based) of three: `ports[j]` = (client, route).
pub fn config(i: usize, ports: &[(u16, u16)], store: &Path, sync_always: bool) -> String {
    let (client, route) = ports[i];
    let routes: Vec<String> = ports
        .iter()
        .map(|(_, r)| format!("\"nats-route://127.0.0.1:{r}\""))
        .collect();
    let sync = if sync_always {
        "\n  sync_interval: always"
    } else {
        ""
    };
    format!(
        "server_name: \"n{n}\"\nlisten: \"127.0.0.1:{client}\"\n\
         jetstream {{\n  store_dir: \"{store}\"{sync}\n}}\n\
         cluster {{\n  name: \"bench\"\n  listen: \"127.0.0.1:{route}\"\n  routes: [{routes}]\n}}\n",
        n = i + 1,
        store = store.display(),
        routes = routes.join(", "),
    )
}

/// A running three-node JetStream cluster with the stream; gone when dropped.
#[derive(Debug)]
pub struct JsCluster {
    pub servers: Servers,
    pub urls: Vec<String>,
    _dir: tempfile::TempDir,
}

impl JsCluster {
    pub async fn start(nats_server: &Path, base: &Path, sync_always: bool) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("jetstream-").tempdir_in(base)?;
        let mut ports = Vec::new();
        for _ in 0..3 {
            ports.push((raftmq_testkit::free_port()?, raftmq_testkit::free_port()?));
        }
        let mut servers = Servers::default();
        for i in 0..3 {
            let store: PathBuf = dir.path().join(format!("n{}", i + 1));
            let conf = dir.path().join(format!("n{}.conf", i + 1));
            std::fs::write(&conf, config(i, &ports, &store, sync_always))
                .with_context(|| format!("write {}", conf.display()))?;
            let mut cmd = Command::new(nats_server);
            cmd.arg("-c").arg(&conf);
            servers.spawn(cmd, &dir.path().join(format!("n{}.log", i + 1)))?;
        }
        let urls = ports
            .iter()
            .map(|(c, _)| format!("nats://127.0.0.1:{c}"))
            .collect();
        let me = Self {
            servers,
            urls,
            _dir: dir,
        };
        me.create_stream().await?;
        Ok(me)
    }

    async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .connect(self.urls.as_slice())
            .await
            .context("connect to nats")
    }

    async fn create_stream(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + WAIT;
        let cfg = stream::Config {
            name: STREAM.into(),
            subjects: vec!["bench.>".into()],
            num_replicas: 3,
            storage: stream::StorageType::File,
            ..Default::default()
        };
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.connect().await {
                Ok(c) => match jetstream::new(c).get_or_create_stream(cfg.clone()).await {
                    Ok(_) => return self.await_stream_everywhere(deadline).await,
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = format!("{e:#}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        anyhow::bail!("jetstream: no stream within {WAIT:?}: {last}")
    }

    /// Waits until a publish through each server is stored, then empties the stream: a
    /// server that has not yet learned of a new stream answers "no stream found for given
    /// subject", which once failed a whole round's sends.
    async fn await_stream_everywhere(&self, deadline: Instant) -> anyhow::Result<()> {
        for url in &self.urls {
            let client = async_nats::ConnectOptions::new()
                .connection_timeout(Duration::from_secs(2))
                .connect(url.as_str())
                .await
                .with_context(|| format!("connect to {url}"))?;
            let js = jetstream::new(client);
            loop {
                let stored = match js.publish("bench.ready", "ready".into()).await {
                    Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match stored {
                    Ok(()) => break,
                    Err(e) if Instant::now() >= deadline => {
                        anyhow::bail!("jetstream: {url} cannot publish to the stream: {e}")
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
        let js = jetstream::new(self.connect().await?);
        retrying("purge the stream", deadline, || async {
            let stream = js
                .get_stream(STREAM)
                .await
                .map_err(|e| anyhow::anyhow!("get stream: {e:?}"))?;
            stream
                .purge()
                .await
                .map_err(|e| anyhow::anyhow!("purge: {e:?}"))?;
            Ok(())
        })
        .await
    }

    /// One connection per producer; each may have `window` acks pending.
    pub async fn producers(&self, n: usize, window: usize) -> anyhow::Result<Vec<JsSender>> {
        let mut out = Vec::new();
        for _ in 0..n {
            let ctx = ContextBuilder::new()
                .timeout(Duration::from_secs(10))
                .max_ack_inflight(window.max(1) * 2)
                .backpressure_on_inflight(true)
                .build(self.connect().await?);
            out.push(JsSender {
                ctx,
                next: Arc::new(AtomicU64::new(0)),
            });
        }
        Ok(out)
    }

    /// An ordered consumer from the stream's first message, feeding `rec`, until aborted.
    pub async fn consumer(&self, rec: Recorder) -> anyhow::Result<JoinHandle<()>> {
        let js = jetstream::new(self.connect().await?);
        let deadline = Instant::now() + WAIT;
        let mut messages = retrying("start the ordered consumer", deadline, || async {
            let stream = js
                .get_stream(STREAM)
                .await
                .map_err(|e| anyhow::anyhow!("get stream: {e:?}"))?;
            let consumer = stream
                .create_consumer(OrderedConfig::default())
                .await
                .map_err(|e| anyhow::anyhow!("create ordered consumer: {e:?}"))?;
            consumer
                .messages()
                .await
                .map_err(|e| anyhow::anyhow!("consume: {e:?}"))
        })
        .await?;
        Ok(tokio::spawn(async move {
            while let Some(m) = messages.next().await {
                let Ok(m) = m else { continue };
                let mut batch = vec![m];
                while let Some(Some(Ok(m))) = messages.now_or_never_ok() {
                    batch.push(m);
                }
                rec.bodies(batch.iter().map(|m| m.payload.as_ref()));
            }
        }))
    }
}

/// Runs `op` until it succeeds, every 200 ms, and gives up with its last error once
/// `deadline` has passed. JetStream's API requests can fail for a moment while the stream's
/// leader changes (or on a slow disk, time out): one such failure, "get stream" with no
/// further cause, once ended a whole suite in its fifth run.
async fn retrying<T, F, Fut>(what: &str, deadline: Instant, mut op: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let mut failures = 0u32;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                failures += 1;
                if Instant::now() >= deadline {
                    return Err(e.context(format!("jetstream: {what}: {failures} attempts failed")));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Polls a stream once without waiting.
trait NowOrNever: futures_util::Stream + Unpin {
    fn now_or_never_ok(&mut self) -> Option<Option<Self::Item>> {
        futures_util::FutureExt::now_or_never(self.next())
    }
}

impl<S: futures_util::Stream + Unpin> NowOrNever for S {}

/// A JetStream publisher as a [`Sender`]: subjects in turn, ack awaited.
#[derive(Debug, Clone)]
pub struct JsSender {
    ctx: jetstream::Context,
    next: Arc<AtomicU64>,
}

impl Sender for JsSender {
    fn send(&self, body: Vec<u8>) -> impl Future<Output = anyhow::Result<()>> + Send + 'static {
        let ctx = self.ctx.clone();
        let n = self.next.fetch_add(1, Ordering::Relaxed) % SUBJECTS;
        async move {
            let ack = ctx.publish(format!("bench.{n}"), body.into()).await?;
            ack.await?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn retrying_returns_the_first_success_and_gives_up_with_the_last_error() {
        let calls = std::sync::atomic::AtomicU32::new(0);
        let far = Instant::now() + Duration::from_secs(10);
        let got = retrying("x", far, || async {
            match calls.fetch_add(1, Ordering::Relaxed) {
                0 | 1 => anyhow::bail!("not yet"),
                n => Ok(n),
            }
        })
        .await;
        assert_eq!(got.ok(), Some(2));

        let gone = Instant::now();
        let err = retrying::<(), _, _>("purge", gone, || async { anyhow::bail!("request error") })
            .await
            .err()
            .map(|e| format!("{e:#}"));
        assert_eq!(
            err.as_deref(),
            Some("jetstream: purge: 1 attempts failed: request error")
        );
    }

    #[test]
    fn config_has_routes_and_sync() {
        let ports = [(4222, 6222), (4223, 6223), (4224, 6224)];
        let c = config(1, &ports, Path::new("/tmp/x/n2"), true);
        assert!(c.contains("server_name: \"n2\""));
        assert!(c.contains("listen: \"127.0.0.1:4223\""));
        assert!(c.contains("listen: \"127.0.0.1:6223\""));
        assert!(c.contains("sync_interval: always"));
        assert!(c.contains("\"nats-route://127.0.0.1:6222\", \"nats-route://127.0.0.1:6223\", \"nats-route://127.0.0.1:6224\""));
        assert!(!config(0, &ports, Path::new("/s"), false).contains("sync_interval"));
    }
}
