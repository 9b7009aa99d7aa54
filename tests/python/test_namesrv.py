"""The official Python client with a raftmq name server as its access point.

Two name servers (ns1, ns2) and two broker groups (g1, g2) of three nodes each that
register with both every second (the namesrv_env fixture in conftest.py). A name
server answers QueryRoute with the queues of every group hosting the topic, groups
alternating, one member address per queue; the client then sends, receives and acks
at those broker addresses, never at the name server.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
from rocketmq.grpc_protocol import Code

import rmq

SPREAD = "spread"  # created on g1 and g2 with 4 queues each by the fixture
MAX_GAP_SECS = 5.0


# ---- helpers --------------------------------------------------------------------------


def queue_of(receipt):
    """(broker name = group, queue id, address) of the queue a send landed on.
    SendReceipt.message_queue is the client's MessageQueue, which exposes no broker
    name; message_queue0() rebuilds the protobuf queue of the route."""
    q = receipt.message_queue.message_queue0()
    addrs = ",".join(f"{a.host}:{a.port}" for a in q.broker.endpoints.addresses)
    return q.broker.name, q.id, addrs


def route_layout(res):
    return [(q.broker.name, q.id, ",".join(f"{a.host}:{a.port}" for a in q.broker.endpoints.addresses))
            for q in res.message_queues]


def stored_per_group(fed, topic) -> dict[str, int]:
    """Sum of the topic's queues' max offsets on each group (`raftmq topic list --json`
    asked of that group)."""
    import json

    out = {}
    for g, c in fed.groups.items():
        r = c.cli("topic", "list", "--json")
        topics = {t["name"]: t for t in json.loads(r.stdout)}
        out[g] = sum(q["max_offset"] for q in topics[topic]["queue_offsets"]) if topic in topics else 0
    return out


class ClientLog(logging.Handler):
    """Keeps what the client logs (its own file handler stays in place)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.records = []  # (monotonic time, level, message)
        self._mu = threading.Lock()  # not self.lock: that is logging.Handler's own

    def emit(self, record):
        with self._mu:
            self.records.append((time.monotonic(), record.levelname, record.getMessage()))

    def find(self, needle: str, after: float = 0.0):
        with self._mu:
            return [r for r in self.records if r[0] >= after and needle in r[2]]

    def wait_for(self, needle: str, after: float, timeout: float):
        deadline = time.monotonic() + timeout
        while True:
            found = self.find(needle, after)
            if found:
                return found[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"the client logged no {needle!r} within {timeout}s")
            time.sleep(0.1)


@contextmanager
def client_log():
    lg = logging.getLogger("rocketmq-python-client")
    h = ClientLog()
    lg.addHandler(h)
    try:
        yield h
    finally:
        lg.removeHandler(h)


def send_seq(p, topic, prefix, n):
    """N sends one after the other, no retries of ours. Returns ({body: receipt},
    {body: exception})."""
    ok, failed = {}, {}
    for i in range(n):
        body = f"{prefix}-{i:04d}".encode()
        try:
            ok[body] = p.send(rmq.message(topic, body))
        except Exception as e:  # noqa: BLE001
            failed[body] = e
    return ok, failed


def per_group(receipts) -> Counter:
    return Counter(queue_of(r)[0] for r in receipts)


