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
