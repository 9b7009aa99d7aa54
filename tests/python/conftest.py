"""pytest fixtures: one three-node raftmq group per test module.

The group runs from RAFTMQ_BIN_DIR (default: <repo>/target/debug, or
$CARGO_TARGET_DIR/debug) on ports picked at run time, with data and logs in a pytest
temp folder. It is always stopped at the end of the module, also when a test fails;
atexit and the brokers' parent-death signal (see cluster.py) cover the rest.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cluster import Cluster  # noqa: E402
from cluster import Federation, Namesrv, namesrv_toml  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
_live_clusters: list[Cluster] = []
_failed_modules: set[str] = set()


def _close_all():
    for c in list(_live_clusters):
        try:
            c.close(grace=5)
        except Exception as e:  # noqa: BLE001
            print(f"cleanup: {e}", file=sys.stderr)


atexit.register(_close_all)


def _on_sigterm(signum, frame):
    # Turn SIGTERM into an exception so that fixture finalizers run.
    raise KeyboardInterrupt(f"signal {signum}")


signal.signal(signal.SIGTERM, _on_sigterm)


def bin_dir() -> Path:
    d = os.environ.get("RAFTMQ_BIN_DIR")
    if d:
        return Path(d)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return target / "debug"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, request):
    d = bin_dir()
    missing = [b for b in ("raftmq-broker", "raftmq") if not os.access(d / b, os.X_OK)]
    if missing:
        pytest.fail(f"missing {missing} in {d}: build them (cargo build -p raftmq-broker -p raftmq-cli) "
                    f"or set RAFTMQ_BIN_DIR", pytrace=False)
    base = tmp_path_factory.mktemp(request.module.__name__.replace(".", "_"))
    c = Cluster(bin_dir=d, base_dir=base)
    _live_clusters.append(c)
    try:
        leader = c.start(wait=30)
        print(f"\n[cluster] {request.module.__name__}: leader node {leader}; data in {base}\n{c.describe()}")
        yield c
    finally:
        c.close(grace=10)
        _live_clusters.remove(c)
        keep = os.environ.get("RAFTMQ_TEST_KEEP") == "1" or request.module.__name__ in _failed_modules
        if not keep:
            c.remove_data()
        print(f"\n[cluster] stopped; logs{' and data' if keep else ''} in {base}")


@pytest.fixture
def healthy(cluster):
    """The module's cluster with every node running and a leader (restarts nodes an
    earlier test left down)."""
    for i, n in cluster.nodes.items():
        if not n.alive():
            cluster.start_node(i)
            cluster.wait_node_answers(i)
    cluster.wait_for_leader(timeout=30)
    return cluster


# ---- diagnostics on failure: broker log tails and the client's own log ---------------


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)
    if rep.failed:
        _failed_modules.add(item.module.__name__)


def _client_log_path():
    for h in logging.getLogger("rocketmq-python-client").handlers:
        if getattr(h, "baseFilename", None):
            return Path(h.baseFilename)
    return None


@pytest.fixture(autouse=True)
def _dump_logs_on_failure(request):
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is None or not rep.failed or "cluster" not in request.fixturenames:
        return
    c = request.getfixturevalue("cluster")
    print(f"\n===== {request.node.name} failed; cluster:\n{c.describe()}")
    for i in c.nodes:
        print(c.tail(i, lines=30))
    p = _client_log_path()
    if p and p.exists():
        lines = p.read_text(errors="replace").splitlines()[-30:]
        print(f"--- {p} (last 30 lines)\n" + "\n".join(lines))


# ---- name servers + two broker groups (test_namesrv.py) ----------------------------------

# Brokers register every second; a name server drops a node silent for 4 s (the
# defaults keep the same ratio: 30 s / 120 s).
NS_REGISTER_INTERVAL_MS = 1000
NS_REGISTER_TIMEOUT_MS = 500
NS_EXPIRY_MS = 4000
NS_SCAN_INTERVAL_MS = 1000
NS_SPREAD_TOPIC = "spread"
NS_SPREAD_QUEUES = 4
_live_federations: list[Federation] = []


def _close_federations():
    for f in list(_live_federations):
        try:
            f.close(grace=5)
        except Exception as e:  # noqa: BLE001
            print(f"cleanup: {e}", file=sys.stderr)


atexit.register(_close_federations)


@pytest.fixture(scope="module")
def namesrv_env(tmp_path_factory, request):
    """Two name servers (ns1, ns2) and two three-node broker groups (g1, g2) whose nodes
    register with both every NS_REGISTER_INTERVAL_MS; topic `spread` with
    NS_SPREAD_QUEUES queues on each group, routed by both name servers. Everything is
    stopped at the end of the module, also on failure."""
    d = bin_dir()
    missing = [b for b in ("raftmq-broker", "raftmq", "raftmq-namesrv") if not os.access(d / b, os.X_OK)]
    if missing:
        pytest.fail(f"missing {missing} in {d}: build them (cargo build -p raftmq-namesrv -p raftmq-broker "
                    f"-p raftmq-cli) or set RAFTMQ_BIN_DIR", pytrace=False)
    base = tmp_path_factory.mktemp(request.module.__name__.replace(".", "_"))
    namesrvs = [Namesrv(bin_dir=d, base_dir=base, name=f"ns{i}", expiry_ms=NS_EXPIRY_MS,
                        scan_interval_ms=NS_SCAN_INTERVAL_MS) for i in (1, 2)]
    extra = namesrv_toml([ns.addr for ns in namesrvs], NS_REGISTER_INTERVAL_MS, NS_REGISTER_TIMEOUT_MS)
    groups = {g: Cluster(bin_dir=d, base_dir=base / g, group=g, extra_toml=extra) for g in ("g1", "g2")}
    fed = Federation(namesrvs, groups)
    _live_federations.append(fed)
    try:
        for ns in namesrvs:
            ns.start()
        for c in groups.values():
            for i in c.nodes:
                c.start_node(i)
        leaders = {g: c.wait_for_leader(timeout=30) for g, c in groups.items()}
        for c in groups.values():
            c.create_topic(NS_SPREAD_TOPIC, queues=NS_SPREAD_QUEUES)
        fed.wait_routed(NS_SPREAD_TOPIC, {g: NS_SPREAD_QUEUES for g in groups})
        print(f"\n[namesrv_env] leaders {leaders}; data in {base}\n{fed.describe()}")
        yield fed
    finally:
        try:
            fed.close(grace=10)
        finally:
            _live_federations.remove(fed)
            keep = os.environ.get("RAFTMQ_TEST_KEEP") == "1" or request.module.__name__ in _failed_modules
            if not keep:
                fed.remove_data()
            print(f"\n[namesrv_env] stopped; logs{' and data' if keep else ''} in {base}")


@pytest.fixture
def namesrv_healthy(namesrv_env):
    """namesrv_env with every name server and broker node running, a leader in each
    group and `spread` routed by every name server (restarts what an earlier test left
    down)."""
    f = namesrv_env
    for ns in f.namesrvs:
        if not ns.alive():
            ns.start()
    for c in f.groups.values():
        for i, n in c.nodes.items():
            if not n.alive():
                c.start_node(i)
                c.wait_node_answers(i)
        c.wait_for_leader(timeout=30)
    f.wait_routed(NS_SPREAD_TOPIC, {g: NS_SPREAD_QUEUES for g in f.groups})
    return f


@pytest.fixture(autouse=True)
def _dump_namesrv_env_logs_on_failure(request):
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is None or not rep.failed or "namesrv_env" not in request.fixturenames:
        return
    f = request.getfixturevalue("namesrv_env")
    print(f"\n===== {request.node.name} failed; name servers and groups:\n{f.describe()}")
    print(f.tails(lines=25))
    p = _client_log_path()
    if p and p.exists():
        lines = p.read_text(errors="replace").splitlines()[-30:]
        print(f"--- {p} (last 30 lines)\n" + "\n".join(lines))
