//! The cluster under test: name servers and broker groups of three real processes on
//! loopback (the test kit's [`Cluster`]), and what the nemesis does to them.
//!
//! It remembers what is down or paused, so that [`ChaosCluster::heal`] can bring
//! everything back; dropping it kills every process it started (the test kit's `Drop`;
//! SIGKILL also ends a stopped process) and removes their data folders.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use futures_util::future::join_all;
use raftmq_proto::raftmq::admin::v1 as admin;
use raftmq_testkit::Cluster;
use raftmq_testkit::Layout;
use raftmq_testkit::ProcGroup;
use raftmq_testkit::netns::Direction;
use raftmq_testkit::netns::Net;
use tokio::time::Instant;

use super::procs;
use super::procs::Signal;
use crate::error::ChaosError;

/// The topic the workload uses.
pub const TOPIC: &str = "chaos";
/// Queues of the topic on each broker group.
pub const QUEUES: u32 = 8;
/// Name servers started.
pub const NAMESRVS: usize = 2;
/// How often brokers register with the name servers.
const REGISTER_INTERVAL_MS: u64 = 1_000;
/// Deadline of one status question to a node.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);

/// A broker node: group index and node id.
pub type NodeRef = (usize, u64);

/// How the nemesis damages a stopped node's commit log (`raft_log::damage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogDamage {
    /// Flip bits in one record.
    FlipBits,
    /// Cut a segment file short, at or inside one record.
    Truncate(raft_log::damage::TruncateAt),
}

/// The cluster and the faults currently applied to it.
#[derive(Debug)]
pub struct ChaosCluster {
    cluster: Cluster,
    down: BTreeSet<NodeRef>,
    paused: BTreeMap<NodeRef, i32>,
    namesrvs_down: BTreeSet<usize>,
    /// Nodes whose links are cut.
    cut: BTreeSet<NodeRef>,
}

