//! Harness of the process-level tests: real `raftmq-broker` (and `raftmq-namesrv`)
//! processes on loopback ports chosen at run time, data in a temporary folder, talked to
//! over gRPC. Every process started here is killed (by its own handle) when its owner is
//! dropped.
//!
//! The binaries are looked up in `RAFTMQ_BIN_DIR` if set, else next to the running test
//! (`target/<profile>/`), where `cargo test`/`nextest` of the workspace builds them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use raftmq_proto::raftmq::admin::v1 as admin;
use raftmq_proto::raftmq::admin::v1::admin_service_client::AdminServiceClient;
use raftmq_proto::raftmq::namesrv::v1::namesrv_service_client::NamesrvServiceClient;
use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use tonic::transport::Channel;

mod cluster;
pub mod netns;
mod ports;

pub use cluster::Cluster;
pub use cluster::Layout;
pub use ports::free_port_on;

/// How long any awaited condition may take.
pub const WAIT: Duration = Duration::from_secs(30);

/// The last `lines` lines of a node's output, leaving out the frames of a backtrace: a
/// node that exits with an error prints one, and its frames would push the error itself
/// out of the tail.
pub fn log_tail(text: &str, lines: usize) -> Vec<&str> {
    let is_frame = |l: &str| {
        let t = l.trim_start();
        t.starts_with("at ") || t.split_once(": ").is_some_and(|(n, _)| n.parse::<u32>().is_ok())
    };
    let mut tail: Vec<&str> = text.lines().rev().filter(|l| !is_frame(l)).take(lines).collect();
    tail.reverse();
    tail
}

/// A loopback port free right now that no other test gets (see `ports.rs`).
pub fn free_port() -> anyhow::Result<u16> {
    free_port_on(std::net::Ipv4Addr::LOCALHOST)
}

#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub id: u64,
    pub client: String,
    pub raft: String,
}

/// Three broker processes.
#[derive(Debug)]
pub struct ProcGroup {
    pub dir: tempfile::TempDir,
    pub nodes: BTreeMap<u64, NodeSpec>,
    children: BTreeMap<u64, Child>,
    extra_env: Vec<(String, String)>,
    /// Per node, the command prefix it is started under (`ip netns exec <ns>`).
    launchers: BTreeMap<u64, Vec<String>>,
    /// The broker group's name.
    pub group: String,
}

impl Drop for ProcGroup {
    fn drop(&mut self) {
        for (_, mut c) in std::mem::take(&mut self.children) {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            for id in self.nodes.keys() {
                let log = self.log_path(*id);
                if let Ok(text) = std::fs::read_to_string(&log) {
                    eprintln!("--- {} node {id} log tail ---", self.group);
                    for l in log_tail(&text, 40) {
                        eprintln!("{l}");
                    }
                }
            }
        }
    }
}

impl ProcGroup {
    pub fn start(n: u64) -> anyhow::Result<Self> {
        Self::start_with(n, "")
    }

    /// Starts `n` nodes whose config file has `top_level` (TOML keys before any table)
    /// besides the test defaults.
    pub fn start_with(n: u64, top_level: &str) -> anyhow::Result<Self> {
        Self::start_named("g1", n, top_level)
    }

    /// Starts `n` nodes of broker group `group` (see [`Self::start_with`]).
    pub fn start_named(group: &str, n: u64, top_level: &str) -> anyhow::Result<Self> {
        Self::start_named_with(group, n, top_level, "")
    }

