//! Hosts of their own for broker nodes: one network namespace per node, each with one
//! address on a bridge in the root namespace, so that links between nodes can be cut
//! (iptables inside a node's namespace) while the test, its clients and the name servers
//! (in the root namespace, on the bridge's address) still reach every node.
//!
//! Needs root, `ip` (iproute2) and `iptables`. Everything is named after the test's pid,
//! so concurrent runs do not meet, and [`Net`]'s `Drop` removes the namespaces (their
//! veth ends go with them) and the bridge.

use std::net::Ipv4Addr;
use std::process::Command;
use std::process::Stdio;

use anyhow::Context;

/// Set (by CI) to make tests that need namespaces fail rather than skip without them.
pub const REQUIRE_ENV: &str = "RAFTMQ_REQUIRE_NETNS";

/// Which traffic of a host a cut drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Packets from the peer are dropped: the host no longer hears it.
    Inbound,
    /// Packets to the peer are dropped: the peer no longer hears the host.
    Outbound,
    /// Both.
    Both,
}

/// One node's namespace and address.
#[derive(Debug, Clone)]
pub struct Host {
    /// The namespace's name.
    pub ns: String,
    /// Its address on the bridge.
    pub ip: Ipv4Addr,
}

impl Host {
    /// The command prefix that runs a program inside this host.
    pub fn launcher(&self) -> Vec<String> {
        ["ip", "netns", "exec", &self.ns].map(String::from).to_vec()
    }
}

/// A bridge and the hosts on it.
#[derive(Debug)]
pub struct Net {
    bridge: String,
    gateway: Ipv4Addr,
    hosts: Vec<Host>,
}

/// Whether this process can make namespaces and cut links (root, `ip`, `iptables`).
pub fn available() -> bool {
    let ok = |program: &str, arg: &str| {
        Command::new(program)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    // The effective user id is the second on the Uid line.
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false);
    root && ok("ip", "-V") && ok("iptables", "--version")
}