impl ChaosCluster {
    /// Starts [`NAMESRVS`] name servers and `groups` broker groups (`g1`, `g2`, ...), and
    /// creates the FIFO topic [`TOPIC`] with [`QUEUES`] queues on each. With
    /// `namespaces`, every node runs on a host of its own (a network namespace), so that
    /// links can be cut.
    pub async fn start(groups: usize, namespaces: bool) -> Result<Self, ChaosError> {
        let names: Vec<String> = (1..=groups).map(|g| format!("g{g}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        // Every node records what its log fsynced, so a power failure can be simulated.
        let layout = Layout {
            log_keys: "track_synced = true",
            namespaces,
            ..Layout::default()
        };
        let started = Cluster::start_with(NAMESRVS, &refs, REGISTER_INTERVAL_MS, layout).await;
        let cluster = started.map_err(|e| ChaosError::cluster("start", &e))?;
        cluster
            .create_topic(TOPIC, QUEUES, admin::MessageKind::Fifo)
            .await
            .map_err(|e| ChaosError::cluster("create topic", &e))?;
        Ok(Self {
            cluster,
            down: BTreeSet::new(),
            paused: BTreeMap::new(),
            namesrvs_down: BTreeSet::new(),
            cut: BTreeSet::new(),
        })
    }

    /// The name servers' addresses: the clients' access points.
    pub fn access_points(&self) -> Vec<String> {
        self.cluster.access_points()
    }

    /// How many broker groups there are.
    pub fn groups(&self) -> usize {
        self.cluster.groups.len()
    }

    /// The node ids of group `g`.
    pub fn node_ids(&self, g: usize) -> Vec<u64> {
        self.group(g).nodes.keys().copied().collect()
    }

    /// How a node is named in fault records: `g1/node-2`.
    pub fn node_name(&self, (g, id): NodeRef) -> String {
        format!("{}/node-{id}", self.group(g).group)
    }

    /// The name of group `g` (`g1`, ...).
    pub fn group_name(&self, g: usize) -> &str {
        &self.group(g).group
    }

    fn group(&self, g: usize) -> &ProcGroup {
        &self.cluster.groups[g]
    }

    fn is_up(&self, node: NodeRef) -> bool {
        !self.down.contains(&node) && !self.paused.contains_key(&node)
    }

    /// The leader of group `g` as its running nodes see it now: the leader named with the
    /// highest term, if it is itself running. Each node gets one short question.
    pub async fn leader(&self, g: usize) -> Option<u64> {
        let group = self.group(g);
        let asked = self
            .node_ids(g)
            .into_iter()
            .filter(|&id| self.is_up((g, id)))
            .map(|id| async move {
                let mut client = group.admin(id).await.ok()?;
                let call = client.cluster_status(admin::ClusterStatusRequest {});
                let status = tokio::time::timeout(STATUS_TIMEOUT, call).await.ok()?.ok()?;
                let status = status.into_inner();
                Some((status.term, status.leader_id?))
            });
        let (_, leader) = join_all(asked).await.into_iter().flatten().max()?;
        self.is_up((g, leader)).then_some(leader)
    }

    /// Waits up to `timeout` for group `g` to have a running leader.
    pub async fn wait_leader(&self, g: usize, timeout: Duration) -> Option<u64> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(leader) = self.leader(g).await {
                return Some(leader);
            }
            if Instant::now() >= until {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILLs a node.
    pub fn kill_node(&mut self, node: NodeRef) -> Result<(), ChaosError> {
        let name = self.node_name(node);
        self.cluster.groups[node.0]
            .kill(node.1)
            .map_err(|e| ChaosError::cluster(format!("kill {name}"), &e))?;
        self.paused.remove(&node);
        self.down.insert(node);
        Ok(())
    }

    /// Starts a node that is down again, on its data folder.
    pub fn start_node(&mut self, node: NodeRef) -> Result<(), ChaosError> {
        let name = self.node_name(node);
        self.cluster.groups[node.0]
            .start_node(node.1)
            .map_err(|e| ChaosError::cluster(format!("start {name}"), &e))?;
        self.down.remove(&node);
        Ok(())
    }

    /// SIGSTOPs a running node.
    pub fn pause_node(&mut self, node: NodeRef) -> Result<(), ChaosError> {
        let name = self.node_name(node);
        let pid = self
            .group(node.0)
            .pid(node.1)
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| ChaosError::Setup(format!("no process found for {name}")))?;
        procs::signal(pid, Signal::Stop)?;
        self.paused.insert(node, pid);
        Ok(())
    }

    /// SIGCONTs a paused node.
    pub fn resume_node(&mut self, node: NodeRef) -> Result<(), ChaosError> {
        if let Some(pid) = self.paused.remove(&node) {
            procs::signal(pid, Signal::Cont)?;
        }
        Ok(())
    }

    /// The namespaces, and the host index of `node` among them.
    fn host(&self, node: NodeRef) -> Result<(&Net, usize), ChaosError> {
        let net = self.cluster.net.as_ref().ok_or_else(|| {
            ChaosError::Setup("links can only be cut when the nodes run in namespaces".into())
        })?;
        let id = usize::try_from(node.1).map_err(|e| ChaosError::Setup(e.to_string()))?;
        Ok((net, 3 * node.0 + id - 1))
    }

    /// Cuts `node`'s links with the other nodes of its group in `direction` (as seen from
    /// `node`); clients and name servers still reach it.
    pub fn partition(&mut self, node: NodeRef, direction: Direction) -> Result<(), ChaosError> {
        let (net, me) = self.host(node)?;
        for peer in self.node_ids(node.0).into_iter().filter(|&id| id != node.1) {
            let (_, other) = self.host((node.0, peer))?;
            let ip = net.hosts()[other].ip;
            net.cut(me, ip, direction)
                .map_err(|e| ChaosError::cluster(format!("cut {}", self.node_name(node)), &e))?;
        }
        self.cut.insert(node);
        Ok(())
    }

    /// Removes every cut of `node`.
    pub fn reconnect(&mut self, node: NodeRef) -> Result<(), ChaosError> {
        if self.cut.remove(&node) {
            let (net, me) = self.host(node)?;
            net.heal(me)
                .map_err(|e| ChaosError::cluster(format!("reconnect {}", self.node_name(node)), &e))?;
        }
        Ok(())
    }

    /// Stops every node of group `g` at once (SIGKILL) and throws away what their logs
    /// had not fsynced (a torn page from `seed` where unsynced data was written); returns
    /// how many segments were left with a torn page.
    pub fn power_failure(&mut self, g: usize, seed: u64) -> Result<usize, ChaosError> {
        let ids = self.node_ids(g);
        // All at once: SIGKILL every node first, then reap them one by one.
        for &id in &ids {
            if let Some(pid) = self.group(g).pid(id).and_then(|p| i32::try_from(p).ok()) {
                procs::signal(pid, Signal::Kill)?;
            }
        }
        for &id in &ids {
            self.kill_node((g, id))?;
        }
        let mut torn = 0;
        for id in ids {
            let dir = self.group(g).data_dir(id).join("log");
            let mode = raft_log::power_cut::PowerCutMode::Garbage { seed: seed ^ id };
            let report = raft_log::power_cut::cut_to_synced(&dir, mode)
                .map_err(|e| ChaosError::Setup(format!("power cut of {}: {e}", self.node_name((g, id)))))?;
            torn += report.segments.iter().filter(|s| s.garbage_len > 0).count();
        }
        Ok(torn)
    }

    /// SIGKILLs `node` and damages its commit log as `how` says (the record chosen by
    /// `seed`); returns what was done. The node stays down until started.
    pub fn damage_log(&mut self, node: NodeRef, how: LogDamage, seed: u64) -> Result<String, ChaosError> {
        self.kill_node(node)?;
        let dir = self.group(node.0).data_dir(node.1).join("log");
        let fail = |e: std::io::Error| ChaosError::Setup(format!("damage {}: {e}", self.node_name(node)));
        Ok(match how {
            LogDamage::FlipBits => {
                let f = raft_log::damage::flip_bits(&dir, seed).map_err(fail)?;
                format!("bits {:#04x} flipped in entry {}", f.mask, f.record.index)
            }
            LogDamage::Truncate(at) => {
                let t = raft_log::damage::truncate_segment(&dir, seed, at).map_err(fail)?;
                format!(
                    "segment cut from {} to {} bytes at entry {} ({at:?})",
                    t.old_len, t.new_len, t.record.index
                )
            }
        })
    }

    /// Starts every node of group `g` that is down.
    pub fn power_on(&mut self, g: usize) -> Result<(), ChaosError> {
        for id in self.node_ids(g) {
            if self.down.contains(&(g, id)) {
                self.start_node((g, id))?;
            }
        }
        Ok(())
    }

    /// SIGKILLs name server `i`.
    pub fn kill_namesrv(&mut self, i: usize) -> Result<(), ChaosError> {
        self.cluster.namesrvs[i]
            .kill()
            .map_err(|e| ChaosError::cluster(format!("kill namesrv-{i}"), &e))?;
        self.namesrvs_down.insert(i);
        Ok(())
    }

    /// Restarts name server `i` on its address.
    pub fn restart_namesrv(&mut self, i: usize) -> Result<(), ChaosError> {
        self.cluster.namesrvs[i]
            .restart(&[])
            .map_err(|e| ChaosError::cluster(format!("restart namesrv-{i}"), &e))?;
        self.namesrvs_down.remove(&i);
        Ok(())
    }

    /// Broker nodes that exited although nobody killed them (a crash), each with its exit
    /// status; they count as down from now on, so [`Self::heal`] restarts them.
    pub fn reap_exited(&mut self) -> Vec<String> {
        let mut exited = Vec::new();
        for g in 0..self.groups() {
            for id in self.node_ids(g) {
                if self.down.contains(&(g, id)) {
                    continue;
                }
                if let Ok(Some(status)) = self.cluster.groups[g].wait_exit(id, Duration::ZERO) {
                    exited.push(format!("{} exited by itself: {status}", self.node_name((g, id))));
                    self.paused.remove(&(g, id));
                    self.down.insert((g, id));
                }
            }
        }
        exited
    }

    /// Reconnects every cut node, lets every paused node go on, restarts every node and name server that is down,
    /// then waits up to `timeout` for every group to have a leader; the groups without one.
    pub async fn heal(&mut self, timeout: Duration) -> Result<Vec<String>, ChaosError> {
        for node in self.cut.clone() {
            self.reconnect(node)?;
        }
        for node in self.paused.keys().copied().collect::<Vec<_>>() {
            self.resume_node(node)?;
        }
        for node in self.down.clone() {
            self.start_node(node)?;
        }
        for i in self.namesrvs_down.clone() {
            self.restart_namesrv(i)?;
        }
        let until = Instant::now() + timeout;
        let mut leaderless = Vec::new();
        for g in 0..self.groups() {
            let left = until.saturating_duration_since(Instant::now());
            if self.wait_leader(g, left).await.is_none() {
                leaderless.push(self.group(g).group.clone());
            }
        }
        Ok(leaderless)
    }

    /// Copies every process's log into `to` (created): `<group>-node-<id>.log` and the
    /// name servers' logs. Returns how many files were copied.
    pub fn copy_logs(&self, to: &Path) -> std::io::Result<usize> {
        std::fs::create_dir_all(to)?;
        let mut copied = 0;
        for group in &self.cluster.groups {
            for id in group.nodes.keys() {
                let from = group.dir.path().join(format!("node-{id}.log"));
                if from.exists() {
                    std::fs::copy(&from, to.join(format!("{}-node-{id}.log", group.group)))?;
                    copied += 1;
                }
            }
        }
        for entry in std::fs::read_dir(self.cluster.dir.path())? {
            let path = entry?.path();
            if let Some(name) = path
                .file_name()
                .filter(|_| path.extension().is_some_and(|e| e == "log"))
            {
                std::fs::copy(&path, to.join(name))?;
                copied += 1;
            }
        }
        Ok(copied)
    }
}