    /// As [`Self::start_named`], with `log_keys` in the config file's `[log]` table.
    pub fn start_named_with(group: &str, n: u64, top_level: &str, log_keys: &str) -> anyhow::Result<Self> {
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            let spec = NodeSpec {
                id,
                client: format!("127.0.0.1:{}", free_port()?),
                raft: format!("127.0.0.1:{}", free_port()?),
            };
            nodes.insert(id, spec);
        }
        Self::start_nodes(group, nodes, BTreeMap::new(), top_level, log_keys)
    }

    /// Starts one node of `group` on each host (node ids 1, 2, ... in order), each inside
    /// its host's namespace, listening on the host's address (client port 8081, Raft
    /// port 9091: every host has its own ports).
    /// `log_keys` go into the config file's `[log]` table.
    pub fn start_on_hosts(
        group: &str,
        hosts: &[netns::Host],
        top_level: &str,
        log_keys: &str,
    ) -> anyhow::Result<Self> {
        let mut nodes = BTreeMap::new();
        let mut launchers = BTreeMap::new();
        for (id, host) in (1..).zip(hosts) {
            let spec = NodeSpec {
                id,
                client: format!("{}:8081", host.ip),
                raft: format!("{}:9091", host.ip),
            };
            nodes.insert(id, spec);
            launchers.insert(id, host.launcher());
        }
        Self::start_nodes(group, nodes, launchers, top_level, log_keys)
    }

    fn start_nodes(
        group: &str,
        nodes: BTreeMap<u64, NodeSpec>,
        launchers: BTreeMap<u64, Vec<String>>,
        top_level: &str,
        log_keys: &str,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        std::fs::write(
            dir.path().join("broker.toml"),
            format!("{top_level}\n[log]\nsegment_size = 67108864\n{log_keys}\n"),
        )?;
        let ids: Vec<u64> = nodes.keys().copied().collect();
        let mut g = Self {
            dir,
            nodes,
            children: BTreeMap::new(),
            extra_env: Vec::new(),
            launchers,
            group: group.to_owned(),
        };
        for id in ids {
            g.start_node(id)?;
        }
        Ok(g)
    }

    /// The data folder of node `id` (its commit log is in `log/`, its state machine in
    /// `sm/`).
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node-{id}"))
    }

    /// The last `lines` lines of every node's output, for an error message: a test that
    /// returns an error drops the group without panicking, so `Drop` prints nothing.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for id in self.nodes.keys() {
            let text = self.node_log(*id);
            out.push_str(&format!("--- {} node {id} log tail ---\n", self.group));
            for l in log_tail(&text, lines) {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// Node `id`'s log output so far (all its incarnations).
    pub fn node_log(&self, id: u64) -> String {
        std::fs::read_to_string(self.log_path(id)).unwrap_or_default()
    }

    fn log_path(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node-{id}.log"))
    }

    /// Starts (or restarts) node `id` with its data dir.
    pub fn start_node(&mut self, id: u64) -> anyhow::Result<()> {
        let spec = self.nodes[&id].clone();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))?;
        // Small segments (written by `start_with`): each node preallocates its current one.
        let config = self.dir.path().join("broker.toml");
        let broker = bin("raftmq-broker")?;
        let mut cmd = match self.launchers.get(&id).and_then(|l| l.split_first()) {
            // `ip netns exec` execs the broker: the child's pid is the broker's.
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&broker);
                c
            }
            None => Command::new(&broker),
        };
        cmd.arg("--config")
            .arg(&config)
            .arg("--node-id")
            .arg(id.to_string())
            .arg("--group")
            .arg(&self.group)
            .arg("--data-dir")
            .arg(self.data_dir(id))
            .arg("--client-addr")
            .arg(&spec.client)
            .arg("--raft-addr")
            .arg(&spec.raft);
        for p in self.nodes.values() {
            cmd.arg("--peer").arg(format!("{}={}/{}", p.id, p.raft, p.client));
        }
        cmd.env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().context("spawn raftmq-broker")?;
        self.children.insert(id, child);
        Ok(())
    }

    /// SIGKILLs node `id`.
    pub fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        if let Some(mut c) = self.children.remove(&id) {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// SIGTERMs node `id` and waits for it to exit; returns whether it exited cleanly.
    pub fn terminate(&mut self, id: u64) -> anyhow::Result<bool> {
        let Some(mut c) = self.children.remove(&id) else {
            return Ok(true);
        };
        let pid = c.id().to_string();
        Command::new("kill").arg("-TERM").arg(&pid).status()?;
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = c.try_wait()? {
                return Ok(status.success());
            }
            anyhow::ensure!(Instant::now() < deadline, "node {id} ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `timeout` for node `id` to exit by itself; its exit status if it did.
    pub fn wait_exit(
        &mut self,
        id: u64,
        timeout: Duration,
    ) -> anyhow::Result<Option<std::process::ExitStatus>> {
        let deadline = Instant::now() + timeout;
        let Some(c) = self.children.get_mut(&id) else {
            return Ok(None);
        };
        loop {
            if let Some(status) = c.try_wait()? {
                self.children.remove(&id);
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The pid of node `id`, while this group runs it.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.children.get(&id).map(Child::id)
    }

    pub fn client_addr(&self, id: u64) -> &str {
        &self.nodes[&id].client
    }

    pub async fn messaging(&self, id: u64) -> anyhow::Result<MessagingServiceClient<Channel>> {
        let ch = channel(self.client_addr(id))?;
        Ok(MessagingServiceClient::new(ch))
    }

    pub async fn admin(&self, id: u64) -> anyhow::Result<AdminServiceClient<Channel>> {
        let ch = channel(self.client_addr(id))?;
        Ok(AdminServiceClient::new(ch))
    }

    /// Waits until some live node among `among` reports a leader in `among` that accepts
    /// writes (a topic listing through it works); returns its id.
    pub async fn wait_leader(&self, among: &[u64]) -> anyhow::Result<u64> {
        let deadline = Instant::now() + WAIT;
        loop {
            for &id in among {
                let Ok(mut a) = self.admin(id).await else { continue };
                let Ok(resp) = a.cluster_status(admin::ClusterStatusRequest {}).await else {
                    continue;
                };
                let s = resp.into_inner();
                if let Some(l) = s.leader_id
                    && among.contains(&l)
                {
                    return Ok(l);
                }
            }
            if Instant::now() >= deadline {
                anyhow::bail!("no leader among {among:?}\n{}", self.log_tails(25));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The max offset of every queue of `topic`, as the group's leader reports.
    pub async fn max_offsets(&self, topic: &str) -> anyhow::Result<Vec<u64>> {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        let mut a = self.admin(self.wait_leader(&ids).await?).await?;
        let topics = a
            .list_topics(admin::ListTopicsRequest {})
            .await?
            .into_inner()
            .topics;
        let t = topics
            .into_iter()
            .find(|t| t.spec.as_ref().is_some_and(|s| s.name == topic))
            .with_context(|| format!("{topic} on {}", self.group))?;
        Ok(t.queues.iter().map(|q| q.max_offset).collect())
    }

    /// Creates a topic through any node, retrying while the group elects.
    pub async fn create_topic(
        &self,
        name: &str,
        queues: u32,
        kind: admin::MessageKind,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + WAIT;
        loop {
            let leader = self
                .wait_leader(&self.nodes.keys().copied().collect::<Vec<_>>())
                .await?;
            let mut a = self.admin(leader).await?;
            let req = admin::CreateTopicRequest {
                topic: Some(admin::TopicSpec {
                    name: name.into(),
                    queues,
                    permission: admin::Permission::ReadWrite as i32,
                    kind: kind as i32,
                }),
            };
            match a.create_topic(req).await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() < deadline && e.code() == tonic::Code::Unavailable => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => anyhow::bail!("create topic {name}: {e}"),
            }
        }
    }
}

/// A `raftmq-namesrv` process on a port chosen at run time; killed when dropped.
#[derive(Debug)]
pub struct NamesrvProc {
    pub addr: String,
    log: PathBuf,
    child: Option<Child>,
}

impl Drop for NamesrvProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking()
            && let Ok(text) = std::fs::read_to_string(&self.log)
        {
            eprintln!("--- namesrv {} log tail ---", self.addr);
            for l in log_tail(&text, 30) {
                eprintln!("{l}");
            }
        }
    }
}

/// A raftmq binary: in `RAFTMQ_BIN_DIR`, else next to the running executable or one
/// folder up (a test runs from `target/<profile>/deps/`, a tool from `target/<profile>/`).
pub fn bin(name: &str) -> anyhow::Result<PathBuf> {
    let candidates: Vec<PathBuf> = match std::env::var_os("RAFTMQ_BIN_DIR") {
        Some(d) => vec![PathBuf::from(d).join(name)],
        None => {
            let exe = std::env::current_exe()?;
            let here = exe.parent().context("executable without a folder")?;
            let mut c = vec![here.join(name)];
            if let Some(up) = here.parent() {
                c.push(up.join(name));
            }
            c
        }
    };
    candidates.iter().find(|p| p.exists()).cloned().with_context(|| {
        format!(
            "{name} is missing (looked at {candidates:?}): build the workspace's binaries first \
             (cargo build --workspace --bins) or set RAFTMQ_BIN_DIR"
        )
    })
}

impl NamesrvProc {
    /// Starts a name server whose log goes into `dir`, with extra flags.
    pub fn start(dir: &std::path::Path, flags: &[&str]) -> anyhow::Result<Self> {
        Self::start_on(dir, std::net::Ipv4Addr::LOCALHOST, flags)
    }

    /// Starts a name server listening on `ip` (a port free there), see [`Self::start`].
    pub fn start_on(dir: &std::path::Path, ip: std::net::Ipv4Addr, flags: &[&str]) -> anyhow::Result<Self> {
        let port = free_port_on(ip)?;
        let addr = format!("{ip}:{port}");
        let log = dir.join(format!("namesrv-{}.log", addr.replace(':', "-")));
        let mut me = Self {
            addr,
            log,
            child: None,
        };
        me.restart(flags)?;
        Ok(me)
    }

    /// (Re)starts it on the same address.
    pub fn restart(&mut self, flags: &[&str]) -> anyhow::Result<()> {
        self.kill()?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(bin("raftmq-namesrv")?)
            .arg("--listen")
            .arg(&self.addr)
            .args(flags)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn raftmq-namesrv")?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILLs it.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn messaging(&self) -> anyhow::Result<MessagingServiceClient<Channel>> {
        Ok(MessagingServiceClient::new(channel(&self.addr)?))
    }

    pub fn registry(&self) -> anyhow::Result<NamesrvServiceClient<Channel>> {
        Ok(NamesrvServiceClient::new(channel(&self.addr)?))
    }
}

fn channel(addr: &str) -> anyhow::Result<Channel> {
    Ok(tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(30))
        .connect_lazy())
}

/// A message as a producer sends it.
pub fn message(topic: &str, id: &str, body: &[u8], group: Option<&str>) -> pb::Message {
    pb::Message {
        topic: Some(pb::Resource {
            resource_namespace: String::new(),
            name: topic.into(),
        }),
        user_properties: Default::default(),
        system_properties: Some(pb::SystemProperties {
            message_id: id.into(),
            tag: Some("TagA".into()),
            message_group: group.map(Into::into),
            body_encoding: pb::Encoding::Identity as i32,
            message_type: if group.is_some() {
                pb::MessageType::Fifo as i32
            } else {
                pb::MessageType::Normal as i32
            },
            ..Default::default()
        }),
        body: body.to_vec().into(),
    }
}

/// Sends one message; returns the top-level status code and the entry's offset.
pub async fn send(c: &mut MessagingServiceClient<Channel>, m: pb::Message) -> anyhow::Result<(i32, i64)> {
    let resp = c
        .send_message(pb::SendMessageRequest { messages: vec![m] })
        .await?
        .into_inner();
    let code = resp.status.map_or(0, |s| s.code);
    let offset = resp.entries.first().map_or(-1, |e| e.offset);
    Ok((code, offset))
}

/// One receive: (status code, messages).
pub async fn receive(
    c: &mut MessagingServiceClient<Channel>,
    topic: &str,
    group: &str,
    batch: i32,
    wait: Duration,
) -> anyhow::Result<(i32, Vec<pb::Message>)> {
    let req = pb::ReceiveMessageRequest {
        group: Some(pb::Resource {
            resource_namespace: String::new(),
            name: group.into(),
        }),
        message_queue: Some(pb::MessageQueue {
            topic: Some(pb::Resource {
                resource_namespace: String::new(),
                name: topic.into(),
            }),
            id: -1,
            ..Default::default()
        }),
        filter_expression: Some(pb::FilterExpression {
            r#type: pb::FilterType::Tag as i32,
            expression: "*".into(),
        }),
        batch_size: batch,
        invisible_duration: Some(raftmq_proto::prost_types::Duration {
            seconds: 30,
            nanos: 0,
        }),
        auto_renew: false,
        long_polling_timeout: Some(raftmq_proto::prost_types::Duration {
            seconds: wait.as_secs() as i64,
            nanos: 0,
        }),
        ..Default::default()
    };
    let mut request = tonic::Request::new(req);
    request.set_timeout(wait + Duration::from_secs(5));
    let mut stream = c.receive_message(request).await?.into_inner();
    let mut code = 0;
    let mut out = Vec::new();
    while let Some(item) = stream.message().await? {
        match item.content {
            Some(pb::receive_message_response::Content::Status(s)) => code = s.code,
            Some(pb::receive_message_response::Content::Message(m)) => out.push(m),
            _ => {}
        }
    }
    Ok((code, out))
}

/// Acks messages; returns the top-level status code.
pub async fn ack(
    c: &mut MessagingServiceClient<Channel>,
    topic: &str,
    group: &str,
    msgs: &[pb::Message],
) -> anyhow::Result<i32> {
    let entries = msgs
        .iter()
        .filter_map(|m| {
            let s = m.system_properties.as_ref()?;
            Some(pb::AckMessageEntry {
                message_id: s.message_id.clone(),
                receipt_handle: s.receipt_handle.clone()?,
                ..Default::default()
            })
        })
        .collect();
    let resp = c
        .ack_message(pb::AckMessageRequest {
            group: Some(pb::Resource {
                resource_namespace: String::new(),
                name: group.into(),
            }),
            topic: Some(pb::Resource {
                resource_namespace: String::new(),
                name: topic.into(),
            }),
            entries,
        })
        .await?
        .into_inner();
    Ok(resp.status.map_or(0, |s| s.code))
}

pub fn msg_id(m: &pb::Message) -> String {
    m.system_properties
        .as_ref()
        .map(|s| s.message_id.clone())
        .unwrap_or_default()
}

/// Runs one scenario of a test that runs several at once, naming it in its error and
/// printing how long it took.
pub async fn step(
    name: &str,
    scenario: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let t = Instant::now();
    scenario.await.with_context(|| name.to_owned())?;
    eprintln!("{name}: {:?}", t.elapsed());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::log_tail;

    #[test]
    fn a_log_tail_keeps_the_error_and_leaves_out_backtrace_frames() {
        let text = "started\nError: cannot bind 127.0.0.1:4000: address in use\n\nStack backtrace:\n   0: anyhow::error::<impl anyhow::Error>::msg\n             at /src/error.rs:83:36\n  31: _start\n";
        assert_eq!(
            log_tail(text, 3),
            vec![
                "Error: cannot bind 127.0.0.1:4000: address in use",
                "",
                "Stack backtrace:"
            ]
        );
        // Log lines with a timestamp or fields are not frames.
        let log = "2026-11-22T17:12:22Z  INFO node: started id=1\nx: 1\n";
        assert_eq!(
            log_tail(log, 5),
            vec!["2026-11-22T17:12:22Z  INFO node: started id=1", "x: 1"]
        );
    }
}
