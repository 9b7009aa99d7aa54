"""Starts and controls local raftmq broker groups (three nodes each) and name servers
for the tests.

Ports are picked at run time (bind port 0, read it, close), data and logs go into a
folder the caller gives (a pytest temp folder). Processes are only ever signalled
through the Popen handles this module holds, so a reused pid can never be hit.

Brokers are started through `setpriv --pdeathsig KILL` when setpriv exists: if the
test process dies without cleaning up (SIGKILL, crash), the kernel kills the brokers
too. The death signal fires when the *thread* that started the broker ends, so start
and restart nodes from the main (pytest) thread only, never from a worker thread.

Contract used (see the brief in README/DESIGN):
  raftmq-broker --node-id N --group G --data-dir DIR --client-addr H:P --raft-addr H:P
                --peer ID=RAFT_ADDR/CLIENT_ADDR ...
  raftmq --server H:P[,H:P...] cluster status --json | topic create NAME --queues Q --kind K
  raftmq-namesrv --listen H:P [--expiry-ms N] [--scan-interval-ms N]
Brokers register with name servers listed in their TOML (top-level keys, before any
[table]): namesrv = ["H:P", ...], register_interval_ms, register_timeout_ms; see
namesrv_toml() and Cluster.extra_toml.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"

TEST_CONFIG = """\
[log]
segment_size = 134217728
"""


class ClusterError(Exception):
    pass


def namesrv_toml(addrs, register_interval_ms: int | None = None,
                 register_timeout_ms: int | None = None) -> str:
    """Top-level broker TOML keys that make every node register with ADDRS."""
    lines = ["namesrv = [" + ", ".join(json.dumps(a) for a in addrs) + "]"]
    if register_interval_ms is not None:
        lines.append(f"register_interval_ms = {int(register_interval_ms)}")
    if register_timeout_ms is not None:
        lines.append(f"register_timeout_ms = {int(register_timeout_ms)}")
    return "\n".join(lines) + "\n"


def _pdeathsig_cmd(cmd: list[str], setpriv: str | None) -> list[str]:
    return [setpriv, "--pdeathsig", "KILL", "--"] + cmd if setpriv else cmd


def _tail_file(p: Path, lines: int) -> str:
    if not p.exists():
        return f"(no log {p})"
    with open(p, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 64 * 1024))
        text = re.sub(r"\x1b\[[0-9;]*m", "", f.read().decode(errors="replace"))
    return f"--- {p} (last {lines} lines)\n" + "\n".join(text.splitlines()[-lines:])


class CliError(ClusterError):
    def __init__(self, cmd, result):
        self.cmd = cmd
        self.result = result
        super().__init__(
            f"{' '.join(cmd)} exited {result.returncode}\n"
            f"stdout: {result.stdout.strip()}\nstderr: {result.stderr.strip()}"
        )


def free_ports(count: int, host: str = HOST) -> list[int]:
    """Distinct free TCP ports: all sockets stay bound until every port is chosen."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Node:
    node_id: int
    client_port: int
    raft_port: int
    dir: Path
    proc: subprocess.Popen | None = None
    starts: int = 0
    # Set when a test stopped or killed the node on purpose.
    stopped_on_purpose: bool = False

    @property
    def client_addr(self) -> str:
        return f"{HOST}:{self.client_port}"

    @property
    def raft_addr(self) -> str:
        return f"{HOST}:{self.raft_port}"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def log_path(self) -> Path:
        return self.dir / "broker.log"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Cluster:
    bin_dir: Path
    base_dir: Path
    size: int = 3
    group: str = "g1"
    rust_log: str = field(default_factory=lambda: os.environ.get("RUST_LOG", "info"))
    # Written to base_dir/broker.toml and passed as --config to every node. The default
    # keeps the disk use of a test group small: the commit log preallocates whole
    # segments (1 GiB each by default).
    config_toml: str | None = TEST_CONFIG
    # Top-level TOML keys (e.g. namesrv_toml(...)) written before config_toml, whose
    # [tables] would otherwise swallow them.
    extra_toml: str = ""
    nodes: dict[int, Node] = field(default_factory=dict)

    def __post_init__(self):
        self.bin_dir = Path(self.bin_dir)
        self.base_dir = Path(self.base_dir)
        self.broker_bin = self.bin_dir / "raftmq-broker"
        self.cli_bin = self.bin_dir / "raftmq"
        for b in (self.broker_bin, self.cli_bin):
            if not os.access(b, os.X_OK):
                raise ClusterError(f"no executable {b}")
        self.config_path = None
        toml_text = ""
        if self.extra_toml:
            toml_text += self.extra_toml.rstrip("\n") + "\n"
        if self.config_toml:
            toml_text += self.config_toml
        if toml_text:
            self.base_dir.mkdir(parents=True, exist_ok=True)
            self.config_path = self.base_dir / "broker.toml"
            self.config_path.write_text(toml_text)
        ports = free_ports(2 * self.size)
        for i in range(1, self.size + 1):
            d = self.base_dir / f"node-{i}"
            d.mkdir(parents=True, exist_ok=True)
            self.nodes[i] = Node(i, ports[i - 1], ports[self.size + i - 1], d)
        self._setpriv = shutil.which("setpriv")

    # ---- addresses -------------------------------------------------------------

    def node(self, node_id: int) -> Node:
        return self.nodes[node_id]

    def live_ids(self) -> list[int]:
        return [i for i, n in self.nodes.items() if n.alive()]

    def client_addrs(self, ids=None) -> list[str]:
        ids = self.nodes.keys() if ids is None else ids
        return [self.nodes[i].client_addr for i in ids]

    def endpoint(self, node_id: int | None = None) -> str:
        """One node's client address ("host:port"; the leader's when NODE_ID is None),
        as the official client's access point.

        Not several: the Python client turns "a;b;c" into the gRPC target
        "ipv4:a,b,c", whose default :authority "a,b,c" an h2/tonic server rejects with
        RST_STREAM PROTOCOL_ERROR (see CLIENT_NOTES.md)."""
        return self.nodes[node_id if node_id is not None else self.leader_id()].client_addr

    def endpoints(self, ids=None) -> str:
        """Several addresses as one access point ("a;b;c"); see endpoint() for why the
        tests do not use this with the official client."""
        return ";".join(self.client_addrs(ids))

    # ---- processes ---------------------------------------------------------------

    def broker_cmd(self, node_id: int) -> list[str]:
        n = self.nodes[node_id]
        cmd = [str(self.broker_bin)]
        if self.config_path:
            cmd += ["--config", str(self.config_path)]
        cmd += [
            "--node-id", str(n.node_id),
            "--group", self.group,
            "--data-dir", str(n.data_dir),
            "--client-addr", n.client_addr,
            "--raft-addr", n.raft_addr,
        ]
        for p in self.nodes.values():
            cmd += ["--peer", f"{p.node_id}={p.raft_addr}/{p.client_addr}"]
        return cmd

    def start(self, wait: float = 30.0) -> int:
        """Starts every node and waits for a leader; returns its id."""
        for i in self.nodes:
            self.start_node(i)
        return self.wait_for_leader(timeout=wait)

    def start_node(self, node_id: int) -> Node:
        n = self.nodes[node_id]
        if n.alive():
            raise ClusterError(f"node {node_id} is already running (pid {n.pid})")
        if threading.current_thread() is not threading.main_thread():
            raise ClusterError("start brokers from the main thread (see module doc)")
        n.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = _pdeathsig_cmd(self.broker_cmd(node_id), self._setpriv)
        env = dict(os.environ, RUST_LOG=self.rust_log)
        with open(n.log_path, "ab") as log:
            log.write(f"=== {time.strftime('%H:%M:%S')} start #{n.starts + 1}: {' '.join(cmd)}\n".encode())
            log.flush()
            n.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env, start_new_session=True,
            )
        n.starts += 1
        n.stopped_on_purpose = False
        return n

    def kill_node(self, node_id: int, sig: int = signal.SIGKILL) -> float:
        """Sends SIG to the node; for SIGKILL waits until it is gone. Returns the
        monotonic time at which the signal was sent."""
        n = self.nodes[node_id]
        if not n.alive():
            raise ClusterError(f"node {node_id} is not running")
        n.stopped_on_purpose = True
        t = time.monotonic()
        n.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            n.proc.wait(timeout=10)
        return t

    def stop_node(self, node_id: int, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after GRACE seconds. No-op if not running."""
        n = self.nodes[node_id]
        if not n.alive():
            return
        n.stopped_on_purpose = True
        n.proc.terminate()
        try:
            n.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            n.proc.kill()
            n.proc.wait(timeout=10)

    def restart_node(self, node_id: int, wait: float = 30.0) -> Node:
        self.stop_node(node_id)
        self.start_node(node_id)
        self.wait_node_answers(node_id, timeout=wait)
        return self.nodes[node_id]

    def close(self, grace: float = 10.0) -> None:
        """Stops every node this object started: SIGTERM to all, then SIGKILL."""
        running = [n for n in self.nodes.values() if n.alive()]
        for n in running:
            n.stopped_on_purpose = True
            try:
                n.proc.terminate()
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        for n in running:
            try:
                n.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                n.proc.kill()
                n.proc.wait(timeout=10)

    # ---- CLI -----------------------------------------------------------------------

    def cli(self, *args: str, server: str | None = None, timeout: float = 20.0,
            check: bool = True) -> subprocess.CompletedProcess:
        if server is None:
            server = ",".join(self.client_addrs(self.live_ids() or None))
        cmd = [str(self.cli_bin), "--server", server, *args]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                               stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise ClusterError(f"{' '.join(cmd)} did not finish in {timeout}s") from e
        if check and r.returncode != 0:
            raise CliError(cmd, r)
        return r

    def status(self, node_id: int | None = None, timeout: float = 10.0) -> dict:
        """`raftmq cluster status --json` as asked of one node (or any live node)."""
        server = self.nodes[node_id].client_addr if node_id is not None else None
        r = self.cli("--timeout-secs", str(max(1, int(timeout) - 1)), "cluster", "status", "--json",
                     server=server, timeout=timeout)
        try:
            return json.loads(r.stdout)
        except json.JSONDecodeError as e:
            raise ClusterError(f"cluster status --json printed no JSON: {r.stdout!r}") from e

    def try_status(self, node_id: int, timeout: float = 5.0) -> dict | None:
        try:
            return self.status(node_id, timeout=timeout)
        except ClusterError:
            return None

    def wait_node_answers(self, node_id: int, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            if not self.nodes[node_id].alive():
                raise ClusterError(f"node {node_id} exited:\n{self.tail(node_id)}")
            st = self.try_status(node_id)
            if st is not None:
                return st
            if time.monotonic() > deadline:
                raise ClusterError(f"node {node_id} does not answer after {timeout}s\n{self.tail(node_id)}")
            time.sleep(0.3)

    def wait_for_leader(self, timeout: float = 30.0, exclude=()) -> int:
        """Waits until a live node, not in EXCLUDE, is leader by its own account and
        every live node that answers agrees; returns its id."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            for i in self.nodes:
                n = self.nodes[i]
                if n.proc is not None and not n.alive() and not n.stopped_on_purpose:
                    # Died by itself (not stopped by a test): show why.
                    raise ClusterError(f"node {i} exited with {n.proc.returncode}:\n{self.tail(i)}")
            views = {i: self.try_status(i) for i in self.live_ids()}
            last = views
            leaders = {v.get("leader_id") for v in views.values() if v is not None}
            if len(leaders) == 1:
                lid = next(iter(leaders))
                if (lid is not None and lid not in exclude and lid in views
                        and views[lid] is not None and views[lid].get("leader_id") == lid
                        and all(v is not None for v in views.values())):
                    return lid
            if time.monotonic() > deadline:
                raise ClusterError(f"no agreed leader after {timeout}s; views: {last}")
            time.sleep(0.2)

    def leader_id(self) -> int:
        return self.wait_for_leader(timeout=10.0)

    def follower_ids(self) -> list[int]:
        lid = self.leader_id()
        return [i for i in self.live_ids() if i != lid]

    def kill_leader(self, timeout: float = 30.0) -> tuple[int, float]:
        """kill -9 the leader; returns (its id, monotonic time of the kill)."""
        lid = self.wait_for_leader(timeout=timeout)
        return lid, self.kill_node(lid, signal.SIGKILL)

    def wait_caught_up(self, node_id: int, timeout: float = 60.0) -> tuple[dict, dict]:
        """Waits until NODE_ID has applied everything the leader has committed and the
        leader reports no lag for it. Call when no writes are in flight. Returns
        (node status, leader status)."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            lid = self.wait_for_leader(timeout=max(1.0, deadline - time.monotonic()))
            ls = self.try_status(lid)
            ns = self.try_status(node_id)
            last = (ns, ls)
            if ls is not None and ns is not None:
                member = next((m for m in ls.get("members", []) if m.get("id") == node_id), None)
                # lag = leader's last log index - matched index (known on the leader only).
                member_ok = member is None or member.get("lag") is None or member.get("lag") == 0
                applied_ok = (ns.get("applied_index") is not None
                              and ns["applied_index"] >= (ls.get("commit_index") or 0))
                if applied_ok and member_ok:
                    return ns, ls
            if time.monotonic() > deadline:
                raise ClusterError(f"node {node_id} did not catch up in {timeout}s; node/leader status: {last}")
            time.sleep(0.3)

    # ---- topics ----------------------------------------------------------------------

    def create_topic(self, name: str, queues: int = 8, kind: str = "normal") -> None:
        self.cli("topic", "create", name, "--queues", str(queues), "--kind", kind)

    # ---- diagnostics ------------------------------------------------------------------

    def tail(self, node_id: int, lines: int = 40) -> str:
        return _tail_file(self.nodes[node_id].log_path, lines)

    def remove_data(self) -> None:
        """Deletes the nodes' data folders (logs stay). Only when nothing runs."""
        for n in self.nodes.values():
            if not n.alive():
                shutil.rmtree(n.data_dir, ignore_errors=True)

    def describe(self) -> str:
        return "\n".join(
            f"{self.group} node {n.node_id}: pid {n.pid} alive={n.alive()} client {n.client_addr} raft {n.raft_addr}"
            for n in self.nodes.values()
        )


# ---- name servers ---------------------------------------------------------------------


@dataclass
class Namesrv:
    """One raftmq-namesrv process on a port picked at construction; the port stays the
    same across restarts (brokers keep registering with the address in their TOML).
    Started through setpriv --pdeathsig like the brokers: start and restart it from the
    main thread only."""

    bin_dir: Path
    base_dir: Path
    name: str = "ns1"
    expiry_ms: int | None = None
    scan_interval_ms: int | None = None
    rust_log: str = field(default_factory=lambda: os.environ.get("RUST_LOG", "info"))
    port: int = 0
    proc: subprocess.Popen | None = None
    starts: int = 0
    stopped_on_purpose: bool = False

    def __post_init__(self):
        self.bin_dir = Path(self.bin_dir)
        self.base_dir = Path(self.base_dir)
        self.bin = self.bin_dir / "raftmq-namesrv"
        if not os.access(self.bin, os.X_OK):
            raise ClusterError(f"no executable {self.bin}")
        self.dir = self.base_dir / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_ports(1)[0]
        self._setpriv = shutil.which("setpriv")

    @property
    def addr(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.dir / "namesrv.log"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cmd(self) -> list[str]:
        cmd = [str(self.bin), "--listen", self.addr]
        if self.expiry_ms is not None:
            cmd += ["--expiry-ms", str(self.expiry_ms)]
        if self.scan_interval_ms is not None:
            cmd += ["--scan-interval-ms", str(self.scan_interval_ms)]
        return cmd

    def start(self, wait: float = 20.0) -> "Namesrv":
        """Starts the process and waits until its port accepts connections."""
        if self.alive():
            raise ClusterError(f"name server {self.name} is already running (pid {self.pid})")
        if threading.current_thread() is not threading.main_thread():
            raise ClusterError("start name servers from the main thread (see module doc)")
        cmd = _pdeathsig_cmd(self.cmd(), self._setpriv)
        env = dict(os.environ, RUST_LOG=self.rust_log)
        with open(self.log_path, "ab") as log:
            log.write(f"=== {time.strftime('%H:%M:%S')} start #{self.starts + 1}: {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env, start_new_session=True,
            )
        self.starts += 1
        self.stopped_on_purpose = False
        self.wait_listening(timeout=wait)
        return self

    def wait_listening(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise ClusterError(f"name server {self.name} exited:\n{self.tail()}")
            try:
                socket.create_connection((HOST, self.port), timeout=0.5).close()
                return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise ClusterError(f"name server {self.name} does not listen on {self.addr} "
                                   f"after {timeout}s\n{self.tail()}")
            time.sleep(0.1)

    def kill(self, sig: int = signal.SIGKILL) -> float:
        """Sends SIG; for SIGKILL waits until the process is gone. Returns the monotonic
        time at which the signal was sent."""
        if not self.alive():
            raise ClusterError(f"name server {self.name} is not running")
        self.stopped_on_purpose = True
        t = time.monotonic()
        self.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            self.proc.wait(timeout=10)
        return t

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after GRACE seconds. No-op if not running."""
        if not self.alive():
            return
        self.stopped_on_purpose = True
        self.proc.terminate()
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def restart(self, wait: float = 20.0) -> "Namesrv":
        self.stop()
        return self.start(wait=wait)

    close = stop

    def tail(self, lines: int = 40) -> str:
        return _tail_file(self.log_path, lines)

    def describe(self) -> str:
        return f"namesrv {self.name}: pid {self.pid} alive={self.alive()} listen {self.addr}"


@dataclass
class Federation:
    """Name servers plus broker groups registering with all of them (see the
    namesrv_env fixture in conftest.py)."""

    namesrvs: list[Namesrv]
    groups: dict[str, Cluster]

    def ns(self, i: int) -> Namesrv:
        return self.namesrvs[i]

    def close(self, grace: float = 10.0) -> None:
        """Stops the broker groups, then the name servers; every process this object
        started, also when one of the stops fails."""
        errors = []
        for c in self.groups.values():
            try:
                c.close(grace=grace)
            except Exception as e:  # noqa: BLE001
                errors.append(e)
        for ns in self.namesrvs:
            try:
                ns.stop(grace=grace)
            except Exception as e:  # noqa: BLE001
                errors.append(e)
        if errors:
            raise ClusterError(f"cleanup failed: {errors}")

    def remove_data(self) -> None:
        for c in self.groups.values():
            c.remove_data()

    def route(self, ns: Namesrv, topic: str):
        """QueryRoute at name server NS (raw gRPC): the QueryRouteResponse."""
        import rmq  # noqa: PLC0415 - only the tests that use name servers need grpc

        with rmq.Raw(ns.addr) as raw:
            return raw.query_route(topic)

    def wait_routed(self, topic: str, queues: dict[str, int] | None = None,
                    namesrvs=None, timeout: float = 20.0) -> dict:
        """Waits until every name server in NAMESRVS (default: the running ones) answers
        QueryRoute for TOPIC with exactly QUEUES {group: queue count} (default: 4 per
        group of this federation), each queue naming one address of a live member of its
        group. Returns {ns addr: QueryRouteResponse}."""
        import grpc  # noqa: PLC0415
        from rocketmq.grpc_protocol import Code  # noqa: PLC0415

        queues = queues if queues is not None else {g: 4 for g in self.groups}
        namesrvs = namesrvs if namesrvs is not None else [n for n in self.namesrvs if n.alive()]
        deadline = time.monotonic() + timeout
        got, last = {}, {}
        while True:
            for ns in namesrvs:
                if ns.addr in got:
                    continue
                try:
                    res = self.route(ns, topic)
                except grpc.RpcError as e:
                    last[ns.addr] = f"grpc {e.code()} {e.details()}"
                    continue
                if res.status.code != Code.OK:
                    last[ns.addr] = f"{Code.Name(res.status.code)} {res.status.message}"
                    continue
                counts: dict[str, int] = {}
                bad = []
                for q in res.message_queues:
                    g = q.broker.name
                    counts[g] = counts.get(g, 0) + 1
                    addrs = [f"{a.host}:{a.port}" for a in q.broker.endpoints.addresses]
                    c = self.groups.get(g)
                    live = c.client_addrs(c.live_ids()) if c else []
                    if len(addrs) != 1 or addrs[0] not in live:
                        bad.append((g, q.id, addrs))
                if counts == queues and not bad:
                    got[ns.addr] = res
                else:
                    last[ns.addr] = f"queues per group {counts}, want {queues}; not one live member: {bad}"
            if len(got) == len(namesrvs):
                return got
            if time.monotonic() > deadline:
                raise ClusterError(f"topic {topic} not routed as wanted after {timeout}s: {last}")
            time.sleep(0.2)

    def describe(self) -> str:
        return "\n".join([ns.describe() for ns in self.namesrvs]
                         + [c.describe() for c in self.groups.values()])

    def tails(self, lines: int = 30) -> str:
        out = [ns.tail(lines) for ns in self.namesrvs]
        for c in self.groups.values():
            out += [c.tail(i, lines) for i in c.nodes]
        return "\n".join(out)