# ---- tests ----------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_send_receive_through_namesrv(namesrv_healthy):
    f = namesrv_healthy
    ns = f.ns(0)
    layout = route_layout(f.route(ns, SPREAD))
    print(f"\n{ns.name} ({ns.addr}) routes {SPREAD}: {layout}")
    assert [g for g, _, _ in layout] == ["g1", "g2"] * 4, f"groups do not alternate: {layout}"
    for g, c in f.groups.items():
        addrs = [a for gg, _, a in layout if gg == g]
        assert set(addrs) <= set(c.client_addrs()), f"{g}'s queues name foreign addresses: {addrs}"
        assert len(set(addrs)) == min(3, len(addrs)), f"{g}'s queues are not spread over its members: {addrs}"

    before = stored_per_group(f, SPREAD)
    bodies = [f"spread-{i:04d}".encode() for i in range(400)]
    receipts, failed = {}, {}
    t0 = time.monotonic()
    with rmq.producer(ns.addr, [SPREAD]) as p:
        def one(body):
            try:
                receipts[body] = p.send(rmq.message(SPREAD, body))
            except Exception as e:  # noqa: BLE001
                failed[body] = e

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(one, bodies))
    sent_secs = time.monotonic() - t0
    after = stored_per_group(f, SPREAD)
    groups = per_group(receipts.values())
    queues = Counter(queue_of(r)[:2] for r in receipts.values())
    stored = {g: after[g] - before[g] for g in f.groups}
    print(f"sent {len(receipts)}/{len(bodies)} in {sent_secs:.1f}s; receipts per group {dict(groups)}; "
          f"stored per group (max offsets) {stored}; per queue {sorted(queues.items())}")
    assert not failed, f"{len(failed)} sends failed, e.g. {list(failed.items())[:3]}"
    assert groups["g1"] > 0 and groups["g2"] > 0, f"messages landed on one group only: {dict(groups)}"
    for g in f.groups:
        assert stored[g] >= groups[g], f"{g} stores {stored[g]} messages, receipts say {groups[g]}"

    with rmq.simple_consumer(ns.addr, rmq.unique("ns_cg"), [SPREAD], await_secs=1) as consumer:
        got = rmq.receive_until(consumer, want=bodies, deadline_secs=60, receivers=4, ackers=8,
                                linger_secs=1)
    missing = [b for b in bodies if got.counts[b] == 0]
    wrong_id = [b for b in bodies if got.counts[b] and receipts[b].message_id not in got.ids[b]]
    print(f"received {len(got.counts)} distinct in {got.elapsed:.1f}s, duplicates {got.duplicates}, "
          f"receive errors {len(got.receive_errors)}, ack errors {len(got.ack_errors)}")
    assert not missing, f"{len(missing)} messages not delivered, e.g. {missing[:5]}"
    assert not wrong_id, f"delivered under another id than the receipt's: {wrong_id[:5]}"
    assert got.duplicates == 0, f"{got.duplicates} messages delivered more than once"
    assert not got.ack_errors, f"acks failed: {got.ack_errors[:3]}"


@pytest.mark.timeout(120)
def test_namesrv_killed_under_a_running_producer(namesrv_healthy):
    """The producer's access point dies: it keeps its cached route when the refresh
    fails; a producer on the other name server works; the restarted one routes again."""
    f = namesrv_healthy
    ns1, ns2 = f.namesrvs
    with client_log() as log:
        with rmq.producer(ns1.addr, [SPREAD]) as p1:
            t_start = time.monotonic()
            ok, failed = send_seq(p1, SPREAD, "b-before", 20)
            assert not failed, f"sends before the kill failed: {list(failed.items())[:3]}"

            t_kill = ns1.kill()
            ok_during, failed_during = send_seq(p1, SPREAD, "b-dead-ns", 20)
            # The client re-queries routes 10 s after startup, then every 30 s.
            rec = log.wait_for("query topic raise exception", after=t_kill, timeout=40)
            print(f"\n{ns1.name} killed {t_kill - t_start:.1f}s after the producer started; its route "
                  f"refresh failed {rec[0] - t_start:.1f}s after: {rec[2][:160]!r}")
            ok_after, failed_after = send_seq(p1, SPREAD, "b-after-refresh", 40)
            print(f"producer on the dead name server: {len(ok_during)}/20 sent before its refresh, "
                  f"{len(ok_after)}/40 after it failed; groups {dict(per_group(ok_after.values()))}")
            assert not failed_during, f"sends failed with the access point down: {list(failed_during.items())[:3]}"
            assert not failed_after, (f"sends failed after the failed route refresh (route dropped?): "
                                      f"{list(failed_after.items())[:3]}")

        with rmq.producer(ns2.addr, [SPREAD]) as p2:
            ok2, failed2 = send_seq(p2, SPREAD, "b-ns2", 20)
        print(f"new producer on {ns2.name}: {len(ok2)}/20, groups {dict(per_group(ok2.values()))}")
        assert not failed2, f"sends through the surviving name server failed: {list(failed2.items())[:3]}"

        # A new producer whose only access point is down cannot learn any route.
        t_new = time.monotonic()
        with rmq.producer(ns1.addr, [SPREAD]) as p3:
            try:
                p3.send(rmq.message(SPREAD, b"b-nowhere"))
                outcome, sent = "sent", True
            except Exception as e:  # noqa: BLE001
                outcome, sent = f"{type(e).__name__}: {e}", False
        print(f"new producer on the dead {ns1.name}: {outcome} ({time.monotonic() - t_new:.1f}s); "
              f"client logged {[r[2][:120] for r in log.find('query topic raise exception', t_new)][:1]}")
        assert not sent, "a producer whose only access point is down sent a message"

    t_restart = time.monotonic()
    ns1.start()
    f.wait_routed(SPREAD, namesrvs=[ns1], timeout=10)
    routed_after = time.monotonic() - t_restart
    with rmq.producer(ns1.addr, [SPREAD]) as p4:
        ok4, failed4 = send_seq(p4, SPREAD, "b-restarted", 10)
    print(f"{ns1.name} restarted: routes both groups again after {routed_after:.1f}s; "
          f"new producer {len(ok4)}/10, groups {dict(per_group(ok4.values()))}")
    assert not failed4, f"sends through the restarted name server failed: {list(failed4.items())[:3]}"


