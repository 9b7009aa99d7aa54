//! A whole cluster of real processes: name servers and broker groups.

use std::time::Duration;
use std::time::Instant;

use raftmq_proto::raftmq::admin::v1 as admin;

use crate::NamesrvProc;
use crate::ProcGroup;
use crate::WAIT;
use crate::netns::Net;

/// How [`Cluster::start_with`] lays a cluster out.
#[derive(Debug, Clone, Copy, Default)]
pub struct Layout<'a> {
    /// Top-level broker config keys.
    pub broker_toml: &'a str,
    /// Keys of the brokers' `[log]` table.
    pub log_keys: &'a str,
    /// Every broker node in a network namespace of its own ([`crate::netns`]).
    pub namespaces: bool,
}

/// Name servers and broker groups that register with all of them: what the client's
/// tests run against.
#[derive(Debug)]
pub struct Cluster {
    pub namesrvs: Vec<NamesrvProc>,
    pub groups: Vec<ProcGroup>,
    /// The namespaces the nodes run in ([`Layout::namespaces`]); dropped after
    /// the processes (fields drop in order).
    pub net: Option<Net>,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `namesrvs` name servers and one three-node group per name in `groups`, each
    /// node registering every `register_interval_ms`; `broker_toml` adds top-level broker
    /// keys. Waits until every group has a leader.
    pub async fn start(
        namesrvs: usize,
        groups: &[&str],
        register_interval_ms: u64,
        broker_toml: &str,
    ) -> anyhow::Result<Self> {
        let layout = Layout {
            broker_toml,
            ..Layout::default()
        };
        Self::start_with(namesrvs, groups, register_interval_ms, layout).await
    }

    /// Starts `namesrvs` name servers and one three-node group per name in `groups`, as
    /// `layout` says. Waits until every group has a leader.
    pub async fn start_with(
        namesrvs: usize,
        groups: &[&str],
        register_interval_ms: u64,
        layout: Layout<'_>,
    ) -> anyhow::Result<Self> {
        let net = if layout.namespaces {
            Some(Net::create(3 * groups.len())?)
        } else {
            None
        };
        let dir = tempfile::tempdir()?;
        let ip = net.as_ref().map_or(std::net::Ipv4Addr::LOCALHOST, Net::gateway);
        let namesrvs = (0..namesrvs)
            .map(|_| NamesrvProc::start_on(dir.path(), ip, &[]))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let list: Vec<String> = namesrvs.iter().map(|n| format!("{:?}", n.addr)).collect();
        let top = format!(
            "namesrv = [{}]\nregister_interval_ms = {register_interval_ms}\nregister_timeout_ms = {}\n{}",
            list.join(", "),
            (register_interval_ms / 2).min(3_000),
            layout.broker_toml
        );
        let mut started = Vec::new();
        for (i, g) in groups.iter().enumerate() {
            started.push(match &net {
                Some(net) => {
                    ProcGroup::start_on_hosts(g, &net.hosts()[3 * i..3 * i + 3], &top, layout.log_keys)?
                }
                None => ProcGroup::start_named_with(g, 3, &top, layout.log_keys)?,
            });
        }
        for g in &started {
            g.wait_leader(&g.nodes.keys().copied().collect::<Vec<_>>())
                .await?;
        }
        Ok(Self {
            namesrvs,
            groups: started,
            net,
            dir,
        })
    }

    /// The name servers' addresses, as a client's access points.
    pub fn access_points(&self) -> Vec<String> {
        self.namesrvs.iter().map(|n| n.addr.clone()).collect()
    }

    /// The group named `name`.
    pub fn group(&self, name: &str) -> &ProcGroup {
        self.groups
            .iter()
            .find(|g| g.group == name)
            .unwrap_or_else(|| panic!("no group {name}"))
    }

    /// The group named `name`, to kill or restart its nodes.
    pub fn group_mut(&mut self, name: &str) -> &mut ProcGroup {
        self.groups
            .iter_mut()
            .find(|g| g.group == name)
            .unwrap_or_else(|| panic!("no group {name}"))
    }

    /// Creates `topic` with `queues` queues on every group and waits until the first name
    /// server routes it on all of them.
    pub async fn create_topic(
        &self,
        topic: &str,
        queues: u32,
        kind: admin::MessageKind,
    ) -> anyhow::Result<()> {
        for g in &self.groups {
            g.create_topic(topic, queues, kind).await?;
        }
        let Some(n) = self.namesrvs.first() else {
            return Ok(());
        };
        let deadline = Instant::now() + WAIT;
        loop {
            let mut c = n.registry()?;
            let req = raftmq_proto::raftmq::namesrv::v1::TopicRouteRequest { topic: topic.into() };
            let last = match c.topic_route(req).await {
                Ok(r) => {
                    let groups = &r.get_ref().groups;
                    if groups.len() == self.groups.len() && groups.iter().all(|g| g.leader_id.is_some()) {
                        return Ok(());
                    }
                    format!("{groups:?}")
                }
                Err(e) => e.to_string(),
            };
            anyhow::ensure!(
                Instant::now() < deadline,
                "{topic} never routed on every group with a leader; the name server's last answer: {last}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