fn run(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {args:?}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

impl Net {
    /// Creates a bridge and `count` hosts on a /24 of 10.0.0.0/8 chosen from the pid.
    pub fn create(count: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(count < 200, "at most 199 hosts");
        let pid = std::process::id();
        let octets = [10, 100 + ((pid >> 8) % 100) as u8, (pid & 0xff) as u8];
        let tag = format!("rmq{}", pid % 10_000_000);
        let mut net = Self {
            bridge: format!("{tag}b"),
            gateway: Ipv4Addr::new(octets[0], octets[1], octets[2], 1),
            hosts: Vec::new(),
        };
        let cidr = |ip: Ipv4Addr| format!("{ip}/24");
        run(&["ip", "link", "add", &net.bridge, "type", "bridge"])?;
        run(&["ip", "addr", "add", &cidr(net.gateway), "dev", &net.bridge])?;
        run(&["ip", "link", "set", &net.bridge, "up"])?;
        for i in 0..count {
            let host = Host {
                ns: format!("{tag}-{i}"),
                ip: Ipv4Addr::new(octets[0], octets[1], octets[2], 10 + i as u8),
            };
            // Pushed first, so Drop removes a half-made namespace too.
            net.hosts.push(host.clone());
            let veth = format!("{tag}v{i}");
            let ns = host.ns.as_str();
            run(&["ip", "netns", "add", ns])?;
            run(&[
                "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ])?;
            run(&["ip", "link", "set", &veth, "master", &net.bridge, "up"])?;
            run(&["ip", "-n", ns, "addr", "add", &cidr(host.ip), "dev", "eth0"])?;
            run(&["ip", "-n", ns, "link", "set", "eth0", "up"])?;
            run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// The bridge's address: where processes of the root namespace (name servers, the
    /// test's clients) are reached from the hosts.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// The hosts, in creation order.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Host `i` (creation order).
    pub fn host(&self, i: usize) -> anyhow::Result<&Host> {
        self.hosts.get(i).with_context(|| format!("no host {i}"))
    }

    /// Cuts host `i`'s link with `peer` in `direction` (iptables rules in the host's
    /// namespace; the root namespace and other links are untouched).
    pub fn cut(&self, i: usize, peer: Ipv4Addr, direction: Direction) -> anyhow::Result<()> {
        let host = self.host(i)?;
        let peer = peer.to_string();
        let mut rules: Vec<[&str; 4]> = Vec::new();
        if matches!(direction, Direction::Inbound | Direction::Both) {
            rules.push(["INPUT", "-s", &peer, "DROP"]);
        }
        if matches!(direction, Direction::Outbound | Direction::Both) {
            rules.push(["OUTPUT", "-d", &peer, "DROP"]);
        }
        for [chain, side, addr, target] in rules {
            let ns = host.ns.as_str();
            run(&[
                "ip", "netns", "exec", ns, "iptables", "-A", chain, side, addr, "-j", target,
            ])?;
        }
        Ok(())
    }

    /// Removes every cut of host `i`.
    pub fn heal(&self, i: usize) -> anyhow::Result<()> {
        let host = self.host(i)?;
        run(&["ip", "netns", "exec", &host.ns, "iptables", "-F"])
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for host in &self.hosts {
            let _ = run(&["ip", "netns", "del", &host.ns]);
        }
        let _ = run(&["ip", "link", "del", &self.bridge]);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::io::Write;
    use std::net::TcpListener;
    use std::net::TcpStream;
    use std::time::Duration;

    use super::*;

    /// Whether a TCP connection from the root namespace to `addr` gets an answer.
    fn reaches(addr: std::net::SocketAddr) -> bool {
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok_and(|mut s| {
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let mut b = [0u8; 1];
            s.write_all(b"x").is_ok() && s.read_exact(&mut b).is_ok()
        })
    }

    #[test]
    fn hosts_reach_each_other_until_cut() -> anyhow::Result<()> {
        if !available() {
            // CI (scripts/test.sh as root) installs iptables and insists.
            anyhow::ensure!(
                std::env::var_os(REQUIRE_ENV).is_none(),
                "{REQUIRE_ENV} is set but namespaces are not available (root, ip, iptables)"
            );
            eprintln!("skipped: needs root, ip and iptables");
            return Ok(());
        }
        let net = Net::create(2)?;
        // An echo server in the root namespace on the gateway address; a host connects
        // to it with bash's /dev/tcp (inside its namespace).
        let listener = TcpListener::bind((net.gateway(), 0))?;
        let addr = listener.local_addr()?;
        std::thread::spawn(move || {
            for mut s in listener.incoming().flatten() {
                let mut b = [0u8; 1];
                if s.read_exact(&mut b).is_ok() {
                    let _ = s.write_all(&b);
                }
            }
        });
        assert!(reaches(addr), "the gateway answers the root namespace");
        let from_host = |i: usize| -> anyhow::Result<bool> {
            let script = format!(
                "exec 3<>/dev/tcp/{}/{}; echo -n x >&3; head -c1 <&3",
                addr.ip(),
                addr.port()
            );
            let ns = net.host(i)?.ns.clone();
            let out = Command::new("timeout")
                .args(["2", "ip", "netns", "exec", &ns, "bash", "-c", &script])
                .output()?;
            Ok(out.status.success() && out.stdout == b"x")
        };
        assert!(from_host(0)?, "host 0 reaches the gateway");
        net.cut(0, net.gateway(), Direction::Outbound)?;
        assert!(!from_host(0)?, "cut");
        assert!(from_host(1)?, "other hosts are not cut");
        net.heal(0)?;
        assert!(from_host(0)?, "healed");
        net.cut(0, net.gateway(), Direction::Inbound)?;
        assert!(!from_host(0)?, "no answers heard");
        let names: Vec<String> = net.hosts().iter().map(|h| h.ns.clone()).collect();
        drop(net);
        let list = Command::new("ip").args(["netns", "list"]).output()?;
        let list = String::from_utf8_lossy(&list.stdout);
        assert!(
            names.iter().all(|n| !list.contains(n.as_str())),
            "namespaces removed: {list}"
        );
        Ok(())
    }
}