@pytest.mark.timeout(60)
def test_unknown_topic_through_namesrv(namesrv_healthy):
    f = namesrv_healthy
    topic = rmq.unique("no_such_topic")
    for ns in f.namesrvs:
        res = f.route(ns, topic)
        print(f"\n{ns.name}: QueryRoute {topic} -> {res.status.code} {rmq.code_name(res.status.code)} "
              f"{res.status.message!r}, {len(res.message_queues)} queues")
        assert res.status.code == Code.TOPIC_NOT_FOUND == 40402, res.status
        assert not res.message_queues

    ns = f.ns(0)
    with client_log() as log, rmq.producer(ns.addr) as p:
        t0 = time.monotonic()
        with pytest.raises(Exception) as ei:
            p.send(rmq.message(topic, b"x"))
        logged = [r[2] for r in log.find("query topic raise exception", t0)]
    print(f"official client: {type(ei.value).__name__}: {ei.value}; its log: {logged[:1]}")
    assert any("40402" in m for m in logged), f"client log does not show TOPIC_NOT_FOUND: {logged}"


@pytest.mark.timeout(150)
def test_leader_kill_in_one_group_through_namesrv(namesrv_healthy):
    """kill -9 of g1's leader while two producers send through a name server: one used
    by a single thread, one shared by four. A failed send attempt is retried by the
    client at once on the "next" queue of a round-robin counter shared by every thread
    of that producer (queue_selector.py): for a single thread that is the adjacent
    queue, of the other group; for a shared producer it is any queue, possibly the dead
    node's again, so a few sends fail after their three attempts until the client's next
    route refresh (10 s after startup, then every 30 s) drops the dead node."""
    f = namesrv_healthy
    ns = f.ns(1)
    g1 = f.groups["g1"]
    topic = rmq.unique("ns_failover")
    for c in f.groups.values():
        c.create_topic(topic, queues=4)
    f.wait_routed(topic, timeout=15)

    events = []  # (t_done, ok, body, queue_of(receipt) or error, t_started, producer)
    lock = threading.Lock()
    stop = threading.Event()
    counter = iter(range(10**9))

    def sender(p, name):
        while not stop.is_set():
            with lock:
                i = next(counter)
            if i >= 100_000:
                return
            body = f"{topic}-{name}-{i:06d}".encode()
            t0 = time.monotonic()
            try:
                r = p.send(rmq.message(topic, body))
                with lock:
                    events.append((time.monotonic(), True, body, queue_of(r), t0, name))
            except Exception as e:  # noqa: BLE001
                with lock:
                    events.append((time.monotonic(), False, body, repr(e), t0, name))
                time.sleep(0.05)

    with client_log() as log, \
            rmq.producer(ns.addr, [topic], request_timeout=3) as single, \
            rmq.producer(ns.addr, [topic], request_timeout=3) as shared:
        t_startup = time.monotonic()
        threads = [threading.Thread(target=sender, args=(single, "single"), daemon=True)]
        threads += [threading.Thread(target=sender, args=(shared, "shared"), daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            wait_until(lambda: sum(1 for e in events if e[1]) >= 100, 30, "100 sends before the kill")
            leader, t_kill = g1.kill_leader()
            dead_addr = g1.node(leader).client_addr
            new_leader = g1.wait_for_leader(timeout=30, exclude=(leader,))
            t_elected = time.monotonic()
            # The name servers leave the dead node out of routes (at the latest after their
            # expiry); the producers' next route refresh picks that up.
            f.wait_routed(topic, namesrvs=[ns], timeout=20)
            t_dropped = time.monotonic()
            # Usually the refresh 10 s after startup; the next one (30 s later) if the
            # name server dropped the node after that. Both producers started together.
            wait_until(lambda: len(log.find(f"update topic:{topic} route", t_dropped)) >= 2, 35,
                       "both producers' route refresh")
            t_refresh = max(r[0] for r in log.find(f"update topic:{topic} route", t_dropped)[:2])
            wait_until(lambda: sum(1 for e in events if e[1] and e[4] > t_refresh) >= 100, 20,
                       "100 sends after the route refresh")
        finally:
            stop.set()
            for t in threads:
                t.join(30)

    print(f"\ng1 leader node {leader} ({dead_addr}) killed {t_kill - t_startup:.1f}s after the producers "
          f"started; node {new_leader} elected after {t_elected - t_kill:.2f}s; {ns.name} routed without "
          f"the dead node {t_dropped - t_kill:.1f}s after the kill; producers refreshed their route "
          f"{t_refresh - t_kill:.1f}s after the kill")
    stats = {}
    for name in ("single", "shared"):
        mine = [e for e in events if e[5] == name]
        ok = sorted((e for e in mine if e[1]), key=lambda e: e[0])
        failures = [e for e in mine if not e[1]]
        times = [e[0] for e in ok]
        max_gap, gap_at = max(((b - a, a) for a, b in zip(times, times[1:])), default=(0.0, t_kill))
        window = [e for e in mine if t_kill < e[4] <= t_refresh]
        after_refresh = [e for e in mine if e[4] > t_refresh]
        stats[name] = dict(ok=ok, failures=failures, max_gap=max_gap, window=window, after_refresh=after_refresh)
        print(f"{name}: acknowledged {len(ok)} (per group before the kill "
              f"{dict(Counter(e[3][0] for e in ok if e[4] <= t_kill))}, after "
              f"{dict(Counter(e[3][0] for e in ok if e[4] > t_kill))}); failed {len(failures)} "
              f"({len([e for e in window if not e[1]])} of {len(window)} sends between the kill and the refresh, "
              f"{len([e for e in after_refresh if not e[1]])} of {len(after_refresh)} after it); longest gap "
              f"between acknowledged sends {max_gap:.2f}s at {gap_at - t_kill:+.1f}s from the kill; slowest "
              f"send {max((e[0] - e[4] for e in ok), default=0):.2f}s; first failure "
              f"{[e[3][:110] for e in failures[:1]]}")

    acked = {e[2] for st in stats.values() for e in st["ok"]}
    failures = [e for st in stats.values() for e in st["failures"]]
    with rmq.simple_consumer(ns.addr, rmq.unique("ns_fo_cg"), [topic], await_secs=1) as consumer:
        got = rmq.receive_until(consumer, want=list(acked), deadline_secs=60, receivers=4, linger_secs=1)
    lost = [b for b in acked if got.counts[b] == 0]
    print(f"consumed through {ns.name} with node {leader} still down: {len(got.counts)} distinct in "
          f"{got.elapsed:.1f}s, duplicates {got.duplicates}, receive errors {len(got.receive_errors)}; "
          f"failed sends stored anyway {sum(1 for e in failures if got.counts[e[2]])}/{len(failures)}")
    if got.duplicates:
        # At least once: a send stored by the dying leader whose answer was lost is
        # stored again by the client's retry on another queue (same message id).
        dups = [(b, sorted(got.ids[b]), next((e[3] for e in events if e[2] == b), None))
                for b, n in got.counts.items() if n > 1]
        print(f"delivered more than once (body, message ids, receipt queue): {dups[:5]}")

    g1.restart_node(leader)
    g1.wait_caught_up(leader, timeout=60)
    f.wait_routed(topic, namesrvs=[ns], timeout=15)

    assert not lost, f"{len(lost)} acknowledged messages lost, e.g. {lost[:5]}"
    for name, st in stats.items():
        assert st["max_gap"] < MAX_GAP_SECS, f"{name}: no acknowledged send for {st['max_gap']:.1f}s"
        late = [e for e in st["after_refresh"] if not e[1]]
        assert not late, f"{name}: sends failed after the route refresh: {late[:3]}"
        odd = [e for e in st["failures"] if "UNAVAILABLE" not in e[3]]
        assert not odd, f"{name}: sends failed otherwise than by the dead node being unreachable: {odd[:3]}"
    assert not stats["single"]["failures"], "a single-threaded producer's retry did not reach a live queue"
    w = stats["shared"]["window"]
    assert len([e for e in w if not e[1]]) <= max(5, len(w) // 20), "more than 5% of the shared sends failed"


def wait_until(cond, secs, what):
    deadline = time.monotonic() + secs
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {secs}s waiting for {what}")
        time.sleep(0.05)
