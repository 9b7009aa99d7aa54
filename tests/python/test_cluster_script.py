"""scripts/cluster.sh as a user runs it: `up --groups 2 --namesrv 2`, then the `raftmq`
CLI against the name servers it started (`namesrv groups`, `topic create --groups all`,
`namesrv route`), one message through a name server with the official client, and
`down --purge` at the end (also on failure).

The cluster gets a temp folder and port bases below the kernel's ephemeral range (so
that the ports other tests pick with bind(0) never collide with it), checked free before
`up`. The brokers keep cluster.sh's default registration interval (30 s): what the name
servers show here comes from the registrations a node makes at start and at once on a
role, leader or topic change.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import time
from pathlib import Path

import pytest

import rmq
from cluster import TEST_CONFIG

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "cluster.sh"
GROUPS = ("g1", "g2")
NODES = (1, 2, 3)
QUEUES = 4
STRIDE = 10  # cluster.sh's port distance between groups


def bin_dir() -> Path:
    """As conftest.py: RAFTMQ_BIN_DIR, else the cargo target folder's debug binaries."""
    if os.environ.get("RAFTMQ_BIN_DIR"):
        return Path(os.environ["RAFTMQ_BIN_DIR"])
    return Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "debug"


def cluster_ports(client: int, raft: int, namesrv: int) -> list[int]:
    """Every port `up --groups 2 --namesrv 2` uses with these bases (see cluster.sh)."""
    ports = [namesrv, namesrv + 1]
    for g in range(len(GROUPS)):
        for n in NODES:
            ports += [client + STRIDE * g + n - 1, raft + STRIDE * g + n - 1]
    return ports


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def dead_namesrv_port(namesrv_base: int) -> int:
    """A port nothing listens on, given to the CLI as a dead first name server."""
    return namesrv_base + 50


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def pick_bases() -> tuple[int, int, int]:
    """Client, Raft and name server port bases, all their ports (and the dead name
    server's) free, below the ephemeral range."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(10000, low - 400)
        bases = (base, base + 100, base + 200)
        if all(port_free(p) for p in cluster_ports(*bases) + [dead_namesrv_port(bases[2])]):
            return bases
    pytest.fail(f"no free port bases below {low}")


def run(cmd, env, timeout: float, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL, env=env)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {r.returncode}\n"
                             f"stdout: {r.stdout}\nstderr: {r.stderr}")
    return r


def wait_for(what: str, secs: float, probe):
    """Calls PROBE until it returns (value, None); (None, reason) means not yet."""
    deadline = time.monotonic() + secs
    while True:
        value, reason = probe()
        if reason is None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {secs}s waiting for {what}: {reason}")
        time.sleep(0.2)


def group_addrs(client_base: int, g: int) -> list[str]:
    return [f"127.0.0.1:{client_base + STRIDE * g + n - 1}" for n in NODES]


def groups_problem(groups_json: list, client_base: int) -> str | None:
    """Why a `namesrv groups --json` answer is not g1 and g2 of three members each with
    one leader (the group's leader_id) and two followers; None when it is."""
    by_name = {g["group"]: g for g in groups_json}
    if sorted(by_name) != sorted(GROUPS):
        return f"groups {sorted(by_name)}"
    for i, name in enumerate(GROUPS):
        g = by_name[name]
        members = g["members"]
        addrs = sorted(m["client_addr"] for m in members)
        if addrs != sorted(group_addrs(client_base, i)):
            return f"{name} members {addrs}"
        roles = sorted(m["role"] for m in members)
        if roles != ["follower", "follower", "leader"]:
            return f"{name} roles {roles}"
        leader = next(m["id"] for m in members if m["role"] == "leader")
        if g["leader_id"] != leader:
            return f"{name} leader_id {g['leader_id']}, leader member {leader}"
    return None


@pytest.mark.timeout(120)
def test_cluster_script_two_groups_two_namesrv(tmp_path):
    d = bin_dir()
    missing = [b for b in ("raftmq-broker", "raftmq", "raftmq-namesrv") if not os.access(d / b, os.X_OK)]
    if missing:
        pytest.fail(f"missing {missing} in {d}", pytrace=False)
    client_base, raft_base, ns_base = pick_bases()
    cdir = tmp_path / "cluster"
    broker_config = tmp_path / "broker.toml"
    broker_config.write_text(TEST_CONFIG)  # 128 MiB log segments, not 1 GiB
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RAFTMQ_") or k == "RAFTMQ_BIN_DIR"}
    env.update(RAFTMQ_BIN_DIR=str(d), RAFTMQ_CLUSTER_DIR=str(cdir),
               RAFTMQ_CLIENT_PORT_BASE=str(client_base), RAFTMQ_RAFT_PORT_BASE=str(raft_base),
               RAFTMQ_NAMESRV_PORT_BASE=str(ns_base), RAFTMQ_BROKER_CONFIG=str(broker_config),
               RAFTMQ_WAIT_SECS="30")
    namesrvs = [f"127.0.0.1:{ns_base + i}" for i in range(2)]
    cli = d / "raftmq"

    def ask(ns, *args, check=True):
        return run([cli, "--namesrv", ns, "--timeout-secs", "5", *args], env, timeout=30, check=check)

    def groups_of(ns):
        r = ask(ns, "namesrv", "groups", "--json", check=False)
        if r.returncode != 0:
            return None, r.stderr.strip()
        gj = json.loads(r.stdout)
        return gj, groups_problem(gj, client_base)

    def route_of(ns, topic):
        r = ask(ns, "namesrv", "route", topic, "--json", check=False)
        if r.returncode != 0:
            return None, r.stderr.strip()
        route = json.loads(r.stdout)
        by_group = {g["group"]: g for g in route["groups"]}
        if sorted(by_group) != sorted(GROUPS):
            return None, f"groups {sorted(by_group)}"
        for i, name in enumerate(GROUPS):
            g = by_group[name]
            if g["queues"] != QUEUES or g["leader_id"] is None or g["perm"] != "rw":
                return None, f"{name}: {g}"
            if sorted(g["endpoints"]) != sorted(group_addrs(client_base, i)):
                return None, f"{name} endpoints {g['endpoints']}"
        return route, None

    t0 = time.monotonic()
    try:
        up = run([SCRIPT, "up", "--groups", "2", "--namesrv", "2"], env, timeout=90)
        t_up = time.monotonic() - t0
        assert "cluster is up" in up.stdout, up.stdout
        assert "warning" not in up.stderr, up.stderr
        # cluster.env as the other commands read it (sourced: printf %q escapes commas).
        recorded = run(["bash", "-c", 'source "$1" && echo "$RAFTMQ_NAMESRV"', "-", cdir / "cluster.env"],
                       env, timeout=10).stdout.strip()
        assert recorded == ",".join(namesrvs), recorded

        # Both name servers list both groups: three members, one leader, two followers.
        t = time.monotonic()
        views = {ns: wait_for(f"{ns} to list g1 and g2 with a leader each", 20,
                              lambda ns=ns: groups_of(ns)) for ns in namesrvs}
        t_groups = time.monotonic() - t
        text = ask(",".join(namesrvs), "namesrv", "groups").stdout
        print(f"\nup in {t_up:.1f}s; both name servers list 2 groups x 3 members with one leader "
              f"{t_groups:.1f}s later; leaders "
              f"{ {ns: {g['group']: g['leader_id'] for g in v} for ns, v in views.items()} }\n{text}")
        assert text.count("leader") >= 2 and text.count("follower") >= 4, text

        # A topic on every group through the name servers, the dead-first order included.
        topic = rmq.unique("script")
        created = run([cli, "--namesrv", f"127.0.0.1:{dead_namesrv_port(ns_base)},{','.join(namesrvs)}",
                       "--timeout-secs", "5", "topic", "create", topic, "--queues", str(QUEUES),
                       "--groups", "all"], env, timeout=30)
        print(f"topic create --groups all:\n{created.stdout.strip()}")
        for g in GROUPS:
            line = f"{g}: created topic {topic} ({QUEUES} queues, normal, rw)"
            assert line in created.stdout, created.stdout
        t = time.monotonic()
        for ns in namesrvs:
            wait_for(f"{ns} to route {topic} on g1 and g2", 20, lambda ns=ns: route_of(ns, topic))
        t_route = time.monotonic() - t
        table = ask(namesrvs[1], "namesrv", "route", topic).stdout
        print(f"both name servers route {topic} on g1 and g2 ({QUEUES} queues each) "
              f"{t_route:.1f}s after the create:\n{table}")

        # One message through the second name server, sent and received with the
        # official client.
        body = f"{topic}-hello".encode()
        t = time.monotonic()
        with rmq.producer(namesrvs[1], [topic]) as p:
            receipt = p.send(rmq.message(topic, body))
        with rmq.simple_consumer(namesrvs[1], rmq.unique("script_cg"), [topic], await_secs=1) as c:
            got = rmq.receive_until(c, want=[body], deadline_secs=30)
        print(f"sent {receipt.message_id} and received it via {namesrvs[1]} in "
              f"{time.monotonic() - t:.1f}s: {dict(got.counts)}")
        assert got.counts[body] == 1 and len(got.counts) == 1, dict(got.counts)
        assert not got.ack_errors, got.ack_errors

        status = run([SCRIPT, "status"], env, timeout=60)
        assert status.stdout.count("running (pid") == 8, status.stdout
    except BaseException:
        for f in sorted(cdir.glob("*.log")):
            lines = f.read_text(errors="replace").splitlines()[-20:]
            print(f"--- {f} (last 20 lines)\n" + "\n".join(lines))
        raise
    finally:
        t = time.monotonic()
        down = run([SCRIPT, "down", "--purge"], env, timeout=60, check=False)
        print(f"down --purge in {time.monotonic() - t:.1f}s (exit {down.returncode}); "
              f"whole test {time.monotonic() - t0:.1f}s")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not cdir.exists(), f"{cdir} left behind"
    left = [p for p in cluster_ports(client_base, raft_base, ns_base) if listening(p)]
    assert not left, f"still listening after down: {left}"
